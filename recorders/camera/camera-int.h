#ifndef PIREC_CAMERA_INT_H
#define PIREC_CAMERA_INT_H

/* Internals shared by the camera's files (not installed). The files form layers, bottom up:
 * camera-split.c (byte streams cut into frames, rpicam metadata lines), camera-rpicam.c (the
 * rpicam-vid job), camera-source.c (every source behind one interface), camera.c (the recorder);
 * camera-jpeg.c (JPEG pictures for snapshots and previews) is called by camera.c only.
 * A file calls only the ones below it. tests/test-camera.c and bench/bench-camera.c include this
 * header for the splitter and the hold hook. */

#include "pirec/bytebuf.h"
#include "pirec/camera.h"
#include "pirec/container_of.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

/* Formats into a malloc'd string (NULL when out of memory). Header-only, so every layer has it. */
static inline char *pirec__camera_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline char *pirec__camera_strdupf(const char *fmt, ...)
{
  va_list ap;
  char *out = NULL;
  va_start(ap, fmt);
  if (vasprintf(&out, fmt, ap) < 0)
    out = NULL;
  va_end(ap);
  return out;
}

/* ---- frame splitter for byte streams (rpicam-vid's stdout; camera-split.c) ---- */

enum pirec__camera_split_mode {
  PIREC__CAMERA_SPLIT_SIZE = 0, /* fixed-size raw frames */
  PIREC__CAMERA_SPLIT_JPEG,     /* concatenated JPEG images: SOI ... EOI, marker segments parsed */
};

/* A plain value embedded in its owner: _init, then _free. One thread. */
struct pirec__camera_splitter {
  enum pirec__camera_split_mode mode;
  struct pirec_bytebuf buf;
  size_t frame_bytes;
  size_t max_frame;
  size_t scan;      /* JPEG: resume position of the scan, relative to the unconsumed bytes */
  int scan_state;   /* JPEG: 0 before SOI, 1 in headers, 2 in entropy-coded data */
  uint64_t skipped; /* bytes discarded while resynchronising (garbage, oversize) */
};

/* frame_bytes: SIZE mode's frame size; max_frame: the largest frame accepted (JPEG mode; a longer
 * one is skipped as garbage). Allocates 2 * max(frame_bytes, max_frame) bytes, which grow on
 * demand to a few frames. Returns 0, -EINVAL, -ENOMEM. */
int pirec__camera_splitter_init(struct pirec__camera_splitter *sp, enum pirec__camera_split_mode mode,
                                size_t frame_bytes, size_t max_frame);
void pirec__camera_splitter_free(struct pirec__camera_splitter *sp);
/* Where to read the next bytes into, and how many fit (never 0 after init unless the buffer is at
 * its cap or out of memory: then NULL). */
uint8_t *pirec__camera_splitter_space(struct pirec__camera_splitter *sp, size_t *avail);
/* n bytes were written at the space returned last. */
void pirec__camera_splitter_fill(struct pirec__camera_splitter *sp, size_t n);
/* Copies len bytes in. 0, -ENOBUFS (the cap: no frame completes), -ENOMEM. */
int pirec__camera_splitter_append(struct pirec__camera_splitter *sp, const uint8_t *data, size_t len);
/* Returns 1 and the next complete frame (valid until the next call on sp), or 0 when more bytes are
 * needed. */
int pirec__camera_splitter_next(struct pirec__camera_splitter *sp, const uint8_t **frame, size_t *len);
/* Bytes skipped so far because they were not part of a well-formed frame. */
uint64_t pirec__camera_splitter_skipped(const struct pirec__camera_splitter *sp);

/* rpicam-vid --metadata-format txt writes one block per frame: "Name=value" lines, then a blank
 * line. Classifies one line (its newline may be included): PIREC__RPICAM_META_SENSOR_TS with *ns
 * for "SensorTimestamp=N" (libcamera's CLOCK_BOOTTIME ns), PIREC__RPICAM_META_END for the blank
 * line that ends a block, PIREC__RPICAM_META_OTHER for any other line, -EINVAL for a
 * SensorTimestamp that is not a non-negative integer. */
enum { PIREC__RPICAM_META_OTHER = 0, PIREC__RPICAM_META_SENSOR_TS = 1, PIREC__RPICAM_META_END = 2 };
int pirec__rpicam_metadata_line(const char *line, size_t len, int64_t *ns);

/* ---- the rpicam-vid source (camera-rpicam.c) ---- */

struct pirec__rpicam;

/* Starts rpicam-vid as a pirec_job on a loop of the source's own. On failure *out may still be
 * set (free it with pirec__rpicam_free) and *message says why. */
int pirec__rpicam_open(const struct pirec_camera_settings *s, struct pirec__rpicam **out,
                       struct pirec_camera_format *fmt, char **message);
/* The capture thread's blocking read: 0 and a frame valid until the next read, AVERROR_EOF once
 * the child ended and its frames are out, -EINTR when *interrupted is set. */
int pirec__rpicam_read(struct pirec__rpicam *rp, struct pirec_camera_frame *frame, atomic_int *interrupted);
/* Any thread: wakes a blocked read. */
void pirec__rpicam_interrupt(struct pirec__rpicam *rp);
/* Stops the child (SIGTERM to its group, SIGKILL after 1 s) and frees. NULL is a no-op. */
void pirec__rpicam_free(struct pirec__rpicam *rp);

/* ---- sources (camera-source.c) ---- */

/* Bytes to put at the start of an elementary-stream file before the first frame (H.264/HEVC
 * parameter sets from the container's extradata in Annex B form), or len 0. Valid until free. */
void pirec__camera_source_stream_header(const struct pirec_camera_source *src, const uint8_t **data,
                                        size_t *len);

/* 1 when s is a URL source read over the network (a "://" URL other than file:), whose end of
 * stream means the peer went away, not that the recording is over; 0 for files, file: and pipe:
 * URLs and every other source kind. */
int pirec__camera_source_is_network(const struct pirec_camera_settings *s);

/* ---- the camera (camera.c) ---- */

/* Test and benchmark hook, loop thread: while held, the loop takes nothing from the capture ring
 * (as if the disk or the encoder had stalled); frames pile up and the capture thread starts
 * dropping when the ring is full. Releasing resumes draining. */
void pirec__camera_hold(struct pirec_camera *cam, int hold);

/* Benchmark and test hook, before a trial starts: 1 feeds raw frames to the encoder with write(2)
 * (a copy into the pipe), 0 (the default) with vmsplice(2) (the pipe references ring pages). */
void pirec__camera_set_feed(struct pirec_camera *cam, int by_write);

/* ---- camera-jpeg.c: JPEG pictures of raw frames (threadpool only) ---- */

struct AVPacket;
/* One raw frame (data, len bytes, in fmt) as a JPEG in pkt: scaled to max_width pixels wide
 * (height in proportion) when it is wider, or when its pixel format is not one the mjpeg encoder
 * takes directly (max_width 0: never scaled; then only yuv420p and yuv422p are taken). Sets the
 * picture's size. Returns >= 0, -ENOTSUP for a format it cannot take, or an FFmpeg error. */
int pirec__camera_jpeg(const struct pirec_camera_format *fmt, const uint8_t *data, size_t len, int max_width,
                       struct AVPacket *pkt, int *width, int *height);

#endif
