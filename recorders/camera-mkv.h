#ifndef PIREC_CAMERA_MKV_H
#define PIREC_CAMERA_MKV_H

/* Internal to the camera: H.264 access-unit splitting and in-process Matroska muxing into a sink.
 * Loop thread only. */

#include <stddef.h>
#include <stdint.h>

struct pirec_sink;

/* Splits an H.264 Annex B byte stream into access units at access unit delimiters (x264 -aud 1).
 * An access unit is complete when the next delimiter arrives, or at the end of a run that
 * finished normally (pirec__au_last). */
struct pirec__au {
  uint8_t *buf;
  size_t cap, len, start, scan;
  int have_start;
};

int pirec__au_init(struct pirec__au *au, size_t cap);
void pirec__au_free(struct pirec__au *au);
/* Forgets everything buffered (a crashed encoder's partial output). */
void pirec__au_reset(struct pirec__au *au);
/* Room for at least want more bytes (grows the buffer); NULL when out of memory. */
uint8_t *pirec__au_space(struct pirec__au *au, size_t want);
void pirec__au_fill(struct pirec__au *au, size_t n);
/* 1 and the next complete access unit (valid until the next call), or 0. */
int pirec__au_next(struct pirec__au *au, const uint8_t **data, size_t *len);
/* The trailing access unit of a run that ended cleanly: 1 and it, or 0 when there is none. */
int pirec__au_last(struct pirec__au *au, const uint8_t **data, size_t *len);
/* 1 when the access unit holds an IDR slice. */
int pirec__h264_is_keyframe(const uint8_t *au, size_t len);

struct pirec__mkv;

/* A Matroska writer whose bytes go into sink (not seekable: unknown-size segment, clusters of at
 * most 1 s / 2 MiB, so a cut file stays readable). The header is written with the first access
 * unit, whose SPS/PPS become the track's codec private data. */
int pirec__mkv_new(struct pirec_sink *sink, int width, int height, int fps_num, int fps_den,
                   struct pirec__mkv **out);
/* Writes one access unit at pts_ns (relative to the trial's first frame; stored in ms).
 * Returns 0 or the first error (then the file ends at the last complete write). */
int pirec__mkv_write(struct pirec__mkv *m, const uint8_t *au, size_t len, int64_t pts_ns);
/* Free ring space a write must find in the sink before a frame is muxed, so a push never fails
 * in the middle of a cluster. */
size_t pirec__mkv_margin(void);
int pirec__mkv_finish(struct pirec__mkv *m);
uint64_t pirec__mkv_bytes(const struct pirec__mkv *m);
/* After finish: where the segment's "unknown" size field is in the file and the 8 bytes that give
 * the real size (all bytes written after the field). Returns 0, or -EINVAL when the header does not
 * look as expected (then leave the file as it is). */
int pirec__mkv_seal(const struct pirec__mkv *m, int64_t *offset, uint8_t bytes[8]);
void pirec__mkv_free(struct pirec__mkv *m);

#endif
