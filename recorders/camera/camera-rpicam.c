/* Raspberry Pi CSI cameras through an rpicam-vid child, run as a pirec_job on a loop of the source's
 * own (the capture thread drives it with blocking reads): frames from the job's binary stdout
 * (split by size or by JPEG markers), each frame's libcamera SensorTimestamp (CLOCK_BOOTTIME ns)
 * from its per-frame --metadata output, which the child writes to the job's fd 3 pipe. The
 * --save-pts file is not used: rpicam-vid rebases it to the first frame in whole microseconds,
 * which cannot be matched against the host clocks. */

#include "camera-int.h"

#include "pirec/clock.h"
#include "pirec/job.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <libavutil/error.h>

#define TS_QUEUE 64
#define ARGV_MAX 64

/* rpicam-vid tears down libcamera on SIGTERM; SIGKILL follows after this long. */
#define STOP_KILL_MS 1000

struct pirec__rpicam {
  uv_loop_t loop;
  uv_async_t wake; /* pirec__rpicam_interrupt: ends a blocked uv_run */
  uv_timer_t wait; /* take_ts's deadline */
  struct pirec_job *job;
  int ended;     /* the job's on_end ran: the child is gone and all it wrote was delivered */
  int timed_out; /* wait fired */
  int error;     /* a frame's bytes could not be kept: the stream is out of step */
  struct pirec__camera_splitter sp;
  /* Bytes that arrive while a frame split from sp is still being handed out (take_ts runs the
   * loop): appending them to sp then could move the frame's bytes. */
  int lent;
  struct pirec_bytebuf backlog;
  /* A frame's metadata block arrives after the frame; a block still owed for a frame pushed
   * without one is discarded when it arrives, so frames and blocks stay paired by position. */
  int64_t ts[TS_QUEUE];
  unsigned ts_head, ts_count;
  uint64_t ts_owed;
  int64_t block_ts; /* SensorTimestamp of the block being read, INT64_MIN until its line */
  int64_t frame_interval_ns;
};

/* ---- what the child sends ---- */

static void on_stdout(struct pirec_job *job, const uint8_t *data, size_t len)
{
  struct pirec__rpicam *rp = pirec_job_user(job);
  int r = rp->lent ? pirec_bytebuf_append(&rp->backlog, data, len)
                   : pirec__camera_splitter_append(&rp->sp, data, len);
  if (r < 0 && !rp->error)
    rp->error = r;
}

static void metadata_line(struct pirec__rpicam *rp, const char *line, size_t len)
{
  int64_t ns;
  int kind = pirec__rpicam_metadata_line(line, len, &ns);

  if (kind == PIREC__RPICAM_META_SENSOR_TS) {
    rp->block_ts = ns;
  } else if (kind == PIREC__RPICAM_META_END) {
    /* one block per frame, with or without a timestamp: the pairing counts blocks */
    if (rp->ts_owed > 0) {
      rp->ts_owed--;
    } else if (rp->ts_count < TS_QUEUE) {
      rp->ts[(rp->ts_head + rp->ts_count) % TS_QUEUE] = rp->block_ts;
      rp->ts_count++;
    }
    rp->block_ts = INT64_MIN;
  }
}

static void on_line(struct pirec_job *job, int fd, const char *line, size_t len)
{
  if (fd == 3)
    metadata_line(pirec_job_user(job), line, len);
}

static void on_end(struct pirec_job *job, const struct pirec_job_result *result)
{
  struct pirec__rpicam *rp = pirec_job_user(job);
  rp->ended = 1;
}

static void on_wake(uv_async_t *a)
{
  /* Only ends uv_run; the reader checks its interrupted flag. */
}

static void on_wait(uv_timer_t *t)
{
  struct pirec__rpicam *rp = container_of(t, struct pirec__rpicam, wait);
  rp->timed_out = 1;
}

/* ---- the child ---- */

/* Splits "a b  c" on spaces into argv[*argc...] (writes into buf). */
static void split_args(char *buf, const char **argv, int *argc, int max)
{
  char *save = NULL;
  for (char *tok = strtok_r(buf, " \t", &save); tok && *argc < max - 1; tok = strtok_r(NULL, " \t", &save))
    argv[(*argc)++] = tok;
}

/* The program is looked up here, before a job exists, so a camera that is not installed is one
 * clear message (and a "fatal configuration" failure) rather than an exec error each retry. */
static char *find_in_path(const char *prog)
{
  if (strchr(prog, '/'))
    return access(prog, X_OK) == 0 ? strdup(prog) : NULL;
  const char *path = getenv("PATH");
  if (!path)
    path = "/usr/local/bin:/usr/bin:/bin";
  while (*path) {
    const char *colon = strchr(path, ':');
    size_t n = colon ? (size_t)(colon - path) : strlen(path);
    char *cand = pirec__camera_strdupf("%.*s/%s", (int)n, path, prog);
    if (cand && access(cand, X_OK) == 0)
      return cand;
    free(cand);
    path += n + (colon ? 1 : 0);
  }
  return NULL;
}

/* The numbers an rpicam-vid command line is built from. */
struct rpicam_args {
  char camera[32], width[32], height[32], fps[32];
  char extra[sizeof((struct pirec_camera_settings *)0)->rpicam_args];
  const char *argv[ARGV_MAX];
};

/* argv for prog; the strings live in a. The metadata "file" is the job's fd 3 pipe, reached as
 * /proc/self/fd/3: no path on disk, nothing left behind by a crash. */
static void build_argv(struct rpicam_args *a, const char *prog, const struct pirec_camera_settings *s,
                       const struct pirec_camera_format *fmt, int mjpeg)
{
  int argc = 0;

  snprintf(a->camera, sizeof a->camera, "%.31s", s->source);
  snprintf(a->width, sizeof a->width, "%d", s->width > 0 ? s->width : 1280);
  snprintf(a->height, sizeof a->height, "%d", fmt->height);
  snprintf(a->fps, sizeof a->fps, "%.6g", (double)fmt->fps_num / fmt->fps_den);
  const char *fixed[] = {prog,
                         "--camera",
                         a->camera,
                         "-t",
                         "0",
                         "-n",
                         "--codec",
                         mjpeg ? "mjpeg" : "yuv420",
                         "--width",
                         a->width,
                         "--height",
                         a->height,
                         "--framerate",
                         a->fps,
                         "--flush",
                         "--metadata",
                         "/proc/self/fd/3",
                         "--metadata-format",
                         "txt",
                         "-o",
                         "-"};
  for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
    a->argv[argc++] = fixed[i];
  snprintf(a->extra, sizeof a->extra, "%s", s->rpicam_args);
  split_args(a->extra, a->argv, &argc, ARGV_MAX);
  a->argv[argc] = NULL;
}

static int start_job(struct pirec__rpicam *rp, const struct pirec_camera_settings *s, const char *prog,
                     const struct pirec_camera_format *fmt, int mjpeg)
{
  struct rpicam_args a;
  struct pirec_job_options o;
  char name[PIREC_CAMERA_NAME_MAX + 16];
  int r;

  build_argv(&a, prog, s, fmt, mjpeg);
  snprintf(name, sizeof name, "%s rpicam", s->name);
  pirec_job_options_init(&o);
  o.argv = a.argv;
  o.name = name;
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[2].kind = PIREC_JOB_STDIO_INHERIT; /* libcamera's own messages, as a terminal shows them */
  o.lines_fd3 = 1;
  o.stop_kill_ms = STOP_KILL_MS;
  o.on_stdout = on_stdout;
  o.on_line = on_line;
  o.on_end = on_end;
  o.user = rp;
  if ((r = pirec_job_new(&rp->loop, &o, &rp->job)) < 0)
    return r;
  return pirec_job_start(rp->job);
}

/* The frames rpicam-vid will send for these settings. */
static void rpicam_format(const struct pirec_camera_settings *s, int mjpeg, struct pirec_camera_format *fmt)
{
  int w = s->width > 0 ? s->width : 1280, h = s->height > 0 ? s->height : 720;
  int stride = s->rpicam_stride > 0 ? s->rpicam_stride : w;

  memset(fmt, 0, sizeof *fmt);
  fmt->codec = mjpeg ? PIREC_CAMERA_CODEC_MJPEG : PIREC_CAMERA_CODEC_RAW;
  fmt->width = w;
  fmt->height = h;
  fmt->fps_num = s->fps_num > 0 ? s->fps_num : 30;
  fmt->fps_den = s->fps_num > 0 && s->fps_den > 0 ? s->fps_den : 1;
  fmt->has_device_ts = 1;
  fmt->device_clock_continuous = 1; /* SensorTimestamp is CLOCK_BOOTTIME, whichever child took it */
  if (!mjpeg) {
    /* rpicam-vid's yuv420 rows may be padded to the stride; the encoder gets the padded width. */
    snprintf(fmt->pix_fmt, sizeof fmt->pix_fmt, "yuv420p");
    fmt->width = stride;
    fmt->frame_bytes = (size_t)stride * (size_t)h * 3 / 2;
  }
}

/* The loop and its two handles; every later failure is undone by pirec__rpicam_free. */
static int rpicam_alloc(struct pirec__rpicam **out)
{
  struct pirec__rpicam *rp = calloc(1, sizeof *rp);
  int r;

  *out = NULL;
  if (!rp)
    return -ENOMEM;
  rp->block_ts = INT64_MIN;
  if ((r = uv_loop_init(&rp->loop)) < 0) {
    free(rp);
    return r;
  }
  uv_async_init(&rp->loop, &rp->wake, on_wake);
  uv_timer_init(&rp->loop, &rp->wait);
  *out = rp;
  return 0;
}

int pirec__rpicam_open(const struct pirec_camera_settings *s, struct pirec__rpicam **out,
                       struct pirec_camera_format *fmt, char **message)
{
  struct pirec__rpicam *rp;
  int mjpeg = strcmp(s->input_format, "mjpeg") == 0;
  int r;

  *out = NULL;
  if (s->input_format[0] && !mjpeg && strcmp(s->input_format, "yuv420") != 0) {
    *message = pirec__camera_strdupf("rpicam input format '%s' is not supported: use yuv420 or mjpeg",
                                     s->input_format);
    return -EINVAL;
  }
  if ((r = rpicam_alloc(&rp)) < 0)
    return r;
  *out = rp;
  rpicam_format(s, mjpeg, fmt);
  rp->frame_interval_ns = (int64_t)1000000000 * fmt->fps_den / fmt->fps_num;
  r = pirec__camera_splitter_init(&rp->sp, mjpeg ? PIREC__CAMERA_SPLIT_JPEG : PIREC__CAMERA_SPLIT_SIZE,
                                  fmt->frame_bytes, (size_t)fmt->width * (size_t)fmt->height * 2 + 65536);
  if (r < 0 || (r = pirec_bytebuf_init(&rp->backlog, 0, (size_t)8 << 20)) < 0)
    return r;
  char *prog = find_in_path(s->rpicam_program);
  if (!prog) {
    *message =
        pirec__camera_strdupf("cannot run '%s': not found in PATH or not executable", s->rpicam_program);
    return -ENOENT;
  }
  r = start_job(rp, s, prog, fmt, mjpeg);
  if (r < 0)
    *message = pirec__camera_strdupf("cannot start '%s': %s", prog, av_err2str(r));
  free(prog);
  return r;
}

/* ---- reading ---- */

/* Runs the loop once unless asked to stop; 1 when asked. */
static int turn(struct pirec__rpicam *rp, atomic_int *interrupted)
{
  if (atomic_load(interrupted))
    return 1;
  uv_run(&rp->loop, UV_RUN_ONCE);
  return atomic_load(interrupted);
}

/* Waits for the metadata block of the frame just split: it normally follows within microseconds. */
static int64_t take_ts(struct pirec__rpicam *rp, atomic_int *interrupted)
{
  if (rp->ts_count == 0 && !rp->ended) {
    rp->timed_out = 0;
    uv_timer_start(&rp->wait, on_wait, (uint64_t)(2 * rp->frame_interval_ns / 1000000) + 1, 0);
    while (rp->ts_count == 0 && !rp->ended && !rp->timed_out && !turn(rp, interrupted)) {
    }
    uv_timer_stop(&rp->wait);
  }
  if (rp->ts_count == 0) {
    rp->ts_owed++;
    return INT64_MIN;
  }
  int64_t ns = rp->ts[rp->ts_head];
  rp->ts_head = (rp->ts_head + 1) % TS_QUEUE;
  rp->ts_count--;
  return ns;
}

/* The frame handed out last is done with: bytes that came meanwhile join the stream. */
static void take_back(struct pirec__rpicam *rp)
{
  rp->lent = 0;
  if (pirec_bytebuf_len(&rp->backlog) == 0)
    return;
  int r = pirec__camera_splitter_append(&rp->sp, pirec_bytebuf_data(&rp->backlog),
                                        pirec_bytebuf_len(&rp->backlog));
  if (r < 0 && !rp->error)
    rp->error = r;
  pirec_bytebuf_reset(&rp->backlog);
}

int pirec__rpicam_read(struct pirec__rpicam *rp, struct pirec_camera_frame *frame, atomic_int *interrupted)
{
  const uint8_t *data;
  size_t len;

  take_back(rp);
  for (;;) {
    if (atomic_load(interrupted))
      return -EINTR;
    if (rp->error)
      return rp->error;
    if (pirec__camera_splitter_next(&rp->sp, &data, &len)) {
      frame->arrival_mono_ns = pirec_clock_mono_ns();
      frame->arrival_wall_ns = pirec_clock_wall_ns();
      frame->data = data;
      frame->len = len;
      rp->lent = 1;
      frame->device_ts_ns = take_ts(rp, interrupted);
      return 0;
    }
    if (rp->ended)
      return AVERROR_EOF;
    turn(rp, interrupted);
  }
}

void pirec__rpicam_interrupt(struct pirec__rpicam *rp)
{
  uv_async_send(&rp->wake);
}

/* Stops the child through the job's escalation (SIGTERM to its group, SIGKILL after
 * STOP_KILL_MS), waiting on the source's own loop, then closes it. */
void pirec__rpicam_free(struct pirec__rpicam *rp)
{
  if (!rp)
    return;
  rp->lent = 1; /* what still comes is not wanted */
  if (rp->job && pirec_job_stop(rp->job) == 0)
    while (!rp->ended)
      uv_run(&rp->loop, UV_RUN_ONCE);
  pirec_job_free(rp->job);
  uv_close((uv_handle_t *)&rp->wake, NULL);
  uv_close((uv_handle_t *)&rp->wait, NULL);
  uv_run(&rp->loop, UV_RUN_DEFAULT);
  uv_loop_close(&rp->loop);
  pirec__camera_splitter_free(&rp->sp);
  pirec_bytebuf_free(&rp->backlog);
  free(rp);
}
