/* The timing loader against what hand-edited files hold: a property test over random VFR timing
 * files (frames CSVs and v2 pts files with comments, blank lines, a BOM, CRLF, spaces, quoted
 * fields with line breaks) from fixed seeds, where every accepted file must give its pts exactly and
 * every broken one must name the physical line of the broken row; and the cases of issue 22. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers/remux-gen.h"
#include "pirec/remux.h"

#define ROWS_MAX 40

struct gen {
  uint64_t rng;
  char *text; /* the file being built */
  size_t len, cap;
  int64_t line; /* physical line the next byte starts on */
  int crlf;
};

static uint32_t next(struct gen *g)
{
  /* xorshift64*: reproducible from the seed, good enough to pick decorations. */
  g->rng ^= g->rng >> 12;
  g->rng ^= g->rng << 25;
  g->rng ^= g->rng >> 27;
  return (uint32_t)((g->rng * UINT64_C(2685821657736338717)) >> 32);
}

static int chance(struct gen *g, int percent)
{
  return (int)(next(g) % 100) < percent;
}

static void put(struct gen *g, const char *s)
{
  size_t n = strlen(s);
  if (g->len + n + 1 > g->cap) {
    g->cap = (g->len + n + 1) * 2;
    g->text = realloc(g->text, g->cap);
    assert_non_null(g->text);
  }
  memcpy(g->text + g->len, s, n + 1);
  g->len += n;
  for (size_t i = 0; i < n; i++)
    g->line += s[i] == '\n';
}

static void end_line(struct gen *g)
{
  put(g, g->crlf ? "\r\n" : "\n");
}

/* What editors add between rows: blank lines, comments, lines of spaces. */
static void noise(struct gen *g)
{
  while (chance(g, 20)) {
    switch (next(g) % 3) {
    case 0: break;
    case 1: put(g, "# a comment, with \"quotes\", 1,2,3"); break;
    default: put(g, "   "); break;
    }
    end_line(g);
  }
}

/* A time in the v2 format's milliseconds with ns precision, maybe with spaces around. */
static void put_ms(struct gen *g, int64_t ns)
{
  char v[64];
  snprintf(v, sizeof v, "%s%" PRId64 ".%06" PRId64 "%s", chance(g, 10) ? " " : "", ns / 1000000, ns % 1000000,
           chance(g, 20) ? "  \t" : "");
  put(g, v);
}

static void put_csv_row(struct gen *g, int64_t ns, int64_t frame, const char *bad)
{
  char v[160];
  int quote = chance(g, 25);
  if (bad != NULL)
    snprintf(v, sizeof v, "%s%s%s", quote ? "\"" : "", bad, quote ? "\"" : "");
  else
    snprintf(v, sizeof v, "%s%" PRId64 "%s", quote ? "\"" : "", ns, quote ? "\"" : "");
  put(g, v);
  snprintf(v, sizeof v, ",%" PRId64 ",%" PRId64 ",", frame, ns + INT64_C(1700000000000000000));
  put(g, v);
  /* A free-text column: sometimes quoted with a comma, a quote and line breaks inside. */
  if (chance(g, 20))
    put(g, g->crlf ? "\"two\r\nlines, \"\"quoted\"\"\r\nthree\"" : "\"two\nlines, \"\"quoted\"\"\nthree\"");
  else if (chance(g, 30))
    put(g, "plain text");
  if (chance(g, 10))
    put(g, "  ");
}

enum fault { FAULT_NONE, FAULT_DUPLICATE, FAULT_BAD_VALUE, FAULT_COUNT };

/* Builds one file. t[] gets the times of the rows, lines[] the physical line each row starts on;
 * with a fault, row *bad_row carries it. Returns the row count. */
static int build(struct gen *g, int csv, enum fault fault, int64_t *t, int64_t *lines, int *bad_row)
{
  int n = 1 + (int)(next(g) % ROWS_MAX);
  g->len = 0;
  g->line = 1;
  g->crlf = chance(g, 30);
  if (chance(g, 30))
    put(g, "\xEF\xBB\xBF");
  if (csv) {
    noise(g);
    put(g, chance(g, 20) ? "\"mono_ns\", frame ,wall_ns,note" : "mono_ns,frame,wall_ns,note");
  } else {
    put(g, chance(g, 50) ? "# timecode format v2" : "# timestamp format v2");
  }
  end_line(g);
  *bad_row = fault == FAULT_NONE || n < 2 ? -1 : 1 + (int)(next(g) % (uint32_t)(n - 1));
  t[0] = (int64_t)(next(g) % 1000000) * 1000000 + next(g) % 1000000;
  for (int i = 0; i < n; i++) {
    if (i > 0)
      t[i] = t[i - 1] + 1 + (int64_t)(next(g) % 100000000); /* VFR: 1 ns to 100 ms apart */
    if (i == *bad_row && fault == FAULT_DUPLICATE)
      t[i] = t[i - 1];
    noise(g);
    lines[i] = g->line;
    const char *bad = i == *bad_row && fault == FAULT_BAD_VALUE ? "12x" : NULL;
    if (csv)
      put_csv_row(g, t[i], i, bad);
    else if (bad)
      put(g, bad);
    else
      put_ms(g, t[i]);
    end_line(g);
  }
  noise(g);
  return n;
}

static void write_text(const char *path, const char *text, size_t len)
{
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

static void check_one(const char *dir, uint64_t seed)
{
  struct gen g = {.rng = seed * UINT64_C(0x9E3779B97F4A7C15) + 1};
  int64_t t[ROWS_MAX], lines[ROWS_MAX];
  struct pirec_remux_timing timing;
  char path[512], err[1024], want[600];
  int bad_row, csv = chance(&g, 60);
  enum fault fault = (enum fault)(next(&g) % FAULT_COUNT);
  int n = build(&g, csv, fault, t, lines, &bad_row);

  snprintf(path, sizeof path, "%s/s%" PRIu64 "%s", dir, seed, csv ? "_frames.csv" : ".pts");
  write_text(path, g.text, g.len);
  int rc = pirec_remux_timing_load(path, PIREC_REMUX_CLOCK_AUTO, &timing, err, sizeof err);
  if (bad_row >= 0) {
    snprintf(want, sizeof want, "%s:%" PRId64 ": ", path, lines[bad_row]);
    if (rc != -EINVAL || strstr(err, want) == NULL)
      fail_msg("seed %" PRIu64 ": want an error starting '%s', got %d '%s'\n%s", seed, want, rc, err, g.text);
  } else {
    if (rc != 0)
      fail_msg("seed %" PRIu64 ": rejected: %s\n%s", seed, err, g.text);
    assert_int_equal(timing.count, n);
    for (int i = 0; i < n; i++) {
      if (timing.t_ns[i] != t[i] || timing.line[i] != lines[i])
        fail_msg("seed %" PRIu64 " row %d: t %" PRId64 " line %" PRId64 ", want %" PRId64 " line %" PRId64,
                 seed, i, timing.t_ns[i], timing.line[i], t[i], lines[i]);
    }
    pirec_remux_timing_free(&timing);
  }
  free(g.text);
}

static void test_property_random_files(void **state)
{
  (void)state;
  char dir[256];
  assert_int_equal(remux_gen_tmpdir(dir, sizeof dir), 0);
  for (uint64_t seed = 1; seed <= 2000; seed++)
    check_one(dir, seed);
  remux_gen_rmrf(dir);
}

/* Loads text as NAME in a fresh directory; returns the loader's result with err filled. */
static int load_text(const char *name, const char *text, struct pirec_remux_timing *t, char *err, size_t cap,
                     char *path, size_t path_cap)
{
  char dir[256];
  assert_int_equal(remux_gen_tmpdir(dir, sizeof dir), 0);
  snprintf(path, path_cap, "%s/%s", dir, name);
  write_text(path, text, strlen(text));
  int rc = pirec_remux_timing_load(path, PIREC_REMUX_CLOCK_AUTO, t, err, cap);
  remux_gen_rmrf(dir);
  return rc;
}

static void expect_error(const char *name, const char *text, const char *where_what)
{
  struct pirec_remux_timing t;
  char err[1024], path[512];
  assert_int_equal(load_text(name, text, &t, err, sizeof err, path, sizeof path), -EINVAL);
  if (strstr(err, where_what) == NULL)
    fail_msg("want '%s' in '%s'", where_what, err);
}

/* Issue 22 item 3: a duplicate on line 5 of a pts file with a blank line and a comment was
 * reported on line 3 (the row index); CSV rows after a quoted line break were off too. */
static void test_errors_name_physical_lines(void **state)
{
  (void)state;
  expect_error("t.pts", "# timecode format v2\n0\n\n# paused\n33.3\n33.3\n",
               "t.pts:6: pts 33300000 is not after 33300000 on line 5");
  expect_error("t_frames.csv", "mono_ns,note\n1,\"a\nb\"\n\n# c\n2,x\n2,y\n",
               "t_frames.csv:7: mono_ns 2 is not after 2");
  expect_error("u_frames.csv", "mono_ns,note\n1,\"a\r\nb\"\r\n5x,y\r\n", "u_frames.csv:4: mono_ns '5x'");
  expect_error("v_frames.csv", "mono_ns,note\n1,x\n2,\"never closed\n3,z\n",
               "v_frames.csv:3: a quoted field is not closed");
  /* A first column that is not what it seems is named as read. */
  expect_error("w_frames.csv", "# recorded by hand\nmono ns,x\n1,2\n",
               "w_frames.csv:2: header 'mono ns,...' has no 'mono_ns'");
}

/* Issue 22 item 4: a BOM before a pts file or a CSV, and spaces after a pts value, were refused. */
static void test_editor_files_accepted(void **state)
{
  (void)state;
  struct pirec_remux_timing t;
  char err[1024], path[512];
  assert_int_equal(load_text("b.pts", "\xEF\xBB\xBF# timecode format v2\r\n0\r\n33.366  \r\n", &t, err,
                             sizeof err, path, sizeof path),
                   0);
  assert_int_equal(t.count, 2);
  assert_int_equal(t.t_ns[1], 33366000);
  pirec_remux_timing_free(&t);
  assert_int_equal(load_text("b_frames.csv", "\xEF\xBB\xBFmono_ns,frame\r\n100,0\r\n200 ,1\r\n", &t, err,
                             sizeof err, path, sizeof path),
                   0);
  assert_int_equal(t.count, 2);
  assert_int_equal(t.t_ns[1], 200);
  assert_int_equal(t.line[1], 3);
  pirec_remux_timing_free(&t);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_errors_name_physical_lines),
      cmocka_unit_test(test_editor_files_accepted),
      cmocka_unit_test(test_property_random_files),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
