/* io/rowgate on a real loop with real sinks: a row reaches its CSV only once the bytes it describes
 * are in their file, whole; rows of data whose write failed (a sink on /dev/full: ENOSPC) never do,
 * and are counted with what they carried. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "helpers/test-dir.h"
#include "pirec/rowgate.h"
#include "pirec/sink.h"

struct pair {
  struct pirec_sink *data, *csv;
  struct pirec_rowgate *gate;
  uint64_t released, released_dropped, calls, seen_rows_before_write;
  uint64_t unwritten, carried;
  int closed;
};

static void on_written(struct pirec_sink *sink, uint64_t whole_end, void *user)
{
  struct pair *p = user;
  struct pirec_rowgate_result res;
  p->calls++;
  assert_int_equal(pirec_sink_whole_end(sink), whole_end);
  pirec_rowgate_release(p->gate, whole_end, p->csv, &res);
  assert_int_equal(res.refused, 0);
  p->released += res.rows;
  p->released_dropped += res.dropped;
}

static void csv_closed(struct pirec_sink *sink, const struct pirec_sink_counters *c, void *user)
{
  struct pair *p = user;
  p->closed++;
}

static void data_closed(struct pirec_sink *sink, const struct pirec_sink_counters *c, void *user)
{
  struct pair *p = user;
  struct pirec_rowgate_result res;
  pirec_rowgate_release(p->gate, pirec_sink_whole_end(sink), p->csv, &res);
  p->released += res.rows;
  p->released_dropped += res.dropped;
  pirec_rowgate_discard(p->gate, &p->unwritten, &p->carried);
  pirec_sink_close(p->csv, csv_closed, p); /* after the data, as the recorders do */
  p->closed++;
}

static size_t slurp(const char *path, char *buf, size_t cap)
{
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
  fclose(f);
  return n;
}

/* Three records and their rows: no row is in the CSV before its record is written. */
static void run_pair(const char *data_path, const char *csv_path, struct pair *p)
{
  uv_loop_t loop;
  char block[100], row[32];
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(pirec_rowgate_new(4096, &p->gate), 0);
  assert_int_equal(pirec_sink_new(&loop, data_path, NULL, NULL, p, &p->data), 0);
  assert_int_equal(pirec_sink_new(&loop, csv_path, NULL, NULL, p, &p->csv), 0);
  pirec_sink_on_written(p->data, on_written);
  for (int i = 0; i < 3; i++) {
    memset(block, 'a' + i, sizeof block);
    assert_int_equal(pirec_sink_push(p->data, block, sizeof block), 0);
    int n = snprintf(row, sizeof row, "row %d\n", i);
    assert_true(pirec_rowgate_room(p->gate));
    assert_int_equal(
        pirec_rowgate_hold(p->gate, row, (size_t)n, (uint64_t)(i + 1) * sizeof block, (uint64_t)i), 0);
  }
  /* nothing is written yet: nothing may be released */
  struct pirec_rowgate_result res;
  pirec_rowgate_release(p->gate, pirec_sink_whole_end(p->data), p->csv, &res);
  assert_int_equal(res.rows, 0);
  assert_int_equal(pirec_rowgate_held(p->gate), 3);
  pirec_sink_flush(p->data);
  pirec_sink_close(p->data, data_closed, p);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(p->closed, 2);
  assert_int_equal(pirec_rowgate_held(p->gate), 0);
  pirec_rowgate_free(p->gate);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_rows_follow_their_data(void **state)
{
  char dir[256], data[300], csv[300], buf[256];
  struct pair p = {0};
  assert_int_equal(test_dir_make("rowgate", dir, sizeof dir), 0);
  snprintf(data, sizeof data, "%s/data", dir);
  snprintf(csv, sizeof csv, "%s/rows.csv", dir);
  run_pair(data, csv, &p);
  assert_true(p.calls >= 1);
  assert_int_equal(p.released, 3);
  assert_int_equal(p.released_dropped, 0 + 1 + 2);
  assert_int_equal(p.unwritten, 0);
  slurp(csv, buf, sizeof buf);
  assert_string_equal(buf, "row 0\nrow 1\nrow 2\n");
  test_dir_remove(dir);
}

/* /dev/full takes no byte (ENOSPC): no row gets out, all three are counted with what they carried. */
static void test_rows_of_failed_writes_are_counted(void **state)
{
  char dir[256], csv[300], buf[256];
  struct pair p = {0};
  assert_int_equal(test_dir_make("rowgate", dir, sizeof dir), 0);
  snprintf(csv, sizeof csv, "%s/rows.csv", dir);
  run_pair("/dev/full", csv, &p);
  assert_int_equal(p.released, 0);
  assert_int_equal(p.unwritten, 3);
  assert_int_equal(p.carried, 0 + 1 + 2);
  assert_int_equal(slurp(csv, buf, sizeof buf), 0);
  test_dir_remove(dir);
}

/* A full gate refuses (and says so before), a row over the maximum is refused. */
static void test_full_gate(void **state)
{
  struct pirec_rowgate *g;
  char row[PIREC_ROWGATE_ROW_MAX + 1];
  memset(row, 'x', sizeof row);
  assert_int_equal(pirec_rowgate_new(16, &g), -EINVAL);
  assert_int_equal(pirec_rowgate_new(4096, &g), 0);
  assert_int_equal(pirec_rowgate_hold(g, row, sizeof row, 1, 0), -EMSGSIZE);
  int held = 0;
  while (pirec_rowgate_room(g)) {
    assert_int_equal(pirec_rowgate_hold(g, row, PIREC_ROWGATE_ROW_MAX, (uint64_t)held, 0), 0);
    held++;
  }
  assert_true(held >= 4);
  assert_int_equal(pirec_rowgate_held(g), (size_t)held);
  uint64_t rows = 0;
  pirec_rowgate_discard(g, &rows, NULL);
  assert_int_equal(rows, (uint64_t)held);
  assert_true(pirec_rowgate_room(g));
  pirec_rowgate_free(g);
  pirec_rowgate_free(NULL);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rows_follow_their_data),
      cmocka_unit_test(test_rows_of_failed_writes_are_counted),
      cmocka_unit_test(test_full_gate),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
