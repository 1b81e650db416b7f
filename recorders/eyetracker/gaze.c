/* Pupil Labs `com.pupillabs.gaze1` payloads (see include/pirec/gaze.h). */

#include "pirec/gaze.h"

#include "pirec/csv.h"

#include <errno.h>
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

#define EYE_COLUMNS(E)                                                                               \
  "pupil_diameter_" E, "eyeball_center_" E "_x", "eyeball_center_" E "_y", "eyeball_center_" E "_z", \
      "optical_axis_" E "_x", "optical_axis_" E "_y", "optical_axis_" E "_z"

const char *const pirec_gaze_columns[] = {"trial",
                                          "mono_ns",
                                          "wall_ns",
                                          "device_ns",
                                          "x",
                                          "y",
                                          "worn",
                                          "right_x",
                                          "right_y",
                                          EYE_COLUMNS("left"),
                                          EYE_COLUMNS("right"),
                                          "eyelid_angle_top_left",
                                          "eyelid_angle_bottom_left",
                                          "eyelid_aperture_left",
                                          "eyelid_angle_top_right",
                                          "eyelid_angle_bottom_right",
                                          "eyelid_aperture_right",
                                          "rtp_ts",
                                          "seq",
                                          "dropped_before",
                                          "before_start",
                                          NULL};

static void put_float(struct pirec_csv_row *row, float f)
{
  pirec_csv_row_f32(row, f); /* the shortest text that reads back to the same bits */
}

static void put_float_if(struct pirec_csv_row *row, int present, float f)
{
  if (present)
    put_float(row, f);
  else
    pirec_csv_row_empty(row);
}

void pirec_gaze_csv_row(struct pirec_csv_row *row, int trial, int64_t mono_ns, int64_t wall_ns,
                        int64_t device_ns, const struct pirec_gaze_sample *s, uint32_t rtp_ts, uint64_t seq,
                        uint64_t dropped_before, int before_start)
{
  pirec_csv_row_lead(row, trial, mono_ns, wall_ns);
  pirec_csv_row_time(row, device_ns); /* INT64_MIN (PIREC_CSV_NO_TIME) before the first Sender Report */
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
  pirec_csv_row_u64(row, before_start ? 1 : 0);
}

/* ---- eye events ---- */

static int64_t get_i64(const uint8_t *p)
{
  uint64_t u = 0;
  for (int i = 0; i < 8; i++)
    u = u << 8 | p[i];
  return (int64_t)u;
}

static void put_i64(uint8_t *p, int64_t v)
{
  uint64_t u = (uint64_t)v;
  for (int i = 7; i >= 0; i--, u >>= 8)
    p[i] = (uint8_t)u;
}

static size_t event_size(int type)
{
  switch (type) {
  case PIREC_GAZE_EVENT_SACCADE:
  case PIREC_GAZE_EVENT_FIXATION: return 60;
  case PIREC_GAZE_EVENT_SACCADE_ONSET:
  case PIREC_GAZE_EVENT_FIXATION_ONSET: return 12;
  case PIREC_GAZE_EVENT_BLINK: return 20;
  case PIREC_GAZE_EVENT_KEEPALIVE: return 4;
  default: return 0;
  }
}

int pirec_gaze_event_decode(const uint8_t *p, size_t len, struct pirec_gaze_event *out)
{
  memset(out, 0, sizeof *out);
  out->end_ns = INT64_MIN;
  if (len < 4)
    return -EBADMSG;
  int32_t type = (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
  size_t want = event_size(type);
  /* A keep-alive may carry padding; every other event has exactly its size. */
  if (want == 0 || (type == PIREC_GAZE_EVENT_KEEPALIVE ? len < want : len != want))
    return -EBADMSG;
  out->type = (enum pirec_gaze_event_type)type;
  if (type == PIREC_GAZE_EVENT_KEEPALIVE)
    return 0;
  out->start_ns = get_i64(p + 4);
  if (want >= 20)
    out->end_ns = get_i64(p + 12);
  if (want == 60) {
    float *f[10] = {&out->start_x,       &out->start_y,     &out->end_x,        &out->end_y,
                    &out->mean_x,        &out->mean_y,      &out->amplitude_px, &out->amplitude_deg,
                    &out->mean_velocity, &out->max_velocity};
    for (int i = 0; i < 10; i++)
      *f[i] = get_f32(p + 20 + 4 * i);
  }
  return 0;
}

int pirec_gaze_event_encode(const struct pirec_gaze_event *e, uint8_t *out, size_t cap)
{
  size_t want = event_size(e->type);
  if (want == 0 || cap < want)
    return -EINVAL;
  uint32_t t = (uint32_t)e->type;
  out[0] = (uint8_t)(t >> 24), out[1] = (uint8_t)(t >> 16), out[2] = (uint8_t)(t >> 8), out[3] = (uint8_t)t;
  if (e->type == PIREC_GAZE_EVENT_KEEPALIVE)
    return 4;
  put_i64(out + 4, e->start_ns);
  if (want >= 20)
    put_i64(out + 12, e->end_ns);
  if (want == 60) {
    const float f[10] = {e->start_x, e->start_y,      e->end_x,         e->end_y,         e->mean_x,
                         e->mean_y,  e->amplitude_px, e->amplitude_deg, e->mean_velocity, e->max_velocity};
    for (int i = 0; i < 10; i++)
      put_f32(out + 20 + 4 * i, f[i]);
  }
  return (int)want;
}

const char *pirec_gaze_event_name(enum pirec_gaze_event_type type)
{
  static const char *const names[] = {"saccade",        "fixation", "saccade_onset",
                                      "fixation_onset", "blink",    "keepalive"};
  return (unsigned)type < 6 ? names[type] : "unknown";
}

const char *const pirec_gaze_event_columns[] = {"trial",         "mono_ns",
                                                "wall_ns",       "device_ns",
                                                "event",         "start_ns",
                                                "end_ns",        "start_x",
                                                "start_y",       "end_x",
                                                "end_y",         "mean_x",
                                                "mean_y",        "amplitude_px",
                                                "amplitude_deg", "mean_velocity",
                                                "max_velocity",  "rtp_ts",
                                                "seq",           "dropped_before",
                                                "before_start",  NULL};

void pirec_gaze_event_csv_row(struct pirec_csv_row *row, int trial, int64_t mono_ns, int64_t wall_ns,
                              int64_t device_ns, const struct pirec_gaze_event *e, uint32_t rtp_ts,
                              uint64_t seq, uint64_t dropped_before, int before_start)
{
  pirec_csv_row_lead(row, trial, mono_ns, wall_ns);
  pirec_csv_row_time(row, device_ns); /* INT64_MIN (PIREC_CSV_NO_TIME) before the first Sender Report */
  pirec_csv_row_str(row, pirec_gaze_event_name(e->type));
  pirec_csv_row_i64(row, e->start_ns);
  if (event_size(e->type) < 20)
    pirec_csv_row_empty(row); /* onsets have no end yet */
  else
    pirec_csv_row_i64(row, e->end_ns);
  int full = e->type == PIREC_GAZE_EVENT_SACCADE || e->type == PIREC_GAZE_EVENT_FIXATION;
  const float f[10] = {e->start_x, e->start_y,      e->end_x,         e->end_y,         e->mean_x,
                       e->mean_y,  e->amplitude_px, e->amplitude_deg, e->mean_velocity, e->max_velocity};
  for (int i = 0; i < 10; i++)
    put_float_if(row, full, f[i]);
  pirec_csv_row_u64(row, rtp_ts);
  pirec_csv_row_u64(row, seq);
  pirec_csv_row_u64(row, dropped_before);
  pirec_csv_row_u64(row, before_start ? 1 : 0);
}
