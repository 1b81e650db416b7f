/* pirec-camera: one camera's frames into tNNN.mkv (or .mjpeg/.h264) and tNNN_frames.csv,
 * standalone or under the pirec controller. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pirec/camera.h"
#include "pirec/container_of.h"
#include "pirec/config.h"
#include "pirec/error.h"
#include "pirec/log.h"
#include "pirec/recorder.h"
#include "pirec/sink.h"
#include "run.h"

#define PREVIEW_WAITERS 8
#define PREVIEW_MIN_MS  250

struct app {
  uv_loop_t *loop;
  struct pirec_camera_settings s;
  struct pirec_camera *cam;
  struct pirec_recorder *rec;
  struct pirec_recorder_req *stop_req;
  struct pirec_recorder_req *quit_req;
  /* standalone */
  const char *out_dir;
  int trial;
  double duration_s;
  struct run run; /* SIGINT, SIGTERM, --duration */
  uv_signal_t sigusr2;
  int stopping;
  int exit_code;
  /* Under the controller, a camera whose device is missing waits for it: the recorder answers,
   * refuses trials saying why, and tries the device again with a growing delay. */
  int waiting;
  uv_timer_t retry;
  uint64_t retry_ms;
  uint64_t retries;
  /* The camera's lifetime counters when the current session began: status reports per session. */
  struct pirec_camera_status base;
  /* Previews: requests waiting for the picture being made, and the last picture, which answers
   * requests that come sooner than PREVIEW_MIN_MS after it (a few pictures a second at most, however
   * many watch). */
  struct pirec_recorder_req *preview_waiting[PREVIEW_WAITERS];
  int npreview;
  uint8_t *last_jpeg;
  size_t last_len;
  int last_w, last_h;
  int64_t last_mono_ns;
  uint64_t last_at_ms;
};

/* Retry delays while a device is missing: the capture thread's own for a missing device. */
#define DEVICE_RETRY_MIN_MS 1000
#define DEVICE_RETRY_MAX_MS 10000

static void usage(FILE *f)
{
  fprintf(f, "usage: pirec-camera [options] --out DIR     record until SIGINT/SIGTERM (or --duration);\n"
             "                                            SIGUSR2 writes DIR/snapshot.jpg\n"
             "       pirec-camera --protocol --name NAME [-c FILE]   under the pirec controller\n"
             "options:\n"
             "  --source SPEC     lavfi:testsrc2 (default), v4l2:/dev/video0, rpicam[:N], URL or file\n"
             "  --size WxH        frame size (default 1280x720)\n"
             "  --fps N[/D]       frame rate (default 30)\n"
             "  --format F        v4l2 input format (mjpeg, yuyv422, h264) or rpicam codec (yuv420, mjpeg)\n"
             "  --name NAME       camera name (default camera0)\n"
             "  --trial N         trial number for the file names (default 1)\n"
             "  --duration S      stop after S seconds\n"
             "  --preset P --crf N --gop N   x264 settings for raw sources\n"
             "  --ring-ms N       capture ring size in ms of frames (default 1000)\n"
             "  --rpicam-program PATH       rpicam-vid to run (default rpicam-vid)\n"
             "  --ffmpeg PATH     ffmpeg to run (default ffmpeg)\n"
             "  -c, --config FILE read [camera.NAME] from a pirec config file\n"
             "  -h, --help        this text;  --version   the version\n");
}

static int parse_fps(const char *text, int *num, int *den)
{
  char *end;
  long n = strtol(text, &end, 10), d = 1;
  if (*end == '/')
    d = strtol(end + 1, &end, 10);
  if (*end || n <= 0 || n > 1000000 || d <= 0 || d > 1000000)
    return -EINVAL;
  *num = (int)n;
  *den = (int)d;
  return 0;
}

static int parse_size(const char *text, int *w, int *h)
{
  char *end;
  long a = strtol(text, &end, 10), b;
  if (*end != 'x' && *end != 'X')
    return -EINVAL;
  b = strtol(end + 1, &end, 10);
  if (*end || a <= 0 || b <= 0 || a > 16384 || b > 16384)
    return -EINVAL;
  *w = (int)a;
  *h = (int)b;
  return 0;
}

/* [camera.NAME] keys onto settings; see docs/CAMERA.md for the mapping. */
static int settings_from_config(struct pirec_camera_settings *s, const char *file, const char *name)
{
  struct pirec_config *cfg = NULL;
  struct pirec_config_errors errors = {0};
  char section[PIREC_CAMERA_NAME_MAX + 8];
  int r = pirec_config_load(file, &cfg, &errors);
  if (r < 0) {
    for (size_t i = 0; i < errors.count; i++)
      fprintf(stderr, "pirec-camera: %s\n", errors.items[i].message);
    pirec_config_errors_free(&errors);
    return r;
  }
  snprintf(section, sizeof section, "camera.%s", name);
  const char *kind = pirec_config_get_string(cfg, section, "source");
  const char *pix = pirec_config_get_string(cfg, section, "pixel_format");
  if (strcmp(kind, "v4l2") == 0) {
    s->kind = PIREC_CAMERA_V4L2;
    snprintf(s->source, sizeof s->source, "%s", pirec_config_get_string(cfg, section, "device"));
    /* the schema's default (yuv420p) is not something USB cameras offer: ask only when set */
    if (pirec_config_is_set(cfg, section, "pixel_format"))
      snprintf(s->input_format, sizeof s->input_format, "%s", pix);
  } else if (strcmp(kind, "rpicam") == 0) {
    s->kind = PIREC_CAMERA_RPICAM;
    snprintf(s->source, sizeof s->source, "%lld", (long long)pirec_config_get_int(cfg, section, "index"));
    snprintf(s->input_format, sizeof s->input_format, "%s", strcmp(pix, "mjpeg") == 0 ? "mjpeg" : "yuv420");
  } else if (strcmp(kind, "url") == 0) {
    s->kind = PIREC_CAMERA_URL;
    snprintf(s->source, sizeof s->source, "%s", pirec_config_get_string(cfg, section, "url"));
  } else {
    s->kind = PIREC_CAMERA_LAVFI;
    snprintf(s->source, sizeof s->source, "%s", pirec_config_get_string(cfg, section, "lavfi"));
  }
  if (pirec_config_parse_wxh(pirec_config_get_string(cfg, section, "size"), &s->width, &s->height) < 0) {
    s->width = 640;
    s->height = 480;
  }
  s->fps_num = (int)pirec_config_get_int(cfg, section, "fps");
  s->fps_den = 1;
  snprintf(s->preset, sizeof s->preset, "%s", pirec_config_get_string(cfg, section, "preset"));
  s->crf = (int)pirec_config_get_int(cfg, section, "crf");
  s->gop = (int)pirec_config_get_int(cfg, section, "gop");
  /* 0 (the default) leaves the camera's own choice: a second of frames, capped at 256 MiB. */
  s->ring_bytes = (size_t)pirec_config_get_size(cfg, section, "ring_size");
  s->pre_trigger_ns = pirec_config_get_duration(cfg, section, "pre_trigger");
  s->segment_ns = pirec_config_get_duration(cfg, section, "segment");
  s->segment_bytes = pirec_config_get_size(cfg, section, "segment_size");
  s->fsync_interval_ms =
      pirec_sink_fsync_interval_ms(pirec_config_get_duration(cfg, "storage", "fsync_interval"));
  pirec_config_free(cfg);
  return 0;
}

/* ---- events ---- */

static const char *event_name(enum pirec_camera_event ev)
{
  switch (ev) {
  case PIREC_CAMERA_EVENT_SOURCE_ERROR: return "source_error";
  case PIREC_CAMERA_EVENT_SOURCE_RECONNECTED: return "source_reconnected";
  case PIREC_CAMERA_EVENT_SOURCE_EOF: return "source_eof";
  case PIREC_CAMERA_EVENT_ENCODER_CRASHED: return "encoder_crashed";
  case PIREC_CAMERA_EVENT_ENCODER_RESTARTED: return "encoder_restarted";
  case PIREC_CAMERA_EVENT_ENCODER_FAILED: return "encoder_failed";
  case PIREC_CAMERA_EVENT_WRITE_ERROR: return "write_error";
  case PIREC_CAMERA_EVENT_FRAMES_LOST_AFTER: return "frames_lost_after";
  case PIREC_CAMERA_EVENT_SEGMENT: return "segment";
  }
  return "camera_event";
}

static void on_event(struct pirec_camera *cam, enum pirec_camera_event ev, const char *message, void *user)
{
  struct app *a = user;
  pirec_log(ev == PIREC_CAMERA_EVENT_SOURCE_RECONNECTED || ev == PIREC_CAMERA_EVENT_ENCODER_RESTARTED ||
                    ev == PIREC_CAMERA_EVENT_SEGMENT
                ? PIREC_LOG_INFO
                : PIREC_LOG_WARN,
            "%s", message);
  /* Failures the controller must keep (session.json errors) go out as "error" events. */
  if (a->rec) {
    int failure = ev == PIREC_CAMERA_EVENT_WRITE_ERROR || ev == PIREC_CAMERA_EVENT_ENCODER_FAILED;
    pirec_recorder_event(a->rec, failure ? "error" : event_name(ev),
                         json_pack("{s:s,s:s}", "kind", event_name(ev), "message", message));
  }
}

/* ---- under the controller ---- */

static void m_start(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  char *dir = NULL;
  if (a->waiting) {
    char why[PIREC_CAMERA_PATH_MAX + 200];
    snprintf(why, sizeof why, "waiting for the device: %s (tried %llu times, next in %llu s)",
             pirec_camera_start_error(a->cam), (unsigned long long)a->retries,
             (unsigned long long)(a->retry_ms / 1000));
    pirec_recorder_finish(req, -ENODEV, why);
    return;
  }
  if (asprintf(&dir, "%s/%s", req->session_dir, a->s.name) < 0) {
    pirec_recorder_finish(req, -ENOMEM, NULL);
    return;
  }
  int r = pirec_camera_set_key(a->cam, pirec_recorder_key(rec), req->session_dir);
  if (r == 0)
    r = pirec_camera_trial_start(a->cam, dir, req->trial, req->part);
  free(dir);
  if (r == 0 && req->new_session)
    pirec_camera_status(a->cam, &a->base);
  pirec_recorder_finish(req, r, NULL);
}

static void on_stopped(struct pirec_camera *cam, int err, void *user)
{
  struct app *a = user;
  struct pirec_recorder_req *req = a->stop_req;
  a->stop_req = NULL;
  if (req)
    pirec_recorder_finish(req, err, err ? "the trial's files are incomplete" : NULL);
}

static void m_stop(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  if (a->stop_req) {
    pirec_recorder_finish(req, -EBUSY, "already stopping");
    return;
  }
  if (!req->handover) /* the session ends: its key is wiped (the trial's sinks hold their own) */
    pirec_camera_set_key(a->cam, NULL, NULL);
  a->stop_req = req;
  if (req->handover && pirec_camera_recording(a->cam))
    pirec_camera_hand_over(a->cam);
  int r = pirec_camera_trial_stop(a->cam, on_stopped, a);
  if (r < 0) {
    a->stop_req = NULL;
    pirec_recorder_finish(req, r, NULL);
  }
}

static const char *codec_name(enum pirec_camera_codec c)
{
  switch (c) {
  case PIREC_CAMERA_CODEC_RAW: return "raw";
  case PIREC_CAMERA_CODEC_MJPEG: return "mjpeg";
  case PIREC_CAMERA_CODEC_H264: return "h264";
  case PIREC_CAMERA_CODEC_HEVC: return "hevc";
  default: return "other";
  }
}

/* The source's format as status reports it: {"codec","pix_fmt","width","height","fps"}. pix_fmt
 * is empty for compressed sources; fps is "N/D" ("0/1" when the source does not say). */
static json_t *format_json(const struct pirec_camera_format *f)
{
  char fps[48];
  snprintf(fps, sizeof fps, "%d/%d", f->fps_num, f->fps_den);
  return json_pack("{s:s,s:s,s:i,s:i,s:s}", "codec", codec_name(f->codec), "pix_fmt", f->pix_fmt, "width",
                   f->width, "height", f->height, "fps", fps);
}

/* The lifetime counters of st as counted since the session began (base: at its first start). */
static void since_session_start(struct pirec_camera_status *st, const struct pirec_camera_status *base)
{
  uint64_t *now[] = {&st->frames_captured, &st->frames_idle,  &st->drops_total,        &st->drops_ring_full,
                     &st->drops_encoder,   &st->drops_device, &st->drops_sink,         &st->encoder_restarts,
                     &st->source_errors,   &st->reconnects,   &st->dropped_after_total};
  const uint64_t then[] = {base->frames_captured, base->frames_idle,        base->drops_total,
                           base->drops_ring_full, base->drops_encoder,      base->drops_device,
                           base->drops_sink,      base->encoder_restarts,   base->source_errors,
                           base->reconnects,      base->dropped_after_total};
  for (size_t i = 0; i < sizeof then / sizeof then[0]; i++)
    *now[i] = *now[i] >= then[i] ? *now[i] - then[i] : 0;
}

/* What the camera waits for, in its status: "device" is "open", or "waiting" (no device at
 * start-up, or the capture thread lost it) with "waiting_for" (the source) and "wait_reason". */
static void device_status(struct app *a, const struct pirec_camera_status *st, json_t *counters)
{
  int waiting = a->waiting || st->source_failure == PIREC_CAMERA_FAILURE_DEVICE_MISSING;
  json_object_set_new(counters, "device", json_string(waiting ? "waiting" : "open"));
  if (!waiting)
    return;
  json_object_set_new(counters, "waiting_for", json_string(a->s.source));
  json_object_set_new(counters, "wait_reason",
                      json_string(a->waiting ? pirec_camera_start_error(a->cam)
                                             : pirec_strerror(st->last_error ? st->last_error : -ENODEV)));
}

static void m_status(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  struct pirec_camera_status st;
  pirec_camera_status(a->cam, &st);
  since_session_start(&st, &a->base);
  device_status(a, &st, req->counters);
  if (a->waiting)
    pirec_recorder_counters_add(req, "device_retries", a->retries);
  pirec_recorder_counters_add(req, "frames_captured", st.frames_captured);
  pirec_recorder_counters_add(req, "frames_written", st.frames_written);
  pirec_recorder_counters_add(req, "frames_idle", st.frames_idle);
  pirec_recorder_counters_add(req, "frames_before_start", st.frames_before_start);
  pirec_recorder_counters_add(req, "backlog_bytes", st.backlog_bytes);
  pirec_recorder_counters_add(req, "backlog_used", st.backlog_used);
  pirec_recorder_counters_add(req, "backlog_high_water", st.backlog_high_water);
  pirec_recorder_counters_add(req, "drops", st.drops_total);
  pirec_recorder_counters_add(req, "drops_ring_full", st.drops_ring_full);
  pirec_recorder_counters_add(req, "drops_encoder", st.drops_encoder);
  pirec_recorder_counters_add(req, "drops_device", st.drops_device);
  pirec_recorder_counters_add(req, "drops_sink", st.drops_sink);
  pirec_recorder_counters_add(req, "dropped_after", st.dropped_after_total);
  pirec_recorder_counters_add(req, "bytes_written", st.bytes_video);
  pirec_recorder_counters_add(req, "encoder_restarts", st.encoder_restarts);
  pirec_recorder_counters_add(req, "queue_bytes", st.ring_used);
  pirec_recorder_counters_add(req, "queue_capacity", st.ring_capacity);
  pirec_recorder_counters_add(req, "source_errors", st.source_errors);
  pirec_recorder_counters_add(req, "source_reconnects", st.reconnects);
  pirec_recorder_counters_add(req, "capture_p50_ns", (uint64_t)st.capture.p50_ns);
  pirec_recorder_counters_add(req, "capture_p99_ns", (uint64_t)st.capture.p99_ns);
  pirec_recorder_counters_add(req, "capture_p999_ns", (uint64_t)st.capture.p999_ns);
  pirec_recorder_counters_add(req, "capture_max_ns", (uint64_t)st.capture.max_ns);
  pirec_recorder_counters_add(req, "encoder_pid", (uint64_t)st.encoder_pid);
  json_object_set_new(req->counters, "last_error",
                      st.last_error ? json_string(pirec_strerror(st.last_error)) : json_null());
  json_object_set_new(req->counters, "format", format_json(&st.format));
  json_object_set_new(req->counters, "source_failure",
                      json_string(pirec_camera_failure_str(st.source_failure)));
  static const char *const states[] = {"idle", "queued", "running", "stopping", "backoff"};
  json_object_set_new(
      req->counters, "encoder",
      json_string(st.encoder_state >= 0 && st.encoder_state < 5 ? states[st.encoder_state] : "none"));
  pirec_recorder_finish(req, 0, NULL);
}

static void camera_closed(struct pirec_camera *cam, void *user)
{
  struct app *a = user;
  a->cam = NULL;
  if (!uv_is_closing((uv_handle_t *)&a->retry))
    uv_close((uv_handle_t *)&a->retry, NULL);
  if (a->quit_req) {
    pirec_recorder_finish(a->quit_req, 0, NULL);
    a->quit_req = NULL;
  }
  if (a->rec)
    pirec_recorder_close(a->rec, NULL);
  a->rec = NULL;
}

static void m_quit(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  if (a->quit_req || !a->cam) {
    pirec_recorder_finish(req, 0, NULL);
    return;
  }
  a->quit_req = req;
  /* A stop in progress finishes inside close; its reply is then no longer wanted. */
  pirec_camera_close(a->cam, camera_closed, a);
}

static void retry_device(uv_timer_t *t)
{
  struct app *a = container_of(t, struct app, retry);
  a->retries++;
  int r = pirec_camera_start(a->cam);
  if (r == 0) {
    a->waiting = 0;
    pirec_log(PIREC_LOG_INFO, "camera '%s': '%s' is there now", a->s.name, a->s.source);
    pirec_recorder_event(a->rec, "device_ready",
                         json_pack("{s:s,s:s}", "kind", "device_ready", "message", a->s.source));
    return;
  }
  if (pirec_camera_classify(r) != PIREC_CAMERA_FAILURE_DEVICE_MISSING) {
    /* The device is there but refuses to work: what a crash and a restart would not fix either. */
    pirec_recorder_event(
        a->rec, "error",
        json_pack("{s:s,s:s}", "kind", "source_error", "message", pirec_camera_start_error(a->cam)));
    a->exit_code = 1;
    pirec_camera_close(a->cam, camera_closed, a);
    return;
  }
  a->retry_ms = a->retry_ms * 2 > DEVICE_RETRY_MAX_MS ? DEVICE_RETRY_MAX_MS : a->retry_ms * 2;
  uv_timer_start(&a->retry, retry_device, a->retry_ms, 0);
}

/* No device at start-up: serve the controller anyway, say so once, and keep looking for it. */
static void wait_for_device(struct app *a)
{
  a->waiting = 1;
  a->retry_ms = DEVICE_RETRY_MIN_MS;
  uv_timer_start(&a->retry, retry_device, a->retry_ms, 0);
  pirec_recorder_event(
      a->rec, "device_missing",
      json_pack("{s:s,s:s}", "kind", "device_missing", "message", pirec_camera_start_error(a->cam)));
}

static void preview_made(struct pirec_camera *cam, int err, const uint8_t *jpeg, size_t len, int width,
                         int height, int64_t mono_ns, void *user)
{
  struct app *a = user;
  if (err >= 0) {
    uint8_t *copy = malloc(len);
    if (copy) {
      memcpy(copy, jpeg, len);
      free(a->last_jpeg);
      a->last_jpeg = copy;
      a->last_len = len;
      a->last_w = width;
      a->last_h = height;
      a->last_mono_ns = mono_ns;
      a->last_at_ms = uv_now(a->loop);
    }
  }
  for (int i = 0; i < a->npreview; i++)
    pirec_recorder_preview_done(a->preview_waiting[i], err, jpeg, len, width, height, mono_ns);
  a->npreview = 0;
}

static void m_preview(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  if (a->last_jpeg && uv_now(a->loop) - a->last_at_ms < PREVIEW_MIN_MS) {
    pirec_recorder_preview_done(req, 0, a->last_jpeg, a->last_len, a->last_w, a->last_h, a->last_mono_ns);
    return;
  }
  if (a->npreview == PREVIEW_WAITERS) {
    pirec_recorder_finish(req, -EBUSY, "too many previews waiting");
    return;
  }
  int err = a->npreview             ? 0
            : a->cam && !a->waiting ? pirec_camera_preview(a->cam, req->max_width, preview_made, a)
                                    : -ENODEV;
  if (err < 0) {
    pirec_recorder_finish(req, err, err == -ENOTSUP ? "no preview for this source's format (H.264)" : NULL);
    return;
  }
  a->preview_waiting[a->npreview++] = req;
}

static int run_protocol(struct app *a)
{
  struct pirec_recorder_ops ops = {
      .start = m_start, .stop = m_stop, .status = m_status, .quit = m_quit, .preview = m_preview};
  int r = pirec_recorder_new(a->loop, a->s.name, &ops, a, NULL, &a->rec);
  if (r < 0)
    return r;
  if ((r = pirec_recorder_start(a->rec)) < 0) {
    pirec_recorder_close(a->rec, NULL);
    return r;
  }
  return 0;
}

/* ---- standalone ---- */

static void close_signals(struct app *a)
{
  if (!a->run.watching)
    return;
  run_unwatch(&a->run);
  uv_close((uv_handle_t *)&a->sigusr2, NULL);
}

static void standalone_closed(struct pirec_camera *cam, void *user)
{
  struct app *a = user;
  a->cam = NULL;
  uv_close((uv_handle_t *)&a->retry, NULL);
  close_signals(a);
}

static void standalone_stopped(struct pirec_camera *cam, int err, void *user)
{
  struct app *a = user;
  struct pirec_camera_status st;
  pirec_camera_status(cam, &st);
  fprintf(stderr,
          "pirec-camera: %s: %" PRIu64 " frames written, %" PRIu64 " captured, %" PRIu64
          " dropped (ring %" PRIu64 ", encoder %" PRIu64 ", device %" PRIu64 ", sink %" PRIu64
          "), capture p99 %.3f ms, max %.3f ms\n",
          a->s.name, st.frames_written, st.frames_captured, st.drops_total, st.drops_ring_full,
          st.drops_encoder, st.drops_device, st.drops_sink, st.capture.p99_ns / 1e6, st.capture.max_ns / 1e6);
  if (err) {
    fprintf(stderr, "pirec-camera: the trial's files may be incomplete: %s\n", pirec_strerror(err));
    a->exit_code = 1;
  }
  pirec_camera_close(cam, standalone_closed, a);
}

static void standalone_stop(struct app *a)
{
  if (a->stopping)
    return;
  a->stopping = 1;
  if (pirec_camera_trial_stop(a->cam, standalone_stopped, a) < 0)
    pirec_camera_close(a->cam, standalone_closed, a);
}

static void on_stop(struct run *run)
{
  standalone_stop(container_of(run, struct app, run));
}

static void snapshot_done(struct pirec_camera *cam, int err, void *user)
{
  struct app *a = user;
  if (err < 0)
    fprintf(stderr, "pirec-camera: snapshot into '%s' failed: %s\n", a->out_dir, pirec_strerror(err));
  else
    fprintf(stderr, "pirec-camera: snapshot written to '%s/snapshot.jpg'\n", a->out_dir);
}

/* SIGUSR2: the next frame as DIR/snapshot.jpg (where cheap: MJPEG, yuv420p, yuv422p). */
static void on_snapshot(uv_signal_t *sig, int signum)
{
  struct app *a = sig->data;
  char path[PIREC_CAMERA_PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/snapshot.jpg", a->out_dir);
  int r = a->cam && !a->stopping ? pirec_camera_snapshot(a->cam, path, snapshot_done, a) : -EINVAL;
  if (r < 0)
    fprintf(stderr, "pirec-camera: no snapshot: %s\n", pirec_strerror(r));
}

static int run_standalone(struct app *a)
{
  int r = pirec_camera_trial_start(a->cam, a->out_dir, a->trial, 0);
  if (r < 0) {
    fprintf(stderr, "pirec-camera: cannot start recording into '%s': %s\n", a->out_dir, pirec_strerror(r));
    return r;
  }
  /* The signals stay watched until the camera has closed: a second Ctrl-C cannot cut the stop short. */
  run_watch(&a->run, a->loop, a->duration_s, on_stop);
  uv_signal_init(a->loop, &a->sigusr2);
  a->sigusr2.data = a;
  uv_signal_start(&a->sigusr2, on_snapshot, SIGUSR2);
  return 0;
}

/* The command line: settings given, and which of them override the config file. */
struct cli {
  struct pirec_camera_settings s;
  const char *config_file;
  int protocol;
  int set_source, set_size, set_fps, set_format, set_preset, set_crf, set_gop, set_ring;
};

/* Parses the options into c and the standalone ones into a. Returns 0, 1 after --help or --version, or -EINVAL. */
static int parse_args(int argc, char **argv, struct cli *c, struct app *a)
{
  static const struct option longopts[] = {{"source", required_argument, NULL, 's'},
                                           {"size", required_argument, NULL, 'S'},
                                           {"fps", required_argument, NULL, 'f'},
                                           {"format", required_argument, NULL, 'F'},
                                           {"name", required_argument, NULL, 'n'},
                                           {"trial", required_argument, NULL, 't'},
                                           {"duration", required_argument, NULL, 'd'},
                                           {"out", required_argument, NULL, 'o'},
                                           {"preset", required_argument, NULL, 'P'},
                                           {"crf", required_argument, NULL, 'C'},
                                           {"gop", required_argument, NULL, 'G'},
                                           {"ring-ms", required_argument, NULL, 'R'},
                                           {"rpicam-program", required_argument, NULL, 'r'},
                                           {"ffmpeg", required_argument, NULL, 'x'},
                                           {"protocol", no_argument, NULL, 'p'},
                                           {"config", required_argument, NULL, 'c'},
                                           {"help", no_argument, NULL, 'h'},
                                           {"version", no_argument, NULL, 'V'},
                                           {NULL, 0, NULL, 0}};
  struct pirec_camera_settings *s = &c->s;
  int opt;
  while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
    switch (opt) {
    case 's':
      if (pirec_camera_settings_set_source(s, optarg) < 0)
        return -EINVAL;
      c->set_source = 1;
      break;
    case 'S':
      if (parse_size(optarg, &s->width, &s->height) < 0)
        return -EINVAL;
      c->set_size = 1;
      break;
    case 'f':
      if (parse_fps(optarg, &s->fps_num, &s->fps_den) < 0)
        return -EINVAL;
      c->set_fps = 1;
      break;
    case 'F':
      snprintf(s->input_format, sizeof s->input_format, "%s", optarg);
      c->set_format = 1;
      break;
    case 'n': snprintf(s->name, sizeof s->name, "%s", optarg); break;
    case 't': a->trial = atoi(optarg); break;
    case 'd': a->duration_s = atof(optarg); break;
    case 'o': a->out_dir = optarg; break;
    case 'P':
      snprintf(s->preset, sizeof s->preset, "%s", optarg);
      c->set_preset = 1;
      break;
    case 'C':
      s->crf = atoi(optarg);
      c->set_crf = 1;
      break;
    case 'G':
      s->gop = atoi(optarg);
      c->set_gop = 1;
      break;
    case 'R':
      s->ring_ms = (unsigned)atoi(optarg);
      c->set_ring = 1;
      break;
    case 'r': snprintf(s->rpicam_program, sizeof s->rpicam_program, "%s", optarg); break;
    case 'x': snprintf(s->ffmpeg, sizeof s->ffmpeg, "%s", optarg); break;
    case 'p': c->protocol = 1; break;
    case 'c': c->config_file = optarg; break;
    case 'h': usage(stdout); return 1;
    case 'V': printf("pirec-camera %s\n", PIREC_VERSION); return 1;
    default: return -EINVAL;
    }
  }
  if (optind < argc || (!c->protocol && !a->out_dir) || a->trial < 1)
    return -EINVAL;
  return 0;
}

/* The camera's settings: the config file's [camera.NAME], with the command line winning. */
static int settings(struct app *a, const struct cli *c)
{
  const struct pirec_camera_settings *cli = &c->s;
  a->s = *cli;
  if (!c->config_file)
    return 0;
  int r = settings_from_config(&a->s, c->config_file, cli->name);
  if (r < 0)
    return r;
  if (c->set_source) {
    a->s.kind = cli->kind;
    memcpy(a->s.source, cli->source, sizeof a->s.source);
  }
  if (c->set_size) {
    a->s.width = cli->width;
    a->s.height = cli->height;
  }
  if (c->set_fps) {
    a->s.fps_num = cli->fps_num;
    a->s.fps_den = cli->fps_den;
  }
  if (c->set_format)
    memcpy(a->s.input_format, cli->input_format, sizeof a->s.input_format);
  if (c->set_preset)
    memcpy(a->s.preset, cli->preset, sizeof a->s.preset);
  if (c->set_crf)
    a->s.crf = cli->crf;
  if (c->set_gop)
    a->s.gop = cli->gop;
  if (c->set_ring) { /* --ring-ms sizes the ring in time: the file's ring_size gives way */
    a->s.ring_ms = cli->ring_ms;
    a->s.ring_bytes = 0;
  }
  return 0;
}

/* Makes and starts the camera, then records standalone or serves the controller until done. */
static int record_or_serve(struct app *a, int protocol)
{
  a->loop = uv_default_loop();
  int r = pirec_camera_new(a->loop, &a->s, on_event, a, &a->cam);
  if (r < 0) {
    fprintf(stderr, "pirec-camera: invalid settings: %s\n", pirec_strerror(r));
    return 64;
  }
  uv_timer_init(a->loop, &a->retry);
  r = pirec_camera_start(a->cam);
  if (r < 0 && protocol && pirec_camera_classify(r) == PIREC_CAMERA_FAILURE_DEVICE_MISSING) {
    if ((r = run_protocol(a)) == 0)
      wait_for_device(a);
  } else if (r == 0) {
    r = protocol ? run_protocol(a) : run_standalone(a);
  }
  if (r < 0) {
    uv_close((uv_handle_t *)&a->retry, NULL);
    pirec_camera_close(a->cam, NULL, NULL);
    uv_run(a->loop, UV_RUN_DEFAULT);
    return 1;
  }
  return run_exit(a->loop, "pirec-camera", &a->exit_code);
}

int main(int argc, char **argv)
{
  struct app a = {.trial = 1};
  struct cli c = {0};
  pirec_camera_settings_default(&c.s);
  int r = parse_args(argc, argv, &c, &a);
  if (r > 0)
    return 0;
  if (r < 0) {
    usage(stderr);
    return 64;
  }
  run_spawner_start("pirec-camera");
  if (settings(&a, &c) < 0)
    return 65;
  r = record_or_serve(&a, c.protocol);
  free(a.last_jpeg);
  return r;
}
