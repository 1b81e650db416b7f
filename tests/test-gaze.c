/* Tests for recorders/eyetracker/gaze.c: the four com.pupillabs.gaze1 layouts against hand-written
 * big-endian bytes, every other size refused, encode/decode round trips, and CSV rows parsed back
 * with libcsv (column count equals the header's, floats bit-exact, absent fields empty). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <csv.h>

#include "pirec/csv.h"
#include "pirec/gaze.h"

static void test_plain_bytes(void **state)
{
  /* x = 1.0, y = -2.5, worn = 255 */
  static const uint8_t b[9] = {0x3F, 0x80, 0, 0, 0xC0, 0x20, 0, 0, 0xFF};
  struct pirec_gaze_sample s;
  assert_int_equal(pirec_gaze_decode(b, sizeof b, &s), 0);
  assert_int_equal(s.kind, PIREC_GAZE_PLAIN);
  assert_true(s.x == 1.0f);
  assert_true(s.y == -2.5f);
  assert_int_equal(s.worn, 255);
  uint8_t out[9];
  assert_int_equal(pirec_gaze_encode(&s, out, sizeof out), 9);
  assert_memory_equal(out, b, 9);
}

static void test_dual_bytes(void **state)
{
  /* left (100, 200), not worn, right (0.5, 1024) */
  static const uint8_t b[17] = {0x42, 0xC8, 0, 0, 0x43, 0x48, 0, 0, 0, 0x3F, 0, 0, 0, 0x44, 0x80, 0, 0};
  struct pirec_gaze_sample s;
  assert_int_equal(pirec_gaze_decode(b, sizeof b, &s), 0);
  assert_int_equal(s.kind, PIREC_GAZE_DUAL);
  assert_true(s.x == 100.0f && s.y == 200.0f);
  assert_int_equal(s.worn, 0);
  assert_true(s.right_x == 0.5f && s.right_y == 1024.0f);
}

static void fill(struct pirec_gaze_sample *s, enum pirec_gaze_kind kind)
{
  memset(s, 0, sizeof *s);
  s->kind = kind;
  s->x = 812.25f;
  s->y = 603.125f;
  s->worn = 255;
  float v = 0.1f;
  if (kind == PIREC_GAZE_DUAL) {
    s->right_x = 790.5f;
    s->right_y = 598.0f;
  }
  if (kind >= PIREC_GAZE_EYESTATE) {
    for (int e = 0; e < 2; e++) {
      s->eye[e].pupil_diameter = v += 1.1f;
      for (int i = 0; i < 3; i++) {
        s->eye[e].eyeball_center[i] = v += -3.3f;
        s->eye[e].optical_axis[i] = v += 0.07f;
      }
    }
  }
  if (kind == PIREC_GAZE_EYELID)
    for (int e = 0; e < 2; e++) {
      s->eye[e].eyelid_angle_top = v += 0.01f;
      s->eye[e].eyelid_angle_bottom = v -= 0.02f;
      s->eye[e].eyelid_aperture = v += 9.5f;
    }
}

static void test_round_trips_and_offsets(void **state)
{
  const enum pirec_gaze_kind kinds[] = {PIREC_GAZE_PLAIN, PIREC_GAZE_DUAL, PIREC_GAZE_EYESTATE,
                                        PIREC_GAZE_EYELID};
  for (int k = 0; k < 4; k++) {
    struct pirec_gaze_sample in, out;
    uint8_t b[89];
    fill(&in, kinds[k]);
    assert_int_equal(pirec_gaze_encode(&in, b, sizeof b), (int)kinds[k]);
    assert_int_equal(pirec_gaze_decode(b, kinds[k], &out), 0);
    assert_memory_equal(&in, &out, sizeof in);
  }
  /* the right eye's pupil diameter sits at byte 9 + 28 in the 65 and 89 byte layouts, the left
   * eyelid aperture at 65 + 8 */
  struct pirec_gaze_sample s;
  uint8_t b[89] = {0};
  b[37] = 0x40; /* 2.0f */
  b[73] = 0x41; /* 8.0f */
  assert_int_equal(pirec_gaze_decode(b, 89, &s), 0);
  assert_true(s.eye[1].pupil_diameter == 2.0f);
  assert_true(s.eye[0].eyelid_aperture == 8.0f);
  assert_true(s.eye[0].pupil_diameter == 0.0f);
}

static void test_wrong_sizes(void **state)
{
  uint8_t b[128] = {0};
  struct pirec_gaze_sample s;
  int accepted = 0;
  for (size_t n = 0; n < sizeof b; n++) {
    int r = pirec_gaze_decode(b, n, &s);
    if (r == 0)
      accepted++;
    else
      assert_int_equal(r, -EBADMSG);
  }
  assert_int_equal(accepted, 4);
  s.kind = (enum pirec_gaze_kind)10;
  assert_int_equal(pirec_gaze_encode(&s, b, sizeof b), -EINVAL);
  fill(&s, PIREC_GAZE_EYELID);
  assert_int_equal(pirec_gaze_encode(&s, b, 88), -EINVAL);
}

/* ---- CSV rows read back with libcsv ---- */

struct parsed {
  char fields[64][48];
  int n;
  int rows;
};

static void cb_field(void *data, size_t len, void *user)
{
  struct parsed *p = user;
  assert_true(p->n < 64 && len < 48);
  if (len)
    memcpy(p->fields[p->n], data, len);
  p->fields[p->n][len] = 0;
  p->n++;
}

static void cb_row(int c, void *user)
{
  ((struct parsed *)user)->rows++;
}

static void parse(const char *text, size_t len, struct parsed *p)
{
  struct csv_parser cp;
  memset(p, 0, sizeof *p);
  assert_int_equal(csv_init(&cp, CSV_STRICT | CSV_EMPTY_IS_NULL), 0);
  assert_int_equal(csv_parse(&cp, text, len, cb_field, cb_row, p), len);
  csv_fini(&cp, cb_field, cb_row, p);
  csv_free(&cp);
}

static int ncolumns(void)
{
  int n = 0;
  while (pirec_gaze_columns[n])
    n++;
  return n;
}

static void test_csv_rows(void **state)
{
  char buf[2048];
  int cols = ncolumns();
  assert_int_equal(cols, 4 + 3 + 2 + 14 + 6 + 4);
  int hl = pirec_csv_header(buf, sizeof buf, pirec_gaze_columns);
  assert_true(hl > 0);
  struct parsed p;
  parse(buf, (size_t)hl, &p);
  assert_int_equal(p.n, cols);
  assert_string_equal(p.fields[3], "device_ns");
  assert_string_equal(p.fields[cols - 2], "dropped_before");
  assert_string_equal(p.fields[cols - 1], "before_start");

  const enum pirec_gaze_kind kinds[] = {PIREC_GAZE_PLAIN, PIREC_GAZE_DUAL, PIREC_GAZE_EYESTATE,
                                        PIREC_GAZE_EYELID};
  for (int k = 0; k < 4; k++) {
    struct pirec_gaze_sample s;
    fill(&s, kinds[k]);
    s.x = 0.1f + (float)k; /* not exactly representable in decimal: the shortest text reads back */
    struct pirec_csv_row row;
    pirec_csv_row_begin(&row, buf, sizeof buf);
    pirec_gaze_csv_row(&row, 3, 123, 456, k == 0 ? INT64_MIN : 1795305600000000000LL, &s, 4000000000u, 77, 2,
                       k & 1);
    int len = pirec_csv_row_end(&row);
    assert_true(len > 0);
    parse(buf, (size_t)len, &p);
    assert_int_equal(p.rows, 1);
    assert_int_equal(p.n, cols);
    assert_string_equal(p.fields[0], "3");
    assert_string_equal(p.fields[3], k == 0 ? "" : "1795305600000000000");
    assert_true(strtof(p.fields[4], NULL) == s.x);
    static const char *const shortest[4] = {"0.1", "1.1", "2.1", "3.1"}; /* %.9g: 0.100000001 */
    assert_string_equal(p.fields[4], shortest[k]);
    assert_true(strtof(p.fields[5], NULL) == s.y);
    assert_string_equal(p.fields[6], "1");
    assert_int_equal(p.fields[7][0] != 0, kinds[k] == PIREC_GAZE_DUAL);
    assert_int_equal(p.fields[9][0] != 0, kinds[k] >= PIREC_GAZE_EYESTATE);
    if (kinds[k] >= PIREC_GAZE_EYESTATE)
      assert_true(strtof(p.fields[9 + 7], NULL) == s.eye[1].pupil_diameter);
    assert_int_equal(p.fields[23][0] != 0, kinds[k] == PIREC_GAZE_EYELID);
    if (kinds[k] == PIREC_GAZE_EYELID)
      assert_true(strtof(p.fields[28], NULL) == s.eye[1].eyelid_aperture);
    assert_string_equal(p.fields[cols - 4], "4000000000");
    assert_string_equal(p.fields[cols - 3], "77");
    assert_string_equal(p.fields[cols - 2], "2");
    assert_string_equal(p.fields[cols - 1], k & 1 ? "1" : "0");
  }
}

static void test_events(void **state)
{
  /* a blink: type 4, start 1795305600000000001, end 1795305600150000002 */
  static const uint8_t blink[20] = {0,    0,    0,    4,    0x18, 0xea, 0x34, 0xee, 0x67, 0x45,
                                    0x00, 0x01, 0x18, 0xea, 0x34, 0xee, 0x70, 0x35, 0xd1, 0x82};
  struct pirec_gaze_event e, back;
  assert_int_equal(pirec_gaze_event_decode(blink, sizeof blink, &e), 0);
  assert_int_equal(e.type, PIREC_GAZE_EVENT_BLINK);
  assert_true(e.start_ns == 1795305600000000001LL);
  assert_true(e.end_ns == 1795305600150000002LL);
  assert_string_equal(pirec_gaze_event_name(e.type), "blink");
  uint8_t b[64];
  assert_int_equal(pirec_gaze_event_encode(&e, b, sizeof b), 20);
  assert_memory_equal(b, blink, 20);
  /* a fixation round trip, and an onset without an end */
  memset(&e, 0, sizeof e);
  e.type = PIREC_GAZE_EVENT_FIXATION;
  e.start_ns = 1795305600000000000LL;
  e.end_ns = e.start_ns + 250000000;
  e.mean_x = 812.5f;
  e.max_velocity = 33.25f;
  assert_int_equal(pirec_gaze_event_encode(&e, b, sizeof b), 60);
  assert_int_equal(pirec_gaze_event_decode(b, 60, &back), 0);
  assert_memory_equal(&e, &back, sizeof e);
  assert_int_equal(pirec_gaze_event_decode(b, 59, &back), -EBADMSG);
  e.type = PIREC_GAZE_EVENT_FIXATION_ONSET;
  assert_int_equal(pirec_gaze_event_encode(&e, b, sizeof b), 12);
  assert_int_equal(pirec_gaze_event_decode(b, 12, &back), 0);
  assert_true(back.end_ns == INT64_MIN);
  /* keep-alive, unknown types, short payloads */
  static const uint8_t ka[4] = {0, 0, 0, 5}, unknown[12] = {0, 0, 0, 9}, neg[12] = {0xff, 0xff, 0xff, 0xff};
  assert_int_equal(pirec_gaze_event_decode(ka, 4, &back), 0);
  assert_int_equal(back.type, PIREC_GAZE_EVENT_KEEPALIVE);
  assert_int_equal(pirec_gaze_event_decode(unknown, 12, &back), -EBADMSG);
  assert_int_equal(pirec_gaze_event_decode(neg, 12, &back), -EBADMSG);
  assert_int_equal(pirec_gaze_event_decode(ka, 3, &back), -EBADMSG);
  /* a CSV row has as many fields as the header */
  char buf[1024];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, buf, sizeof buf);
  pirec_gaze_event_csv_row(&row, 1, 2, 3, INT64_MIN, &e, 7, 8, 9, 0);
  int len = pirec_csv_row_end(&row);
  assert_true(len > 0);
  struct parsed p;
  parse(buf, (size_t)len, &p);
  int cols = 0;
  while (pirec_gaze_event_columns[cols])
    cols++;
  assert_int_equal(p.n, cols);
  assert_string_equal(p.fields[4], "fixation_onset");
  assert_string_equal(p.fields[6], "");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_plain_bytes),
      cmocka_unit_test(test_dual_bytes),
      cmocka_unit_test(test_round_trips_and_offsets),
      cmocka_unit_test(test_wrong_sizes),
      cmocka_unit_test(test_csv_rows),
      cmocka_unit_test(test_events),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
