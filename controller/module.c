/* The recorder modules as children: spawning and supervising them (pirec/job.h), and the
 * controller's side of the JSON-lines protocol with them (docs/PROTOCOL.md): commands out through
 * an outbox, replies matched to their pending commands, events into the session. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller-int.h"
#include "pirec/crypt.h"
#include "pirec/clock.h"
#include "pirec/error.h"
#include "pirec/jsonl.h"
#include "pirec/log.h"

const char *pirec__mstate_name(enum mstate s)
{
  switch (s) {
  case M_DOWN: return "down";
  case M_SPAWNING: return "starting";
  case M_READY: return "running";
  case M_ENDED: return "ended";
  }
  return "?";
}

static void pending_append(struct module *m, struct pending *p)
{
  p->next = NULL;
  if (m->pend_tail)
    m->pend_tail->next = p;
  else
    m->pend_head = p;
  m->pend_tail = p;
}

static void pending_push(struct module *m, json_int_t id, pirec__reply_cb cb, void *user,
                         const char *note_line, size_t note_len)
{
  struct pending *p = calloc(1, sizeof(*p));
  if (!p)
    return;
  p->id = id;
  p->cb = cb;
  p->user = user;
  if (note_line) {
    p->note_line = malloc(note_len);
    if (p->note_line) {
      memcpy(p->note_line, note_line, note_len);
      p->note_len = note_len;
    }
  }
  pending_append(m, p);
}

static struct pending *pending_take(struct module *m, json_int_t id)
{
  struct pending **pp = &m->pend_head, *prev = NULL;
  while (*pp && (*pp)->id != id) {
    prev = *pp;
    pp = &(*pp)->next;
  }
  struct pending *p = *pp;
  if (!p)
    return NULL;
  *pp = p->next;
  if (m->pend_tail == p)
    m->pend_tail = prev;
  return p;
}

/* The outbox's lines, taken out so that new lines can go ahead of them (outbox_put_back). */
struct outbox_lines {
  struct outline *head, *tail;
  size_t bytes;
};

static struct outbox_lines outbox_take(struct module *m)
{
  struct outbox_lines l = {m->out_head, m->out_tail, m->out_bytes};
  m->out_head = m->out_tail = NULL;
  m->out_bytes = 0;
  return l;
}

static void outbox_put_back(struct module *m, struct outbox_lines l)
{
  if (!l.head)
    return;
  if (m->out_tail)
    m->out_tail->next = l.head;
  else
    m->out_head = l.head;
  m->out_tail = l.tail;
  m->out_bytes += l.bytes;
}

static int outbox_add(struct module *m, const char *data, size_t len, int is_note, json_int_t id)
{
  if (m->out_bytes + len > OUTBOX_MAX)
    return -ENOBUFS;
  struct outline *o = malloc(sizeof(*o) + len);
  if (!o)
    return -ENOMEM;
  memcpy(o->data, data, len);
  o->len = len;
  o->is_note = is_note;
  o->id = id;
  o->next = NULL;
  outbox_put_back(m, (struct outbox_lines){o, o, len});
  return 0;
}

void pirec__module_flush(struct module *m)
{
  if (m->state != M_READY || m->hold)
    return;
  while (m->out_head) {
    struct outline *o = m->out_head;
    uv_buf_t b = uv_buf_init(o->data, (unsigned)o->len);
    int err = pirec_job_write(m->job, &b, 1);
    if (err == -ENOBUFS) {
      m->writable_blocked = 1;
      return;
    }
    if (err < 0)
      return; /* -ENOTCONN/-EPIPE: the child is going; the crash path re-queues */
    m->out_head = o->next;
    if (!m->out_head)
      m->out_tail = NULL;
    m->out_bytes -= o->len;
    free(o);
  }
  m->writable_blocked = 0;
}

static void outbox_clear(struct module *m)
{
  while (m->out_head) {
    struct outline *o = m->out_head;
    m->out_head = o->next;
    free(o);
  }
  m->out_tail = NULL;
  m->out_bytes = 0;
}

int pirec__module_has_note(const struct module *m)
{
  for (const struct outline *o = m->out_head; o; o = o->next)
    if (o->is_note)
      return 1;
  return 0;
}

int pirec__module_send(struct module *m, json_t *cmd, pirec__reply_cb cb, void *user)
{
  json_int_t id = ++m->next_id;
  json_object_set_new(cmd, "id", json_integer(id));
  int is_note = strcmp(json_string_value(json_object_get(cmd, "cmd")), "note") == 0;
  size_t len = 0;
  char *line = pirec_jsonl_encode(cmd, 0, &len);
  json_decref(cmd);
  if (!line)
    return -ENOMEM;
  int err = 0;
  if (m->state == M_READY && !m->out_head && !m->writable_blocked && !m->hold) {
    uv_buf_t b = uv_buf_init(line, (unsigned)len);
    err = pirec_job_write(m->job, &b, 1);
    if (err == -ENOBUFS)
      m->writable_blocked = 1;
    if (err < 0)
      err = outbox_add(m, line, len, is_note, id);
  } else if (m->state == M_ENDED) {
    err = -ENOTCONN;
  } else {
    err = outbox_add(m, line, len, is_note, id);
  }
  if (err == 0)
    pending_push(m, id, cb, user, is_note ? line : NULL, len);
  pirec_crypt_wipe(line, len); /* a start line carries the session key */
  free(line);
  return err;
}

/* The line is sent with an empty outbox, then what waited there is put back behind it: the
 * trial's start goes out ahead of notes held while the session was starting, or written while the
 * recorder was restarting. */
int pirec__module_send_first(struct module *m, json_t *cmd, pirec__reply_cb cb, void *user)
{
  struct outbox_lines queued = outbox_take(m);
  int blocked = m->writable_blocked;
  m->writable_blocked = 0;
  m->hold = 0;
  int err = pirec__module_send(m, cmd, cb, user);
  outbox_put_back(m, queued);
  m->writable_blocked |= blocked;
  pirec__module_flush(m);
  return err;
}

static int outbox_has_id(const struct outbox_lines *l, json_int_t id)
{
  for (const struct outline *o = l->head; o; o = o->next)
    if (o->is_note && o->id == id)
      return 1;
  return 0;
}

/* The notes a dead recorder never acknowledged go to the front of the outbox, in order, so the
 * restarted recorder writes them; they stay pending (same ids) so their acknowledgements still
 * match. Notes still in the outbox were never written: only the written ones are sent again. */
static void requeue_notes(struct module *m, struct pending *notes)
{
  struct outbox_lines unsent = outbox_take(m);
  for (struct pending *p = notes; p; p = p->next)
    if (!outbox_has_id(&unsent, p->id))
      outbox_add(m, p->note_line, p->note_len, 1, p->id);
  outbox_put_back(m, unsent);
  for (struct pending *p = notes, *next; p; p = next) {
    next = p->next;
    pending_append(m, p);
  }
}

/* Every command awaiting a reply fails (its callback gets NULL: the caller's op carries on),
 * except, with requeue, the notes: see requeue_notes. */
static void module_fail_pending(struct module *m, int requeue)
{
  struct pending *p = m->pend_head, *notes = NULL, **notes_tail = &notes;
  m->pend_head = m->pend_tail = NULL;
  while (p) {
    struct pending *next = p->next;
    if (requeue && p->note_line) {
      p->next = NULL;
      *notes_tail = p;
      notes_tail = &p->next;
    } else {
      if (p->cb)
        p->cb(m, NULL, p->user);
      free(p->note_line);
      free(p);
    }
    p = next;
  }
  requeue_notes(m, notes);
  m->writable_blocked = 0;
}

/* ---- module lifecycle ---- */

#define MEASURE_MIN_NS INT64_C(3000000000) /* a measured rate needs this much recording behind it */

/* The bytes m's counters say it has written: bytes_written (camera video, notes) and bytes_video
 * (the eye tracker's scene). */
static uint64_t counted_bytes(json_t *counters)
{
  json_int_t a = json_integer_value(json_object_get(counters, "bytes_written"));
  json_int_t b = json_integer_value(json_object_get(counters, "bytes_video"));
  return (uint64_t)(a > 0 ? a : 0) + (uint64_t)(b > 0 ? b : 0);
}

/* m's measured data rate: the growth of its counters' bytes while it records. */
static void measure_rate(struct module *m, json_t *counters)
{
  struct pirec_controller *c = m->c;
  if (c->state != C_RECORDING || !m->in_trial || *m->not_recording)
    return;
  uint64_t bytes = counted_bytes(counters);
  int64_t now = pirec_clock_mono_ns();
  if (!m->rate_t0) {
    m->rate_t0 = now;
    m->rate_prev = bytes;
    m->rate_bytes = 0;
    return;
  }
  /* A counter that went down was reset (a camera counts per trial): it grew from 0 since. */
  m->rate_bytes += bytes >= m->rate_prev ? bytes - m->rate_prev : bytes;
  m->rate_prev = bytes;
  if (now - m->rate_t0 >= MEASURE_MIN_NS) {
    m->rate_bps = (uint64_t)((double)m->rate_bytes * 1e9 / (double)(now - m->rate_t0));
    m->rate_measured = 1;
  }
}

void pirec__module_on_status(struct module *m, json_t *reply, void *user)
{
  m->status_inflight = 0;
  if (!reply || strcmp(json_string_value(json_object_get(reply, "reply")), "status") != 0)
    return;
  json_decref(m->last_status);
  m->last_status = json_incref(reply);
  m->last_status_mono = pirec_clock_mono_ns();
  measure_rate(m, json_object_get(reply, "counters"));
  if (m->c->session) {
    pirec_session_module_set(m->c->session, m->name, "counters",
                             json_deep_copy(json_object_get(reply, "counters")));
    pirec_session_module_set(m->c->session, m->name, "looplag",
                             json_deep_copy(json_object_get(reply, "looplag")));
  }
}

void pirec__module_poll_status(struct module *m)
{
  if (m->state != M_READY || m->status_inflight)
    return;
  if (pirec__module_send(m, json_pack("{s:s}", "cmd", "status"), pirec__module_on_status, NULL) == 0)
    m->status_inflight = 1;
}
static void handle_ready(struct module *m, json_t *j)
{
  struct pirec_controller *c = m->c;
  m->state = M_READY;
  m->accepts_notes = m->accepts_preview = m->accepts_marks = 0;
  json_t *cmds = json_object_get(j, "commands");
  for (size_t i = 0; i < json_array_size(cmds); i++) {
    const char *cmd = json_string_value(json_array_get(cmds, i));
    m->accepts_notes |= cmd && strcmp(cmd, "note") == 0;
    m->accepts_preview |= cmd && strcmp(cmd, "preview") == 0;
    m->accepts_marks |= cmd && strcmp(cmd, "mark") == 0;
  }
  json_t *pid = json_object_get(j, "pid");
  if (json_is_integer(pid))
    m->pid = (int)json_integer_value(pid);
  pirec_log(PIREC_LOG_INFO, "recorder '%s' ready (pid %d)", m->name, m->pid);
  c->hooks.module_ready(m);
  pirec__module_flush(m);
  if (c->session)
    pirec_session_module_set(c->session, m->name, "pid", json_integer(m->pid));
}

/* A reply to one of our commands: its pending entry's callback runs (a note the recorder could
 * not save is an error of the session). */
static void handle_reply(struct module *m, json_t *j, const char *reply, json_int_t id)
{
  struct pirec_controller *c = m->c;
  struct pending *p = pending_take(m, id);
  if (!p)
    return;
  if (strcmp(reply, "error") == 0 && p->note_line && c->session) {
    char msg[600];
    snprintf(msg, sizeof msg, "note not saved: %s", json_string_value(json_object_get(j, "message")));
    pirec_session_error(c->session, m->name, msg);
  }
  if (p->cb)
    p->cb(m, j, p->user);
  free(p->note_line);
  free(p);
}

/* An event line: into events.csv (errors into the session's errors) with its fields as detail. */
static void handle_event(struct module *m, json_t *j, const char *event)
{
  struct pirec_controller *c = m->c;
  json_t *copy = json_deep_copy(j);
  json_object_del(copy, "event");
  json_object_del(copy, "module");
  char *detail = json_dumps(copy, JSON_COMPACT);
  json_decref(copy);
  if (c->session) {
    const char *message = json_string_value(json_object_get(j, "message"));
    if (strcmp(event, "error") == 0)
      pirec_session_error(c->session, m->name, message ? message : detail);
    else
      pirec_session_event(c->session, event, m->name, detail);
  }
  pirec_log(PIREC_LOG_INFO, "recorder '%s': %s %s", m->name, event, detail ? detail : "");
  free(detail);
  if (strcmp(event, "device_ready") == 0)
    c->hooks.module_device_ready(m);
}

static void handle_line(struct module *m, const char *line, size_t len)
{
  json_t *j = pirec_jsonl_parse(line, len, 0, NULL);
  if (!j || !json_is_object(j)) {
    pirec_log(PIREC_LOG_WARN, "recorder '%s': not a protocol line: %.200s", m->name, line);
    json_decref(j);
    return;
  }
  const char *reply = json_string_value(json_object_get(j, "reply"));
  const char *event = json_string_value(json_object_get(j, "event"));
  json_t *id = json_object_get(j, "id");
  if (reply && strcmp(reply, "ready") == 0) {
    handle_ready(m, j);
  } else if (reply && json_is_integer(id)) {
    handle_reply(m, j, reply, json_integer_value(id));
  } else if (reply && strcmp(reply, "error") == 0) {
    const char *msg = json_string_value(json_object_get(j, "message"));
    pirec_log(PIREC_LOG_WARN, "recorder '%s': %s", m->name, msg ? msg : "error");
  } else if (event) {
    handle_event(m, j, event);
  }
  json_decref(j);
}

/* The job frames the child's stdout into lines; the protocol's limit and its error text are
 * io/jsonl's, as at every other end. line_max is one byte over the limit, so a piece of exactly
 * line_max bytes is a line over it: it and the rest of that line (the pieces up to a shorter
 * one, which ends it) are dropped with one message. */
static void protocol_line(struct module *m, const char *line, size_t len)
{
  if (len > PIREC_JSONL_MAX_LINE) {
    if (!m->line_discarding) {
      char err[96];
      pirec_jsonl_too_long(PIREC_JSONL_MAX_LINE, err, sizeof err);
      pirec_log(PIREC_LOG_WARN, "recorder '%s': %s", m->name, err);
    }
    m->line_discarding = 1;
    return;
  }
  if (m->line_discarding) {
    m->line_discarding = 0;
    return;
  }
  handle_line(m, line, len);
}

static void on_job_line(struct pirec_job *job, int fd, const char *line, size_t len)
{
  struct module *m = pirec_job_user(job);
  if (fd == 1)
    protocol_line(m, line, len);
  else
    pirec_log(PIREC_LOG_INFO, "%s: %s", m->name, line);
}

static void on_job_drain(struct pirec_job *job, size_t outstanding)
{
  struct module *m = pirec_job_user(job);
  if (m->out_head)
    pirec__module_flush(m);
}

static void record_crash(struct module *m, int exit_code, int term_signal)
{
  struct pirec_controller *c = m->c;
  m->crashes++;
  m->crash_mono_ns = pirec_clock_mono_ns();
  snprintf(m->last_error, sizeof m->last_error, "%s %d",
           term_signal ? "killed by signal" : "exited with status", term_signal ? term_signal : exit_code);
  pirec_log(PIREC_LOG_WARN, "recorder '%s' %s", m->name, m->last_error);
  if (c->session)
    pirec_session_module_crash(c->session, m->name, exit_code, term_signal, m->crash_mono_ns);
}

static void on_job_restart(struct pirec_job *job, const struct pirec_job_result *run, uint32_t attempt,
                           uint64_t delay_ms)
{
  struct module *m = pirec_job_user(job);
  m->state = M_DOWN;
  m->pid = 0;
  m->status_inflight = 0;
  record_crash(m, run->exit_code, run->term_signal);
  module_fail_pending(m, 1);
}

static void on_job_spawn(struct pirec_job *job, int pid)
{
  struct module *m = pirec_job_user(job);
  m->state = M_SPAWNING;
  m->pid = pid;
  m->restarts++;
  m->line_discarding = 0; /* a new child starts on a fresh line */
}

static void on_job_end(struct pirec_job *job, const struct pirec_job_result *r)
{
  struct module *m = pirec_job_user(job);
  struct pirec_controller *c = m->c;
  m->state = M_ENDED;
  m->pid = 0;
  if (!m->stopping) {
    /* Not asked to end: the restart budget is spent, or it could not be spawned again. */
    record_crash(m, r->exit_code, r->term_signal);
    char msg[400];
    snprintf(msg, sizeof msg, "recorder gave up (%s after %u runs): %s", pirec_job_end_str(r->reason),
             r->runs, m->last_error);
    pirec_log(PIREC_LOG_ERROR, "recorder '%s': %s", m->name, msg);
    if (c->session)
      pirec_session_error(c->session, m->name, msg);
    c->errors++;
  } else if (r->reason != PIREC_JOB_END_STOPPED || (r->status != 0 && r->status != -1)) {
    if (r->status != 0)
      pirec_log(PIREC_LOG_WARN, "recorder '%s' ended with status %d", m->name, r->status);
  }
  module_fail_pending(m, 0);
  c->hooks.module_ended(m);
  outbox_clear(m); /* it cannot be delivered any more */
  c->hooks.settle(c);
}

static int module_spawn(struct module *m)
{
  struct pirec_controller *c = m->c;
  const char *argv[8];
  int n = 0;
  argv[n++] = m->program;
  argv[n++] = "--protocol";
  argv[n++] = "--name";
  argv[n++] = m->name;
  /* Always the snapshot, never the user's file: a recorder restarted mid-session must get the
   * settings the session started with, whatever the file holds by then. */
  if (*c->snapshot_path) {
    argv[n++] = "-c";
    argv[n++] = c->snapshot_path;
  }
  argv[n] = NULL;
  struct pirec_job_options o;
  pirec_job_options_init(&o);
  o.argv = argv;
  o.name = m->name;
  o.user = m;
  o.on_spawn = on_job_spawn;
  o.on_line = on_job_line;
  o.on_drain = on_job_drain;
  o.on_restart = on_job_restart;
  o.on_end = on_job_end;
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.line_max = PIREC_JSONL_MAX_LINE + 1;
  o.stdin_max_outstanding = 16u * 1024 * 1024;
  o.start_timeout_ms = c->opts.ready_timeout_ms;
  o.stop_term_ms = c->opts.stop_timeout_ms;
  o.stop_kill_ms = 3000;
  /* Restarted whenever it ends unasked (the jitter stays the job's default). */
  o.restart.mode = PIREC_JOB_RESTART_ALWAYS;
  o.restart.backoff_initial_ms = 100;
  o.restart.backoff_max_ms = 5000;
  o.restart.max_failures = 6;
  o.restart.window_ms = 60000;
  int err = pirec_job_new(c->loop, &o, &m->job);
  if (err < 0)
    return err;
  err = pirec_job_start(m->job);
  if (err < 0) {
    pirec_job_free(m->job);
    m->job = NULL;
    m->state = M_ENDED;
    return err;
  }
  m->state = M_SPAWNING;
  m->stopping = 0;
  struct pirec_job_stats st;
  pirec_job_stats(m->job, &st);
  m->pid = st.pid;
  return 0;
}

void pirec__modules_mark(struct pirec_controller *c, const char *kind, const char *text, size_t len,
                         int64_t mono, int64_t wall)
{
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    if (!m->accepts_marks || m->state != M_READY)
      continue;
    json_t *cmd = json_pack("{s:s,s:s,s:s%,s:I,s:I}", "cmd", "mark", "kind", kind, "text", text, len,
                            "mono_ns", (json_int_t)mono, "wall_ns", (json_int_t)wall);
    if (cmd)
      (void)pirec__module_send(m, cmd, NULL, NULL);
  }
}

void pirec__module_stop(struct module *m)
{
  if (!m->job || m->state == M_ENDED)
    return;
  m->stopping = 1;
  /* Closing stdin is the recorder's quit: it finalises its files and exits 0. */
  pirec_job_stop(m->job);
}

void pirec__module_release(struct module *m)
{
  module_fail_pending(m, 0);
  outbox_clear(m);
  json_decref(m->last_status);
  m->last_status = NULL;
  pirec_job_free(m->job);
  m->job = NULL;
}

static void add_module(struct pirec_controller *c, const char *kind, const char *name, const char *program)
{
  if (c->nmodules >= MAX_MODULES)
    return;
  struct module *m = &c->modules[c->nmodules];
  memset(m, 0, sizeof *m);
  m->c = c;
  snprintf(m->kind, sizeof m->kind, "%s", kind);
  snprintf(m->name, sizeof m->name, "%s", name);
  if (pirec__find_program(c, program, m->program, sizeof m->program) < 0) {
    pirec_log(PIREC_LOG_WARN, "module '%s' is enabled but '%s' was not found; skipping it", name, program);
    return;
  }
  c->nmodules++;
}

void pirec__modules_build(struct pirec_controller *c)
{
  c->nmodules = 0;
  if (pirec_config_get_bool(c->cfg, "notes", "enabled"))
    add_module(c, "notes", "notes", "pirec-notes");
  size_t ncam = pirec_config_instance_count(c->cfg, "camera");
  for (size_t i = 0; i < ncam; i++) {
    const char *sec = pirec_config_instance(c->cfg, "camera", i);
    if (pirec_config_get_bool(c->cfg, sec, "enabled"))
      add_module(c, "camera", sec + strlen("camera."), "pirec-camera");
  }
  if (pirec_config_get_bool(c->cfg, "eyetracker", "enabled"))
    add_module(c, "eyetracker", "eyetracker", "pirec-eyetracker");
}

void pirec__modules_spawn(struct pirec_controller *c)
{
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    int err = module_spawn(m);
    if (err < 0) {
      pirec_log(PIREC_LOG_ERROR, "cannot start recorder '%s' ('%s'): %s", m->name, m->program,
                pirec_strerror(err));
      c->errors++;
    }
  }
}
