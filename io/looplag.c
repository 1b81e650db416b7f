#include "pirec/looplag.h"

#include "pirec/log.h"
#include "pirec/container_of.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

/* Log-linear histogram over microseconds: values below 16 us get one bucket each, above that every
 * power of two is split into 16 equal buckets, so a bucket's midpoint is within 1/32 of any value
 * in it. 512 buckets reach 2^35 us (about 9.5 hours); anything larger lands in the last one. */
enum { SUB_BITS = 4, SUB = 1 << SUB_BITS };

static unsigned bucket_of(int64_t ns)
{
  uint64_t us = ns > 0 ? (uint64_t)ns / 1000 : 0;
  unsigned e, b;

  if (us < SUB)
    return (unsigned)us;
  e = 63u - (unsigned)__builtin_clzll(us);
  b = (e - SUB_BITS + 1) * SUB + (unsigned)((us >> (e - SUB_BITS)) & (SUB - 1));
  return b < PIREC_LOOPLAG_BUCKETS ? b : PIREC_LOOPLAG_BUCKETS - 1;
}

/* The midpoint of bucket b, in nanoseconds. */
static int64_t bucket_mid_ns(unsigned b)
{
  unsigned e, sub;
  uint64_t lo, width;

  if (b < SUB)
    return (int64_t)b * 1000 + 500;
  e = b / SUB + SUB_BITS - 1;
  sub = b % SUB;
  lo = (uint64_t)(SUB + sub) << (e - SUB_BITS);
  width = (uint64_t)1 << (e - SUB_BITS);
  return (int64_t)((lo * 1000) + (width * 1000) / 2);
}

static void report(struct pirec_looplag *lag, int64_t lag_ns)
{
  if (lag->on_episode) {
    lag->on_episode(lag, lag_ns);
    return;
  }
  pirec_log(PIREC_LOG_WARN,
            "event loop blocked: timer ran %lld ms late (threshold %lld ms); "
            "something did blocking work on the loop thread",
            (long long)(lag_ns / 1000000), (long long)(lag->threshold_ns / 1000000));
}

static void tick_cb(uv_timer_t *timer)
{
  struct pirec_looplag *lag = container_of(timer, struct pirec_looplag, timer);
  int64_t now = (int64_t)uv_hrtime();
  int64_t late = now - lag->expected_ns;

  /* libuv reschedules a repeating timer from the loop's time when it fires, so the next tick is
   * expected one interval after this one; measuring against a fixed grid would count one late tick
   * again in every later one. The loop's millisecond clock can make a tick up to 1 ms early. */
  lag->expected_ns = now + (int64_t)lag->interval_ms * 1000000;
  if (late < 0)
    late = 0;

  lag->stats.ticks++;
  lag->stats.last_ns = late;
  if (late > lag->stats.max_ns)
    lag->stats.max_ns = late;
  lag->histogram[bucket_of(late)]++;

  if (late > lag->threshold_ns) {
    if (!lag->in_episode) {
      lag->in_episode = 1;
      lag->stats.episodes++;
      report(lag, late);
    }
  } else {
    lag->in_episode = 0;
  }
}

int pirec_looplag_init(uv_loop_t *loop, struct pirec_looplag *lag, uint64_t interval_ms, int64_t threshold_ns,
                       pirec_looplag_episode_cb on_episode)
{
  void *data;
  int err;

  if (!loop || !lag || threshold_ns < 0)
    return -EINVAL;
  data = lag->data;
  memset(lag, 0, sizeof *lag);
  lag->data = data;
  lag->interval_ms = interval_ms ? interval_ms : 10;
  lag->threshold_ns = threshold_ns ? threshold_ns : 20 * 1000000LL;
  lag->on_episode = on_episode;
  err = uv_timer_init(loop, &lag->timer);
  if (err < 0)
    return err;
  /* A monitor must never be the reason a loop keeps running. */
  uv_unref((uv_handle_t *)&lag->timer);
  return 0;
}

int pirec_looplag_start(struct pirec_looplag *lag)
{
  lag->expected_ns = (int64_t)uv_hrtime() + (int64_t)lag->interval_ms * 1000000;
  lag->in_episode = 0;
  /* The loop's cached time may be stale; refresh it so the first tick is due one interval from
   * now, matching expected_ns. */
  uv_update_time(lag->timer.loop);
  return uv_timer_start(&lag->timer, tick_cb, lag->interval_ms, lag->interval_ms);
}

void pirec_looplag_stop(struct pirec_looplag *lag)
{
  uv_timer_stop(&lag->timer);
}

void pirec_looplag_reset(struct pirec_looplag *lag)
{
  memset(&lag->stats, 0, sizeof lag->stats);
  memset(lag->histogram, 0, sizeof lag->histogram);
  lag->in_episode = 0;
}

void pirec_looplag_stats(const struct pirec_looplag *lag, struct pirec_looplag_stats *out)
{
  uint64_t rank, seen = 0;

  *out = lag->stats;
  out->p99_ns = 0;
  if (lag->stats.ticks == 0)
    return;
  /* The smallest value with at least 99% of the ticks at or below it. */
  rank = (lag->stats.ticks * 99 + 99) / 100;
  for (unsigned b = 0; b < PIREC_LOOPLAG_BUCKETS; b++) {
    seen += lag->histogram[b];
    if (seen >= rank) {
      out->p99_ns = bucket_mid_ns(b);
      break;
    }
  }
  /* The maximum is exact; a bucket midpoint above it would only be an artefact of the bucketing. */
  if (out->p99_ns > out->max_ns)
    out->p99_ns = out->max_ns;
}

static void close_cb(uv_handle_t *handle)
{
  struct pirec_looplag *lag = container_of(handle, struct pirec_looplag, timer);

  if (lag->on_close)
    lag->on_close(lag);
}

void pirec_looplag_close(struct pirec_looplag *lag, pirec_looplag_close_cb cb)
{
  lag->on_close = cb;
  uv_close((uv_handle_t *)&lag->timer, close_cb);
}
