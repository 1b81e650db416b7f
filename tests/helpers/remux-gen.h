#ifndef PIREC_TESTS_REMUX_GEN_H
#define PIREC_TESTS_REMUX_GEN_H

/* Test inputs for the remux tests, made with the real ffmpeg/ffprobe and lavfi sources. */

#include <stddef.h>
#include <stdint.h>

/* Runs argv (NULL-terminated) and waits; returns the exit status, 128+signal, or -errno.
 * If out is given, the child's stdout is collected into it (NUL-terminated, truncated at cap). */
int remux_gen_run(char *const argv[], char *out, size_t cap);

/* Encodes frames of testsrc2 (size WxH, 30 fps) with libx264 ultrafast into path; the container
 * comes from the extension (.mkv, .h264). bframes 0 gives an I/P-only stream. */
int remux_gen_video(const char *path, int frames, const char *size, int bframes);

/* Packet positions and sizes of the video's stream as ffprobe reports them (decode order). Returns
 * the packet count, or negative. Arrays are heap allocated; the caller frees them. */
int64_t remux_gen_packets(const char *path, int64_t **pos, int64_t **size);

/* Presentation times in ns (t0 + i * 33.333 ms + deterministic jitter up to +-jitter_ns). */
int64_t *remux_gen_times(int64_t n, int64_t t0, int64_t jitter_ns, uint32_t seed);

/* Writes a frames CSV with n rows: mono_ns = t[i]; device_ts_ns = dev[i] or empty when dev is NULL;
 * wall_ns = t[i] + 1.7e18; bytes and offset from the arrays, or empty when NULL. A partial_tail
 * appends that many bytes of a further row without its newline. Returns 0 or -errno. */
int remux_gen_csv(const char *path, int64_t n, const int64_t *t, const int64_t *dev, const int64_t *bytes,
                  const int64_t *offset, size_t partial_tail);

/* Reads pts of every packet (or every decoded frame, when frames is set) of the output with
 * ffprobe, in the order ffprobe prints them. Returns the count or negative; *tb_den gets the
 * stream's time base denominator when not NULL. */
int64_t remux_gen_probe_pts(const char *path, int frames, int64_t **pts, int *tb_den);

/* Truncates a file to len bytes. */
int remux_gen_truncate(const char *path, int64_t len);

/* A fresh temporary directory under $TMPDIR; the caller removes it with remux_gen_rmrf. */
int remux_gen_tmpdir(char *out, size_t cap);
void remux_gen_rmrf(const char *dir);

/* $PIREC_BUILD_DIR/apps/NAME into out: 0 when it is there and executable, -ENOENT when it is not
 * or PIREC_BUILD_DIR (set by ctest) is missing. */
int remux_gen_app(const char *name, char *out, size_t cap);

#endif
