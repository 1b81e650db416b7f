/* What the controller tells the world, and how it ends: the status reply, sd_notify, the periodic
 * timers, signals, and the shutdown that waits for every child and handle. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "controller-int.h"
#include "pirec/clock.h"
#include "pirec/log.h"
#ifdef PIREC_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

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
  pirec__timers_update(c);
  if (strcmp(buf, c->last_status_text) == 0)
    return;
  memcpy(c->last_status_text, buf, sizeof buf);
  pirec__sdnotify(buf);
}

/* Work the periodic timers serve: a session (recorder statuses, session.json every 5 s, loop lag)
 * or a connected client (who may ask for status, or stop reading its replies). */
static int has_session(const struct pirec_controller *c)
{
  return c->state != C_IDLE || c->session != NULL;
}

static int has_work(const struct pirec_controller *c)
{
  return has_session(c) || c->nclients > 0 || c->ops != NULL;
}

static void on_status_timer(uv_timer_t *t);
static void on_demo_note(uv_timer_t *t);

/* An idle controller with nobody connected wakes for nothing: the status poll parks itself at its
 * next tick and is started again here, the loop-lag ticks and the demo's scripted notes run only
 * during a session. Called on every state change and new client. */
void pirec__timers_update(struct pirec_controller *c)
{
  if (c->lag_open)
    pirec_looplag_set_ticking(&c->lag, has_session(c));
  if (has_work(c) && !c->shutting_down && !uv_is_active((uv_handle_t *)&c->status_timer)) {
    /* Unparked: ask the recorders now, so a client that asks for status and goes (pirec status)
     * finds fresh counters on its next call instead of the ones from before the quiet spell. */
    for (int i = 0; i < c->nmodules; i++)
      pirec__module_poll_status(&c->modules[i]);
    uv_timer_start(&c->status_timer, on_status_timer, STATUS_POLL_MS, STATUS_POLL_MS);
  }
  if (c->demo && c->state == C_RECORDING && !c->shutting_down && !uv_is_active((uv_handle_t *)&c->demo_timer))
    uv_timer_start(&c->demo_timer, on_demo_note, DEMO_NOTE_MS, DEMO_NOTE_MS);
  else if (c->demo && c->state != C_RECORDING)
    uv_timer_stop(&c->demo_timer);
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
    if (c->session && *m->not_recording)
      json_object_set_new(mo, "not_recording", json_string(m->not_recording));
    int measured;
    json_object_set_new(mo, "rate_bytes_per_s",
                        json_integer((json_int_t)pirec__disk_module_rate(m, &measured)));
    json_object_set_new(mo, "rate_source", json_string(measured ? "measured" : "configured"));
    json_object_set_new(mods, m->name, mo);
  }
  json_object_set_new(o, "modules", mods);
  json_object_set_new(o, "gpio", pirec__gpio_status(c));
  json_object_set_new(o, "storage", pirec__disk_status(c));
  json_object_set_new(o, "remux", pirec__remux_status(c));
  json_t *fleet = pirec__fleet_status(c);
  if (fleet)
    json_object_set_new(o, "fleet", fleet);
  if (c->lag_open) {
    json_object_set_new(o, "looplag", pirec_looplag_json(&c->lag));
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
  if (!has_work(c)) {
    uv_timer_stop(t); /* parked until pirec__timers_update */
    return;
  }
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
  (void)pirec__take_note(c, text, strlen(text), NULL, NULL, NULL, err, sizeof err);
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
/* The shutdown's last step, once nothing runs any more: every handle but op_timer closes (that one
 * goes last, when the owner closes the controller). */
static void close_handles(struct pirec_controller *c)
{
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
    pirec__unlink_later(c, c->socket_path);
  }
  for (int i = 0; i < c->sig_open; i++)
    close_handle(c, (uv_handle_t *)&c->sig[i]);
  pirec__gpio_close_all(c);
  close_handle(c, (uv_handle_t *)&c->status_timer);
  close_handle(c, (uv_handle_t *)&c->watchdog_timer);
  close_handle(c, (uv_handle_t *)&c->demo_timer);
  close_handle(c, (uv_handle_t *)&c->gpio_retry);
  pirec__fleet_close(c);
  pirec__disk_close(c, on_handle_closed);
  close_handle(c, (uv_handle_t *)&c->idle);
  if (c->lag_open) {
    c->lag.data = c;
    pirec_looplag_close(&c->lag, on_lag_closed);
    c->lag_open = 0;
  }
}

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
  if (!c->shutting_down || c->session || c->ops || c->remuxes || c->snapshot_busy || pirec__disk_busy(c))
    return;
  if (!c->shutdown_done)
    close_handles(c);
  /* Only op_timer is left: the controller may go, if its owner asked (pirec_controller_close). */
  if (c->closing && c->handles_open == 1)
    c->hooks.closed(c);
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
  if (pirec_looplag_init(c->loop, &c->lag, 0, 0, NULL) == 0) {
    c->handles_open++;
    c->lag_open = 1;
    pirec_looplag_set_ticking(&c->lag, 0); /* until a session starts (pirec__timers_update) */
    pirec_looplag_start(&c->lag);
  }
  pirec__timers_update(c);
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
  pirec__disk_start(c);
}
