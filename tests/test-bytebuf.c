/* Tests for io/bytebuf.c: the chunked-stream window every parser in the tree reads through. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "pirec/bytebuf.h"

static void test_init_rejects(void **state)
{
  (void)state;
  struct pirec_bytebuf b;
  assert_int_equal(pirec_bytebuf_init(&b, 0, 0), -EINVAL);
  assert_int_equal(pirec_bytebuf_init(&b, 10, 5), -EINVAL);
  assert_null(b.data);
  pirec_bytebuf_free(&b); /* a refused init leaves a buffer free() accepts */
  pirec_bytebuf_free(&b);
}

/* Chunks of odd sizes, items handed out as they complete: every byte comes out once, in order,
 * and a buffer big enough for the largest item plus one chunk never grows. */
static void test_stream_in_chunks(void **state)
{
  (void)state;
  struct pirec_bytebuf b;
  assert_int_equal(pirec_bytebuf_init(&b, 64, 64), 0);
  uint8_t next_in = 0, next_out = 0;
  for (int round = 0; round < 1000; round++) {
    size_t avail;
    uint8_t *p = pirec_bytebuf_space(&b, 13, &avail);
    assert_non_null(p);
    assert_true(avail >= 13);
    size_t n = 1 + (size_t)round % 13;
    for (size_t i = 0; i < n; i++)
      p[i] = next_in++;
    pirec_bytebuf_fill(&b, n);
    /* items of 7 bytes */
    while (pirec_bytebuf_len(&b) >= 7) {
      const uint8_t *d = pirec_bytebuf_data(&b);
      for (size_t i = 0; i < 7; i++)
        assert_int_equal(d[i], next_out++);
      pirec_bytebuf_consume(&b, 7);
    }
  }
  assert_int_equal(b.cap, 64);
  pirec_bytebuf_free(&b);
}

/* Growth doubles up to max, keeps the bytes, and refuses past max without losing them. */
static void test_grow_to_max(void **state)
{
  (void)state;
  struct pirec_bytebuf b;
  assert_int_equal(pirec_bytebuf_init(&b, 0, 10000), 0);
  uint8_t chunk[1000];
  for (int i = 0; i < 10; i++) {
    memset(chunk, i, sizeof chunk);
    assert_int_equal(pirec_bytebuf_append(&b, chunk, sizeof chunk), 0);
  }
  assert_int_equal(pirec_bytebuf_len(&b), 10000);
  assert_int_equal(b.cap, 10000);
  assert_int_equal(pirec_bytebuf_append(&b, chunk, 1), -ENOBUFS);
  size_t avail = 99;
  assert_null(pirec_bytebuf_space(&b, 1, &avail));
  assert_int_equal(avail, 0);
  for (int i = 0; i < 10; i++)
    assert_int_equal(pirec_bytebuf_data(&b)[i * 1000 + 999], i);
  /* consuming makes room again, by compaction */
  pirec_bytebuf_consume(&b, 1000);
  assert_int_equal(pirec_bytebuf_append(&b, chunk, 1000), 0);
  assert_int_equal(pirec_bytebuf_data(&b)[0], 1);
  assert_int_equal(pirec_bytebuf_data(&b)[9999], 9);
  pirec_bytebuf_reset(&b);
  assert_int_equal(pirec_bytebuf_len(&b), 0);
  pirec_bytebuf_free(&b);
  assert_null(b.data);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_init_rejects),
      cmocka_unit_test(test_stream_in_chunks),
      cmocka_unit_test(test_grow_to_max),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
