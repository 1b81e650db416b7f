/* GPIO trigger glue. Each [gpio.NAME] section is one pirec_gpio object on this loop: triggers turn
 * edges into events.csv rows (stamped with the kernel's edge time) and session actions; outputs
 * follow the recording state (led) and trial starts (sync_pulse). A line that cannot be opened is
 * logged and left out; recording goes on without it. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "controller-int.h"
#include "pirec/clock.h"
#include "pirec/error.h"
#include "pirec/log.h"
#include "pirec/container_of.h"

static const char *gpio_action_word(enum pirec_gpio_action a)
{
  return pirec_gpio_action_name(a);
}

static int gpio_slot(struct pirec_controller *c, struct pirec_gpio *g)
{
  for (int i = 0; i < c->ngpio; i++)
    if (c->gpios[i] == g)
      return i;
  return -1;
}

/* Whether a session will be recording once the ops queued before `upto` (NULL: all of them) have
 * run. The running op's effect is already in c->state (starting, stopping). A start or stop that
 * finds the wrong state is refused, which leaves the state as this predicts. */
static int recording_after(const struct pirec_controller *c, const struct op *upto)
{
  int rec = c->state == C_STARTING || c->state == C_RECORDING;
  const struct op *op = c->ops;
  if (op && c->op_running)
    op = op->next;
  for (; op && op != upto; op = op->next) {
    switch (op->kind) {
    case OP_START:
    case OP_TRIAL: rec = 1; break;
    case OP_STOP:
    case OP_SHUTDOWN: rec = 0; break;
    case OP_TOGGLE: rec = !rec; break;
    case OP_RELOAD: break;
    }
  }
  return rec;
}

/* Which op an edge's action asks for, judged by the state the queue is heading for rather than
 * the state now: a stop pressed while a session starts stops it once it has started, a start
 * pressed while one stops starts the next, as the same commands on the socket do. 0 when it asks
 * for none (no action, a marker, a start while recording, a stop while idle). *starts: the op
 * will start a session (so the edge belongs in that session's events.csv). */
static int gpio_edge_op(struct pirec_controller *c, enum pirec_gpio_action action, enum op_kind *kind,
                        int *starts)
{
  *starts = 0;
  if (c->shutting_down)
    return 0;
  int rec = recording_after(c, NULL);
  switch (action) {
  case PIREC_GPIO_ACTION_START:
    *kind = OP_START;
    *starts = !rec;
    return !rec;
  case PIREC_GPIO_ACTION_STOP: *kind = OP_STOP; return rec;
  case PIREC_GPIO_ACTION_TOGGLE:
    *kind = OP_TOGGLE;
    *starts = !rec;
    return 1;
  case PIREC_GPIO_ACTION_TRIAL:
    *kind = OP_TRIAL;
    *starts = !rec;
    return 1;
  default: return 0;
  }
}

static int is_op_action(enum pirec_gpio_action a)
{
  return a == PIREC_GPIO_ACTION_START || a == PIREC_GPIO_ACTION_STOP || a == PIREC_GPIO_ACTION_TOGGLE ||
         a == PIREC_GPIO_ACTION_TRIAL;
}

/* An op leaves the pending set of its trigger once it runs (or is cancelled): the next edge of
 * that line queues a fresh one. */
void pirec__gpio_unpend(struct pirec_controller *c, struct op *op)
{
  if (op->gpio_slot >= 0 && c->gpio_pending[op->gpio_slot] == op)
    c->gpio_pending[op->gpio_slot] = NULL;
  op->gpio_slot = -1;
}

/* Edges that arrive while no session takes rows go to none: counted per line. */
static void edge_outside(struct pirec_controller *c, int slot, const char *module, const char *detail)
{
  if (slot >= 0)
    c->gpio_outside[slot]++;
  pirec_log(PIREC_LOG_INFO, "%s: %s (no session)", module, detail);
}

void pirec__gpio_early_discard(struct pirec_controller *c)
{
  for (int i = 0; i < c->nearly_edges; i++) {
    int slot = -1;
    for (int k = 0; k < c->ngpio; k++)
      if (strcmp(c->early_edges[i].module + strlen("gpio."), pirec_gpio_name(c->gpios[k])) == 0)
        slot = k;
    edge_outside(c, slot, c->early_edges[i].module, c->early_edges[i].detail);
  }
  for (int k = 0; k < MAX_GPIO; k++) {
    c->gpio_outside[k] += c->early_edges_lost[k];
    c->early_edges_lost[k] = 0;
  }
  c->nearly_edges = 0;
}

void pirec__gpio_early_write(struct pirec_controller *c, struct pirec_session *s)
{
  for (int i = 0; i < c->nearly_edges; i++)
    pirec_session_event_at(s, c->early_edges[i].mono, c->early_edges[i].wall, "gpio_edge",
                           c->early_edges[i].module, c->early_edges[i].detail);
  c->nearly_edges = 0;
  for (int k = 0; k < c->ngpio; k++) {
    if (!c->early_edges_lost[k])
      continue;
    char module[80], lost[96];
    snprintf(module, sizeof module, "gpio.%s", pirec_gpio_name(c->gpios[k]));
    snprintf(lost, sizeof lost, "%llu edges while the session started were not kept",
             (unsigned long long)c->early_edges_lost[k]);
    pirec_session_event(s, "gpio_edges_lost", module, lost);
    c->early_edges_lost[k] = 0;
  }
}

/* Kept for the session on its way; written first into its events.csv (on_session_started). */
static void edge_early(struct pirec_controller *c, int slot, int64_t ts, int64_t wall, const char *module,
                       const char *detail)
{
  if (c->nearly_edges < EARLY_EDGES_MAX) {
    struct early_edge *e = &c->early_edges[c->nearly_edges++];
    e->mono = ts;
    e->wall = wall;
    snprintf(e->module, sizeof e->module, "%s", module);
    snprintf(e->detail, sizeof e->detail, "%s", detail);
  } else if (slot >= 0) {
    c->early_edges_lost[slot]++;
  }
}

/* The one events.csv an edge's row goes into (docs/OPERATIONS.md, "Transitions"): the session
 * its op starts; else the session that takes rows now (recording, or stopping until its files
 * close); else the session on its way (starting, or queued to start after the one stopping);
 * else none, counted. */
static void edge_row(struct pirec_controller *c, int slot, int starts, int64_t ts, int64_t wall,
                     const char *module, const char *detail)
{
  if (starts || c->state == C_STARTING)
    edge_early(c, slot, ts, wall, module, detail);
  else if (c->session && pirec_session_takes_rows(c->session)) {
    pirec_session_event_at(c->session, ts, wall, "gpio_edge", module, detail);
    if (c->state == C_RECORDING) {
      char text[300];
      int n = snprintf(text, sizeof text, "%s %s", module, detail);
      pirec__modules_mark(c, "gpio", text, n < (int)sizeof text ? (size_t)n : sizeof text - 1, ts, wall);
    }
  } else if (recording_after(c, NULL))
    edge_early(c, slot, ts, wall, module, detail);
  else
    edge_outside(c, slot, module, detail);
}

static void on_gpio_event(struct pirec_gpio *g, const struct pirec_gpio_event *ev, void *user)
{
  struct pirec_controller *c = user;
  int64_t now_mono = pirec_clock_mono_ns(), now_wall = pirec_clock_wall_ns();
  int64_t wall = now_wall - (now_mono - ev->ts_ns);
  char module[80], detail[192];
  snprintf(module, sizeof module, "gpio.%s", pirec_gpio_name(g));
  if (ev->kind == PIREC_GPIO_EVENT_PULSE) {
    snprintf(detail, sizeof detail, "pulse %llu", (unsigned long long)ev->seqno);
    if (c->session && pirec_session_takes_rows(c->session))
      pirec_session_event_at(c->session, ev->ts_ns, wall, "gpio_pulse", module, detail);
    return;
  }
  /* At most one op per line waits in the queue: an action edge arriving while it waits is merged
   * into it (a storm of presses while the controller is busy counts as one), so a 10 kHz toggle
   * storm costs neither memory nor a session per edge. */
  int slot = gpio_slot(c, g);
  struct op *pending =
      is_op_action(ev->action) && !c->shutting_down && slot >= 0 ? c->gpio_pending[slot] : NULL;
  enum op_kind kind = OP_START;
  int starts = 0, wants = 0;
  char merged[40] = "";
  if (pending) {
    pending->merged++;
    c->gpio_merged[slot]++;
    snprintf(merged, sizeof merged, " merged %llu", (unsigned long long)pending->merged);
    /* the edge goes with the op it was folded into */
    starts = !recording_after(c, pending) && pending->kind != OP_STOP && pending->kind != OP_SHUTDOWN &&
             pending->kind != OP_RELOAD;
  } else {
    wants = gpio_edge_op(c, ev->action, &kind, &starts);
  }
  snprintf(detail, sizeof detail, "%s seq %llu lost %llu action %s latency_ns %lld%s",
           ev->rising ? "rising" : "falling", (unsigned long long)ev->seqno,
           (unsigned long long)ev->lost_before, gpio_action_word(ev->action),
           (long long)(ev->read_mono_ns - ev->ts_ns), merged);
  edge_row(c, slot, starts, ev->ts_ns, wall, module, detail);
  if (wants)
    c->hooks.gpio_submit(c, slot, kind, module);
}

static void on_gpio_error(struct pirec_gpio *g, int err, void *user)
{
  struct pirec_controller *c = user;
  char msg[300];
  snprintf(msg, sizeof msg, "gpio '%s' (%s) stopped: %s", pirec_gpio_name(g), pirec_gpio_describe(g),
           pirec_strerror(err));
  pirec_log(PIREC_LOG_ERROR, "%s", msg);
  if (c->session)
    pirec_session_error(c->session, NULL, msg);
}

/* Opens the line of section sec into c->gpios. Returns 0, or the error with why (for the log and
 * the wait list) filled. */
static int gpio_open_section(struct pirec_controller *c, const char *sec, char *why, size_t cap)
{
  struct pirec_gpio_settings gs;
  pirec_gpio_settings_default(&gs);
  gs.name = sec + strlen("gpio.");
  gs.chip = pirec_config_get_string(c->cfg, sec, "chip");
  gs.line = pirec_config_get_string(c->cfg, sec, "line");
  int output = strcmp(pirec_config_get_string(c->cfg, sec, "direction"), "output") == 0;
  int role =
      output ? pirec_gpio_role_parse(pirec_config_get_string(c->cfg, sec, "role")) : PIREC_GPIO_ROLE_TRIGGER;
  int edge = pirec_gpio_edge_parse(pirec_config_get_string(c->cfg, sec, "edge"));
  int bias = pirec_gpio_bias_parse(pirec_config_get_string(c->cfg, sec, "bias"));
  int action = pirec_gpio_action_parse(pirec_config_get_string(c->cfg, sec, "action"));
  if (role < 0 || edge < 0 || bias < 0 || action < 0) {
    snprintf(why, cap, "a setting is not understood by the gpio library");
    return -EINVAL;
  }
  gs.role = (enum pirec_gpio_role)role;
  gs.edge = (enum pirec_gpio_edge)edge;
  gs.bias = (enum pirec_gpio_bias)bias;
  gs.action = (enum pirec_gpio_action)action;
  gs.active_low = pirec_config_get_bool(c->cfg, sec, "active_low");
  gs.debounce_ns = pirec_config_get_duration(c->cfg, sec, "debounce");
  gs.min_interval_ns = pirec_config_get_duration(c->cfg, sec, "min_interval");
  gs.pulse_ns = pirec_config_get_duration(c->cfg, sec, "pulse_length");
  gs.pulse_interval_ns = pirec_config_get_duration(c->cfg, sec, "pulse_interval");
  struct pirec_gpio *g = NULL;
  int err = pirec_gpio_settings_check(&gs, why, cap);
  if (err == 0)
    err = pirec_gpio_new(c->loop, &gs, on_gpio_event, on_gpio_error, c, &g);
  else
    return err;
  if (err < 0) {
    snprintf(why, cap, "cannot use line '%s' on chip '%s': %s", gs.line, gs.chip, pirec_strerror(err));
    return err;
  }
  pirec_log(PIREC_LOG_INFO, "gpio '%s': %s", gs.name, pirec_gpio_describe(g));
  c->gpios[c->ngpio++] = g;
  return 0;
}

/* A chip that is not there (yet: a USB GPIO adapter, a driver still loading) is waited for. */
static int chip_missing(int err)
{
  return err == -ENOENT || err == -ENODEV || err == -ENXIO;
}

static void gpio_retry(uv_timer_t *t);

static void gpio_wait(struct pirec_controller *c, const char *sec, const char *why)
{
  if (c->ngpio_waiting >= MAX_GPIO)
    return;
  struct gpio_waiting *w = &c->gpio_waiting[c->ngpio_waiting++];
  snprintf(w->section, sizeof w->section, "%s", sec);
  snprintf(w->why, sizeof w->why, "waiting for the chip: %.200s", why);
  if (!uv_is_active((uv_handle_t *)&c->gpio_retry)) {
    c->gpio_retry_ms = 1000;
    uv_timer_start(&c->gpio_retry, gpio_retry, c->gpio_retry_ms, 0);
  }
}

void pirec__gpio_open_all(struct pirec_controller *c)
{
  size_t n = pirec_config_instance_count(c->cfg, "gpio");
  for (size_t i = 0; i < n && c->ngpio < MAX_GPIO; i++) {
    const char *sec = pirec_config_instance(c->cfg, "gpio", i);
    char why[300];
    int err = gpio_open_section(c, sec, why, sizeof why);
    if (err == 0)
      continue;
    pirec_log(PIREC_LOG_ERROR, "gpio '%s': %s%s", sec + strlen("gpio."), why,
              chip_missing(err) ? "; trying again until it is there" : "");
    if (chip_missing(err))
      gpio_wait(c, sec, why);
    else
      c->errors++;
  }
}

/* Tries the waiting lines again; the ones that open join the set (and the recording state). */
static void gpio_retry(uv_timer_t *t)
{
  struct pirec_controller *c = container_of(t, struct pirec_controller, gpio_retry);
  int n = c->ngpio_waiting;
  c->ngpio_waiting = 0;
  struct gpio_waiting waiting[MAX_GPIO];
  memcpy(waiting, c->gpio_waiting, sizeof waiting[0] * (size_t)n);
  for (int i = 0; i < n; i++) {
    char why[300];
    int err = c->ngpio < MAX_GPIO ? gpio_open_section(c, waiting[i].section, why, sizeof why) : -ENOSPC;
    if (err == 0) {
      if (c->session && pirec_session_dir(c->session))
        pirec_session_event(c->session, "module_recording", waiting[i].section, "the chip is there now");
      if (c->state == C_RECORDING)
        pirec_gpio_set_recording(c->gpios[c->ngpio - 1], 1);
    } else {
      c->gpio_waiting[c->ngpio_waiting++] = waiting[i];
    }
  }
  if (c->ngpio_waiting) {
    c->gpio_retry_ms = c->gpio_retry_ms * 2 > 10000 ? 10000 : c->gpio_retry_ms * 2;
    uv_timer_start(&c->gpio_retry, gpio_retry, c->gpio_retry_ms, 0);
  }
}

const char *pirec__gpio_missing(struct pirec_controller *c, const char *name, size_t len, int *configured)
{
  *configured = 0;
  for (int i = 0; i < c->ngpio_waiting; i++)
    if (strlen(c->gpio_waiting[i].section) == len && strncmp(c->gpio_waiting[i].section, name, len) == 0) {
      *configured = 1;
      return c->gpio_waiting[i].why;
    }
  for (int i = 0; i < c->ngpio; i++) {
    const char *g = pirec_gpio_name(c->gpios[i]);
    if (len > 5 && strlen(g) == len - 5 && strncmp(name, "gpio.", 5) == 0 &&
        strncmp(g, name + 5, len - 5) == 0)
      *configured = 1;
  }
  return NULL;
}

void pirec__gpio_session_started(struct pirec_controller *c)
{
  for (int i = 0; i < c->ngpio_waiting; i++) {
    struct gpio_waiting *w = &c->gpio_waiting[i];
    pirec_session_event(c->session, "module_not_recording", w->section, w->why);
    pirec_session_module_set(c->session, w->section, "not_recording",
                             json_pack("{s:i,s:s}", "trial", 1, "reason", w->why));
  }
}

void pirec__gpio_trial_started(struct pirec_controller *c)
{
  for (int i = 0; i < c->ngpio; i++)
    pirec_gpio_trial_started(c->gpios[i], NULL);
}

void pirec__gpio_set_recording(struct pirec_controller *c, int recording)
{
  for (int i = 0; i < c->ngpio; i++)
    pirec_gpio_set_recording(c->gpios[i], recording);
}

void pirec__gpio_set_led(struct pirec_controller *c, int level)
{
  for (int i = 0; i < c->ngpio; i++)
    if (pirec_gpio_role(c->gpios[i]) == PIREC_GPIO_ROLE_LED)
      pirec_gpio_set_output(c->gpios[i], level);
}

static void gpio_open_when_closed(struct pirec_controller *c)
{
  if (c->gpio_closing || !c->gpio_reopen)
    return;
  c->gpio_reopen = 0;
  if (c->shutting_down)
    return;
  pirec__gpio_open_all(c);
  /* Reloads apply between sessions, but a session may have started while the old lines closed. */
  if (c->session && c->state == C_RECORDING)
    pirec__gpio_set_recording(c, 1);
}

static void on_gpio_closed(struct pirec_gpio *g, const struct pirec_gpio_counters *final, void *user)
{
  struct pirec_controller *c = user;
  c->handles_open--;
  c->gpio_closing--;
  gpio_open_when_closed(c);
  c->hooks.settle(c);
}

void pirec__gpio_close_all(struct pirec_controller *c)
{
  c->ngpio_waiting = 0; /* a reload opens its own set; a shutdown waits for nothing */
  uv_timer_stop(&c->gpio_retry);
  /* Queued ops keep no slot: the indices are about to mean other lines. */
  for (struct op *op = c->ops; op; op = op->next)
    pirec__gpio_unpend(c, op);
  for (int i = 0; i < c->ngpio; i++) {
    c->handles_open++;
    c->gpio_closing++;
    c->gpio_merged[i] = 0;
    c->gpio_outside[i] = 0;
    c->early_edges_lost[i] = 0;
    pirec_gpio_close(c->gpios[i], on_gpio_closed, c);
  }
  c->ngpio = 0;
}

/* An accepted reload that applies (between sessions) re-reads [gpio.*]: every line is released
 * first (the kernel refuses a line still requested, EBUSY), then the new set is opened. */
void pirec__gpio_reopen_all(struct pirec_controller *c)
{
  pirec__gpio_close_all(c);
  c->gpio_reopen = 1;
  gpio_open_when_closed(c);
}

json_t *pirec__gpio_status(struct pirec_controller *c)
{
  json_t *o = json_object();
  for (int i = 0; i < c->ngpio; i++) {
    struct pirec_gpio_counters k;
    pirec_gpio_counters(c->gpios[i], &k);
    json_object_set_new(
        o, pirec_gpio_name(c->gpios[i]),
        json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:b,s:i}", "line", pirec_gpio_describe(c->gpios[i]), "edges",
                  (json_int_t)k.edges, "events", (json_int_t)k.events, "actions", (json_int_t)k.actions,
                  "rate_limited", (json_int_t)k.rate_limited, "lost", (json_int_t)k.lost, "merged",
                  (json_int_t)c->gpio_merged[i], "op_pending", c->gpio_pending[i] != NULL, "error", k.error));
    json_t *line = json_object_get(o, pirec_gpio_name(c->gpios[i]));
    /* every edge read is one of: debounced, filtered, or an event; an event's row is in one
     * events.csv unless it came outside any session */
    json_object_set_new(line, "debounced", json_integer((json_int_t)k.debounced));
    json_object_set_new(line, "filtered", json_integer((json_int_t)k.filtered));
    json_object_set_new(line, "outside_session", json_integer((json_int_t)c->gpio_outside[i]));
    json_object_set_new(line, "pulses_merged", json_integer((json_int_t)k.pulses_merged));
  }
  for (int i = 0; i < c->ngpio_waiting; i++)
    json_object_set_new(o, c->gpio_waiting[i].section + strlen("gpio."),
                        json_pack("{s:s,s:s}", "state", "waiting", "reason", c->gpio_waiting[i].why));
  return o;
}
