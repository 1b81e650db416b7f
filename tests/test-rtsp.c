/* Tests for media/rtsp.c and media/http.c: the RTSP/interleaved framer fed one byte at a time and
 * with garbage, message headers, and HTTP replies (lengths, chunked, cut off, malformed). */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http.h"
#include "rtsp.h"

struct items {
  int n;
  int kinds[16];
  int channels[16];
  char text[16][256];
  size_t lens[16];
  int errors;
};

static void drain(struct pirec_rtsp_framer *f, struct items *it)
{
  struct pirec_rtsp_item item;
  int r;
  while ((r = pirec_rtsp_framer_next(f, &item)) != 0) {
    if (r < 0) {
      it->errors++;
      continue;
    }
    assert_true(it->n < 16);
    it->kinds[it->n] = item.kind;
    it->channels[it->n] = item.channel;
    if (item.kind == PIREC_RTSP_MESSAGE) {
      snprintf(it->text[it->n], 256, "%.*s|%.*s", (int)item.len, (const char *)item.data, (int)item.body_len,
               item.body);
      it->lens[it->n] = item.body_len;
    } else {
      memcpy(it->text[it->n], item.data, item.len < 256 ? item.len : 256);
      it->lens[it->n] = item.len;
    }
    it->n++;
  }
}

static void feed(struct pirec_rtsp_framer *f, struct items *it, const char *data, size_t len, size_t step)
{
  for (size_t i = 0; i < len; i += step) {
    size_t avail, n = len - i < step ? len - i : step;
    uint8_t *sp = pirec_rtsp_framer_space(f, &avail);
    assert_true(avail >= n);
    memcpy(sp, data + i, n);
    pirec_rtsp_framer_fill(f, n);
    drain(f, it);
  }
}

static void test_framer(void **state)
{
  static const char stream[] = "RTSP/1.0 200 OK\r\nCSeq: 2\r\ncontent-length: 5\r\n\r\nv=0\r\n"
                               "$\x01\x00\x03"
                               "abc"
                               "junk\x01\x02"
                               "GET_PARAMETER rtsp://x/ RTSP/1.0\r\nCSeq: 9\r\n\r\n"
                               "$\x00\x00\x00";
  size_t len = sizeof stream - 1;
  for (size_t step = 1; step <= len; step = step * 2 + 1) {
    struct pirec_rtsp_framer f;
    struct items it = {0};
    assert_int_equal(pirec_rtsp_framer_init(&f, 4096), 0);
    feed(&f, &it, stream, len, step);
    assert_int_equal(it.n, 4);
    assert_int_equal(it.kinds[0], PIREC_RTSP_MESSAGE);
    assert_string_equal(it.text[0], "RTSP/1.0 200 OK\r\nCSeq: 2\r\ncontent-length: 5\r\n\r\n|v=0\r\n");
    assert_int_equal(it.kinds[1], PIREC_RTSP_INTERLEAVED);
    assert_int_equal(it.channels[1], 1);
    assert_int_equal(it.lens[1], 3);
    assert_memory_equal(it.text[1], "abc", 3);
    assert_int_equal(it.kinds[2], PIREC_RTSP_MESSAGE);
    assert_int_equal(it.kinds[3], PIREC_RTSP_INTERLEAVED);
    assert_int_equal(it.lens[3], 0);
    assert_true(it.errors >= 1);
    assert_int_equal(f.skipped, 6); /* "junk\1\2": every byte before GET_PARAMETER */
    pirec_rtsp_framer_free(&f);
  }
  /* a message without its blank line within max_message is skipped, not buffered forever */
  struct pirec_rtsp_framer f;
  struct items it = {0};
  assert_int_equal(pirec_rtsp_framer_init(&f, 64), 0);
  char big[200];
  memset(big, 'A', sizeof big);
  memcpy(big, "RTSP/1.0 200 OK\r\nX: ", 20);
  feed(&f, &it, big, sizeof big, 50);
  assert_int_equal(it.n, 0);
  assert_true(it.errors > 0);
  /* a Content-Length over the limit is refused */
  static const char huge[] = "RTSP/1.0 200 OK\r\nContent-Length: 99999\r\n\r\n";
  struct items it2 = {0};
  feed(&f, &it2, huge, sizeof huge - 1, sizeof huge - 1);
  assert_int_equal(it2.n, 0);
  assert_true(it2.errors > 0);
  pirec_rtsp_framer_free(&f);
}

static void test_headers(void **state)
{
  static const char m[] =
      "RTSP/1.0 454 Session Not Found\r\nCSeq: 4\r\nSession:  12345678;timeout=60 \r\n\r\n";
  const char *v;
  size_t vl;
  assert_int_equal(pirec_rtsp_status((const uint8_t *)m, sizeof m - 1), 454);
  assert_int_equal(pirec_http_header((const uint8_t *)m, sizeof m - 1, "session", &v, &vl), 1);
  assert_int_equal(vl, strlen("12345678;timeout=60"));
  assert_memory_equal(v, "12345678;timeout=60", vl);
  assert_int_equal(pirec_http_header((const uint8_t *)m, sizeof m - 1, "Transport", &v, &vl), 0);
  assert_int_equal(pirec_http_header((const uint8_t *)m, sizeof m - 1, "CSeq", &v, &vl), 1);
  assert_memory_equal(v, "4", 1);
  assert_int_equal(pirec_rtsp_status((const uint8_t *)"HTTP/1.1 200 OK\r\n", 17), -EBADMSG);
}

/* Parses text as a whole HTTP reply (in a writable copy); returns the code and the body. */
static int http_reply(const char *text, char *body_out, size_t cap)
{
  size_t len = strlen(text);
  uint8_t *copy = malloc(len + 1);
  memcpy(copy, text, len + 1);
  uint8_t *body = NULL;
  size_t body_len = 0;
  int code = pirec_http_reply(copy, len, &body, &body_len);
  body_out[0] = 0;
  if (code >= 0) {
    assert_true(body_len < cap);
    memcpy(body_out, body, body_len);
    body_out[body_len] = 0;
  }
  free(copy);
  return code;
}

static void test_http_reply(void **state)
{
  char b[256];
  /* Content-Length bounds the body, even when more bytes follow */
  assert_int_equal(http_reply("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello, more", b, sizeof b), 200);
  assert_string_equal(b, "hello");
  /* no length: the body runs to the end of the connection */
  assert_int_equal(http_reply("HTTP/1.0 404 Not Found\r\nServer: x\r\n\r\n{\"m\":1}", b, sizeof b), 404);
  assert_string_equal(b, "{\"m\":1}");
  /* chunked, with an extension, upper-case hex and a trailer */
  assert_int_equal(http_reply("HTTP/1.1 200 OK\r\ntransfer-encoding:  Chunked\r\n\r\n"
                              "4;a=b\r\n{\"re\r\nA\r\nsult\":[1]}\r\n0\r\nX-Trailer: 1\r\n\r\n",
                              b, sizeof b),
                   200);
  assert_string_equal(b, "{\"result\":[1]}");
  /* an empty chunked body */
  assert_int_equal(
      http_reply("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b, sizeof b), 204);
  assert_string_equal(b, "");
  /* cut off: in the headers, short of Content-Length, before the last chunk, inside a size line */
  assert_int_equal(http_reply("HTTP/1.1 200 OK\r\nContent-Len", b, sizeof b), -ENODATA);
  assert_int_equal(http_reply("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", b, sizeof b), -ENODATA);
  assert_int_equal(
      http_reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", b, sizeof b),
      -ENODATA);
  assert_int_equal(http_reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", b, sizeof b),
                   -ENODATA);
  assert_int_equal(http_reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1f", b, sizeof b),
                   -ENODATA);
  /* malformed: no status line, a bad status, a bad length, a bad chunk, an unknown coding */
  assert_int_equal(http_reply("RTSP/1.0 200 OK\r\n\r\n", b, sizeof b), -EBADMSG);
  assert_int_equal(http_reply("HTTP/1.1 2x0 OK\r\n\r\n", b, sizeof b), -EBADMSG);
  assert_int_equal(http_reply("HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc", b, sizeof b), -EBADMSG);
  assert_int_equal(http_reply("HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\nabc", b, sizeof b), -EBADMSG);
  assert_int_equal(
      http_reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", b, sizeof b),
      -EBADMSG);
  assert_int_equal(
      http_reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", b, sizeof b),
      -EBADMSG);
  assert_int_equal(http_reply("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc", b, sizeof b),
                   -EBADMSG);
  assert_int_equal(http_reply("HTTP/1.1", b, sizeof b), -EBADMSG);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_framer),
      cmocka_unit_test(test_headers),
      cmocka_unit_test(test_http_reply),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
