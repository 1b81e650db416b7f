/* The WebSocket clients: each is sent the newest state as it changes (the controller's status once
 * a second while anyone watches, the controller going away and coming back) and, when it asked for
 * them, each camera's newest preview (two a second while anyone watches). A client that does not
 * read holds at most one message: libwebsockets keeps what the socket did not take and asks for
 * the next write only once it is gone, and by then the client is sent only the newest. */
#include <stdlib.h>
#include <string.h>

#include "pirec/jsonl.h"
#include "web-int.h"

#define POLL_MS    1000
#define PREVIEW_MS 500
/* The largest message a client may send ({"watch":true}). */
#define RX_MAX 4096
/* How wide a preview is asked for: a tile's width on a laptop. */
#define PREVIEW_WIDTH 480

/* msg becomes the newest of its kind; every client is asked whether it can take it. */
static void push_set(struct pirec_web *w, struct push_msg *slot, json_t *msg)
{
  size_t len = 0;
  char *text = pirec_jsonl_encode(msg, 0, &len);
  json_decref(msg);
  char *buf = text ? malloc(LWS_PRE + len) : NULL;
  if (!buf) {
    free(text);
    return;
  }
  memcpy(buf + LWS_PRE, text, len - 1); /* without the '\n' */
  free(text);
  free(slot->buf);
  slot->buf = buf;
  slot->len = len - 1;
  slot->gen++;
  for (struct ws_conn *p = w->clients; p; p = p->next)
    lws_callback_on_writable(p->wsi);
}

void pirec__web_push_free(struct pirec_web *w)
{
  free(w->status.buf);
  for (int i = 0; i < w->npreviews; i++)
    free(w->previews[i].msg.buf);
}

void pirec__web_push_controller(struct pirec_web *w, int connected)
{
  push_set(w, &w->status, json_pack("{s:s,s:b}", "type", "controller", "connected", connected));
}

/* The cameras and the eye tracker (its scene video with the gaze) of the newest status: the modules
 * whose previews are asked for. */
static void note_previews(struct pirec_web *w, json_t *status)
{
  const char *name;
  json_t *m;
  json_object_foreach(json_object_get(status, "modules"), name, m)
  {
    const char *kind = json_string_value(json_object_get(m, "kind"));
    int known = 0;
    for (int i = 0; i < w->npreviews && !known; i++)
      known = strcmp(w->previews[i].module, name) == 0;
    if (!known && kind && (strcmp(kind, "camera") == 0 || strcmp(kind, "eyetracker") == 0) &&
        w->npreviews < WEB_PREVIEWS && strlen(name) < sizeof w->previews[0].module) {
      w->previews[w->npreviews].web = w;
      strcpy(w->previews[w->npreviews++].module, name);
    }
  }
}

static void on_status(json_t *reply, const char *error, void *user)
{
  struct pirec_web *w = user;
  w->status_ticket = 0;
  if (!reply)
    return;
  json_object_del(reply, "id");
  note_previews(w, reply);
  json_t *msg = json_pack("{s:s,s:b,s:O,s:{s:I,s:I}}", "type", "status", "connected", 1, "status", reply,
                          "disk", "free", (json_int_t)w->disk_free, "total", (json_int_t)w->disk_total);
  push_set(w, &w->status, msg);
}

static void on_statfs(uv_fs_t *req)
{
  struct pirec_web *w = container_of(req, struct pirec_web, statfs);
  if (req->result == 0) {
    uv_statfs_t *st = req->ptr;
    w->disk_free = st->f_bavail * st->f_bsize;
    w->disk_total = st->f_blocks * st->f_bsize;
  }
  uv_fs_req_cleanup(req);
  w->statfs_busy = 0;
}

static void on_poll(uv_timer_t *t)
{
  struct pirec_web *w = t->data;
  if (!w->clients) {
    uv_timer_stop(t); /* nobody watches: the controller is not asked */
    return;
  }
  if (!w->statfs_busy && uv_fs_statfs(w->loop, &w->statfs, w->s.data_dir, on_statfs) == 0)
    w->statfs_busy = 1;
  if (w->status_ticket == 0 && pirec_webctl_connected(w->ctl)) {
    int64_t tk = pirec_webctl_send(w->ctl, json_pack("{s:s}", "cmd", "status"), 5000, on_status, w);
    w->status_ticket = tk > 0 ? tk : 0;
  }
}

static void on_preview(json_t *reply, const char *error, void *user)
{
  struct preview *p = user;
  p->ticket = 0;
  const char *r = json_string_value(json_object_get(reply, "reply"));
  if (!r)
    return;
  json_object_del(reply, "id");
  json_object_set_new(reply, "type", json_string("preview"));
  json_object_set_new(reply, "module", json_string(p->module));
  push_set(p->web, &p->msg, json_incref(reply)); /* an error too: the page says why there is none */
}

static int watchers(const struct pirec_web *w)
{
  int n = 0;
  for (const struct ws_conn *p = w->clients; p; p = p->next)
    n += p->watching;
  return n;
}

/* Asks each camera for a preview while someone watches; at most one request per camera waits. */
static void on_preview_timer(uv_timer_t *t)
{
  struct pirec_web *w = t->data;
  if (!watchers(w)) {
    uv_timer_stop(t);
    return;
  }
  for (int i = 0; i < w->npreviews && pirec_webctl_connected(w->ctl); i++) {
    struct preview *p = &w->previews[i];
    if (p->ticket)
      continue;
    json_t *req =
        json_pack("{s:s,s:s,s:i}", "cmd", "preview", "module", p->module, "max_width", PREVIEW_WIDTH);
    int64_t tk = pirec_webctl_send(w->ctl, req, 5000, on_preview, p);
    p->ticket = tk > 0 ? tk : 0;
  }
}

void pirec__web_poll_start(struct pirec_web *w)
{
  if (!uv_is_active((uv_handle_t *)&w->poll))
    uv_timer_start(&w->poll, on_poll, 0, POLL_MS);
}

static int admit(struct pirec_web *w, struct lws *wsi)
{
  const char *why = NULL;
  char cookie[200];
  int refuse = pirec__web_guard(w, wsi, 0, 0, &why, cookie, sizeof cookie);
  if (!refuse && w->nclients >= w->s.max_clients)
    refuse = 503;
  if (refuse)
    w->refused++;
  return refuse ? -1 : 0;
}

static void drop(struct pirec_web *w, struct ws_conn *c)
{
  for (struct ws_conn **pp = &w->clients; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      w->nclients--;
      return;
    }
  }
}

/* Writes one message the client has not had (the status first, then previews); asks for another
 * writeable callback when more wait. */
static int write_newest(struct ws_conn *c)
{
  struct pirec_web *w = c->web;
  struct push_msg *m = NULL;
  uint64_t *gen = NULL;
  if (w->status.buf && c->sent_gen != w->status.gen) {
    m = &w->status;
    gen = &c->sent_gen;
  }
  for (int i = 0; !m && c->watching && i < w->npreviews; i++) {
    if (w->previews[i].msg.buf && c->preview_gen[i] != w->previews[i].msg.gen) {
      m = &w->previews[i].msg;
      gen = &c->preview_gen[i];
    }
  }
  if (!m)
    return 0;
  *gen = m->gen;
  /* lws_write keeps what the socket does not take and sends it before the next writeable
   * callback: at most one message waits per client. */
  if (lws_write(c->wsi, (unsigned char *)m->buf + LWS_PRE, m->len, LWS_WRITE_TEXT) < (int)m->len)
    return -1;
  lws_callback_on_writable(c->wsi);
  return 0;
}

/* {"watch":true} asks for previews, {"watch":false} stops them. */
static int receive(struct ws_conn *c, const char *in, size_t len)
{
  json_t *msg = NULL;
  char err[200];
  if (pirec_jsonl_parse_object(in, len, &msg, err, sizeof err) <= 0)
    return 0; /* not ours to answer: ignored */
  json_t *watch = json_object_get(msg, "watch");
  if (json_is_boolean(watch)) {
    c->watching = json_is_true(watch);
    if (c->watching && !uv_is_active((uv_handle_t *)&c->web->preview_timer))
      uv_timer_start(&c->web->preview_timer, on_preview_timer, 0, PREVIEW_MS);
    lws_callback_on_writable(c->wsi);
  }
  json_decref(msg);
  return 0;
}

int pirec__web_ws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
  struct ws_conn *c = user;
  struct pirec_web *w = lws_context_user(lws_get_context(wsi));
  switch (reason) {
  case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: return admit(w, wsi);
  case LWS_CALLBACK_ESTABLISHED:
    memset(c, 0, sizeof *c);
    *c = (struct ws_conn){.next = w->clients, .web = w, .wsi = wsi};
    w->clients = c;
    w->nclients++;
    if (!w->status.buf)
      pirec__web_push_controller(w, pirec_webctl_connected(w->ctl));
    lws_callback_on_writable(wsi);
    pirec__web_poll_start(w);
    return 0;
  case LWS_CALLBACK_SERVER_WRITEABLE: return write_newest(c);
  case LWS_CALLBACK_RECEIVE:
    if (len > RX_MAX || lws_remaining_packet_payload(wsi) > 0 || !lws_is_first_fragment(wsi) ||
        !lws_is_final_fragment(wsi)) {
      lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, (unsigned char *)"message too large", 17);
      return -1;
    }
    return receive(c, in, len);
  case LWS_CALLBACK_CLOSED:
    if (c && c->web)
      drop(w, c);
    return 0;
  default: return 0;
  }
}
