/* Fleet glue (docs/FLEET.md): commands from the broker become ops like any other client's (source
 * "fleet"), answered on the device's ack topic; a start waits for its agreed wall-clock instant;
 * the device's status follows its state. The MQTT client itself is fleet.c. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "controller-int.h"
#include "fleet.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"
#include "pirec/log.h"

#define STALE_START_NS (24LL * 3600 * 1000000000) /* an older retained start is not joined */
#define LATE_NS        (1000LL * 1000000)         /* past its instant by more: a late join */

static void ack(struct pirec_controller *c, json_t *o)
{
  if (c->fleet.conn)
    pirec_fleet_ack(c->fleet.conn, o);
  else
    json_decref(o);
}

static void ack_error(struct pirec_controller *c, const char *id, const char *cmd, const char *message)
{
  ack(c, json_pack("{s:s,s:s,s:s,s:s}", "id", id, "cmd", cmd, "reply", "error", "message", message));
}

/* An op's or a note's reply (stolen), carrying the command's id: the device's ack. */
static void on_reply(void *who, json_t *obj)
{
  struct pirec_controller *c = who;
  json_object_set_new(obj, "wall_ns", json_integer(pirec_clock_wall_ns()));
  ack(c, obj);
}

/* A fleet start's reply: from "started" on, this device records that fleet session. */
static void on_start_reply(void *who, json_t *obj)
{
  struct pirec_controller *c = who;
  const char *r = json_string_value(json_object_get(obj, "reply"));
  if (r && strcmp(r, "started") == 0)
    memcpy(c->fleet.session, c->fleet.starting, sizeof c->fleet.session);
  c->fleet.starting[0] = '\0';
  on_reply(who, obj);
}

static void queue_op(struct pirec_controller *c, enum op_kind kind, const char *label, const char *from,
                     const char *id, json_t *fleet)
{
  struct op *op = pirec__op_queue(c, kind, label, "fleet", from);
  if (!op) {
    json_decref(fleet);
    ack_error(c, id, "start", "out of memory");
    return;
  }
  op->fleet = fleet;
  json_t *jid = json_string(id);
  pirec__op_add_waiter(op, kind == OP_START ? on_start_reply : on_reply, c, jid);
  json_decref(jid);
  pirec__op_next(c);
}

/* The agreed instant has come (or had passed when the command arrived). */
static void start_now(struct pirec_controller *c)
{
  json_t *cmd = c->fleet.pending;
  c->fleet.pending = NULL;
  int64_t now = pirec_clock_wall_ns();
  int64_t at = json_integer_value(json_object_get(cmd, "start_wall_ns"));
  const char *session = json_string_value(json_object_get(cmd, "session"));
  const char *label = json_string_value(json_object_get(cmd, "label"));
  json_t *peers = json_object_get(cmd, "peers");
  json_t *fleet =
      json_pack("{s:s,s:s,s:s,s:s,s:O,s:I,s:I,s:I}", "session", session, "group", c->fleet.s.group, "device",
                c->fleet.s.device, "command_id", json_string_value(json_object_get(cmd, "id")), "peers",
                peers ? peers : json_null(), "start_wall_ns", (json_int_t)at, "began_wall_ns",
                (json_int_t)now, "late_ns", (json_int_t)(now - at));
  snprintf(c->fleet.starting, sizeof c->fleet.starting, "%s", session);
  queue_op(c, OP_START, label && *label ? label : session, session,
           json_string_value(json_object_get(cmd, "id")), fleet);
  json_decref(cmd);
}

static void on_start_time(uv_timer_t *t)
{
  struct pirec_controller *c = container_of(t, struct pirec_controller, fleet.start_timer);
  if (c->fleet.pending)
    start_now(c);
}

/* Why this device's clock should not take part ("" when it may): unsynchronised, or an
 * estimated error beyond [fleet] max_clock_error. */
static void clock_problem(struct pirec_controller *c, char *out, size_t cap)
{
  out[0] = '\0';
  if (c->fleet.s.max_clock_error_ns <= 0)
    return;
  json_t *clk = pirec_fleet_clock_json();
  json_int_t est = json_integer_value(json_object_get(clk, "est_error_ns"));
  if (!clk || !json_is_true(json_object_get(clk, "synchronised")))
    snprintf(out, cap, "the clock is not synchronised (adjtimex)");
  else if (est > c->fleet.s.max_clock_error_ns)
    snprintf(out, cap, "the clock's estimated error %lld us exceeds [fleet] max_clock_error",
             (long long)(est / 1000));
  json_decref(clk);
}

static void fleet_start(struct pirec_controller *c, const json_t *cmd, const char *id)
{
  const char *session = json_string_value(json_object_get(cmd, "session"));
  int64_t at = json_integer_value(json_object_get(cmd, "start_wall_ns"));
  int64_t delay = at - pirec_clock_wall_ns();
  char why[300];
  if (strcmp(c->fleet.session, session) == 0 || strcmp(c->fleet.starting, session) == 0 ||
      (c->fleet.pending &&
       strcmp(json_string_value(json_object_get(c->fleet.pending, "session")), session) == 0)) {
    ack(c, json_pack("{s:s,s:s,s:s,s:s}", "id", id, "cmd", "start", "reply", "started", "message",
                     "already in this fleet session"));
    return;
  }
  if (c->shutting_down || c->state != C_IDLE || c->fleet.pending || c->ops) {
    ack_error(c, id, "start", c->state == C_RECORDING ? "already recording" : "busy");
    return;
  }
  if (delay < -STALE_START_NS) {
    ack_error(c, id, "start", "the start is more than 24 h old: not joined");
    return;
  }
  /* A retained start outlives its session when the devices were stopped one by one: join only
   * what a peer still records. */
  if (delay < -LATE_NS && !pirec_fleet_peer_records(c->fleet.conn, session)) {
    snprintf(why, sizeof why, "no device records fleet session '%s' any more: not joined", session);
    pirec_log(PIREC_LOG_INFO, "fleet: %s", why);
    ack_error(c, id, "start", why);
    return;
  }
  clock_problem(c, why, sizeof why);
  if (*why) {
    pirec_log(PIREC_LOG_WARN, "fleet: start of '%s': %s", session, why);
    if (c->fleet.s.refuse_on_clock_error) {
      ack_error(c, id, "start", why);
      return;
    }
  }
  c->fleet.pending = json_deep_copy(cmd);
  if (delay <= 0) {
    start_now(c); /* a late joiner, or a lead shorter than the network's delay */
    return;
  }
  uv_timer_start(&c->fleet.start_timer, on_start_time, (uint64_t)((delay + 999999) / 1000000), 0);
}

static void fleet_stop(struct pirec_controller *c, const char *id)
{
  if (c->fleet.pending) {
    /* Stopped before its instant: the start never happens. */
    uv_timer_stop(&c->fleet.start_timer);
    const char *pid = json_string_value(json_object_get(c->fleet.pending, "id"));
    ack_error(c, pid, "start", "cancelled by a stop before the start time");
    json_decref(c->fleet.pending);
    c->fleet.pending = NULL;
    ack(c, json_pack("{s:s,s:s,s:s}", "id", id, "cmd", "stop", "reply", "stopped"));
    return;
  }
  queue_op(c, OP_STOP, NULL, c->fleet.session, id, NULL);
}

static void on_command(struct pirec_fleet *f, const json_t *cmd, void *user)
{
  struct pirec_controller *c = user;
  (void)f;
  const char *id = json_string_value(json_object_get(cmd, "id"));
  const char *verb = json_string_value(json_object_get(cmd, "cmd"));
  pirec_log(PIREC_LOG_INFO, "fleet: command %s '%s'", verb, id);
  if (strcmp(verb, "start") == 0) {
    fleet_start(c, cmd, id);
  } else if (strcmp(verb, "stop") == 0) {
    fleet_stop(c, id);
  } else if (strcmp(verb, "trial") == 0) {
    const char *label = json_string_value(json_object_get(cmd, "label"));
    queue_op(c, OP_TRIAL, label ? label : "", c->fleet.session, id, NULL);
  } else {
    const char *text = json_string_value(json_object_get(cmd, "text"));
    char err[300];
    json_t *jid = json_string(id);
    if (pirec__take_note(c, text, strlen(text), on_reply, c, jid, err, sizeof err) < 0)
      ack_error(c, id, "note", err);
    json_decref(jid);
  }
}

int pirec__fleet_open(struct pirec_controller *c)
{
  char err[600] = "";
  int r = pirec_fleet_settings_load(c->cfg, &c->fleet.s, err, sizeof err);
  if (r < 0) {
    pirec__report(c, "pirec: %s", err);
    return r;
  }
  if (r == 0)
    return 0;
  uv_timer_init(c->loop, &c->fleet.start_timer);
  c->fleet.timer_open = 1;
  c->handles_open++;
  int e = pirec_fleet_new(c->loop, &c->fleet.s, on_command, c, &c->fleet.conn);
  if (e < 0)
    return e;
  c->handles_open++;
  pirec__fleet_state_changed(c);
  return 0;
}

void pirec__fleet_state_changed(struct pirec_controller *c)
{
  if (!c->fleet.conn)
    return;
  static const char *states[] = {"idle", "starting", "recording", "stopping"};
  if (c->state == C_IDLE && !c->ops)
    c->fleet.session[0] = '\0';
  json_t *st = json_pack("{s:s,s:s?,s:s?,s:i,s:i,s:s}", "state", states[c->state], "session_dir",
                         c->session ? pirec_session_dir(c->session) : NULL, "fleet_session",
                         *c->fleet.session    ? c->fleet.session
                         : *c->fleet.starting ? c->fleet.starting
                                              : NULL,
                         "trial", c->trial, "pid", (int)getpid(), "version", PIREC_VERSION);
  char *text = json_dumps(st, JSON_COMPACT | JSON_SORT_KEYS);
  if (text && c->fleet.last_status && strcmp(text, c->fleet.last_status) == 0) {
    free(text);
    json_decref(st);
    return;
  }
  free(c->fleet.last_status);
  c->fleet.last_status = text;
  json_t *clk = pirec_fleet_clock_json();
  if (clk)
    json_object_set_new(st, "clock_sync", clk);
  pirec_fleet_event(c->fleet.conn, json_pack("{s:s,s:s,s:I}", "event", "state", "state", states[c->state],
                                             "wall_ns", (json_int_t)pirec_clock_wall_ns()));
  pirec_fleet_set_status(c->fleet.conn, st);
}

json_t *pirec__fleet_status(struct pirec_controller *c)
{
  if (!c->fleet.conn)
    return NULL;
  json_t *o = pirec_fleet_counters(c->fleet.conn);
  json_object_set_new(o, "session", *c->fleet.session ? json_string(c->fleet.session) : json_null());
  return o;
}

static void on_conn_closed(void *user)
{
  struct pirec_controller *c = user;
  c->handles_open--;
  c->hooks.settle(c);
}

static void on_timer_closed(uv_handle_t *h)
{
  struct pirec_controller *c = container_of((uv_timer_t *)h, struct pirec_controller, fleet.start_timer);
  c->handles_open--;
  c->hooks.settle(c);
}

void pirec__fleet_close(struct pirec_controller *c)
{
  if (c->fleet.conn) {
    struct pirec_fleet *f = c->fleet.conn;
    c->fleet.conn = NULL;
    pirec_fleet_close(f, on_conn_closed, c);
  }
  if (c->fleet.timer_open) {
    c->fleet.timer_open = 0;
    uv_close((uv_handle_t *)&c->fleet.start_timer, on_timer_closed);
  }
  json_decref(c->fleet.pending);
  c->fleet.pending = NULL;
  free(c->fleet.last_status);
  c->fleet.last_status = NULL;
}
