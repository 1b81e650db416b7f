/* Tests for media/rtp.c and media/rtcp.c: RTP and RTCP packets against hand-assembled bytes, NTP
 * conversion against known instants and as an exact round trip, RTP timestamp unwrapping and
 * device time across a 32-bit wrap, sequence gaps; and random and mutated input through every
 * parser of media/ (rtp, rtcp, rtsp, http, sdp, h264). */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "h264.h"
#include "http.h"
#include "rtcp.h"
#include "rtp.h"
#include "rtsp.h"
#include "sdp.h"

static void test_rtp_header(void **state)
{
  uint8_t b[64];
  struct pirec_rtp_packet p;
  size_t n = pirec_rtp_write_header(b, 1, 99, 0xBEEF, 0xDEADBEEF, 0x01020304);
  assert_int_equal(n, 12);
  memcpy(b + 12, "abc", 3);
  assert_int_equal(pirec_rtp_parse(b, 15, &p), 0);
  assert_int_equal(p.marker, 1);
  assert_int_equal(p.pt, 99);
  assert_int_equal(p.seq, 0xBEEF);
  assert_int_equal(p.ts, 0xDEADBEEF);
  assert_int_equal(p.ssrc, 0x01020304);
  assert_int_equal(p.payload_len, 3);
  assert_memory_equal(p.payload, "abc", 3);

  /* one CSRC, a 1-word header extension and 2 bytes of padding around a 2-byte payload */
  uint8_t x[12 + 4 + 8 + 4] = {0};
  pirec_rtp_write_header(x, 0, 96, 1, 2, 3);
  x[0] |= 0x20 | 0x10 | 1;
  x[12 + 4 + 2] = 0, x[12 + 4 + 3] = 1; /* extension length: 1 word */
  x[24] = 'h', x[25] = 'i', x[26] = 0, x[27] = 2;
  assert_int_equal(pirec_rtp_parse(x, sizeof x, &p), 0);
  assert_int_equal(p.payload_len, 2);
  assert_memory_equal(p.payload, "hi", 2);

  x[27] = 5; /* padding longer than the payload */
  assert_int_equal(pirec_rtp_parse(x, sizeof x, &p), -EBADMSG);
  assert_int_equal(pirec_rtp_parse(b, 11, &p), -EBADMSG);
  b[0] = 0x40; /* version 1 */
  assert_int_equal(pirec_rtp_parse(b, 15, &p), -EBADMSG);
  uint8_t sr[28];
  struct pirec_rtcp_sr s = {0};
  pirec_rtcp_write_sr(sr, &s);
  assert_int_equal(pirec_rtp_parse(sr, sizeof sr, &p), -EBADMSG); /* RTCP is not RTP */
}

static void test_rtcp_sr(void **state)
{
  struct pirec_rtcp_sr in = {0x11223344, 0xE1234567890ABCDEull, 0xFFFFFFF0u, 77, 9999}, out;
  uint8_t b[64];
  /* a receiver report (no blocks) first, then the sender report: a compound packet */
  uint8_t rr[8] = {0x80, 201, 0, 1, 0, 0, 0, 9};
  memcpy(b, rr, 8);
  assert_int_equal(pirec_rtcp_write_sr(b + 8, &in), 28);
  assert_int_equal(pirec_rtcp_parse_sr(b, 36, &out), 1);
  assert_int_equal(out.ssrc, in.ssrc);
  assert_true(out.ntp == in.ntp);
  assert_int_equal(out.rtp_ts, in.rtp_ts);
  assert_int_equal(out.packets, 77);
  assert_int_equal(out.octets, 9999);
  assert_int_equal(pirec_rtcp_parse_sr(rr, 8, &out), 0);
  assert_int_equal(pirec_rtcp_parse_sr(b, 35, &out), -EBADMSG); /* cut short */
  b[8 + 3] = 3;                                                 /* SR claiming 16 bytes */
  assert_int_equal(pirec_rtcp_parse_sr(b, 24, &out), -EBADMSG);
  assert_int_equal(pirec_rtcp_parse_sr(b, 2, &out), -EBADMSG);
}

static void test_ntp(void **state)
{
  assert_int_equal(pirec_rtcp_ntp_to_unix_ns(2208988800ull << 32), 0);
  assert_int_equal(pirec_rtcp_ntp_to_unix_ns((2208988801ull << 32) | 0x80000000u), 1500000000);
  assert_true(pirec_rtcp_unix_ns_to_ntp(0) == 2208988800ull << 32);
  /* 2026-11-22T00:00:00Z */
  int64_t t = 1795305600LL * 1000000000LL;
  assert_true(pirec_rtcp_unix_ns_to_ntp(t) >> 32 == 1795305600ull + 2208988800ull);
  uint64_t x = 88172645463325252ull;
  for (int i = 0; i < 200000; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    int64_t ns = t + (int64_t)(x % (400ull * 86400 * 1000000000ull));
    int64_t back = pirec_rtcp_ntp_to_unix_ns(pirec_rtcp_unix_ns_to_ntp(ns));
    if (back != ns)
      fail_msg("ntp round trip of %lld gave %lld", (long long)ns, (long long)back);
  }
}

static void test_clock(void **state)
{
  struct pirec_rtcp_clock c;
  pirec_rtcp_clock_init(&c, 90000);
  uint32_t ts0 = 0xFFFFF000u; /* wraps after 4096 ticks */
  int64_t e0 = pirec_rtcp_clock_extend(&c, ts0);
  assert_true(pirec_rtcp_clock_device_ns(&c, e0) == INT64_MIN);
  int64_t t = 1795305600123456789LL;
  pirec_rtcp_clock_sr(&c, ts0 + 450, t); /* the report names a later instant than the sample */
  assert_int_equal(pirec_rtcp_clock_device_ns(&c, e0), t - 5000000);
  int64_t e1 = pirec_rtcp_clock_extend(&c, ts0 + 90000); /* wrapped */
  assert_int_equal(e1 - e0, 90000);
  assert_int_equal(pirec_rtcp_clock_device_ns(&c, e1), t - 5000000 + 1000000000);
  /* a late packet from before the wrap stays before it */
  assert_int_equal(pirec_rtcp_clock_extend(&c, ts0 + 10) - e0, 10);
  assert_int_equal(c.ext_last, e1);
  /* floor rounding: 1 tick at 90 kHz is 11111.1 ns; -1 tick is -11112 */
  assert_int_equal(pirec_rtp_ticks_to_ns(1, 90000), 11111);
  assert_int_equal(pirec_rtp_ticks_to_ns(-1, 90000), -11112);
  assert_int_equal(pirec_rtp_ticks_to_ns(90000LL * 86400 * 365, 90000), 86400LL * 365 * 1000000000);
  /* a new report after the wrap moves the mapping (a drifting device clock) */
  pirec_rtcp_clock_sr(&c, ts0 + 180000, t + 2000000100);
  assert_int_equal(pirec_rtcp_clock_device_ns(&c, e1), t + 1000000100);
  assert_int_equal(c.sr_count, 2);
}

static void test_seq(void **state)
{
  struct pirec_rtp_seq s = {0};
  assert_int_equal(pirec_rtp_seq_update(&s, 65533), 0);
  assert_int_equal(pirec_rtp_seq_update(&s, 65534), 0);
  assert_int_equal(pirec_rtp_seq_update(&s, 1), 2); /* 65535 and 0 lost across the wrap */
  assert_int_equal(pirec_rtp_seq_update(&s, 1), -1);
  assert_int_equal(pirec_rtp_seq_update(&s, 0), -1);
  assert_int_equal(pirec_rtp_seq_update(&s, 2), 0);
  assert_int_equal(pirec_rtp_seq_update(&s, 1002), 999);
  assert_int_equal(s.lost, 1001);
  assert_int_equal(s.late, 2);
  assert_int_equal(s.received, 7);
}
/* Random and mutated input through every parser: nothing may crash or read out of bounds (the
 * suite runs under ASan/UBSan), and every error is a clean -EBADMSG/-EMSGSIZE. */
static void on_au_count(const struct pirec_h264_au *au, void *user)
{
  (*(int *)user)++;
  assert_true(au->len == 0 || au->data != NULL);
}

static uint64_t xorshift(uint64_t *x)
{
  *x ^= *x << 13;
  *x ^= *x >> 7;
  *x ^= *x << 17;
  return *x;
}

static void test_fuzz(void **state)
{
  uint64_t x = 0x9E3779B97F4A7C15ull;
#define NEXT() xorshift(&x)
  struct pirec_h264_depay d;
  assert_int_equal(pirec_h264_depay_init(&d, 1 << 16), 0);
  struct pirec_rtsp_framer f;
  assert_int_equal(pirec_rtsp_framer_init(&f, 4096), 0);
  int aus = 0;
  uint8_t buf[1600];
  static const char seed_msg[] =
      "RTSP/1.0 200 OK\r\nCSeq: 3\r\nContent-Length: 20\r\n\r\nv=0\r\nm=video 0 RTP/AVP 96\r\n";
  static const char http_msg[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 "3\r\nabc\r\n10;x=1\r\n0123456789abcdef\r\n0\r\n\r\n";
  int http_ok = 0;
  for (int iter = 0; iter < 200000; iter++) {
    size_t len = NEXT() % sizeof buf;
    for (size_t i = 0; i < len; i++)
      buf[i] = (uint8_t)NEXT();
    if (iter % 4 == 1 && len >= 12) {
      buf[0] = 0x80 | (buf[0] & 0x3F); /* mostly valid RTP headers */
      buf[1] = (uint8_t)(buf[1] & 0x7F);
    }
    if (iter % 8 == 2 && len > sizeof seed_msg) {
      memcpy(buf, seed_msg, sizeof seed_msg - 1);
      size_t at = NEXT() % len;
      buf[at] = (uint8_t)NEXT();
    }
    struct pirec_rtp_packet p;
    if (pirec_rtp_parse(buf, len, &p) == 0) {
      assert_true(p.payload >= buf && p.payload + p.payload_len <= buf + len);
      int r = pirec_h264_depay_push(&d, &p, (int64_t)(NEXT() % 3 == 0), on_au_count, &aus);
      assert_true(r == 0 || r == -EBADMSG);
    }
    struct pirec_rtcp_sr sr;
    int r = pirec_rtcp_parse_sr(buf, len, &sr);
    assert_true(r == 0 || r == 1 || r == -EBADMSG);
    struct pirec_sdp sdp;
    r = pirec_sdp_parse((const char *)buf, len, &sdp);
    assert_true(r == 0 || r == -EBADMSG);
    const char *v;
    size_t vl;
    pirec_http_header(buf, len, "CSeq", &v, &vl);
    pirec_rtsp_status(buf, len);
    size_t avail;
    uint8_t *sp = pirec_rtsp_framer_space(&f, &avail);
    size_t n = len < avail ? len : avail;
    memcpy(sp, buf, n);
    pirec_rtsp_framer_fill(&f, n);
    struct pirec_rtsp_item it;
    while ((r = pirec_rtsp_framer_next(&f, &it)) != 0) {
      assert_true(r == 1 || r == -EBADMSG || r == -EMSGSIZE);
      if (r == 1)
        assert_true(it.data >= f.buf.data && it.data + it.len <= f.buf.data + f.buf.cap);
    }
    /* last, because it decodes a chunked body in place */
    if (iter % 8 == 5 && len > sizeof http_msg) {
      memcpy(buf, http_msg, sizeof http_msg - 1);
      buf[NEXT() % len] = (uint8_t)NEXT();
      len = sizeof http_msg - 1 + NEXT() % 8;
    }
    uint8_t *body;
    size_t body_len;
    r = pirec_http_reply(buf, len, &body, &body_len);
    if (r >= 0)
      assert_true(body >= buf && body + body_len <= buf + len);
    else
      assert_true(r == -EBADMSG || r == -ENODATA);
    if (iter % 8 == 5 && len >= sizeof http_msg - 1 && r == 200)
      http_ok++;
  }
  assert_true(http_ok > 0);
#undef NEXT
  assert_true(aus > 0);
  assert_true(d.malformed > 0);
  pirec_rtsp_framer_free(&f);
  pirec_h264_depay_free(&d);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rtp_header), cmocka_unit_test(test_rtcp_sr), cmocka_unit_test(test_ntp),
      cmocka_unit_test(test_clock),      cmocka_unit_test(test_seq),     cmocka_unit_test(test_fuzz),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
