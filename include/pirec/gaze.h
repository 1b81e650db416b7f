#ifndef PIREC_GAZE_H
#define PIREC_GAZE_H

/* Pupil Labs gaze samples: the RTP payload `com.pupillabs.gaze1` sent by Neon and Invisible.
 *
 * All fields are big-endian IEEE-754 floats except `worn` (one byte, 255 worn / 0 not worn). The
 * payload's size says which layout it is:
 *    9 bytes  x, y, worn                                  (scene-camera pixels)
 *   17 bytes  left x, left y, worn, right x, right y      (dual monocular; x, y hold the left eye)
 *   65 bytes  x, y, worn, then per eye (left, then right): pupil diameter [mm], eyeball centre
 *             x y z [mm], optical axis x y z
 *   89 bytes  the 65-byte layout, then per eye (left, then right): eyelid angle top [rad], eyelid
 *             angle bottom [rad], eyelid aperture [mm]
 * Any other size is malformed. Pure functions: no allocation, any thread.
 */

#include <stddef.h>
#include <stdint.h>

enum pirec_gaze_kind {
  PIREC_GAZE_PLAIN = 9,
  PIREC_GAZE_DUAL = 17,
  PIREC_GAZE_EYESTATE = 65,
  PIREC_GAZE_EYELID = 89,
};

/* Per-eye values of the 65 and 89 byte payloads. */
struct pirec_gaze_eye {
  float pupil_diameter;
  float eyeball_center[3];
  float optical_axis[3];
  float eyelid_angle_top, eyelid_angle_bottom, eyelid_aperture; /* 89 bytes only */
};

struct pirec_gaze_sample {
  enum pirec_gaze_kind kind;    /* == the payload size */
  float x, y;                   /* DUAL: the left eye's gaze */
  uint8_t worn;                 /* raw byte: 255 worn, 0 not worn */
  float right_x, right_y;       /* DUAL only */
  struct pirec_gaze_eye eye[2]; /* EYESTATE and EYELID: [0] left, [1] right */
};

/* Decodes a payload of len bytes into *out (fields a layout lacks are zero).
 * Returns 0, or -EBADMSG when len is not one of 9, 17, 65, 89. */
int pirec_gaze_decode(const uint8_t *payload, size_t len, struct pirec_gaze_sample *out);

/* Encodes s in the layout s->kind into out (at least s->kind bytes). Returns the size written, or
 * -EINVAL for an unknown kind. The simulator's side of decode. */
int pirec_gaze_encode(const struct pirec_gaze_sample *s, uint8_t *out, size_t cap);

/* The columns of tNNN_gaze.csv, a NULL-terminated array of static strings:
 *   trial, mono_ns, wall_ns, device_ns, x, y, worn, then every extra field (right_x, right_y, then
 *   per eye pupil_diameter_E, eyeball_center_E_x/y/z, optical_axis_E_x/y/z, eyelid_angle_top_E,
 *   eyelid_angle_bottom_E, eyelid_aperture_E with E = left, right), then rtp_ts, seq,
 *   dropped_before, before_start (1 for a row received before the trial's start: a pre-trigger
 *   row, docs/FORMATS.md; else 0).
 * Fields a payload lacks are empty; device_ns is empty before the first RTCP Sender Report; worn is
 * 1 or 0; floats are printed with 9 significant digits (they read back bit-exact). */
extern const char *const pirec_gaze_columns[];

struct pirec_csv_row;

/* Appends one gaze row (every column above) to row, which the caller has begun.
 * device_ns INT64_MIN writes an empty field. Thread: whoever owns row. */
void pirec_gaze_csv_row(struct pirec_csv_row *row, int trial, int64_t mono_ns, int64_t wall_ns,
                        int64_t device_ns, const struct pirec_gaze_sample *s, uint32_t rtp_ts, uint64_t seq,
                        uint64_t dropped_before, int before_start);

/* ---- eye events (the eye_events stream, Neon) ----
 *
 * Payloads start with a big-endian int32 type, then big-endian fields:
 *   0 saccade, 1 fixation   int64 start_ns, int64 end_ns, float start x, y, end x, y, mean x, y,
 *                           amplitude [px], amplitude [deg], mean velocity, max velocity (60 bytes)
 *   2 saccade onset, 3 fixation onset   int64 start_ns                           (12 bytes)
 *   4 blink                 int64 start_ns, int64 end_ns                         (20 bytes)
 *   5 keep-alive            nothing to record
 * start_ns and end_ns are the device's clock (ns since the Unix epoch). */

enum pirec_gaze_event_type {
  PIREC_GAZE_EVENT_SACCADE = 0,
  PIREC_GAZE_EVENT_FIXATION = 1,
  PIREC_GAZE_EVENT_SACCADE_ONSET = 2,
  PIREC_GAZE_EVENT_FIXATION_ONSET = 3,
  PIREC_GAZE_EVENT_BLINK = 4,
  PIREC_GAZE_EVENT_KEEPALIVE = 5,
};

struct pirec_gaze_event {
  enum pirec_gaze_event_type type;
  int64_t start_ns, end_ns;                             /* end_ns INT64_MIN for onsets */
  float start_x, start_y, end_x, end_y, mean_x, mean_y; /* saccades and fixations */
  float amplitude_px, amplitude_deg, mean_velocity, max_velocity;
};

/* Decodes an eye event. Returns 0, or -EBADMSG (unknown type, or a size that does not match it). */
int pirec_gaze_event_decode(const uint8_t *payload, size_t len, struct pirec_gaze_event *out);
/* Encodes e into out; returns the size or -EINVAL. */
int pirec_gaze_event_encode(const struct pirec_gaze_event *e, uint8_t *out, size_t cap);
/* "saccade", "fixation", "saccade_onset", "fixation_onset", "blink", "keepalive". */
const char *pirec_gaze_event_name(enum pirec_gaze_event_type type);

/* Columns of tNNN_eye_events.csv: trial, mono_ns, wall_ns, device_ns, event, start_ns, end_ns,
 * start_x, start_y, end_x, end_y, mean_x, mean_y, amplitude_px, amplitude_deg, mean_velocity,
 * max_velocity, rtp_ts, seq, dropped_before, before_start (fields an event lacks are empty;
 * before_start as in pirec_gaze_columns). */
extern const char *const pirec_gaze_event_columns[];
void pirec_gaze_event_csv_row(struct pirec_csv_row *row, int trial, int64_t mono_ns, int64_t wall_ns,
                              int64_t device_ns, const struct pirec_gaze_event *e, uint32_t rtp_ts,
                              uint64_t seq, uint64_t dropped_before, int before_start);

#endif
