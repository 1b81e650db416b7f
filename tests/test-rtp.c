/* Tests for media/rtp.c: RTP and RTCP packets against hand-assembled bytes, NTP conversion
 * against known instants and as an exact round trip, RTP timestamp unwrapping and device time
 * across a 32-bit wrap, sequence gaps, the RTSP/interleaved framer fed one byte at a time and with
 * garbage, SDP parsing (good and bad), HTTP replies (lengths, chunked, cut off, malformed), and H.264 payloading round trips with loss and malformed
 * fragments. */
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

static void test_sdp(void **state)
{
  static const char good[] =
      "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=gaze\r\nt=0 0\r\n"
      "m=application 0 RTP/AVP 99\r\na=rtpmap:99 com.pupillabs.gaze1/90000\r\na=control:trackID=0\r\n"
      "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
      "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0IAKeKQFAe2AtwEBAaQeJEV,aM48gA==\r\n"
      "a=control:rtsp://127.0.0.1:8086/?camera=world/trackID=1\r\n";
  struct pirec_sdp sdp;
  assert_int_equal(pirec_sdp_parse(good, sizeof good - 1, &sdp), 0);
  assert_int_equal(sdp.n_media, 2);
  assert_string_equal(sdp.media[0].media, "application");
  assert_int_equal(sdp.media[0].pt, 99);
  assert_string_equal(sdp.media[0].encoding, "com.pupillabs.gaze1");
  assert_int_equal(sdp.media[0].clock_rate, 90000);
  assert_string_equal(sdp.media[0].control, "trackID=0");
  assert_string_equal(sdp.media[1].encoding, "H264");
  assert_true(strstr(sdp.media[1].fmtp, "packetization-mode=1") != NULL);

  char url[256];
  assert_int_equal(pirec_rtsp_control_url("rtsp://h:1/?camera=gaze", sdp.media[0].control, url, sizeof url),
                   0);
  assert_string_equal(url, "rtsp://h:1/?camera=gaze/trackID=0");
  assert_int_equal(pirec_rtsp_control_url("rtsp://h:1/x/", "t", url, sizeof url), 0);
  assert_string_equal(url, "rtsp://h:1/x/t");
  assert_int_equal(pirec_rtsp_control_url("rtsp://h:1/x", sdp.media[1].control, url, sizeof url), 0);
  assert_string_equal(url, sdp.media[1].control);
  assert_int_equal(pirec_rtsp_control_url("rtsp://h:1/x", "*", url, sizeof url), 0);
  assert_string_equal(url, "rtsp://h:1/x");
  assert_int_equal(pirec_rtsp_control_url("rtsp://h:1/x", "abc", url, 8), -ENAMETOOLONG);

  static const char *bad[] = {
      "",
      "garbage\r\n",
      "v=0\r\ns=no media\r\n",
      "v=0\r\nm=video 0 RTP/AVP 96\r\n",                        /* no rtpmap */
      "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/0\r\n",  /* rate 0 */
      "v=0\r\nm=video 0 RTP/AVP\r\na=rtpmap:96 H264/90000\r\n", /* no payload type */
      "v=1\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (pirec_sdp_parse(bad[i], strlen(bad[i]), &sdp) != -EBADMSG)
      fail_msg("bad sdp %zu accepted", i);
}

/* ---- H.264 ---- */

struct pay_ctx {
  uint8_t pkts[64][2048];
  size_t lens[64];
  int last[64];
  int n;
};

static int collect(const uint8_t *payload, size_t len, int last, void *user)
{
  struct pay_ctx *c = user;
  assert_true(c->n < 64);
  memcpy(c->pkts[c->n], payload, len);
  c->lens[c->n] = len;
  c->last[c->n] = last;
  c->n++;
  return 0;
}

struct au_log {
  int n;
  uint8_t data[8][16384];
  size_t len[8];
  struct pirec_h264_au au[8];
};

static void on_au(const struct pirec_h264_au *au, void *user)
{
  struct au_log *l = user;
  assert_true(l->n < 8);
  l->au[l->n] = *au;
  memcpy(l->data[l->n], au->data, au->len);
  l->len[l->n] = au->len;
  l->au[l->n].data = l->data[l->n];
  l->n++;
}

/* An access unit: AUD, SPS, PPS, a 5000-byte IDR slice. */
static size_t make_au(uint8_t *b)
{
  size_t n = 0;
  static const uint8_t sc[4] = {0, 0, 0, 1};
  const uint8_t nal_types[4] = {0x09, 0x67, 0x68, 0x65};
  const size_t sizes[4] = {2, 12, 4, 5000};
  for (int i = 0; i < 4; i++) {
    memcpy(b + n, sc, 4);
    n += 4;
    b[n] = nal_types[i];
    for (size_t k = 1; k < sizes[i]; k++)
      b[n + k] = (uint8_t)(1 + (k * 7 + i) % 250); /* never 0: no start code emulation */
    n += sizes[i];
  }
  return n;
}

static void send_all(struct pay_ctx *c, struct pirec_h264_depay *d, struct au_log *log, uint32_t ts, int skip)
{
  int64_t lost = 0;
  for (int i = 0; i < c->n; i++) {
    if (i == skip) {
      lost++;
      continue;
    }
    uint8_t pkt[2100];
    size_t h = pirec_rtp_write_header(pkt, c->last[i], 96, (uint16_t)i, ts, 1);
    memcpy(pkt + h, c->pkts[i], c->lens[i]);
    struct pirec_rtp_packet p;
    assert_int_equal(pirec_rtp_parse(pkt, h + c->lens[i], &p), 0);
    pirec_h264_depay_push(d, &p, lost, on_au, log);
    lost = 0;
  }
}

static void test_h264_round_trip(void **state)
{
  static uint8_t au[8192];
  size_t n = make_au(au);
  struct pay_ctx *c = calloc(1, sizeof *c);
  struct au_log *log = calloc(1, sizeof *log);
  assert_int_equal(pirec_h264_pay(au, n, 1400, collect, c), 7); /* 3 small + 4 FU-A */
  assert_int_equal(c->last[6], 1);
  assert_int_equal(c->last[5], 0);
  assert_int_equal(c->pkts[3][0] & 0x1F, 28);
  assert_int_equal(c->pkts[3][1], 0x80 | 5);
  assert_int_equal(c->pkts[6][1], 0x40 | 5);

  struct pirec_h264_depay d;
  assert_int_equal(pirec_h264_depay_init(&d, 1 << 20), 0);
  send_all(c, &d, log, 1000, -1);
  assert_int_equal(log->n, 1);
  assert_int_equal(log->len[0], n);
  assert_memory_equal(log->data[0], au, n);
  assert_int_equal(log->au[0].keyframe, 1);
  assert_int_equal(log->au[0].has_params, 1);
  assert_int_equal(log->au[0].damaged, 0);
  assert_int_equal(log->au[0].complete, 1);
  assert_int_equal(log->au[0].rtp_ts, 1000);

  /* a lost middle fragment damages the unit: it is delivered marked, never silently cut */
  send_all(c, &d, log, 4000, 4);
  assert_int_equal(log->n, 2);
  assert_int_equal(log->au[1].damaged, 1);

  /* the marker packet lost: the next timestamp closes the unit, damaged */
  send_all(c, &d, log, 7000, 6);
  send_all(c, &d, log, 10000, -1);
  assert_int_equal(log->n, 4);
  assert_int_equal(log->au[2].damaged, 1);
  assert_int_equal(log->au[2].complete, 0);
  assert_int_equal(log->au[3].damaged, 0);
  assert_memory_equal(log->data[3], au, n);
  assert_int_equal(d.malformed, 0); /* losses are not malformations */
  pirec_h264_depay_free(&d);
  free(c);
  free(log);
}

static void test_h264_malformed(void **state)
{
  struct pirec_h264_depay d;
  struct au_log *log = calloc(1, sizeof *log);
  assert_int_equal(pirec_h264_depay_init(&d, 1 << 20), 0);
  struct pirec_rtp_packet p = {.marker = 1, .pt = 96, .seq = 1, .ts = 5};
  /* STAP-A with SPS and PPS, marker set: one unit with both parameter sets */
  static const uint8_t stap[] = {24, 0, 3, 0x67, 1, 2, 0, 2, 0x68, 9};
  p.payload = stap;
  p.payload_len = sizeof stap;
  assert_int_equal(pirec_h264_depay_push(&d, &p, 0, on_au, log), 0);
  assert_int_equal(log->n, 1);
  assert_int_equal(log->au[0].has_params, 1);
  static const uint8_t want[] = {0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 9};
  assert_int_equal(log->len[0], sizeof want);
  assert_memory_equal(log->data[0], want, sizeof want);

  static const uint8_t stap_bad[] = {24, 0, 9, 0x67, 1}; /* size past the end */
  static const uint8_t fu_cont[] = {28, 0x05, 1, 2, 3};  /* continuation, no start */
  static const uint8_t stap_b[] = {25, 0, 0};            /* not in mode 1 */
  static const uint8_t forbidden[] = {0x85, 1};
  const uint8_t *bad[] = {stap_bad, fu_cont, stap_b, forbidden};
  size_t lens[] = {sizeof stap_bad, sizeof fu_cont, sizeof stap_b, sizeof forbidden};
  for (int i = 0; i < 4; i++) {
    p.ts = 10 + (uint32_t)i;
    p.payload = bad[i];
    p.payload_len = lens[i];
    assert_int_equal(pirec_h264_depay_push(&d, &p, 0, on_au, log), -EBADMSG);
  }
  p.payload_len = 0;
  assert_int_equal(pirec_h264_depay_push(&d, &p, 0, on_au, log), -EBADMSG);
  assert_int_equal(d.malformed, 5);
  assert_int_equal(log->n, 6);
  for (int i = 1; i < log->n; i++)
    assert_int_equal(log->au[i].damaged, 1);
  pirec_h264_depay_free(&d);
  free(log);
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
      cmocka_unit_test(test_rtp_header),
      cmocka_unit_test(test_rtcp_sr),
      cmocka_unit_test(test_ntp),
      cmocka_unit_test(test_clock),
      cmocka_unit_test(test_seq),
      cmocka_unit_test(test_framer),
      cmocka_unit_test(test_headers),
      cmocka_unit_test(test_sdp),
      cmocka_unit_test(test_http_reply),
      cmocka_unit_test(test_h264_round_trip),
      cmocka_unit_test(test_h264_malformed),
      cmocka_unit_test(test_fuzz),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
