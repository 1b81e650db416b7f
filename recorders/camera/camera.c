/* The camera: capture thread -> ring -> loop -> encoder job (raw) or file sink (compressed),
 * one frames-CSV row per frame that reached the video file. */

#include "camera-int.h"
#include "h264.h"
#include "mkv.h"

#include "pirec/clock.h"
#include "pirec/crypt.h"
#include "pirec/csv.h"
#include "pirec/error.h"
#include "pirec/ffmpeg.h"
#include "pirec/fs.h"
#include "pirec/job.h"
#include "pirec/log.h"
#include "pirec/ring.h"
#include "pirec/rowgate.h"
#include "pirec/sink.h"
#include "pirec/container_of.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libavformat/avformat.h>

/* Every ring record: this header, then the frame's bytes. */
struct frame_hdr {
  uint64_t seq;
  int64_t mono_ns;
  int64_t wall_ns;
  int64_t device_ts_ns;
  uint64_t gap_drops;   /* frames missing in the device's timeline just before this one */
  uint64_t gap_missing; /* of those, the ones the source never delivered (no seq of their own) */
  uint64_t len;
};

/* A frame fed to the encoder, waiting for its access unit. */
struct meta {
  uint64_t seq;
  int64_t mono_ns, wall_ns, device_ts_ns;
  uint64_t dropped;
};

/* Log-linear histogram: 32 sub-buckets per power of two (~3% resolution). */
#define HIST_SUB 32
#define HIST_N   (60 * HIST_SUB)

struct hist {
  _Atomic uint64_t b[HIST_N];
  _Atomic uint64_t count;
  _Atomic int64_t max;
};

static unsigned hist_bucket(uint64_t v)
{
  if (v < HIST_SUB)
    return (unsigned)v;
  int msb = 63 - __builtin_clzll(v);
  int shift = msb - 5;
  unsigned idx = (unsigned)(shift + 1) * HIST_SUB + (unsigned)((v >> shift) & (HIST_SUB - 1));
  return idx < HIST_N ? idx : HIST_N - 1;
}

static int64_t hist_value(unsigned idx)
{
  if (idx < HIST_SUB)
    return idx;
  unsigned shift = idx / HIST_SUB - 1;
  uint64_t lo = (uint64_t)(HIST_SUB + idx % HIST_SUB) << shift;
  return (int64_t)(lo + ((1ull << shift) >> 1)); /* bucket middle */
}

static void hist_add(struct hist *h, int64_t v)
{
  if (v < 0)
    v = 0;
  atomic_fetch_add_explicit(&h->b[hist_bucket((uint64_t)v)], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
  if (v > atomic_load_explicit(&h->max, memory_order_relaxed))
    atomic_store_explicit(&h->max, v, memory_order_relaxed);
}

static void hist_summary(const struct hist *h, struct pirec_camera_latency *out)
{
  uint64_t total = 0, seen = 0;
  uint64_t *counts = calloc(HIST_N, sizeof *counts);
  memset(out, 0, sizeof *out);
  if (!counts)
    return;
  for (unsigned i = 0; i < HIST_N; i++)
    total += counts[i] = atomic_load_explicit(&h->b[i], memory_order_relaxed);
  out->count = total;
  out->max_ns = atomic_load_explicit(&h->max, memory_order_relaxed);
  if (total > 0) {
    const double q[3] = {0.5, 0.99, 0.999};
    int64_t *dst[3] = {&out->p50_ns, &out->p99_ns, &out->p999_ns};
    int k = 0;
    for (unsigned i = 0; i < HIST_N && k < 3; i++) {
      seen += counts[i];
      while (k < 3 && (double)seen >= q[k] * (double)total) {
        int64_t v = hist_value(i);
        *dst[k++] = v < out->max_ns ? v : out->max_ns;
      }
    }
  }
  free(counts);
}

struct event_msg {
  enum pirec_camera_event event;
  char text[256];
};

struct trial {
  int number, part;
  int segment;   /* 0: segments off; else this file's number, from 1 */
  int rolling;   /* this stop is a segment change: the next segment starts when it is closed */
  int prior_err; /* the first error of the trial's earlier segments */
  int seg_taken; /* a frame was given to this segment (seg_t0 is its capture time) */
  int64_t seg_t0, seg_t0_dev;
  int t0_set; /* t0_mono is set (raw: the MKV's time 0, the file's first frame) */
  char *video_path, *csv_path;
  struct pirec_sink *video, *csv;
  struct pirec_rowgate *gate; /* rows wait here until their frame is in the video file */
  uint64_t frames;            /* frames pushed into the video sink (the next row's frame index) */
  uint64_t dropped_after;     /* lost after the last row, counted at the end */
  struct pirec_mkv *mkv;
  struct pirec_job *job;
  struct meta *meta;
  size_t meta_cap, meta_head, meta_count;
  struct pirec_h264_splitter au;
  uint64_t rows;
  uint64_t before_rows; /* rows of frames from before the trial's start (before_start = 1) */
  int replaying;        /* the backlog's frames are being written: rows get before_start = 1 */
  uint64_t video_offset;
  int64_t t0_mono;
  int stopping;
  int64_t stop_mono; /* frames that arrived up to here still belong to the trial */
  int fed_all;       /* every frame of the trial has been fed or written */
  int past_stop;     /* the first frame past the stop was taken */
  int finalizing;
  int sinks_open;
  int err;
  int mkv_failed;
  int seal;                 /* the video sink closed cleanly: seal it once the CSV is closed too */
  uint64_t seal_file_bytes; /* the video sink's final bytes_written */
  struct pirec_mkv_sealer sealer;
  int video_empty; /* not a byte was written: the file is removed, the CSV kept */
  struct pirec_fs_req unlink;
  struct pirec_camera *cam;
  pirec_camera_stopped_cb stopped_cb;
  void *stopped_user;
};

/* A segment change in progress: the trial's next files open once the current ones are closed
 * (the frames meanwhile wait in the ring, as at a trial change). */
struct roll {
  int active;
  int number, part, segment;
  uint64_t frames, rows, before_rows; /* the trial's counters so far, which the next file goes on */
  int err;
  int stop; /* the trial was stopped meanwhile: the next segment stops at stop_mono */
  int64_t stop_mono;
  pirec_camera_stopped_cb cb;
  void *user;
  int handover; /* pirec_camera_hand_over was called meanwhile */
  int64_t handover_mono;
};

struct pirec_camera {
  uv_loop_t *loop;
  struct pirec_crypt_session crypt; /* the trial files' encryption */
  struct pirec_camera_settings s;
  char label[PIREC_CAMERA_PATH_MAX + 32]; /* the source as messages name it */
  pirec_camera_event_cb on_event;
  void *user;
  struct pirec_camera_format fmt;
  int raw;
  int legacy_vsync;
  int feed_by_write; /* pirec__camera_set_feed: write(2) instead of vmsplice(2) into the encoder */

  /* Capture thread. src is replaced only by the capture thread, under src_lock (reconnects). */
  pthread_t thread;
  int thread_started;
  int joining; /* the capture thread is being joined in the threadpool (close) */
  uv_work_t join_work;
  pthread_mutex_t src_lock;
  struct pirec_camera_source *src;
  atomic_int stop;
  struct pirec_ring *ring;
  _Atomic uint64_t captured;
  _Atomic uint64_t drops_device;
  _Atomic uint64_t source_errors;
  _Atomic uint64_t reconnects;
  atomic_int last_error;
  atomic_int source_failure; /* enum pirec_camera_failure */
  struct hist capture_hist;
  /* nap() waits on stop_cond, so a close wakes a capture thread waiting to retry */
  pthread_mutex_t stop_lock;
  pthread_cond_t stop_cond;

  /* Events from the capture thread (rare: errors, reconnects), under ev_lock. */
  pthread_mutex_t ev_lock;
  struct event_msg evq[8];
  unsigned ev_count;
  atomic_int ev_pending;

  /* Loop thread. */
  uv_async_t async;
  uv_timer_t timer; /* deferred completions */
  int handles;
  int has_async, has_timer;
  int started;
  int held;
  int handover; /* frames after the stopping trial's end wait in the ring for the next trial */
  int64_t handover_mono;
  struct pirec__camera_gop gop; /* compressed sources: the current GOP, the pre-trigger buffer */
  /* Records taken from the ring, in order; a record's space is released once it and all before it
   * are done (borrowed encoder writes finish asynchronously). */
  uint8_t *infl_done;
  size_t infl_cap;
  uint64_t infl_taken, infl_released;
  unsigned borrowed_out;
  struct pirec_ring_record cur;
  uint64_t cur_abs;
  uint64_t cur_dropped;
  int cur_valid;
  uint64_t pending;             /* frames lost since the last frame that got through */
  uint64_t ring_drops_taken;    /* the ring's drops attached to the records taken so far */
  uint64_t ring_drops_claimed;  /* drops a trial claimed before the ring attached them (take_cur) */
  uint64_t seen;                /* seq + 1 of the last record taken: frames the loop has accounted for */
  int64_t prev_mono, last_mono; /* arrival of the record taken before cur, and of cur */
  uint64_t device_gaps_seen;
  uint64_t dropped_after_last, dropped_after_total;
  uint64_t drops_encoder, drops_sink, frames_idle;
  uint64_t encoder_restarts;
  uint64_t rows_last, before_last;
  uint64_t bytes_last;
  int loop_last_error;
  struct trial *trial;
  char *trial_dir; /* where the running trial's files go (its next segments too) */
  struct roll roll;
  int closing;
  pirec_camera_close_cb close_cb;
  void *close_user;

  /* Snapshot request: the next frame taken is copied and encoded in the threadpool. */
  struct snapshot *snap;
  char start_error[PIREC_CAMERA_PATH_MAX + 128]; /* why the last pirec_camera_start failed */
  int probe_done;                                /* ffmpeg probed (see probe_once) */
  int probe_rc;
  char probe_err[256];
};

/* A snapshot (path set: written to a file) or a preview (path NULL: a JPEG in memory for pcb). */
struct snapshot {
  uv_work_t work;
  struct pirec_camera *cam;
  char *path;
  uint8_t *frame;
  size_t len;
  int64_t mono_ns; /* when the frame was captured */
  int have_frame;
  int result;
  int max_width;
  uint8_t *jpeg;
  size_t jpeg_len;
  int width, height;
  pirec_camera_snapshot_cb cb;
  pirec_camera_preview_cb pcb;
  void *user;
};

static void drain(struct pirec_camera *cam);
static void snap_check(uv_timer_t *timer);
static void finalize_trial(struct pirec_camera *cam);
static void maybe_finish_close(struct pirec_camera *cam);

/* ---- events ---- */

static void emit(struct pirec_camera *cam, enum pirec_camera_event ev, const char *text)
{
  if (cam->on_event)
    cam->on_event(cam, ev, text, cam->user);
  else
    pirec_log(ev == PIREC_CAMERA_EVENT_SOURCE_RECONNECTED || ev == PIREC_CAMERA_EVENT_ENCODER_RESTARTED
                  ? PIREC_LOG_INFO
                  : PIREC_LOG_WARN,
              "%s", text);
}

static void post_event(struct pirec_camera *cam, enum pirec_camera_event ev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void post_event(struct pirec_camera *cam, enum pirec_camera_event ev, const char *fmt, ...)
{
  va_list ap;
  pthread_mutex_lock(&cam->ev_lock);
  if (cam->ev_count < sizeof cam->evq / sizeof cam->evq[0]) {
    struct event_msg *m = &cam->evq[cam->ev_count++];
    m->event = ev;
    va_start(ap, fmt);
    vsnprintf(m->text, sizeof m->text, fmt, ap);
    va_end(ap);
  }
  pthread_mutex_unlock(&cam->ev_lock);
  atomic_store(&cam->ev_pending, 1);
  uv_async_send(&cam->async);
}

static void deliver_events(struct pirec_camera *cam)
{
  struct event_msg q[8];
  unsigned n;
  if (!atomic_exchange(&cam->ev_pending, 0))
    return;
  pthread_mutex_lock(&cam->ev_lock);
  n = cam->ev_count;
  memcpy(q, cam->evq, n * sizeof q[0]);
  cam->ev_count = 0;
  pthread_mutex_unlock(&cam->ev_lock);
  for (unsigned i = 0; i < n; i++)
    emit(cam, q[i].event, q[i].text);
}

/* ---- capture thread ---- */

/* Sleeps up to ns unless asked to stop; 1 when stopping. pirec_camera_close() signals stop_cond,
 * so a long retry delay never holds up a close. */
static int nap(struct pirec_camera *cam, int64_t ns)
{
  struct timespec until;
  int stopping;

  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += ns / 1000000000;
  until.tv_nsec += ns % 1000000000;
  if (until.tv_nsec >= 1000000000) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock(&cam->stop_lock);
  while (!(stopping = atomic_load(&cam->stop)) &&
         pthread_cond_timedwait(&cam->stop_cond, &cam->stop_lock, &until) == 0) {
  }
  pthread_mutex_unlock(&cam->stop_lock);
  return stopping || atomic_load(&cam->stop);
}

/* The capture thread's own state; nothing here is shared. */
struct capture {
  struct pirec_camera *cam;
  int64_t period;         /* frame interval, 0 when the rate is unknown */
  int64_t prev_dev;       /* device time of the last frame that had one, INT64_MIN: none yet */
  int64_t prev_arrival;   /* arrival of the last frame, INT64_MIN: none yet */
  int64_t since_dev;      /* frames since the last one with a device time */
  uint64_t gap_carry;     /* device drops not yet carried by a ring record */
  uint64_t missing_carry; /* of those, frames never delivered (timestamp gaps) */
  uint64_t seq;
  int64_t backoff;                   /* delay before the next retry */
  enum pirec_camera_failure failing; /* class of the failure being retried, NONE while it works */
  int reconnected;                   /* the next frame is the first of a reopened source */
};

/* Every capture failure gets its class here and nowhere else. */
enum pirec_camera_failure pirec_camera_classify(int err)
{
  switch (err) {
  case -ENOENT: /* a device node or program that is not there */
  case -ENODEV: /* unplugged */
  case -ENXIO:
  case -EHOSTUNREACH:
  case -ENETUNREACH: return PIREC_CAMERA_FAILURE_DEVICE_MISSING;
  case -EINVAL: /* the device or program refused these settings */
  case -ENOTSUP:
  case AVERROR_DEMUXER_NOT_FOUND:
  case AVERROR_DECODER_NOT_FOUND:
  case AVERROR_BSF_NOT_FOUND:
  case AVERROR_PROTOCOL_NOT_FOUND:
  case AVERROR_OPTION_NOT_FOUND: return PIREC_CAMERA_FAILURE_FATAL;
  default: return PIREC_CAMERA_FAILURE_TRANSIENT;
  }
}

/* What the capture thread does about each class: retry delays (doubling from min to max), or stop. */
struct capture_policy {
  int64_t backoff_min_ns, backoff_max_ns;
  int stop;
};

static struct capture_policy capture_policy(enum pirec_camera_failure f)
{
  switch (f) {
  case PIREC_CAMERA_FAILURE_NONE:
  case PIREC_CAMERA_FAILURE_TRANSIENT: return (struct capture_policy){100000000, 5000000000, 0};
  /* A camera that is not there comes back when someone plugs it in: look less often. */
  case PIREC_CAMERA_FAILURE_DEVICE_MISSING: return (struct capture_policy){1000000000, 10000000000, 0};
  case PIREC_CAMERA_FAILURE_FATAL: break;
  }
  return (struct capture_policy){0, 0, 1};
}

const char *pirec_camera_failure_str(enum pirec_camera_failure f)
{
  switch (f) {
  case PIREC_CAMERA_FAILURE_NONE: return "none";
  case PIREC_CAMERA_FAILURE_TRANSIENT: return "transient";
  case PIREC_CAMERA_FAILURE_DEVICE_MISSING: return "device missing";
  case PIREC_CAMERA_FAILURE_FATAL: return "fatal configuration";
  }
  return "unknown";
}

/* A source open or read failed (what says which, with the error's text): counts it, reports it once
 * per class, and waits as the class's policy says. Returns 1 when the thread is to end. */
static int capture_failed(struct capture *c, int err, const char *what)
{
  struct pirec_camera *cam = c->cam;
  enum pirec_camera_failure f = pirec_camera_classify(err);
  struct capture_policy p = capture_policy(f);

  atomic_fetch_add(&cam->source_errors, 1);
  atomic_store(&cam->last_error, err);
  atomic_store(&cam->source_failure, (int)f);
  if (f != c->failing || p.stop) {
    c->backoff = p.backoff_min_ns;
    if (p.stop)
      post_event(cam, PIREC_CAMERA_EVENT_SOURCE_ERROR, "camera '%s': %s (%s); capture stopped", cam->s.name,
                 what, pirec_camera_failure_str(f));
    else
      post_event(cam, PIREC_CAMERA_EVENT_SOURCE_ERROR, "camera '%s': %s (%s); retrying in %lld ms",
                 cam->s.name, what, pirec_camera_failure_str(f), (long long)(c->backoff / 1000000));
  }
  c->failing = f;
  if (p.stop) {
    while (!nap(cam, 1000000000)) {
    }
    return 1;
  }
  if (nap(cam, c->backoff))
    return 1;
  c->backoff = c->backoff * 2 > p.backoff_max_ns ? p.backoff_max_ns : c->backoff * 2;
  return 0;
}

/* Opens the source again after a failure. Returns 0 (cam->src is set), 1 to try again, -1 when the
 * thread is to end. */
static int capture_reopen(struct capture *c)
{
  struct pirec_camera *cam = c->cam;
  struct pirec_camera_source *src;
  struct pirec_camera_format f;
  char *msg = NULL;
  int r = pirec_camera_source_open(&cam->s, &src, &msg);

  if (r < 0) {
    int end = capture_failed(c, r, msg ? msg : pirec_strerror(r));
    free(msg);
    return end ? -1 : 1;
  }
  pirec_camera_source_format(src, &f);
  if (f.codec != cam->fmt.codec || f.frame_bytes != cam->fmt.frame_bytes) {
    pirec_camera_source_free(src);
    return capture_failed(c, -EAGAIN, "the source came back with another format") ? -1 : 1;
  }
  pthread_mutex_lock(&cam->src_lock);
  cam->src = src;
  pthread_mutex_unlock(&cam->src_lock);
  if (atomic_load(&cam->stop))
    return -1;
  atomic_fetch_add_explicit(&cam->reconnects, 1, memory_order_relaxed);
  atomic_store(&cam->source_failure, PIREC_CAMERA_FAILURE_NONE);
  post_event(cam, PIREC_CAMERA_EVENT_SOURCE_RECONNECTED, "camera '%s': source '%s' reconnected", cam->s.name,
             cam->label);
  c->failing = PIREC_CAMERA_FAILURE_NONE;
  c->backoff = capture_policy(PIREC_CAMERA_FAILURE_TRANSIENT).backoff_min_ns;
  if (!f.device_clock_continuous) {
    c->prev_dev = INT64_MIN; /* a new timeline: the gap is measured from arrival times */
    c->since_dev = 0;
  }
  return 0;
}

/* A read failed: a file that ends is over (1: the thread ends); anything else, a network stream
 * that ends included (an RTSP server or TCP peer closing the connection), closes the source for a
 * reopen after the policy's delay. */
static int capture_read_failed(struct capture *c, struct pirec_camera_source *src, int r)
{
  struct pirec_camera *cam = c->cam;
  char what[PIREC_CAMERA_PATH_MAX + 128];

  atomic_store(&cam->last_error, r);
  if (r == AVERROR_EOF && cam->s.kind == PIREC_CAMERA_URL && !pirec__camera_source_is_network(&cam->s)) {
    post_event(cam, PIREC_CAMERA_EVENT_SOURCE_EOF, "camera '%s': '%s' ended", cam->s.name, cam->label);
    while (!nap(cam, 1000000000)) {
    }
    return 1;
  }
  pthread_mutex_lock(&cam->src_lock);
  cam->src = NULL;
  pthread_mutex_unlock(&cam->src_lock);
  pirec_camera_source_free(src);
  c->reconnected = 1;
  snprintf(what, sizeof what, "reading '%s' failed: %s", cam->label, pirec_strerror(r));
  return capture_failed(c, r, what);
}

/* Frames the device skipped before f: from its timestamps when it has them, else (after a reconnect
 * of a source whose clock starts again) from the arrival times. */
static uint64_t device_gap(struct capture *c, const struct pirec_camera_frame *f)
{
  uint64_t gap = 0;

  c->since_dev++;
  if (c->period > 0) {
    /* steps: frame intervals since the last frame with a device timestamp (a frame whose rpicam
     * metadata block came too late has none, and is not a loss) */
    int64_t dt = -1, steps = 1;
    if (f->device_ts_ns != INT64_MIN && c->prev_dev != INT64_MIN) {
      dt = f->device_ts_ns - c->prev_dev;
      steps = c->since_dev;
    } else if (c->reconnected && c->prev_arrival != INT64_MIN) {
      dt = f->arrival_mono_ns - c->prev_arrival;
    }
    int64_t intervals = dt > 0 ? (dt + c->period / 2) / c->period : 0;
    if (intervals > steps)
      gap = (uint64_t)(intervals - steps);
  }
  c->reconnected = 0;
  if (f->device_ts_ns != INT64_MIN) {
    c->prev_dev = f->device_ts_ns;
    c->since_dev = 0;
  }
  c->prev_arrival = f->arrival_mono_ns;
  return gap;
}

/* Puts the frame into the ring with its header, or counts it lost. */
static void push_frame(struct capture *c, const struct pirec_camera_frame *f)
{
  struct pirec_camera *cam = c->cam;
  void *dst;

  if (cam->raw && f->len != cam->fmt.frame_bytes) {
    /* a short or padded buffer cannot be encoded: count it like a lost frame */
    atomic_fetch_add_explicit(&cam->drops_device, 1, memory_order_relaxed);
    c->gap_carry++;
    atomic_store_explicit(&cam->captured, ++c->seq, memory_order_relaxed);
    return;
  }
  if (pirec_ring_reserve(cam->ring, sizeof(struct frame_hdr) + f->len, &dst) == 0) {
    struct frame_hdr h = {.seq = c->seq,
                          .mono_ns = f->arrival_mono_ns,
                          .wall_ns = f->arrival_wall_ns,
                          .device_ts_ns = f->device_ts_ns,
                          .gap_drops = c->gap_carry,
                          .gap_missing = c->missing_carry,
                          .len = f->len};
    memcpy(dst, &h, sizeof h);
    memcpy((uint8_t *)dst + sizeof h, f->data, f->len);
    pirec_ring_commit(cam->ring, sizeof h + f->len);
    c->gap_carry = c->missing_carry = 0;
    uv_async_send(&cam->async);
  }
  /* else: the ring counted the drop; this frame's gap_carry waits for the next one */
  atomic_store_explicit(&cam->captured, ++c->seq, memory_order_relaxed);
  hist_add(&cam->capture_hist, pirec_clock_mono_ns() - f->arrival_mono_ns);
}

static void *capture_main(void *arg)
{
  struct pirec_camera *cam = arg;
  struct capture c = {.cam = cam, .prev_dev = INT64_MIN, .prev_arrival = INT64_MIN};
  char tname[16];

  c.period = cam->fmt.fps_num > 0 ? (int64_t)1000000000 * cam->fmt.fps_den / cam->fmt.fps_num : 0;
  c.backoff = capture_policy(PIREC_CAMERA_FAILURE_TRANSIENT).backoff_min_ns;
  snprintf(tname, sizeof tname, "cam-%.11s", cam->s.name);
  pthread_setname_np(pthread_self(), tname);

  while (!atomic_load(&cam->stop)) {
    struct pirec_camera_frame f;
    int r;

    if (!cam->src && (r = capture_reopen(&c)) != 0) {
      if (r < 0)
        break;
      continue;
    }
    r = pirec_camera_source_read(cam->src, &f);
    if (r == -EINTR)
      continue;
    if (r < 0) {
      if (capture_read_failed(&c, cam->src, r))
        break;
      continue;
    }
    uint64_t gap = device_gap(&c, &f);
    if (gap)
      atomic_fetch_add_explicit(&cam->drops_device, gap, memory_order_relaxed);
    c.gap_carry += gap;
    c.missing_carry += gap;
    push_frame(&c, &f);
  }
  return NULL;
}

/* ---- ring consumption ---- */

static void release_done(struct pirec_camera *cam)
{
  size_t n = 0;
  while (cam->infl_released + n < cam->infl_taken && cam->infl_done[(cam->infl_released + n) % cam->infl_cap])
    cam->infl_done[(cam->infl_released + n++) % cam->infl_cap] = 0;
  if (n) {
    pirec_ring_release(cam->ring, n);
    cam->infl_released += n;
  }
}

static void mark_done(struct pirec_camera *cam, uint64_t abs)
{
  cam->infl_done[abs % cam->infl_cap] = 1;
}

/* Hands the rows whose frames are now whole in the video file to the frames CSV. */
static void release_rows(struct pirec_camera *cam, struct trial *t, uint64_t whole_end)
{
  struct pirec_rowgate_result res;
  pirec_rowgate_release(t->gate, whole_end, t->csv, &res);
  t->rows += res.rows + res.refused;
  int r = res.error;
  if (r < 0 && !t->err) {
    /* The video has the frame but its row is lost: say so loudly, the file pair no longer maps. */
    t->err = r;
    cam->loop_last_error = r;
    emit(cam, PIREC_CAMERA_EVENT_WRITE_ERROR, "frames csv refused a row");
  }
}

/* The video sink wrote more: rows of the frames now in the file may follow them. */
static void video_written(struct pirec_sink *sink, uint64_t whole_end, void *user)
{
  struct pirec_camera *cam = user;
  struct trial *t = cam->trial;
  if (t && sink == t->video)
    release_rows(cam, t, whole_end);
}

/* A frame went into the video sink ending at file offset end: its row waits in the gate until
 * the frame's bytes are in the file (pirec_sink_whole_end), so no row ever precedes its frame on
 * disk, and a frame whose write fails gets no row (it is counted in dropped_after). The caller
 * checked pirec_rowgate_room before pushing the frame. */
static void hold_row(struct trial *t, uint64_t seq, int64_t mono, int64_t wall, int64_t dev, uint64_t dropped,
                     uint64_t bytes, int64_t offset, uint64_t end)
{
  char buf[PIREC_ROWGATE_ROW_MAX];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, buf, sizeof buf);
  pirec_csv_row_lead(&row, t->number, mono, wall);
  pirec_csv_row_u64(&row, t->frames++);
  pirec_csv_row_u64(&row, seq);
  pirec_csv_row_time(&row, dev); /* INT64_MIN (no device time) is PIREC_CSV_NO_TIME: empty */
  pirec_csv_row_u64(&row, dropped);
  pirec_csv_row_u64(&row, bytes);
  if (offset >= 0)
    pirec_csv_row_i64(&row, offset);
  else
    pirec_csv_row_empty(&row);
  pirec_csv_row_u64(&row, t->replaying ? 1 : 0);
  t->before_rows += t->replaying ? 1 : 0;
  int len = pirec_csv_row_end(&row);
  /* Cannot fail: room was checked, and a row is far shorter than the maximum. */
  if (len > 0)
    (void)pirec_rowgate_hold(t->gate, buf, (size_t)len, end, dropped);
}

/* Room for a frame of len bytes in the video sink, and for its row in the gate. */
static int sink_has_room(struct trial *t, size_t len)
{
  struct pirec_sink_counters c;
  pirec_sink_counters(t->video, &c);
  return c.error == 0 && c.ring_capacity - c.ring_used >= len && pirec_rowgate_room(t->gate);
}

static void borrowed_release(struct pirec_job *job, void *arg, int status)
{
  struct pirec_camera *cam = pirec_job_user(job);
  (void)status; /* a failed write's frame stays in the meta queue and is counted lost there */
  mark_done(cam, (uint64_t)(uintptr_t)arg);
  cam->borrowed_out--;
  release_done(cam);
  drain(cam);
  if (cam->closing)
    maybe_finish_close(cam);
}

/* Drops the current record on the loop side. */
static void drop_cur(struct pirec_camera *cam, uint64_t *cause)
{
  (*cause)++;
  cam->pending += cam->cur_dropped + 1;
}

/* The trial is stopping and its last frame is in: end the encoder's input (it flushes and exits;
 * enc_end finalizes) or, without an encoder, finalize on the next loop turn. */
static void feeding_done(struct pirec_camera *cam, struct trial *t)
{
  t->fed_all = 1;
  if (t->job) {
    if (pirec_job_stop(t->job) == 0)
      return;
    pirec_job_free(t->job);
    t->job = NULL;
  }
  uv_timer_start(&cam->timer, snap_check, 0, 0);
}

/* The record in cur is finished with: its ring space can go once those before it have. */
static void cur_done(struct pirec_camera *cam)
{
  mark_done(cam, cam->cur_abs);
  cam->cur_valid = 0;
}

/* A pending snapshot gets a copy of the frame just taken. */
static void snap_offer(struct pirec_camera *cam, const struct frame_hdr *h, const uint8_t *payload)
{
  struct snapshot *sn = cam->snap;

  if (!sn || sn->have_frame)
    return;
  sn->frame = malloc(h->len);
  if (sn->frame) {
    memcpy(sn->frame, payload, h->len);
    sn->len = h->len;
  }
  sn->mono_ns = h->mono_ns;
  sn->have_frame = 1;
  uv_timer_start(&cam->timer, snap_check, 0, 0);
}

/* A full ring attaches its drops to the next record pushed. When a stopping trial has drained the
 * ring empty, that record may come only after the trial ended (on a quiet machine the encoder
 * finishes within a frame interval), and the frames the ring refused while the trial ran would
 * count as idle. They were all refused before now: the trial claims them (pending, its
 * dropped_after), and the record that carries them later counts them no more. */
static void claim_unattached_drops(struct pirec_camera *cam)
{
  struct pirec_ring_stats rs;
  pirec_ring_stats(cam->ring, &rs);
  uint64_t known = cam->ring_drops_taken + cam->ring_drops_claimed;
  if (rs.dropped <= known)
    return;
  cam->ring_drops_claimed += rs.dropped - known;
  cam->pending += rs.dropped - known;
}

/* Takes the next ring record into cur. 0 when there is none, or when too many wait for their
 * borrowed encoder writes; a stopping trial whose last frame is in then ends its feeding. */
static int take_cur(struct pirec_camera *cam)
{
  if (cam->infl_taken - cam->infl_released >= cam->infl_cap)
    return 0;
  if (pirec_ring_take(cam->ring, &cam->cur, 1, SIZE_MAX) == 0) {
    if (cam->trial && cam->trial->stopping && !cam->trial->fed_all) {
      claim_unattached_drops(cam);
      feeding_done(cam, cam->trial);
    }
    return 0;
  }
  const struct frame_hdr *h = cam->cur.data;
  cam->seen = h->seq + 1;
  cam->prev_mono = cam->last_mono;
  cam->last_mono = h->mono_ns;
  cam->device_gaps_seen += h->gap_missing;
  cam->cur_abs = cam->infl_taken++;
  uint64_t before = cam->cur.dropped_before,
           claimed = before < cam->ring_drops_claimed ? before : cam->ring_drops_claimed;
  cam->ring_drops_taken += before;
  cam->ring_drops_claimed -= claimed;
  cam->cur_dropped = before - claimed + h->gap_drops;
  cam->cur_valid = 1;
  snap_offer(cam, h, (const uint8_t *)cam->cur.data + sizeof *h);
  return 1;
}

/* Raw frames: a borrowed write into the encoder's stdin (the ring keeps the bytes until it
 * completes) and the frame's times queued for its access unit. Returns 1 when the encoder is
 * behind: the frame stays in cur and on_drain resumes. */
static int feed_encoder(struct pirec_camera *cam, struct trial *t, const struct frame_hdr *h,
                        const uint8_t *payload)
{
  struct pirec_job_stats js;

  if (t->job)
    pirec_job_stats(t->job, &js);
  if (!t->job || js.state != PIREC_JOB_RUNNING || t->meta_count == t->meta_cap) {
    drop_cur(cam, &cam->drops_encoder);
    cur_done(cam);
    return 0;
  }
  uv_buf_t b = uv_buf_init((char *)payload, (unsigned)h->len);
  int r = pirec_job_write_borrowed(t->job, &b, 1, borrowed_release, (void *)(uintptr_t)cam->cur_abs);
  if (r == -ENOBUFS)
    return 1;
  if (r < 0) {
    drop_cur(cam, &cam->drops_encoder);
    cur_done(cam);
    return 0;
  }
  cam->borrowed_out++;
  struct meta *m = &t->meta[(t->meta_head + t->meta_count++) % t->meta_cap];
  m->seq = h->seq;
  m->mono_ns = h->mono_ns;
  m->wall_ns = h->wall_ns;
  m->device_ts_ns = h->device_ts_ns;
  m->dropped = cam->cur_dropped + cam->pending;
  cam->pending = 0;
  cam->cur_valid = 0;
  return 0;
}

/* Compressed frames: straight into the video file, with their row. */
static void write_compressed(struct pirec_camera *cam, struct trial *t, const struct frame_hdr *h,
                             const uint8_t *payload)
{
  if (!sink_has_room(t, h->len) || pirec_sink_push(t->video, payload, h->len) < 0) {
    drop_cur(cam, &cam->drops_sink);
  } else {
    pirec_sink_flush(t->video);
    hold_row(t, h->seq, h->mono_ns, h->wall_ns, h->device_ts_ns, cam->cur_dropped + cam->pending, h->len,
             (int64_t)t->video_offset, t->video_offset + h->len);
    cam->pending = 0;
    t->video_offset += h->len;
  }
  cur_done(cam);
}

/* Of the cur_dropped frames lost between the previous frame taken and the first one past the
 * stop (arriving at mono), those that were due before the stop, by their share of the time between
 * the two frames (they were due evenly spaced). */
static uint64_t lost_before_stop(const struct pirec_camera *cam, const struct trial *t, int64_t mono)
{
  int64_t span = mono - cam->prev_mono, before = t->stop_mono - cam->prev_mono;
  if (cam->cur_dropped == 0 || span <= 0 || before >= span)
    return cam->cur_dropped;
  if (before <= 0)
    return 0;
  return (uint64_t)(((__int128)cam->cur_dropped * before + span / 2) / span);
}

/* ---- segments ---- */

/* A frame a new file can start with: for encoded video one that starts a GOP. */
static int starts_gop(const struct pirec_camera *cam, const uint8_t *frame, size_t len)
{
  switch (cam->fmt.codec) {
  case PIREC_CAMERA_CODEC_RAW: /* each file's encoder starts with a keyframe */
  case PIREC_CAMERA_CODEC_MJPEG: return 1;
  case PIREC_CAMERA_CODEC_H264: return pirec_h264_is_keyframe(frame, len);
  default: return 0; /* HEVC: keyframes not recognised, files are not split */
  }
}

/* The trial's current file is long or large enough and this frame (about to go to it) can start
 * the next one. */
static int segment_due(struct pirec_camera *cam, struct trial *t, const struct frame_hdr *h,
                       const uint8_t *payload)
{
  if (!t->segment)
    return 0;
  if (!t->seg_taken) {
    t->seg_taken = 1;
    t->seg_t0 = h->mono_ns;
    t->seg_t0_dev = h->device_ts_ns;
    return 0;
  }
  /* The span by the device's clock where it has one (its frame intervals do not jitter as arrivals
   * do: a file of 1 s at 30 fps is 30 frames), else by arrival. */
  int64_t span = h->mono_ns - t->seg_t0;
  if (t->seg_t0_dev != INT64_MIN && h->device_ts_ns != INT64_MIN && h->device_ts_ns > t->seg_t0_dev &&
      llabs((h->device_ts_ns - t->seg_t0_dev) - span) < 1000000000LL)
    span = h->device_ts_ns - t->seg_t0_dev;
  uint64_t bytes = cam->raw ? (t->mkv ? pirec_mkv_bytes(t->mkv) : 0) : t->video_offset;
  int due = (cam->s.segment_ns > 0 && span >= cam->s.segment_ns) ||
            (cam->s.segment_bytes > 0 && bytes >= cam->s.segment_bytes);
  return due && starts_gop(cam, payload, h->len);
}

static void rolled(struct pirec_camera *cam, int err, void *user);

/* Ends the current file before the frame captured at mono, which stays in the ring as the next
 * segment's first (the trial-change hand-over): nothing is lost or written twice at the join. */
static void begin_rollover(struct pirec_camera *cam, struct trial *t, int64_t mono)
{
  cam->roll = (struct roll){.active = 1, .number = t->number, .part = t->part, .segment = t->segment};
  t->rolling = 1;
  t->stopping = 1;
  t->stop_mono = mono - 1;
  t->stopped_cb = rolled;
  t->stopped_user = NULL;
  cam->handover = 1;
  cam->handover_mono = mono;
}

/* Moves frames from the ring to the trial (or discards them when none records) until the ring is
 * empty or the encoder is behind. */
static void drain(struct pirec_camera *cam)
{
  if (cam->held || !cam->ring)
    return;
  for (;;) {
    if (!cam->cur_valid && !take_cur(cam))
      break;
    struct frame_hdr h;
    memcpy(&h, cam->cur.data, sizeof h);
    const uint8_t *payload = (const uint8_t *)cam->cur.data + sizeof h;
    struct trial *t = cam->trial;

    if (!t || t->fed_all || (t->stopping && h.mono_ns > t->stop_mono)) {
      uint64_t lost = cam->cur_dropped;
      if (t && !t->fed_all)
        feeding_done(cam, t);
      if (cam->handover)
        break; /* the frame stays in cur: the next trial's first */
      pirec__camera_gop_keep(&cam->gop, &h, sizeof h, payload, h.len, h.mono_ns, cam->cur_dropped > 0, 0);
      if (t && !t->past_stop) {
        /* Lost before the first frame past the stop: those due while the trial ran are its own. */
        t->past_stop = 1;
        uint64_t mine = lost_before_stop(cam, t, h.mono_ns);
        cam->pending += mine;
        lost -= mine;
      }
      /* Frames lost while no trial runs are idle too; cam->pending stays the trial's until its
       * end counts it (the encoder may still lose frames). */
      cam->frames_idle += 1 + lost;
      cur_done(cam);
    } else if (segment_due(cam, t, &h, payload)) {
      begin_rollover(cam, t, h.mono_ns); /* this frame is the next segment's first */
    } else if (!cam->raw) {
      pirec__camera_gop_keep(&cam->gop, &h, sizeof h, payload, h.len, h.mono_ns, cam->cur_dropped > 0, 1);
      write_compressed(cam, t, &h, payload);
    } else if (feed_encoder(cam, t, &h, payload)) {
      break;
    }
  }
  release_done(cam);
}

/* ---- encoder output ---- */

/* Frames lost on the output side belong on the next frame out: the oldest one still inside the
 * encoder, or, when none is, the next one fed. */
static void carry_out(struct pirec_camera *cam, struct trial *t, uint64_t n)
{
  if (t->meta_count > 0)
    t->meta[t->meta_head].dropped += n;
  else
    cam->pending += n;
}

static void emit_au(struct pirec_camera *cam, struct trial *t, const uint8_t *au, size_t len)
{
  if (t->meta_count == 0) {
    /* An access unit nobody fed: the encoder broke the one-in-one-out rule. Skip it so rows and
     * packets keep matching. */
    if (!t->err)
      emit(cam, PIREC_CAMERA_EVENT_WRITE_ERROR, "encoder produced more frames than it was fed");
    return;
  }
  struct meta m = t->meta[t->meta_head];
  t->meta_head = (t->meta_head + 1) % t->meta_cap;
  t->meta_count--;
  if (!t->t0_set) { /* each file's time 0 is its first frame */
    t->t0_set = 1;
    t->t0_mono = m.mono_ns;
  }
  if (t->mkv_failed || !sink_has_room(t, len + pirec_mkv_margin())) {
    cam->drops_sink++;
    carry_out(cam, t, m.dropped + 1);
    return;
  }
  int r = pirec_mkv_write(t->mkv, au, len, pirec_h264_is_keyframe(au, len), m.mono_ns - t->t0_mono);
  if (r < 0) {
    t->mkv_failed = 1;
    if (!t->err)
      t->err = r;
    cam->loop_last_error = r;
    cam->drops_sink++;
    carry_out(cam, t, m.dropped + 1);
    char text[PIREC_CAMERA_PATH_MAX + 64];
    snprintf(text, sizeof text, "cannot write '%s': %s", t->video_path, pirec_strerror(r));
    emit(cam, PIREC_CAMERA_EVENT_WRITE_ERROR, text);
    return;
  }
  /* The unit is in the video sink (pirec_mkv_write pushes its cluster); its row waits in the gate
   * until the cluster is written whole. Frames lost after this one was fed (crash, encoder down)
   * are in cam->pending and go on the next frame fed; this frame carries what was lost before it. */
  pirec_sink_flush(t->video);
  hold_row(t, m.seq, m.mono_ns, m.wall_ns, m.device_ts_ns, m.dropped, len, -1, pirec_mkv_bytes(t->mkv));
}

/* The encoder's stdout, as the job read it: cut into access units, each muxed with the capture
 * time of the frame it encodes. */
static void enc_stdout(struct pirec_job *job, const uint8_t *data, size_t len)
{
  struct pirec_camera *cam = pirec_job_user(job);
  struct trial *t = cam->trial;
  const uint8_t *au;
  size_t au_len;
  uint8_t *space;

  if (!t || t->job != job)
    return;
  space = pirec_h264_splitter_space(&t->au, len);
  if (!space) {
    /* The units these bytes belonged to are lost; their frames are counted when the run ends. */
    cam->loop_last_error = -ENOMEM;
    return;
  }
  memcpy(space, data, len);
  pirec_h264_splitter_fill(&t->au, len);
  while (pirec_h264_splitter_next(&t->au, &au, &au_len))
    emit_au(cam, t, au, au_len);
}

/* The run ended and the job has delivered all it wrote. A clean end's last access unit is complete;
 * after a crash it may be cut, so it is dropped with everything still inside the encoder. */
static void end_of_run(struct pirec_camera *cam, struct trial *t, int clean)
{
  const uint8_t *au;
  size_t len;
  if (clean && pirec_h264_splitter_last(&t->au, &au, &len))
    emit_au(cam, t, au, len);
  pirec_h264_splitter_reset(&t->au);
  while (t->meta_count > 0) {
    struct meta *m = &t->meta[t->meta_head];
    cam->pending += m->dropped + 1;
    cam->drops_encoder++;
    t->meta_head = (t->meta_head + 1) % t->meta_cap;
    t->meta_count--;
  }
}

static void enc_restart(struct pirec_job *job, const struct pirec_job_result *run, uint32_t attempt,
                        uint64_t delay_ms)
{
  struct pirec_camera *cam = pirec_job_user(job);
  struct trial *t = cam->trial;
  char text[512], how[128];
  if (t)
    end_of_run(cam, t, 0);
  cam->loop_last_error = -EPIPE;
  snprintf(text, sizeof text, "camera '%s': encoder ended (%s)%s%.200s; restart %u in %llu ms", cam->s.name,
           pirec_job_result_str(run, how, sizeof how), run->stderr_tail_len ? ": " : "",
           run->stderr_tail_len ? run->stderr_tail : "", attempt, (unsigned long long)delay_ms);
  for (char *c = text; *c; c++)
    if (*c == '\n')
      *c = ' ';
  emit(cam, PIREC_CAMERA_EVENT_ENCODER_CRASHED, text);
}

static void enc_spawn(struct pirec_job *job, int pid)
{
  struct pirec_camera *cam = pirec_job_user(job);
  char text[128];
  cam->encoder_restarts++;
  snprintf(text, sizeof text, "camera '%s': encoder restarted (pid %d)", cam->s.name, pid);
  emit(cam, PIREC_CAMERA_EVENT_ENCODER_RESTARTED, text);
}

static void enc_line(struct pirec_job *job, int fd, const char *line, size_t len)
{
  struct pirec_camera *cam = pirec_job_user(job);
  if (len)
    pirec_log(PIREC_LOG_WARN, "camera '%s' encoder: %s", cam->s.name, line);
}

static void enc_drain(struct pirec_job *job, size_t outstanding)
{
  drain(pirec_job_user(job));
}

static void enc_end(struct pirec_job *job, const struct pirec_job_result *res)
{
  struct pirec_camera *cam = pirec_job_user(job);
  struct trial *t = cam->trial;
  if (!t || t->job != job)
    return;
  end_of_run(cam, t, res->status == 0);
  if (!t->fed_all) {
    char text[512], how[128];
    snprintf(text, sizeof text,
             "camera '%s': encoder gave up (%s)%s%.200s; frames are dropped until the trial ends",
             cam->s.name, pirec_job_result_str(res, how, sizeof how), res->stderr_tail_len ? ": " : "",
             res->stderr_tail_len ? res->stderr_tail : "");
    for (char *c = text; *c; c++)
      if (*c == '\n')
        *c = ' ';
    cam->loop_last_error = -EPIPE;
    emit(cam, PIREC_CAMERA_EVENT_ENCODER_FAILED, text);
  } else if (res->status != 0 && !t->err) {
    t->err = -EPIPE;
  }
  t->job = NULL;
  pirec_job_free(job);
  if (t->fed_all)
    finalize_trial(cam);
}

/* ---- trials ---- */

/* The encoder: raw frames on stdin, H.264 access units with delimiters on stdout, which the job
 * hands to enc_stdout to be cut into units and muxes with each frame's capture time. Built by the shared builder
 * (include/pirec/ffmpeg.h), so its frame-exact options (passthrough, no B-frames) are the ones
 * test-ffmpeg checks. */
static int build_encoder_argv(const struct pirec_camera *cam, char ***argv)
{
  const struct pirec_camera_settings *s = &cam->s;
  struct pirec_ffmpeg_encode e;
  pirec_ffmpeg_encode_init(&e);
  int fps_ok = cam->fmt.fps_num > 0 && cam->fmt.fps_den > 0;
  e.program = s->ffmpeg;
  e.output = "pipe:1";
  e.format = "h264";
  e.width = cam->fmt.width;
  e.height = cam->fmt.height;
  e.pix_fmt = cam->fmt.pix_fmt;
  e.rate_num = fps_ok ? (uint32_t)cam->fmt.fps_num : 30;
  e.rate_den = fps_ok ? (uint32_t)cam->fmt.fps_den : 1;
  e.preset = s->preset;
  e.crf = s->crf;
  e.gop = s->gop > 0 ? s->gop : 60;
  e.bframes = 0; /* access units come out in the order frames went in, one per frame */
  e.threads = s->encoder_threads > 0 ? s->encoder_threads : 0;
  e.progress_fd = 3;
  e.legacy_vsync = cam->legacy_vsync;
  return pirec_ffmpeg_encode_argv(&e, argv);
}

static void free_trial(struct trial *t)
{
  if (!t)
    return;
  pirec_mkv_free(t->mkv);
  pirec_rowgate_free(t->gate);
  pirec_h264_splitter_free(&t->au);
  free(t->meta);
  free(t->video_path);
  free(t->csv_path);
  free(t);
}

static void sink_error(struct pirec_sink *sink, int err, void *user)
{
  struct pirec_camera *cam = user;
  char text[PIREC_CAMERA_PATH_MAX + 64];
  cam->loop_last_error = err;
  if (cam->trial && !cam->trial->err)
    cam->trial->err = err;
  snprintf(text, sizeof text, "cannot write '%s': %s", pirec_sink_path(sink), pirec_strerror(err));
  emit(cam, PIREC_CAMERA_EVENT_WRITE_ERROR, text);
}

static const char *video_ext(enum pirec_camera_codec c)
{
  switch (c) {
  case PIREC_CAMERA_CODEC_RAW: return "mkv";
  case PIREC_CAMERA_CODEC_MJPEG: return "mjpeg";
  case PIREC_CAMERA_CODEC_H264: return "h264";
  case PIREC_CAMERA_CODEC_HEVC: return "hevc";
  default: return "bin";
  }
}

/* Frame CSV rows are ~80 bytes: 512 KiB holds minutes of them. */
#define FRAMES_CSV_RING_BYTES ((size_t)512 << 10)
/* Rows waiting for their frames' writes: a few normally, the video sink's ring of small frames
 * (an 8 MiB ring of 4 KiB units: ~2000 rows) behind a stalled disk. */
#define ROWGATE_BYTES ((size_t)256 << 10)

/* The ring of a trial's video sink. Encoded video runs at a few MB/s; MJPEG as received can reach
 * 10 MB/s. Arenas are backed by memory when created, so they are no larger than a few seconds need. */
static size_t trial_video_ring_bytes(const struct pirec_camera *cam)
{
  return cam->raw ? (size_t)8 << 20 : (size_t)32 << 20;
}

/* A trial with its two file paths, no files yet. */
static struct trial *trial_new(struct pirec_camera *cam, const char *dir, int trial, int part, int segment)
{
  struct trial *t = calloc(1, sizeof *t);
  char suffix[32] = "";

  if (!t)
    return NULL;
  t->number = trial;
  t->part = part;
  t->segment = segment;
  t->cam = cam;
  if (part > 0)
    snprintf(suffix, sizeof suffix, "_p%d", part);
  if (segment > 0)
    snprintf(suffix + strlen(suffix), sizeof suffix - strlen(suffix), "_s%03d", segment);
  t->video_path = pirec__camera_strdupf("%s/t%03d%s.%s", dir, trial, suffix, video_ext(cam->fmt.codec));
  t->csv_path = pirec__camera_strdupf("%s/t%03d%s_frames.csv", dir, trial, suffix);
  if (!t->video_path || !t->csv_path) {
    free_trial(t);
    return NULL;
  }
  return t;
}

/* The video and frames-CSV sinks, the CSV's header written. */
static int trial_open_sinks(struct pirec_camera *cam, struct trial *t)
{
  static const char *const columns[] = {
      "trial",          "mono_ns", "wall_ns", "frame",        "seq", "device_ts_ns",
      "dropped_before", "bytes",   "offset",  "before_start", NULL};
  struct pirec_sink_options vo, co;
  char header[256];
  int r;

  pirec_sink_options_default(&vo);
  pirec_sink_options_default(&co);
  vo.ring_bytes = trial_video_ring_bytes(cam);
  co.ring_bytes = FRAMES_CSV_RING_BYTES;
  vo.fsync_interval_ms = co.fsync_interval_ms = cam->s.fsync_interval_ms;
  /* The trial's directory is made by the opens, in the threadpool: never a mkdir on the loop. */
  vo.mkdir_mode = co.mkdir_mode = 0755;
  if ((r = pirec_rowgate_new(ROWGATE_BYTES, &t->gate)) < 0)
    return r;
  struct pirec_sink_transform vt, ct;
  if ((r = pirec_crypt_session_sink(&cam->crypt, t->video_path, &vo, &vt)) < 0 ||
      (r = pirec_sink_new(cam->loop, t->video_path, &vo, sink_error, cam, &t->video)) < 0)
    return r;
  pirec_sink_on_written(t->video, video_written);
  if ((r = pirec_crypt_session_sink(&cam->crypt, t->csv_path, &co, &ct)) < 0 ||
      (r = pirec_sink_new(cam->loop, t->csv_path, &co, sink_error, cam, &t->csv)) < 0)
    return r;
  t->sinks_open = 2;
  int hl = pirec_csv_header(header, sizeof header, columns);
  if (hl < 0)
    return hl;
  return pirec_sink_push(t->csv, header, (size_t)hl);
}

/* The encoder job's options; the strings they point to belong to the caller. */
static void encoder_options(struct pirec_camera *cam, struct pirec_job_options *o, char **argv,
                            const char *name)
{
  pirec_job_options_init(o);
  o->argv = (const char *const *)argv;
  o->name = name;
  o->stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o->stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o->stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o->progress_fd = 3;
  /* Frames go in by vmsplice: the pipe references the ring's pages and the encoder's read is the
   * only copy. A ring record stays unreleased until the encoder has read it (borrowed_release),
   * which is what vmsplice without SPLICE_F_GIFT needs: the pages must not change until then. */
  o->stdin_splice = !cam->feed_by_write;
  o->stdin_max_outstanding =
      cam->s.encoder_outstanding ? cam->s.encoder_outstanding : 8 * cam->fmt.frame_bytes;
  if (o->stdin_max_outstanding < cam->fmt.frame_bytes)
    o->stdin_max_outstanding = cam->fmt.frame_bytes;
  /* A hung encoder (no progress report for 15 s while frames wait) is restarted. */
  o->stall_timeout_ms = 15000;
  o->stop_term_ms = 10000;
  o->stop_kill_ms = 2000;
  o->restart.mode = PIREC_JOB_RESTART_ON_FAILURE;
  o->restart.backoff_initial_ms = cam->s.encoder_backoff_ms ? cam->s.encoder_backoff_ms : 200;
  o->restart.max_failures = cam->s.encoder_max_failures ? cam->s.encoder_max_failures : 5;
  o->on_end = enc_end;
  o->on_line = enc_line;
  o->on_stdout = enc_stdout;
  o->on_drain = enc_drain;
  o->on_restart = enc_restart;
  o->on_spawn = enc_spawn;
  o->user = cam;
}

/* Raw frames: the frame queue, the access-unit splitter, the in-process MKV and the running
 * encoder job. */
static int trial_start_encoder(struct pirec_camera *cam, struct trial *t)
{
  struct pirec_job_options o;
  char name[PIREC_CAMERA_NAME_MAX + 16];
  char **argv = NULL;
  int r;

  t->meta_cap = 4096;
  t->meta = calloc(t->meta_cap, sizeof *t->meta);
  if (!t->meta || pirec_h264_splitter_init(&t->au, 4u << 20) < 0)
    return -ENOMEM;
  /* The track's size is the format's; its nominal rate 30/1 when the format names none. */
  int fps_ok = cam->fmt.fps_num > 0 && cam->fmt.fps_den > 0;
  if ((r = pirec_mkv_new(t->video, cam->fmt.width, cam->fmt.height, fps_ok ? cam->fmt.fps_num : 30,
                         fps_ok ? cam->fmt.fps_den : 1, &t->mkv)) < 0)
    return r;
  if ((r = build_encoder_argv(cam, &argv)) < 0)
    return r;
  snprintf(name, sizeof name, "%s encoder", cam->s.name);
  encoder_options(cam, &o, argv, name);
  r = pirec_job_new(cam->loop, &o, &t->job);
  pirec_ffmpeg_argv_free(argv); /* the job keeps its own copy */
  if (r < 0)
    return r;
  if ((r = pirec_job_start(t->job)) < 0)
    pirec_log(PIREC_LOG_ERROR, "camera '%s': cannot start '%s': %s", cam->s.name, cam->s.ffmpeg,
              pirec_strerror(r));
  return r;
}

/* Compressed frames: the stream's parameter sets go first into an elementary-stream file. */
static void trial_write_stream_header(struct pirec_camera *cam, struct trial *t)
{
  const uint8_t *hdr;
  size_t hdr_len;

  pthread_mutex_lock(&cam->src_lock);
  if (cam->src) {
    pirec__camera_source_stream_header(cam->src, &hdr, &hdr_len);
    if (hdr_len && pirec_sink_push(t->video, hdr, hdr_len) == 0)
      t->video_offset = hdr_len;
  }
  pthread_mutex_unlock(&cam->src_lock);
}

/* A kept frame from before the trial's start, into its video file with its row (before_start = 1,
 * its own times; dropped_before 0: losses between kept frames leave the GOP, which is then not
 * kept). */
static void replay_frame(const void *hdr, const uint8_t *frame, size_t len, void *user)
{
  struct trial *t = user;
  struct frame_hdr h;
  memcpy(&h, hdr, sizeof h);
  if (!sink_has_room(t, len) || pirec_sink_push(t->video, frame, len) < 0)
    return; /* a frame from before the start: counted in the sink's drops */
  pirec_sink_flush(t->video);
  hold_row(t, h.seq, h.mono_ns, h.wall_ns, h.device_ts_ns, 0, len, (int64_t)t->video_offset,
           t->video_offset + len);
  t->video_offset += len;
}

/* Undoes a trial start that failed part way. */
static void trial_abandon(struct trial *t)
{
  pirec_job_free(t->job);
  t->job = NULL;
  if (t->video)
    pirec_sink_close(t->video, NULL, NULL);
  if (t->csv)
    pirec_sink_close(t->csv, NULL, NULL);
  free_trial(t);
}

/* A trial's files (of its segment, 0: segments off) opened, its encoder started; NULL and *err
 * on failure, when the frames kept for it are idle after all. */
static struct trial *trial_open(struct pirec_camera *cam, int trial, int part, int segment, int *err)
{
  struct trial *t = trial_new(cam, cam->trial_dir, trial, part, segment);
  int r = -ENOMEM;
  if (t && (r = trial_open_sinks(cam, t)) >= 0 && (!cam->raw || (r = trial_start_encoder(cam, t)) >= 0)) {
    if (!cam->raw)
      trial_write_stream_header(cam, t);
    return t;
  }
  if (t)
    trial_abandon(t);
  cam->handover = 0;
  drain(cam);
  *err = r;
  return NULL;
}

int pirec_camera_trial_start(struct pirec_camera *cam, const char *dir, int trial, int part)
{
  struct trial *t;
  int r = 0;

  if (!cam->started || cam->closing || trial < 1 || part < 0)
    return -EINVAL;
  if (cam->trial || cam->roll.active)
    return -EBUSY;
  char *d = strdup(dir);
  if (!d)
    return -ENOMEM;
  free(cam->trial_dir);
  cam->trial_dir = d;
  int segments = cam->s.segment_ns > 0 || cam->s.segment_bytes > 0;
  if (!(t = trial_open(cam, trial, part, segments, &r)))
    return r;
  if (!cam->raw) {
    /* The video begins at the keyframe before the start (with pre_trigger, before start - N); a
     * trial change starts at the change, the frames after it wait in the ring. */
    t->replaying = 1;
    pirec__camera_gop_replay(&cam->gop, cam->handover ? cam->handover_mono : pirec_clock_mono_ns(),
                             sizeof(struct frame_hdr), replay_frame, t);
    t->replaying = 0;
  }
  /* After a hand-over, what was lost since the last trial's last row goes on this one's first. */
  if (!cam->handover)
    cam->pending = 0;
  cam->handover = 0;
  cam->rows_last = 0;
  cam->trial = t;
  drain(cam);
  return 0;
}

void pirec_camera_hand_over(struct pirec_camera *cam)
{
  if (cam->roll.active) { /* for after the segment change, whose own hand-over this is */
    cam->roll.handover = 1;
    cam->roll.handover_mono = pirec_clock_mono_ns();
    return;
  }
  cam->handover = 1;
  cam->handover_mono = pirec_clock_mono_ns();
}

/* The segment's files are closed: the trial goes on in the next ones, which take the frames kept
 * in the ring and every counter where the last file left them. */
static void rolled(struct pirec_camera *cam, int err, void *user)
{
  struct roll r = cam->roll;
  struct trial *t = NULL;
  int rs = -ECANCELED;
  (void)user;
  cam->roll.active = 0;
  if (!r.err)
    r.err = err;
  if (!cam->closing)
    t = trial_open(cam, r.number, r.part, r.segment + 1, &rs);
  else
    cam->handover = 0;
  if (!t) {
    if (rs != -ECANCELED) {
      char text[PIREC_CAMERA_PATH_MAX + 128];
      snprintf(text, sizeof text, "camera '%s': cannot start segment %d of trial %d: %s", cam->s.name,
               r.segment + 1, r.number, pirec_strerror(rs));
      emit(cam, PIREC_CAMERA_EVENT_WRITE_ERROR, text);
    }
    if (r.stop && r.cb)
      r.cb(cam, r.err ? r.err : rs, r.user);
    return;
  }
  t->frames = r.frames;
  t->rows = r.rows;
  t->before_rows = r.before_rows;
  t->prior_err = r.err;
  cam->handover = 0;
  cam->trial = t;
  char text[PIREC_CAMERA_PATH_MAX + 128];
  snprintf(text, sizeof text, "camera '%s': trial %d segment %d from frame %llu: '%s'", cam->s.name, r.number,
           t->segment, (unsigned long long)t->frames, t->video_path);
  emit(cam, PIREC_CAMERA_EVENT_SEGMENT, text);
  if (r.handover) {
    cam->handover = 1;
    cam->handover_mono = r.handover_mono;
  }
  if (r.stop) {
    t->stopping = 1;
    t->stop_mono = r.stop_mono;
    t->stopped_cb = r.cb;
    t->stopped_user = r.user;
  }
  drain(cam);
}

static void trial_done(struct pirec_camera *cam)
{
  struct trial *t = cam->trial;
  pirec_camera_stopped_cb cb = t->stopped_cb;
  void *user_cb = t->stopped_user;
  int err = t->err ? t->err : t->prior_err;
  if (t->rolling) {
    cam->roll.frames = t->frames;
    cam->roll.rows = t->rows;
    cam->roll.before_rows = t->before_rows;
  }
  cam->rows_last = t->rows;
  cam->before_last = t->before_rows;
  cam->dropped_after_last = t->dropped_after;
  cam->dropped_after_total += t->dropped_after;
  cam->trial = NULL;
  free_trial(t);
  if (cb)
    cb(cam, err, user_cb);
  if (cam->closing)
    maybe_finish_close(cam);
}

/* The video file is sealed (pirec_mkv_seal_file: its real segment size written over "unknown")
 * before the trial reports stopped; a failure leaves the file valid, just unsealed. */
static void sealed(struct pirec_mkv_sealer *s, int status)
{
  struct trial *t = s->data;
  struct pirec_camera *cam = t->cam;
  if (status < 0)
    pirec_log(PIREC_LOG_WARN, "camera '%s': cannot seal '%s': %s", cam->s.name, t->video_path,
              pirec_strerror(status));
  trial_done(cam);
}

static void empty_video_removed(struct pirec_fs_req *req)
{
  struct trial *t = req->data;
  if (req->result < 0)
    pirec_log(PIREC_LOG_WARN, "camera '%s': %s", t->cam->s.name, req->message ? req->message : "");
  pirec_fs_req_cleanup(req);
  trial_done(t->cam);
}

/* The video file is closed: the rows of the frames in it go to the CSV, the frames whose writes
 * failed are counted, and everything lost after the last row becomes the trial's dropped_after (or,
 * on a hand-over, the next trial's first dropped_before). */
static void settle_rows(struct pirec_camera *cam, struct trial *t, struct pirec_sink *video)
{
  uint64_t unwritten = 0, carried = 0;
  release_rows(cam, t, pirec_sink_whole_end(video));
  pirec_rowgate_discard(t->gate, &unwritten, &carried);
  cam->drops_sink += unwritten;
  uint64_t after = cam->pending + unwritten + carried;
  if (cam->handover) {
    cam->pending = after;
    return;
  }
  cam->pending = 0;
  t->dropped_after = after;
  if (after > 0) {
    char text[PIREC_CAMERA_PATH_MAX + 128];
    snprintf(text, sizeof text, "camera '%s': %llu frames lost after the last row of '%s'", cam->s.name,
             (unsigned long long)after, t->csv_path);
    emit(cam, PIREC_CAMERA_EVENT_FRAMES_LOST_AFTER, text);
  }
}

static void sink_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  struct pirec_camera *cam = user;
  struct trial *t = cam->trial;
  if (final->error && t && !t->err)
    t->err = final->error;
  if (t && sink == t->video) {
    settle_rows(cam, t, sink);
    pirec_sink_close(t->csv, sink_closed, cam); /* after the video: rows never precede their frames */
    cam->bytes_last = final->bytes_written;
    t->video_empty = final->bytes_written == 0 && !final->error;
    t->seal = t->mkv && !t->err && !t->mkv_failed && !t->video_empty;
    t->seal_file_bytes = final->bytes_written;
    t->video = NULL; /* freed when this returns; status reads bytes_last from now on */
  } else if (t && sink == t->csv) {
    t->csv = NULL;
  }
  if (!t || --t->sinks_open > 0)
    return;
  /* A trial whose source never delivered a frame leaves no 0-byte video that no reader opens:
   * its CSV (the header alone) says the trial recorded nothing. */
  if (t->video_empty) {
    t->unlink.data = t;
    if (pirec_fs_unlink(cam->loop, &t->unlink, t->video_path, empty_video_removed) == 0)
      return;
  }
  if (t->seal) {
    /* -EINVAL here (bytes missing from the file, or a header it cannot seal) leaves it unsealed */
    t->sealer.data = t;
    if (pirec_mkv_seal_file(cam->loop, &t->sealer, t->mkv, t->video_path, t->seal_file_bytes, sealed) == 0)
      return;
  }
  trial_done(cam);
}

static void finalize_trial(struct pirec_camera *cam)
{
  struct trial *t = cam->trial;
  if (t->finalizing)
    return;
  t->finalizing = 1;
  if (t->mkv) {
    int r = pirec_mkv_finish(t->mkv);
    if (r < 0 && !t->err)
      t->err = r;
  }
  pirec_sink_close(t->video, sink_closed, cam);
}

static void timer_cb(uv_timer_t *timer)
{
  struct pirec_camera *cam = container_of(timer, struct pirec_camera, timer);
  if (cam->trial && cam->trial->fed_all && !cam->trial->job)
    finalize_trial(cam);
}

int pirec_camera_trial_stop(struct pirec_camera *cam, pirec_camera_stopped_cb cb, void *user)
{
  struct trial *t = cam->trial;
  if (t && t->rolling && !cam->roll.stop) {
    /* Between two segments: the next one is stopped as soon as it starts, at this time. */
    cam->roll.stop = 1;
    cam->roll.stop_mono = pirec_clock_mono_ns();
    cam->roll.cb = cb;
    cam->roll.user = user;
    cam->held = 0;
    return 0;
  }
  if (!t || t->stopping)
    return -EINVAL;
  /* Frames that arrived before this call are still fed (the ring may hold a second of them behind
   * a busy encoder); later ones belong to no trial. A hold is lifted so the stop can finish. */
  t->stopping = 1;
  t->stop_mono = pirec_clock_mono_ns();
  t->stopped_cb = cb;
  t->stopped_user = user;
  cam->held = 0;
  drain(cam);
  return 0;
}

int pirec_camera_recording(const struct pirec_camera *cam)
{
  return cam->trial != NULL;
}

/* ---- life cycle ---- */

static void async_cb(uv_async_t *a)
{
  struct pirec_camera *cam = container_of(a, struct pirec_camera, async);
  deliver_events(cam);
  drain(cam);
}

int pirec_camera_new(uv_loop_t *loop, const struct pirec_camera_settings *s, pirec_camera_event_cb on_event,
                     void *user, struct pirec_camera **out)
{
  struct pirec_camera *cam;
  *out = NULL;
  if (!s->name[0] || !s->source[0] || s->width < 0 || s->height < 0 || s->fps_num < 0 ||
      (s->fps_num > 0 && s->fps_den <= 0) || !s->ffmpeg[0])
    return -EINVAL;
  cam = calloc(1, sizeof *cam);
  if (!cam)
    return -ENOMEM;
  cam->loop = loop;
  cam->s = *s;
  cam->on_event = on_event;
  cam->user = user;
  if (s->kind == PIREC_CAMERA_RPICAM)
    snprintf(cam->label, sizeof cam->label, "%s --camera %.16s", s->rpicam_program, s->source);
  else if (s->kind == PIREC_CAMERA_LAVFI)
    snprintf(cam->label, sizeof cam->label, "lavfi:%s", s->source);
  else
    snprintf(cam->label, sizeof cam->label, "%s", s->source);
  pthread_mutex_init(&cam->src_lock, NULL);
  pthread_mutex_init(&cam->ev_lock, NULL);
  pthread_mutex_init(&cam->stop_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&cam->stop_cond, &ca);
  pthread_condattr_destroy(&ca);
  atomic_init(&cam->stop, 0);
  atomic_init(&cam->ev_pending, 0);
  *out = cam;
  return 0;
}

/* ffmpeg is probed once per camera, by its first start, which the programs make before their loop
 * runs: a start retried later from the loop (a device that was missing) reuses the answer instead
 * of running ffmpeg while the loop waits (issue 14). */
static void probe_once(struct pirec_camera *cam)
{
  struct pirec_ffmpeg_info info;

  if (cam->probe_done)
    return;
  cam->probe_done = 1;
  cam->probe_rc = pirec_ffmpeg_probe(cam->s.ffmpeg, "libx264", &info, cam->probe_err, sizeof cam->probe_err);
  if (cam->probe_rc == 0)
    cam->legacy_vsync = info.legacy_vsync;
}

static int probe_encoder(struct pirec_camera *cam)
{
  probe_once(cam);
  if (cam->probe_rc < 0)
    pirec_log(PIREC_LOG_ERROR, "camera '%s': %s", cam->s.name, cam->probe_err);
  return cam->probe_rc;
}

/* The capture ring: ring_bytes when set, else ring_ms of raw frames (at most 256 MiB) or 32 MiB of
 * compressed ones; never less than two records, since a record may use at most half the ring. */
static size_t capture_ring_bytes(const struct pirec_camera *cam)
{
  size_t ring_bytes = cam->s.ring_bytes;
  size_t min_bytes = 2 * (cam->fmt.frame_bytes + sizeof(struct frame_hdr) + 128);

  if (!ring_bytes && cam->raw) {
    int fn = cam->fmt.fps_num > 0 ? cam->fmt.fps_num : 30, fd = cam->fmt.fps_num > 0 ? cam->fmt.fps_den : 1;
    uint64_t frames =
        (uint64_t)(cam->s.ring_ms ? cam->s.ring_ms : 1000) * (uint64_t)fn / (1000u * (uint64_t)fd);
    ring_bytes = (size_t)(frames + 1) * (cam->fmt.frame_bytes + sizeof(struct frame_hdr) + 64);
    /* a fast camera's second of 1080p would be hundreds of MB: cap the default */
    if (ring_bytes > (256u << 20))
      ring_bytes = 256u << 20;
  } else if (!ring_bytes) {
    ring_bytes = 32u << 20;
  }
  return ring_bytes < min_bytes ? min_bytes : ring_bytes;
}

/* Keeps why a start failed; a start retried while a device stays missing logs its reason once. */
static void start_failed(struct pirec_camera *cam, const char *why)
{
  if (strcmp(cam->start_error, why) != 0)
    pirec_log(PIREC_LOG_ERROR, "camera '%s': %s", cam->s.name, why);
  snprintf(cam->start_error, sizeof cam->start_error, "%s", why);
}

const char *pirec_camera_start_error(const struct pirec_camera *cam)
{
  return cam->start_error;
}

int pirec_camera_start(struct pirec_camera *cam)
{
  char *msg = NULL;
  int r;

  if (cam->started || cam->closing)
    return -EINVAL;
  /* The probe runs ffmpeg twice (a few hundred ms): before the source opens when the source will
   * surely be raw, so a camera child does not fill its pipe with frames that are then read late
   * and get late arrival stamps. */
  int probed = 0;
  if (cam->s.kind == PIREC_CAMERA_LAVFI ||
      (cam->s.kind == PIREC_CAMERA_RPICAM && strcmp(cam->s.input_format, "mjpeg") != 0)) {
    if ((r = probe_encoder(cam)) < 0)
      return r;
    probed = 1;
  }
  r = pirec_camera_source_open(&cam->s, &cam->src, &msg);
  if (r < 0) {
    start_failed(cam, msg ? msg : pirec_strerror(r));
    free(msg);
    /* A missing device is retried from the loop, and may then turn out raw: probe now. */
    if (cam->s.kind == PIREC_CAMERA_V4L2)
      probe_once(cam);
    return r;
  }
  cam->start_error[0] = '\0';
  pirec_camera_source_format(cam->src, &cam->fmt);
  cam->raw = cam->fmt.codec == PIREC_CAMERA_CODEC_RAW;
  if ((r = pirec__camera_gop_init(&cam->gop, cam->fmt.codec, cam->s.pre_trigger_ns,
                                  cam->s.pre_trigger_bytes)) < 0)
    goto fail;
  if (cam->s.pre_trigger_ns > 0 && !cam->gop.b)
    pirec_log(PIREC_LOG_WARN,
              "camera '%s': pre_trigger needs a source that sends MJPEG or H.264; this one is encoded per "
              "trial, so its trials start at their start",
              cam->s.name);

  if ((r = pirec_ring_new(capture_ring_bytes(cam), &cam->ring)) < 0)
    goto fail;
  cam->infl_cap = 4096;
  cam->infl_done = calloc(cam->infl_cap, 1);
  if (!cam->infl_done) {
    r = -ENOMEM;
    goto fail;
  }

  if (cam->raw) {
    if (!probed && (r = probe_encoder(cam)) < 0)
      goto fail;
  }
  if ((r = uv_async_init(cam->loop, &cam->async, async_cb)) < 0)
    goto fail;
  cam->handles++;
  cam->has_async = 1;
  if ((r = uv_timer_init(cam->loop, &cam->timer)) < 0)
    goto fail;
  cam->handles++;
  cam->has_timer = 1;
  cam->started = 1;
  if ((r = pthread_create(&cam->thread, NULL, capture_main, cam)) != 0) {
    r = -r;
    cam->started = 0;
    goto fail;
  }
  cam->thread_started = 1;
  /* Each trial's sinks need rings; their arenas are readied now on a spare thread, so the first
   * trial start does not fault in megabytes on the loop (later trials reuse the previous one's). */
  size_t trial_rings[] = {trial_video_ring_bytes(cam), FRAMES_CSV_RING_BYTES};
  (void)pirec_ring_prepare_detached(trial_rings, 2);
  return 0;

fail:
  /* Handles initialised so far are closed by pirec_camera_close(). */
  return r;
}

void pirec__camera_set_feed(struct pirec_camera *cam, int by_write)
{
  cam->feed_by_write = by_write != 0;
}

void pirec__camera_hold(struct pirec_camera *cam, int hold)
{
  cam->held = hold != 0;
  if (!cam->held)
    drain(cam);
}

void pirec_camera_status(const struct pirec_camera *cam, struct pirec_camera_status *out)
{
  memset(out, 0, sizeof *out);
  out->frames_captured = atomic_load_explicit(&cam->captured, memory_order_relaxed);
  out->frames_written = cam->trial ? cam->trial->rows : cam->rows_last;
  out->frames_before_start = cam->trial ? cam->trial->before_rows : cam->before_last;
  struct pirec_backlog_stats bs;
  pirec__camera_gop_stats(&cam->gop, &bs);
  out->backlog_bytes = bs.capacity;
  out->backlog_used = bs.used;
  out->backlog_high_water = bs.high_water;
  out->frames_idle = cam->frames_idle;
  /* the drops a stopping trial claimed were refused after the last frame taken (take_cur) */
  out->frames_seen = cam->seen + cam->ring_drops_claimed;
  out->device_gaps = cam->device_gaps_seen;
  out->dropped_after = cam->trial ? 0 : cam->dropped_after_last;
  out->dropped_after_total = cam->dropped_after_total;
  if (cam->ring) {
    struct pirec_ring_stats rs;
    pirec_ring_stats(cam->ring, &rs);
    out->drops_ring_full = rs.dropped;
    out->ring_used = rs.used_bytes;
    out->ring_capacity = rs.capacity;
  }
  out->drops_encoder = cam->drops_encoder;
  out->drops_device = atomic_load_explicit(&cam->drops_device, memory_order_relaxed);
  out->drops_sink = cam->drops_sink;
  out->drops_total = out->drops_ring_full + out->drops_encoder + out->drops_device + out->drops_sink;
  out->bytes_video = cam->bytes_last;
  if (cam->trial && cam->trial->video) {
    struct pirec_sink_counters c;
    pirec_sink_counters(cam->trial->video, &c);
    out->bytes_video = c.bytes_written;
  }
  out->encoder_restarts = cam->encoder_restarts;
  out->encoder_state = -1;
  if (cam->trial && cam->trial->job) {
    struct pirec_job_stats js;
    pirec_job_stats(cam->trial->job, &js);
    out->encoder_state = (int)js.state;
    out->encoder_pid = js.pid;
  }
  out->source_errors = atomic_load_explicit(&cam->source_errors, memory_order_relaxed);
  out->reconnects = atomic_load_explicit(&cam->reconnects, memory_order_relaxed);
  out->source_failure = (enum pirec_camera_failure)atomic_load(&cam->source_failure);
  out->last_error = cam->loop_last_error ? cam->loop_last_error : atomic_load(&cam->last_error);
  hist_summary(&cam->capture_hist, &out->capture);
  out->format = cam->fmt;
}

/* ---- snapshot ---- */

#include <libavcodec/avcodec.h>

/* A preview: the JPEG stays in memory (MJPEG frames as they are; raw ones scaled down). */
static void preview_work(struct snapshot *sn)
{
  if (sn->cam->fmt.codec == PIREC_CAMERA_CODEC_MJPEG) {
    sn->jpeg = sn->frame;
    sn->jpeg_len = sn->len;
    sn->frame = NULL;
    sn->width = sn->cam->fmt.width;
    sn->height = sn->cam->fmt.height;
    sn->result = 0;
    return;
  }
  AVPacket *pkt = av_packet_alloc();
  sn->result =
      pkt ? pirec__camera_jpeg(&sn->cam->fmt, sn->frame, sn->len, sn->max_width, pkt, &sn->width, &sn->height)
          : -ENOMEM;
  if (sn->result >= 0 && (sn->jpeg = malloc((size_t)pkt->size))) {
    memcpy(sn->jpeg, pkt->data, (size_t)pkt->size);
    sn->jpeg_len = (size_t)pkt->size;
  } else if (sn->result >= 0) {
    sn->result = -ENOMEM;
  }
  av_packet_free(&pkt);
}

static void snap_work(uv_work_t *w)
{
  struct snapshot *sn = container_of(w, struct snapshot, work);
  struct pirec_fs_req req;
  if (!sn->frame) {
    sn->result = -ENOMEM;
    return;
  }
  if (!sn->path) {
    preview_work(sn);
    return;
  }
  if (sn->cam->fmt.codec == PIREC_CAMERA_CODEC_MJPEG) {
    sn->result = pirec_fs_write_atomic(NULL, &req, sn->path, sn->frame, sn->len, 0644, NULL);
    pirec_fs_req_cleanup(&req);
    return;
  }
  AVPacket *pkt = av_packet_alloc();
  if (!pkt) {
    sn->result = -ENOMEM;
    return;
  }
  sn->result = pirec__camera_jpeg(&sn->cam->fmt, sn->frame, sn->len, 0, pkt, &sn->width, &sn->height);
  if (sn->result >= 0) {
    sn->result = pirec_fs_write_atomic(NULL, &req, sn->path, pkt->data, (size_t)pkt->size, 0644, NULL);
    pirec_fs_req_cleanup(&req);
  }
  av_packet_free(&pkt);
}

/* The snapshot request ends: cb gets err, the request is freed. */
static void snap_end(struct pirec_camera *cam, struct snapshot *sn, int err)
{
  cam->snap = NULL;
  if (sn->cb)
    sn->cb(cam, err, sn->user);
  if (sn->pcb)
    sn->pcb(cam, err, sn->jpeg, sn->jpeg_len, sn->width, sn->height, sn->mono_ns, sn->user);
  free(sn->jpeg);
  free(sn->frame);
  free(sn->path);
  free(sn);
}

static void snap_done(uv_work_t *w, int status)
{
  struct snapshot *sn = container_of(w, struct snapshot, work);
  struct pirec_camera *cam = sn->cam;
  snap_end(cam, sn, status < 0 ? status : sn->result);
  if (cam->closing)
    maybe_finish_close(cam);
}

/* Called from the loop after drain() captured a frame into the pending snapshot. */
static void snap_check(uv_timer_t *timer)
{
  struct pirec_camera *cam = container_of(timer, struct pirec_camera, timer);
  struct snapshot *sn = cam->snap;
  if (sn && sn->have_frame && !sn->work.type) {
    if (uv_queue_work(cam->loop, &sn->work, snap_work, snap_done) < 0) {
      snap_end(cam, sn, -EIO);
      return;
    }
  }
  timer_cb(timer);
}

static int snap_new(struct pirec_camera *cam, struct snapshot **out)
{
  if (!cam->started || cam->closing)
    return -EINVAL;
  if (cam->fmt.codec != PIREC_CAMERA_CODEC_MJPEG &&
      !(cam->raw && (strcmp(cam->fmt.pix_fmt, "yuv420p") == 0 || strcmp(cam->fmt.pix_fmt, "yuv422p") == 0 ||
                     strcmp(cam->fmt.pix_fmt, "yuyv422") == 0)))
    return -ENOTSUP;
  if (cam->snap)
    return -EAGAIN;
  struct snapshot *sn = calloc(1, sizeof *sn);
  if (!sn)
    return -ENOMEM;
  sn->cam = cam;
  *out = sn;
  return 0;
}

int pirec_camera_snapshot(struct pirec_camera *cam, const char *path, pirec_camera_snapshot_cb cb, void *user)
{
  struct snapshot *sn = NULL;
  int err = snap_new(cam, &sn);
  if (err == 0 && strcmp(cam->fmt.pix_fmt, "yuyv422") == 0 && cam->fmt.codec != PIREC_CAMERA_CODEC_MJPEG)
    err = -ENOTSUP; /* full size only: the mjpeg encoder does not take packed 4:2:2 */
  if (err == 0 && !(sn->path = strdup(path)))
    err = -ENOMEM;
  if (err < 0) {
    free(sn);
    return err;
  }
  sn->cb = cb;
  sn->user = user;
  cam->snap = sn;
  return 0;
}

int pirec_camera_set_key(struct pirec_camera *cam, const struct pirec_crypt_key *key, const char *session_dir)
{
  return pirec_crypt_session_set(&cam->crypt, key, session_dir);
}

int pirec_camera_preview(struct pirec_camera *cam, int max_width, pirec_camera_preview_cb cb, void *user)
{
  struct snapshot *sn = NULL;
  int err = snap_new(cam, &sn);
  if (err < 0)
    return err;
  sn->max_width = max_width > 0 ? max_width : 640;
  sn->pcb = cb;
  sn->user = user;
  cam->snap = sn;
  return 0;
}

/* ---- close ---- */

static void free_cam(struct pirec_camera *cam)
{
  pirec_camera_close_cb cb = cam->close_cb;
  void *user = cam->close_user;
  pirec_camera_source_free(cam->src);
  pirec_crypt_session_clear(&cam->crypt);
  pirec_ring_free(cam->ring);
  pirec__camera_gop_free(&cam->gop);
  free(cam->infl_done);
  free(cam->trial_dir);
  pthread_mutex_destroy(&cam->src_lock);
  pthread_mutex_destroy(&cam->ev_lock);
  pthread_mutex_destroy(&cam->stop_lock);
  pthread_cond_destroy(&cam->stop_cond);
  if (cb)
    cb(cam, user);
  free(cam);
}

static void handle_closed(uv_handle_t *h)
{
  struct pirec_camera *cam = h->data;
  if (--cam->handles == 0)
    free_cam(cam);
}

static void close_handle(struct pirec_camera *cam, uv_handle_t *h)
{
  h->data = cam;
  uv_close(h, handle_closed);
}

static void maybe_finish_close(struct pirec_camera *cam)
{
  struct snapshot *sn = cam->snap;
  if (cam->closing != 1 || cam->joining || cam->trial || cam->borrowed_out)
    return;
  if (sn && !sn->work.type) {
    /* no frame will come any more: the request ends here */
    snap_end(cam, sn, -ECANCELED);
  }
  if (cam->snap)
    return;
  cam->closing = 2;
  if (cam->handles == 0) {
    free_cam(cam);
    return;
  }
  if (cam->has_async)
    close_handle(cam, (uv_handle_t *)&cam->async);
  if (cam->has_timer)
    close_handle(cam, (uv_handle_t *)&cam->timer);
}

/* The close after the capture thread has ended: the trial's files, then the handles. */
static void close_rest(struct pirec_camera *cam)
{
  if (cam->trial && !cam->trial->stopping)
    pirec_camera_trial_stop(cam, NULL, NULL);
  maybe_finish_close(cam);
}

static void join_capture(uv_work_t *work)
{
  struct pirec_camera *cam = container_of(work, struct pirec_camera, join_work);
  struct pirec_camera_source *src;

  pthread_join(cam->thread, NULL);
  /* Freeing a source joins the decoder's and filter graph's own threads (libav): here too. */
  pthread_mutex_lock(&cam->src_lock);
  src = cam->src;
  cam->src = NULL;
  pthread_mutex_unlock(&cam->src_lock);
  pirec_camera_source_free(src);
}

static void capture_joined(uv_work_t *work, int status)
{
  struct pirec_camera *cam = container_of(work, struct pirec_camera, join_work);
  (void)status; /* a queued work always runs; only a cancel could make it fail, and none is made */
  cam->joining = 0;
  cam->thread_started = 0;
  deliver_events(cam);
  close_rest(cam);
}

void pirec_camera_close(struct pirec_camera *cam, pirec_camera_close_cb cb, void *user)
{
  if (!cam)
    return;
  cam->closing = 1;
  cam->close_cb = cb;
  cam->close_user = user;
  if (cam->thread_started) {
    pthread_mutex_lock(&cam->stop_lock);
    atomic_store(&cam->stop, 1);
    pthread_cond_signal(&cam->stop_cond);
    pthread_mutex_unlock(&cam->stop_lock);
    pthread_mutex_lock(&cam->src_lock);
    if (cam->src)
      pirec_camera_source_interrupt(cam->src);
    pthread_mutex_unlock(&cam->src_lock);
    /* The capture thread may be inside a source's open or read for a while yet: the join waits in
     * the threadpool, not on the loop. */
    cam->joining = 1;
    if (uv_queue_work(cam->loop, &cam->join_work, join_capture, capture_joined) == 0)
      return;
    join_capture(&cam->join_work);
    capture_joined(&cam->join_work, 0);
    return;
  }
  close_rest(cam);
}
