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
};

#define PIREC_LOOPLAG_BUCKETS 512

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

#endif
