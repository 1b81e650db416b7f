#ifndef PIREC_CAMERA_H
#define PIREC_CAMERA_H

/* The camera recorder: capture, timestamp, encode and write every frame of one camera.
 *
 * Layers, bottom up:
 *   - sources (struct pirec_camera_source): one blocking interface over V4L2 devices, Raspberry Pi
 *     CSI cameras (a supervised rpicam-vid child), any FFmpeg input URL or file, and FFmpeg's lavfi
 *     test sources. Used by exactly one thread (the capture thread).
 *   - the camera (struct pirec_camera): a named capture thread that only stamps frames and pushes
 *     them into the camera's ring; the loop drains the ring into an ffmpeg encode job (raw frames)
 *     or straight into a file sink (MJPEG/H.264 frames), and writes one tNNN_frames.csv row per frame
 *     that reached the video file.
 *
 * Frame rows: trial,mono_ns,wall_ns,frame,seq,device_ts_ns,dropped_before,bytes,offset
 *   frame          0-based index of the frame in the video file (row i is packet i); a row is
 *                  written only once its frame's bytes are in the video file, whole
 *   seq            the capture sequence number (0-based, counts every frame the source delivered)
 *   device_ts_ns   the source's own timestamp (V4L2 kernel buffer time, rpicam sensor pts, the
 *                  stream's pts); empty when the source has none
 *   dropped_before frames lost just before this one, all causes together
 *   bytes          bytes of this frame in the video file (encoded size for the encode path)
 *   offset         byte offset of the frame in an elementary-stream file; empty for MKV
 *
 * Errors are negative errno values (FFmpeg's AVERROR codes included); pirec_strerror() prints them.
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- settings (immutable while a camera runs) ---- */

enum pirec_camera_kind {
  PIREC_CAMERA_LAVFI = 0, /* source: a lavfi source filter, e.g. "testsrc2" (size/rate added) */
  PIREC_CAMERA_V4L2,      /* source: a device path, e.g. "/dev/video0" */
  PIREC_CAMERA_RPICAM,    /* source: the camera index given to rpicam-vid ("0") */
  PIREC_CAMERA_URL,       /* source: any FFmpeg input: rtsp://..., a file path, ... */
};

#define PIREC_CAMERA_NAME_MAX 64
#define PIREC_CAMERA_PATH_MAX 1024

struct pirec_camera_settings {
  char name[PIREC_CAMERA_NAME_MAX]; /* "camera0"; names the thread, jobs and log lines */
  enum pirec_camera_kind kind;
  char source[PIREC_CAMERA_PATH_MAX];
  int width, height;    /* 0: the source's default (lavfi and rpicam need them; default 1280x720) */
  int fps_num, fps_den; /* frame rate; fps_num 0: the source's default (lavfi/rpicam: 30) */
  /* v4l2: "mjpeg", "yuyv422", "h264", ... (FFmpeg's input_format); rpicam: "yuv420" or "mjpeg";
   * empty: the source's default (rpicam: yuv420). */
  char input_format[32];
  /* url: replay at the stream's own rate (ffmpeg -re): -1 auto (files yes, network URLs no). */
  int realtime;

  /* rpicam: the program (default "rpicam-vid"; tests point it at a stand-in) and extra arguments
   * split on spaces. yuv420 frames are stride*height*3/2 bytes; stride 0 means width. */
  char rpicam_program[PIREC_CAMERA_PATH_MAX];
  char rpicam_args[512];
  int rpicam_stride;

  /* Encoder for raw frames: ffmpeg program, libx264 preset, crf and GOP (frames). */
  char ffmpeg[PIREC_CAMERA_PATH_MAX];
  char preset[32];
  int crf;
  int gop;
  int encoder_threads; /* 0: ffmpeg's default */

  /* The capture ring in milliseconds of frames (raw) or bytes (ring_bytes wins when nonzero).
   * Default 1000 ms; compressed sources default to 32 MiB. */
  unsigned ring_ms;
  size_t ring_bytes;
  /* Bytes queued into the encoder's stdin at most (default 8 raw frames). */
  size_t encoder_outstanding;
  /* Encoder restart policy: failures within window before giving up (default 5), first backoff. */
  unsigned encoder_max_failures;
  unsigned encoder_backoff_ms;
  unsigned fsync_interval_ms; /* file sinks; 1000; PIREC_SINK_FSYNC_NEVER (0): only at close */
  /* Sources that send MJPEG or H.264 (stored as received): while no trial runs, keep the last
   * pre_trigger_ns of frames (from the keyframe at or before them) and write them first into the
   * next trial, rows marked before_start; 0 (default): only the current GOP, so a trial's video
   * starts at the keyframe before its start. pre_trigger_bytes: the memory for it, 0: sized from
   * pre_trigger_ns (MJPEG 8 MiB/s, H.264 2 MiB/s, for N s plus 2 s). Raw sources: encoded per trial,
   * each file starts at a keyframe; pre_trigger is not applied (a warning says so). */
  int64_t pre_trigger_ns;
  size_t pre_trigger_bytes;
  /* Segments (docs/FORMATS.md): a trial's files are split into tNNN_sMMM.* (MMM from 001), each
   * with its own frames CSV, once segment_ns of video (from the segment's first frame) or
   * segment_bytes of video file are reached, at the next frame that starts a GOP (raw: any frame,
   * the new file's encoder starts with a keyframe; MJPEG: any frame; H.264: a keyframe; HEVC: never).
   * The rows go on across the files: frame, seq and dropped_before as in one file. 0 and 0
   * (default): one file per trial, named tNNN.*. */
  int64_t segment_ns;
  uint64_t segment_bytes;
};

/* Fills s with the defaults above (lavfi testsrc2, 1280x720 at 30 fps, libx264 ultrafast crf 23). */
void pirec_camera_settings_default(struct pirec_camera_settings *s);

/* Parses a --source value into s->kind and s->source:
 *   "lavfi:testsrc2" (also "lavfi:" + any source filter with options, e.g. "lavfi:smptebars")
 *   "v4l2:/dev/video0" or a path under /dev/
 *   "rpicam:0" or "rpicam" (camera 0)
 *   "url:..." or anything with "://" (rtsp://, http://, file:...) or any other path (a file)
 * Returns 0 or -EINVAL (empty, too long). */
int pirec_camera_settings_set_source(struct pirec_camera_settings *s, const char *spec);

/* ---- sources (one thread) ---- */

enum pirec_camera_codec {
  PIREC_CAMERA_CODEC_RAW = 0, /* uncompressed; pix_fmt names the layout */
  PIREC_CAMERA_CODEC_MJPEG,
  PIREC_CAMERA_CODEC_H264,
  PIREC_CAMERA_CODEC_HEVC,
  PIREC_CAMERA_CODEC_OTHER, /* recorded as an elementary stream, extension ".bin" */
};

struct pirec_camera_format {
  enum pirec_camera_codec codec;
  char pix_fmt[32]; /* FFmpeg pixel format name for raw frames ("yuv420p", "yuyv422") */
  int width, height;
  int fps_num, fps_den;        /* nominal rate (0/1 when unknown) */
  size_t frame_bytes;          /* raw: exact bytes per frame; compressed: 0 */
  int has_device_ts;           /* frames carry device_ts_ns */
  int device_clock_continuous; /* the device clock goes on across a reopen of the source (rpicam's
                                  boot clock), so a gap across a reconnect is measured with it */
};

struct pirec_camera_frame {
  const uint8_t *data; /* valid until the next read or free */
  size_t len;
  int64_t device_ts_ns;    /* INT64_MIN when the source has none */
  int64_t arrival_mono_ns; /* CLOCK_MONOTONIC right after the frame arrived */
  int64_t arrival_wall_ns; /* CLOCK_REALTIME taken next to arrival_mono_ns */
};

struct pirec_camera_source;

/* Opens the source described by s (blocking: device open, RTSP connect, child spawn). The lavfi
 * source is paced to the wall clock at the configured rate, as a camera would deliver it; a url
 * file with realtime set is paced by its timestamps. Returns 0 and *out, or a negative error and
 * *message (malloc'd, caller frees; may be NULL) saying what failed, e.g.
 * "cannot open '/dev/video9': No such file or directory". */
int pirec_camera_source_open(const struct pirec_camera_settings *s, struct pirec_camera_source **out,
                             char **message);

/* The format of the frames read; valid after open. */
void pirec_camera_source_format(const struct pirec_camera_source *src, struct pirec_camera_format *fmt);

/* Blocks until the next frame and fills *frame. Returns 0, AVERROR_EOF at the end of a file or
 * when an rpicam child exits, -EINTR after pirec_camera_source_interrupt(), or another negative
 * error (device gone, bad data). */
int pirec_camera_source_read(struct pirec_camera_source *src, struct pirec_camera_frame *frame);

/* Any thread: makes a blocked or future read return -EINTR soon (within one frame interval). */
void pirec_camera_source_interrupt(struct pirec_camera_source *src);

/* Closes the device, stops the rpicam child (SIGTERM, then SIGKILL after 1 s) and frees. NULL is a
 * no-op. Not concurrently with read. */
void pirec_camera_source_free(struct pirec_camera_source *src);

/* ---- the camera ---- */

struct pirec_camera;

enum pirec_camera_event {
  PIREC_CAMERA_EVENT_SOURCE_ERROR = 1, /* the source failed; reconnecting with backoff */
  PIREC_CAMERA_EVENT_SOURCE_RECONNECTED,
  PIREC_CAMERA_EVENT_SOURCE_EOF,      /* a file (path, file: or pipe: URL) ended: no more frames;
                                          a network URL that ends is a SOURCE_ERROR instead */
  PIREC_CAMERA_EVENT_ENCODER_CRASHED, /* the encoder died; restart pending; detail has the status */
  PIREC_CAMERA_EVENT_ENCODER_RESTARTED,
  PIREC_CAMERA_EVENT_ENCODER_FAILED,    /* restarts given up: frames count as dropped from now on */
  PIREC_CAMERA_EVENT_WRITE_ERROR,       /* a file sink failed (ENOSPC, EIO); the trial keeps what it has */
  PIREC_CAMERA_EVENT_FRAMES_LOST_AFTER, /* at a trial's end: frames lost after its last row, which no
                                           row follows to carry (the status's dropped_after) */
  PIREC_CAMERA_EVENT_SEGMENT,           /* a new segment's files begin (settings' segment_ns/bytes):
                                           the message names them and their first frame */
};

/* Runs on the loop thread. message describes the event (lowercase, subject quoted); valid during
 * the call. */
typedef void (*pirec_camera_event_cb)(struct pirec_camera *cam, enum pirec_camera_event event,
                                      const char *message, void *user);
/* Runs on the loop thread when a trial's files are complete and closed (err 0), or with the first
 * error met while finishing them. */
typedef void (*pirec_camera_stopped_cb)(struct pirec_camera *cam, int err, void *user);
typedef void (*pirec_camera_close_cb)(struct pirec_camera *cam, void *user);

/* Creates a camera (nothing runs yet). s is copied. on_event may be NULL (events are then logged).
 * Returns 0 and *out, -EINVAL (bad settings), -ENOMEM. */
int pirec_camera_new(uv_loop_t *loop, const struct pirec_camera_settings *s, pirec_camera_event_cb on_event,
                     void *user, struct pirec_camera **out);

/* Opens the source (blocking), sizes the ring from the real format and starts the capture thread
 * ("cam-<name>"). Frames captured outside a trial are counted and discarded. Returns 0 or the
 * source's open error, whose message pirec_camera_start_error() gives (logged once per distinct
 * message). When that error is PIREC_CAMERA_FAILURE_DEVICE_MISSING (pirec_camera_classify: no
 * device node, unplugged) nothing was set up and pirec_camera_start may be called again later (a
 * device plugged in meanwhile is then used); after any other error only close is allowed. */
int pirec_camera_start(struct pirec_camera *cam);
/* The message of the last failed pirec_camera_start ("cannot open '/dev/video0': No such file or
 * directory"), "" when none failed. Valid until the next pirec_camera_start or close. */
const char *pirec_camera_start_error(const struct pirec_camera *cam);

/* Starts trial `trial` (>= 1) writing into dir (created if missing): tNNN.mkv (raw sources,
 * encoded by an ffmpeg child) or tNNN.mjpeg / tNNN.h264 (compressed sources, written as received),
 * and tNNN_frames.csv; part > 0 names them tNNN_pP.* instead; with segments on, tNNN_s001.* (or
 * tNNN_pP_s001.*), then _s002 and on as the trial is split, the stop callback running once, after
 * the last segment's files are closed. Returns 0, -EBUSY (a trial runs or is
 * stopping), -EINVAL (not started), or the error creating the directory, the sinks or the encoder
 * (then no trial runs). */
int pirec_camera_trial_start(struct pirec_camera *cam, const char *dir, int trial, int part);

/* Encrypts the files of the trials started from now on under key (copied; NULL: clear files), the
 * files named by their path inside session_dir (docs/PRIVACY.md). Returns 0 or -ENOMEM. */
struct pirec_crypt_key;
int pirec_camera_set_key(struct pirec_camera *cam, const struct pirec_crypt_key *key,
                         const char *session_dir);

/* Finishes the trial: no new frames are taken, the encoder drains and exits, the MKV trailer is
 * written, both files are synced and closed, then cb runs (never inside this call).
 * Returns 0, or -EINVAL when no trial runs (cb never runs). */
int pirec_camera_trial_stop(struct pirec_camera *cam, pirec_camera_stopped_cb cb, void *user);

/* The next trial_start follows the stop that comes next (a trial change): frames captured from
 * that stop on are kept in the capture ring for the next trial instead of being discarded, so its
 * first row follows the last row of this one by one frame interval. Frames the ring cannot hold
 * meanwhile are counted in the next trial's first dropped_before; none is lost uncounted. Holds
 * until that trial_start (or close). */
void pirec_camera_hand_over(struct pirec_camera *cam);

/* 1 while a trial runs (from a successful trial_start until its stop callback). */
int pirec_camera_recording(const struct pirec_camera *cam);

/* A histogram summary of nanosecond durations. */
struct pirec_camera_latency {
  uint64_t count;
  int64_t p50_ns, p99_ns, p999_ns, max_ns; /* percentiles within ~3% (log-linear buckets) */
};

/* The class of a capture failure, each with its own policy (docs/CAMERA.md):
 *   TRANSIENT       a read failed, a network stream or an rpicam child ended, a connection was
 *                   refused: the source is reopened after 100 ms, doubling to 5 s
 *   DEVICE_MISSING  no such device, program or host (ENOENT, ENODEV, ENXIO, unreachable): retried
 *                   slower, after 1 s doubling to 10 s, reported as "device missing"
 *   FATAL           the settings cannot work (EINVAL, ENOTSUP, a demuxer, decoder, filter,
 *                   protocol or option FFmpeg lacks): capture stops and stays stopped
 * Each is reported once (a SOURCE_ERROR event whose text names the class) when it begins. */
enum pirec_camera_failure {
  PIREC_CAMERA_FAILURE_NONE = 0,
  PIREC_CAMERA_FAILURE_TRANSIENT,
  PIREC_CAMERA_FAILURE_DEVICE_MISSING,
  PIREC_CAMERA_FAILURE_FATAL,
};

/* "none", "transient", "device missing", "fatal configuration". */
const char *pirec_camera_failure_str(enum pirec_camera_failure f);
/* The class of a source error (negative errno or AVERROR): the capture thread's retry policy and
 * pirec-camera's wait for a device both go by it. */
enum pirec_camera_failure pirec_camera_classify(int err);

struct pirec_camera_status {
  uint64_t frames_captured;     /* frames the source delivered (seq of the next frame) */
  uint64_t frames_written;      /* rows written in the current/last trial (== packets in its video) */
  uint64_t frames_before_start; /* of those, frames from before the trial's start (before_start = 1:
                                   the GOP up to it, the pre-trigger buffer); not among the trial's own
                                   frames in the identities below */
  uint64_t backlog_bytes, backlog_used, backlog_high_water; /* the compressed source's backlog */
  uint64_t frames_idle;         /* captured while no trial ran (discarded, not drops), those lost while
                               no trial ran included */
  uint64_t frames_seen;         /* frames_captured as far as the loop has taken frames: the seq + 1 of the
                               last frame it took (frames still in the ring are not seen yet), plus
                               the ring's drops a stopping trial claimed before a frame carried them */
  uint64_t device_gaps;         /* frames the device never delivered (gaps in its timestamps, across a
                               reconnect), as far as seen: part of drops_device, not of captured */
  uint64_t dropped_after;       /* the last trial's frames lost after its last row (ring full at the end,
                               inside the encoder at the stop, a video write that failed), counted
                               when its files close; 0 while a trial runs. With no trial running:
                               the rows of every trial + the sum of their dropped_before
                                 + dropped_after_total = frames_seen - frames_idle + device_gaps
                               (every frame is a row or counted once; without a hand-over each
                               trial's own rows + dropped_before + dropped_after are its frames) */
  uint64_t dropped_after_total; /* dropped_after summed over every trial */
  uint64_t drops_total;         /* all causes below, this process's lifetime */
  uint64_t drops_ring_full;     /* the capture ring was full (disk or encoder too slow, or held) */
  uint64_t drops_encoder;       /* no encoder running (restart backoff), or lost inside a crashed one */
  uint64_t drops_device;        /* gaps in the device's timestamps (or source reconnects) */
  uint64_t drops_sink;          /* the video file's sink could not take the frame */
  uint64_t bytes_video;         /* bytes pushed into the current/last trial's video file */
  uint64_t encoder_restarts;
  int encoder_state; /* enum pirec_job_state of the encoder job; -1 without encoder */
  int encoder_pid;   /* 0 when none runs */
  size_t ring_used, ring_capacity;
  uint64_t source_errors;                   /* failed opens and reads (a network stream's end included) */
  uint64_t reconnects;                      /* times the source was opened again after a failure or end */
  enum pirec_camera_failure source_failure; /* the failure being retried now, NONE while capturing */
  int last_error;                           /* last negative error seen (source, encoder, sink), or 0 */
  struct pirec_camera_latency capture;      /* capture-thread time per frame: arrival to pushed */
  struct pirec_camera_format format;
};

/* Loop thread (counters written by the capture thread are read with relaxed atomics). */
void pirec_camera_status(const struct pirec_camera *cam, struct pirec_camera_status *out);

/* Writes the next frame the loop takes from the ring (within a frame interval, or when a hold
 * ends) as a JPEG to path, atomically, in libuv's threadpool: cheap for MJPEG sources (the frame
 * itself) and raw yuv420p/yuv422p sources (libavcodec's mjpeg encoder). cb runs on the loop thread
 * with 0 or a negative error; close waits for it. Returns 0, -EAGAIN (a snapshot is pending),
 * -ENOTSUP (other formats: H.264/HEVC, yuyv422, ...), -EINVAL (not started, closing); on an error
 * return cb never runs. */
typedef void (*pirec_camera_snapshot_cb)(struct pirec_camera *cam, int err, void *user);
int pirec_camera_snapshot(struct pirec_camera *cam, const char *path, pirec_camera_snapshot_cb cb,
                          void *user);

/* A preview of what the camera captures: the next frame the loop takes from the ring (a copy; the
 * capture path is not touched), scaled to at most max_width pixels wide (<= 0: 640) and
 * JPEG-encoded in libuv's threadpool (libswscale, libavcodec's mjpeg encoder); an MJPEG source's
 * frame is passed on as it is. cb runs on the loop thread with 0 and the JPEG (valid during the
 * call), its size and the frame's capture time, or a negative error and NULL. It shares the
 * snapshot's slot: -EAGAIN while a snapshot or preview is pending (callers limit the rate), and
 * otherwise returns like pirec_camera_snapshot (raw yuyv422 is taken too, as it is scaled). */
typedef void (*pirec_camera_preview_cb)(struct pirec_camera *cam, int err, const uint8_t *jpeg, size_t len,
                                        int width, int height, int64_t mono_ns, void *user);
int pirec_camera_preview(struct pirec_camera *cam, int max_width, pirec_camera_preview_cb cb, void *user);

/* Stops the capture thread (joined: at most one frame interval), stops a running trial as
 * trial_stop does, closes every handle, calls cb, then frees cam. Call once; NULL is a no-op (cb
 * does not run). */
void pirec_camera_close(struct pirec_camera *cam, pirec_camera_close_cb cb, void *user);

#endif
