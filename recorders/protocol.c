/* The recorder side of the controller protocol: JSON lines on stdin, replies on stdout. */
#include "pirec/recorder.h"
#include "pirec/crypt.h"

#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pirec/clock.h"
#include "pirec/error.h"
#include "pirec/jsonl.h"
#include "pirec/log.h"
#include "pirec/looplag.h"
#include "pirec/container_of.h"

#define DEFAULT_MAX_LINE PIREC_JSONL_MAX_LINE
#define DEFAULT_MAX_OUT  (4u * 1024 * 1024)
#define CLOSE_FLUSH_MS   2000
#define LABEL_MAX        64

union stream {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_pipe_t pipe;
  uv_tty_t tty;
};

struct out_write {
  uv_write_t req;
  struct pirec_recorder *rec;
  size_t len;
  char *data; /* one line, from pirec_jsonl_encode */
};

struct pirec_recorder {
  uv_loop_t *loop;
  char *name;
  struct pirec_recorder_ops ops;
  void *user;
  struct pirec_recorder_options opts;

  union stream in;
  union stream out;
  uv_signal_t sigint;
  uv_signal_t sigterm;
  uv_timer_t flush_timer;
  struct pirec_looplag lag;
  int handles_open; /* handles initialised and not yet closed */

  struct pirec_jsonl_reader reader; /* commands on stdin */

  int started;
  int reading;
  int recording;
  int trial;
  int quitting;
  int closing;
  int64_t start_mono_ns;
  char *last_session_dir;      /* of the last start: tells a new session from the next trial */
  struct pirec_crypt_key *key; /* the session key of the last start, until the session's stop */
  int lag_open;
  struct pirec_recorder_counters counters;
  struct pirec_recorder_req *pending;
  pirec_recorder_close_cb close_cb;

  /* Commands run in order: while a start or stop is outstanding (barrier > 0), later commands
   * other than status wait in deferred, so a note sent right behind a start finds the file open. */
  int barrier;
  json_t *deferred; /* array of parsed commands */
  int draining;
  int quit_deferred; /* end of input or a signal arrived behind a barrier */
  int read_paused;   /* too many deferred commands: stop reading until they drain */
};

#define DEFERRED_PAUSE 256

void pirec_recorder_options_default(struct pirec_recorder_options *opts)
{
  memset(opts, 0, sizeof(*opts));
  opts->in_fd = 0;
  opts->out_fd = 1;
  opts->max_line = DEFAULT_MAX_LINE;
  opts->max_out_bytes = DEFAULT_MAX_OUT;
  opts->handle_signals = 1;
}

int pirec_recorder_new(uv_loop_t *loop, const char *name, const struct pirec_recorder_ops *ops, void *user,
                       const struct pirec_recorder_options *opts, struct pirec_recorder **out)
{
  *out = NULL;
  if (!loop || !name || !*name || !ops || !ops->start || !ops->stop || !ops->quit)
    return -EINVAL;
  struct pirec_recorder *rec = calloc(1, sizeof(*rec));
  if (!rec)
    return -ENOMEM;
  rec->name = strdup(name);
  if (!rec->name) {
    free(rec);
    return -ENOMEM;
  }
  rec->loop = loop;
  rec->ops = *ops;
  rec->user = user;
  if (opts) {
    rec->opts = *opts;
    if (!rec->opts.max_line)
      rec->opts.max_line = DEFAULT_MAX_LINE;
    if (!rec->opts.max_out_bytes)
      rec->opts.max_out_bytes = DEFAULT_MAX_OUT;
  } else {
    pirec_recorder_options_default(&rec->opts);
  }
  if (pirec_jsonl_reader_init(&rec->reader, rec->opts.max_line) < 0) {
    free(rec->name);
    free(rec);
    return -ENOMEM;
  }
  *out = rec;
  return 0;
}

void *pirec_recorder_user(const struct pirec_recorder *rec)
{
  return rec->user;
}
const char *pirec_recorder_name(const struct pirec_recorder *rec)
{
  return rec->name;
}
int pirec_recorder_recording(const struct pirec_recorder *rec)
{
  return rec->recording;
}
int pirec_recorder_trial(const struct pirec_recorder *rec)
{
  return rec->trial;
}

void pirec_recorder_counters(const struct pirec_recorder *rec, struct pirec_recorder_counters *out)
{
  *out = rec->counters;
}

static void dispatch(struct pirec_recorder *rec, json_t *msg);
static void begin_quit(struct pirec_recorder *rec, json_t *id);
static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

/* ---- output ---------------------------------------------------------------------------------- */

static void finish_close(struct pirec_recorder *rec);

static void on_write(uv_write_t *req, int status)
{
  struct out_write *w = container_of(req, struct out_write, req);
  struct pirec_recorder *rec = w->rec;
  rec->counters.out_queued -= w->len;
  free(w->data);
  free(w);
  /* Closing waits for the last reply to be written (or for its deadline). */
  if (rec->closing && rec->counters.out_queued == 0 && status != UV_ECANCELED)
    finish_close(rec);
}

/* Serialises obj as one line and queues it; obj is always released. */
static int send_json(struct pirec_recorder *rec, json_t *obj)
{
  if (!obj)
    return -ENOMEM;
  if (!rec->started || rec->out.handle.type == UV_UNKNOWN_HANDLE || uv_is_closing(&rec->out.handle)) {
    json_decref(obj);
    rec->counters.replies_dropped++;
    return -EPIPE;
  }
  size_t len = 0;
  char *line = pirec_jsonl_encode(obj, JSON_ENSURE_ASCII, &len);
  json_decref(obj);
  if (!line)
    return -ENOMEM;
  if (rec->counters.out_queued + len > rec->opts.max_out_bytes) {
    /* The controller stopped reading: drop rather than grow without bound. */
    free(line);
    rec->counters.replies_dropped++;
    return -ENOBUFS;
  }
  struct out_write *w = malloc(sizeof(*w));
  if (!w) {
    free(line);
    return -ENOMEM;
  }
  w->data = line;
  w->rec = rec;
  w->len = len;
  uv_buf_t buf = uv_buf_init(w->data, (unsigned)w->len);
  int err = uv_write(&w->req, &rec->out.stream, &buf, 1, on_write);
  if (err < 0) {
    free(line);
    free(w);
    rec->counters.replies_dropped++;
    return err;
  }
  rec->counters.out_queued += w->len;
  rec->counters.replies++;
  return 0;
}

static json_t *reply_object(struct pirec_recorder *rec, json_t *id, const char *reply)
{
  json_t *o = json_object();
  if (!o)
    return NULL;
  json_object_set(o, "id", id ? id : json_null());
  json_object_set_new(o, "reply", json_string(reply));
  json_object_set_new(o, "module", json_string(rec->name));
  return o;
}

static int send_error(struct pirec_recorder *rec, json_t *id, const char *message)
{
  json_t *o = reply_object(rec, id, "error");
  if (!o)
    return -ENOMEM;
  /* Messages may quote bytes from a malformed line; jansson refuses invalid UTF-8, so fall back. */
  json_t *m = json_string(message);
  json_object_set_new(o, "message", m ? m : json_string("invalid command (message not UTF-8)"));
  return send_json(rec, o);
}

int pirec_recorder_event(struct pirec_recorder *rec, const char *type, json_t *fields)
{
  json_t *o = fields && json_is_object(fields) ? fields : json_object();
  if (fields && !json_is_object(fields))
    json_decref(fields);
  if (!o)
    return -ENOMEM;
  json_object_set_new(o, "event", json_string(type));
  json_object_set_new(o, "module", json_string(rec->name));
  return send_json(rec, o);
}

/* ---- requests -------------------------------------------------------------------------------- */

static void req_unlink(struct pirec_recorder_req *req)
{
  struct pirec_recorder_req **p = &req->rec->pending;
  while (*p && *p != req)
    p = &(*p)->next;
  if (*p)
    *p = req->next;
}

static void req_free(struct pirec_recorder_req *req)
{
  json_decref(req->id);
  json_decref(req->msg);
  json_decref(req->counters);
  free(req);
}

static const char *success_word(enum pirec_recorder_cmd cmd)
{
  switch (cmd) {
  case PIREC_RECORDER_START: return "started";
  case PIREC_RECORDER_STOP: return "stopped";
  case PIREC_RECORDER_STATUS: return "status";
  case PIREC_RECORDER_NOTE: return "noted";
  case PIREC_RECORDER_MARK: return "marked";
  case PIREC_RECORDER_QUIT: return "bye";
  case PIREC_RECORDER_PREVIEW: return "preview";
  }
  return "ok";
}

static json_t *looplag_json(struct pirec_recorder *rec)
{
  return pirec_looplag_json(&rec->lag);
}

/* Runs the commands that waited behind a start or stop, in order, until the next barrier. */
static void drain_deferred(struct pirec_recorder *rec)
{
  if (rec->draining)
    return;
  rec->draining = 1;
  while (!rec->closing && rec->barrier == 0 && rec->deferred && json_array_size(rec->deferred)) {
    json_t *msg = json_incref(json_array_get(rec->deferred, 0));
    json_array_remove(rec->deferred, 0);
    dispatch(rec, msg);
    json_decref(msg);
  }
  rec->draining = 0;
  if (rec->closing)
    return;
  if (rec->barrier == 0 && rec->quit_deferred) {
    rec->quit_deferred = 0;
    begin_quit(rec, NULL);
    return;
  }
  if (rec->read_paused && (!rec->deferred || json_array_size(rec->deferred) < DEFERRED_PAUSE / 2)) {
    rec->read_paused = 0;
    if (uv_read_start(&rec->in.stream, on_alloc, on_read) == 0)
      rec->reading = 1;
  }
}

/* Loop-lag ticks only while a trial records: an idle recorder wakes only for commands. */
static void set_recording(struct pirec_recorder *rec, int on)
{
  rec->recording = on;
  if (rec->lag_open)
    pirec_looplag_set_ticking(&rec->lag, on);
}

static int finish(struct pirec_recorder_req *req, int status, const char *message)
{
  struct pirec_recorder *rec = req->rec;
  req_unlink(req);
  int ret = 0;
  /* A stop ends the trial whatever it reports: a module whose files could not be completed (disk
   * full) has closed them all the same, and must take the next session's start. */
  if (req->cmd == PIREC_RECORDER_STOP)
    set_recording(rec, 0);
  if (req->cmd == PIREC_RECORDER_STOP && !req->handover) {
    /* The session ends here (a trial change keeps it for the next start, which brings it again). */
    pirec_crypt_key_free(rec->key);
    rec->key = NULL;
  }
  if (status < 0) {
    if (req->id || req->cmd != PIREC_RECORDER_QUIT)
      ret = send_error(rec, req->id, message ? message : pirec_strerror(status));
    req_free(req);
    return ret;
  }
  if (req->cmd == PIREC_RECORDER_START) {
    set_recording(rec, 1);
    rec->trial = req->trial;
  }
  /* A quit that came from a signal or the end of stdin has nobody to answer. */
  if (req->cmd == PIREC_RECORDER_QUIT && !req->id) {
    req_free(req);
    return 0;
  }
  json_t *o = reply_object(rec, req->id, success_word(req->cmd));
  if (!o) {
    req_free(req);
    return -ENOMEM;
  }
  if (req->cmd == PIREC_RECORDER_START || req->cmd == PIREC_RECORDER_STOP)
    json_object_set_new(o, "trial", json_integer(req->trial ? req->trial : rec->trial));
  if ((req->cmd == PIREC_RECORDER_START || req->cmd == PIREC_RECORDER_PREVIEW) && req->counters)
    json_object_update(o, req->counters); /* "waiting"; the preview's picture */
  if (req->cmd == PIREC_RECORDER_STATUS) {
    json_object_set_new(o, "state", json_string(rec->recording ? "recording" : "idle"));
    json_object_set_new(o, "trial", json_integer(rec->trial));
    json_object_set_new(o, "pid", json_integer(getpid()));
    json_object_set_new(o, "uptime_ns", json_integer(pirec_clock_mono_ns() - rec->start_mono_ns));
    json_object_set(o, "counters", req->counters ? req->counters : json_object());
    json_object_set_new(o, "looplag", looplag_json(rec));
    json_object_set_new(o, "protocol",
                        json_pack("{s:I,s:I,s:I,s:I}", "commands", (json_int_t)rec->counters.commands,
                                  "bad_lines", (json_int_t)rec->counters.bad_lines, "replies",
                                  (json_int_t)rec->counters.replies + 1, "replies_dropped",
                                  (json_int_t)rec->counters.replies_dropped));
  }
  req_free(req);
  return send_json(rec, o);
}

int pirec_recorder_finish(struct pirec_recorder_req *req, int status, const char *message)
{
  struct pirec_recorder *rec = req->rec;
  int barrier = req->cmd == PIREC_RECORDER_START || req->cmd == PIREC_RECORDER_STOP;
  int ret = finish(req, status, message);
  if (barrier) {
    rec->barrier--;
    drain_deferred(rec);
  }
  return ret;
}

void pirec_recorder_start_waiting(struct pirec_recorder_req *req, const char *why)
{
  if (!req->counters)
    req->counters = json_object();
  if (req->counters)
    json_object_set_new(req->counters, "waiting", json_string(why));
}

/* RFC 4648 base64 of n bytes into a new string (NULL when out of memory). */
static char *base64(const uint8_t *p, size_t n)
{
  static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
  for (size_t i = 0; out && i < n; i += 3) {
    uint32_t v =
        (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
    *o++ = abc[v >> 18 & 63];
    *o++ = abc[v >> 12 & 63];
    *o++ = i + 1 < n ? abc[v >> 6 & 63] : '=';
    *o++ = i + 2 < n ? abc[v & 63] : '=';
  }
  if (o)
    *o = '\0';
  return out;
}

int pirec_recorder_preview_done(struct pirec_recorder_req *req, int err, const uint8_t *jpeg, size_t len,
                                int width, int height, int64_t mono_ns)
{
  char *b64 = err >= 0 ? base64(jpeg, len) : NULL;
  if (err >= 0 && !b64)
    err = -ENOMEM;
  if (err >= 0)
    json_object_update_new(req->counters,
                           json_pack("{s:s,s:s,s:i,s:i,s:I}", "type", "image/jpeg", "jpeg", b64, "width",
                                     width, "height", height, "mono_ns", (json_int_t)mono_ns));
  free(b64);
  return pirec_recorder_finish(req, err, NULL);
}

void pirec_recorder_counters_add(struct pirec_recorder_req *req, const char *key, uint64_t value)
{
  if (!req->counters)
    req->counters = json_object();
  if (req->counters)
    json_object_set_new(req->counters, key, json_integer((json_int_t)value));
}

static struct pirec_recorder_req *req_new(struct pirec_recorder *rec, enum pirec_recorder_cmd cmd, json_t *id,
                                          json_t *msg)
{
  struct pirec_recorder_req *req = calloc(1, sizeof(*req));
  if (!req)
    return NULL;
  req->cmd = cmd;
  req->rec = rec;
  req->recv_mono_ns = pirec_clock_mono_ns();
  req->id = id ? json_incref(id) : NULL;
  req->msg = msg ? json_incref(msg) : NULL;
  req->label = "";
  req->next = rec->pending;
  rec->pending = req;
  return req;
}

static void begin_quit(struct pirec_recorder *rec, json_t *id)
{
  if (!id && rec->barrier > 0) {
    rec->quit_deferred = 1;
    return;
  }
  if (rec->quitting) {
    if (id)
      send_error(rec, id, "already quitting");
    return;
  }
  rec->quitting = 1;
  struct pirec_recorder_req *req = req_new(rec, PIREC_RECORDER_QUIT, id, NULL);
  if (!req) {
    /* Without memory the module still has to finalise its files; give it a request on the stack
     * is impossible (it may answer later), so exit through close instead. */
    pirec_log(PIREC_LOG_ERROR, "recorder '%s': out of memory on quit", rec->name);
    return;
  }
  rec->ops.quit(rec, req);
}

/* A label reaching a recorder was sanitised by the controller; refuse anything that could still
 * escape the session directory rather than trusting that. */
static int label_ok(const char *label)
{
  if (strlen(label) > LABEL_MAX)
    return 0;
  if (strchr(label, '/') || strstr(label, ".."))
    return 0;
  return 1;
}

/* msg's field key, or NULL: then *rc is 0 when the field is optional, or -EINVAL with err filled
 * when it is required. */
static json_t *get_field(json_t *msg, const char *key, int required, int *rc, char *err, size_t errlen)
{
  json_t *v = json_object_get(msg, key);
  *rc = 0;
  if (!v && required) {
    snprintf(err, errlen, "missing field '%s'", key);
    *rc = -EINVAL;
  }
  return v;
}

/* get_int and get_str return 1 with *out set, 0 for an absent optional field, or -EINVAL. */
static int get_int(json_t *msg, const char *key, int required, int64_t min, int64_t *out, char *err,
                   size_t errlen)
{
  int rc;
  json_t *v = get_field(msg, key, required, &rc, err, errlen);
  if (!v)
    return rc;
  if (!json_is_integer(v) || json_integer_value(v) < min) {
    snprintf(err, errlen, "field '%s' must be an integer >= %lld", key, (long long)min);
    return -EINVAL;
  }
  *out = json_integer_value(v);
  return 1;
}

static int get_str(json_t *msg, const char *key, int required, const char **out, char *err, size_t errlen)
{
  int rc;
  json_t *v = get_field(msg, key, required, &rc, err, errlen);
  if (!v)
    return rc;
  if (!json_is_string(v)) {
    snprintf(err, errlen, "field '%s' must be a string", key);
    return -EINVAL;
  }
  *out = json_string_value(v);
  return 1;
}

/* The command handlers: each checks its fields and hands a request to the module. They return 0
 * once the module has the request, -EINVAL with err filled for a command refused as a bad line,
 * or -ENOMEM. */

/* 1 with err filled when a start with these fields cannot run. */
static int start_refused(struct pirec_recorder *rec, const char *dir, int64_t trial, int64_t part,
                         const char *label, char *err, size_t errlen)
{
  if (!*dir)
    snprintf(err, errlen, "field 'session_dir' is empty");
  else if (trial > 999999 || part > 999999)
    snprintf(err, errlen, "field '%s' is too large", trial > 999999 ? "trial" : "part");
  else if (!label_ok(label))
    snprintf(err, errlen, "invalid label (no '/', no '..', at most %d bytes)", LABEL_MAX);
  else if (rec->recording)
    snprintf(err, errlen, "already recording trial %d", rec->trial);
  else
    return 0;
  return 1;
}

static int take_key(struct pirec_recorder *rec, json_t *msg, char *err, size_t errlen);

static int run_start(struct pirec_recorder *rec, json_t *id, json_t *msg, char *err, size_t errlen)
{
  const char *dir = NULL, *label = "";
  int64_t trial = 0, part = 0;
  if (get_str(msg, "session_dir", 1, &dir, err, errlen) < 0 ||
      get_int(msg, "trial", 1, 1, &trial, err, errlen) < 0 ||
      get_str(msg, "label", 0, &label, err, errlen) < 0 || get_int(msg, "part", 0, 0, &part, err, errlen) < 0)
    return -EINVAL;
  if (start_refused(rec, dir, trial, part, label, err, errlen) || take_key(rec, msg, err, errlen) < 0)
    return -EINVAL;
  struct pirec_recorder_req *req = req_new(rec, PIREC_RECORDER_START, id, msg);
  if (!req)
    return -ENOMEM;
  req->session_dir = dir;
  req->trial = (int)trial;
  req->label = label;
  req->part = (int)part;
  req->new_session = !rec->last_session_dir || strcmp(rec->last_session_dir, dir) != 0;
  if (req->new_session) {
    free(rec->last_session_dir);
    rec->last_session_dir = strdup(dir);
  }
  rec->barrier++;
  rec->ops.start(rec, req);
  return 0;
}

static int run_stop(struct pirec_recorder *rec, json_t *id, json_t *msg, char *err, size_t errlen)
{
  if (!rec->recording) {
    snprintf(err, errlen, "not recording");
    return -EINVAL;
  }
  json_t *next = json_object_get(msg, "next"), *abort_ = json_object_get(msg, "abort");
  if ((next && !json_is_boolean(next)) || (abort_ && !json_is_boolean(abort_))) {
    snprintf(err, errlen, "field '%s' must be true or false",
             next && !json_is_boolean(next) ? "next" : "abort");
    return -EINVAL;
  }
  struct pirec_recorder_req *req = req_new(rec, PIREC_RECORDER_STOP, id, msg);
  if (!req)
    return -ENOMEM;
  req->trial = rec->trial;
  req->handover = json_is_true(next);
  req->abort = json_is_true(abort_);
  rec->barrier++;
  rec->ops.stop(rec, req);
  return 0;
}

static int run_status(struct pirec_recorder *rec, json_t *id, json_t *msg, char *err, size_t errlen)
{
  struct pirec_recorder_req *req = req_new(rec, PIREC_RECORDER_STATUS, id, msg);
  if (!req)
    return -ENOMEM;
  req->counters = json_object();
  if (rec->ops.status)
    rec->ops.status(rec, req);
  else
    pirec_recorder_finish(req, 0, NULL);
  return 0;
}

/* A note's or a mark's text and clocks into a new request of cmd. 0 and *out, or -EINVAL/-ENOMEM. */
static int text_req(struct pirec_recorder *rec, enum pirec_recorder_cmd cmd, json_t *id, json_t *msg,
                    char *err, size_t errlen, struct pirec_recorder_req **out)
{
  const char *text = NULL;
  int64_t mono = 0, wall = 0;
  if (get_str(msg, "text", 1, &text, err, errlen) < 0)
    return -EINVAL;
  int hm = get_int(msg, "mono_ns", 0, 0, &mono, err, errlen);
  int hw = get_int(msg, "wall_ns", 0, INT64_MIN, &wall, err, errlen);
  if (hm < 0 || hw < 0)
    return -EINVAL;
  size_t text_len = json_string_length(json_object_get(msg, "text"));
  if (strlen(text) != text_len) {
    /* jansson rejects \u0000 on parse, but check anyway: the contract says NUL-free. */
    snprintf(err, errlen, "field 'text' contains a NUL byte");
    return -EINVAL;
  }
  struct pirec_recorder_req *req = req_new(rec, cmd, id, msg);
  if (!req)
    return -ENOMEM;
  req->text = text;
  req->text_len = text_len;
  req->mono_ns = hm ? mono : req->recv_mono_ns;
  req->wall_ns = hw ? wall : pirec_clock_wall_ns();
  *out = req;
  return 0;
}

static int run_note(struct pirec_recorder *rec, json_t *id, json_t *msg, char *err, size_t errlen)
{
  struct pirec_recorder_req *req;
  if (!rec->ops.note) {
    snprintf(err, errlen, "module '%s' does not take notes", rec->name);
    return -EINVAL;
  }
  int r = text_req(rec, PIREC_RECORDER_NOTE, id, msg, err, errlen, &req);
  if (r == 0)
    rec->ops.note(rec, req);
  return r;
}

static int run_mark(struct pirec_recorder *rec, json_t *id, json_t *msg, char *err, size_t errlen)
{
  struct pirec_recorder_req *req;
  const char *kind = NULL;
  if (!rec->ops.mark) {
    snprintf(err, errlen, "module '%s' does not take marks", rec->name);
    return -EINVAL;
  }
  if (get_str(msg, "kind", 1, &kind, err, errlen) < 0)
    return -EINVAL;
  int r = text_req(rec, PIREC_RECORDER_MARK, id, msg, err, errlen, &req);
  if (r == 0) {
    req->kind = kind;
    rec->ops.mark(rec, req);
  }
  return r;
}

static int run_preview(struct pirec_recorder *rec, json_t *id, json_t *msg, char *err, size_t errlen)
{
  int64_t max_width = 640;
  if (!rec->ops.preview) {
    snprintf(err, errlen, "module '%s' has no preview", rec->name);
    return -EINVAL;
  }
  if (get_int(msg, "max_width", 0, 16, &max_width, err, errlen) < 0)
    return -EINVAL;
  struct pirec_recorder_req *req = req_new(rec, PIREC_RECORDER_PREVIEW, id, msg);
  if (!req)
    return -ENOMEM;
  req->max_width = max_width > 4096 ? 4096 : (int)max_width;
  req->counters = json_object();
  rec->ops.preview(rec, req);
  return 0;
}

static int run_quit(struct pirec_recorder *rec, json_t *id, json_t *msg, char *err, size_t errlen)
{
  begin_quit(rec, id);
  return 0;
}

/* The commands a recorder takes (docs/PROTOCOL.md). Add one by adding a row and its handler. */
static const struct command {
  const char *name;
  int (*run)(struct pirec_recorder *rec, json_t *id, json_t *msg, char *err, size_t errlen);
} commands[] = {
    {"start", run_start},     {"stop", run_stop}, {"status", run_status}, {"note", run_note},
    {"preview", run_preview}, {"quit", run_quit}, {"mark", run_mark},
};

static const struct command *command_find(const char *name)
{
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(commands[i].name, name) == 0)
      return &commands[i];
  return NULL;
}

static void unknown_command(struct pirec_recorder *rec, json_t *id, const char *cmd)
{
  char err[400];
  pirec_jsonl_unknown_command(cmd, "start, stop, status, note, preview or quit", err, sizeof err);
  rec->counters.bad_lines++;
  send_error(rec, id, err);
}

static void dispatch(struct pirec_recorder *rec, json_t *msg)
{
  json_t *id = json_object_get(msg, "id");
  json_t *cmdv = json_object_get(msg, "cmd");
  if (id && !json_is_string(id) && !json_is_integer(id)) {
    rec->counters.bad_lines++;
    send_error(rec, NULL, "field 'id' must be a string or an integer");
    return;
  }
  if (!json_is_string(cmdv)) {
    rec->counters.bad_lines++;
    send_error(rec, id, cmdv ? "field 'cmd' must be a string" : "missing field 'cmd'");
    return;
  }
  const struct command *command = command_find(json_string_value(cmdv));
  if (!command) {
    unknown_command(rec, id, json_string_value(cmdv));
    return;
  }
  rec->counters.commands++;
  /* Once quitting, only another quit is answered (with its own error). */
  if (rec->quitting && command->run != run_quit) {
    rec->counters.bad_lines++;
    send_error(rec, id, "quitting");
    return;
  }
  char err[400];
  pirec_looplag_op(command->name);
  int r = command->run(rec, id, msg, err, sizeof err);
  pirec_looplag_op(NULL);
  if (r == -EINVAL)
    rec->counters.bad_lines++;
  if (r < 0)
    send_error(rec, id, r == -ENOMEM ? "out of memory" : err);
}

static void handle_line(struct pirec_recorder *rec, const char *line, size_t len)
{
  char err[300];
  json_t *msg = NULL;
  int r = pirec_jsonl_parse_object(line, len, &msg, err, sizeof err);
  if (r == 0)
    return; /* blank lines are keep-alives, not errors */
  if (r < 0) {
    rec->counters.bad_lines++;
    send_error(rec, NULL, err);
    return;
  }
  json_t *cmd = json_object_get(msg, "cmd");
  /* status and preview look at what is there now: answered at once, never behind a start or stop */
  int is_status = json_is_string(cmd) && (strcmp(json_string_value(cmd), "status") == 0 ||
                                          strcmp(json_string_value(cmd), "preview") == 0);
  if ((rec->barrier > 0 || (rec->deferred && json_array_size(rec->deferred))) && !is_status) {
    if (!rec->deferred)
      rec->deferred = json_array();
    if (rec->deferred && json_array_append_new(rec->deferred, msg) == 0) {
      if (json_array_size(rec->deferred) >= DEFERRED_PAUSE && rec->reading) {
        uv_read_stop(&rec->in.stream);
        rec->reading = 0;
        rec->read_paused = 1;
      }
      return;
    }
    send_error(rec, json_object_get(msg, "id"), "out of memory");
    json_decref(msg);
    return;
  }
  dispatch(rec, msg);
  json_decref(msg);
}

/* ---- input ----------------------------------------------------------------------------------- */

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
  struct pirec_recorder *rec = handle->data;
  size_t avail = 0;
  char *p = pirec_jsonl_reader_space(&rec->reader, &avail);
  /* Without memory libuv reports UV_ENOBUFS to on_read, which ends the input like an EOF. */
  *buf = uv_buf_init(p, p ? (unsigned)avail : 0);
}

static void too_long(struct pirec_recorder *rec)
{
  char err[96];
  pirec_jsonl_too_long(rec->opts.max_line, err, sizeof err);
  rec->counters.bad_lines++;
  send_error(rec, NULL, err);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
  struct pirec_recorder *rec = stream->data;
  if (nread < 0) {
    uv_read_stop(stream);
    rec->reading = 0;
    if (nread != UV_EOF)
      pirec_log(PIREC_LOG_WARN, "recorder '%s': cannot read commands: %s", rec->name,
                uv_strerror((int)nread));
    if (!rec->closing)
      begin_quit(rec, NULL);
    return;
  }
  pirec_jsonl_reader_fill(&rec->reader, (size_t)nread);
  const char *line;
  size_t len;
  while (!rec->closing) {
    int r = pirec_jsonl_reader_next(&rec->reader, &line, &len);
    if (r == 0)
      break;
    if (r < 0)
      too_long(rec);
    else
      handle_line(rec, line, len);
  }
}

static void on_signal(uv_signal_t *sig, int signum)
{
  struct pirec_recorder *rec = sig->data;
  pirec_log(PIREC_LOG_INFO, "recorder '%s': %s: finishing and exiting", rec->name, strsignal(signum));
  if (!rec->closing)
    begin_quit(rec, NULL);
}

static int open_stream(struct pirec_recorder *rec, union stream *s, int fd, int readable)
{
  int err;
  if (uv_guess_handle(fd) == UV_TTY) {
    err = uv_tty_init(rec->loop, &s->tty, fd, readable);
  } else {
    err = uv_pipe_init(rec->loop, &s->pipe, 0);
    if (err == 0) {
      rec->handles_open++;
      s->handle.data = rec;
      err = uv_pipe_open(&s->pipe, fd);
      return err;
    }
  }
  if (err == 0) {
    rec->handles_open++;
    s->handle.data = rec;
  }
  return err;
}

int pirec_recorder_start(struct pirec_recorder *rec)
{
  if (rec->started || rec->closing)
    return -EALREADY;
  rec->started = 1;
  rec->start_mono_ns = pirec_clock_mono_ns();
  int err = open_stream(rec, &rec->out, rec->opts.out_fd, 0);
  if (err < 0) {
    pirec_log(PIREC_LOG_ERROR, "recorder '%s': cannot use fd %d for replies: %s", rec->name, rec->opts.out_fd,
              uv_strerror(err));
    return err;
  }
  err = open_stream(rec, &rec->in, rec->opts.in_fd, 1);
  if (err < 0) {
    pirec_log(PIREC_LOG_ERROR, "recorder '%s': cannot use fd %d for commands: %s", rec->name, rec->opts.in_fd,
              uv_strerror(err));
    return err;
  }
  if (rec->opts.handle_signals) {
    /* A controller that died leaves a closed pipe; EPIPE is handled, the signal would kill us. */
    signal(SIGPIPE, SIG_IGN);
    /* A file past RLIMIT_FSIZE must be a write error (EFBIG) the module reports and survives, as a
     * full disk is, not a signal that kills the recorder mid-trial. */
    signal(SIGXFSZ, SIG_IGN);
    uv_signal_init(rec->loop, &rec->sigint);
    rec->handles_open++;
    uv_signal_init(rec->loop, &rec->sigterm);
    rec->handles_open++;
    rec->sigint.data = rec->sigterm.data = rec;
    uv_signal_start(&rec->sigint, on_signal, SIGINT);
    uv_signal_start(&rec->sigterm, on_signal, SIGTERM);
  }
  if (pirec_looplag_init(rec->loop, &rec->lag, 0, 0, NULL) == 0) {
    rec->handles_open++;
    rec->lag_open = 1;
    rec->lag.data = rec;
    pirec_looplag_set_ticking(&rec->lag, 0); /* idle until a trial starts */
    pirec_looplag_start(&rec->lag);
  }
  err = uv_read_start(&rec->in.stream, on_alloc, on_read);
  if (err < 0)
    return err;
  rec->reading = 1;

  json_t *cmds = json_array();
  json_array_append_new(cmds, json_string("start"));
  json_array_append_new(cmds, json_string("stop"));
  json_array_append_new(cmds, json_string("status"));
  if (rec->ops.note)
    json_array_append_new(cmds, json_string("note"));
  if (rec->ops.preview)
    json_array_append_new(cmds, json_string("preview"));
  if (rec->ops.mark)
    json_array_append_new(cmds, json_string("mark"));
  json_array_append_new(cmds, json_string("quit"));
  json_t *o = json_pack("{s:s,s:s,s:i,s:s,s:o}", "reply", "ready", "module", rec->name, "pid", (int)getpid(),
                        "version", PIREC_VERSION, "commands", cmds);
  return send_json(rec, o);
}

/* ---- close ----------------------------------------------------------------------------------- */

static void handle_done(struct pirec_recorder *rec)
{
  if (--rec->handles_open > 0)
    return;
  while (rec->pending) {
    struct pirec_recorder_req *req = rec->pending;
    rec->pending = req->next;
    req_free(req);
  }
  if (rec->close_cb)
    rec->close_cb(rec, rec->user);
  json_decref(rec->deferred);
  pirec_jsonl_reader_free(&rec->reader);
  free(rec->last_session_dir);
  pirec_crypt_key_free(rec->key);
  free(rec->name);
  free(rec);
}

const struct pirec_crypt_key *pirec_recorder_key(const struct pirec_recorder *rec)
{
  return rec->key;
}

/* The start's optional "key": the session key as base64 (docs/PRIVACY.md). The text in the parsed
 * message is wiped once the key is in locked memory. Returns 0 or -EINVAL with err filled. */
static int take_key(struct pirec_recorder *rec, json_t *msg, char *err, size_t errlen)
{
  const char *text = NULL;
  struct pirec_crypt_key *key = NULL;
  if (get_str(msg, "key", 0, &text, err, errlen) < 0)
    return -EINVAL;
  if (text && pirec_crypt_key_from_text(text, &key) < 0) {
    snprintf(err, errlen, "field 'key' is not a session key");
    return -EINVAL;
  }
  if (text)
    pirec_crypt_wipe((char *)text, strlen(text));
  pirec_crypt_key_free(rec->key);
  rec->key = key;
  return 0;
}

static void on_handle_closed(uv_handle_t *handle)
{
  handle_done(handle->data);
}

static void on_lag_closed(struct pirec_looplag *lag)
{
  handle_done(lag->data);
}

static void close_if(uv_handle_t *h)
{
  if (h->type != UV_UNKNOWN_HANDLE && !uv_is_closing(h))
    uv_close(h, on_handle_closed);
}

static void finish_close(struct pirec_recorder *rec)
{
  uv_timer_stop(&rec->flush_timer);
  close_if(&rec->out.handle);
  close_if((uv_handle_t *)&rec->flush_timer);
}

static void on_flush_deadline(uv_timer_t *t)
{
  /* The reader has had CLOSE_FLUSH_MS to take the last replies: close without them. */
  finish_close(t->data);
}

void pirec_recorder_close(struct pirec_recorder *rec, pirec_recorder_close_cb cb)
{
  if (!rec || rec->closing)
    return;
  rec->closing = 1;
  rec->close_cb = cb;
  if (rec->reading) {
    uv_read_stop(&rec->in.stream);
    rec->reading = 0;
  }
  close_if(&rec->in.handle);
  if (rec->opts.handle_signals && rec->started) {
    close_if((uv_handle_t *)&rec->sigint);
    close_if((uv_handle_t *)&rec->sigterm);
  }
  if (rec->lag_open)
    pirec_looplag_close(&rec->lag, on_lag_closed);
  /* The flush timer is initialised here so that every path ends in finish_close. */
  uv_timer_init(rec->loop, &rec->flush_timer);
  rec->handles_open++;
  rec->flush_timer.data = rec;
  if (rec->counters.out_queued == 0) {
    finish_close(rec);
    return;
  }
  /* on_write finishes the close when the queue empties; this timer bounds the wait. */
  uv_timer_start(&rec->flush_timer, on_flush_deadline, CLOSE_FLUSH_MS, 0);
}
