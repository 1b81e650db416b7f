/* The control socket: a Unix stream socket speaking JSON lines (docs/PROTOCOL.md), each client
 * with bounded buffers, flow control and a fair share of the loop. Commands become ops (ops.c);
 * status and note are answered at once. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "controller-int.h"
#include "pirec/jsonl.h"
#include "pirec/log.h"
#include "pirec/container_of.h"

#define CLIENT_MAX_LINE PIREC_JSONL_MAX_LINE
/* Flow control per client: past CLIENT_OUT_HIGH bytes of unread replies the client's input is not
 * read any further (its commands wait in the kernel), below CLIENT_OUT_LOW reading resumes; a client
 * whose replies make no progress for CLIENT_STALL_MS, or that lets CLIENT_MAX_OUT pile up, is
 * disconnected. Nobody else waits for it in any case. */
#define CLIENT_OUT_HIGH (64u * 1024)
#define CLIENT_OUT_LOW  (16u * 1024)
#define CLIENT_MAX_OUT  (4u * 1024 * 1024)
#define CLIENT_STALL_MS 5000
/* Lines run for one client before the loop turns to other work (fairness under a flood). */
#define CLIENT_LINES_PER_TURN 32

/* A preview asked of a recorder for a client, which may go away before the answer comes. */
struct preview_wait {
  struct preview_wait *next;
  struct pirec_controller *c;
  struct client *cl; /* NULL once the client went away */
  json_t *id;
};

struct client {
  uv_pipe_t pipe;
  struct pirec_controller *c;
  struct pirec_jsonl_reader in; /* commands read and not yet run */
  size_t out_queued;
  int closing;
  int reading;    /* uv_read_start is in effect */
  int wait_drain; /* stopped until out_queued drains below CLIENT_OUT_LOW */
  int backlog;    /* complete lines left over after a turn: run again from the idle handle */
  int eof;
  int awaiting; /* replies owed by an op or a note still in flight: a half-closed client waits for them */
  int in_lines; /* client_run_lines is running its lines: a reply given meanwhile closes nothing */
  uint64_t progress_ms; /* uv_now when a reply write last completed or the queue was empty */
  struct client *next;
};

static void client_process(struct client *cl);
static void client_close_if_done(struct client *cl);
static void on_idle(uv_idle_t *idle);
static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);

struct cwrite {
  uv_write_t req;
  struct client *client;
  size_t len;
  char *data; /* the unwritten rest of one line from pirec_jsonl_encode */
};

static void client_free_cb(uv_handle_t *h)
{
  struct client *cl = container_of((uv_pipe_t *)h, struct client, pipe);
  struct pirec_controller *c = cl->c;
  pirec_jsonl_reader_free(&cl->in);
  free(cl);
  c->handles_open--;
  c->hooks.settle(c);
}

static void client_close(struct client *cl)
{
  if (cl->closing)
    return;
  cl->closing = 1;
  struct pirec_controller *c = cl->c;
  for (struct client **pp = &c->clients; *pp; pp = &(*pp)->next)
    if (*pp == cl) {
      *pp = cl->next;
      break;
    }
  c->nclients--;
  for (struct op *op = c->ops; op; op = op->next)
    for (struct waiter *w = op->waiters; w; w = w->next)
      if (w->who == cl)
        w->who = NULL;
  pirec__note_waits_forget(c, cl);
  for (struct preview_wait *pw = c->preview_waits; pw; pw = pw->next)
    if (pw->cl == cl)
      pw->cl = NULL;
  uv_close((uv_handle_t *)&cl->pipe, client_free_cb);
}

static void on_client_write(uv_write_t *req, int status)
{
  struct cwrite *w = container_of(req, struct cwrite, req);
  struct client *cl = w->client;
  cl->out_queued -= w->len;
  free(w->data);
  free(w);
  if (status < 0 || cl->closing)
    return;
  cl->progress_ms = uv_now(cl->c->loop);
  if (cl->wait_drain && cl->out_queued <= CLIENT_OUT_LOW) {
    cl->wait_drain = 0;
    client_process(cl);
  } else {
    client_close_if_done(cl);
  }
}

/* Queues one reply line (obj stolen). Past CLIENT_MAX_OUT the client is disconnected: the flow
 * control in client_process keeps a reading client far below it. */
static void client_send(struct client *cl, json_t *obj)
{
  if (!cl || cl->closing) {
    json_decref(obj);
    return;
  }
  size_t len = 0;
  char *line = pirec_jsonl_encode(obj, 0, &len);
  json_decref(obj);
  if (!line)
    return;
  if (cl->out_queued + len > CLIENT_MAX_OUT) {
    free(line);
    pirec_log(PIREC_LOG_WARN, "control client not reading its replies (%zu bytes queued): disconnected",
              cl->out_queued);
    cl->c->clients_dropped++;
    client_close(cl);
    return;
  }
  uv_buf_t b = uv_buf_init(line, (unsigned)len);
  /* Try the socket first: most replies go out at once without a queued request. */
  int n = uv_try_write((uv_stream_t *)&cl->pipe, &b, 1);
  if (n == (int)len) {
    free(line);
    return;
  }
  struct cwrite *w = malloc(sizeof(*w));
  if (!w) {
    free(line);
    return;
  }
  w->client = cl;
  w->data = line;
  w->len = len;
  if (n > 0) {
    memmove(w->data, w->data + n, w->len - (size_t)n);
    w->len -= (size_t)n;
  }
  b = uv_buf_init(w->data, (unsigned)w->len);
  if (uv_write(&w->req, (uv_stream_t *)&cl->pipe, &b, 1, on_client_write) < 0) {
    free(w->data);
    free(w);
    client_close(cl);
    return;
  }
  if (cl->out_queued == 0)
    cl->progress_ms = uv_now(cl->c->loop);
  cl->out_queued += w->len;
}

/* A client that has half-closed its socket (end of input) is closed once every command it sent has
 * been answered: its replies written, and none owed by an op or a note still in flight. */
static void client_close_if_done(struct client *cl)
{
  if (cl->eof && !cl->backlog && cl->out_queued == 0 && cl->awaiting == 0)
    client_close(cl);
}

/* An op's or a note's reply (struct waiter): each command_op and accepted note owes exactly one. */
static void client_reply(void *who, json_t *obj)
{
  struct client *cl = who;
  cl->awaiting--;
  client_send(cl, obj);
  if (!cl->closing && !cl->in_lines)
    client_close_if_done(cl);
}

static json_t *reply_new(json_t *id, const char *reply)
{
  json_t *o = json_object();
  json_object_set(o, "id", id ? id : json_null());
  json_object_set_new(o, "reply", json_string(reply));
  return o;
}

static void client_error(struct client *cl, json_t *id, const char *message)
{
  json_t *o = reply_new(id, "error");
  json_t *m = json_string(message);
  json_object_set_new(o, "message", m ? m : json_string("error (message not UTF-8)"));
  client_send(cl, o);
}

static void command_status(struct client *cl, json_t *id, json_t *msg, enum op_kind kind)
{
  json_t *o = cl->c->hooks.status_json(cl->c);
  json_object_set(o, "id", id ? id : json_null());
  json_object_set_new(o, "reply", json_string("status"));
  client_send(cl, o);
}

static void command_note(struct client *cl, json_t *id, json_t *msg, enum op_kind kind)
{
  json_t *text = json_object_get(msg, "text");
  if (!json_is_string(text)) {
    client_error(cl, id, text ? "field 'text' must be a string" : "missing field 'text'");
    return;
  }
  char err[300];
  /* Answered "noted" only once the notes recorder has the row (client_reply, now or later); a
   * refused note is answered here and owes nothing. */
  cl->awaiting++;
  if (pirec__take_note(cl->c, json_string_value(text), json_string_length(text), client_reply, cl, id, err,
                       sizeof err) < 0) {
    cl->awaiting--;
    client_error(cl, id, err);
  }
}

/* The command's optional label, sanitised into clean. -1 once the client heard why not. */
static int command_label(struct client *cl, json_t *id, json_t *msg, char clean[PIREC_SESSION_LABEL_MAX + 1])
{
  json_t *label = json_object_get(msg, "label");
  if (!label)
    return 0;
  if (!json_is_string(label)) {
    client_error(cl, id, "field 'label' must be a string");
    return -1;
  }
  int r = pirec_session_label_sanitise(json_string_value(label), clean);
  if (r < 0) {
    char err[200];
    snprintf(err, sizeof err, "invalid label: %s",
             r == -ENAMETOOLONG ? "longer than 64 bytes" : "'..' and '/' are not allowed");
    client_error(cl, id, err);
    return -1;
  }
  return 0;
}

/* start, stop, trial, reload: an op in the queue; the client is answered when it has run. */
static void command_op(struct client *cl, json_t *id, json_t *msg, enum op_kind kind)
{
  struct pirec_controller *c = cl->c;
  char clean[PIREC_SESSION_LABEL_MAX + 1] = "";
  if (command_label(cl, id, msg, clean) < 0)
    return;
  if (c->shutting_down) {
    client_error(cl, id, "shutting down");
    return;
  }
  const char *source = json_string_value(json_object_get(msg, "source"));
  struct op *op = pirec__op_queue(
      c, kind, clean,
      source && (strcmp(source, "cli") == 0 || strcmp(source, "web") == 0) ? source : "socket", NULL);
  if (!op) {
    client_error(cl, id, "out of memory");
    return;
  }
  pirec__op_add_waiter(op, client_reply, cl, id);
  cl->awaiting++;
  pirec__op_next(c);
}

static void preview_reply(struct module *m, json_t *reply, void *user)
{
  struct preview_wait *pw = user;
  for (struct preview_wait **pp = &pw->c->preview_waits; *pp; pp = &(*pp)->next)
    if (*pp == pw) {
      *pp = pw->next;
      break;
    }
  if (pw->cl && reply) {
    json_t *o = json_deep_copy(reply);
    json_object_set(o, "id", pw->id ? pw->id : json_null());
    client_send(pw->cl, o);
  } else if (pw->cl) {
    client_error(pw->cl, pw->id, "the recorder went away before its preview");
  }
  json_decref(pw->id);
  free(pw);
}

/* preview: a picture from a recorder (docs/PROTOCOL.md), answered by the recorder itself. */
static void command_preview(struct client *cl, json_t *id, json_t *msg, enum op_kind kind)
{
  struct pirec_controller *c = cl->c;
  const char *name = json_string_value(json_object_get(msg, "module"));
  json_t *width = json_object_get(msg, "max_width");
  struct module *m = NULL;
  for (int i = 0; name && i < c->nmodules; i++)
    if (strcmp(c->modules[i].name, name) == 0)
      m = &c->modules[i];
  if (!name || (width && !json_is_integer(width))) {
    client_error(cl, id,
                 !name ? "missing field 'module' (a string)" : "field 'max_width' must be an integer");
    return;
  }
  if (!m || m->state != M_READY || !m->accepts_preview) {
    client_error(cl, id,
                 !m                    ? "no such module"
                 : m->state != M_READY ? "the module is not ready (starting or restarting)"
                                       : "this module has no preview");
    return;
  }
  struct preview_wait *pw = calloc(1, sizeof *pw);
  if (!pw) {
    client_error(cl, id, "out of memory");
    return;
  }
  *pw = (struct preview_wait){c->preview_waits, c, cl, id ? json_incref(id) : NULL};
  json_t *cmd =
      json_pack("{s:s,s:I}", "cmd", "preview", "max_width", width ? json_integer_value(width) : 640);
  if (pirec__module_send(m, cmd, preview_reply, pw) < 0) {
    client_error(cl, id, "the module is not running");
    json_decref(pw->id);
    free(pw);
    return;
  }
  c->preview_waits = pw;
}

/* remux {session: NAME}: pirec-remux on a finished session, in the background queue; the reply says
 * it is queued, the status reply's "remux" shows its progress and verdict. */
static void command_remux(struct client *cl, json_t *id, json_t *msg, enum op_kind kind)
{
  (void)kind;
  const char *name = json_string_value(json_object_get(msg, "session"));
  char dir[4400], err[300];
  if (!name) {
    client_error(cl, id, "remux needs 'session' (a session directory's name)");
    return;
  }
  if (pirec__remux_command(cl->c, name, dir, sizeof dir, err, sizeof err) < 0) {
    client_error(cl, id, err);
    return;
  }
  json_t *o = reply_new(id, "remux_queued");
  json_object_set_new(o, "session", json_string(name));
  json_object_set_new(o, "session_dir", json_string(dir));
  client_send(cl, o);
}

/* The commands of the control socket (docs/PROTOCOL.md), in the order the error text lists them. */
static const struct command {
  const char *name;
  void (*run)(struct client *cl, json_t *id, json_t *msg, enum op_kind kind);
  enum op_kind kind;
} commands[] = {
    {"status", command_status, OP_START},   {"start", command_op, OP_START},
    {"stop", command_op, OP_STOP},          {"trial", command_op, OP_TRIAL},
    {"note", command_note, OP_START},       {"reload", command_op, OP_RELOAD},
    {"preview", command_preview, OP_START}, {"remux", command_remux, OP_START},
};

static void client_command(struct client *cl, json_t *msg)
{
  json_t *id = json_object_get(msg, "id");
  json_t *cmdv = json_object_get(msg, "cmd");
  if (!json_is_string(cmdv)) {
    client_error(cl, id, cmdv ? "field 'cmd' must be a string" : "missing field 'cmd'");
    return;
  }
  const char *cmd = json_string_value(cmdv);
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) {
    if (strcmp(cmd, commands[i].name) == 0) {
      pirec_looplag_op(commands[i].name);
      commands[i].run(cl, id, msg, commands[i].kind);
      pirec_looplag_op(NULL);
      return;
    }
  }
  char err[300];
  pirec_jsonl_unknown_command(cmd, "status, start, stop, trial, note, reload, preview or remux", err,
                              sizeof err);
  client_error(cl, id, err);
}

static void client_line(struct client *cl, const char *line, size_t len)
{
  char err[300];
  json_t *msg = NULL;
  int r = pirec_jsonl_parse_object(line, len, &msg, err, sizeof err);
  if (r < 0)
    client_error(cl, NULL, err);
  if (r <= 0)
    return;
  client_command(cl, msg);
  json_decref(msg);
}

static void client_too_long(struct client *cl)
{
  char err[96];
  pirec_jsonl_too_long(CLIENT_MAX_LINE, err, sizeof err);
  strcat(err, ": disconnecting");
  client_error(cl, NULL, err);
  /* Read no more; close once the error reply is out. */
  pirec_jsonl_reader_reset(&cl->in);
  cl->eof = 1;
}

/* Runs up to CLIENT_LINES_PER_TURN of the lines buffered for cl. Returns 1 when it stops with
 * work left: lines (they run again from the idle handle, after other clients and timers had their
 * turn), or replies past CLIENT_OUT_HIGH the client has not read (until they drain,
 * on_client_write). */
static int client_run_lines(struct client *cl)
{
  for (int budget = CLIENT_LINES_PER_TURN; !cl->closing; budget--) {
    if (cl->out_queued > CLIENT_OUT_HIGH) {
      cl->wait_drain = 1;
      return 1;
    }
    if (budget == 0) {
      cl->backlog = 1;
      uv_idle_start(&cl->c->idle, on_idle);
      return 1;
    }
    const char *line;
    size_t len;
    int r = pirec_jsonl_reader_next(&cl->in, &line, &len);
    if (r < 0)
      client_too_long(cl);
    if (r <= 0)
      return 0;
    cl->in_lines = 1;
    client_line(cl, line, len);
    cl->in_lines = 0;
  }
  return 0;
}

/* Runs cl's buffered lines, then reads more unless it holds (see client_run_lines) or the client
 * is done (end of input: closed once its replies are out). */
static void client_process(struct client *cl)
{
  int hold = client_run_lines(cl);
  if (cl->closing)
    return;
  if (hold || cl->eof) {
    if (cl->reading) {
      uv_read_stop((uv_stream_t *)&cl->pipe);
      cl->reading = 0;
    }
    if (!hold)
      client_close_if_done(cl);
    return;
  }
  if (!cl->reading) {
    if (uv_read_start((uv_stream_t *)&cl->pipe, on_client_alloc, on_client_read) < 0) {
      client_close(cl);
      return;
    }
    cl->reading = 1;
  }
}

static void on_idle(uv_idle_t *idle)
{
  struct pirec_controller *c = container_of(idle, struct pirec_controller, idle);
  int more = 0;
  for (struct client *cl = c->clients, *next; cl; cl = next) {
    next = cl->next;
    if (!cl->backlog)
      continue;
    cl->backlog = 0;
    client_process(cl);
  }
  for (struct client *cl = c->clients; cl; cl = cl->next)
    more |= cl->backlog;
  if (!more)
    uv_idle_stop(idle);
}

static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
  struct client *cl = container_of((uv_pipe_t *)h, struct client, pipe);
  /* Read straight into the client's reader; without memory libuv reports UV_ENOBUFS. */
  size_t avail = 0;
  char *p = pirec_jsonl_reader_space(&cl->in, &avail);
  *b = uv_buf_init(p, p ? (unsigned)avail : 0);
}

static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
  struct client *cl = container_of((uv_pipe_t *)s, struct client, pipe);
  if (n == UV_EOF) {
    /* Half-closed: answer what it sent, then close. */
    uv_read_stop(s);
    cl->reading = 0;
    cl->eof = 1;
    client_process(cl);
    return;
  }
  if (n < 0) {
    client_close(cl);
    return;
  }
  pirec_jsonl_reader_fill(&cl->in, (size_t)n);
  client_process(cl);
}

static void on_connection(uv_stream_t *server, int status)
{
  struct pirec_controller *c = server->data;
  if (status < 0)
    return;
  struct client *cl = calloc(1, sizeof(*cl));
  if (!cl)
    return;
  cl->c = c;
  pirec_jsonl_reader_init(&cl->in, CLIENT_MAX_LINE); /* allocates nothing yet: cannot fail */
  uv_pipe_init(c->loop, &cl->pipe, 0);
  c->handles_open++;
  if (uv_accept(server, (uv_stream_t *)&cl->pipe) < 0 || c->shutting_down || c->nclients >= MAX_CLIENTS) {
    if (c->nclients >= MAX_CLIENTS)
      pirec_log(PIREC_LOG_WARN, "control socket: %d clients connected, refusing another", c->nclients);
    cl->closing = 1;
    uv_close((uv_handle_t *)&cl->pipe, client_free_cb);
    return;
  }
  cl->next = c->clients;
  c->clients = cl;
  c->nclients++;
  pirec__timers_update(c); /* a client may ask for status: recorder statuses are polled again */
  if (uv_read_start((uv_stream_t *)&cl->pipe, on_client_alloc, on_client_read) == 0)
    cl->reading = 1;
}

/* The listening socket, bound here rather than by uv_pipe_bind: libuv would unlink a path it
 * bound in uv_close, a file system call on the loop thread at shutdown; the controller removes
 * the socket file in the threadpool instead (pirec__unlink_later). Created with the final mode: no
 * window in which others could connect. Returns the fd or -errno. */
static int bind_socket(const char *path, mode_t mode)
{
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  mode_t old = umask(0777 & ~mode);
  int r = bind(fd, (struct sockaddr *)&sa, sizeof sa);
  int err = -errno;
  umask(old);
  if (r < 0) {
    close(fd);
    return err;
  }
  chmod(path, mode);
  return fd;
}

int pirec__control_listen(struct pirec_controller *c)
{
  if (strcmp(pirec_config_get_string(c->cfg, "control", "mode"), "off") == 0)
    return 0;
  int err = pirec__mkdir_parents(c->socket_path, 0700);
  if (err < 0) {
    pirec__report(c, "pirec: cannot create the directory of '%s': %s", c->socket_path, strerror(-err));
    return err;
  }
  /* A socket file left by a controller that died is removed; a live one is refused. */
  struct stat st;
  if (lstat(c->socket_path, &st) == 0 && S_ISSOCK(st.st_mode)) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", c->socket_path);
    int alive = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    if (fd >= 0)
      close(fd);
    if (alive) {
      pirec__report(c, "pirec: another pirec is running on '%s'", c->socket_path);
      return -EADDRINUSE;
    }
    unlink(c->socket_path);
  }
  uv_pipe_init(c->loop, &c->server, 0);
  c->handles_open++;
  c->server_open = 1;
  c->server.data = c;
  int fd = bind_socket(c->socket_path, (mode_t)pirec_config_get_int(c->cfg, "control", "socket_mode"));
  err = fd < 0 ? fd : uv_pipe_open(&c->server, fd);
  if (fd >= 0 && err < 0)
    close(fd);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&c->server, 64, on_connection);
  if (err < 0) {
    pirec__report(c, "pirec: cannot listen on '%s': %s", c->socket_path, uv_strerror(err));
    return err;
  }
  return 0;
}

void pirec__clients_check_stalled(struct pirec_controller *c)
{
  uint64_t now = uv_now(c->loop);
  for (struct client *cl = c->clients, *next; cl; cl = next) {
    next = cl->next;
    if (cl->out_queued && now - cl->progress_ms > CLIENT_STALL_MS) {
      pirec_log(PIREC_LOG_WARN, "control client has not read its replies for %u ms: disconnected",
                CLIENT_STALL_MS);
      c->clients_dropped++;
      client_close(cl);
    }
  }
}

void pirec__clients_close_all(struct pirec_controller *c)
{
  for (struct client *cl = c->clients; cl;) {
    struct client *next = cl->next;
    client_close(cl);
    cl = next;
  }
}
