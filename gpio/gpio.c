/* GPIO triggers and outputs: everything above the line. A backend (gpio-v1.c, gpio-v2.c,
 * gpio-pipe.c) only requests, reads and drives the line; this file turns raw edges into events
 * and actions the same way for all of them, which is what lets the pipe backend test it. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "gpio-internal.h"
#include "pirec/clock.h"
#include "pirec/gpio.h"

/* Edges read per backend call; PIREC_GPIO_MAX_EVENTS_PER_POLL bounds a poll callback. */
#define READ_BATCH 16

struct pirec_gpio {
  uv_loop_t *loop;
  uv_poll_t poll;
  uv_timer_t debounce_timer;
  uv_timer_t pulse_timer;
  uv_timer_t period_timer; /* sync: periodic pulses while recording */
  int handles_open;
  int polling;
  int closing;

  /* settings (copied; immutable after new) */
  struct pirec_gpio_settings s;
  char name[64];
  char chip[256];
  char line[64];

  struct pirec__gpio_backend b;
  pirec_gpio_event_cb on_event;
  pirec_gpio_error_cb on_error;
  void *user;
  pirec_gpio_close_cb close_cb;
  void *close_user;

  /* runtime state */
  int64_t read_mono_ns;   /* when the current batch was read */
  uint64_t last_seqno;    /* last seqno from the backend, 0 none yet */
  uint64_t counted_seqno; /* our own count when the backend has none */
  int last_dir;           /* direction of the last edge read, -1 none */
  uint64_t pending_lost;  /* lost edges not yet attached to a delivered event */
  int sw_debounce;
  int stable;  /* debounced level, -1 unknown */
  int pending; /* level waiting to become stable, -1 none */
  struct pirec__gpio_edge pending_edge;
  int have_action;
  int64_t last_action_ts;
  uint64_t pulses;

  struct pirec_gpio_counters c; /* written on the loop thread with relaxed atomics */
};

#define CNT_ADD(g, field, n) __atomic_fetch_add(&(g)->c.field, (n), __ATOMIC_RELAXED)
#define CNT_SET(g, field, v) __atomic_store_n(&(g)->c.field, (v), __ATOMIC_RELAXED)
#define CNT_GET(g, field)    __atomic_load_n(&(g)->c.field, __ATOMIC_RELAXED)

/* ------------------------------------------------------------------ names */

static const char *const role_names[] = {"trigger", "led", "sync"};
static const char *const edge_names[] = {"", "rising", "falling", "both"};
static const char *const bias_names[] = {"as-is", "disabled", "pull-up", "pull-down"};
static const char *const action_names[] = {"none", "start", "stop", "toggle", "trial", "marker"};

static int parse_in(const char *s, const char *const *names, int first, int n)
{
  if (s == NULL)
    return -EINVAL;
  for (int i = first; i < n; i++)
    if (strcasecmp(s, names[i]) == 0)
      return i;
  return -EINVAL;
}

int pirec_gpio_role_parse(const char *s)
{
  /* config/schema.c spells the sync role "sync_pulse" */
  if (s != NULL && strcasecmp(s, "sync_pulse") == 0)
    return PIREC_GPIO_ROLE_SYNC;
  return parse_in(s, role_names, 0, 3);
}
int pirec_gpio_edge_parse(const char *s)
{
  return parse_in(s, edge_names, 1, 4);
}
int pirec_gpio_bias_parse(const char *s)
{
  /* "as_is"/"pull_up" spellings are accepted too: config files use both */
  if (s != NULL) {
    char buf[16];
    size_t n = strlen(s);
    if (n < sizeof(buf)) {
      for (size_t i = 0; i <= n; i++)
        buf[i] = s[i] == '_' ? '-' : s[i];
      return parse_in(buf, bias_names, 0, 4);
    }
  }
  return -EINVAL;
}
int pirec_gpio_action_parse(const char *s)
{
  return parse_in(s, action_names, 1, 6);
}

const char *pirec_gpio_role_name(enum pirec_gpio_role r)
{
  return (unsigned)r < 3 ? role_names[r] : "?";
}
const char *pirec_gpio_edge_name(enum pirec_gpio_edge e)
{
  return (unsigned)e - 1 < 3 ? edge_names[e] : "?";
}
const char *pirec_gpio_bias_name(enum pirec_gpio_bias b)
{
  return (unsigned)b < 4 ? bias_names[b] : "?";
}
const char *pirec_gpio_action_name(enum pirec_gpio_action a)
{
  return (unsigned)a < 6 ? action_names[a] : "?";
}

const char *pirec_gpio_backend(void)
{
  return pirec__gpio_libgpiod_version();
}

/* ------------------------------------------------------------------ settings */

void pirec_gpio_settings_default(struct pirec_gpio_settings *s)
{
  memset(s, 0, sizeof(*s));
  s->chip = "auto";
  s->role = PIREC_GPIO_ROLE_TRIGGER;
  s->edge = PIREC_GPIO_EDGE_RISING;
  s->bias = PIREC_GPIO_BIAS_AS_IS;
  s->action = PIREC_GPIO_ACTION_MARKER;
  s->pulse_ns = 10 * 1000 * 1000;
}

static int fail(char *err, size_t errlen, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t errlen, const char *name, const char *fmt, ...)
{
  if (err != NULL && errlen > 0) {
    char what[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    snprintf(err, errlen, "gpio.%s: %s", name ? name : "?", what);
  }
  return -EINVAL;
}

/* Which line on which chip: the name or offset, and a chip to look an offset up on. */
static int check_line(const struct pirec_gpio_settings *s, char *err, size_t errlen)
{
  const char *n = s->name;
  if (s->line == NULL || s->line[0] == '\0')
    return fail(err, errlen, n, "line: missing (expected a line name such as GPIO17 or an offset)");
  if (strlen(s->line) >= 64)
    return fail(err, errlen, n, "line: '%s' is too long", s->line);
  if (s->chip != NULL && strlen(s->chip) >= 256)
    return fail(err, errlen, n, "chip: '%s' is too long", s->chip);
  int is_auto = s->chip == NULL || s->chip[0] == '\0' || strcmp(s->chip, "auto") == 0;
  if (is_auto && pirec__gpio_parse_offset(s->line) >= 0)
    return fail(err, errlen, n, "line: offset '%s' needs a chip (chip = auto finds lines by name)", s->line);
  return 0;
}

/* The enumerations: each in its range, and an action a trigger can take. */
static int check_words(const struct pirec_gpio_settings *s, char *err, size_t errlen)
{
  const char *n = s->name;
  if (s->edge < PIREC_GPIO_EDGE_RISING || s->edge > PIREC_GPIO_EDGE_BOTH)
    return fail(err, errlen, n, "edge: invalid value %d (expected rising, falling or both)", (int)s->edge);
  if ((unsigned)s->bias > PIREC_GPIO_BIAS_PULL_DOWN)
    return fail(err, errlen, n, "bias: invalid value %d", (int)s->bias);
  if ((unsigned)s->action > PIREC_GPIO_ACTION_MARKER ||
      (s->role == PIREC_GPIO_ROLE_TRIGGER && s->action == PIREC_GPIO_ACTION_NONE))
    return fail(err, errlen, n, "action: invalid value %d (expected start, stop, toggle, trial or marker)",
                (int)s->action);
  return 0;
}

/* The durations: debounce and rate limit, and a sync output's pulse and period. */
static int check_times(const struct pirec_gpio_settings *s, char *err, size_t errlen)
{
  const char *n = s->name;
  /* the kernel's debounce period is a u32 of microseconds */
  if (s->debounce_ns < 0 || s->debounce_ns > (int64_t)UINT32_MAX * 1000)
    return fail(err, errlen, n, "debounce: %lld ns is out of range (0 .. 4294 s)", (long long)s->debounce_ns);
  if (s->min_interval_ns < 0)
    return fail(err, errlen, n, "min_interval: %lld ns is negative", (long long)s->min_interval_ns);
  if (s->role != PIREC_GPIO_ROLE_SYNC)
    return 0;
  if (s->pulse_ns <= 0 || s->pulse_ns > (int64_t)60 * 1000 * 1000 * 1000)
    return fail(err, errlen, n, "pulse: %lld ns is out of range (1 ns .. 60 s)", (long long)s->pulse_ns);
  if (s->pulse_interval_ns != 0 && s->pulse_interval_ns <= s->pulse_ns + 2 * 1000 * 1000)
    return fail(err, errlen, n,
                "pulse_interval: %lld ns leaves no gap after a %lld ns pulse (0 = trial starts only)",
                (long long)s->pulse_interval_ns, (long long)s->pulse_ns);
  return 0;
}

int pirec_gpio_settings_check(const struct pirec_gpio_settings *s, char *err, size_t errlen)
{
  if (s == NULL)
    return fail(err, errlen, NULL, "no settings");
  if ((unsigned)s->role > PIREC_GPIO_ROLE_SYNC)
    return fail(err, errlen, s->name, "role: invalid value %d (expected trigger, led or sync)", (int)s->role);
  int r = check_line(s, err, errlen);
  if (r == 0)
    r = check_words(s, err, errlen);
  if (r == 0)
    r = check_times(s, err, errlen);
  return r;
}

/* ------------------------------------------------------------------ lifecycle */

static void poll_cb(uv_poll_t *h, int status, int events);

static void handle_closed(uv_handle_t *h)
{
  struct pirec_gpio *g = h->data;
  if (--g->handles_open > 0)
    return;
  /* libuv no longer references the fd: only now may the backend close it */
  g->b.ops->release(&g->b);
  struct pirec_gpio_counters final;
  pirec_gpio_counters(g, &final);
  if (g->close_cb != NULL)
    g->close_cb(g, &final, g->close_user);
  free(g);
}

static void copy_str(char *dst, size_t n, const char *src, const char *dflt)
{
  snprintf(dst, n, "%s", src != NULL && src[0] != '\0' ? src : dflt);
}

static int create(uv_loop_t *loop, const struct pirec_gpio_settings *s, int pipe_fd,
                  pirec_gpio_event_cb on_event, pirec_gpio_error_cb on_error, void *user,
                  struct pirec_gpio **out)
{
  if (out != NULL)
    *out = NULL;
  if (loop == NULL || out == NULL || pirec_gpio_settings_check(s, NULL, 0) < 0) {
    if (pipe_fd >= 0)
      close(pipe_fd);
    return -EINVAL;
  }
  struct pirec_gpio *g = calloc(1, sizeof(*g));
  if (g == NULL) {
    if (pipe_fd >= 0)
      close(pipe_fd);
    return -ENOMEM;
  }
  g->loop = loop;
  g->s = *s;
  copy_str(g->name, sizeof(g->name), s->name, "gpio");
  copy_str(g->chip, sizeof(g->chip), s->chip, "auto");
  copy_str(g->line, sizeof(g->line), s->line, "");
  g->s.name = g->name;
  g->s.chip = g->chip;
  g->s.line = g->line;
  g->on_event = on_event;
  g->on_error = on_error;
  g->user = user;
  g->b.fd = -1;
  g->b.initial = -1;
  g->b.active_low = s->active_low != 0;
  g->last_dir = -1;
  g->stable = -1;
  g->pending = -1;

  int rc;
  if (pipe_fd >= 0) {
    g->b.ops = &pirec__gpio_pipe_ops;
    rc = pirec__gpio_pipe_attach(&g->b, pipe_fd);
    if (rc == 0)
      rc = g->b.ops->open(&g->b, &g->s);
  } else if (strncmp(g->chip, "pipe:", 5) == 0) {
    g->b.ops = &pirec__gpio_pipe_ops;
    rc = g->b.ops->open(&g->b, &g->s);
  } else {
    g->b.ops = &pirec__gpio_libgpiod_ops;
    rc = g->b.ops->open(&g->b, &g->s);
  }
  if (rc < 0) {
    free(g);
    return rc;
  }
  g->sw_debounce = g->s.debounce_ns > 0 && !g->b.kernel_debounce;
  g->stable = g->b.initial;
  CNT_SET(g, output_value, 0);

  uv_timer_init(loop, &g->debounce_timer);
  uv_timer_init(loop, &g->pulse_timer);
  uv_timer_init(loop, &g->period_timer);
  g->debounce_timer.data = g;
  g->pulse_timer.data = g;
  g->period_timer.data = g;
  g->handles_open = 3;
  if (g->s.role == PIREC_GPIO_ROLE_TRIGGER) {
    rc = uv_poll_init(loop, &g->poll, g->b.fd);
    if (rc == 0) {
      g->poll.data = g;
      g->handles_open++;
      rc = uv_poll_start(&g->poll, UV_READABLE, poll_cb);
      g->polling = rc == 0;
    }
    if (rc < 0) {
      /* undo: handles must be closed before the memory goes; nothing reaches the user */
      g->closing = 1;
      uv_close((uv_handle_t *)&g->debounce_timer, handle_closed);
      uv_close((uv_handle_t *)&g->pulse_timer, handle_closed);
      uv_close((uv_handle_t *)&g->period_timer, handle_closed);
      if (g->handles_open == 4)
        uv_close((uv_handle_t *)&g->poll, handle_closed);
      return rc;
    }
  }
  *out = g;
  return 0;
}

int pirec_gpio_new(uv_loop_t *loop, const struct pirec_gpio_settings *s, pirec_gpio_event_cb on_event,
                   pirec_gpio_error_cb on_error, void *user, struct pirec_gpio **out)
{
  return create(loop, s, -1, on_event, on_error, user, out);
}

int pirec_gpio_new_pipe(uv_loop_t *loop, const struct pirec_gpio_settings *s, int fd,
                        pirec_gpio_event_cb on_event, pirec_gpio_error_cb on_error, void *user,
                        struct pirec_gpio **out)
{
  if (fd < 0) {
    if (out != NULL)
      *out = NULL;
    return -EBADF;
  }
  return create(loop, s, fd, on_event, on_error, user, out);
}

void pirec_gpio_close(struct pirec_gpio *g, pirec_gpio_close_cb cb, void *user)
{
  if (g == NULL || g->closing)
    return;
  g->closing = 1;
  g->close_cb = cb;
  g->close_user = user;
  if (g->s.role != PIREC_GPIO_ROLE_TRIGGER && CNT_GET(g, output_value) != 0)
    pirec_gpio_set_output(g, 0);
  uv_close((uv_handle_t *)&g->debounce_timer, handle_closed);
  uv_close((uv_handle_t *)&g->pulse_timer, handle_closed);
  uv_close((uv_handle_t *)&g->period_timer, handle_closed);
  if (g->s.role == PIREC_GPIO_ROLE_TRIGGER)
    uv_close((uv_handle_t *)&g->poll, handle_closed);
}

enum pirec_gpio_role pirec_gpio_role(const struct pirec_gpio *g)
{
  return g->s.role;
}
const char *pirec_gpio_name(const struct pirec_gpio *g)
{
  return g->name;
}
const char *pirec_gpio_describe(const struct pirec_gpio *g)
{
  return g->b.describe;
}

void pirec_gpio_counters(const struct pirec_gpio *g, struct pirec_gpio_counters *out)
{
  out->edges = CNT_GET(g, edges);
  out->events = CNT_GET(g, events);
  out->actions = CNT_GET(g, actions);
  out->rate_limited = CNT_GET(g, rate_limited);
  out->debounced = CNT_GET(g, debounced);
  out->filtered = CNT_GET(g, filtered);
  out->lost = CNT_GET(g, lost);
  out->polls = CNT_GET(g, polls);
  out->max_batch = CNT_GET(g, max_batch);
  out->output_sets = CNT_GET(g, output_sets);
  out->pulses_merged = CNT_GET(g, pulses_merged);
  out->output_value = CNT_GET(g, output_value);
  out->error = CNT_GET(g, error);
}

/* ------------------------------------------------------------------ input path */

/* A debounced (or undebounced) edge: direction filter, rate limit, callback. */
static void deliver(struct pirec_gpio *g, const struct pirec__gpio_edge *e)
{
  unsigned want = (unsigned)g->s.edge;
  if (!(want & (e->rising ? PIREC_GPIO_EDGE_RISING : PIREC_GPIO_EDGE_FALLING))) {
    CNT_ADD(g, filtered, 1);
    return;
  }
  struct pirec_gpio_event ev = {
      .ts_ns = e->ts_ns,
      .read_mono_ns = g->read_mono_ns,
      .seqno = e->seqno,
      .lost_before = g->pending_lost,
      .rising = e->rising,
      .action = g->s.action,
  };
  g->pending_lost = 0;
  /* Kernel time, not reading time: a burst read late is still rate-limited by when it happened. */
  if (g->have_action && e->ts_ns - g->last_action_ts < g->s.min_interval_ns) {
    ev.action = PIREC_GPIO_ACTION_NONE;
    CNT_ADD(g, rate_limited, 1);
  } else {
    g->have_action = 1;
    g->last_action_ts = e->ts_ns;
    CNT_ADD(g, actions, 1);
  }
  CNT_ADD(g, events, 1);
  if (g->on_event != NULL)
    g->on_event(g, &ev, g->user);
}

static void debounce_timer_cb(uv_timer_t *t);

static void arm_debounce(struct pirec_gpio *g)
{
  int64_t due = g->pending_edge.ts_ns + g->s.debounce_ns - pirec_clock_mono_ns();
  uint64_t ms = due <= 0 ? 0 : (uint64_t)((due + 999999) / 1000000);
  /* early firing is harmless (the timer re-checks against the clock and re-arms) */
  uv_timer_start(&g->debounce_timer, debounce_timer_cb, ms, 0);
}

/* Commits the pending level if it has been stable for the debounce period as of time now. */
static void settle(struct pirec_gpio *g, int64_t now)
{
  if (g->pending < 0 || now - g->pending_edge.ts_ns < g->s.debounce_ns)
    return;
  struct pirec__gpio_edge e = g->pending_edge;
  g->stable = g->pending;
  g->pending = -1;
  uv_timer_stop(&g->debounce_timer);
  deliver(g, &e);
}

/* Software debounce, as the kernel does it on v2: a new level is reported only after it has held
 * for debounce_ns; a glitch that returns to the stable level before then disappears. The decision
 * uses the kernel timestamps, so a batch read late is judged by when its edges happened. */
static void debounce(struct pirec_gpio *g, const struct pirec__gpio_edge *e)
{
  settle(g, e->ts_ns);
  if (g->closing)
    return;
  if (e->rising == g->stable) {
    if (g->pending >= 0) {
      /* the glitch returned to the stable level: both of its edges go */
      g->pending = -1;
      uv_timer_stop(&g->debounce_timer);
      CNT_ADD(g, debounced, 2);
    } else {
      /* same level again with nothing pending: only possible after a lost edge */
      CNT_ADD(g, debounced, 1);
    }
    return;
  }
  if (g->pending >= 0)
    CNT_ADD(g, debounced, 1); /* replaced (after a lost edge, or from an unknown start level) */
  g->pending = e->rising;
  g->pending_edge = *e;
  arm_debounce(g);
}

static void process(struct pirec_gpio *g, struct pirec__gpio_edge *e)
{
  CNT_ADD(g, edges, 1);
  uint64_t lost = 0;
  if (e->seqno != 0) {
    if (g->last_seqno != 0 && e->seqno > g->last_seqno + 1)
      lost = e->seqno - g->last_seqno - 1;
    else if (g->last_seqno == 0 && e->seqno > 1)
      lost = e->seqno - 1; /* the first edges overflowed before we read any */
    g->last_seqno = e->seqno;
  } else {
    e->seqno = ++g->counted_seqno;
    /* without sequence numbers: the same direction twice means at least one edge went missing */
    if (g->b.reports_both && g->last_dir == e->rising)
      lost = 1;
  }
  g->last_dir = e->rising;
  if (lost > 0) {
    CNT_ADD(g, lost, lost);
    g->pending_lost += lost;
  }
  if (g->sw_debounce)
    debounce(g, e);
  else
    deliver(g, e);
}

static void stop_on_error(struct pirec_gpio *g, int err)
{
  if (g->polling) {
    uv_poll_stop(&g->poll);
    g->polling = 0;
  }
  CNT_SET(g, error, err);
  if (g->on_error != NULL)
    g->on_error(g, err, g->user);
}

/* Reads and handles at most PIREC_GPIO_MAX_EVENTS_PER_POLL edges, so that a storm leaves the loop
 * free to run everything else between two calls (uv_poll is level-triggered: the rest of the
 * queue makes the next iteration call us again). Returns 1 if it stopped at that bound. */
static int drain(struct pirec_gpio *g)
{
  struct pirec__gpio_edge buf[READ_BATCH];
  uint64_t handled = 0;
  while (!g->closing && g->polling && handled < PIREC_GPIO_MAX_EVENTS_PER_POLL) {
    int max = READ_BATCH;
    if (PIREC_GPIO_MAX_EVENTS_PER_POLL - handled < (uint64_t)max)
      max = (int)(PIREC_GPIO_MAX_EVENTS_PER_POLL - handled);
    int n = g->b.ops->read(&g->b, buf, max);
    if (n == -EAGAIN || n == 0)
      break;
    if (n < 0) {
      stop_on_error(g, n);
      break;
    }
    g->read_mono_ns = pirec_clock_mono_ns();
    for (int i = 0; i < n && !g->closing; i++)
      process(g, &buf[i]);
    handled += (uint64_t)n;
  }
  if (handled > 0) {
    CNT_ADD(g, polls, 1);
    if (handled > CNT_GET(g, max_batch))
      CNT_SET(g, max_batch, handled);
  }
  return handled >= PIREC_GPIO_MAX_EVENTS_PER_POLL; /* more may be queued */
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
  struct pirec_gpio *g = h->data;
  if (g->closing)
    return;
  if (status < 0) {
    stop_on_error(g, status);
    return;
  }
  drain(g);
}

static void debounce_timer_cb(uv_timer_t *t)
{
  struct pirec_gpio *g = t->data;
  if (g->closing)
    return;
  /* Edges may be queued that cancel the pending level: read them before deciding, and if the
   * queue holds more than one callback may take, decide on a later iteration. */
  int more = g->polling ? drain(g) : 0;
  if (g->closing || g->pending < 0)
    return;
  if (more) {
    uv_timer_start(&g->debounce_timer, debounce_timer_cb, 0, 0);
    return;
  }
  int64_t now = pirec_clock_mono_ns();
  if (now - g->pending_edge.ts_ns >= g->s.debounce_ns)
    settle(g, now);
  else
    arm_debounce(g);
}

/* ------------------------------------------------------------------ outputs */

int pirec_gpio_set_output(struct pirec_gpio *g, int value)
{
  if (g->s.role == PIREC_GPIO_ROLE_TRIGGER)
    return -EINVAL;
  value = value != 0;
  int rc = g->b.ops->set(&g->b, value);
  if (rc < 0)
    return rc;
  if (CNT_GET(g, output_value) != value) {
    CNT_SET(g, output_value, value);
    CNT_ADD(g, output_sets, 1);
  }
  return 0;
}

static void pulse_end(uv_timer_t *t)
{
  struct pirec_gpio *g = t->data;
  if (!g->closing)
    pirec_gpio_set_output(g, 0);
}

static int pulse(struct pirec_gpio *g, int64_t *pulse_mono_ns)
{
  /* A pulse asked for while the line is still high (recording start and trial 1's, or a periodic
   * one meeting a trial start) is the same physical pulse: it is lengthened, not reported again,
   * so events.csv has exactly one row per pulse a device on the line can count. */
  int merge = CNT_GET(g, output_value) == 1 && uv_is_active((uv_handle_t *)&g->pulse_timer);
  int rc = merge ? 0 : pirec_gpio_set_output(g, 1);
  if (rc < 0)
    return rc;
  int64_t now = pirec_clock_mono_ns();
  if (pulse_mono_ns != NULL)
    *pulse_mono_ns = now;
  /* libuv timers count whole milliseconds of a loop time truncated to the millisecond: one more
   * makes the pulse at least pulse_ns long, and a fresh loop time keeps a stale one from
   * shortening it */
  uint64_t ms = (uint64_t)((g->s.pulse_ns + 999999) / 1000000) + 1;
  uv_update_time(g->loop);
  uv_timer_start(&g->pulse_timer, pulse_end, ms, 0);
  if (merge) {
    CNT_ADD(g, pulses_merged, 1);
    return 0;
  }
  struct pirec_gpio_event ev = {.ts_ns = now,
                                .read_mono_ns = now,
                                .seqno = ++g->pulses,
                                .rising = 1,
                                .action = PIREC_GPIO_ACTION_NONE,
                                .kind = PIREC_GPIO_EVENT_PULSE};
  CNT_ADD(g, events, 1);
  if (g->on_event != NULL)
    g->on_event(g, &ev, g->user);
  return 0;
}

static void period_tick(uv_timer_t *t)
{
  struct pirec_gpio *g = t->data;
  if (!g->closing)
    pulse(g, NULL);
}

int pirec_gpio_set_recording(struct pirec_gpio *g, int recording)
{
  if (g->closing)
    return 0;
  if (g->s.role == PIREC_GPIO_ROLE_LED)
    return pirec_gpio_set_output(g, recording);
  if (g->s.role != PIREC_GPIO_ROLE_SYNC || g->s.pulse_interval_ns <= 0)
    return 0;
  if (!recording) {
    uv_timer_stop(&g->period_timer);
    return 0;
  }
  if (uv_is_active((uv_handle_t *)&g->period_timer))
    return 0;
  int rc = pulse(g, NULL);
  /* the period is kept in whole milliseconds; drift against the kernel clock shows in events.csv */
  uint64_t ms = (uint64_t)((g->s.pulse_interval_ns + 500000) / 1000000);
  uv_timer_start(&g->period_timer, period_tick, ms, ms);
  return rc;
}

int pirec_gpio_trial_started(struct pirec_gpio *g, int64_t *pulse_mono_ns)
{
  if (g->s.role != PIREC_GPIO_ROLE_SYNC || g->closing)
    return 0;
  return pulse(g, pulse_mono_ns);
}
