#ifndef PIREC_MKV_H
#define PIREC_MKV_H

/* Internal to the recorders (not installed): H.264 Annex B access units muxed into Matroska
 * in-process (libavformat) through a custom AVIO that pushes into a pirec_sink, and sealed once
 * the file is closed. The access units themselves are h264.h's. Used by the camera
 * (recorders/camera/camera.c) and the eye tracker's scene video (recorders/eyetracker/streams.c,
 * trial.c). Loop thread only: nothing here is thread-safe, and no callback is ever run except
 * pirec_mkv_seal_file's. */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pirec_sink;

/* ---- Matroska ---- */

struct pirec_mkv;

/* A Matroska writer for one H.264 track whose bytes go into sink (borrowed: it must outlive every
 * write/finish call; the writer never closes it). The output is not seekable: unknown-size segment,
 * one cluster per access unit, pushed to the sink before pirec_mkv_write returns, so a file cut
 * short (process killed, power lost) stays readable up to its last unit that reached the disk, and
 * a caller that pushes a unit's CSV row after writing the unit never has a row whose frame is
 * still in process memory.
 * Nothing is written until the first access unit, which must hold SPS and PPS: they become the
 * track's codec private data.
 * width/height: the track's picture size, or both 0 to take it from the first unit's SPS.
 * fps_num/fps_den: the nominal frame rate written as the stream's average, or 0 for none.
 * Returns 0 and *out, or -ENOMEM. */
int pirec_mkv_new(struct pirec_sink *sink, int width, int height, int fps_num, int fps_den,
                  struct pirec_mkv **out);
/* Writes one Annex B access unit at pts_ns (relative to the first; stored in ms, kept strictly
 * increasing), flagged as a keyframe when keyframe != 0. Returns 0; -EINVAL when this unit cannot
 * start the file (no SPS/PPS, or no readable picture size) and nothing was written yet (a later
 * unit may still start it); or the first mux/sink error, after which every call returns it and the
 * file ends at the last complete sink push. */
int pirec_mkv_write(struct pirec_mkv *m, const uint8_t *au, size_t len, int keyframe, int64_t pts_ns);
/* Benchmark hook: with on == 0, clusters of up to 1 s / 2 MiB are kept in memory and written when
 * they close (the cost of the default, one flushed cluster per unit, is measured against it). */
void pirec_mkv_set_per_frame(struct pirec_mkv *m, int on);
/* 1 once the header (and so a first access unit) has been written. */
int pirec_mkv_started(const struct pirec_mkv *m);
/* Free ring space a writer should find in the sink before a frame is muxed, so a push never fails
 * in the middle of a cluster. */
size_t pirec_mkv_margin(void);
/* Writes the trailer (when a header was written) and flushes to the sink. 0 or the first error. */
int pirec_mkv_finish(struct pirec_mkv *m);
/* Bytes accepted by the sink so far. */
uint64_t pirec_mkv_bytes(const struct pirec_mkv *m);
/* After finish, and when every byte reached the file: where the segment's "unknown" size field is
 * in the file and the 8 bytes that give the real size (all bytes written after the field), so a
 * cleanly closed file can be told from a cut one. Returns 0, or -EINVAL when the writer failed or
 * the header does not look as expected (then leave the file as it is). */
int pirec_mkv_seal(const struct pirec_mkv *m, int64_t *offset, uint8_t bytes[8]);

struct pirec_mkv_sealer;
/* status: 0 when the real size is in the file and synced; else the first open/write/fdatasync
 * error (negative errno), and the file is left as it was on disk: valid, just unsealed. The sealer
 * is no longer used once this runs, so it may free the memory holding it. */
typedef void (*pirec_mkv_seal_cb)(struct pirec_mkv_sealer *s, int status);

/* The request memory of one pirec_mkv_seal_file, owned by the caller (embed it in the object
 * whose file is sealed): it must stay valid and untouched from a call that returned 0 until cb
 * has run. data is the caller's; the other fields are private. */
struct pirec_mkv_sealer {
  void *data;
  uv_loop_t *loop;
  uv_fs_t req;
  uv_file fd;
  int status;
  int64_t offset;
  uint8_t bytes[8];
  pirec_mkv_seal_cb cb;
};

/* Seals path, the file m's sink wrote after its close: opens it, writes pirec_mkv_seal's 8 bytes
 * at their offset, fdatasyncs and closes it, all on libuv's threadpool. file_bytes is the sink's
 * final bytes_written; the caller must only call this for a sink that closed without error.
 * m and path are only read during the call (m may be freed right after).
 * Returns 0, and cb runs exactly once, on the loop thread, never inside this call; or -EINVAL
 * when file_bytes != pirec_mkv_bytes(m) (some bytes never reached the file) or m cannot be
 * sealed (pirec_mkv_seal), or uv_fs_open's error; then cb never runs and nothing was touched. */
int pirec_mkv_seal_file(uv_loop_t *loop, struct pirec_mkv_sealer *s, const struct pirec_mkv *m,
                        const char *path, uint64_t file_bytes, pirec_mkv_seal_cb cb);
/* NULL is allowed. Does not touch the sink. */
void pirec_mkv_free(struct pirec_mkv *m);

#endif
