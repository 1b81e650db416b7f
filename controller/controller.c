/* The session controller: recorder children, sessions and trials, the control socket, signals. */
#include "pirec/controller.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "controller-int.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"
#include "pirec/error.h"
#include "pirec/log.h"
#include "pirec/sink.h"
#ifdef PIREC_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

static const char *op_kind_name(enum op_kind k)
{
  static const char *const names[] = {"start", "stop", "trial", "toggle", "reload", "shutdown"};
  return names[k];
}

static void op_done(struct pirec_controller *c, json_t *reply);
static void apply_pending_config(struct pirec_controller *c);

/* A note: stamped now, numbered, handed to every recorder that takes notes (or to events.csv if
 * none does). The client's reply does not wait for the disk. */
int pirec__take_note(struct pirec_controller *c, const char *text, size_t len, json_t **reply_extra,
                     char *err, size_t errlen)
{
  int64_t mono = pirec_clock_mono_ns(), wall = pirec_clock_wall_ns();
  if (c->state == C_IDLE || c->state == C_STOPPING || (!c->session && c->state != C_STARTING)) {
    snprintf(err, errlen, "not recording: start a session first (pirec start)");
    return -ENOTCONN;
  }
  size_t max = (size_t)pirec_config_get_int(c->cfg, "notes", "max_length");
  if (len > max) {
    snprintf(err, errlen, "note too long: %zu bytes (notes.max_length is %zu)", len, max);
    return -EMSGSIZE;
  }
  int sent = 0;
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    if (strcmp(m->kind, "notes") != 0 || m->state == M_ENDED)
      continue;
    json_t *cmd = json_pack("{s:s,s:s%,s:I,s:I}", "cmd", "note", "text", text, len, "mono_ns",
                            (json_int_t)mono, "wall_ns", (json_int_t)wall);
    if (!cmd) {
      snprintf(err, errlen, "note is not valid UTF-8");
      return -EINVAL;
    }
    int e = pirec__module_send(m, cmd, NULL, NULL);
    if (e < 0) {
      snprintf(err, errlen, "notes recorder '%s' is %s: %s", m->name,
               e == -ENOBUFS ? "too far behind" : "unavailable", pirec_strerror(e));
      return e;
    }
    sent++;
  }
  if (!sent) {
    if (!c->session || !pirec_session_dir(c->session)) {
      snprintf(err, errlen, "no recorder takes notes and the session is not open yet");
      return -ENOTCONN;
    }
    char *copy = strndup(text, len);
    pirec_session_event_at(c->session, mono, wall, "note", NULL, copy);
    free(copy);
    c->notes_in_events++;
  }
  c->note_seq++;
  *reply_extra = json_pack("{s:I,s:I,s:I}", "seq", (json_int_t)c->note_seq, "mono_ns", (json_int_t)mono,
                           "wall_ns", (json_int_t)wall);
  return 0;
}

struct op *pirec__op_queue(struct pirec_controller *c, enum op_kind kind, const char *label,
                           const char *source, const char *from)
{
  struct op *op = calloc(1, sizeof(*op));
  if (!op)
    return NULL;
  op->kind = kind;
  op->gpio_slot = -1;
  if (label)
    snprintf(op->label, sizeof op->label, "%s", label);
  snprintf(op->source, sizeof op->source, "%s", source);
  snprintf(op->from, sizeof op->from, "%s", from ? from : "");
  struct op **pp = &c->ops;
  while (*pp)
    pp = &(*pp)->next;
  *pp = op;
  return op;
}

void pirec__op_add_waiter(struct op *op, void (*reply)(void *who, json_t *obj), void *who, json_t *id)
{
  struct waiter *w = calloc(1, sizeof(*w));
  if (!w)
    return;
  w->reply = reply;
  w->who = who;
  w->id = id ? json_incref(id) : NULL;
  w->next = op->waiters;
  op->waiters = w;
}

void pirec__op_enqueue(struct pirec_controller *c, enum op_kind kind, const char *label, const char *source,
                       const char *from)
{
  if (pirec__op_queue(c, kind, label, source, from))
    pirec__op_next(c);
}

/* One events.csv `control` row for the running op, once it is accepted and the session it acts
 * on exists: "CMD source SRC[ from NAME][ merged N][ EXTRA][ label L]" (docs/FORMATS.md); the
 * label goes last because it is the only part that may contain spaces. */
static void control_row(struct pirec_controller *c, const char *cmd, const char *extra)
{
  struct op *op = c->ops;
  if (!op || !c->session || !pirec_session_dir(c->session))
    return;
  char detail[400], merged[40] = "";
  if (op->merged)
    snprintf(merged, sizeof merged, " merged %llu", (unsigned long long)op->merged);
  snprintf(detail, sizeof detail, "%s source %s%s%s%s%s%s%s%s", cmd, op->source, *op->from ? " from " : "",
           op->from, merged, extra ? " " : "", extra ? extra : "", *op->label ? " label " : "", op->label);
  pirec_session_event(c->session, "control", NULL, detail);
}

static json_t *error_reply(const char *message)
{
  return json_pack("{s:s,s:s}", "reply", "error", "message", message);
}

static void waiters_reply(struct op *op, json_t *reply)
{
  for (struct waiter *w = op->waiters; w;) {
    struct waiter *next = w->next;
    if (w->who) {
      json_t *o = reply ? json_deep_copy(reply) : error_reply("cancelled");
      json_object_set(o, "id", w->id ? w->id : json_null());
      w->reply(w->who, o);
    }
    json_decref(w->id);
    free(w);
    w = next;
  }
  op->waiters = NULL;
}

static void op_done(struct pirec_controller *c, json_t *reply)
{
  struct op *op = c->ops;
  c->op_running = 0;
  uv_timer_stop(&c->op_timer);
  if (op) {
    c->ops = op->next;
    waiters_reply(op, reply);
    free(op);
  }
  json_decref(reply);
  c->hooks.state_changed(c);
  pirec__op_next(c);
  if (!c->op_running)
    c->hooks.ops_idle(c);
}

static json_t *session_reply(struct pirec_controller *c, const char *word)
{
  json_t *o = json_object();
  json_object_set_new(o, "reply", json_string(word));
  if (c->session && pirec_session_dir(c->session))
    json_object_set_new(o, "session_dir", json_string(pirec_session_dir(c->session)));
  json_object_set_new(o, "trial", json_integer(c->trial));
  return o;
}

/* One module reply awaited by the running op. */
static void on_op_reply(struct module *m, json_t *reply, void *user)
{
  struct pirec_controller *c = m->c;
  const char *r = reply ? json_string_value(json_object_get(reply, "reply")) : NULL;
  if (r && strcmp(r, "error") == 0 && c->session) {
    char msg[600];
    snprintf(msg, sizeof msg, "%s", json_string_value(json_object_get(reply, "message")));
    pirec_session_error(c->session, m->name, msg);
  }
  /* No reply: it crashed while we waited; the restart path rejoins the trial. */
  if (r && strcmp(r, "status") == 0)
    pirec__module_on_status(m, reply, NULL);
  if (c->op_wait > 0 && --c->op_wait == 0) {
    void (*cont)(struct pirec_controller *) = c->op_cont;
    c->op_cont = NULL;
    uv_timer_stop(&c->op_timer);
    if (cont)
      cont(c);
  }
}

static void on_op_timeout(uv_timer_t *t)
{
  struct pirec_controller *c = container_of(t, struct pirec_controller, op_timer);
  for (int i = 0; i < c->nmodules; i++)
    c->modules[i].join_then_stop = 0; /* no longer awaited */
  if (c->session) {
    char msg[200];
    snprintf(msg, sizeof msg, "%d recorder(s) did not answer within %u ms", c->op_wait,
             c->opts.stop_timeout_ms);
    pirec_session_error(c->session, NULL, msg);
  }
  c->op_wait = 0;
  void (*cont)(struct pirec_controller *) = c->op_cont;
  c->op_cont = NULL;
  if (cont)
    cont(c);
}

/* Arms the continuation that runs when every awaited reply arrived (or the timeout passed). */
static void op_await(struct pirec_controller *c, void (*cont)(struct pirec_controller *))
{
  if (c->op_wait == 0) {
    cont(c);
    return;
  }
  c->op_cont = cont;
  uv_timer_start(&c->op_timer, on_op_timeout, c->opts.stop_timeout_ms, 0);
}

static void on_restart_started(struct module *m, json_t *reply, void *user)
{
  struct pirec_controller *c = m->c;
  const char *r = reply ? json_string_value(json_object_get(reply, "reply")) : NULL;
  if (!c->session)
    return;
  if (r && strcmp(r, "started") == 0) {
    if (m->crash_mono_ns)
      pirec_session_module_restart(c->session, m->name, m->crash_mono_ns);
    m->crash_mono_ns = 0;
  } else if (reply) {
    char msg[512];
    snprintf(msg, sizeof msg, "restarted recorder could not rejoin trial %d: %s", m->started_trial,
             json_string_value(json_object_get(reply, "message")));
    pirec_session_error(c->session, m->name, msg);
  }
}

/* The current trial's start for m, ahead of anything queued for it (notes held while the session
 * was starting, or written while it was restarting). A start repeated inside one trial (after a
 * crash) is part n. for_op: the running op waits for the reply; else it is a rejoin. */
static void send_start_first(struct module *m, int for_op)
{
  struct pirec_controller *c = m->c;
  int part = 0;
  if (m->started_trial == c->trial) {
    part = ++m->part;
  } else {
    m->started_trial = c->trial;
    m->part = 0;
  }
  m->in_trial = 1;
  const char *label = "";
  json_t *trials = json_object_get(pirec_session_manifest(c->session), "trials");
  json_t *last = json_array_get(trials, json_array_size(trials) - 1);
  if (json_is_string(json_object_get(last, "label")))
    label = json_string_value(json_object_get(last, "label"));
  json_t *cmd = json_pack("{s:s,s:s,s:i,s:s,s:i}", "cmd", "start", "session_dir",
                          pirec_session_dir(c->session), "trial", c->trial, "label", label, "part", part);
  if (!for_op) {
    pirec__module_send_first(m, cmd, on_restart_started, NULL);
  } else {
    c->op_wait++;
    if (pirec__module_send_first(m, cmd, on_op_reply, NULL) < 0)
      c->op_wait--;
  }
}

/* Sends start for the current trial to every recorder that takes commands now; the ones still
 * starting up join when they say ready. */
static void start_trial_on_modules(struct pirec_controller *c)
{
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    m->in_trial = 0;
    m->hold = 0;
    if (m->state == M_ENDED)
      continue;
    if (m->state == M_READY) {
      send_start_first(m, 1);
    } else {
      /* joins in handle_ready */
      m->in_trial = 1;
      m->started_trial = 0;
    }
  }
}

static void stop_trial_on_modules(struct pirec_controller *c)
{
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    int was = m->in_trial;
    m->in_trial = 0;
    if (was && m->state != M_READY && m->state != M_ENDED && pirec__module_has_note(m)) {
      /* "noted" was already said for these: wait (within the op's timeout) for the recorder to
       * come up and write them into this trial rather than lose them or move them to the next */
      m->join_then_stop = 1;
      c->op_wait++;
      continue;
    }
    if (!was || m->state != M_READY)
      continue;
    c->op_wait++;
    if (pirec__module_send(m, json_pack("{s:s}", "cmd", "stop"), on_op_reply, NULL) < 0)
      c->op_wait--;
  }
}

static void status_on_modules(struct pirec_controller *c)
{
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    if (m->state != M_READY)
      continue;
    c->op_wait++;
    if (pirec__module_send(m, json_pack("{s:s}", "cmd", "status"), on_op_reply, NULL) < 0)
      c->op_wait--;
  }
}

static void after_trial_started(struct pirec_controller *c)
{
  c->state = C_RECORDING;
  struct op *op = c->ops;
  json_t *r = session_reply(c, op && op->kind == OP_TRIAL ? "trial" : "started");
  op_done(c, r);
}

static void begin_trial(struct pirec_controller *c, const char *label)
{
  c->trial = pirec_session_last_trial(c->session) + 1;
  pirec_session_trial_begin(c->session, c->trial, label);
  c->trial_start_mono = pirec_clock_mono_ns();
  pirec__gpio_trial_started(c);
  start_trial_on_modules(c);
  op_await(c, after_trial_started);
}

static void on_session_started(struct pirec_session *s, int status, void *user)
{
  struct pirec_controller *c = user;
  if (status < 0) {
    for (int i = 0; i < c->nmodules; i++) {
      c->modules[i].hold = 0;
      pirec__module_flush(&c->modules[i]);
    }
    char msg[600];
    snprintf(msg, sizeof msg, "cannot start a session in '%s': %s",
             pirec_config_get_string(c->cfg, "session", "output_dir"), pirec_strerror(status));
    pirec_log(PIREC_LOG_ERROR, "%s", msg);
    pirec_session_free(s);
    c->session = NULL;
    c->state = C_IDLE;
    c->nearly_edges = 0; /* they belonged to this session */
    c->early_edges_lost = 0;
    c->errors++;
    op_done(c, error_reply(msg));
    return;
  }
  pirec_log(PIREC_LOG_INFO, "session '%s' started", pirec_session_dir(s));
  for (int i = 0; i < c->nearly_edges; i++)
    pirec_session_event_at(s, c->early_edges[i].mono, c->early_edges[i].wall, "gpio_edge",
                           c->early_edges[i].module, c->early_edges[i].detail);
  if (c->early_edges_lost) {
    char lost[96];
    snprintf(lost, sizeof lost, "%llu edges while the session started were not kept",
             (unsigned long long)c->early_edges_lost);
    pirec_session_event(s, "gpio_edges_lost", "controller", lost);
  }
  c->nearly_edges = 0;
  c->early_edges_lost = 0;
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    pirec_session_module_set(s, m->name, "kind", json_string(m->kind));
    pirec_session_module_set(s, m->name, "program", json_string(m->program));
    pirec_session_module_set(s, m->name, "pid", json_integer(m->pid));
    m->crash_mono_ns = 0;
  }
  control_row(c, "start", NULL);
  /* Outputs follow the session, not the request: the LED goes on (and periodic sync pulses
   * start) only once there is a session directory, so a session that cannot start leaves the LED
   * off and every pulse has an events.csv to go into. */
  pirec__gpio_set_recording(c, 1);
  struct op *op = c->ops;
  begin_trial(c, op ? op->label : "");
}

static json_t *config_snapshot(struct pirec_controller *c)
{
  size_t len = 0;
  const char *src = pirec_config_source(c->cfg, &len);
  char *canon = pirec_config_format(c->cfg);
  json_t *o = json_pack("{s:s,s:s%,s:s?}", "path", c->demo ? "(built-in demo)" : pirec_config_path(c->cfg),
                        "source", src ? src : "", src ? len : 0, "effective", canon);
  free(canon);
  return o;
}

static void op_start_session(struct pirec_controller *c, const char *label)
{
  struct pirec_session_options so = {0};
  so.output_dir = c->output_dir_override ? c->output_dir_override
                                         : pirec_config_get_string(c->cfg, "session", "output_dir");
  char clean[PIREC_SESSION_LABEL_MAX + 1] = "";
  const char *l =
      label && *label ? label : (c->label ? c->label : pirec_config_get_string(c->cfg, "session", "label"));
  pirec_session_label_sanitise(l, clean);
  so.label = clean;
  so.clocks_interval_ns = pirec_config_get_duration(c->cfg, "session", "clocks_interval");
  int64_t fs = pirec_config_get_duration(c->cfg, "storage", "fsync_interval");
  so.fsync_interval_ms = fs > 0 ? pirec_sink_fsync_interval_ms(fs) : UINT_MAX; /* UINT_MAX: at close */
  json_t *snap = config_snapshot(c);
  so.config = snap;
  json_t *versions = json_pack("{s:s}", "libgpiod", pirec_gpio_backend());
  so.versions_extra = versions;
  struct pirec_session *s = NULL;
  int err = pirec_session_new(c->loop, &so, &s);
  json_decref(snap);
  json_decref(versions);
  if (err == 0)
    err = pirec_session_start(s, on_session_started, c);
  if (err < 0) {
    pirec_session_free(s);
    char msg[300];
    snprintf(msg, sizeof msg, "cannot start a session: %s", pirec_strerror(err));
    op_done(c, error_reply(msg));
    return;
  }
  c->session = s;
  c->state = C_STARTING;
  c->trial = 0;
  /* Notes that arrive before the session directory exists wait in the outboxes. */
  for (int i = 0; i < c->nmodules; i++)
    c->modules[i].hold = 1;
  c->hooks.state_changed(c);
}

static void on_session_stopped(struct pirec_session *s, int status, void *user)
{
  struct pirec_controller *c = user;
  char *dir = strdup(pirec_session_dir(s));
  size_t nerr = pirec_session_error_count(s);
  if (status < 0 || nerr)
    c->errors++;
  pirec_log(PIREC_LOG_INFO, "session '%s' stopped%s%s", dir, status < 0 ? ": " : "",
            status < 0 ? pirec_strerror(status) : "");
  pirec_session_free(s);
  c->session = NULL;
  c->state = C_IDLE;
  c->trial = 0;
  pirec__gpio_set_recording(c, 0);
  json_t *r = json_pack("{s:s,s:s,s:i}", "reply", "stopped", "session_dir", dir, "errors", (int)nerr);
  free(dir);
  /* The final counters (from the status round after the recorders stopped), for the summary. */
  json_t *mods = json_object();
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    json_t *mo = json_pack("{s:s,s:i}", "kind", m->kind, "crashes", (int)m->crashes);
    if (m->last_status)
      json_object_set(mo, "counters", json_object_get(m->last_status, "counters"));
    json_object_set_new(mods, m->name, mo);
  }
  json_object_set_new(r, "modules", mods);
  pirec__remux_session(c, json_string_value(json_object_get(r, "session_dir")));
  apply_pending_config(c);
  op_done(c, r);
}

static void after_final_status(struct pirec_controller *c)
{
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    pirec_session_module_set(c->session, m->name, "state", json_string(pirec__mstate_name(m->state)));
    pirec_session_module_set(c->session, m->name, "crashes_total", json_integer(m->crashes));
  }
  if (c->notes_in_events)
    pirec_session_module_set(c->session, "controller", "notes_in_events",
                             json_integer((json_int_t)c->notes_in_events));
  pirec_session_stop(c->session, on_session_stopped, c);
}

static void after_modules_stopped(struct pirec_controller *c)
{
  status_on_modules(c);
  op_await(c, after_final_status);
}

static void op_stop_session(struct pirec_controller *c)
{
  control_row(c, c->ops && c->ops->kind == OP_SHUTDOWN ? "shutdown" : "stop", NULL);
  c->state = C_STOPPING;
  c->hooks.state_changed(c);
  stop_trial_on_modules(c);
  op_await(c, after_modules_stopped);
}

static void after_trial_stopped(struct pirec_controller *c)
{
  pirec_session_trial_end(c->session);
  struct op *op = c->ops;
  begin_trial(c, op ? op->label : "");
}

static void op_next_trial(struct pirec_controller *c)
{
  control_row(c, "trial", NULL);
  stop_trial_on_modules(c);
  op_await(c, after_trial_stopped);
}

static int control_differs(const struct pirec_config *a, const struct pirec_config *b)
{
  return strcmp(pirec_config_get_string(a, "control", "mode"),
                pirec_config_get_string(b, "control", "mode")) ||
         strcmp(pirec_config_get_string(a, "control", "socket"),
                pirec_config_get_string(b, "control", "socket")) ||
         pirec_config_get_int(a, "control", "socket_mode") !=
             pirec_config_get_int(b, "control", "socket_mode");
}

static void on_reloaded(struct pirec_config_req *req)
{
  struct pirec_controller *c = req->data;
  json_t *r;
  if (req->result < 0) {
    char msg[1200] = "reload failed, keeping the old config: ";
    size_t used = strlen(msg);
    for (size_t i = 0; i < req->errors.count && used < sizeof msg - 2; i++) {
      int n = snprintf(msg + used, sizeof msg - used, "%s%s", i ? "; " : "", req->errors.items[i].message);
      if (n < 0)
        break;
      used += (size_t)n;
    }
    if (!req->errors.count)
      snprintf(msg + used, sizeof msg - used, "%s", pirec_strerror(req->result));
    pirec_log(PIREC_LOG_ERROR, "%s", msg);
    if (c->session)
      pirec_session_event(c->session, "config_reload", NULL, msg);
    r = error_reply(msg);
  } else {
    struct pirec_config *fresh = req->config;
    req->config = NULL;
    int changed = req->changed;
    pirec_config_free(c->pending_cfg);
    c->pending_cfg = fresh;
    const char *when = c->session ? "next_session" : "now";
    control_row(c, "reload", changed ? "changed" : "unchanged");
    if (c->session)
      pirec_session_event(c->session, "config_reload", NULL,
                          changed ? "accepted; applies from the next session" : "unchanged");
    pirec_log(PIREC_LOG_INFO, "config '%s' reloaded (%s)%s", pirec_config_path(fresh),
              changed ? "changed" : "unchanged", c->session ? "; applies from the next session" : "");
    r = json_pack("{s:s,s:b,s:s}", "reply", "reloaded", "changed", changed, "applies", when);
    /* The socket is bound once: a new [control] would have to cut off every client, this one
     * included. Say so instead of replying as if it applied. */
    if (control_differs(c->cfg, fresh)) {
      json_object_set_new(r, "restart_needed", json_pack("[s]", "control"));
      pirec_log(PIREC_LOG_WARN, "config: [control] changed; it applies when pirec is restarted");
    }
    if (!c->session)
      apply_pending_config(c);
  }
  pirec_config_req_cleanup(req);
  op_done(c, r);
}

static void op_reload(struct pirec_controller *c)
{
  if (c->demo || !c->config_path) {
    op_done(c, error_reply("running the built-in demo configuration: there is no file to reload"));
    return;
  }
  memset(&c->reload_req, 0, sizeof c->reload_req);
  c->reload_req.data = c;
  int err = pirec_config_reload_async(c->loop, &c->reload_req, c->cfg, on_reloaded);
  if (err < 0) {
    char msg[200];
    snprintf(msg, sizeof msg, "cannot reload: %s", pirec_strerror(err));
    op_done(c, error_reply(msg));
  }
}

/* New settings take over between sessions: the checked text replaces the snapshot and the
 * recorders are restarted to read it. */
static void apply_pending_config(struct pirec_controller *c)
{
  if (!c->pending_cfg || c->session || c->shutting_down)
    return;
  int err = pirec__snapshot_write(c, c->pending_cfg);
  if (err < 0) {
    /* The recorders would still read the old text: keep the old settings everywhere. */
    pirec_log(PIREC_LOG_ERROR, "cannot write the config snapshot '%s': %s; keeping the old config",
              c->snapshot_path, pirec_strerror(err));
    pirec_config_free(c->pending_cfg);
    c->pending_cfg = NULL;
    c->errors++;
    return;
  }
  pirec_config_free(c->cfg);
  c->cfg = c->pending_cfg;
  c->pending_cfg = NULL;
  pirec__gpio_reopen_all(c);
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    if (m->job) {
      m->stopping = 1;
      /* The old child is SIGKILLed only if it is still running; idle recorders have no files open. */
      pirec_job_stop(m->job);
    }
  }
  /* Wait for the old children to end before spawning the new set (see maybe_respawn). */
  c->started = 2;
  c->hooks.settle(c);
}

/* Trial and toggle turn into a start or a stop by the state they find. */
static void op_resolve(struct pirec_controller *c, struct op *op)
{
  if (c->state == C_IDLE && (op->kind == OP_TRIAL || op->kind == OP_TOGGLE))
    op->kind = OP_START;
  else if (c->state == C_RECORDING && op->kind == OP_TOGGLE)
    op->kind = OP_STOP;
}

/* The reply to an op the state it finds does not allow; NULL (its waiters hear "cancelled") when
 * there is simply nothing to do: a toggle while starting or stopping, a shutdown with no session. */
static json_t *op_refused(struct pirec_controller *c, enum op_kind kind)
{
  switch (kind) {
  case OP_START: return error_reply(c->state == C_RECORDING ? "already recording" : "busy");
  case OP_STOP: return error_reply("not recording");
  case OP_TRIAL: return error_reply("busy");
  default: return NULL;
  }
}

void pirec__op_next(struct pirec_controller *c)
{
  if (c->op_running || !c->ops)
    return;
  struct op *op = c->ops;
  c->op_running = 1;
  c->op_wait = 0;
  pirec__gpio_unpend(c, op);
  if (op->merged)
    pirec_log(PIREC_LOG_INFO, "gpio: %llu edge(s) merged into the %s that runs now",
              (unsigned long long)op->merged, op_kind_name(op->kind));
  if (op->kind == OP_RELOAD) {
    op_reload(c);
    return;
  }
  op_resolve(c, op);
  enum cstate needs = op->kind == OP_START ? C_IDLE : C_RECORDING;
  if (c->state != needs) {
    op_done(c, op_refused(c, op->kind));
    return;
  }
  if (op->kind == OP_START)
    op_start_session(c, op->label);
  else if (op->kind == OP_TRIAL)
    op_next_trial(c);
  else /* stop, or a shutdown while recording */
    op_stop_session(c);
}

void pirec__ops_module_ready(struct module *m)
{
  struct pirec_controller *c = m->c;
  if (m->join_then_stop) {
    /* The trial its queued notes belong to is ending: start, the notes, stop, in that order. */
    m->join_then_stop = 0;
    if (c->session && c->trial) {
      send_start_first(m, 0);
      m->in_trial = 0;
      if (pirec__module_send(m, json_pack("{s:s}", "cmd", "stop"), on_op_reply, NULL) < 0)
        on_op_reply(m, NULL, NULL);
    } else {
      on_op_reply(m, NULL, NULL);
    }
  }
  /* A trial is running: join it (again, after a crash) before anything queued is sent. */
  if (c->session && c->trial && (c->state == C_RECORDING || c->state == C_STARTING) && m->in_trial &&
      !m->hold)
    send_start_first(m, 0);
}

void pirec__ops_module_ended(struct module *m)
{
  if (m->join_then_stop) {
    m->join_then_stop = 0;
    on_op_reply(m, NULL, NULL); /* the stop it will never answer */
  }
}

/* Queues the op of a trigger's edge and marks it as that line's pending op until it runs. */
void pirec__ops_gpio_submit(struct pirec_controller *c, int slot, enum op_kind kind, const char *from)
{
  struct op *op = pirec__op_queue(c, kind, NULL, "gpio", from);
  if (!op)
    return;
  if (slot >= 0) {
    op->gpio_slot = slot;
    c->gpio_pending[slot] = op;
  }
  pirec__op_next(c);
}

void pirec__ops_cancel_waiting(struct pirec_controller *c, const char *message)
{
  if (!c->ops)
    return;
  struct op *running = c->ops;
  for (struct op *op = running->next; op;) {
    struct op *next = op->next;
    pirec__gpio_unpend(c, op);
    json_t *r = error_reply(message);
    waiters_reply(op, r);
    json_decref(r);
    free(op);
    op = next;
  }
  running->next = NULL;
}

void pirec__ops_free(struct pirec_controller *c)
{
  while (c->ops) {
    struct op *op = c->ops;
    c->ops = op->next;
    waiters_reply(op, NULL);
    free(op);
  }
}

#define CLIENT_MAX_LINE (2u * 1024 * 1024)
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

struct client {
  uv_pipe_t pipe;
  struct pirec_controller *c;
  char *in; /* bytes read and not yet processed: in[in_off .. in_len) */
  size_t in_off, in_len, in_cap;
  size_t out_queued;
  int closing;
  int reading;    /* uv_read_start is in effect */
  int wait_drain; /* stopped until out_queued drains below CLIENT_OUT_LOW */
  int backlog;    /* complete lines left over after a turn: run again from the idle handle */
  int eof;
  uint64_t progress_ms; /* uv_now when a reply write last completed or the queue was empty */
  struct client *next;
};

static void client_process(struct client *cl);
static void on_idle(uv_idle_t *idle);
static void on_client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b);
static void on_client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);

struct cwrite {
  uv_write_t req;
  struct client *client;
  size_t len;
  char data[];
};

static void client_free_cb(uv_handle_t *h)
{
  struct client *cl = container_of((uv_pipe_t *)h, struct client, pipe);
  struct pirec_controller *c = cl->c;
  free(cl->in);
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
  uv_close((uv_handle_t *)&cl->pipe, client_free_cb);
}

static void on_client_write(uv_write_t *req, int status)
{
  struct cwrite *w = container_of(req, struct cwrite, req);
  struct client *cl = w->client;
  cl->out_queued -= w->len;
  free(w);
  if (status < 0 || cl->closing)
    return;
  cl->progress_ms = uv_now(cl->c->loop);
  if (cl->wait_drain && cl->out_queued <= CLIENT_OUT_LOW) {
    cl->wait_drain = 0;
    client_process(cl);
  } else if (cl->eof && !cl->backlog && cl->out_queued == 0) {
    client_close(cl);
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
  char *text = json_dumps(obj, JSON_COMPACT);
  json_decref(obj);
  if (!text)
    return;
  size_t len = strlen(text);
  if (cl->out_queued + len + 1 > CLIENT_MAX_OUT) {
    free(text);
    pirec_log(PIREC_LOG_WARN, "control client not reading its replies (%zu bytes queued): disconnected",
              cl->out_queued);
    cl->c->clients_dropped++;
    client_close(cl);
    return;
  }
  struct cwrite *w = malloc(sizeof(*w) + len + 1);
  if (!w) {
    free(text);
    return;
  }
  memcpy(w->data, text, len);
  w->data[len] = '\n';
  free(text);
  w->client = cl;
  w->len = len + 1;
  uv_buf_t b = uv_buf_init(w->data, (unsigned)w->len);
  /* Try the socket first: most replies go out at once without a queued request. */
  int n = uv_try_write((uv_stream_t *)&cl->pipe, &b, 1);
  if (n == (int)w->len) {
    free(w);
    return;
  }
  if (n > 0) {
    memmove(w->data, w->data + n, w->len - (size_t)n);
    w->len -= (size_t)n;
    b = uv_buf_init(w->data, (unsigned)w->len);
  }
  if (uv_write(&w->req, (uv_stream_t *)&cl->pipe, &b, 1, on_client_write) < 0) {
    free(w);
    client_close(cl);
    return;
  }
  if (cl->out_queued == 0)
    cl->progress_ms = uv_now(cl->c->loop);
  cl->out_queued += w->len;
}

/* An op's reply (struct waiter). */
static void client_reply(void *who, json_t *obj)
{
  client_send(who, obj);
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

static void client_command(struct client *cl, json_t *msg)
{
  struct pirec_controller *c = cl->c;
  json_t *id = json_object_get(msg, "id");
  json_t *cmdv = json_object_get(msg, "cmd");
  if (!json_is_string(cmdv)) {
    client_error(cl, id, cmdv ? "field 'cmd' must be a string" : "missing field 'cmd'");
    return;
  }
  const char *cmd = json_string_value(cmdv);
  if (strcmp(cmd, "status") == 0) {
    json_t *o = c->hooks.status_json(c);
    json_object_set(o, "id", id ? id : json_null());
    json_object_set_new(o, "reply", json_string("status"));
    client_send(cl, o);
    return;
  }
  if (strcmp(cmd, "note") == 0) {
    json_t *text = json_object_get(msg, "text");
    if (!json_is_string(text)) {
      client_error(cl, id, text ? "field 'text' must be a string" : "missing field 'text'");
      return;
    }
    char err[300];
    json_t *extra = NULL;
    if (pirec__take_note(c, json_string_value(text), json_string_length(text), &extra, err, sizeof err) < 0) {
      client_error(cl, id, err);
      return;
    }
    json_t *o = reply_new(id, "noted");
    json_object_update(o, extra);
    json_decref(extra);
    client_send(cl, o);
    return;
  }
  enum op_kind kind;
  if (strcmp(cmd, "start") == 0)
    kind = OP_START;
  else if (strcmp(cmd, "stop") == 0)
    kind = OP_STOP;
  else if (strcmp(cmd, "trial") == 0)
    kind = OP_TRIAL;
  else if (strcmp(cmd, "reload") == 0)
    kind = OP_RELOAD;
  else {
    char err[300];
    json_t *q = json_string(cmd);
    char *quoted = q ? json_dumps(q, JSON_ENCODE_ANY) : NULL;
    snprintf(err, sizeof err, "unknown command %.200s (expected status, start, stop, trial, note or reload)",
             quoted ? quoted : "?");
    free(quoted);
    json_decref(q);
    client_error(cl, id, err);
    return;
  }
  char clean[PIREC_SESSION_LABEL_MAX + 1] = "";
  json_t *label = json_object_get(msg, "label");
  if (label && !json_is_string(label)) {
    client_error(cl, id, "field 'label' must be a string");
    return;
  }
  if (label) {
    int r = pirec_session_label_sanitise(json_string_value(label), clean);
    if (r < 0) {
      char err[200];
      snprintf(err, sizeof err, "invalid label: %s",
               r == -ENAMETOOLONG ? "longer than 64 bytes" : "'..' and '/' are not allowed");
      client_error(cl, id, err);
      return;
    }
  }
  if (c->shutting_down) {
    client_error(cl, id, "shutting down");
    return;
  }
  const char *source = json_string_value(json_object_get(msg, "source"));
  struct op *op =
      pirec__op_queue(c, kind, clean, source && strcmp(source, "cli") == 0 ? "cli" : "socket", NULL);
  if (!op) {
    client_error(cl, id, "out of memory");
    return;
  }
  pirec__op_add_waiter(op, client_reply, cl, id);
  pirec__op_next(c);
}

static void client_line(struct client *cl, const char *line, size_t len)
{
  while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
    len--;
  if (!len)
    return;
  json_error_t e;
  json_t *msg = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
  if (!msg || !json_is_object(msg)) {
    char err[300];
    if (msg)
      snprintf(err, sizeof err, "malformed command: expected a JSON object");
    else
      snprintf(err, sizeof err, "malformed JSON at column %d: %s", e.column, e.text);
    json_decref(msg);
    client_error(cl, NULL, err);
    return;
  }
  client_command(cl, msg);
  json_decref(msg);
}

/* Runs up to CLIENT_LINES_PER_TURN complete lines buffered for cl. Reading stops while lines are
 * left over (they run again from the idle handle, after other clients and timers had their turn)
 * or while the client's unread replies exceed CLIENT_OUT_HIGH (until they drain, on_client_write). */
static void client_process(struct client *cl)
{
  struct pirec_controller *c = cl->c;
  int budget = CLIENT_LINES_PER_TURN, hold = 0;
  while (!cl->closing) {
    if (cl->out_queued > CLIENT_OUT_HIGH) {
      cl->wait_drain = 1;
      hold = 1;
      break;
    }
    char *start = cl->in + cl->in_off;
    size_t avail = cl->in_len - cl->in_off;
    char *nl = avail ? memchr(start, '\n', avail) : NULL;
    if (!nl)
      break;
    if (budget-- == 0) {
      cl->backlog = 1;
      uv_idle_start(&c->idle, on_idle);
      hold = 1;
      break;
    }
    cl->in_off += (size_t)(nl - start) + 1;
    client_line(cl, start, (size_t)(nl - start));
  }
  if (cl->closing)
    return;
  /* Keep only what is not processed yet. */
  if (cl->in_off && !hold) {
    memmove(cl->in, cl->in + cl->in_off, cl->in_len - cl->in_off);
    cl->in_len -= cl->in_off;
    cl->in_off = 0;
  }
  if (!hold && cl->in_len > CLIENT_MAX_LINE) {
    char err[96];
    snprintf(err, sizeof err, "line too long (over %u bytes): disconnecting", CLIENT_MAX_LINE);
    client_error(cl, NULL, err);
    /* Read no more; close once the error reply is out. */
    cl->in_len = 0;
    cl->eof = 1;
  }
  if (hold || cl->eof) {
    if (cl->reading) {
      uv_read_stop((uv_stream_t *)&cl->pipe);
      cl->reading = 0;
    }
    if (!hold && cl->eof && cl->out_queued == 0)
      client_close(cl);
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
  /* Read straight into the client's buffer: at most 64 KiB past what it holds. */
  size_t want = cl->in_len + 65536;
  if (want > cl->in_cap) {
    size_t cap = cl->in_cap ? cl->in_cap : 65536;
    while (cap < want)
      cap *= 2;
    char *q = realloc(cl->in, cap);
    if (!q) {
      *b = uv_buf_init(NULL, 0);
      return;
    }
    cl->in = q;
    cl->in_cap = cap;
  }
  *b = uv_buf_init(cl->in + cl->in_len, (unsigned)(cl->in_cap - cl->in_len));
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
  cl->in_len += (size_t)n;
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
  if (uv_read_start((uv_stream_t *)&cl->pipe, on_client_alloc, on_client_read) == 0)
    cl->reading = 1;
}

int pirec__control_listen(struct pirec_controller *c)
{
  if (strcmp(pirec_config_get_string(c->cfg, "control", "mode"), "off") == 0)
    return 0;
  int err = pirec__mkdir_parents(c->socket_path, 0700);
  if (err < 0) {
    fprintf(stderr, "pirec: cannot create the directory of '%s': %s\n", c->socket_path, strerror(-err));
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
      fprintf(stderr, "pirec: another pirec is running on '%s'\n", c->socket_path);
      return -EADDRINUSE;
    }
    unlink(c->socket_path);
  }
  uv_pipe_init(c->loop, &c->server, 0);
  c->handles_open++;
  c->server_open = 1;
  c->server.data = c;
  /* Created with the final mode: no window in which others could connect. */
  mode_t mode = (mode_t)pirec_config_get_int(c->cfg, "control", "socket_mode");
  mode_t old = umask(0777 & ~mode);
  err = uv_pipe_bind(&c->server, c->socket_path);
  umask(old);
  if (err == 0)
    chmod(c->socket_path, mode);
  if (err == 0)
    err = uv_listen((uv_stream_t *)&c->server, 64, on_connection);
  if (err < 0) {
    fprintf(stderr, "pirec: cannot listen on '%s': %s\n", c->socket_path, uv_strerror(err));
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

#define STATUS_POLL_MS 1000
#define DEMO_NOTE_MS   4000

void pirec__sdnotify(const char *state)
{
#ifdef PIREC_HAVE_SYSTEMD
  sd_notify(0, state);
#else
  (void)state;
#endif
}

/* sd_notify is a blocking send to systemd: send STATUS= only when it changes. */
void pirec__notify_status(struct pirec_controller *c)
{
  char buf[sizeof c->last_status_text];
  if (c->state == C_RECORDING && c->session)
    snprintf(buf, sizeof buf, "STATUS=recording %s trial %d", pirec_session_dir(c->session), c->trial);
  else
    snprintf(buf, sizeof buf, "STATUS=%s",
             c->state == C_IDLE       ? "idle, waiting for start"
             : c->state == C_STARTING ? "starting a session"
                                      : "stopping the session");
  if (strcmp(buf, c->last_status_text) == 0)
    return;
  memcpy(c->last_status_text, buf, sizeof buf);
  pirec__sdnotify(buf);
}

json_t *pirec__status_json(struct pirec_controller *c)
{
  static const char *states[] = {"idle", "starting", "recording", "stopping"};
  json_t *o = json_object();
  json_object_set_new(o, "state", json_string(states[c->state]));
  json_object_set_new(o, "pid", json_integer(getpid()));
  json_object_set_new(o, "version", json_string(PIREC_VERSION));
  int64_t now = pirec_clock_mono_ns();
  if (c->session && pirec_session_dir(c->session)) {
    json_object_set_new(o, "session_dir", json_string(pirec_session_dir(c->session)));
    json_object_set_new(o, "elapsed_ns", json_integer(now - pirec_session_start_mono_ns(c->session)));
    json_object_set_new(o, "trial", json_integer(c->trial));
    json_object_set_new(o, "trial_elapsed_ns", json_integer(c->trial ? now - c->trial_start_mono : 0));
    json_object_set_new(o, "errors", json_integer((json_int_t)pirec_session_error_count(c->session)));
  } else {
    json_object_set_new(o, "session_dir", json_null());
    json_object_set_new(o, "trial", json_integer(0));
  }
  json_object_set_new(o, "notes", json_integer((json_int_t)c->note_seq));
  json_t *mods = json_object();
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    json_t *mo = json_pack("{s:s,s:s,s:i,s:i,s:i,s:b,s:I}", "kind", m->kind, "state",
                           m->stopping && m->state != M_ENDED ? "stopping" : pirec__mstate_name(m->state),
                           "pid", m->pid, "crashes", (int)m->crashes, "restarts", (int)(m->restarts),
                           "takes_notes", m->accepts_notes, "queued_bytes", (json_int_t)m->out_bytes);
    if (m->last_status) {
      json_object_set(mo, "counters", json_object_get(m->last_status, "counters"));
      json_object_set(mo, "recorder_state", json_object_get(m->last_status, "state"));
      json_object_set(mo, "looplag", json_object_get(m->last_status, "looplag"));
      json_object_set_new(mo, "status_age_ns", json_integer(now - m->last_status_mono));
    }
    if (*m->last_error)
      json_object_set_new(mo, "last_error", json_string(m->last_error));
    json_object_set_new(mods, m->name, mo);
  }
  json_object_set_new(o, "modules", mods);
  json_object_set_new(o, "gpio", pirec__gpio_status(c));
  if (c->lag_open) {
    struct pirec_looplag_stats st;
    pirec_looplag_stats(&c->lag, &st);
    json_object_set_new(o, "looplag",
                        json_pack("{s:I,s:I,s:I,s:I}", "ticks", (json_int_t)st.ticks, "episodes",
                                  (json_int_t)st.episodes, "max_ns", (json_int_t)st.max_ns, "p99_ns",
                                  (json_int_t)st.p99_ns));
  }
  json_int_t nops = 0;
  for (struct op *op = c->ops; op; op = op->next)
    nops++;
  json_object_set_new(o, "ops_queued", json_integer(nops)); /* the running one included */
  json_object_set_new(o, "clients", json_integer(c->nclients));
  json_object_set_new(o, "clients_dropped", json_integer((json_int_t)c->clients_dropped));
  json_object_set_new(o, "config",
                      c->demo ? json_string("(built-in demo)") : json_string(pirec_config_path(c->cfg)));
  json_object_set_new(o, "reload_pending", json_boolean(c->pending_cfg != NULL));
  return o;
}

static void on_status_timer(uv_timer_t *t)
{
  struct pirec_controller *c = t->data;
  pirec__clients_check_stalled(c);
  for (int i = 0; i < c->nmodules; i++)
    pirec__module_poll_status(&c->modules[i]);
  /* Counters reach session.json every 5 s between trial changes: each rewrite is an fsync'ed
   * atomic replace, which an SD card should not see every second. */
  if (c->session && ++c->status_ticks % 5 == 0)
    pirec_session_save(c->session);
}

static void on_watchdog(uv_timer_t *t)
{
  pirec__sdnotify("WATCHDOG=1");
}

static void on_demo_note(uv_timer_t *t)
{
  struct pirec_controller *c = t->data;
  if (c->state != C_RECORDING)
    return;
  char text[96], err[300];
  snprintf(text, sizeof text, "demo note %d: scripted by the built-in demo configuration", ++c->demo_notes);
  json_t *extra = NULL;
  if (pirec__take_note(c, text, strlen(text), &extra, err, sizeof err) == 0)
    json_decref(extra);
}

static void on_handle_closed(uv_handle_t *h)
{
  struct pirec_controller *c = h->data;
  c->handles_open--;
  pirec__settle(c);
}

static void on_lag_closed(struct pirec_looplag *lag)
{
  struct pirec_controller *c = lag->data;
  c->handles_open--;
  pirec__settle(c);
}

static void close_handle(struct pirec_controller *c, uv_handle_t *h)
{
  if (!uv_is_closing(h)) {
    h->data = c;
    uv_close(h, on_handle_closed);
  }
}

/* Called whenever something the shutdown (or a config switch) waits for has ended. */
void pirec__settle(struct pirec_controller *c)
{
  for (int i = 0; i < c->nmodules; i++)
    if (c->modules[i].job && c->modules[i].state != M_ENDED)
      return;
  if (c->started == 2 && !c->shutting_down) {
    /* A config switch: every old recorder has ended; start the new set. */
    for (int i = 0; i < c->nmodules; i++)
      pirec__module_release(&c->modules[i]);
    c->started = 1;
    pirec__modules_build(c);
    pirec__modules_spawn(c);
    return;
  }
  if (!c->shutting_down || c->session || c->ops || c->remuxes)
    return;
  if (!c->shutdown_done) {
    c->shutdown_done = 1;
    pirec_job_queue_free(c->remux_queue);
    c->remux_queue = NULL;
    pirec__sdnotify("STOPPING=1");
    for (int i = 0; i < c->nmodules; i++)
      pirec__module_release(&c->modules[i]);
    pirec__clients_close_all(c);
    if (c->server_open) {
      close_handle(c, (uv_handle_t *)&c->server);
      c->server_open = 0;
      unlink(c->socket_path);
    }
    for (int i = 0; i < c->sig_open; i++)
      close_handle(c, (uv_handle_t *)&c->sig[i]);
    pirec__gpio_close_all(c);
    close_handle(c, (uv_handle_t *)&c->status_timer);
    close_handle(c, (uv_handle_t *)&c->watchdog_timer);
    close_handle(c, (uv_handle_t *)&c->demo_timer);
    close_handle(c, (uv_handle_t *)&c->op_timer);
    close_handle(c, (uv_handle_t *)&c->idle);
    if (c->lag_open) {
      c->lag.data = c;
      pirec_looplag_close(&c->lag, on_lag_closed);
      c->lag_open = 0;
    }
  }
}

static void on_shutdown_op_done(struct pirec_controller *c)
{
  for (int i = 0; i < c->nmodules; i++)
    pirec__module_stop(&c->modules[i]);
  /* A remux in progress is stopped: its inputs are untouched and it can be run again. */
  for (struct remux_run *run = c->remuxes; run; run = run->next)
    pirec_job_stop(run->job);
  pirec__settle(c);
}

void pirec__shutdown(struct pirec_controller *c, const char *source, const char *from)
{
  if (c->shutting_down)
    return;
  c->shutting_down = 1;
  pirec__sdnotify("STOPPING=1\nSTATUS=stopping");
  /* Ops waiting behind the running one are answered now: nothing new starts. */
  pirec__ops_cancel_waiting(c, "shutting down");
  pirec__op_enqueue(c, OP_SHUTDOWN, NULL, source, from);
}

static void on_signal(uv_signal_t *s, int signum)
{
  struct pirec_controller *c = s->data;
  switch (signum) {
  case SIGINT:
  case SIGTERM:
    pirec_log(PIREC_LOG_INFO, "%s: stopping", strsignal(signum));
    pirec__shutdown(c, "signal", signum == SIGINT ? "SIGINT" : "SIGTERM");
    break;
  case SIGUSR1:
    if (!c->shutting_down)
      pirec__op_enqueue(c, OP_TOGGLE, NULL, "signal", "SIGUSR1");
    break;
  case SIGHUP:
    if (!c->shutting_down)
      pirec__op_enqueue(c, OP_RELOAD, NULL, "signal", "SIGHUP");
    break;
  }
}

/* The shutdown op is the last one: once it is done, stop the recorders. */
void pirec__ops_idle(struct pirec_controller *c)
{
  if (c->shutting_down && !c->ops && !c->session)
    on_shutdown_op_done(c);
}

void pirec__timers_start(struct pirec_controller *c)
{
  c->status_timer.data = c->demo_timer.data = c->watchdog_timer.data = c;
  uv_timer_start(&c->status_timer, on_status_timer, STATUS_POLL_MS, STATUS_POLL_MS);
  if (c->demo)
    uv_timer_start(&c->demo_timer, on_demo_note, DEMO_NOTE_MS, DEMO_NOTE_MS);
  if (pirec_looplag_init(c->loop, &c->lag, 0, 0, NULL) == 0) {
    c->handles_open++;
    c->lag_open = 1;
    pirec_looplag_start(&c->lag);
  }
  if (c->opts.handle_signals) {
    static const int sigs[4] = {SIGINT, SIGTERM, SIGUSR1, SIGHUP};
    for (int i = 0; i < 4; i++) {
      uv_signal_init(c->loop, &c->sig[i]);
      c->handles_open++;
      c->sig[i].data = c;
      uv_signal_start(&c->sig[i], on_signal, sigs[i]);
      c->sig_open++;
    }
  }
#ifdef PIREC_HAVE_SYSTEMD
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
    uint64_t ms = usec / 2000;
    uv_timer_start(&c->watchdog_timer, on_watchdog, ms ? ms : 1, ms ? ms : 1);
  }
#endif
  uv_unref((uv_handle_t *)&c->watchdog_timer);
}

static const char demo_config_fmt[] = "# pirec's built-in demo configuration (pirec record without -c)\n"
                                      "[session]\n"
                                      "output_dir = %s\n"
                                      "clocks_interval = 1s\n"
                                      "remux_after = false\n"
                                      "[notes]\n"
                                      "enabled = true\n"
                                      "%s";

static const char demo_camera[] = "[camera.demo]\n"
                                  "source = lavfi\n"
                                  "lavfi = testsrc2\n"
                                  "size = 320x240\n"
                                  "fps = 15\n";

static int load_config(struct pirec_controller *c)
{
  struct pirec_config_errors errors = {0};
  int err;
  if (c->config_path) {
    err = pirec_config_load(c->config_path, &c->cfg, &errors);
  } else {
    c->demo = 1;
    char out[PATH_MAX], cwd[PATH_MAX - 32];
    if (c->output_dir_override)
      snprintf(out, sizeof out, "%s", c->output_dir_override);
    else
      snprintf(out, sizeof out, "%s/pirec-sessions", getcwd(cwd, sizeof cwd) ? cwd : ".");
    char probe[PATH_MAX];
    int camera = pirec__find_program(c, "pirec-camera", probe, sizeof probe) == 0;
    char text[PATH_MAX + 1024];
    snprintf(text, sizeof text, demo_config_fmt, out, camera ? demo_camera : "");
    err = pirec_config_parse(text, strlen(text), "<built-in demo>", &c->cfg, &errors);
  }
  for (size_t i = 0; i < errors.count; i++)
    fprintf(stderr, "%s\n", errors.items[i].message);
  pirec_config_errors_free(&errors);
  return err;
}

int pirec_controller_new(uv_loop_t *loop, const struct pirec_controller_options *opts,
                         struct pirec_controller **out)
{
  *out = NULL;
  struct pirec_controller *c = calloc(1, sizeof(*c));
  if (!c)
    return -ENOMEM;
  c->loop = loop;
  c->hooks = (struct pirec__hooks){
      .settle = pirec__settle,
      .state_changed = pirec__notify_status,
      .ops_idle = pirec__ops_idle,
      .module_ready = pirec__ops_module_ready,
      .module_ended = pirec__ops_module_ended,
      .gpio_submit = pirec__ops_gpio_submit,
      .status_json = pirec__status_json,
  };
  pirec_controller_options_default(&c->opts);
  if (opts)
    c->opts = *opts;
  if (!c->opts.ready_timeout_ms)
    c->opts.ready_timeout_ms = 10000;
  if (!c->opts.stop_timeout_ms)
    c->opts.stop_timeout_ms = 10000;
  c->config_path = c->opts.config_path ? strdup(c->opts.config_path) : NULL;
  c->label = c->opts.label ? strdup(c->opts.label) : NULL;
  c->recorder_dir = c->opts.recorder_dir ? strdup(c->opts.recorder_dir) : NULL;
  c->output_dir_override = c->opts.output_dir ? strdup(c->opts.output_dir) : NULL;
  char clean[PIREC_SESSION_LABEL_MAX + 1];
  if (c->label && pirec_session_label_sanitise(c->label, clean) < 0) {
    fprintf(stderr, "pirec: invalid label '%s': '..' and '/' are not allowed, at most %d bytes\n", c->label,
            PIREC_SESSION_LABEL_MAX);
    pirec_controller_free(c);
    return -EINVAL;
  }
  if (c->opts.socket_path)
    snprintf(c->socket_path, sizeof c->socket_path, "%s", c->opts.socket_path);
  else if (pirec_control_socket_default(c->config_path, c->socket_path, sizeof c->socket_path) < 0) {
    pirec_controller_free(c);
    return -ENAMETOOLONG;
  }
  int err = load_config(c);
  if (err < 0) {
    pirec_controller_free(c);
    return err == -ENOMEM ? err : -EINVAL;
  }
  if (!c->opts.socket_path && c->config_path && *pirec_config_get_string(c->cfg, "control", "socket"))
    snprintf(c->socket_path, sizeof c->socket_path, "%s",
             pirec_config_get_string(c->cfg, "control", "socket"));
  pirec__modules_build(c);
  *out = c;
  return 0;
}

int pirec_controller_start(struct pirec_controller *c)
{
  /* Handles first: a failure below ends in pirec_controller_shutdown, which closes them. */
  uv_timer_init(c->loop, &c->op_timer);
  uv_timer_init(c->loop, &c->status_timer);
  uv_timer_init(c->loop, &c->watchdog_timer);
  uv_timer_init(c->loop, &c->demo_timer);
  uv_idle_init(c->loop, &c->idle);
  c->handles_open += 5;
  int err = pirec__control_listen(c);
  if (err < 0)
    return err;
  err = pirec__snapshot_write(c, c->cfg);
  if (err < 0) {
    fprintf(stderr, "pirec: cannot write the config snapshot '%s': %s\n", c->snapshot_path,
            pirec_strerror(err));
    return err;
  }
  pirec__timers_start(c);
  pirec__gpio_open_all(c);
  c->started = 1;
  pirec__modules_spawn(c);
  char ready[700];
  snprintf(ready, sizeof ready, "READY=1\nSTATUS=idle; control socket %s", c->socket_path);
  pirec__sdnotify(ready);
  pirec_log(PIREC_LOG_INFO, "pirec %s: control socket '%s', %d recorder(s)%s", PIREC_VERSION, c->socket_path,
            c->nmodules, c->demo ? ", built-in demo configuration" : "");
  if (!c->opts.wait)
    pirec__op_enqueue(c, OP_START, c->label ? c->label : "", "cli", "pirec record");
  return 0;
}

void pirec_controller_shutdown(struct pirec_controller *c)
{
  pirec__shutdown(c, "api", NULL);
}

int pirec_controller_exit_status(const struct pirec_controller *c)
{
  return c->errors ? 1 : 0;
}
const char *pirec_controller_socket_path(const struct pirec_controller *c)
{
  return c->socket_path;
}

void pirec_controller_free(struct pirec_controller *c)
{
  if (!c)
    return;
  for (int i = 0; i < c->nmodules; i++)
    pirec__module_release(&c->modules[i]);
  pirec__ops_free(c);
  if (*c->snapshot_path)
    unlink(c->snapshot_path);
  pirec_config_free(c->cfg);
  pirec_config_free(c->pending_cfg);
  free(c->config_path);
  free(c->label);
  free(c->recorder_dir);
  free(c->output_dir_override);
  free(c);
}
