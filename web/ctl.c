/* The control-socket connection of pirec-web (ctl.h). */
#include "ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pirec/container_of.h"
#include "pirec/jsonl.h"

#define RETRY_MS 500
/* The longest reply line: a status of many modules fits many times over. */
#define REPLY_MAX (16u * 1024 * 1024)

struct pending {
  struct pending *next;
  int64_t id;
  uint64_t deadline_ms;
  pirec_webctl_reply_cb cb;
  void *user;
};

struct pirec_webctl {
  uv_loop_t *loop;
  char *path;
  uv_pipe_t pipe;
  uv_connect_t connect;
  uv_timer_t timer;
  int pipe_open;  /* pipe initialised and not yet closed */
  int connecting; /* a uv_pipe_connect is in flight */
  int connected;
  int closing;
  int handles; /* open handles: the object is freed when this reaches 0 while closing */
  uint64_t next_try_ms;
  int64_t next_id;
  struct pending *pending;
  struct pirec_jsonl_reader reader;
  pirec_webctl_state_cb state_cb;
  void *user;
};

struct write_req {
  uv_write_t req;
  char *line;
};

static void maybe_free(struct pirec_webctl *c)
{
  if (!c->closing || c->handles > 0)
    return;
  pirec_jsonl_reader_free(&c->reader);
  free(c->path);
  free(c);
}

static void on_handle_closed(uv_handle_t *h)
{
  struct pirec_webctl *c = h->data;
  c->handles--;
  maybe_free(c);
}

/* Every request in flight gets its callback with error (or none when quiet: at close). */
static void fail_all(struct pirec_webctl *c, const char *error, int quiet)
{
  while (c->pending) {
    struct pending *p = c->pending;
    c->pending = p->next;
    if (!quiet && p->cb)
      p->cb(NULL, error, p->user);
    free(p);
  }
}

static void drop_connection(struct pirec_webctl *c)
{
  int was = c->connected;
  c->connected = 0;
  if (c->pipe_open) {
    c->pipe_open = 0;
    uv_close((uv_handle_t *)&c->pipe, on_handle_closed);
  }
  pirec_jsonl_reader_reset(&c->reader);
  c->next_try_ms = uv_now(c->loop) + RETRY_MS;
  fail_all(c, "the controller went away", 0);
  if (was && c->state_cb)
    c->state_cb(0, c->user);
}

static void deliver(struct pirec_webctl *c, const char *line, size_t len)
{
  json_t *reply = pirec_jsonl_parse(line, len, 0, NULL);
  json_t *id = json_object_get(reply, "id");
  if (json_is_integer(id)) {
    for (struct pending **pp = &c->pending; *pp; pp = &(*pp)->next) {
      struct pending *p = *pp;
      if (p->id != json_integer_value(id))
        continue;
      *pp = p->next;
      if (p->cb)
        p->cb(reply, NULL, p->user);
      free(p);
      break;
    }
  }
  json_decref(reply);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct pirec_webctl *c = h->data;
  size_t avail = 0;
  char *space = pirec_jsonl_reader_space(&c->reader, &avail);
  *buf = uv_buf_init(space, space ? (unsigned)avail : 0);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct pirec_webctl *c = s->data;
  if (n < 0) {
    drop_connection(c);
    return;
  }
  pirec_jsonl_reader_fill(&c->reader, (size_t)n);
  const char *line;
  size_t len;
  int got;
  while (c->connected && (got = pirec_jsonl_reader_next(&c->reader, &line, &len)) != 0) {
    if (got > 0)
      deliver(c, line, len);
  }
}

static void on_connect(uv_connect_t *req, int status)
{
  struct pirec_webctl *c = container_of(req, struct pirec_webctl, connect);
  c->connecting = 0;
  if (c->closing)
    return;
  if (status < 0 || uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read) < 0) {
    drop_connection(c);
    return;
  }
  c->connected = 1;
  if (c->state_cb)
    c->state_cb(1, c->user);
}

static void try_connect(struct pirec_webctl *c)
{
  if (uv_pipe_init(c->loop, &c->pipe, 0) < 0)
    return;
  c->pipe.data = c;
  c->pipe_open = 1;
  c->handles++;
  c->connecting = 1;
  uv_pipe_connect(&c->connect, &c->pipe, c->path, on_connect);
}

/* Retries the connection and times out requests. */
static void on_tick(uv_timer_t *t)
{
  struct pirec_webctl *c = t->data;
  uint64_t now = uv_now(c->loop);
  if (!c->pipe_open && !c->connecting && now >= c->next_try_ms)
    try_connect(c);
  for (struct pending **pp = &c->pending; *pp;) {
    struct pending *p = *pp;
    if (now < p->deadline_ms) {
      pp = &p->next;
      continue;
    }
    *pp = p->next;
    if (p->cb)
      p->cb(NULL, "the controller did not answer in time", p->user);
    free(p);
  }
}

int pirec_webctl_new(uv_loop_t *loop, const char *socket_path, pirec_webctl_state_cb state_cb, void *user,
                     struct pirec_webctl **out)
{
  struct pirec_webctl *c = calloc(1, sizeof *c);
  if (!c || !(c->path = strdup(socket_path))) {
    free(c);
    return -ENOMEM;
  }
  c->loop = loop;
  c->state_cb = state_cb;
  c->user = user;
  c->next_id = 1;
  pirec_jsonl_reader_init(&c->reader, REPLY_MAX);
  uv_timer_init(loop, &c->timer);
  c->timer.data = c;
  c->handles = 1;
  uv_timer_start(&c->timer, on_tick, 0, 100);
  *out = c;
  return 0;
}

void pirec_webctl_close(struct pirec_webctl *c)
{
  if (!c || c->closing)
    return;
  c->closing = 1;
  fail_all(c, NULL, 1);
  uv_close((uv_handle_t *)&c->timer, on_handle_closed);
  if (c->pipe_open) {
    c->pipe_open = 0;
    uv_close((uv_handle_t *)&c->pipe, on_handle_closed);
  }
}

int pirec_webctl_connected(const struct pirec_webctl *c)
{
  return c->connected;
}

static void on_written(uv_write_t *req, int status)
{
  struct write_req *w = container_of(req, struct write_req, req);
  free(w->line);
  free(w);
}

int64_t pirec_webctl_send(struct pirec_webctl *c, json_t *req, int timeout_ms, pirec_webctl_reply_cb cb,
                          void *user)
{
  if (!c->connected) {
    json_decref(req);
    return -ENOTCONN;
  }
  struct pending *p = calloc(1, sizeof *p);
  struct write_req *w = calloc(1, sizeof *w);
  int64_t id = c->next_id++;
  size_t len = 0;
  json_object_set_new(req, "id", json_integer(id));
  json_object_set_new(req, "source", json_string("web"));
  char *line = p && w ? pirec_jsonl_encode(req, 0, &len) : NULL;
  json_decref(req);
  uv_buf_t buf = uv_buf_init(line, (unsigned)len);
  if (!line || uv_write(&w->req, (uv_stream_t *)&c->pipe, &buf, 1, on_written) < 0) {
    free(line);
    free(p);
    free(w);
    return -ENOMEM;
  }
  w->line = line;
  *p = (struct pending){c->pending, id, uv_now(c->loop) + (uint64_t)timeout_ms, cb, user};
  c->pending = p;
  return id;
}

void pirec_webctl_cancel(struct pirec_webctl *c, int64_t ticket)
{
  for (struct pending *p = c->pending; p; p = p->next)
    if (p->id == ticket)
      p->cb = NULL;
}
