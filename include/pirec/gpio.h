#ifndef PIREC_GPIO_H
#define PIREC_GPIO_H

/* GPIO triggers and outputs: one object per [gpio.NAME] config section.
 *
 * A trigger (role "trigger") requests one input line for edge events and watches the line's fd
 * with uv_poll on the caller's loop. Each poll callback reads the pending events in batches and
 * handles at most PIREC_GPIO_MAX_EVENTS_PER_POLL of them before returning to the loop, so an edge
 * storm cannot starve timers, sinks or the control socket: the rest wait in the kernel's queue
 * (v2: 256 edges, requested; v1: the kernel's fixed 16; when full, v2 drops the oldest and v1 the
 * newest: see lost edges below) until the next loop iteration.
 *
 * Every edge that survives the edge filter and debouncing is passed to the event callback with the
 * kernel's timestamp (CLOCK_MONOTONIC, taken in the interrupt handler; not the time of reading), the
 * line's sequence number and the number of edges lost before it. The configured action is attached
 * to an edge only if at least min_interval_ns (kernel time) has passed since the last edge that
 * carried an action; otherwise the edge carries PIREC_GPIO_ACTION_NONE and counts as rate_limited.
 * So a 10 kHz storm is logged (if the caller wants to) but flips sessions at most once per interval.
 *
 * An output (role "led" or "sync") requests one output line, initially inactive. The controller
 * calls pirec_gpio_set_recording() and pirec_gpio_trial_started() on every gpio object whatever its
 * role; each object reacts only to what its role says:
 *   led:  active while recording (set_recording(1) .. set_recording(0));
 *   sync: a pulse at each trial start and, if pulse_interval_ns > 0, every pulse_interval_ns while
 *         recording (the first one when recording starts). A pulse is at least pulse_ns long (a
 *         libuv timer ends it: rounded up to whole milliseconds plus one, plus whatever else the
 *         loop is doing then). Each pulse is reported to the event callback (kind
 *         PIREC_GPIO_EVENT_PULSE, ts_ns = CLOCK_MONOTONIC right after the line was set) for
 *         events.csv.
 * Triggers ignore both calls.
 *
 * Config mapping ([gpio.NAME] keys of config/schema.c): direction = input -> role TRIGGER;
 * direction = output -> role from "role" (led | sync_pulse, parsed by pirec_gpio_role_parse);
 * debounce -> debounce_ns, min_interval -> min_interval_ns, pulse_length -> pulse_ns,
 * pulse_interval -> pulse_interval_ns; chip, line, edge, bias, active_low, action as named.
 *
 * Backends, chosen when pirec is built (pkg-config --atleast-version=2 libgpiod):
 *   libgpiod v2 (2.x): kernel debounce (debounce_ns rounded up to microseconds), line sequence
 *     numbers from the kernel, so a gap counts exactly how many edges the kernel dropped.
 *   libgpiod v1 (1.6): debounce done here in software with the same behaviour (a level must stay
 *     stable for debounce_ns before its edge is reported; shorter glitches are swallowed); the v1
 *     uAPI carries no sequence numbers, so seqno is counted here and lost edges are only detected
 *     as a lower bound: two consecutive edges of the same direction while watching both edges mean
 *     at least one edge in between was lost (counted as 1).
 *   pipe (always built): chip = "pipe:/path/to/fifo" reads struct pirec_gpio_pipe_record records
 *     from a FIFO (opened read-write, so it never sees end of file) and writes the physical level of
 *     outputs as records to it; pirec_gpio_new_pipe() takes an existing fd (tests use a pipe(2)).
 *     Everything above the libgpiod calls (batching, software debounce, active_low, edge filter,
 *     seqno gaps, min interval, outputs) runs exactly as with hardware.
 * Timestamps on the v1 backend: Linux >= 5.7 stamps v1 line events with CLOCK_MONOTONIC too.
 * Debounce timestamps: the kernel (v2) stamps a debounced edge when the debounce period ends; the
 * software debouncer (v1, pipe) keeps the timestamp of the edge that began the stable period.
 *
 * Errors: every fallible call returns 0 or a negative errno; libgpiod's -1/errno is converted. If
 * pirec_gpio_new*() fails, nothing is left behind and no callback ever runs. A read error later
 * (e.g. -ENODEV when the chip goes away) stops the watch and runs the error callback once.
 *
 * Threads: everything, callbacks included, runs on the loop thread, except pirec_gpio_counters()
 * (any thread; a snapshot).
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Most events handled per poll callback; the rest are read on the next loop iteration. */
#define PIREC_GPIO_MAX_EVENTS_PER_POLL 64

enum pirec_gpio_role {
  PIREC_GPIO_ROLE_TRIGGER = 0, /* input: edges -> actions */
  PIREC_GPIO_ROLE_LED,         /* output: active while recording */
  PIREC_GPIO_ROLE_SYNC,        /* output: pulse at each trial start */
};

enum pirec_gpio_edge {
  PIREC_GPIO_EDGE_RISING = 1, /* inactive -> active (after active_low) */
  PIREC_GPIO_EDGE_FALLING = 2,
  PIREC_GPIO_EDGE_BOTH = 3,
};

enum pirec_gpio_bias {
  PIREC_GPIO_BIAS_AS_IS = 0, /* leave the pin as firmware/device tree set it */
  PIREC_GPIO_BIAS_DISABLED,
  PIREC_GPIO_BIAS_PULL_UP,
  PIREC_GPIO_BIAS_PULL_DOWN,
};

enum pirec_gpio_action {
  PIREC_GPIO_ACTION_NONE = 0, /* in events: edge logged, no action (rate-limited) */
  PIREC_GPIO_ACTION_START,    /* start a session (no-op if recording) */
  PIREC_GPIO_ACTION_STOP,     /* stop the session (no-op if idle) */
  PIREC_GPIO_ACTION_TOGGLE,   /* start if idle, stop if recording */
  PIREC_GPIO_ACTION_TRIAL,    /* start the next trial */
  PIREC_GPIO_ACTION_MARKER,   /* only an events.csv row */
};

/* The settings of one [gpio.NAME] section. Strings are copied by pirec_gpio_new*(); the struct
 * can be freed afterwards. Suggested config keys are the field names; enum keys take the strings
 * accepted by the _parse functions below. */
struct pirec_gpio_settings {
  const char *name; /* NAME of [gpio.NAME], used in messages; may be NULL */
  /* "/dev/gpiochip0", "gpiochip0", a chip label such as "pinctrl-rp1", "auto" or NULL (search
   * every chip for the line name), or "pipe:/path/to/fifo" (pipe backend). */
  const char *chip;
  /* A line name such as "GPIO17", or a decimal offset such as "17" (an offset needs a chip). */
  const char *line;
  enum pirec_gpio_role role;
  /* trigger */
  enum pirec_gpio_edge edge;     /* default RISING */
  enum pirec_gpio_bias bias;     /* default AS_IS */
  int active_low;                /* 0/1: the line is active when low (edges and outputs inverted) */
  int64_t debounce_ns;           /* 0 = off */
  enum pirec_gpio_action action; /* default MARKER */
  int64_t min_interval_ns;       /* least kernel time between two actions; 0 = no limit */
  /* sync output */
  int64_t pulse_ns;          /* default 10 ms */
  int64_t pulse_interval_ns; /* > 0: also pulse this often while recording; default 0 */
};

enum pirec_gpio_event_kind {
  PIREC_GPIO_EVENT_EDGE = 0, /* a trigger's input edge */
  PIREC_GPIO_EVENT_PULSE,    /* a sync output began a pulse */
};

/* One edge, as passed to the event callback. Valid only during the callback. */
struct pirec_gpio_event {
  int64_t ts_ns;                   /* kernel timestamp, CLOCK_MONOTONIC */
  int64_t read_mono_ns;            /* CLOCK_MONOTONIC when the batch holding it was read (for latency) */
  uint64_t seqno;                  /* line sequence number (v2, pipe: the kernel's/record's; v1: counted) */
  uint64_t lost_before;            /* edges lost between the previous event and this one */
  int rising;                      /* 1: inactive -> active, 0: active -> inactive (after active_low) */
  enum pirec_gpio_action action;   /* the configured action, or NONE if rate-limited (pulses: NONE) */
  enum pirec_gpio_event_kind kind; /* pulses: ts_ns = read_mono_ns = when set, seqno = pulse count */
};

struct pirec_gpio_counters {
  uint64_t edges;         /* edges read from the line (before filter and debounce) */
  uint64_t events;        /* events delivered to the callback */
  uint64_t actions;       /* events that carried an action */
  uint64_t rate_limited;  /* events whose action was suppressed by min_interval_ns */
  uint64_t debounced;     /* edges swallowed by software debouncing (v1, pipe) */
  uint64_t filtered;      /* edges of the direction not asked for */
  uint64_t lost;          /* edges lost per seqno gaps (v2, pipe) or lower bound (v1) */
  uint64_t polls;         /* poll callbacks that read events */
  uint64_t max_batch;     /* most events handled in one poll callback */
  uint64_t output_sets;   /* output level changes driven */
  uint64_t pulses_merged; /* sync: pulses asked for while one was still high, merged into it */
  int output_value;       /* current logical output level (outputs) */
  int error;              /* 0, or the negative errno that stopped the watch */
};

/* Record format of the pipe backend, host byte order, written whole (atomic below PIPE_BUF). */
struct pirec_gpio_pipe_record {
  int64_t ts_ns;  /* input: edge timestamp (CLOCK_MONOTONIC); output: time the level was set */
  uint64_t seqno; /* input: line seqno, 0 = none (then counted and checked like v1); output: count */
  int32_t level;  /* physical level after the edge / of the output: 0 or 1 */
  int32_t offset; /* line offset; informative */
};

struct pirec_gpio;

/* Runs on the loop thread for every delivered edge of a trigger and every pulse of a sync output. */
typedef void (*pirec_gpio_event_cb)(struct pirec_gpio *gpio, const struct pirec_gpio_event *ev, void *user);
/* Runs once on the loop thread when the watch stops on an error (err < 0). */
typedef void (*pirec_gpio_error_cb)(struct pirec_gpio *gpio, int err, void *user);
/* Runs once when close has finished; counters are final. Memory is freed right after it returns. */
typedef void (*pirec_gpio_close_cb)(struct pirec_gpio *gpio, const struct pirec_gpio_counters *final,
                                    void *user);

/* Fills s with the defaults: chip "auto", role trigger, edge rising, bias as-is, active_low 0,
 * debounce 0, action marker, min_interval 0, pulse 10 ms; name and line NULL. */
void pirec_gpio_settings_default(struct pirec_gpio_settings *s);

/* Checks a settings value without touching hardware: -EINVAL with a message in err (may be NULL;
 * at most errlen bytes, NUL-terminated) naming the field and value. */
int pirec_gpio_settings_check(const struct pirec_gpio_settings *s, char *err, size_t errlen);

struct pirec_config;
/* Fills s from the config section "gpio.NAME" (keys as mapped above); the strings point into cfg
 * and live as long as it does. Returns 0, or -EINVAL (not a gpio section, or values that
 * pirec_gpio_settings_check() refuses; call it for the message). */
int pirec_gpio_settings_from_config(const struct pirec_config *cfg, const char *section,
                                    struct pirec_gpio_settings *s);

/* Opens the chip, finds and requests the line, and for a trigger starts watching it.
 * on_event/on_error may be NULL. Returns 0 and *out, or a negative errno: -EINVAL (bad settings),
 * -ENOENT (no such chip, or no line of that name), -EBUSY (line in use), -EACCES, -ENOTSUP
 * (a bias or debounce the kernel refuses), -ENOMEM. On failure nothing runs and nothing leaks. */
int pirec_gpio_new(uv_loop_t *loop, const struct pirec_gpio_settings *s, pirec_gpio_event_cb on_event,
                   pirec_gpio_error_cb on_error, void *user, struct pirec_gpio **out);

/* Same with the pipe backend on fd (the object takes ownership of fd and closes it, also on
 * failure). A trigger reads records from fd; an output writes records to fd. s->chip is ignored. */
int pirec_gpio_new_pipe(uv_loop_t *loop, const struct pirec_gpio_settings *s, int fd,
                        pirec_gpio_event_cb on_event, pirec_gpio_error_cb on_error, void *user,
                        struct pirec_gpio **out);

/* Tells the object the recording state. LED: drives the line (1 active). Sync with a
 * pulse_interval_ns: starts (with a pulse now) or stops the periodic pulses. Triggers: no-op.
 * Returns 0 or a negative errno from the line. */
int pirec_gpio_set_recording(struct pirec_gpio *gpio, int recording);

/* Tells the object a trial started. Sync: line active now, inactive after pulse_ns; a pulse still
 * running is lengthened to end pulse_ns from now and is not reported again (one physical pulse,
 * one event; counted in pulses_merged); *pulse_mono_ns (may be NULL) gets CLOCK_MONOTONIC right
 * after the line was set, for events.csv. Others: no-op, 0 and *pulse_mono_ns untouched. */
int pirec_gpio_trial_started(struct pirec_gpio *gpio, int64_t *pulse_mono_ns);

/* Drives an output to a logical level directly (1 active). -EINVAL on a trigger. */
int pirec_gpio_set_output(struct pirec_gpio *gpio, int value);

enum pirec_gpio_role pirec_gpio_role(const struct pirec_gpio *gpio);
/* The settings' name (or "gpio"); valid until the object is freed. */
const char *pirec_gpio_name(const struct pirec_gpio *gpio);
/* Where the line was found, e.g. "gpiochip0:17 (pinctrl-rp1 GPIO17)"; valid until freed. */
const char *pirec_gpio_describe(const struct pirec_gpio *gpio);

/* Any thread: a snapshot of the counters. */
void pirec_gpio_counters(const struct pirec_gpio *gpio, struct pirec_gpio_counters *out);

/* Loop thread. Stops watching, drives an output inactive, releases the line, calls cb (may be NULL)
 * once the libuv handles are closed, then frees the object. No event callback runs after this call.
 * pirec_gpio_close(NULL, ...) is a no-op. */
void pirec_gpio_close(struct pirec_gpio *gpio, pirec_gpio_close_cb cb, void *user);

/* The libgpiod API pirec was built with: "libgpiod v2 (2.2.1)" or "libgpiod v1 (1.6.3)". */
const char *pirec_gpio_backend(void);

/* String <-> enum for config values. _parse returns the enum value (>= 0) or -EINVAL.
 * role: trigger|led|sync (also "sync_pulse"); edge: rising|falling|both; bias: as-is|disabled|pull-up|pull-down;
 * action: start|stop|toggle|trial|marker ("none" only from _name). */
int pirec_gpio_role_parse(const char *s);
int pirec_gpio_edge_parse(const char *s);
int pirec_gpio_bias_parse(const char *s);
int pirec_gpio_action_parse(const char *s);
const char *pirec_gpio_role_name(enum pirec_gpio_role r);
const char *pirec_gpio_edge_name(enum pirec_gpio_edge e);
const char *pirec_gpio_bias_name(enum pirec_gpio_bias b);
const char *pirec_gpio_action_name(enum pirec_gpio_action a);

#endif
