#ifndef PIREC_FFMPEG_H
#define PIREC_FFMPEG_H

/* ffmpeg command lines for pirec's child jobs (include/pirec/job.h), and a probe that the ffmpeg
 * program exists and has the encoder a config asks for.
 *
 * Timing of encoded raw frames (the decision every user of the encode builder relies on):
 * raw frames on a pipe carry no timestamps, and stamping them when ffmpeg reads them
 * (-use_wallclock_as_timestamps) would record pipe and scheduling jitter, not capture time. So the
 * encoder gets a fixed nominal input rate (-framerate rate_num/rate_den), keeps every frame exactly
 * once (-fps_mode passthrough, or -vsync passthrough on FFmpeg < 5.1: no duplicated or dropped
 * frames) and, by default, no B-frames, so packet i of the MKV is frame i fed on stdin and row i
 * of the module's *_frames.csv. pirec-remux then writes each packet with the captured timestamp
 * from that row. Frame count in == packet count out, which tests/test-ffmpeg.c checks with ffprobe.
 *
 * Builders return a heap argv (NULL-terminated; argv[0] is the program) that the caller frees with
 * pirec_ffmpeg_argv_free(); pass it as pirec_job_options.argv. Builders do no I/O and are
 * thread-safe. pirec_ffmpeg_probe() runs ffmpeg synchronously (tens of ms; it is
 * pirec_ffmpeg_probe_start() on a private loop): call it before the loop runs; from the loop use
 * pirec_ffmpeg_probe_start().
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Raw video from stdin, encoded into a crash-tolerant Matroska file, or into a raw H.264 stream
 * for a caller that muxes the access units itself (the camera recorder does: it pairs each one
 * with its frame's capture time). The defaults are the config schema's ([camera.NAME] preset,
 * crf, gop). */
struct pirec_ffmpeg_encode {
  const char *program;         /* NULL: "ffmpeg" from PATH */
  const char *output;          /* required; a path, or "pipe:1" for the job's stdout (on_stdout) */
  const char *format;          /* "matroska" (default): short clusters, so a crash loses at most about
                              a second; "h264": Annex B with an access unit delimiter before each
                              frame, so a reader can cut the stream into frames as it arrives */
  int width, height;           /* required, > 0 */
  const char *pix_fmt;         /* of the raw input, as ffmpeg names it: "yuv420p" (default), "yuyv422",
                              "nv12", "gray", "rgb24", ... */
  uint32_t rate_num, rate_den; /* nominal input rate (see above); default 30/1 */
  const char *encoder;         /* default "libx264" */
  const char *preset;          /* default "ultrafast" (a Pi's CPU; what [camera.NAME] preset defaults to) */
  int crf;                     /* 0..51; -1: encoder default; default 23 */
  int gop;                     /* keyframe interval in frames; 0: encoder default; default 60 */
  int bframes;                 /* default 0 (keeps packet order == frame order); -1: encoder default */
  const char *out_pix_fmt;     /* default "yuv420p" (what players decode); NULL keeps the input's */
  int threads;                 /* encoder threads; 0: ffmpeg's choice */
  int progress_fd;             /* 0: none; N: "-progress pipe:N" (use 3 with job progress_fd 3) */
  int legacy_vsync;            /* 1: "-vsync passthrough" for FFmpeg < 5.1 (see the probe) */
  const char *loglevel;        /* default "error" */
};

/* Stream copy from one file to another (no re-encoding), e.g. MKV -> MP4. */
struct pirec_ffmpeg_remux {
  const char *program;  /* NULL: "ffmpeg" from PATH */
  const char *input;    /* required */
  const char *output;   /* required */
  const char *format;   /* NULL: from the output's extension; e.g. "mp4", "matroska" */
  int faststart;        /* MP4: move the index to the front (-movflags +faststart) */
  int progress_fd;      /* as above */
  const char *loglevel; /* default "error" */
};

/* Fills e / r with the defaults above (required fields zero / NULL). */
void pirec_ffmpeg_encode_init(struct pirec_ffmpeg_encode *e);
void pirec_ffmpeg_remux_init(struct pirec_ffmpeg_remux *r);

/* Build the argv. Return 0 and *argv_out, -EINVAL (a required field missing or out of range;
 * the field is named in a pirec_log error), -ENOMEM. */
int pirec_ffmpeg_encode_argv(const struct pirec_ffmpeg_encode *e, char ***argv_out);
int pirec_ffmpeg_remux_argv(const struct pirec_ffmpeg_remux *r, char ***argv_out);

/* Frees a builder's argv; NULL is a no-op. */
void pirec_ffmpeg_argv_free(char **argv);

struct pirec_ffmpeg_info {
  int major, minor; /* from "ffmpeg version X.Y..."; 0, 0 when the version string is not numeric
                         (a git build) */
  int legacy_vsync; /* 1 when the version is known and < 5.1 (no -fps_mode) */
};

/* Runs `program -hide_banner -version` and, when encoder is not NULL,
 * `program -hide_banner -encoders`, and checks the encoder is listed. program NULL: "ffmpeg".
 * Returns 0 (and fills info when not NULL), or
 *   -ENOENT  the program was not found or could not run
 *   -ENOTSUP it runs but lacks the encoder
 *   -EPROTO  its output could not be understood, or it exited with an error
 * and, on failure, writes a one-line explanation naming the program and encoder into err
 * (when errlen > 0), e.g. "ffmpeg 'ffmpeg' has no encoder 'libx264' (install ffmpeg built with
 * libx264, or set encoder = ...)". */
int pirec_ffmpeg_probe(const char *program, const char *encoder, struct pirec_ffmpeg_info *info, char *err,
                       size_t errlen);

/* The same checks without blocking: ffmpeg runs as child jobs (include/pirec/job.h) on loop.
 * Returns 0 and cb runs exactly once later, on the loop thread, with the result code as above (0,
 * -ENOTSUP, -EPROTO, or -ENOENT/-ETIMEDOUT if ffmpeg could not run or hung for 10 s), info (valid
 * when status is 0) and err (a one-line explanation, "" on success); both pointers live only during
 * cb. Or returns a negative errno and cb never runs: -ENOENT (program not found: exec failed
 * synchronously, without the spawn helper; through it cb reports -ENOENT), -ENOMEM. program and encoder are copied. All calls on the loop thread. */
typedef void (*pirec_ffmpeg_probe_cb)(int status, const struct pirec_ffmpeg_info *info, const char *err,
                                      void *user);
int pirec_ffmpeg_probe_start(uv_loop_t *loop, const char *program, const char *encoder,
                             pirec_ffmpeg_probe_cb cb, void *user);

#endif
