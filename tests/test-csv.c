/* Tests for io/csv: rows written by the builder are read back with real CSV parsers (libcsv's, and
 * Python's csv module when python3 is installed) and must equal what went in; integers against
 * printf as the reference; overflow never writes past the buffer; rows through a real sink. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <csv.h>

#include "pirec/csv.h"
#include "pirec/sink.h"

extern char **environ;

/* --- a parsed document: rows of fields, each a byte string ------------------------------------ */

struct field {
  char *data;
  size_t len;
};

struct doc {
  struct field *fields; /* all fields, row after row */
  size_t nfields, capfields;
  size_t *row_ends; /* index one past each row's last field */
  size_t nrows, caprows;
};

static void doc_add_field(struct doc *d, const char *data, size_t len)
{
  if (d->nfields == d->capfields) {
    d->capfields = d->capfields ? d->capfields * 2 : 64;
    d->fields = realloc(d->fields, d->capfields * sizeof *d->fields);
    assert_non_null(d->fields);
  }
  d->fields[d->nfields].data = malloc(len + 1);
  assert_non_null(d->fields[d->nfields].data);
  if (len)
    memcpy(d->fields[d->nfields].data, data, len);
  d->fields[d->nfields].data[len] = '\0';
  d->fields[d->nfields].len = len;
  d->nfields++;
}

static void doc_end_row(struct doc *d)
{
  if (d->nrows == d->caprows) {
    d->caprows = d->caprows ? d->caprows * 2 : 16;
    d->row_ends = realloc(d->row_ends, d->caprows * sizeof *d->row_ends);
    assert_non_null(d->row_ends);
  }
  d->row_ends[d->nrows++] = d->nfields;
}

static size_t row_start(const struct doc *d, size_t r)
{
  return r ? d->row_ends[r - 1] : 0;
}
static size_t row_fields(const struct doc *d, size_t r)
{
  return d->row_ends[r] - row_start(d, r);
}
static const struct field *doc_field(const struct doc *d, size_t r, size_t f)
{
  return &d->fields[row_start(d, r) + f];
}

static void doc_free(struct doc *d)
{
  for (size_t i = 0; i < d->nfields; i++)
    free(d->fields[i].data);
  free(d->fields);
  free(d->row_ends);
  memset(d, 0, sizeof *d);
}

static void on_csv_field(void *s, size_t len, void *user)
{
  doc_add_field(user, s, len);
}

static void on_csv_row(int c, void *user)
{
  (void)c;
  doc_end_row(user);
}

/* Parses with libcsv in strict mode, so a stray quote in our output is an error, not a guess. */
static void parse_libcsv(const char *buf, size_t len, struct doc *d)
{
  struct csv_parser p;

  memset(d, 0, sizeof *d);
  assert_int_equal(csv_init(&p, CSV_STRICT | CSV_STRICT_FINI), 0);
  if (csv_parse(&p, buf, len, on_csv_field, on_csv_row, d) != len)
    fail_msg("libcsv could not parse our output: %s\n%.*s", csv_strerror(csv_error(&p)), (int)len, buf);
  assert_int_equal(csv_fini(&p, on_csv_field, on_csv_row, d), 0);
  csv_free(&p);
}

/* --- the texts every parser must give back ----------------------------------------------------- */

static const char *const texts[] = {
    "plain",
    "",
    "a,b,c",
    "say \"hi\"",
    "\"",
    "\"\"",
    "line one\nline two",
    "cr\rin the middle",
    "crlf\r\nending\r\n",
    "\n",
    " leading space",
    "trailing space ",
    "inner\ttab",
    "trailing tab\t",
    "h\xc3\xa9llo w\xc3\xb6rld",                   /* é, ö: two-byte UTF-8 */
    "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",        /* 日本語: three-byte */
    "emoji \xf0\x9f\x98\x80\xf0\x9f\x8e\x89, too", /* 😀🎉 and a comma */
    "=SUM(A1:A9)",
    "=HYPERLINK(\"http://x\",\"y\")",
    "+1",
    "-2",
    "-",
    "@cmd",
    "\ttab first",
    "\rcr first",
    "'already quoted",
    "'",
    "''",
    "=a,b\n\"c\"",
    "not=a formula",
    "1-2",
};
#define NTEXTS (sizeof texts / sizeof texts[0])

static const char *const formula_leads = "=+-@\t\r'";

/* One row: an integer index, then the text, then an empty field, then an integer; as a data row of
 * a session CSV would mix them. */
static int build_text_row(char *buf, size_t cap, size_t i)
{
  struct pirec_csv_row row;

  pirec_csv_row_begin(&row, buf, cap);
  pirec_csv_row_u64(&row, i);
  pirec_csv_row_str(&row, texts[i]);
  pirec_csv_row_empty(&row);
  pirec_csv_row_i64(&row, -(int64_t)i);
  return pirec_csv_row_end(&row);
}

/* Builds the header and one row per text into out; returns the length. */
static size_t build_document(char *out, size_t cap)
{
  static const char *const columns[] = {"trial", "text", "empty", "neg", NULL};
  size_t len = 0;
  int n;

  n = pirec_csv_header(out, cap, columns);
  assert_true(n > 0);
  len = (size_t)n;
  for (size_t i = 0; i < NTEXTS; i++) {
    n = build_text_row(out + len, cap - len, i);
    if (n < 0)
      fail_msg("row %zu ('%s') did not fit", i, texts[i]);
    len += (size_t)n;
  }
  return len;
}

static void decimal(char *buf, size_t cap, int64_t v)
{
  snprintf(buf, cap, "%" PRId64, v);
}

/* Checks a parsed document against texts[]; parser names the reader for failure messages. */
static void check_document(const struct doc *d, const char *parser)
{
  char expect[32];

  assert_int_equal(d->nrows, NTEXTS + 1);
  assert_int_equal(row_fields(d, 0), 4);
  assert_string_equal(doc_field(d, 0, 0)->data, "trial");
  assert_string_equal(doc_field(d, 0, 3)->data, "neg");
  for (size_t i = 0; i < NTEXTS; i++) {
    const struct field *t;
    size_t skip, want = strlen(texts[i]);
    int guarded = want > 0 && strchr(formula_leads, texts[i][0]) != NULL;

    if (row_fields(d, i + 1) != 4)
      fail_msg("%s: row %zu ('%s') has %zu fields, expected 4", parser, i + 1, texts[i],
               row_fields(d, i + 1));
    decimal(expect, sizeof expect, (int64_t)i);
    assert_string_equal(doc_field(d, i + 1, 0)->data, expect);
    decimal(expect, sizeof expect, -(int64_t)i);
    assert_string_equal(doc_field(d, i + 1, 3)->data, expect);
    assert_int_equal(doc_field(d, i + 1, 2)->len, 0);

    /* The stored text carries the guard exactly when the original starts with a formula lead;
     * removing it gives the original back byte for byte. */
    t = doc_field(d, i + 1, 1);
    skip = pirec_csv_guard_len(t->data, t->len);
    if (guarded && (skip != 1 || t->data[0] != '\''))
      fail_msg("%s: text '%s' was stored without the formula guard as '%s'", parser, texts[i], t->data);
    if (!guarded && skip != 0)
      fail_msg("%s: text '%s' got a guard it does not need: '%s'", parser, texts[i], t->data);
    if (t->len - skip != want || memcmp(t->data + skip, texts[i], want) != 0)
      fail_msg("%s: text %zu read back as '%s' (%zu bytes), wrote '%s' (%zu bytes)", parser, i,
               t->data + skip, t->len - skip, texts[i], want);
  }
}

static void test_texts_round_trip_libcsv(void **state)
{
  static char out[16384];
  struct doc d;
  size_t len;

  (void)state;
  len = build_document(out, sizeof out);
  parse_libcsv(out, len, &d);
  check_document(&d, "libcsv");
  doc_free(&d);

  /* UTF-8 goes through byte for byte, not escaped or re-encoded. */
  assert_non_null(memmem(out, len, "\xf0\x9f\x98\x80\xf0\x9f\x8e\x89", 8));
  assert_non_null(memmem(out, len, "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", 9));
  /* Text that needs no quotes gets none (the stored form stays readable and small). */
  assert_non_null(memmem(out, len, "\n1,,,-1\n", 8));
  assert_non_null(memmem(out, len, "\n0,plain,,0\n", 12));
}

static void test_guard_len(void **state)
{
  (void)state;
  assert_int_equal(pirec_csv_guard_len("'=1", 3), 1);
  assert_int_equal(pirec_csv_guard_len("''", 2), 1);
  assert_int_equal(pirec_csv_guard_len("=1", 2), 0);
  assert_int_equal(pirec_csv_guard_len("-5", 2), 0); /* a negative integer field is not guarded */
  assert_int_equal(pirec_csv_guard_len("", 0), 0);
}

/* --- Python's csv module ------------------------------------------------------------------------ */

/* Prints each row as its fields in hex, separated by spaces, one line per row, so the C side can
 * compare bytes without a second parser of its own. */
static const char python_script[] = "import csv, sys\n"
                                    "with open(sys.argv[1], newline='', encoding='utf-8') as f:\n"
                                    "    for row in csv.reader(f):\n"
                                    "        print(' '.join('x' + c.encode('utf-8').hex() for c in row))\n";

/* Runs python3 on path; returns its stdout (malloc'd), or NULL if python3 cannot be started. */
static char *run_python(const char *path, size_t *out_len)
{
  char *argv[] = {"python3", "-c", (char *)python_script, (char *)path, NULL};
  posix_spawn_file_actions_t fa;
  int pipefd[2], status;
  pid_t pid;
  char *out = NULL;
  size_t len = 0, cap = 0;
  ssize_t n;

  assert_int_equal(pipe(pipefd), 0);
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, pipefd[1], 1);
  posix_spawn_file_actions_addclose(&fa, pipefd[0]);
  posix_spawn_file_actions_addclose(&fa, pipefd[1]);
  if (posix_spawnp(&pid, "python3", &fa, NULL, argv, environ) != 0) {
    posix_spawn_file_actions_destroy(&fa);
    close(pipefd[0]);
    close(pipefd[1]);
    return NULL;
  }
  posix_spawn_file_actions_destroy(&fa);
  close(pipefd[1]);
  for (;;) {
    if (cap - len < 4096) {
      cap = cap ? cap * 2 : 65536;
      out = realloc(out, cap + 1);
      assert_non_null(out);
    }
    n = read(pipefd[0], out + len, cap - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    len += (size_t)n;
  }
  close(pipefd[0]);
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
    free(out);
    return NULL; /* a shim or wrapper that found no interpreter */
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail_msg("python3 csv reader failed (status 0x%x) on '%s'", status, path);
  out[len] = '\0';
  *out_len = len;
  return out;
}

static void parse_python_hex(char *text, struct doc *d)
{
  char *line, *save_line;

  memset(d, 0, sizeof *d);
  for (line = strtok_r(text, "\n", &save_line); line; line = strtok_r(NULL, "\n", &save_line)) {
    char *tok, *save_tok;
    for (tok = strtok_r(line, " ", &save_tok); tok; tok = strtok_r(NULL, " ", &save_tok)) {
      size_t hex = strlen(tok + 1);
      char bytes[4096];
      assert_int_equal(tok[0], 'x');
      assert_true(hex % 2 == 0 && hex / 2 < sizeof bytes);
      for (size_t i = 0; i < hex / 2; i++) {
        unsigned v;
        assert_int_equal(sscanf(tok + 1 + 2 * i, "%2x", &v), 1);
        bytes[i] = (char)v;
      }
      doc_add_field(d, bytes, hex / 2);
    }
    doc_end_row(d);
  }
}

static void test_texts_round_trip_python(void **state)
{
  static char out[16384];
  char path[4096];
  const char *base = getenv("PIREC_BUILD_DIR");
  struct doc d;
  size_t len, py_len;
  char *py;
  int fd;

  (void)state;
  len = build_document(out, sizeof out);
  snprintf(path, sizeof path, "%s/test-csv-python-%ld.csv", base ? base : "/tmp", (long)getpid());
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, out, len), (ssize_t)len);
  assert_int_equal(close(fd), 0);

  py = run_python(path, &py_len);
  unlink(path);
  if (!py) {
    print_message("python3 is not available: skipping the Python csv module check\n");
    skip();
  }
  parse_python_hex(py, &d);
  free(py);
  check_document(&d, "python csv");
  doc_free(&d);
}

/* --- integers ----------------------------------------------------------------------------------- */

static void check_i64(int64_t v)
{
  char buf[64], expect[32];
  struct pirec_csv_row row;
  int n;

  pirec_csv_row_begin(&row, buf, sizeof buf);
  pirec_csv_row_i64(&row, v);
  n = pirec_csv_row_end(&row);
  decimal(expect, sizeof expect, v);
  assert_int_equal(n, (int)strlen(expect) + 1);
  if (memcmp(buf, expect, strlen(expect)) != 0 || buf[n - 1] != '\n')
    fail_msg("%s formatted as '%.*s'", expect, n, buf);
}

static void check_u64(uint64_t v)
{
  char buf[64], expect[32];
  struct pirec_csv_row row;
  int n;

  pirec_csv_row_begin(&row, buf, sizeof buf);
  pirec_csv_row_u64(&row, v);
  n = pirec_csv_row_end(&row);
  snprintf(expect, sizeof expect, "%" PRIu64, v);
  assert_int_equal(n, (int)strlen(expect) + 1);
  if (memcmp(buf, expect, strlen(expect)) != 0)
    fail_msg("%s formatted as '%.*s'", expect, n, buf);
}

static void test_integers(void **state)
{
  uint64_t x = 0x9E3779B97F4A7C15ull;

  (void)state;
  check_i64(0);
  check_i64(1);
  check_i64(-1);
  check_i64(9);
  check_i64(10);
  check_i64(-10);
  check_i64(INT64_MAX);
  check_i64(INT64_MIN);
  check_i64(INT64_MIN + 1);
  check_u64(0);
  check_u64(UINT64_MAX);
  /* Every power of ten and its neighbours, both signs. */
  for (int64_t p = 1; p <= INT64_MAX / 10; p *= 10) {
    check_i64(p);
    check_i64(p - 1);
    check_i64(p + 1);
    check_i64(-p);
    check_i64(-p + 1);
    check_i64(-p - 1);
  }
  /* And a spread of pseudo-random values of every magnitude. */
  for (int i = 0; i < 100000; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    check_u64(x >> (i % 64));
    check_i64((int64_t)x >> (i % 64));
  }

  /* Typical session row: trial, mono_ns, wall_ns, then more, parsed back by libcsv. */
  char buf[256];
  struct pirec_csv_row row;
  struct doc d;
  int n;
  pirec_csv_row_begin(&row, buf, sizeof buf);
  pirec_csv_row_i64(&row, 3);
  pirec_csv_row_i64(&row, 123456789012345);
  pirec_csv_row_i64(&row, 1763780000123456789);
  pirec_csv_row_empty(&row);
  pirec_csv_row_raw(&row, "0.5", 3);
  pirec_csv_row_i64(&row, INT64_MIN);
  n = pirec_csv_row_end(&row);
  assert_true(n > 0);
  parse_libcsv(buf, (size_t)n, &d);
  assert_int_equal(d.nrows, 1);
  assert_int_equal(row_fields(&d, 0), 6);
  assert_string_equal(doc_field(&d, 0, 1)->data, "123456789012345");
  assert_string_equal(doc_field(&d, 0, 2)->data, "1763780000123456789");
  assert_string_equal(doc_field(&d, 0, 3)->data, "");
  assert_string_equal(doc_field(&d, 0, 4)->data, "0.5");
  assert_string_equal(doc_field(&d, 0, 5)->data, "-9223372036854775808");
  doc_free(&d);
}

/* --- overflow ----------------------------------------------------------------------------------- */

static int build_mixed(char *buf, size_t cap)
{
  struct pirec_csv_row row;

  pirec_csv_row_begin(&row, buf, cap);
  pirec_csv_row_i64(&row, INT64_MIN);
  pirec_csv_row_str(&row, "=needs \"guard\", and quotes");
  pirec_csv_row_empty(&row);
  pirec_csv_row_str(&row, "plain");
  pirec_csv_row_str(&row, "say \"x\"");
  pirec_csv_row_u64(&row, UINT64_MAX);
  pirec_csv_row_raw(&row, "raw", 3);
  pirec_csv_row_str(&row, "-");
  return pirec_csv_row_end(&row);
}

/* The shared leading columns and the optional-time field, as every module's rows start. */
static void test_lead_and_time(void **state)
{
  (void)state;
  char buf[128];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, buf, sizeof buf);
  pirec_csv_row_lead(&row, 3, -5, INT64_MAX);
  pirec_csv_row_time(&row, PIREC_CSV_NO_TIME);
  pirec_csv_row_time(&row, INT64_MIN + 1);
  pirec_csv_row_time(&row, 0);
  int n = pirec_csv_row_end(&row);
  const char *want = "3,-5,9223372036854775807,,-9223372036854775807,0\n";
  assert_int_equal(n, (int)strlen(want));
  assert_memory_equal(buf, want, strlen(want));
}

static void test_overflow(void **state)
{
  enum { CANARY = 64 };
  char full[512], buf[512 + CANARY];
  int full_len;

  (void)state;
  full_len = build_mixed(full, sizeof full);
  assert_true(full_len > 0);

  /* At every capacity from 0 up, the row either fits exactly as it does with room to spare, or
   * the builder reports -ENOSPC; it never writes a byte past its capacity. */
  for (size_t cap = 0; cap <= (size_t)full_len + 2; cap++) {
    int n;
    memset(buf, 0xA5, sizeof buf);
    n = build_mixed(buf, cap);
    for (size_t i = cap; i < cap + CANARY; i++)
      if ((unsigned char)buf[i] != 0xA5)
        fail_msg("capacity %zu: byte %zu past the end was written", cap, i);
    if (cap < (size_t)full_len) {
      if (n != -ENOSPC)
        fail_msg("capacity %zu of %d needed: returned %d, expected -ENOSPC", cap, full_len, n);
    } else {
      assert_int_equal(n, full_len);
      assert_memory_equal(buf, full, (size_t)full_len);
    }
  }

  /* After an overflow, later (smaller) appends are ignored: the row stays failed. */
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, buf, 8);
  pirec_csv_row_str(&row, "this text is longer than eight bytes");
  pirec_csv_row_i64(&row, 1);
  assert_int_equal(pirec_csv_row_end(&row), -ENOSPC);

  /* A header that does not fit fails the same way. */
  static const char *const columns[] = {"trial", "mono_ns", "wall_ns", NULL};
  assert_int_equal(pirec_csv_header(buf, 10, columns), -ENOSPC);
  assert_int_equal(pirec_csv_header(buf, sizeof buf, columns), 22);
  assert_memory_equal(buf, "trial,mono_ns,wall_ns\n", 22);
}

/* --- through a real sink into a file ----------------------------------------------------------- */

struct sink_done {
  int closed;
  struct pirec_sink_counters final;
};

static void on_sink_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  struct sink_done *s = user;
  (void)sink;
  s->closed++;
  s->final = *final;
}

static void test_rows_through_sink(void **state)
{
  enum { ROWS = 5000 };
  static const char *const columns[] = {"trial", "mono_ns", "wall_ns", "seq", "text", NULL};
  const char *base = getenv("PIREC_BUILD_DIR");
  char path[4096], buf[512], small[16];
  struct pirec_sink *sink;
  struct sink_done done = {0};
  struct pirec_csv_row row;
  uv_loop_t loop;
  struct doc d;
  int n;

  (void)state;
  snprintf(path, sizeof path, "%s/test-csv-sink-%ld.csv", base ? base : "/tmp", (long)getpid());
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(pirec_sink_new(&loop, path, NULL, NULL, &done, &sink), 0);

  n = pirec_csv_header(buf, sizeof buf, columns);
  assert_true(n > 0);
  assert_int_equal(pirec_sink_push(sink, buf, (size_t)n), 0);
  for (int i = 0; i < ROWS; i++) {
    pirec_csv_row_begin(&row, buf, sizeof buf);
    pirec_csv_row_i64(&row, i / 1000);
    pirec_csv_row_i64(&row, 1000000000LL + i * 1000003LL);
    pirec_csv_row_i64(&row, 1763780000000000000LL + i);
    pirec_csv_row_u64(&row, (uint64_t)i);
    pirec_csv_row_str(&row, texts[i % NTEXTS]);
    assert_true(pirec_csv_row_end(&row) > 0);
    assert_int_equal(pirec_csv_push(sink, &row), 0);
  }
  /* An overflowed row is refused and counted as a drop, not written. */
  pirec_csv_row_begin(&row, small, sizeof small);
  pirec_csv_row_str(&row, "far too long for sixteen bytes");
  assert_int_equal(pirec_csv_row_end(&row), -ENOSPC);
  assert_int_equal(pirec_csv_push(sink, &row), -ENOSPC);

  pirec_sink_close(sink, on_sink_closed, &done);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(done.closed, 1);
  assert_int_equal(done.final.error, 0);
  assert_int_equal(done.final.records, ROWS + 1);
  assert_int_equal(done.final.drops, 1);

  /* Read the file back and parse it. */
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char file[1 << 20];
  size_t len = fread(file, 1, sizeof file, f);
  fclose(f);
  unlink(path);
  assert_int_equal(done.final.bytes_written, len);
  parse_libcsv(file, len, &d);
  assert_int_equal(d.nrows, ROWS + 1);
  for (size_t c = 0; columns[c]; c++)
    assert_string_equal(doc_field(&d, 0, c)->data, columns[c]);
  for (int i = 0; i < ROWS; i++) {
    char expect[32];
    const struct field *t = doc_field(&d, (size_t)i + 1, 4);
    size_t skip = pirec_csv_guard_len(t->data, t->len);
    const char *want = texts[i % NTEXTS];
    assert_int_equal(row_fields(&d, (size_t)i + 1), 5);
    decimal(expect, sizeof expect, 1000000000LL + i * 1000003LL);
    assert_string_equal(doc_field(&d, (size_t)i + 1, 1)->data, expect);
    decimal(expect, sizeof expect, i);
    assert_string_equal(doc_field(&d, (size_t)i + 1, 3)->data, expect);
    if (t->len - skip != strlen(want) || memcmp(t->data + skip, want, strlen(want)) != 0)
      fail_msg("row %d: text read back as '%s', wrote '%s'", i, t->data + skip, want);
  }
  doc_free(&d);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_texts_round_trip_libcsv), cmocka_unit_test(test_guard_len),
      cmocka_unit_test(test_texts_round_trip_python), cmocka_unit_test(test_integers),
      cmocka_unit_test(test_lead_and_time),           cmocka_unit_test(test_overflow),
      cmocka_unit_test(test_rows_through_sink),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
