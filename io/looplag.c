#include "pirec/looplag.h"

#include "pirec/log.h"
#include "pirec/container_of.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

static void prepare_cb(uv_prepare_t *prepare);

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
  lag->stall_threshold_ns = PIREC_LOOPLAG_STALL_DEFAULT_NS;
  /* Idle-time accounting costs two clock reads per epoll wait; without it busy time is unknown. */
  uv_loop_configure(loop, UV_METRICS_IDLE_TIME);
  uv_prepare_init(loop, &lag->prepare);
  uv_unref((uv_handle_t *)&lag->prepare);
  return 0;
}

int pirec_looplag_start(struct pirec_looplag *lag)
{
  lag->expected_ns = (int64_t)uv_hrtime() + (int64_t)lag->interval_ms * 1000000;
  lag->in_episode = 0;
  /* The loop's cached time may be stale; refresh it so the first tick is due one interval from
   * now, matching expected_ns. */
  uv_update_time(lag->timer.loop);
  lag->iter_start_ns = 0;
  lag->started = 1;
  uv_prepare_start(&lag->prepare, prepare_cb);
  if (lag->paused)
    return 0;
  return uv_timer_start(&lag->timer, tick_cb, lag->interval_ms, lag->interval_ms);
}

void pirec_looplag_stop(struct pirec_looplag *lag)
{
  lag->started = 0;
  uv_timer_stop(&lag->timer);
  uv_prepare_stop(&lag->prepare);
}

void pirec_looplag_set_ticking(struct pirec_looplag *lag, int ticking)
{
  int paused = !ticking;
  if (paused == lag->paused)
    return;
  lag->paused = paused;
  if (!lag->started)
    return;
  if (paused) {
    uv_timer_stop(&lag->timer);
    return;
  }
  lag->in_episode = 0;
  uv_update_time(lag->timer.loop);
  lag->expected_ns = (int64_t)uv_hrtime() + (int64_t)lag->interval_ms * 1000000;
  uv_timer_start(&lag->timer, tick_cb, lag->interval_ms, lag->interval_ms);
}

void pirec_looplag_reset(struct pirec_looplag *lag)
{
  memset(&lag->stats, 0, sizeof lag->stats);
  memset(lag->histogram, 0, sizeof lag->histogram);
  memset(lag->recent, 0, sizeof lag->recent);
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
  struct pirec_looplag *lag = handle->data;

  /* Two handles; the owner hears once, after the second. */
  if (++lag->closed < 2)
    return;
  if (lag->on_close)
    lag->on_close(lag);
}

void pirec_looplag_close(struct pirec_looplag *lag, pirec_looplag_close_cb cb)
{
  lag->on_close = cb;
  lag->closed = 0;
  lag->timer.data = lag;
  lag->prepare.data = lag;
  uv_close((uv_handle_t *)&lag->timer, close_cb);
  uv_close((uv_handle_t *)&lag->prepare, close_cb);
}

/* ---- stall detector ---- */

/* The calling thread's current label and the longest labelled stretch of this iteration so far.
 * Thread-local: each loop runs on its own thread and reads only its own. */
static _Thread_local struct {
  const char *op;
  uint64_t since;
  const char *top;
  uint64_t top_ns;
} cur;

static void charge(uint64_t now)
{
  if (cur.op && now - cur.since > cur.top_ns) {
    cur.top = cur.op;
    cur.top_ns = now - cur.since;
  }
}

const char *pirec_looplag_op(const char *op)
{
  uint64_t now = uv_hrtime();
  const char *prev = cur.op;

  charge(now);
  cur.op = op;
  cur.since = now;
  return prev;
}

static void record_stall(struct pirec_looplag *lag, int64_t busy_ns, const char *op)
{
  struct pirec_looplag_stall *s = &lag->recent[lag->stats.stalls % PIREC_LOOPLAG_RECENT];
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  s->busy_ns = busy_ns;
  s->op = op;
  s->mono_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
  lag->stats.stalls++;
  if (busy_ns > lag->stats.worst_stall_ns) {
    lag->stats.worst_stall_ns = busy_ns;
    lag->stats.worst_op = op;
    lag->stats.worst_mono_ns = s->mono_ns;
  }
}

/* Runs once per iteration, just before libuv waits for I/O: the time since the previous prepare,
 * less the time spent waiting in between, is what the loop thread worked. */
static void prepare_cb(uv_prepare_t *prepare)
{
  struct pirec_looplag *lag = container_of(prepare, struct pirec_looplag, prepare);
  uint64_t now = uv_hrtime();
  uint64_t idle = uv_metrics_idle_time(prepare->loop);
  int64_t busy = (int64_t)(now - lag->iter_start_ns) - (int64_t)(idle - lag->iter_idle_ns);
  const char *op;

  charge(now);
  op = cur.top ? cur.top : (cur.op ? cur.op : "unlabelled");
  if (lag->iter_start_ns && busy > lag->stall_threshold_ns)
    record_stall(lag, busy, op);
  lag->stats.iterations++;
  lag->iter_start_ns = now;
  lag->iter_idle_ns = idle;
  cur.top = NULL;
  cur.top_ns = 0;
  /* A label still open goes on charging the next iteration from here. */
  cur.since = now;
}

void pirec_looplag_set_stall_threshold(struct pirec_looplag *lag, int64_t threshold_ns)
{
  lag->stall_threshold_ns = threshold_ns > 0 ? threshold_ns : PIREC_LOOPLAG_STALL_DEFAULT_NS;
}

unsigned pirec_looplag_recent(const struct pirec_looplag *lag, struct pirec_looplag_stall *out, unsigned max)
{
  uint64_t n = lag->stats.stalls < PIREC_LOOPLAG_RECENT ? lag->stats.stalls : PIREC_LOOPLAG_RECENT;
  unsigned k = 0;

  for (; k < n && k < max; k++)
    out[k] = lag->recent[(lag->stats.stalls - 1 - k) % PIREC_LOOPLAG_RECENT];
  return k;
}

static json_t *stall_json(const struct pirec_looplag_stall *s)
{
  return json_pack("{s:I,s:s,s:I}", "busy_ns", (json_int_t)s->busy_ns, "op", s->op ? s->op : "unlabelled",
                   "mono_ns", (json_int_t)s->mono_ns);
}

json_t *pirec_looplag_json(const struct pirec_looplag *lag)
{
  struct pirec_looplag_stats st;
  struct pirec_looplag_stall recent[PIREC_LOOPLAG_RECENT];
  unsigned n = pirec_looplag_recent(lag, recent, PIREC_LOOPLAG_RECENT);
  json_t *list = json_array();

  pirec_looplag_stats(lag, &st);
  for (unsigned i = 0; list && i < n; i++)
    json_array_append_new(list, stall_json(&recent[i]));
  struct pirec_looplag_stall worst = {st.worst_stall_ns, st.worst_op, st.worst_mono_ns};
  return json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:o,s:o*}", "ticks", (json_int_t)st.ticks, "episodes",
                   (json_int_t)st.episodes, "max_ns", (json_int_t)st.max_ns, "p99_ns", (json_int_t)st.p99_ns,
                   "iterations", (json_int_t)st.iterations, "stalls", (json_int_t)st.stalls,
                   "stall_threshold_ns", (json_int_t)lag->stall_threshold_ns, "worst_stall",
                   st.stalls ? stall_json(&worst) : json_null(), "recent_stalls", list);
}

/* ---- the loop thread's name ---- */

static void noop_work(uv_work_t *req)
{
  (void)req;
}

static void noop_done(uv_work_t *req, int status)
{
  (void)status;
  free(req);
}

void pirec_looplag_thread_enter(uv_loop_t *loop)
{
  /* libuv starts all its pool threads on the first queued work, and a new thread inherits its
   * creator's name: queue one now, under the program's name. */
  uv_work_t *req = loop ? malloc(sizeof *req) : NULL;
  if (req && uv_queue_work(loop, req, noop_work, noop_done) < 0)
    free(req);
  /* glibc loads /etc/localtime on the first time conversion (even gmtime_r); do it now, not in
   * the middle of a session start. */
  tzset();
  pthread_setname_np(pthread_self(), PIREC_LOOPLAG_THREAD_NAME);
}

void pirec_looplag_thread_leave(void)
{
  pthread_setname_np(pthread_self(), PIREC_LOOPLAG_THREAD_DONE);
}
