/* Tests for io/looplag on a real loop: a callback that blocks is caught once per episode, an idle
 * loop shows low lag, and the monitor never keeps a loop alive. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "pirec/clock.h"
#include "pirec/log.h"
#include "pirec/looplag.h"

#define MS 1000000LL

/* Blocks the calling (loop) thread for ms milliseconds of wall time, as a careless callback doing
 * disk work would; the sleep is repeated if a signal cuts it short. */
static void block_loop_ms(int64_t ms)
{
  int64_t end = pirec_clock_mono_ns() + ms * MS;
  int64_t left;

  while ((left = end - pirec_clock_mono_ns()) > 0) {
    struct timespec ts = {.tv_sec = left / 1000000000, .tv_nsec = left % 1000000000};
    nanosleep(&ts, NULL);
  }
}

struct fixture {
  uv_loop_t loop;
  struct pirec_looplag lag;
  uv_timer_t blocker;
  uv_timer_t finish;
  int64_t block_ms;
  int blocks_left;
  int episode_calls;
  int64_t episode_lag_ns;
  int lag_closed;
  struct pirec_looplag_stats stats;
};

static void on_episode(struct pirec_looplag *lag, int64_t lag_ns)
{
  struct fixture *f = lag->data;
  f->episode_calls++;
  f->episode_lag_ns = lag_ns;
}

static void on_lag_closed(struct pirec_looplag *lag)
{
  struct fixture *f = lag->data;
  f->lag_closed++;
}

static void blocker_cb(uv_timer_t *t)
{
  struct fixture *f = t->data;
  block_loop_ms(f->block_ms);
  if (--f->blocks_left == 0)
    uv_timer_stop(t);
}

static void finish_cb(uv_timer_t *t)
{
  struct fixture *f = t->data;
  pirec_looplag_stop(&f->lag);
  pirec_looplag_stats(&f->lag, &f->stats);
  pirec_looplag_close(&f->lag, on_lag_closed);
  uv_close((uv_handle_t *)&f->blocker, NULL);
  uv_close((uv_handle_t *)t, NULL);
}

/* The episode tests use a threshold well above the scheduling noise of a loaded 2-core machine
 * (ticks 20+ ms late were seen there with nothing blocking) and blocks well above the threshold. */
#define NOISY_THRESHOLD (60 * MS)

/* Runs a loop with the monitor started, a blocker firing first after block_at_ms and then every
 * block_every_ms for blocks times, and everything closed at finish_ms. */
static void run_scenario(struct fixture *f, uint64_t interval_ms, int64_t threshold_ns,
                         pirec_looplag_episode_cb cb, uint64_t block_at_ms, uint64_t block_every_ms,
                         int blocks, int64_t block_ms, uint64_t finish_ms)
{
  memset(f, 0, sizeof *f);
  assert_int_equal(uv_loop_init(&f->loop), 0);
  f->lag.data = f;
  assert_int_equal(pirec_looplag_init(&f->loop, &f->lag, interval_ms, threshold_ns, cb), 0);
  assert_ptr_equal(f->lag.data, f); /* init keeps the caller's pointer */
  assert_int_equal(pirec_looplag_start(&f->lag), 0);
  f->block_ms = block_ms;
  f->blocks_left = blocks;
  assert_int_equal(uv_timer_init(&f->loop, &f->blocker), 0);
  assert_int_equal(uv_timer_init(&f->loop, &f->finish), 0);
  f->blocker.data = f;
  f->finish.data = f;
  if (blocks > 0)
    assert_int_equal(uv_timer_start(&f->blocker, blocker_cb, block_at_ms, block_every_ms), 0);
  assert_int_equal(uv_timer_start(&f->finish, finish_cb, finish_ms, 0), 0);
  assert_int_equal(uv_run(&f->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(f->lag_closed, 1);
  assert_int_equal(uv_loop_close(&f->loop), 0);
}

static void test_blocking_callback_detected(void **state)
{
  struct fixture f;

  (void)state;
  /* A 5 ms interval: a tick due during the 100 ms block comes at least 95 ms late. */
  run_scenario(&f, 5, NOISY_THRESHOLD, on_episode, 100, 0, 1, 100, 400);
  print_message("blocked 100 ms: ticks %llu, episodes %llu, max %lld us, p99 %lld us, "
                "reported %lld us\n",
                (unsigned long long)f.stats.ticks, (unsigned long long)f.stats.episodes,
                (long long)f.stats.max_ns / 1000, (long long)f.stats.p99_ns / 1000,
                (long long)f.episode_lag_ns / 1000);
  assert_int_equal(f.stats.episodes, 1);
  assert_int_equal(f.episode_calls, 1);
  assert_true(f.stats.max_ns >= 90 * MS);
  assert_true(f.episode_lag_ns >= 90 * MS);
  assert_true(f.episode_lag_ns <= f.stats.max_ns);
  assert_true(f.stats.ticks >= 20);
  assert_true(f.stats.p99_ns <= f.stats.max_ns);
}

static void test_sustained_blocking_is_one_episode(void **state)
{
  struct fixture f;

  (void)state;
  /* Five 40 ms blocks back to back (the blocker is due again before it returns): every tick in
   * between is late, so it is one episode, reported once. */
  run_scenario(&f, 5, NOISY_THRESHOLD, on_episode, 50, 1, 5, 80, 700);
  assert_int_equal(f.stats.episodes, 1);
  assert_int_equal(f.episode_calls, 1);
  assert_true(f.stats.max_ns >= 70 * MS);

  /* Two blocks with on-time ticks between them are two episodes. */
  run_scenario(&f, 5, NOISY_THRESHOLD, on_episode, 50, 300, 2, 100, 700);
  assert_int_equal(f.stats.episodes, 2);
  assert_int_equal(f.episode_calls, 2);
}

struct captured {
  int warnings;
  char line[512];
};

static void capture_log(enum pirec_log_level level, const char *line, void *user)
{
  struct captured *c = user;
  if (level == PIREC_LOG_WARN) {
    c->warnings++;
    snprintf(c->line, sizeof c->line, "%s", line);
  }
}

static void test_episode_logged_without_callback(void **state)
{
  struct captured c = {0};
  struct fixture f;

  (void)state;
  pirec_log_set_handler(capture_log, &c);
  run_scenario(&f, 5, NOISY_THRESHOLD, NULL, 50, 0, 1, 100, 300);
  pirec_log_set_handler(NULL, NULL);
  assert_int_equal(f.stats.episodes, 1);
  assert_int_equal(c.warnings, 1);
  assert_non_null(strstr(c.line, "blocked"));
  assert_non_null(strstr(c.line, "threshold 60 ms"));
}

/* The machine's own noise over the same window: a thread sleeping 10 ms at a time, and how late
 * each wake-up is (p99, ns). */
struct sleeper {
  pthread_t thread;
  int64_t late[200];
  int n;
};

static void *sleeper_main(void *arg)
{
  struct sleeper *s = arg;
  for (s->n = 0; s->n < 150; s->n++) {
    int64_t t0 = pirec_clock_mono_ns();
    struct timespec ts = {0, 10 * MS};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    s->late[s->n] = pirec_clock_mono_ns() - t0 - 10 * MS;
  }
  return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static void test_idle_loop_low_lag(void **state)
{
  struct fixture f;
  static struct sleeper ref;

  (void)state;
  /* Nothing blocks for 1.5 s at the default 10 ms interval: the loop's lag must be the machine's
   * own noise, measured beside it by a thread that only sleeps, plus a margin well below the
   * 100 ms block the detection test must see. (A fixed 60 ms bound failed in CI at a load
   * average of 15, where the sleeping thread was as late.) */
  assert_int_equal(pthread_create(&ref.thread, NULL, sleeper_main, &ref), 0);
  run_scenario(&f, 0, 0, on_episode, 0, 0, 0, 0, 1500);
  assert_int_equal(pthread_join(ref.thread, NULL), 0);
  qsort(ref.late, (size_t)ref.n, sizeof ref.late[0], cmp_i64);
  int64_t noise_p99 = ref.late[(ref.n * 99 + 99) / 100 - 1];
  print_message("idle 1.5 s: ticks %llu, max %lld us, p99 %lld us, episodes %llu; a sleeping thread's "
                "lateness p99 %lld us\n",
                (unsigned long long)f.stats.ticks, (long long)f.stats.max_ns / 1000,
                (long long)f.stats.p99_ns / 1000, (unsigned long long)f.stats.episodes,
                (long long)noise_p99 / 1000);
  assert_true(f.stats.ticks >= 50);
  assert_true(f.stats.ticks <= 151);
  assert_true(f.stats.p99_ns < noise_p99 + 40 * MS);
  assert_true(f.stats.p99_ns <= f.stats.max_ns);
}

static void stop_timer_cb(uv_timer_t *t)
{
  uv_timer_stop(t);
}

static void test_reset_and_unref(void **state)
{
  struct fixture f;
  struct pirec_looplag_stats st;
  uv_loop_t loop;
  struct pirec_looplag lag;
  int closed = 0;

  (void)state;
  run_scenario(&f, 5, NOISY_THRESHOLD, on_episode, 20, 0, 1, 50, 150);
  assert_true(f.stats.ticks > 0);
  assert_true(f.stats.max_ns > 0);

  /* The monitor alone does not keep the loop running: uv_run returns at once, with no tick. */
  assert_int_equal(uv_loop_init(&loop), 0);
  lag.data = &closed;
  assert_int_equal(pirec_looplag_init(&loop, &lag, 1, 0, NULL), 0);
  assert_int_equal(pirec_looplag_start(&lag), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  pirec_looplag_stats(&lag, &st);
  assert_int_equal(st.ticks, 0);
  assert_int_equal(st.p99_ns, 0);

  /* With a referenced timer keeping the loop alive for 30 ms, it ticks; reset clears that. */
  uv_timer_t keep;
  assert_int_equal(uv_timer_init(&loop, &keep), 0);
  assert_int_equal(uv_timer_start(&keep, stop_timer_cb, 30, 0), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  pirec_looplag_stats(&lag, &st);
  assert_true(st.ticks >= 5);
  pirec_looplag_reset(&lag);
  pirec_looplag_stats(&lag, &st);
  assert_int_equal(st.ticks, 0);
  assert_int_equal(st.max_ns, 0);
  assert_int_equal(st.episodes, 0);
  assert_int_equal(st.p99_ns, 0);

  uv_close((uv_handle_t *)&keep, NULL);
  pirec_looplag_close(&lag, NULL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);

  assert_int_equal(pirec_looplag_init(NULL, &lag, 0, 0, NULL), -EINVAL);
  assert_int_equal(pirec_looplag_init(&loop, &lag, 0, -1, NULL), -EINVAL);
}

/* ---- the stall detector ---- */

struct stall_fixture {
  uv_loop_t loop;
  struct pirec_looplag lag;
  uv_timer_t slow, quick, finish;
  int slow_left;
  int quick_runs;
  struct pirec_looplag_stats stats;
  struct pirec_looplag_stall recent[PIREC_LOOPLAG_RECENT];
  unsigned nrecent;
  json_t *json;
};

/* The deliberately slow operation: a real blocking system call (nanosleep, as the census would
 * flag) inside a labelled stretch, nested in an outer label that is put back afterwards. */
static void slow_cb(uv_timer_t *t)
{
  struct stall_fixture *f = t->data;
  const char *outer = pirec_looplag_op("trial start");
  const char *inner = pirec_looplag_op("deliberate sleep");
  assert_string_equal(inner, "trial start");
  block_loop_ms(40);
  assert_string_equal(pirec_looplag_op(outer), "deliberate sleep");
  pirec_looplag_op(NULL);
  if (--f->slow_left == 0)
    uv_timer_stop(t);
}

/* A quick labelled operation in many other iterations: never a stall. */
static void quick_cb(uv_timer_t *t)
{
  struct stall_fixture *f = t->data;
  pirec_looplag_op("status");
  f->quick_runs++;
  pirec_looplag_op(NULL);
}

static void stall_finish_cb(uv_timer_t *t)
{
  struct stall_fixture *f = t->data;
  pirec_looplag_stats(&f->lag, &f->stats);
  f->nrecent = pirec_looplag_recent(&f->lag, f->recent, PIREC_LOOPLAG_RECENT);
  f->json = pirec_looplag_json(&f->lag);
  pirec_looplag_close(&f->lag, NULL);
  uv_close((uv_handle_t *)&f->slow, NULL);
  uv_close((uv_handle_t *)&f->quick, NULL);
  uv_close((uv_handle_t *)t, NULL);
}

/* Two 40 ms sleeps are two stalls named by their label (the outer label put back around them does
 * not take the blame), with the timer's interval (200 ms) and threshold (1 s) far above them: the
 * timer alone would not have reported them. */
static void test_stall_named_by_its_operation(void **state)
{
  struct stall_fixture f;

  (void)state;
  memset(&f, 0, sizeof f);
  assert_int_equal(uv_loop_init(&f.loop), 0);
  assert_int_equal(pirec_looplag_init(&f.loop, &f.lag, 200, 1000 * MS, NULL), 0);
  /* Above the scheduling noise of a loaded 2-core machine, well below the 40 ms sleeps. */
  pirec_looplag_set_stall_threshold(&f.lag, 25 * MS);
  assert_int_equal(pirec_looplag_start(&f.lag), 0);
  f.slow_left = 2;
  f.slow.data = f.quick.data = f.finish.data = &f;
  uv_timer_init(&f.loop, &f.slow);
  uv_timer_init(&f.loop, &f.quick);
  uv_timer_init(&f.loop, &f.finish);
  uv_timer_start(&f.slow, slow_cb, 50, 150);
  uv_timer_start(&f.quick, quick_cb, 1, 3);
  uv_timer_start(&f.finish, stall_finish_cb, 450, 0);
  assert_int_equal(uv_run(&f.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&f.loop), 0);

  print_message("stalls %llu of %llu iterations, worst %lld us in '%s'; %d quick runs\n",
                (unsigned long long)f.stats.stalls, (unsigned long long)f.stats.iterations,
                (long long)f.stats.worst_stall_ns / 1000, f.stats.worst_op, f.quick_runs);
  assert_true(f.quick_runs > 20);
  assert_true(f.stats.iterations > 20);
  /* A loaded machine can add a stall of its own; the two sleeps are always there. */
  assert_true(f.stats.stalls >= 2);
  assert_true(f.stats.worst_stall_ns >= 35 * MS);
  unsigned named = 0;
  for (unsigned i = 0; i < f.nrecent; i++)
    if (f.recent[i].busy_ns >= 35 * MS && strcmp(f.recent[i].op, "deliberate sleep") == 0)
      named++;
  assert_int_equal(named, 2);
  json_t *worst = json_object_get(f.json, "worst_stall");
  assert_non_null(worst);
  assert_true(json_integer_value(json_object_get(worst, "busy_ns")) >= 35 * MS);
  assert_int_equal(json_integer_value(json_object_get(f.json, "stall_threshold_ns")), 25 * MS);
  assert_true(json_array_size(json_object_get(f.json, "recent_stalls")) >= 2);
  json_decref(f.json);
}

struct pause_fixture {
  uv_loop_t loop;
  struct pirec_looplag lag;
  uv_timer_t step;
  int steps;
  uint64_t ticks_paused, ticks_resumed;
  struct pirec_looplag_stats paused;
};

/* Step 1 (50 ms): a 40 ms block, seen by the stall detector although the timer does not tick.
 * Step 2 (200 ms): the ticks so far (none) are kept and ticking resumes. Step 3 (350 ms): done. */
static void pause_step(uv_timer_t *t)
{
  struct pause_fixture *f = t->data;
  f->steps++;
  if (f->steps == 1) {
    block_loop_ms(40);
  } else if (f->steps == 2) {
    pirec_looplag_stats(&f->lag, &f->paused);
    pirec_looplag_set_ticking(&f->lag, 1);
  } else {
    struct pirec_looplag_stats st;
    pirec_looplag_stats(&f->lag, &st);
    f->ticks_resumed = st.ticks;
    uv_timer_stop(t);
    uv_close((uv_handle_t *)t, NULL);
    pirec_looplag_close(&f->lag, NULL);
  }
}

/* An idle loop must not wake for its monitor: with ticking off the lag timer never fires, the
 * stall detector still sees a blocked iteration, and ticking resumes on request. */
static void test_ticking_off_while_idle(void **state)
{
  (void)state;
  struct pause_fixture f;
  memset(&f, 0, sizeof f);
  assert_int_equal(uv_loop_init(&f.loop), 0);
  assert_int_equal(pirec_looplag_init(&f.loop, &f.lag, 10, 0, NULL), 0);
  pirec_looplag_set_stall_threshold(&f.lag, 25 * MS);
  pirec_looplag_set_ticking(&f.lag, 0);
  assert_int_equal(pirec_looplag_start(&f.lag), 0);
  uv_timer_init(&f.loop, &f.step);
  f.step.data = &f;
  uv_timer_start(&f.step, pause_step, 50, 150);
  assert_int_equal(uv_run(&f.loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&f.loop), 0);
  print_message("paused: %llu ticks, %llu stalls; resumed: %llu ticks\n", (unsigned long long)f.paused.ticks,
                (unsigned long long)f.paused.stalls, (unsigned long long)f.ticks_resumed);
  assert_int_equal(f.paused.ticks, 0);
  assert_true(f.paused.stalls >= 1);
  assert_true(f.paused.worst_stall_ns >= 35 * MS);
  assert_true(f.ticks_resumed >= 1);
}

/* No stall: the JSON says so with a null worst_stall, and the threshold is settable. */
static void test_no_stall_and_threshold(void **state)
{
  uv_loop_t loop;
  struct pirec_looplag lag;

  (void)state;
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(pirec_looplag_init(&loop, &lag, 0, 0, NULL), 0);
  pirec_looplag_set_stall_threshold(&lag, 7 * MS);
  json_t *j = pirec_looplag_json(&lag);
  assert_true(json_is_null(json_object_get(j, "worst_stall")));
  assert_int_equal(json_integer_value(json_object_get(j, "stall_threshold_ns")), 7 * MS);
  assert_int_equal(json_integer_value(json_object_get(j, "stalls")), 0);
  json_decref(j);
  pirec_looplag_close(&lag, NULL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_blocking_callback_detected),
      cmocka_unit_test(test_sustained_blocking_is_one_episode),
      cmocka_unit_test(test_episode_logged_without_callback),
      cmocka_unit_test(test_idle_loop_low_lag),
      cmocka_unit_test(test_reset_and_unref),
      cmocka_unit_test(test_stall_named_by_its_operation),
      cmocka_unit_test(test_no_stall_and_threshold),
      cmocka_unit_test(test_ticking_off_while_idle),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
