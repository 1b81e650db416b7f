/* Tests for io/jsonl.c: the JSON-lines framing, parsing and writing both ends of the controller
 * protocol share. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pirec/jsonl.h"

static void feed(struct pirec_jsonl_reader *r, const char *bytes, size_t n)
{
  size_t avail = 0;
  char *p = pirec_jsonl_reader_space(r, &avail);
  assert_non_null(p);
  assert_true(avail >= n);
  memcpy(p, bytes, n);
  pirec_jsonl_reader_fill(r, n);
}

/* Takes every complete line and joins them with '|' into out. Returns how many. */
static int take_lines(struct pirec_jsonl_reader *r, char *out, size_t cap)
{
  int count = 0;
  const char *line;
  size_t len;
  while (pirec_jsonl_reader_next(r, &line, &len) == 1) {
    size_t used = strlen(out);
    assert_true(used + len + 2 < cap);
    if (count++)
      out[used++] = '|';
    memcpy(out + used, line, len);
    out[used + len] = '\0';
  }
  return count;
}

/* A stream cut at every possible place gives the same lines. */
static void test_split_across_chunks(void **state)
{
  (void)state;
  const char stream[] = "{\"cmd\":\"status\"}\n\n{\"cmd\":\"note\",\"text\":\"a b\"}\n{\"x\":1}\n";
  size_t n = sizeof stream - 1;
  for (size_t cut = 0; cut <= n; cut++) {
    struct pirec_jsonl_reader r;
    assert_int_equal(pirec_jsonl_reader_init(&r, 0), 0);
    char out[256] = "";
    feed(&r, stream, cut);
    int lines = take_lines(&r, out, sizeof out);
    char rest[256] = "";
    feed(&r, stream + cut, n - cut);
    lines += take_lines(&r, rest, sizeof rest);
    char joined[512];
    snprintf(joined, sizeof joined, "%s%s%s", out, *out && *rest ? "|" : "", rest);
    assert_int_equal(lines, 4);
    assert_string_equal(joined, "{\"cmd\":\"status\"}||{\"cmd\":\"note\",\"text\":\"a b\"}|{\"x\":1}");
    pirec_jsonl_reader_free(&r);
  }
}

/* One byte at a time, and lines left in the buffer until the reader asks for them. */
static void test_byte_by_byte_and_held_lines(void **state)
{
  (void)state;
  struct pirec_jsonl_reader r;
  assert_int_equal(pirec_jsonl_reader_init(&r, 0), 0);
  const char stream[] = "ab\ncd\nef";
  for (size_t i = 0; i < sizeof stream - 1; i++)
    feed(&r, stream + i, 1);
  const char *line;
  size_t len;
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 1);
  assert_memory_equal(line, "ab", 2);
  /* held: more bytes arrive before the next line is taken */
  feed(&r, "\n", 1);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 1);
  assert_int_equal(len, 2);
  assert_memory_equal(line, "cd", 2);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 1);
  assert_memory_equal(line, "ef", 2);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 0);
  pirec_jsonl_reader_free(&r);
  pirec_jsonl_reader_free(&r); /* a freed reader is a no-op */
}

/* A line at the limit passes; one over it is reported once (as soon as the partial line is over),
 * skipped to its '\n', and the next line reads normally. */
static void test_over_long_lines(void **state)
{
  (void)state;
  struct pirec_jsonl_reader r;
  assert_int_equal(pirec_jsonl_reader_init(&r, 8), 0);
  const char *line;
  size_t len;
  feed(&r, "12345678\n", 9);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 1);
  assert_int_equal(len, 8);
  /* complete and too long */
  feed(&r, "123456789\nok\n", 13);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), -EMSGSIZE);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 1);
  assert_memory_equal(line, "ok", 2);
  /* a partial line over the limit, then its tail across two more reads */
  feed(&r, "0123456789", 10);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), -EMSGSIZE);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 0);
  feed(&r, "abcdefgh", 8);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 0);
  feed(&r, "ij\nnext\n", 8);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 1);
  assert_int_equal(len, 4);
  assert_memory_equal(line, "next", 4);
  char err[64];
  pirec_jsonl_too_long(8, err, sizeof err);
  assert_string_equal(err, "line too long (over 8 bytes)");
  pirec_jsonl_reader_reset(&r);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 0);
  pirec_jsonl_reader_free(&r);
}

/* The default limit: 2 MiB of line plus a read always fit without error. */
static void test_default_limit(void **state)
{
  (void)state;
  struct pirec_jsonl_reader r;
  assert_int_equal(pirec_jsonl_reader_init(&r, 0), 0);
  char *chunk = malloc(PIREC_JSONL_READ_CHUNK);
  memset(chunk, 'x', PIREC_JSONL_READ_CHUNK);
  const char *line;
  size_t len;
  for (size_t i = 0; i < PIREC_JSONL_MAX_LINE / PIREC_JSONL_READ_CHUNK; i++) {
    feed(&r, chunk, PIREC_JSONL_READ_CHUNK);
    assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 0);
  }
  feed(&r, "\n", 1);
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 1);
  assert_int_equal(len, PIREC_JSONL_MAX_LINE);
  feed(&r, chunk, PIREC_JSONL_READ_CHUNK); /* room again after the line was taken */
  free(chunk);
  pirec_jsonl_reader_free(&r);
}

/* CRLF and trailing blanks read like LF; a blank line is a keep-alive. */
static void test_crlf_and_blank(void **state)
{
  (void)state;
  json_t *o = NULL;
  char err[300];
  const char crlf[] = "{\"cmd\":\"stop\"} \t\r";
  assert_int_equal(pirec_jsonl_parse_object(crlf, sizeof crlf - 1, &o, err, sizeof err), 1);
  assert_string_equal(json_string_value(json_object_get(o, "cmd")), "stop");
  json_decref(o);
  assert_int_equal(pirec_jsonl_parse_object(" \r", 2, &o, err, sizeof err), 0);
  assert_null(o);
  json_t *v = pirec_jsonl_parse("[1]\r", 4, 0, NULL);
  assert_true(json_is_array(v));
  json_decref(v);
}

/* Invalid JSON, a value that is not an object, duplicate keys and NUL bytes: the error texts
 * jansson's own messages make, with the column. */
static void test_errors(void **state)
{
  (void)state;
  json_t *o = NULL;
  char err[300];
  assert_int_equal(pirec_jsonl_parse_object("[1,2]", 5, &o, err, sizeof err), -EINVAL);
  assert_string_equal(err, "malformed command: expected a JSON object");
  assert_int_equal(pirec_jsonl_parse_object("{\"a\":", 5, &o, err, sizeof err), -EINVAL);
  assert_null(o);
  json_error_t e;
  assert_null(json_loadb("{\"a\":", 5, JSON_REJECT_DUPLICATES, &e));
  char want[300];
  snprintf(want, sizeof want, "malformed JSON at column %d: %s", e.column, e.text);
  assert_string_equal(err, want);
  assert_int_equal(pirec_jsonl_parse_object("{\"a\":1,\"a\":2}", 13, &o, err, sizeof err), -EINVAL);
  assert_non_null(strstr(err, "malformed JSON at column"));
  /* A NUL byte inside the line is not the line's end: jansson sees it and refuses it. */
  const char nul[] = "{\"a\":\"x\0y\"}";
  assert_int_equal(pirec_jsonl_parse_object(nul, sizeof nul - 1, &o, err, sizeof err), -EINVAL);
  assert_null(json_loadb(nul, sizeof nul - 1, JSON_REJECT_DUPLICATES, &e));
  snprintf(want, sizeof want, "malformed JSON at column %d: %s", e.column, e.text);
  assert_string_equal(err, want);
  pirec_jsonl_unknown_command("st\"op", "start or stop", err, sizeof err);
  assert_string_equal(err, "unknown command \"st\\\"op\" (expected start or stop)");
  /* and the framer passes NUL bytes through as part of the line */
  struct pirec_jsonl_reader r;
  assert_int_equal(pirec_jsonl_reader_init(&r, 0), 0);
  feed(&r, "a\0b\n", 4);
  const char *line;
  size_t len;
  assert_int_equal(pirec_jsonl_reader_next(&r, &line, &len), 1);
  assert_int_equal(len, 3);
  assert_memory_equal(line, "a\0b", 3);
  pirec_jsonl_reader_free(&r);
}

static void test_encode(void **state)
{
  (void)state;
  json_t *o = json_pack("{s:s,s:i}", "reply", "ok\u00e9", "id", 7);
  size_t len = 0;
  char *line = pirec_jsonl_encode(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER, &len);
  assert_non_null(line);
  assert_string_equal(line, "{\"reply\":\"ok\u00e9\",\"id\":7}\n");
  assert_int_equal(len, strlen(line));
  free(line);
  line = pirec_jsonl_encode(o, JSON_ENSURE_ASCII | JSON_PRESERVE_ORDER, &len);
  assert_string_equal(line, "{\"reply\":\"ok\\u00E9\",\"id\":7}\n");
  free(line);
  json_decref(o);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_split_across_chunks),
      cmocka_unit_test(test_byte_by_byte_and_held_lines),
      cmocka_unit_test(test_over_long_lines),
      cmocka_unit_test(test_default_limit),
      cmocka_unit_test(test_crlf_and_blank),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_encode),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
