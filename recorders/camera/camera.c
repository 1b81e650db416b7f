/* The camera: capture thread -> ring -> loop -> encoder job (raw) or file sink (compressed),
 * one frames-CSV row per frame that reached the video file. */

#include "camera-int.h"
#include "h264.h"
#include "mkv.h"

#include "pirec/clock.h"
#include "pirec/csv.h"
#include "pirec/error.h"
#include "pirec/ffmpeg.h"
#include "pirec/fs.h"
#include "pirec/job.h"
#include "pirec/log.h"
#include "pirec/ring.h"
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
  uint64_t gap_drops; /* frames missing in the device's timeline just before this one */
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
  char *video_path, *csv_path;
  struct pirec_sink *video, *csv;
  struct pirec__mkv *mkv;
  struct pirec_job *job;
  struct meta *meta;
  size_t meta_cap, meta_head, meta_count;
  struct pirec__au au;
  uint64_t rows;
  uint64_t video_offset;
  int64_t t0_mono;
  int stopping;
  int64_t stop_mono; /* frames that arrived up to here still belong to the trial */
  int fed_all;       /* every frame of the trial has been fed or written */
  int finalizing;
  int sinks_open;
  int err;
  int mkv_failed;
  int seal;                 /* the video sink closed cleanly: seal it once the CSV is closed too */
  uint64_t seal_file_bytes; /* the video sink's final bytes_written */
  struct pirec__mkv_sealer sealer;
  struct pirec_camera *cam;
  pirec_camera_stopped_cb stopped_cb;
  void *stopped_user;
};

struct pirec_camera {
  uv_loop_t *loop;
  struct pirec_camera_settings s;
  char label[PIREC_CAMERA_PATH_MAX + 32]; /* the source as messages name it */
  pirec_camera_event_cb on_event;
  void *user;
  struct pirec_camera_format fmt;
  int raw;
  int legacy_vsync;

  /* Capture thread. src is replaced only by the capture thread, under src_lock (reconnects). */
  pthread_t thread;
  int thread_started;
  pthread_mutex_t src_lock;
  struct pirec_camera_source *src;
  atomic_int stop;
  struct pirec_ring *ring;
  _Atomic uint64_t captured;
  _Atomic uint64_t drops_device;
  _Atomic uint64_t source_errors;
  _Atomic uint64_t reconnects;
  atomic_int last_error;
  struct hist capture_hist;

  /* Events from the capture thread (rare: errors, reconnects), under ev_lock. */
  pthread_mutex_t ev_lock;
  struct event_msg evq[8];
  unsigned ev_count;
  atomic_int ev_pending;

  /* Loop thread. */
  uv_async_t async;
  uv_timer_t timer; /* deferred completions */
  uv_poll_t fifo_poll;
  int handles;
  int has_poll, has_async, has_timer;
  int started;
  int held;
  char fifo[96];
  int fifo_rd, fifo_wr;
  int polling;
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
  uint64_t pending; /* frames lost since the last frame that got through */
  uint64_t drops_encoder, drops_sink, frames_idle;
  uint64_t encoder_restarts;
  uint64_t rows_last;
  uint64_t bytes_last;
  int loop_last_error;
  struct trial *trial;
  int closing;
  pirec_camera_close_cb close_cb;
  void *close_user;

  /* Snapshot request: the next frame taken is copied and encoded in the threadpool. */
  struct snapshot *snap;
};

struct snapshot {
  uv_work_t work;
  struct pirec_camera *cam;
  char *path;
  uint8_t *frame;
  size_t len;
  int have_frame;
  int result;
  pirec_camera_snapshot_cb cb;
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

/* Sleeps up to ns unless asked to stop; 1 when stopping. */
static int nap(struct pirec_camera *cam, int64_t ns)
{
  int64_t end = pirec_clock_mono_ns() + ns;
  while (!atomic_load(&cam->stop)) {
    int64_t left = end - pirec_clock_mono_ns();
    if (left <= 0)
      return 0;
    if (left > 50000000)
      left = 50000000;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = left};
    nanosleep(&ts, NULL);
  }
  return 1;
}

static void *capture_main(void *arg)
{
  struct pirec_camera *cam = arg;
  char tname[16];
  int64_t period = cam->fmt.fps_num > 0 ? (int64_t)1000000000 * cam->fmt.fps_den / cam->fmt.fps_num : 0;
  int64_t prev_dev = INT64_MIN, prev_arrival = INT64_MIN;
  uint64_t gap_carry = 0, seq = 0;
  int64_t since_dev = 0;
  int64_t backoff = 100000000;
  int reconnected = 0, failing = 0;

  snprintf(tname, sizeof tname, "cam-%.11s", cam->s.name);
  pthread_setname_np(pthread_self(), tname);

  while (!atomic_load(&cam->stop)) {
    struct pirec_camera_source *src = cam->src;
    if (!src) {
      char *msg = NULL;
      int r = pirec_camera_source_open(&cam->s, &src, &msg);
      if (r < 0) {
        atomic_fetch_add(&cam->source_errors, 1);
        atomic_store(&cam->last_error, r);
        if (!failing)
          post_event(cam, PIREC_CAMERA_EVENT_SOURCE_ERROR, "camera '%s': %s; retrying", cam->s.name,
                     msg ? msg : pirec_strerror(r));
        failing = 1;
        free(msg);
        if (nap(cam, backoff))
          break;
        backoff = backoff * 2 > 5000000000 ? 5000000000 : backoff * 2;
        continue;
      }
      struct pirec_camera_format f;
      pirec_camera_source_format(src, &f);
      if (f.codec != cam->fmt.codec || f.frame_bytes != cam->fmt.frame_bytes) {
        post_event(cam, PIREC_CAMERA_EVENT_SOURCE_ERROR,
                   "camera '%s': the source came back with another format; retrying", cam->s.name);
        pirec_camera_source_free(src);
        if (nap(cam, backoff))
          break;
        continue;
      }
      pthread_mutex_lock(&cam->src_lock);
      cam->src = src;
      pthread_mutex_unlock(&cam->src_lock);
      if (atomic_load(&cam->stop))
        break;
      atomic_fetch_add_explicit(&cam->reconnects, 1, memory_order_relaxed);
      post_event(cam, PIREC_CAMERA_EVENT_SOURCE_RECONNECTED, "camera '%s': source '%s' reconnected",
                 cam->s.name, cam->label);
      failing = 0;
      backoff = 100000000;
      if (!f.device_clock_continuous) {
        prev_dev = INT64_MIN; /* a new timeline: the gap is measured from arrival times */
        since_dev = 0;
      }
    }

    struct pirec_camera_frame f;
    int r = pirec_camera_source_read(src, &f);
    if (r == -EINTR)
      continue;
    if (r < 0) {
      atomic_store(&cam->last_error, r);
      /* A file that ends is over; a network stream that ends (an RTSP server or TCP peer closing
       * the connection) is a camera gone away, reconnected like any other failure. */
      if (r == AVERROR_EOF && cam->s.kind == PIREC_CAMERA_URL && !pirec__camera_source_is_network(&cam->s)) {
        post_event(cam, PIREC_CAMERA_EVENT_SOURCE_EOF, "camera '%s': '%s' ended", cam->s.name, cam->label);
        while (!nap(cam, 1000000000)) {
        }
        break;
      }
      atomic_fetch_add(&cam->source_errors, 1);
      post_event(cam, PIREC_CAMERA_EVENT_SOURCE_ERROR, "camera '%s': reading '%s' failed: %s; reconnecting",
                 cam->s.name, cam->label, pirec_strerror(r));
      pthread_mutex_lock(&cam->src_lock);
      cam->src = NULL;
      pthread_mutex_unlock(&cam->src_lock);
      pirec_camera_source_free(src);
      reconnected = 1;
      failing = 1;
      nap(cam, backoff);
      continue;
    }

    /* Frames the device skipped: from its timestamps when it has them, else (after a reconnect
     * of a source whose clock starts again) from the arrival times. */
    uint64_t gap = 0;
    since_dev++;
    if (period > 0) {
      /* steps: frame intervals since the last frame with a device timestamp (a frame whose rpicam
       * metadata block came too late has none, and is not a loss) */
      int64_t dt = -1, steps = 1;
      if (f.device_ts_ns != INT64_MIN && prev_dev != INT64_MIN) {
        dt = f.device_ts_ns - prev_dev;
        steps = since_dev;
      } else if (reconnected && prev_arrival != INT64_MIN) {
        dt = f.arrival_mono_ns - prev_arrival;
      }
      int64_t intervals = dt > 0 ? (dt + period / 2) / period : 0;
      if (intervals > steps)
        gap = (uint64_t)(intervals - steps);
    }
    reconnected = 0;
    if (f.device_ts_ns != INT64_MIN) {
      prev_dev = f.device_ts_ns;
      since_dev = 0;
    }
    prev_arrival = f.arrival_mono_ns;
    if (gap)
      atomic_fetch_add_explicit(&cam->drops_device, gap, memory_order_relaxed);
    gap_carry += gap;

    if (cam->raw && f.len != cam->fmt.frame_bytes) {
      /* a short or padded buffer cannot be encoded: count it like a lost frame */
      atomic_fetch_add_explicit(&cam->drops_device, 1, memory_order_relaxed);
      gap_carry++;
      atomic_store_explicit(&cam->captured, ++seq, memory_order_relaxed);
      continue;
    }

    void *dst;
    if (pirec_ring_reserve(cam->ring, sizeof(struct frame_hdr) + f.len, &dst) == 0) {
      struct frame_hdr h = {.seq = seq,
                            .mono_ns = f.arrival_mono_ns,
                            .wall_ns = f.arrival_wall_ns,
                            .device_ts_ns = f.device_ts_ns,
                            .gap_drops = gap_carry,
                            .len = f.len};
      memcpy(dst, &h, sizeof h);
      memcpy((uint8_t *)dst + sizeof h, f.data, f.len);
      pirec_ring_commit(cam->ring, sizeof h + f.len);
      gap_carry = 0;
      uv_async_send(&cam->async);
    }
    /* else: the ring counted the drop; this frame's gap_carry waits for the next one */
    atomic_store_explicit(&cam->captured, ++seq, memory_order_relaxed);
    hist_add(&cam->capture_hist, pirec_clock_mono_ns() - f.arrival_mono_ns);
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

static void write_row(struct pirec_camera *cam, struct trial *t, uint64_t seq, int64_t mono, int64_t wall,
                      int64_t dev, uint64_t dropped, uint64_t bytes, int64_t offset)
{
  char buf[256];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, buf, sizeof buf);
  pirec_csv_row_i64(&row, t->number);
  pirec_csv_row_i64(&row, mono);
  pirec_csv_row_i64(&row, wall);
  pirec_csv_row_u64(&row, t->rows);
  pirec_csv_row_u64(&row, seq);
  if (dev != INT64_MIN)
    pirec_csv_row_i64(&row, dev);
  else
    pirec_csv_row_empty(&row);
  pirec_csv_row_u64(&row, dropped);
  pirec_csv_row_u64(&row, bytes);
  if (offset >= 0)
    pirec_csv_row_i64(&row, offset);
  else
    pirec_csv_row_empty(&row);
  pirec_csv_row_end(&row);
  int r = pirec_csv_push(t->csv, &row);
  if (r < 0 && !t->err) {
    /* The video has the frame but its row is lost: say so loudly, the file pair no longer maps. */
    t->err = r;
    cam->loop_last_error = r;
    emit(cam, PIREC_CAMERA_EVENT_WRITE_ERROR, "frames csv refused a row");
  }
  t->rows++;
}

static int sink_has_room(struct pirec_sink *sink, size_t len)
{
  struct pirec_sink_counters c;
  pirec_sink_counters(sink, &c);
  return c.error == 0 && c.ring_capacity - c.ring_used >= len;
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

static void drain(struct pirec_camera *cam)
{
  if (cam->held || !cam->ring)
    return;
  for (;;) {
    if (!cam->cur_valid) {
      if (cam->infl_taken - cam->infl_released >= cam->infl_cap)
        break;
      if (pirec_ring_take(cam->ring, &cam->cur, 1, SIZE_MAX) == 0) {
        if (cam->trial && cam->trial->stopping && !cam->trial->fed_all)
          feeding_done(cam, cam->trial);
        break;
      }
      const struct frame_hdr *h = cam->cur.data;
      cam->cur_abs = cam->infl_taken++;
      cam->cur_dropped = cam->cur.dropped_before + h->gap_drops;
      cam->cur_valid = 1;
      struct snapshot *sn = cam->snap;
      if (sn && !sn->have_frame) {
        sn->frame = malloc(h->len);
        if (sn->frame) {
          memcpy(sn->frame, (const uint8_t *)cam->cur.data + sizeof *h, h->len);
          sn->len = h->len;
        }
        sn->have_frame = 1;
        uv_timer_start(&cam->timer, snap_check, 0, 0);
      }
    }
    struct frame_hdr h;
    memcpy(&h, cam->cur.data, sizeof h);
    const uint8_t *payload = (const uint8_t *)cam->cur.data + sizeof h;
    struct trial *t = cam->trial;

    if (!t || t->fed_all || (t->stopping && h.mono_ns > t->stop_mono)) {
      if (t && !t->fed_all)
        feeding_done(cam, t);
      cam->frames_idle++;
      cam->pending = 0;
      mark_done(cam, cam->cur_abs);
      cam->cur_valid = 0;
      continue;
    }
    if (cam->raw) {
      struct pirec_job_stats js;
      if (t->job)
        pirec_job_stats(t->job, &js);
      if (!t->job || js.state != PIREC_JOB_RUNNING || t->meta_count == t->meta_cap) {
        drop_cur(cam, &cam->drops_encoder);
        mark_done(cam, cam->cur_abs);
        cam->cur_valid = 0;
        continue;
      }
      uv_buf_t b = uv_buf_init((char *)payload, (unsigned)h.len);
      int r = pirec_job_write_borrowed(t->job, &b, 1, borrowed_release, (void *)(uintptr_t)cam->cur_abs);
      if (r == -ENOBUFS)
        break; /* the encoder is behind: the ring holds the frame; on_drain resumes */
      if (r < 0) {
        drop_cur(cam, &cam->drops_encoder);
        mark_done(cam, cam->cur_abs);
        cam->cur_valid = 0;
        continue;
      }
      cam->borrowed_out++;
      struct meta *m = &t->meta[(t->meta_head + t->meta_count++) % t->meta_cap];
      m->seq = h.seq;
      m->mono_ns = h.mono_ns;
      m->wall_ns = h.wall_ns;
      m->device_ts_ns = h.device_ts_ns;
      m->dropped = cam->cur_dropped + cam->pending;
      cam->pending = 0;
      cam->cur_valid = 0;
      continue;
    }
    /* compressed: straight into the video file */
    if (!sink_has_room(t->video, h.len) || pirec_sink_push(t->video, payload, h.len) < 0) {
      drop_cur(cam, &cam->drops_sink);
    } else {
      write_row(cam, t, h.seq, h.mono_ns, h.wall_ns, h.device_ts_ns, cam->cur_dropped + cam->pending, h.len,
                (int64_t)t->video_offset);
      cam->pending = 0;
      t->video_offset += h.len;
    }
    mark_done(cam, cam->cur_abs);
    cam->cur_valid = 0;
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
  if (t->rows == 0)
    t->t0_mono = m.mono_ns;
  if (t->mkv_failed || !sink_has_room(t->video, len + pirec__mkv_margin())) {
    cam->drops_sink++;
    carry_out(cam, t, m.dropped + 1);
    return;
  }
  int r = pirec__mkv_write(t->mkv, au, len, pirec__h264_is_keyframe(au, len), m.mono_ns - t->t0_mono);
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
  /* Frames lost after this one was fed (crash, encoder down) are in cam->pending and go on the
   * next frame fed; this frame carries what was lost before it. */
  write_row(cam, t, m.seq, m.mono_ns, m.wall_ns, m.device_ts_ns, m.dropped, len, -1);
}

/* Reads everything the encoder wrote so far (non-blocking) and emits complete access units. */
static void read_fifo(struct pirec_camera *cam)
{
  struct trial *t = cam->trial;
  if (!t || cam->fifo_rd < 0)
    return;
  for (int rounds = 0; rounds < 64; rounds++) {
    uint8_t *space = pirec__au_space(&t->au, 1 << 20);
    if (!space)
      return;
    ssize_t n = read(cam->fifo_rd, space, 1 << 20);
    if (n <= 0)
      break;
    pirec__au_fill(&t->au, (size_t)n);
    const uint8_t *au;
    size_t len;
    while (pirec__au_next(&t->au, &au, &len))
      emit_au(cam, t, au, len);
  }
}

static void fifo_cb(uv_poll_t *p, int status, int events)
{
  struct pirec_camera *cam = container_of(p, struct pirec_camera, fifo_poll);
  read_fifo(cam);
}

/* The run ended: what it wrote is all in the pipe. A clean end's last access unit is complete;
 * after a crash it may be cut, so it is dropped with everything still inside the encoder. */
static void end_of_run(struct pirec_camera *cam, struct trial *t, int clean)
{
  const uint8_t *au;
  size_t len;
  read_fifo(cam);
  if (clean && pirec__au_last(&t->au, &au, &len))
    emit_au(cam, t, au, len);
  pirec__au_reset(&t->au);
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
  char text[512];
  if (t)
    end_of_run(cam, t, 0);
  cam->loop_last_error = -EPIPE;
  snprintf(text, sizeof text, "camera '%s': encoder ended (%s, status %d)%s%.200s; restart %u in %llu ms",
           cam->s.name, pirec_job_end_str(run->reason), run->status, run->stderr_tail_len ? ": " : "",
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
    char text[512];
    snprintf(text, sizeof text,
             "camera '%s': encoder gave up (%s, status %d)%s%.200s; frames are dropped until the trial ends",
             cam->s.name, pirec_job_end_str(res->reason), res->status, res->stderr_tail_len ? ": " : "",
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

/* The encoder: raw frames on stdin, H.264 access units with delimiters into the FIFO, which the
 * loop cuts into units and muxes with each frame's capture time. Built by the shared builder
 * (include/pirec/ffmpeg.h), so its frame-exact options (passthrough, no B-frames) are the ones
 * test-ffmpeg checks. */
static int build_encoder_argv(const struct pirec_camera *cam, char ***argv)
{
  const struct pirec_camera_settings *s = &cam->s;
  struct pirec_ffmpeg_encode e;
  pirec_ffmpeg_encode_init(&e);
  int fps_ok = cam->fmt.fps_num > 0 && cam->fmt.fps_den > 0;
  e.program = s->ffmpeg;
  e.output = cam->fifo;
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
  pirec__mkv_free(t->mkv);
  pirec__au_free(&t->au);
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

/* The ring of a trial's video sink. Encoded video runs at a few MB/s; MJPEG as received can reach
 * 10 MB/s. Arenas are backed by memory when created, so they are no larger than a few seconds need. */
static size_t trial_video_ring_bytes(const struct pirec_camera *cam)
{
  return cam->raw ? (size_t)8 << 20 : (size_t)32 << 20;
}

int pirec_camera_trial_start(struct pirec_camera *cam, const char *dir, int trial, int part)
{
  struct pirec_fs_req req;
  struct trial *t;
  int r;

  if (!cam->started || cam->closing || trial < 1 || part < 0)
    return -EINVAL;
  if (cam->trial)
    return -EBUSY;
  r = pirec_fs_mkdir_p(NULL, &req, dir, 0755, NULL);
  if (r < 0) {
    pirec_log(PIREC_LOG_ERROR, "camera '%s': %s", cam->s.name, req.message ? req.message : pirec_strerror(r));
    pirec_fs_req_cleanup(&req);
    return r;
  }
  pirec_fs_req_cleanup(&req);
  t = calloc(1, sizeof *t);
  if (!t)
    return -ENOMEM;
  t->number = trial;
  t->part = part;
  t->cam = cam;
  char suffix[16] = "";
  if (part > 0)
    snprintf(suffix, sizeof suffix, "_p%d", part);
  t->video_path = pirec__camera_strdupf("%s/t%03d%s.%s", dir, trial, suffix, video_ext(cam->fmt.codec));
  t->csv_path = pirec__camera_strdupf("%s/t%03d%s_frames.csv", dir, trial, suffix);
  if (!t->video_path || !t->csv_path) {
    free_trial(t);
    return -ENOMEM;
  }

  struct pirec_sink_options vo, co;
  pirec_sink_options_default(&vo);
  pirec_sink_options_default(&co);
  vo.ring_bytes = trial_video_ring_bytes(cam);
  co.ring_bytes = FRAMES_CSV_RING_BYTES;
  vo.fsync_interval_ms = co.fsync_interval_ms = cam->s.fsync_interval_ms;
  if ((r = pirec_sink_new(cam->loop, t->video_path, &vo, sink_error, cam, &t->video)) < 0)
    goto fail;
  if ((r = pirec_sink_new(cam->loop, t->csv_path, &co, sink_error, cam, &t->csv)) < 0)
    goto fail;
  t->sinks_open = 2;

  static const char *const columns[] = {"trial",        "mono_ns",        "wall_ns", "frame",  "seq",
                                        "device_ts_ns", "dropped_before", "bytes",   "offset", NULL};
  char header[256];
  int hl = pirec_csv_header(header, sizeof header, columns);
  if (hl < 0 || (r = pirec_sink_push(t->csv, header, (size_t)hl)) < 0) {
    r = hl < 0 ? hl : r;
    goto fail;
  }

  if (cam->raw) {
    char **argv = NULL;
    struct pirec_job_options o;
    t->meta_cap = 4096;
    t->meta = calloc(t->meta_cap, sizeof *t->meta);
    if (!t->meta || pirec__au_init(&t->au, 4u << 20) < 0) {
      r = -ENOMEM;
      goto fail;
    }
    /* The track's size is the format's; its nominal rate 30/1 when the format names none. */
    int fps_ok = cam->fmt.fps_num > 0 && cam->fmt.fps_den > 0;
    if ((r = pirec__mkv_new(t->video, cam->fmt.width, cam->fmt.height, fps_ok ? cam->fmt.fps_num : 30,
                            fps_ok ? cam->fmt.fps_den : 1, &t->mkv)) < 0)
      goto fail;
    if ((r = build_encoder_argv(cam, &argv)) < 0)
      goto fail;
    char name[PIREC_CAMERA_NAME_MAX + 16];
    snprintf(name, sizeof name, "%s encoder", cam->s.name);
    pirec_job_options_init(&o);
    o.argv = (const char *const *)argv;
    o.name = name;
    o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
    o.stdio[1].kind = PIREC_JOB_STDIO_NULL;
    o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
    o.progress_fd = 3;
    o.stdin_max_outstanding =
        cam->s.encoder_outstanding ? cam->s.encoder_outstanding : 8 * cam->fmt.frame_bytes;
    if (o.stdin_max_outstanding < cam->fmt.frame_bytes)
      o.stdin_max_outstanding = cam->fmt.frame_bytes;
    /* A hung encoder (no progress report for 15 s while frames wait) is restarted. */
    o.stall_timeout_ms = 15000;
    o.stop_term_ms = 10000;
    o.stop_kill_ms = 2000;
    o.restart.mode = PIREC_JOB_RESTART_ON_FAILURE;
    o.restart.backoff_initial_ms = cam->s.encoder_backoff_ms ? cam->s.encoder_backoff_ms : 200;
    o.restart.max_failures = cam->s.encoder_max_failures ? cam->s.encoder_max_failures : 5;
    o.on_end = enc_end;
    o.on_line = enc_line;
    o.on_drain = enc_drain;
    o.on_restart = enc_restart;
    o.on_spawn = enc_spawn;
    o.user = cam;
    r = pirec_job_new(cam->loop, &o, &t->job);
    pirec_ffmpeg_argv_free(argv); /* the job keeps its own copy */
    if (r < 0)
      goto fail;
    /* Bytes left over from an earlier trial's encoder would be taken for this one's. */
    uint8_t junk[4096];
    while (read(cam->fifo_rd, junk, sizeof junk) > 0) {
    }
    if ((r = pirec_job_start(t->job)) < 0) {
      pirec_log(PIREC_LOG_ERROR, "camera '%s': cannot start '%s': %s", cam->s.name, cam->s.ffmpeg,
                pirec_strerror(r));
      goto fail;
    }
    uv_poll_start(&cam->fifo_poll, UV_READABLE, fifo_cb);
    cam->polling = 1;
  } else {
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
  cam->pending = 0;
  cam->rows_last = 0;
  cam->trial = t;
  return 0;

fail:
  if (t->job) {
    pirec_job_free(t->job);
    t->job = NULL;
  }
  if (t->video)
    pirec_sink_close(t->video, NULL, NULL);
  if (t->csv)
    pirec_sink_close(t->csv, NULL, NULL);
  free_trial(t);
  return r;
}

static void trial_done(struct pirec_camera *cam)
{
  struct trial *t = cam->trial;
  pirec_camera_stopped_cb cb = t->stopped_cb;
  void *user_cb = t->stopped_user;
  int err = t->err;
  cam->rows_last = t->rows;
  cam->trial = NULL;
  free_trial(t);
  if (cb)
    cb(cam, err, user_cb);
  if (cam->closing)
    maybe_finish_close(cam);
}

/* The video file is sealed (pirec__mkv_seal_file: its real segment size written over "unknown")
 * before the trial reports stopped; a failure leaves the file valid, just unsealed. */
static void sealed(struct pirec__mkv_sealer *s, int status)
{
  struct trial *t = s->data;
  struct pirec_camera *cam = t->cam;
  if (status < 0)
    pirec_log(PIREC_LOG_WARN, "camera '%s': cannot seal '%s': %s", cam->s.name, t->video_path,
              pirec_strerror(status));
  trial_done(cam);
}

static void sink_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  struct pirec_camera *cam = user;
  struct trial *t = cam->trial;
  if (final->error && t && !t->err)
    t->err = final->error;
  if (t && sink == t->video) {
    cam->bytes_last = final->bytes_written;
    t->seal = t->mkv && !t->err && !t->mkv_failed;
    t->seal_file_bytes = final->bytes_written;
    t->video = NULL; /* freed when this returns; status reads bytes_last from now on */
  } else if (t && sink == t->csv) {
    t->csv = NULL;
  }
  if (!t || --t->sinks_open > 0)
    return;
  if (t->seal) {
    /* -EINVAL here (bytes missing from the file, or a header it cannot seal) leaves it unsealed */
    t->sealer.data = t;
    if (pirec__mkv_seal_file(cam->loop, &t->sealer, t->mkv, t->video_path, t->seal_file_bytes, sealed) == 0)
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
  if (cam->polling) {
    uv_poll_stop(&cam->fifo_poll);
    cam->polling = 0;
  }
  if (t->mkv) {
    int r = pirec__mkv_finish(t->mkv);
    if (r < 0 && !t->err)
      t->err = r;
  }
  cam->rows_last = t->rows;
  pirec_sink_close(t->video, sink_closed, cam);
  pirec_sink_close(t->csv, sink_closed, cam);
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
  cam->fifo_rd = cam->fifo_wr = -1;
  if (s->kind == PIREC_CAMERA_RPICAM)
    snprintf(cam->label, sizeof cam->label, "%s --camera %.16s", s->rpicam_program, s->source);
  else if (s->kind == PIREC_CAMERA_LAVFI)
    snprintf(cam->label, sizeof cam->label, "lavfi:%s", s->source);
  else
    snprintf(cam->label, sizeof cam->label, "%s", s->source);
  pthread_mutex_init(&cam->src_lock, NULL);
  pthread_mutex_init(&cam->ev_lock, NULL);
  atomic_init(&cam->stop, 0);
  atomic_init(&cam->ev_pending, 0);
  *out = cam;
  return 0;
}

/* The encoder's output pipe. An anonymous pipe, reached by ffmpeg through /proc/<our pid>/fd/<write
 * end> (opening that magic link opens the same pipe), so no path exists that a crash could leave
 * behind. We keep the write end open ourselves, idle: the pipe then never reports end-of-file
 * between encoder runs. */
static int make_fifo(struct pirec_camera *cam)
{
  int fds[2];
  if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0)
    return -errno;
  cam->fifo_rd = fds[0];
  cam->fifo_wr = fds[1];
  fcntl(cam->fifo_rd, F_SETPIPE_SZ, 1 << 20);
  snprintf(cam->fifo, sizeof cam->fifo, "/proc/%d/fd/%d", (int)getpid(), cam->fifo_wr);
  return 0;
}

static int probe_encoder(struct pirec_camera *cam)
{
  char err[256];
  struct pirec_ffmpeg_info info;
  int r = pirec_ffmpeg_probe(cam->s.ffmpeg, "libx264", &info, err, sizeof err);
  if (r < 0) {
    pirec_log(PIREC_LOG_ERROR, "camera '%s': %s", cam->s.name, err);
    return r;
  }
  cam->legacy_vsync = info.legacy_vsync;
  return 0;
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
    pirec_log(PIREC_LOG_ERROR, "camera '%s': %s", cam->s.name, msg ? msg : pirec_strerror(r));
    free(msg);
    return r;
  }
  pirec_camera_source_format(cam->src, &cam->fmt);
  cam->raw = cam->fmt.codec == PIREC_CAMERA_CODEC_RAW;

  size_t ring_bytes = cam->s.ring_bytes;
  if (!ring_bytes) {
    if (cam->raw) {
      int fn = cam->fmt.fps_num > 0 ? cam->fmt.fps_num : 30, fd = cam->fmt.fps_num > 0 ? cam->fmt.fps_den : 1;
      uint64_t frames =
          (uint64_t)(cam->s.ring_ms ? cam->s.ring_ms : 1000) * (uint64_t)fn / (1000u * (uint64_t)fd);
      ring_bytes = (size_t)(frames + 1) * (cam->fmt.frame_bytes + sizeof(struct frame_hdr) + 64);
      /* a fast camera's second of 1080p would be hundreds of MB: cap the default */
      if (ring_bytes > (256u << 20))
        ring_bytes = 256u << 20;
    } else {
      ring_bytes = 32u << 20;
    }
  }
  /* A record may use at most half the ring. */
  size_t min_bytes = 2 * (cam->fmt.frame_bytes + sizeof(struct frame_hdr) + 128);
  if (ring_bytes < min_bytes)
    ring_bytes = min_bytes;
  if ((r = pirec_ring_new(ring_bytes, &cam->ring)) < 0)
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
    if ((r = make_fifo(cam)) < 0) {
      pirec_log(PIREC_LOG_ERROR, "camera '%s': cannot create the encoder's output pipe: %s", cam->s.name,
                pirec_strerror(r));
      goto fail;
    }
    if ((r = uv_poll_init(cam->loop, &cam->fifo_poll, cam->fifo_rd)) < 0)
      goto fail;
    cam->handles++;
    cam->has_poll = 1;
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

void pirec_camera_hold(struct pirec_camera *cam, int hold)
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
  out->frames_idle = cam->frames_idle;
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
  out->last_error = cam->loop_last_error ? cam->loop_last_error : atomic_load(&cam->last_error);
  hist_summary(&cam->capture_hist, &out->capture);
  out->format = cam->fmt;
}

/* ---- snapshot ---- */

#include <libavcodec/avcodec.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>

static int encode_jpeg(const struct pirec_camera_format *fmt, const uint8_t *data, size_t len, AVPacket *pkt)
{
  const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
  enum AVPixelFormat pix = av_get_pix_fmt(fmt->pix_fmt);
  AVCodecContext *c = NULL;
  AVFrame *frame = NULL;
  int r;
  if (!codec)
    return AVERROR_ENCODER_NOT_FOUND;
  /* The mjpeg encoder takes full-range 4:2:0/4:2:2 planar input; yuv420p and yuv422p are the
   * cheap cases (no conversion). */
  enum AVPixelFormat enc_pix = pix == AV_PIX_FMT_YUV420P   ? AV_PIX_FMT_YUVJ420P
                               : pix == AV_PIX_FMT_YUV422P ? AV_PIX_FMT_YUVJ422P
                                                           : AV_PIX_FMT_NONE;
  if (enc_pix == AV_PIX_FMT_NONE)
    return -ENOTSUP;
  c = avcodec_alloc_context3(codec);
  frame = av_frame_alloc();
  if (!c || !frame) {
    r = AVERROR(ENOMEM);
    goto out;
  }
  c->width = fmt->width;
  c->height = fmt->height;
  c->pix_fmt = enc_pix;
  c->time_base = (AVRational){1, 25};
  c->flags |= AV_CODEC_FLAG_QSCALE;
  c->global_quality = FF_QP2LAMBDA * 4;
  if ((r = avcodec_open2(c, codec, NULL)) < 0)
    goto out;
  frame->width = fmt->width;
  frame->height = fmt->height;
  frame->format = enc_pix;
  if ((r = av_image_fill_arrays(frame->data, frame->linesize, data, pix, fmt->width, fmt->height, 1)) < 0)
    goto out;
  if ((size_t)r > len) {
    r = AVERROR_INVALIDDATA;
    goto out;
  }
  if ((r = avcodec_send_frame(c, frame)) < 0 || (r = avcodec_send_frame(c, NULL)) < 0)
    goto out;
  r = avcodec_receive_packet(c, pkt);
out:
  av_frame_free(&frame);
  avcodec_free_context(&c);
  return r;
}

static void snap_work(uv_work_t *w)
{
  struct snapshot *sn = container_of(w, struct snapshot, work);
  struct pirec_fs_req req;
  if (!sn->frame) {
    sn->result = -ENOMEM;
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
  sn->result = encode_jpeg(&sn->cam->fmt, sn->frame, sn->len, pkt);
  if (sn->result >= 0) {
    sn->result = pirec_fs_write_atomic(NULL, &req, sn->path, pkt->data, (size_t)pkt->size, 0644, NULL);
    pirec_fs_req_cleanup(&req);
  }
  av_packet_free(&pkt);
}

static void snap_done(uv_work_t *w, int status)
{
  struct snapshot *sn = container_of(w, struct snapshot, work);
  struct pirec_camera *cam = sn->cam;
  cam->snap = NULL;
  if (sn->cb)
    sn->cb(cam, status < 0 ? status : sn->result, sn->user);
  free(sn->frame);
  free(sn->path);
  free(sn);
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
      cam->snap = NULL;
      if (sn->cb)
        sn->cb(cam, -EIO, sn->user);
      free(sn->frame);
      free(sn->path);
      free(sn);
      return;
    }
  }
  timer_cb(timer);
}

int pirec_camera_snapshot(struct pirec_camera *cam, const char *path, pirec_camera_snapshot_cb cb, void *user)
{
  if (!cam->started || cam->closing)
    return -EINVAL;
  if (cam->fmt.codec != PIREC_CAMERA_CODEC_MJPEG &&
      !(cam->raw && (strcmp(cam->fmt.pix_fmt, "yuv420p") == 0 || strcmp(cam->fmt.pix_fmt, "yuv422p") == 0)))
    return -ENOTSUP;
  if (cam->snap)
    return -EAGAIN;
  struct snapshot *sn = calloc(1, sizeof *sn);
  if (!sn || !(sn->path = strdup(path))) {
    free(sn);
    return -ENOMEM;
  }
  sn->cam = cam;
  sn->cb = cb;
  sn->user = user;
  cam->snap = sn;
  return 0;
}

/* ---- close ---- */

static void free_cam(struct pirec_camera *cam)
{
  pirec_camera_close_cb cb = cam->close_cb;
  void *user = cam->close_user;
  if (cam->fifo_rd >= 0)
    close(cam->fifo_rd);
  if (cam->fifo_wr >= 0)
    close(cam->fifo_wr);
  pirec_camera_source_free(cam->src);
  pirec_ring_free(cam->ring);
  free(cam->infl_done);
  pthread_mutex_destroy(&cam->src_lock);
  pthread_mutex_destroy(&cam->ev_lock);
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
  if (cam->closing != 1 || cam->trial || cam->borrowed_out)
    return;
  if (sn && !sn->work.type) {
    /* no frame will come any more: the request ends here */
    cam->snap = NULL;
    if (sn->cb)
      sn->cb(cam, -ECANCELED, sn->user);
    free(sn->frame);
    free(sn->path);
    free(sn);
  }
  if (cam->snap)
    return;
  cam->closing = 2;
  if (cam->handles == 0) {
    free_cam(cam);
    return;
  }
  if (cam->has_poll)
    close_handle(cam, (uv_handle_t *)&cam->fifo_poll);
  if (cam->has_async)
    close_handle(cam, (uv_handle_t *)&cam->async);
  if (cam->has_timer)
    close_handle(cam, (uv_handle_t *)&cam->timer);
}

void pirec_camera_close(struct pirec_camera *cam, pirec_camera_close_cb cb, void *user)
{
  cam->closing = 1;
  cam->close_cb = cb;
  cam->close_user = user;
  if (cam->thread_started) {
    atomic_store(&cam->stop, 1);
    pthread_mutex_lock(&cam->src_lock);
    if (cam->src)
      pirec_camera_source_interrupt(cam->src);
    pthread_mutex_unlock(&cam->src_lock);
    pthread_join(cam->thread, NULL);
    cam->thread_started = 0;
    deliver_events(cam);
  }
  if (cam->trial && !cam->trial->stopping)
    pirec_camera_trial_stop(cam, NULL, NULL);
  maybe_finish_close(cam);
}
