/* Tests for media/h264.c: H.264 payloading and depayloading round trips with loss and malformed
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
#include "rtp.h"

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

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_h264_round_trip),
      cmocka_unit_test(test_h264_malformed),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
