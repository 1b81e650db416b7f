/* The controller's state machine: one queue of ops (start, stop, trial, toggle, reload, shutdown)
 * from every source (socket, GPIO, signals), run one at a time; sessions and trials driven
 * through the recorders; notes; config reloads applied between sessions. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller-int.h"
#include "fleet.h"
#include "pirec/crypt.h"
#include "pirec/clock.h"
#include "pirec/error.h"
#include "pirec/log.h"
#include "pirec/sink.h"
#include "pirec/container_of.h"

static const char *op_kind_name(enum op_kind k)
{
  static const char *const names[] = {"start", "stop", "trial", "toggle", "reload", "shutdown"};
  return names[k];
}

static void op_done(struct pirec_controller *c, json_t *reply);
static void apply_pending_config(struct pirec_controller *c, json_t *reply);

/* A note the client waits for: answered once the notes recorder acknowledged it ("noted": the row
 * is in its file's queue) or refused it. who is cleared when the client goes away. */
struct note_wait {
  struct waiter w;
  json_t *extra; /* seq and clocks, for the reply */
  struct pirec_controller *c;
  struct note_wait *next, *prev; /* both ways: a flood of notes leaves in O(1) each */
};

static void note_wait_unlink(struct pirec_controller *c, struct note_wait *nw)
{
  if (nw->prev)
    nw->prev->next = nw->next;
  else
    c->note_waits = nw->next;
  if (nw->next)
    nw->next->prev = nw->prev;
  nw->next = nw->prev = NULL;
}

static void note_answer(struct note_wait *nw, json_t *reply)
{
  if (nw->w.who && nw->w.reply) {
    json_object_set(reply, "id", nw->w.id ? nw->w.id : json_null());
    nw->w.reply(nw->w.who, reply);
  } else {
    json_decref(reply);
  }
  json_decref(nw->w.id);
  json_decref(nw->extra);
  free(nw);
}

static void on_note_reply(struct module *m, json_t *reply, void *user)
{
  struct note_wait *nw = user;
  note_wait_unlink(nw->c, nw);
  const char *r = reply ? json_string_value(json_object_get(reply, "reply")) : NULL;
  json_t *o;
  if (r && strcmp(r, "noted") == 0) {
    o = json_pack("{s:s}", "reply", "noted");
    json_object_update(o, nw->extra);
  } else {
    char msg[600];
    const char *why = reply ? json_string_value(json_object_get(reply, "message")) : NULL;
    snprintf(msg, sizeof msg, "note not saved: %s", why ? why : "the notes recorder ended");
    o = json_pack("{s:s,s:s}", "reply", "error", "message", msg);
  }
  note_answer(nw, o);
}

void pirec__note_waits_forget(struct pirec_controller *c, void *who)
{
  for (struct note_wait *nw = c->note_waits; nw; nw = nw->next)
    if (nw->w.who == who)
      nw->w.who = NULL;
}

static struct note_wait *note_wait_new(struct pirec_controller *c, void (*reply)(void *who, json_t *obj),
                                       void *who, json_t *id, json_t *extra)
{
  struct note_wait *nw = calloc(1, sizeof *nw);
  if (!nw)
    return NULL;
  nw->c = c;
  nw->w.reply = reply;
  nw->w.who = who;
  nw->w.id = id ? json_incref(id) : NULL;
  nw->extra = json_incref(extra);
  nw->next = c->note_waits;
  if (nw->next)
    nw->next->prev = nw;
  c->note_waits = nw;
  return nw;
}

/* The notes recorder that takes this note, or NULL (then it goes into events.csv). */
static struct module *notes_module(struct pirec_controller *c)
{
  for (int i = 0; i < c->nmodules; i++)
    if (strcmp(c->modules[i].kind, "notes") == 0 && c->modules[i].state != M_ENDED)
      return &c->modules[i];
  return NULL;
}

/* A note: stamped now, numbered, handed to the notes recorder (or to events.csv if there is
 * none). It belongs to the trial running at its stamp: a trial change sends the recorder its
 * stop and the next trial's start at one instant, so a note stamped before goes ahead of the
 * stop, one stamped after behind the start. reply(who, obj) gets "noted" only once the recorder
 * acknowledged it, or an error; NULL reply: nobody waits. */
int pirec__take_note(struct pirec_controller *c, const char *text, size_t len,
                     void (*reply)(void *who, json_t *obj), void *who, json_t *id, char *err, size_t errlen)
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
  struct module *m = notes_module(c);
  if (!m && (!c->session || !pirec_session_dir(c->session))) {
    snprintf(err, errlen, "no recorder takes notes and the session is not open yet");
    return -ENOTCONN;
  }
  json_t *extra = json_pack("{s:I,s:I,s:I}", "seq", (json_int_t)c->note_seq + 1, "mono_ns", (json_int_t)mono,
                            "wall_ns", (json_int_t)wall);
  if (m) {
    json_t *cmd = json_pack("{s:s,s:s%,s:I,s:I}", "cmd", "note", "text", text, len, "mono_ns",
                            (json_int_t)mono, "wall_ns", (json_int_t)wall);
    if (!cmd) {
      json_decref(extra);
      snprintf(err, errlen, "note is not valid UTF-8");
      return -EINVAL;
    }
    struct note_wait *nw = note_wait_new(c, reply, who, id, extra);
    int e = nw ? pirec__module_send(m, cmd, on_note_reply, nw) : (json_decref(cmd), -ENOMEM);
    if (e < 0) {
      if (nw) {
        note_wait_unlink(c, nw);
        nw->w.who = NULL;
        note_answer(nw, json_object());
      }
      json_decref(extra);
      snprintf(err, errlen, "notes recorder '%s' is %s: %s", m->name,
               e == -ENOBUFS ? "too far behind" : "unavailable", pirec_strerror(e));
      return e;
    }
  } else {
    char *copy = strndup(text, len);
    pirec_session_event_at(c->session, mono, wall, "note", NULL, copy);
    free(copy);
    c->notes_in_events++;
    if (reply) {
      json_t *o = json_pack("{s:s}", "reply", "noted");
      json_object_update(o, extra);
      json_object_set(o, "id", id ? id : json_null());
      reply(who, o);
    }
  }
  json_decref(extra);
  c->note_seq++;
  pirec__modules_mark(c, "note", text, len, mono, wall);
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

/* An op and what it holds (its waiters are answered already). */
static void op_free(struct op *op)
{
  json_decref(op->fleet);
  free(op);
}

static void op_done(struct pirec_controller *c, json_t *reply)
{
  struct op *op = c->ops;
  c->op_running = 0;
  uv_timer_stop(&c->op_timer);
  if (op) {
    c->ops = op->next;
    waiters_reply(op, reply);
    op_free(op);
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

/* A recorder that cannot record this trial (it refused the start: no device; or it is not
 * running): said in events.csv (module_not_recording) and session.json (modules.NAME.not_recording),
 * kept for the start's reply, the status and the [session] required check. */
static void module_not_recording(struct module *m, const char *why)
{
  struct pirec_controller *c = m->c;
  snprintf(m->not_recording, sizeof m->not_recording, "%s", why ? why : "no reason given");
  m->in_trial = 0;
  /* A refused first start wrote nothing under this trial's number: a later join is part 0. */
  if (m->part == 0)
    m->started_trial = 0;
  pirec_log(PIREC_LOG_WARN, "recorder '%s' is not recording trial %d: %s", m->name, c->trial,
            m->not_recording);
  if (!c->session || !pirec_session_dir(c->session))
    return;
  pirec_session_event(c->session, "module_not_recording", m->name, m->not_recording);
  pirec_session_module_set(c->session, m->name, "not_recording",
                           json_pack("{s:i,s:s}", "trial", c->trial, "reason", m->not_recording));
}

/* A module that took the trial but has no device yet ("started" with "waiting"): in the trial,
 * but not recording until its device_ready. */
static void module_waiting(struct module *m, const char *why)
{
  int part = m->part, started = m->started_trial;
  module_not_recording(m, why);
  m->in_trial = 1;
  m->part = part;
  m->started_trial = started;
}

static void on_start_reply(struct module *m, json_t *reply, void *user)
{
  const char *r = reply ? json_string_value(json_object_get(reply, "reply")) : NULL;
  if (r && strcmp(r, "error") == 0)
    module_not_recording(m, json_string_value(json_object_get(reply, "message")));
  else if (r && json_is_string(json_object_get(reply, "waiting")))
    module_waiting(m, json_string_value(json_object_get(reply, "waiting")));
  on_op_reply(m, reply, user);
}

/* events.csv: a module that was not recording the running trial records now. */
static void module_recording(struct module *m)
{
  struct pirec_controller *c = m->c;
  char detail[64];
  snprintf(detail, sizeof detail, "joined trial %d", c->trial);
  pirec_session_event(c->session, "module_recording", m->name, detail);
  m->not_recording[0] = '\0';
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
    if (json_is_string(json_object_get(reply, "waiting")))
      module_waiting(m, json_string_value(json_object_get(reply, "waiting")));
    else if (*m->not_recording)
      module_recording(m);
  } else if (reply) {
    char msg[512];
    snprintf(msg, sizeof msg, "restarted recorder could not rejoin trial %d: %s", m->started_trial,
             json_string_value(json_object_get(reply, "message")));
    pirec_session_error(c->session, m->name, msg);
    module_not_recording(m, json_string_value(json_object_get(reply, "message")));
  }
}

/* The current trial's start for m, ahead of anything queued for it (notes held while the session
 * was starting, or written while it was restarting), or, in_order, behind it (a trial change: the
 * notes queued before it belong to the trial that ends). A start repeated inside one trial (after
 * a crash) is part n. for_op: the running op waits for the reply; else it is a rejoin. */
static void send_start(struct module *m, int for_op, int in_order)
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
  json_t *key = NULL;
  if (c->session_key) {
    /* The recorders encrypt with the same key; the text is wiped once the line is encoded. */
    char text[PIREC_CRYPT_KEY_TEXT];
    pirec_crypt_key_text(c->session_key, text);
    key = json_string(text);
    pirec_crypt_wipe(text, sizeof text);
    json_object_set(cmd, "key", key);
  }
  int (*send)(struct module *, json_t *, pirec__reply_cb, void *) =
      in_order ? pirec__module_send : pirec__module_send_first;
  if (!for_op) {
    send(m, cmd, on_restart_started, NULL);
  } else {
    c->op_wait++;
    if (send(m, cmd, on_start_reply, NULL) < 0)
      c->op_wait--;
  }
  if (key)
    pirec_crypt_wipe((char *)json_string_value(key), json_string_length(key));
  json_decref(key);
}

static void send_start_first(struct module *m, int for_op)
{
  send_start(m, for_op, 0);
}

/* Sends start for the current trial to every recorder that takes commands now; the ones still
 * starting up join when they say ready. */
static void start_trial_on_modules(struct pirec_controller *c, int in_order)
{
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    m->in_trial = 0;
    m->hold = 0;
    m->not_recording[0] = '\0';
    if (m->state == M_ENDED) {
      char why[320];
      snprintf(why, sizeof why, "recorder not running (it gave up: %s)",
               *m->last_error ? m->last_error : "ended");
      module_not_recording(m, why);
      continue;
    }
    if (m->state == M_READY) {
      send_start(m, 1, in_order);
    } else {
      /* joins in handle_ready */
      m->in_trial = 1;
      m->started_trial = 0;
    }
  }
}

/* next: the next trial's start follows at once (a seamless trial change, docs/PROTOCOL.md): the
 * recorder keeps what it captures from the stop on for that trial. */
/* next: a trial change follows; abort: the session is abandoned as it starts. */
static void stop_trial_on_modules(struct pirec_controller *c, int next, int abort_)
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
    json_t *cmd = json_pack("{s:s}", "cmd", "stop");
    if (next)
      json_object_set_new(cmd, "next", json_true());
    if (abort_)
      json_object_set_new(cmd, "abort", json_true());
    if (pirec__module_send(m, cmd, on_op_reply, NULL) < 0)
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

/* The [session] required modules that cannot record now, with why, into out ("" when none). */
static int required_missing(struct pirec_controller *c, char *out, size_t cap)
{
  const char *list = pirec_config_get_string(c->cfg, "session", "required");
  size_t used = 0;
  out[0] = '\0';
  for (const char *p = list; *p && used < cap;) {
    p += strspn(p, ", ");
    size_t len = strcspn(p, ", ");
    if (!len)
      break;
    const struct module *m = NULL;
    for (int i = 0; i < c->nmodules && !m; i++)
      if (strlen(c->modules[i].name) == len && strncmp(c->modules[i].name, p, len) == 0)
        m = &c->modules[i];
    int gpio_configured = 0;
    const char *gpio_why = m ? NULL : pirec__gpio_missing(c, p, len, &gpio_configured);
    const char *why = m                 ? m->not_recording
                      : gpio_why        ? gpio_why
                      : gpio_configured ? ""
                                        : "not an enabled module or gpio line of this config";
    if (m && !*why && m->state == M_DOWN)
      why = "restarting after a crash";
    if (*why)
      used += (size_t)snprintf(out + used, cap - used, "%s%.*s: %s", used ? "; " : "", (int)len, p, why);
    p += len;
  }
  return out[0] != '\0';
}

/* The modules not recording the trial just started, for its reply (absent when all record). */
static void reply_not_recording(struct pirec_controller *c, json_t *r)
{
  json_t *o = json_object();
  for (int i = 0; i < c->nmodules; i++)
    if (*c->modules[i].not_recording)
      json_object_set_new(o, c->modules[i].name, json_string(c->modules[i].not_recording));
  for (int i = 0; i < c->ngpio_waiting; i++)
    json_object_set_new(o, c->gpio_waiting[i].section, json_string(c->gpio_waiting[i].why));
  if (json_object_size(o))
    json_object_set_new(r, "not_recording", o);
  else
    json_decref(o);
}

static void after_modules_stopped(struct pirec_controller *c);

/* A session whose required module cannot record is stopped at once, and its start fails. */
static int start_refused_by_required(struct pirec_controller *c)
{
  char missing[500];
  struct op *op = c->ops;
  if (!op || op->kind != OP_START || !required_missing(c, missing, sizeof missing))
    return 0;
  int warn = strcmp(pirec_config_get_string(c->cfg, "session", "if_required_missing"), "warn") == 0;
  char msg[sizeof c->start_failed];
  snprintf(msg, sizeof msg, "required module%s cannot record: %s", strchr(missing, ';') ? "s" : "", missing);
  pirec_session_event(c->session, warn ? "required_missing" : "start_failed", NULL, msg);
  if (warn)
    return 0;
  snprintf(c->start_failed, sizeof c->start_failed, "%s", msg);
  pirec_session_error(c->session, NULL, msg);
  c->state = C_STOPPING;
  c->hooks.state_changed(c);
  stop_trial_on_modules(c, 0, 1);
  op_await(c, after_modules_stopped);
  return 1;
}

static void after_trial_started(struct pirec_controller *c)
{
  if (start_refused_by_required(c))
    return;
  c->state = C_RECORDING;
  struct op *op = c->ops;
  json_t *r = session_reply(c, op && op->kind == OP_TRIAL ? "trial" : "started");
  reply_not_recording(c, r);
  if (*c->start_low_space && c->trial == 1)
    json_object_set_new(r, "low_space", json_string(c->start_low_space));
  op_done(c, r);
}

/* in_order: a trial change, the start goes behind the stop already sent (see send_start). */
static void begin_trial(struct pirec_controller *c, const char *label, int in_order)
{
  c->trial = pirec_session_last_trial(c->session) + 1;
  pirec_session_trial_begin(c->session, c->trial, label);
  c->trial_start_mono = pirec_clock_mono_ns();
  pirec__gpio_trial_started(c);
  /* Outputs follow the session, not the request: the LED goes on (and periodic sync pulses
   * start) only once there is a session directory, so a session that cannot start leaves the LED
   * off and every pulse has an events.csv to go into. After trial 1's pulse, so that pulse is the
   * one recording starts with (one pulse on the line, one row, in trial 1). */
  if (c->trial == 1)
    pirec__gpio_set_recording(c, 1);
  start_trial_on_modules(c, in_order);
  op_await(c, after_trial_started);
}

static void start_abandoned(struct pirec_controller *c);

static void on_session_started(struct pirec_session *s, int status, void *user)
{
  struct pirec_controller *c = user;
  if (status < 0) {
    char msg[600];
    snprintf(msg, sizeof msg, "cannot start a session in '%s': %s",
             pirec_config_get_string(c->cfg, "session", "output_dir"), pirec_strerror(status));
    pirec_log(PIREC_LOG_ERROR, "%s", msg);
    /* Files it opened before failing (session.json unwritable) are closed with it. */
    pirec_session_close(s, NULL, NULL);
    c->session = NULL;
    start_abandoned(c);
    c->errors++;
    op_done(c, error_reply(msg));
    return;
  }
  pirec_log(PIREC_LOG_INFO, "session '%s' started", pirec_session_dir(s));
  pirec__gpio_early_write(c, s);
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    pirec_session_module_set(s, m->name, "kind", json_string(m->kind));
    pirec_session_module_set(s, m->name, "program", json_string(m->program));
    pirec_session_module_set(s, m->name, "pid", json_integer(m->pid));
    m->crash_mono_ns = 0;
    /* Part numbers count restarts inside one trial of one session: trial 1 of this session is not
     * the previous session's trial 1 (t001.mkv, not t001_p1.mkv). */
    m->started_trial = 0;
    m->part = 0;
  }
  /* The kernel's clock-sync state at the start: how far wall_ns may be from true time, which is
   * what lines up recordings made on different machines (docs/FLEET.md). */
  json_t *sync = pirec_fleet_clock_json();
  if (sync)
    pirec_session_set(s, "clock_sync", sync);
  struct op *sop = c->ops;
  if (sop && sop->fleet)
    pirec_session_set(s, "fleet", json_incref(sop->fleet));
  control_row(c, "start", NULL);
  pirec__gpio_session_started(c);
  pirec__disk_session_started(c);
  if (*c->start_low_space)
    pirec_session_event(s, "low_space_warning", NULL, c->start_low_space);
  struct op *op = c->ops;
  begin_trial(c, op ? op->label : "", 0);
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

/* [storage] encrypt_to: a new key for the session starting (docs/PRIVACY.md). Returns 0 (with
 * c->session_key NULL when the session is not encrypted) or a negative errno. */
static int session_key(struct pirec_controller *c, unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES])
{
  const char *to = pirec_config_get_string(c->cfg, "storage", "encrypt_to");
  pirec_crypt_key_free(c->session_key);
  c->session_key = NULL;
  if (!to || !*to)
    return 0;
  int err = pirec_crypt_public_parse(to, pk);
  return err < 0 ? err : pirec_crypt_key_new(&c->session_key);
}

static void start_session_now(struct pirec_controller *c, const char *label);

/* A start that made no session after all (refused by the pre-flight, or no directory): notes held
 * for it go to the recorders (which refuse them: not recording), the state is idle again. */
static void start_abandoned(struct pirec_controller *c)
{
  c->state = C_IDLE;
  for (int i = 0; i < c->nmodules; i++) {
    c->modules[i].hold = 0;
    pirec__module_flush(&c->modules[i]);
  }
  pirec__gpio_early_discard(c); /* they belonged to this session */
  c->hooks.state_changed(c);
}

/* The pre-flight said: a start without room is refused with the numbers (no session directory is
 * made: it would take the space it lacks, and a button pressed again and again would leave one
 * empty session each time); a warning goes into the session's events.csv and the start's reply. */
static void on_preflight(struct pirec_controller *c, const struct pirec__disk_check *r)
{
  if (r->refuse) {
    json_t *e = json_pack("{s:s,s:s,s:I,s:I,s:I}", "reply", "error", "message", c->disk.last_event,
                          "free_bytes", (json_int_t)r->free_bytes, "needed_bytes", (json_int_t)r->needed,
                          "rate_bytes_per_s", (json_int_t)r->rate);
    start_abandoned(c);
    op_done(c, e);
    return;
  }
  snprintf(c->start_low_space, sizeof c->start_low_space, "%s", r->message);
  struct op *op = c->ops;
  start_session_now(c, op ? op->label : "");
}

/* The session counts as starting from here: notes wait in the outboxes for its directory, and a
 * stop pressed meanwhile stops it once it has started (docs/OPERATIONS.md, Transitions). */
static void op_start_session(struct pirec_controller *c, const char *label)
{
  c->start_low_space[0] = '\0';
  c->state = C_STARTING;
  c->trial = 0;
  for (int i = 0; i < c->nmodules; i++)
    c->modules[i].hold = 1;
  c->hooks.state_changed(c);
  if (pirec__disk_preflight(c, on_preflight) == 0)
    return;
  start_session_now(c, label);
}

static void start_session_now(struct pirec_controller *c, const char *label)
{
  struct pirec_session_options so = {0};
  so.output_dir = pirec__output_dir(c);
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
  unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES];
  int err = session_key(c, pk);
  so.key = c->session_key;
  so.encrypt_to = pk;
  if (err == 0)
    err = pirec_session_new(c->loop, &so, &s);
  json_decref(snap);
  json_decref(versions);
  if (err == 0)
    err = pirec_session_start(s, on_session_started, c);
  if (err < 0) {
    pirec_session_close(s, NULL, NULL);
    char msg[300];
    snprintf(msg, sizeof msg, "cannot start a session: %s", pirec_strerror(err));
    start_abandoned(c);
    op_done(c, error_reply(msg));
    return;
  }
  c->session = s;
  c->trial = 0;
}

/* 1 when an op behind the running one can start a session. */
static int queued_start(const struct pirec_controller *c)
{
  for (const struct op *op = c->ops ? c->ops->next : NULL; op; op = op->next)
    if (op->kind == OP_START || op->kind == OP_TOGGLE || op->kind == OP_TRIAL)
      return 1;
  return 0;
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
  c->session = NULL;                    /* s is freed when this returns */
  pirec_crypt_key_free(c->session_key); /* wiped: this Pi can no longer read the session */
  c->session_key = NULL;
  c->state = C_IDLE;
  c->trial = 0;
  pirec__gpio_set_recording(c, 0);
  pirec__disk_session_stopped(c);
  for (int i = 0; i < c->nmodules; i++)
    c->modules[i].not_recording[0] = '\0';
  json_t *r = json_pack("{s:s,s:s,s:i}", "reply", "stopped", "session_dir", dir, "errors", (int)nerr);
  if (*c->start_failed) {
    /* The start this stop ends failed: its waiters hear why, and where the evidence is. */
    json_decref(r);
    r = json_pack("{s:s,s:s,s:s}", "reply", "error", "message", c->start_failed, "session_dir", dir);
    c->start_failed[0] = '\0';
  }
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
  /* Edges kept while this session's files closed wait for the next session; none is queued. */
  if (c->nearly_edges && !queued_start(c))
    pirec__gpio_early_discard(c);
  apply_pending_config(c, r); /* then op_done(c, r) */
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
  pirec_session_close(c->session, on_session_stopped, c);
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
  stop_trial_on_modules(c, 0, 0);
  op_await(c, after_modules_stopped);
}

static void after_trial_stopped(struct pirec_controller *c)
{
  pirec_session_trial_end(c->session);
  struct op *op = c->ops;
  begin_trial(c, op ? op->label : "", 0);
}

/* 1 unless a recorder of the trial is restarting with notes queued for it: those must be written
 * into the trial that ends (join_then_stop), so the change waits for it. A recorder restarting
 * without notes is in neither trial while it is down (the gap is its restart's, counted by it) and
 * joins the next one when it is up, so it does not hold the change up. */
static int modules_settled(struct pirec_controller *c)
{
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    if (m->in_trial && m->state != M_READY && m->state != M_ENDED && pirec__module_has_note(m))
      return 0;
  }
  return 1;
}

/* A trial change at one instant: the trial ends and the next begins in the session's files, and
 * every recorder gets its stop and the next start together (its protocol library runs them in
 * order). Notes and samples before that instant are in the old trial, later ones in the new:
 * nothing falls between. A recorder that is restarting with notes queued for the old trial cannot
 * be told both now: then the trial ends first (its queued notes are written into it) and the next
 * begins after; the other recorders still get their stop with next, so they keep what they
 * capture meanwhile for the next trial (bounded; the rest counted in its first dropped_before). */
static void op_next_trial(struct pirec_controller *c)
{
  control_row(c, "trial", NULL);
  if (!modules_settled(c)) {
    stop_trial_on_modules(c, 1, 0);
    /* Notes taken until the next start is sent wait for it (its start goes ahead of them), as
     * while a session starts, rather than reach a notes recorder between trials. Only where the
     * stop itself went out: a held outbox would hold it too. */
    for (int i = 0; i < c->nmodules; i++) {
      struct module *m = &c->modules[i];
      if (m->state == M_READY && !m->out_head && !m->writable_blocked)
        m->hold = 1;
    }
    op_await(c, after_trial_stopped);
    return;
  }
  stop_trial_on_modules(c, 1, 0);
  pirec_session_trial_end(c->session);
  struct op *op = c->ops;
  begin_trial(c, op ? op->label : "", 1);
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
  }
  pirec_config_req_cleanup(req);
  if (!c->session)
    apply_pending_config(c, r);
  else
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
 * recorders are restarted to read it. The snapshot is written in the threadpool, and the op that
 * applies it (a reload, a session's stop) is done, with reply, only once the switch is made, so
 * the next op finds the new settings in place. */
static void pending_config_written(struct pirec_controller *c, int err);

static void apply_pending_config(struct pirec_controller *c, json_t *reply)
{
  if (!c->pending_cfg || c->session || c->shutting_down || c->snapshot_busy) {
    op_done(c, reply);
    return;
  }
  c->snapshot_reply = reply;
  c->snapshot_of = c->pending_cfg;
  int err = pirec__snapshot_write_async(c, c->pending_cfg, pending_config_written);
  if (err < 0)
    pending_config_written(c, err);
}

static void switch_config(struct pirec_controller *c, int err);

static void pending_config_written(struct pirec_controller *c, int err)
{
  json_t *reply = c->snapshot_reply;

  c->snapshot_reply = NULL;
  if (err == 0 && (c->shutting_down || c->pending_cfg != c->snapshot_of))
    pirec__snapshot_discard(c); /* shutting down, or replaced meanwhile: not the one to use */
  else
    switch_config(c, err);
  op_done(c, reply);
  c->hooks.settle(c);
}

static void switch_config(struct pirec_controller *c, int err)
{
  if (err < 0) {
    /* The recorders would still read the old text: keep the old settings everywhere. */
    pirec_log(PIREC_LOG_ERROR, "cannot write the config snapshot '%s': %s; keeping the old config",
              c->snapshot_path, pirec_strerror(err));
    pirec_config_free(c->pending_cfg);
    c->pending_cfg = NULL;
    c->errors++;
    return;
  }
  pirec__snapshot_adopt(c);
  pirec_config_free(c->cfg);
  c->cfg = c->pending_cfg;
  c->pending_cfg = NULL;
  pirec__gpio_reopen_all(c);
  pirec__disk_restart(c);
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
  pirec_looplag_op(op_kind_name(op->kind)); /* the stall detector's cause, until the next label */
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

/* A recorder that refused this trial for want of its device has it now: it joins (part 0 when it
 * wrote nothing yet) and events.csv says so (module_recording). */
void pirec__ops_module_device_ready(struct module *m)
{
  struct pirec_controller *c = m->c;
  if (!c->session || !c->trial || c->state != C_RECORDING || !*m->not_recording || m->state != M_READY)
    return;
  if (m->in_trial)
    module_recording(m); /* it took the trial and waited in it */
  else
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

/* The watchdog found free space running out: the session stops like any stop (every file
 * finalised, the recorders stay up for the next start), and its files say why. */
void pirec__ops_low_space(struct pirec_controller *c, const char *why)
{
  if (!c->session || !pirec_session_dir(c->session))
    return;
  pirec_session_event(c->session, "low_space_stop", NULL, why);
  pirec_session_set(c->session, "stop_reason", json_pack("{s:s,s:s}", "kind", "low_space", "detail", why));
  pirec__op_enqueue(c, OP_STOP, NULL, "storage", NULL);
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
    op_free(op);
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
    op_free(op);
  }
}
