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
  enum pirec_gaze_kind kind; /* == the payload size */
  float x, y;                /* DUAL: the left eye's gaze */
  uint8_t worn;              /* raw byte: 255 worn, 0 not worn */
  float right_x, right_y;    /* DUAL only */
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
 *   dropped_before.
 * Fields a payload lacks are empty; device_ns is empty before the first RTCP Sender Report; worn is
 * 1 or 0; floats are printed with 9 significant digits (they read back bit-exact). */
extern const char *const pirec_gaze_columns[];

struct pirec_csv_row;

/* Appends one gaze row (every column above) to row, which the caller has begun.
 * device_ns INT64_MIN writes an empty field. Thread: whoever owns row. */
void pirec_gaze_csv_row(struct pirec_csv_row *row, int trial, int64_t mono_ns, int64_t wall_ns,
                        int64_t device_ns, const struct pirec_gaze_sample *s, uint32_t rtp_ts,
                        uint64_t seq, uint64_t dropped_before);

#endif
