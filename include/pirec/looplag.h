#ifndef PIREC_LOOPLAG_H
#define PIREC_LOOPLAG_H

/* Loop-lag monitor: pirec's detector for blocking work on a loop thread.
 *
 * A repeating timer expects to fire every interval; how late it actually fires (uv_hrtime, measured
 * from one interval after the previous tick, as libuv reschedules from the firing time) is the lag.
 * The monitor keeps the maximum and a histogram for p99, and when lag passes the threshold it
 * reports once per episode (an episode ends when a tick is on time again): through on_episode when
 * set (on the loop thread, with the lag of the tick that started the episode), otherwise with one
 * pirec_log warning. The timer is unref'd, so it never keeps a loop alive. Lag is resolved to about
 * 1 ms (libuv's timer clock); a blocked stretch shorter than the interval may go unseen.
 *
 * Stall detector: besides the timer, the monitor measures every loop iteration's busy time (its wall
 * time minus the time libuv spent waiting in epoll, from uv_metrics_idle_time) at the iteration's
 * prepare phase. An iteration busier than the stall threshold (default 5 ms) is a stall: counted,
 * kept in a small list of the most recent ones, and the worst is kept with its cause. The cause is
 * the operation label that covered the longest stretch of the iteration: code names what it is
 * doing with pirec_looplag_op("trial start") ... pirec_looplag_op(NULL), a thread-local store and a
 * vDSO clock read, cheap enough for every command and drain. An iteration with no label is
 * "unlabelled". The stall threshold catches what the timer cannot: work shorter than the interval.
 *
 * Embedded in caller memory: init, start, stop, close(cb); free the memory only in cb.
 * All calls on the loop thread.
 */

#include <stdint.h>
#include <uv.h>

struct pirec_looplag;
typedef void (*pirec_looplag_episode_cb)(struct pirec_looplag *lag, int64_t lag_ns);
typedef void (*pirec_looplag_close_cb)(struct pirec_looplag *lag);

struct pirec_looplag_stats {
  uint64_t ticks;
  uint64_t episodes; /* times lag went over the threshold */
  int64_t max_ns;
  int64_t p99_ns; /* from a log-linear histogram: within ~6% of the true value; 0 before a tick */
  int64_t last_ns;
  uint64_t iterations;    /* loop iterations measured by the stall detector */
  uint64_t stalls;        /* iterations busier than the stall threshold */
  int64_t worst_stall_ns; /* busy time of the worst stall, 0 if none */
  const char *worst_op;   /* its cause (a label, or "unlabelled"); NULL if none */
  int64_t worst_mono_ns;  /* when it ended (CLOCK_MONOTONIC) */
};

/* One stall: an iteration's busy time, its cause and when it ended (CLOCK_MONOTONIC). */
struct pirec_looplag_stall {
  int64_t busy_ns;
  const char *op;
  int64_t mono_ns;
};

#define PIREC_LOOPLAG_RECENT           8
#define PIREC_LOOPLAG_STALL_DEFAULT_NS (5 * 1000000LL)

#define PIREC_LOOPLAG_BUCKETS          512

struct pirec_looplag {
  void *data; /* caller's */
  /* private */
  uv_timer_t timer;
  uint64_t interval_ms;
  int64_t threshold_ns;
  int64_t expected_ns;
  int in_episode;
  pirec_looplag_episode_cb on_episode;
  pirec_looplag_close_cb on_close;
  uv_prepare_t prepare;
  int closed;
  int started;
  int paused; /* pirec_looplag_set_ticking(lag, 0) */
  int64_t stall_threshold_ns;
  uint64_t iter_start_ns;
  uint64_t iter_idle_ns;
  struct pirec_looplag_stall recent[PIREC_LOOPLAG_RECENT];
  struct pirec_looplag_stats stats;
  uint32_t histogram[PIREC_LOOPLAG_BUCKETS];
};

/* interval_ms 0 means 10 ms; threshold_ns 0 means 20 ms. on_episode may be NULL. lag->data is kept.
 * Returns 0 or a negative errno (-EINVAL for a NULL loop or lag, or a negative threshold). */
int pirec_looplag_init(uv_loop_t *loop, struct pirec_looplag *lag, uint64_t interval_ms, int64_t threshold_ns,
                       pirec_looplag_episode_cb on_episode);
int pirec_looplag_start(struct pirec_looplag *lag);
void pirec_looplag_stop(struct pirec_looplag *lag);
void pirec_looplag_reset(struct pirec_looplag *lag);
void pirec_looplag_stats(const struct pirec_looplag *lag, struct pirec_looplag_stats *out);
void pirec_looplag_close(struct pirec_looplag *lag, pirec_looplag_close_cb cb);

/* Idle loops should not wake for the monitor: ticking 0 stops the lag timer until ticking 1 restarts it
 * (at the interval given to init; the first tick one interval later). The stall detector keeps
 * measuring every iteration either way; it costs nothing while the loop sleeps. Recorders tick only
 * during a trial, the controller only while a session runs. Callable before or after start; a
 * monitor ticks unless told otherwise. */
void pirec_looplag_set_ticking(struct pirec_looplag *lag, int ticking);

/* Sets the stall threshold (default 5 ms; 0 restores the default). */
void pirec_looplag_set_stall_threshold(struct pirec_looplag *lag, int64_t threshold_ns);

/* Copies up to max of the most recent stalls, newest first; returns how many. */
unsigned pirec_looplag_recent(const struct pirec_looplag *lag, struct pirec_looplag_stall *out, unsigned max);

/* The stats as a new JSON object (jansson; the caller owns the reference): ticks, episodes,
 * max_ns, p99_ns, iterations, stalls, stall_threshold_ns, and "worst_stall": {busy_ns, op, mono_ns}
 * or null, and "recent_stalls": up to PIREC_LOOPLAG_RECENT of them, newest first. NULL without
 * memory. */
struct json_t;
struct json_t *pirec_looplag_json(const struct pirec_looplag *lag);

/* Names the operation the calling thread's loop is running from now on, until the next call;
 * NULL ends it. Returns the label it replaces, so nested work can put it back:
 *   const char *outer = pirec_looplag_op("spawn"); ...; pirec_looplag_op(outer);
 * op must live as long as the process (a string literal). Any thread may call it; only a loop
 * thread's labels are read, by that loop's own monitor. */
const char *pirec_looplag_op(const char *op);

/* Marks the calling thread as a process's main loop thread: names it PIREC_LOOPLAG_THREAD_NAME
 * (pthread_setname_np), after making libuv's threadpool exist first, so its threads keep the
 * program's name instead of inheriting the loop's, and loads the time zone (tzset), which libc
 * would otherwise read from /etc/localtime at the first time conversion inside the loop. Call just before uv_run; the rename is also the
 * marker that tells the system-call census (tests/census) the loop has started. */
#define PIREC_LOOPLAG_THREAD_NAME "pirec-loop"
void pirec_looplag_thread_enter(uv_loop_t *loop);

/* Marks the end of the loop phase: renames the thread PIREC_LOOPLAG_THREAD_DONE. Call after the
 * last uv_run, before the shutdown work that may block (joining, closing the loop). */
#define PIREC_LOOPLAG_THREAD_DONE "pirec-exit"
void pirec_looplag_thread_leave(void);

#endif
