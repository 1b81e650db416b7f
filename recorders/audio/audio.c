/* The audio recorder's trial: the capture thread, its blocks into the WAV and CSV sinks, and the
 * WAV header's final rewrite (see pirec/audio.h). */
#include "pirec/audio.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audio-int.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"
#include "pirec/crypt.h"
#include "pirec/csv.h"
#include "pirec/log.h"
#include "pirec/sink.h"

#define ROW_CAP 256

static const char *const columns[] = {"trial",          "mono_ns",      "wall_ns",
                                      "device_ts_ns",   "first_frame",  "frames",
                                      "dropped_before", "before_start", NULL};

struct pirec_audio {
  uv_loop_t *loop;
  struct pirec_audio_options opts;
  char *device;
  struct pirec_crypt_session crypt;
  char last_error[256];
  pirec_audio_error_cb on_error;
  void *on_error_user;

  /* the open trial */
  struct pirec__audio_dev dev;
  struct pirec_sink *wav, *csv;
  char *wav_path;
  int trial;
  int encrypted; /* the trial's files are: their header is never rewritten in the clear */
  int open;
  int closing;
  int pending; /* sinks and header steps still to finish the close */
  int close_err;
  int joined;
  pirec_audio_cb cb;
  void *cb_user;
  uv_thread_t thread;
  uv_async_t done;
  uv_fs_t fs;
  uint8_t header[PIREC_AUDIO_WAV_HEADER];
  uint64_t data_bytes; /* the closed WAV sink's bytes, header included */

  /* capture thread only */
  void *block;
  char row[ROW_CAP];
  uint64_t first_frame;
  uint64_t lost; /* frames lost since the last row */
  int after_xrun;
  int64_t next_ts; /* where the next block's first frame is due, device clock (INT64_MIN: none) */
  int64_t next_mono;
  uint64_t lost_total; /* frames lost in this trial: the card's position is first_frame + this */
  int64_t ts0;         /* the trial's first block with a device timestamp (INT64_MIN: none yet) */
  uint64_t pos0;

  /* written by the capture thread, read anywhere */
  atomic_int stop;
  atomic_int hold;
  atomic_int thread_err;
  atomic_int exited; /* the thread has left its loop; its last act is the async send */
  atomic_uint_fast64_t blocks, frames, frames_dropped, xruns, rows_dropped;
  atomic_int_fast64_t drift_ppb;
  atomic_int drift_known;
  uint64_t closed_bytes;
  int sink_err;
};

void pirec_audio_options_default(struct pirec_audio_options *o)
{
  memset(o, 0, sizeof *o);
  o->device = "default";
  o->rate = 48000;
  o->channels = 1;
  o->format = PIREC_AUDIO_S16;
  o->period_us = 20000;
  o->buffer_periods = 8;
  o->fsync_interval_ms = 1000;
}

int pirec_audio_format_parse(const char *text, enum pirec_audio_format *out)
{
  static const char *const names[] = {"s16", "s32", "f32"};
  for (int i = 0; i < 3; i++)
    if (strcmp(text, names[i]) == 0) {
      *out = (enum pirec_audio_format)i;
      return 0;
    }
  return -EINVAL;
}

unsigned pirec_audio_format_bytes(enum pirec_audio_format format)
{
  return format == PIREC_AUDIO_S16 ? 2 : 4;
}

int pirec_audio_new(uv_loop_t *loop, const struct pirec_audio_options *opts, struct pirec_audio **out)
{
  *out = NULL;
  struct pirec_audio *a = calloc(1, sizeof *a);
  if (!a)
    return -ENOMEM;
  pirec_audio_options_default(&a->opts);
  if (opts)
    a->opts = *opts;
  const struct pirec_audio_options *o = &a->opts;
  if (!o->device || !*o->device || o->rate < 1000 || o->rate > 768000 || o->channels < 1 ||
      o->channels > 32 || o->period_us < 1000 || o->buffer_periods < 2 || o->format > PIREC_AUDIO_F32) {
    free(a);
    return -EINVAL;
  }
  a->device = strdup(o->device);
  if (!a->device) {
    free(a);
    return -ENOMEM;
  }
  a->opts.device = a->device;
  a->loop = loop;
  *out = a;
  return 0;
}

int pirec_audio_set_key(struct pirec_audio *a, const struct pirec_crypt_key *key, const char *session_dir)
{
  return pirec_crypt_session_set(&a->crypt, key, session_dir);
}

const char *pirec_audio_last_error(const struct pirec_audio *a)
{
  return a->last_error;
}

/* ---- capture thread ---- */

static int64_t frames_ns(const struct pirec_audio *a, uint64_t frames)
{
  return (int64_t)(frames * 1000000000 / a->opts.rate);
}

/* Frames an overrun lost: the gap between where this block's first frame was due and where the
 * device says it is, on the device's clock, or on the host's when the device stamps nothing. */
static uint64_t xrun_lost(struct pirec_audio *a, int64_t first_ts, int64_t mono, int n)
{
  int64_t gap;
  if (first_ts != INT64_MIN && a->next_ts != INT64_MIN)
    gap = first_ts - a->next_ts;
  else
    gap = mono - frames_ns(a, (uint64_t)n) - a->next_mono;
  if (gap <= 0)
    return 0;
  return (uint64_t)((gap * (int64_t)a->opts.rate + 500000000) / 1000000000);
}

static void push_row(struct pirec_audio *a, int64_t mono, int64_t wall, int64_t first_ts, int n)
{
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, a->row, sizeof a->row);
  pirec_csv_row_lead(&row, a->trial, mono, wall);
  pirec_csv_row_time(&row, first_ts == INT64_MIN ? PIREC_CSV_NO_TIME : first_ts);
  pirec_csv_row_u64(&row, a->first_frame);
  pirec_csv_row_u64(&row, (uint64_t)n);
  pirec_csv_row_u64(&row, a->lost);
  pirec_csv_row_u64(&row, 0); /* no pre-trigger for audio: every row is the trial's own */
  if (pirec_csv_row_end(&row) < 0 || pirec_csv_push(a->csv, &row) < 0)
    atomic_fetch_add(&a->rows_dropped, 1);
}

#define DRIFT_MIN_NS INT64_C(1000000000) /* shorter spans give timestamp jitter, not drift */

/* The card's frames against CLOCK_MONOTONIC's nanoseconds between the trial's first block and
 * this one (both stamped by the device), as nominal time minus elapsed time over elapsed time. */
static void update_drift(struct pirec_audio *a, int64_t first_ts)
{
  uint64_t pos = a->first_frame + a->lost_total;
  if (first_ts == INT64_MIN)
    return;
  if (a->ts0 == INT64_MIN) {
    a->ts0 = first_ts;
    a->pos0 = pos;
    return;
  }
  int64_t span = first_ts - a->ts0;
  if (span < DRIFT_MIN_NS)
    return;
  __int128 nominal = (__int128)(pos - a->pos0) * 1000000000 / a->opts.rate;
  __int128 ppb = (nominal - span) * 1000000000 / span;
  atomic_store(&a->drift_ppb, (int_fast64_t)ppb);
  atomic_store(&a->drift_known, 1);
}

/* A block that starts more than two periods (and 20 ms) after the previous one ended, on the
 * device's clock, follows frames the driver lost without an overrun being reported (snd-aloop
 * does so when its timer runs late); timestamp jitter stays far below that. */
static int device_gap(const struct pirec_audio *a, int64_t first_ts)
{
  if (first_ts == INT64_MIN || a->next_ts == INT64_MIN)
    return 0;
  int64_t limit = 2 * frames_ns(a, a->dev.period);
  return first_ts - a->next_ts > (limit > 20000000 ? limit : 20000000);
}

static void take_block(struct pirec_audio *a, int n, int64_t first_ts)
{
  int64_t mono = pirec_clock_mono_ns(), wall = pirec_clock_wall_ns();
  if (a->after_xrun || device_gap(a, first_ts)) {
    uint64_t lost = xrun_lost(a, first_ts, mono, n);
    a->lost += lost;
    a->lost_total += lost;
    atomic_fetch_add(&a->frames_dropped, lost);
    a->after_xrun = 0;
  }
  update_drift(a, first_ts);
  a->next_ts = first_ts == INT64_MIN ? INT64_MIN : first_ts + frames_ns(a, (uint64_t)n);
  a->next_mono = mono;
  if (pirec_sink_push(a->wav, a->block, (size_t)n * a->dev.frame_bytes) < 0) {
    /* Dropped whole: the file holds no part of it, the next row counts its frames. */
    a->lost += (uint64_t)n;
    a->lost_total += (uint64_t)n;
    atomic_fetch_add(&a->frames_dropped, (uint64_t)n);
    return;
  }
  push_row(a, mono, wall, first_ts, n);
  a->first_frame += (uint64_t)n;
  a->lost = 0;
  atomic_fetch_add(&a->blocks, 1);
  atomic_fetch_add(&a->frames, (uint64_t)n);
}

static void held(struct pirec_audio *a)
{
  /* Test hook only: a stalled reader, so the device overruns as on a starved system. */
  struct timespec ts = {0, 5000000};
  while (atomic_load(&a->hold) && !atomic_load(&a->stop))
    nanosleep(&ts, NULL);
}

static void capture(void *arg)
{
  struct pirec_audio *a = arg;
  pthread_setname_np(pthread_self(), "pirec-audio");
  while (!atomic_load(&a->stop)) {
    held(a);
    int64_t first_ts = INT64_MIN;
    int n = pirec__audio_dev_read(&a->dev, a->block, &first_ts);
    if (n == -EPIPE) {
      atomic_fetch_add(&a->xruns, 1);
      a->after_xrun = 1;
    } else if (n < 0) {
      atomic_store(&a->thread_err, n);
      break;
    } else if (n > 0) {
      take_block(a, n, first_ts);
    }
  }
  atomic_store(&a->exited, 1);
  uv_async_send(&a->done);
}

/* ---- loop thread ---- */

void pirec_audio_on_error(struct pirec_audio *a, pirec_audio_error_cb cb, void *user)
{
  a->on_error = cb;
  a->on_error_user = user;
}

/* The trial's first error: logged, kept for the counters and handed to the owner once. */
static void trial_error(struct pirec_audio *a, int err, const char *message)
{
  if (a->sink_err)
    return;
  a->sink_err = err;
  pirec_log(PIREC_LOG_ERROR, "audio: %s", message);
  if (a->on_error)
    a->on_error(a, err, message, a->on_error_user);
}

static void on_sink_error(struct pirec_sink *sink, int err, void *user)
{
  char msg[512];
  snprintf(msg, sizeof msg, "cannot write '%s': %s", pirec_sink_path(sink), uv_strerror(err));
  trial_error(user, err, msg);
}

static void on_done_closed(uv_handle_t *h);

/* Runs after the thread's last send: a device failure while recording, or the end of a close. The
 * join happens only once the thread has said it is leaving, so it never waits on the loop. */
static void on_thread_done(uv_async_t *h)
{
  struct pirec_audio *a = container_of(h, struct pirec_audio, done);
  if (!atomic_load(&a->exited))
    return;
  int err = atomic_load(&a->thread_err);
  if (err < 0) {
    char msg[512];
    snprintf(msg, sizeof msg, "capture from '%s' stopped: %s", a->device, snd_strerror(err));
    trial_error(a, err, msg);
  }
  if (!a->closing || a->joined)
    return;
  a->joined = 1;
  uv_thread_join(&a->thread);
  uv_close((uv_handle_t *)h, on_done_closed);
}

static int new_sink(struct pirec_audio *a, const char *path, size_t ring, struct pirec_sink **out)
{
  struct pirec_sink_options so;
  pirec_sink_options_default(&so);
  so.ring_bytes = ring;
  so.fsync_interval_ms = a->opts.fsync_interval_ms;
  so.mkdir_mode = 0755;
  /* Blocks of 20 ms need no 10 ms drain: one write of both files every 100 ms costs the loop and
   * the threadpool a tenth of the wake-ups (bench/bench-audio), and a killed process loses at
   * most that much more. */
  so.drain_interval_ms = 100;
  struct pirec_sink_transform tf;
  int err = pirec_crypt_session_sink(&a->crypt, path, &so, &tf);
  if (err == 0)
    err = pirec_sink_new(a->loop, path, &so, on_sink_error, a, out);
  return err;
}

static size_t wav_ring(const struct pirec_audio *a)
{
  size_t two_s = (size_t)a->opts.rate * a->dev.frame_bytes * 2;
  size_t ring = a->opts.ring_bytes ? a->opts.ring_bytes : two_s;
  return ring < (1u << 20) ? (1u << 20) : ring;
}

static int open_files(struct pirec_audio *a, const char *dir, int part)
{
  char suffix[16] = "";
  if (part > 0)
    snprintf(suffix, sizeof suffix, "_p%d", part);
  size_t len = strlen(dir) + 64;
  char *csv_path = malloc(len);
  a->wav_path = malloc(len);
  if (!csv_path || !a->wav_path) {
    free(csv_path);
    return -ENOMEM;
  }
  snprintf(a->wav_path, len, "%s/t%03d%s_audio.wav", dir, a->trial, suffix);
  /* Noted now: the session's key is wiped at its stop, before this trial's files are closed. */
  a->encrypted = a->crypt.key != NULL;
  snprintf(csv_path, len, "%s/t%03d%s_audio_blocks.csv", dir, a->trial, suffix);
  int err = new_sink(a, a->wav_path, wav_ring(a), &a->wav);
  if (err == 0)
    err = new_sink(a, csv_path, 1u << 20, &a->csv);
  free(csv_path);
  if (err < 0)
    return err;
  pirec_audio_wav_header(a->header, a->opts.format, a->opts.rate, a->opts.channels, UINT64_MAX);
  pirec_sink_push(a->wav, a->header, sizeof a->header);
  int hl = pirec_csv_header(a->row, sizeof a->row, columns);
  if (hl > 0)
    pirec_sink_push(a->csv, a->row, (size_t)hl);
  return 0;
}

static void discard_trial(struct pirec_audio *a)
{
  pirec_sink_close(a->wav, NULL, NULL);
  pirec_sink_close(a->csv, NULL, NULL);
  a->wav = a->csv = NULL;
  free(a->wav_path);
  a->wav_path = NULL;
  free(a->block);
  a->block = NULL;
  pirec__audio_dev_close(&a->dev);
}

static int start_thread(struct pirec_audio *a)
{
  a->first_frame = a->lost = a->lost_total = 0;
  a->ts0 = INT64_MIN;
  atomic_store(&a->drift_known, 0);
  a->after_xrun = 0;
  a->next_ts = a->next_mono = INT64_MIN;
  atomic_store(&a->stop, 0);
  atomic_store(&a->thread_err, 0);
  atomic_store(&a->exited, 0);
  a->joined = 0;
  int err = uv_async_init(a->loop, &a->done, on_thread_done);
  if (err < 0)
    return err;
  err = uv_thread_create(&a->thread, capture, a);
  if (err < 0)
    uv_close((uv_handle_t *)&a->done, NULL);
  return err;
}

int pirec_audio_open(struct pirec_audio *a, const char *dir, int trial, int part)
{
  if (a->open)
    return -EBUSY;
  a->last_error[0] = '\0';
  int err = pirec__audio_dev_open(&a->dev, &a->opts, a->last_error, sizeof a->last_error);
  if (err < 0)
    return err;
  a->trial = trial;
  a->sink_err = 0;
  a->block = malloc(a->dev.period * a->dev.frame_bytes);
  err = a->block ? open_files(a, dir, part) : -ENOMEM;
  if (err == 0)
    err = start_thread(a);
  if (err < 0) {
    snprintf(a->last_error, sizeof a->last_error, "cannot record audio into '%s': %s", dir, uv_strerror(err));
    discard_trial(a);
    return err;
  }
  a->open = 1;
  return 0;
}

/* ---- close: thread, sinks, header ---- */

static void close_step_done(struct pirec_audio *a, int err)
{
  if (err < 0 && a->close_err == 0)
    a->close_err = err;
  if (--a->pending > 0)
    return;
  free(a->wav_path);
  a->wav_path = NULL;
  free(a->block);
  a->block = NULL;
  a->open = a->closing = 0;
  pirec_audio_cb cb = a->cb;
  a->cb = NULL;
  if (cb)
    cb(a, a->close_err, a->cb_user);
}

static void on_header_closed(uv_fs_t *req)
{
  struct pirec_audio *a = req->data;
  int err = (int)req->result;
  uv_fs_req_cleanup(req);
  close_step_done(a, err < 0 ? err : 0);
}

static void on_header_written(uv_fs_t *req)
{
  struct pirec_audio *a = req->data;
  int err = (int)req->result, fd = a->fs.file;
  uv_fs_req_cleanup(req);
  if (err < 0)
    a->close_err = a->close_err ? a->close_err : err;
  if (uv_fs_close(a->loop, &a->fs, fd, on_header_closed) < 0)
    close_step_done(a, 0);
}

static void on_header_open(uv_fs_t *req)
{
  struct pirec_audio *a = req->data;
  int fd = (int)req->result;
  uv_fs_req_cleanup(req);
  if (fd < 0) {
    close_step_done(a, fd);
    return;
  }
  a->fs.file = fd;
  pirec_audio_wav_header(a->header, a->opts.format, a->opts.rate, a->opts.channels,
                         a->data_bytes - PIREC_AUDIO_WAV_HEADER);
  uv_buf_t b = uv_buf_init((char *)a->header, sizeof a->header);
  if (uv_fs_write(a->loop, &a->fs, fd, &b, 1, 0, on_header_written) < 0)
    close_step_done(a, -EIO);
}

/* The final sizes go into the header once every block is in the file; an encrypted or failed file
 * keeps its "read to the end" header, which readers and pirec-remux accept. */
static void rewrite_header(struct pirec_audio *a)
{
  a->fs.data = a;
  if (a->encrypted || a->close_err || a->data_bytes < PIREC_AUDIO_WAV_HEADER ||
      uv_fs_open(a->loop, &a->fs, a->wav_path, O_WRONLY | O_CLOEXEC, 0, on_header_open) < 0)
    close_step_done(a, 0);
}

static void on_sink_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  struct pirec_audio *a = user;
  a->closed_bytes += final->bytes_written;
  if (sink == a->wav) {
    a->wav = NULL;
    a->data_bytes = final->bytes_written;
    if (final->error == 0 && a->close_err == 0) {
      a->pending++; /* the header's rewrite */
      rewrite_header(a);
    }
  } else {
    a->csv = NULL;
  }
  close_step_done(a, final->error);
}

static void on_done_closed(uv_handle_t *h)
{
  struct pirec_audio *a = container_of((uv_async_t *)h, struct pirec_audio, done);
  pirec__audio_dev_close(&a->dev);
  a->pending = 2;
  if (a->sink_err)
    a->close_err = a->sink_err;
  pirec_sink_close(a->wav, on_sink_closed, a);
  pirec_sink_close(a->csv, on_sink_closed, a);
}

int pirec_audio_close_file(struct pirec_audio *a, pirec_audio_cb cb, void *user)
{
  if (!a->open || a->closing)
    return -ENOTCONN;
  a->closing = 1;
  a->close_err = 0;
  a->cb = cb;
  a->cb_user = user;
  atomic_store(&a->stop, 1);
  if (atomic_load(&a->exited)) /* it ended on a device error and its send has been handled */
    uv_async_send(&a->done);
  return 0;
}

void pirec_audio_hold(struct pirec_audio *a, int hold)
{
  atomic_store(&a->hold, hold);
}

void pirec_audio_counters(const struct pirec_audio *a, struct pirec_audio_counters *out)
{
  memset(out, 0, sizeof *out);
  out->blocks = atomic_load(&a->blocks);
  out->frames = atomic_load(&a->frames);
  out->frames_dropped = atomic_load(&a->frames_dropped);
  out->xruns = atomic_load(&a->xruns);
  out->rows_dropped = atomic_load(&a->rows_dropped);
  out->bytes_written = a->closed_bytes;
  out->clock_drift_ppb = atomic_load(&a->drift_ppb);
  out->drift_known = atomic_load(&a->drift_known);
  out->error = a->sink_err;
  out->recording = a->open;
  struct pirec_sink *sinks[2] = {a->wav, a->csv};
  for (int i = 0; i < 2; i++) {
    if (!sinks[i])
      continue;
    struct pirec_sink_counters sc;
    pirec_sink_counters(sinks[i], &sc);
    out->bytes_written += sc.bytes_written;
  }
}

void pirec_audio_free(struct pirec_audio *a)
{
  if (!a)
    return;
  free(a->device);
  free(a->wav_path);
  free(a->block);
  pirec_crypt_session_clear(&a->crypt);
  free(a);
}
