/* Tests for io/clock: the three clocks against the kernel's own view and each other, and the
 * anchor's bracketing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "pirec/clock.h"

#define MS 1000000LL
#define S  1000000000LL

static void test_monotonic_never_goes_back(void **state)
{
  int64_t prev = pirec_clock_mono_ns(), first = prev;

  (void)state;
  assert_true(prev > 0);
  for (int i = 0; i < 200000; i++) {
    int64_t now = pirec_clock_mono_ns();
    if (now < prev)
      fail_msg("CLOCK_MONOTONIC went back from %lld to %lld at read %d", (long long)prev, (long long)now, i);
    prev = now;
  }
  /* 200000 readings take some time; the clock must have moved. */
  assert_true(prev > first);
}

static void test_wall_matches_time(void **state)
{
  (void)state;
  for (int i = 0; i < 3; i++) {
    time_t before = time(NULL);
    int64_t wall = pirec_clock_wall_ns();
    time_t after = time(NULL);
    /* time() may come from a coarser clock that lags by a tick, hence the one second of slack. */
    assert_true(wall / S >= (int64_t)before - 1);
    assert_true(wall / S <= (int64_t)after + 1);
    /* After 2020 and nanoseconds, not seconds or microseconds. */
    assert_true(wall > 1577836800LL * S);
  }
}

static void test_boot_not_behind_monotonic(void **state)
{
  (void)state;
  for (int i = 0; i < 1000; i++) {
    int64_t mono = pirec_clock_mono_ns();
    int64_t boot = pirec_clock_boot_ns();
    /* CLOCK_BOOTTIME is CLOCK_MONOTONIC plus time spent suspended. */
    if (boot < mono)
      fail_msg("CLOCK_BOOTTIME %lld read after CLOCK_MONOTONIC %lld is behind it", (long long)boot,
               (long long)mono);
  }
}

static void test_anchor(void **state)
{
  int64_t worst = 0;

  (void)state;
  for (int i = 0; i < 100; i++) {
    struct pirec_clock_anchor a;
    int64_t mono0 = pirec_clock_mono_ns(), wall0 = pirec_clock_wall_ns();
    pirec_clock_anchor_take(&a);
    int64_t mono1 = pirec_clock_mono_ns(), wall1 = pirec_clock_wall_ns();

    /* Each reading of the triple lies between readings taken around the call. */
    assert_true(a.mono_ns >= mono0 && a.mono_ns <= mono1);
    assert_true(a.wall_ns >= wall0 - MS && a.wall_ns <= wall1 + MS);
    assert_true(a.boot_ns >= a.mono_ns - a.uncertainty_ns);
    assert_true(a.uncertainty_ns >= 0);
    assert_true(a.uncertainty_ns <= mono1 - mono0);
    /* wall - mono from the anchor matches the offset seen around it. */
    int64_t offset = a.wall_ns - a.mono_ns;
    assert_true(offset >= wall0 - mono1 - MS && offset <= wall1 - mono0 + MS);
    if (a.uncertainty_ns > worst)
      worst = a.uncertainty_ns;
  }
  print_message("anchor: worst uncertainty of 100 anchors %lld ns\n", (long long)worst);
  /* Four vDSO reads take well under a microsecond; the best of several tries stays small even
   * when the thread is preempted now and then on a busy machine. */
  assert_true(worst < 2 * MS);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_monotonic_never_goes_back),
      cmocka_unit_test(test_wall_matches_time),
      cmocka_unit_test(test_boot_not_behind_monotonic),
      cmocka_unit_test(test_anchor),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
