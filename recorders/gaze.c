/* Pupil Labs `com.pupillabs.gaze1` payloads (see include/pirec/gaze.h). */

#include "pirec/gaze.h"

#include "pirec/csv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static float get_f32(const uint8_t *p)
{
  uint32_t u = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static void put_f32(uint8_t *p, float f)
{
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  p[0] = (uint8_t)(u >> 24);
  p[1] = (uint8_t)(u >> 16);
  p[2] = (uint8_t)(u >> 8);
  p[3] = (uint8_t)u;
}

/* Offsets of the per-eye blocks: the 65-byte layout puts 7 floats per eye after byte 9, the
 * 89-byte layout appends 3 eyelid floats per eye after byte 65. */
enum { EYE_BLOCK = 9, LID_BLOCK = 65 };

int pirec_gaze_decode(const uint8_t *p, size_t len, struct pirec_gaze_sample *out)
{
  memset(out, 0, sizeof *out);
  if (len != PIREC_GAZE_PLAIN && len != PIREC_GAZE_DUAL && len != PIREC_GAZE_EYESTATE &&
      len != PIREC_GAZE_EYELID)
    return -EBADMSG;
  out->kind = (enum pirec_gaze_kind)len;
  out->x = get_f32(p);
  out->y = get_f32(p + 4);
  out->worn = p[8];
  if (len == PIREC_GAZE_DUAL) {
    out->right_x = get_f32(p + 9);
    out->right_y = get_f32(p + 13);
    return 0;
  }
  if (len >= PIREC_GAZE_EYESTATE) {
    for (int e = 0; e < 2; e++) {
      const uint8_t *b = p + EYE_BLOCK + e * 28;
      struct pirec_gaze_eye *eye = &out->eye[e];
      eye->pupil_diameter = get_f32(b);
      for (int i = 0; i < 3; i++) {
        eye->eyeball_center[i] = get_f32(b + 4 + 4 * i);
        eye->optical_axis[i] = get_f32(b + 16 + 4 * i);
      }
    }
  }
  if (len == PIREC_GAZE_EYELID) {
    for (int e = 0; e < 2; e++) {
      const uint8_t *b = p + LID_BLOCK + e * 12;
      out->eye[e].eyelid_angle_top = get_f32(b);
      out->eye[e].eyelid_angle_bottom = get_f32(b + 4);
      out->eye[e].eyelid_aperture = get_f32(b + 8);
    }
  }
  return 0;
}

int pirec_gaze_encode(const struct pirec_gaze_sample *s, uint8_t *out, size_t cap)
{
  size_t len = (size_t)s->kind;
  if ((len != PIREC_GAZE_PLAIN && len != PIREC_GAZE_DUAL && len != PIREC_GAZE_EYESTATE &&
       len != PIREC_GAZE_EYELID) ||
      cap < len)
    return -EINVAL;
  put_f32(out, s->x);
  put_f32(out + 4, s->y);
  out[8] = s->worn;
  if (len == PIREC_GAZE_DUAL) {
    put_f32(out + 9, s->right_x);
    put_f32(out + 13, s->right_y);
    return (int)len;
  }
  if (len >= PIREC_GAZE_EYESTATE) {
    for (int e = 0; e < 2; e++) {
      uint8_t *b = out + EYE_BLOCK + e * 28;
      const struct pirec_gaze_eye *eye = &s->eye[e];
      put_f32(b, eye->pupil_diameter);
      for (int i = 0; i < 3; i++) {
        put_f32(b + 4 + 4 * i, eye->eyeball_center[i]);
        put_f32(b + 16 + 4 * i, eye->optical_axis[i]);
      }
    }
  }
  if (len == PIREC_GAZE_EYELID) {
    for (int e = 0; e < 2; e++) {
      uint8_t *b = out + LID_BLOCK + e * 12;
      put_f32(b, s->eye[e].eyelid_angle_top);
      put_f32(b + 4, s->eye[e].eyelid_angle_bottom);
      put_f32(b + 8, s->eye[e].eyelid_aperture);
    }
  }
  return (int)len;
}

#define EYE_COLUMNS(E)                                                                           \
  "pupil_diameter_" E, "eyeball_center_" E "_x", "eyeball_center_" E "_y",                        \
      "eyeball_center_" E "_z", "optical_axis_" E "_x", "optical_axis_" E "_y",                   \
      "optical_axis_" E "_z"

const char *const pirec_gaze_columns[] = {
    "trial", "mono_ns", "wall_ns", "device_ns", "x", "y", "worn", "right_x", "right_y",
    EYE_COLUMNS("left"), EYE_COLUMNS("right"),
    "eyelid_angle_top_left", "eyelid_angle_bottom_left", "eyelid_aperture_left",
    "eyelid_angle_top_right", "eyelid_angle_bottom_right", "eyelid_aperture_right",
    "rtp_ts", "seq", "dropped_before", NULL};

static void put_float(struct pirec_csv_row *row, float f)
{
  char b[32];
  /* 9 significant digits: every float reads back to the same bits. */
  int n = snprintf(b, sizeof b, "%.9g", (double)f);
  pirec_csv_row_raw(row, b, n > 0 ? (size_t)n : 0);
}

static void put_float_if(struct pirec_csv_row *row, int present, float f)
{
  if (present)
    put_float(row, f);
  else
    pirec_csv_row_empty(row);
}

void pirec_gaze_csv_row(struct pirec_csv_row *row, int trial, int64_t mono_ns, int64_t wall_ns,
                        int64_t device_ns, const struct pirec_gaze_sample *s, uint32_t rtp_ts,
                        uint64_t seq, uint64_t dropped_before)
{
  pirec_csv_row_i64(row, trial);
  pirec_csv_row_i64(row, mono_ns);
  pirec_csv_row_i64(row, wall_ns);
  if (device_ns == INT64_MIN)
    pirec_csv_row_empty(row);
  else
    pirec_csv_row_i64(row, device_ns);
  put_float(row, s->x);
  put_float(row, s->y);
  pirec_csv_row_i64(row, s->worn ? 1 : 0);
  int dual = s->kind == PIREC_GAZE_DUAL;
  put_float_if(row, dual, s->right_x);
  put_float_if(row, dual, s->right_y);
  int eyes = s->kind == PIREC_GAZE_EYESTATE || s->kind == PIREC_GAZE_EYELID;
  for (int e = 0; e < 2; e++) {
    const struct pirec_gaze_eye *eye = &s->eye[e];
    put_float_if(row, eyes, eye->pupil_diameter);
    for (int i = 0; i < 3; i++)
      put_float_if(row, eyes, eye->eyeball_center[i]);
    for (int i = 0; i < 3; i++)
      put_float_if(row, eyes, eye->optical_axis[i]);
  }
  int lids = s->kind == PIREC_GAZE_EYELID;
  for (int e = 0; e < 2; e++) {
    put_float_if(row, lids, s->eye[e].eyelid_angle_top);
    put_float_if(row, lids, s->eye[e].eyelid_angle_bottom);
    put_float_if(row, lids, s->eye[e].eyelid_aperture);
  }
  pirec_csv_row_u64(row, rtp_ts);
  pirec_csv_row_u64(row, seq);
  pirec_csv_row_u64(row, dropped_before);
}
