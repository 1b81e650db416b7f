/* io/backlog: the oldest records go to make room (never those a trial change keeps), trimming by
 * time and to a keyframe, the GOP a file starts with, records that wrap the arena's end. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pirec/backlog.h"

/* Appends a record of len bytes filled with its stamp's low byte. */
static int put(struct pirec_backlog *b, int64_t mono, uint32_t flags, size_t len, int64_t keep_from)
{
  unsigned char *p = pirec_backlog_append(b, 0, flags, mono, len, keep_from);
  if (!p)
    return -1;
  memset(p, (int)(mono & 0xff), len);
  return 0;
}

/* The stamps held, oldest first; each record's bytes must still be its own. */
static int stamps(struct pirec_backlog *b, int64_t *out, int max)
{
  uint64_t cursor = 0;
  struct pirec_backlog_rec r;
  int n = 0;
  while (pirec_backlog_next(b, &cursor, &r) && n < max) {
    for (size_t i = 0; i < r.len; i++)
      assert_int_equal(((const unsigned char *)r.data)[i], r.mono_ns & 0xff);
    out[n++] = r.mono_ns;
  }
  return n;
}

static void test_forgets_oldest_and_wraps(void **state)
{
  struct pirec_backlog *b;
  assert_int_equal(pirec_backlog_new(100, &b), -EINVAL);
  assert_int_equal(pirec_backlog_new(4096, &b), 0);
  struct pirec_backlog_stats st;
  pirec_backlog_stats(b, &st);
  size_t cap = st.capacity;
  assert_null(pirec_backlog_append(b, 0, 0, 1, cap, INT64_MAX)); /* more than half: never fits */
  /* many records of odd sizes: the arena wraps again and again, the newest always stay */
  for (int64_t t = 1; t <= 2000; t++)
    assert_int_equal(put(b, t, 0, (size_t)(t % 300) + 1, INT64_MAX), 0);
  int64_t s[4096];
  int n = stamps(b, s, 4096);
  assert_true(n > 5);
  assert_int_equal(s[n - 1], 2000);
  for (int i = 1; i < n; i++)
    assert_int_equal(s[i], s[i - 1] + 1); /* oldest first, nothing missing in between */
  pirec_backlog_stats(b, &st);
  assert_int_equal(st.records, (uint64_t)n);
  assert_int_equal(st.forgotten, (uint64_t)(2000 - n));
  assert_true(st.used <= st.capacity && st.high_water <= st.capacity);
  pirec_backlog_free(b);
  pirec_backlog_free(NULL);
}

static void test_keep_from_is_never_forgotten(void **state)
{
  struct pirec_backlog *b;
  assert_int_equal(pirec_backlog_new(4096, &b), 0);
  for (int64_t t = 1; t <= 10; t++)
    assert_int_equal(put(b, t, 0, 100, INT64_MAX), 0);
  /* from 11 on, a trial change's records: older ones go for them, they never go themselves */
  int64_t t = 11;
  while (put(b, t, 0, 100, 11) == 0)
    t++;
  int64_t s[100];
  int n = stamps(b, s, 100);
  assert_int_equal(s[0], 11);
  assert_int_equal(s[n - 1], t - 1);
  pirec_backlog_free(b);
}

static void test_trims_and_keyframes(void **state)
{
  struct pirec_backlog *b;
  assert_int_equal(pirec_backlog_new(1 << 16, &b), 0);
  /* a keyframe every 10 */
  for (int64_t t = 0; t < 50; t++)
    assert_int_equal(put(b, t, t % 10 == 0 ? 1 : 0, 50, INT64_MAX), 0);
  assert_int_equal(pirec_backlog_first_key(b, 1, 25), 20); /* the GOP holding 25 */
  assert_int_equal(pirec_backlog_first_key(b, 1, -5), 0);  /* none before: the first */
  assert_int_equal(pirec_backlog_trim_to_key(b, 1, 25), 20);
  int64_t s[100];
  assert_int_equal(stamps(b, s, 100), 30);
  assert_int_equal(s[0], 20);
  assert_int_equal(pirec_backlog_trim(b, 33), 13);
  assert_int_equal(stamps(b, s, 100), 17);
  assert_int_equal(s[0], 33);
  assert_int_equal(pirec_backlog_first_key(b, 1, 45), 7);   /* stamp 40, index 7 */
  assert_int_equal(pirec_backlog_trim_to_key(b, 1, 39), 0); /* no keyframe at or before 39 now */
  assert_int_equal(pirec_backlog_trim_to_key(b, 1, INT64_MAX), 7);
  assert_int_equal(stamps(b, s, 100), 10);
  pirec_backlog_clear(b);
  assert_int_equal(stamps(b, s, 100), 0);
  assert_int_equal(pirec_backlog_first_key(b, 1, 100), -1);
  assert_int_equal(put(b, 7, 0, 10, INT64_MAX), 0);
  assert_int_equal(stamps(b, s, 100), 1);
  pirec_backlog_free(b);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_forgets_oldest_and_wraps),
      cmocka_unit_test(test_keep_from_is_never_forgotten),
      cmocka_unit_test(test_trims_and_keyframes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
