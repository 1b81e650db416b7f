/* Tests for recorders/camera*.c with real components: FFmpeg's lavfi source paced like a camera,
 * the real ffmpeg encoder child, real files checked with ffprobe, and a real stand-in process for
 * rpicam-vid (tests/test-camera-fakerpicam.c).
 *
 * One binary, three groups chosen by argv[1]:
 *   unit   (default) splitter, rpicam metadata lines, settings, rpicam stand-in, url replay, snapshot
 *   record 10 s 640x360 lavfi recording; ring held 2 s; encoder SIGKILLed mid-recording
 *   long   the acceptance run: 60 s of 1280x720 at 30 fps (skipped, exit 77, unless
 *          PIREC_LONG_TESTS=1; ctest label "long")
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "helpers/counters.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <libavcodec/avcodec.h>

#include "camera-int.h"
#include "pirec/camera.h"
#include "pirec/clock.h"
#include "pirec/log.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

/* Under a sanitizer everything runs 5-15x slower and the capture thread stalls for hundreds of
 * ms: checks of wall-clock timing (rates, arrival-time holes, tail latency bounds) are printed but
 * relaxed there; every exact check (rows == packets, per-row drop accounting against the device
 * timeline, file contents) stays. */
#ifdef PIREC_SANITIZED
#define SLOW 1
#else
#define SLOW 0
#endif

#ifndef PIREC_CAMERA_BIN
#error "PIREC_CAMERA_BIN (path of pirec-camera) must be defined by the build"
#endif
#ifndef FAKE_RPICAM
#error "FAKE_RPICAM (path of test-camera-fakerpicam) must be defined by the build"
#endif

/* ---- helpers ---- */

static char tmp_root[256];

static void make_tmp(char *out, size_t cap, const char *name)
{
  if (!tmp_root[0]) {
    snprintf(tmp_root, sizeof tmp_root, "/tmp/pirec-test-camera-XXXXXX");
    assert_non_null(mkdtemp(tmp_root));
  }
  snprintf(out, cap, "%s/%s", tmp_root, name);
}

static void rm_tree(const char *path)
{
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove '%s'\n", path);
}

static char *run_capture(const char *cmd, int *status)
{
  FILE *p = popen(cmd, "r");
  size_t cap = 1 << 16, len = 0;
  char *out = malloc(cap);
  assert_non_null(p);
  for (;;) {
    if (cap - len < 4096)
      out = realloc(out, cap *= 2);
    size_t n = fread(out + len, 1, cap - len - 1, p);
    if (n == 0)
      break;
    len += n;
  }
  out[len] = 0;
  int st = pclose(p);
  if (status)
    *status = st;
  return out;
}

static long probe_packets(const char *path, const char *format)
{
  char cmd[1200];
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error %s%s -count_packets -select_streams v:0 -show_entries "
           "stream=nb_read_packets -of csv=p=0 '%s'",
           format ? "-f " : "", format ? format : "", path);
  int st;
  char *out = run_capture(cmd, &st);
  long n = st == 0 ? strtol(out, NULL, 10) : -1;
  if (st != 0)
    fprintf(stderr, "ffprobe failed on '%s': %s\n", path, out);
  free(out);
  return n;
}

/* The whole file decodes without a single error message, into exactly `frames` pictures.
 * (ffprobe rather than ffmpeg -f null: the CLI's rate conversion would complain about two frames
 * a millisecond apart, which a camera delivers after a stall.) */
static void assert_decodes(const char *path, const char *format, long frames)
{
  char cmd[1200], expect[32];
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error %s%s -count_frames -select_streams v:0 -show_entries "
           "stream=nb_read_frames -of csv=p=0 '%s' 2>&1",
           format ? "-f " : "", format ? format : "", path);
  int st;
  char *out = run_capture(cmd, &st);
  snprintf(expect, sizeof expect, "%ld\n", frames);
  if (st != 0 || strcmp(out, expect) != 0)
    fprintf(stderr, "decoding '%s': status %d: %s\n", path, st, out);
  assert_int_equal(st, 0);
  assert_string_equal(out, expect);
  free(out);
}

/* Packet pts of the first video stream, in the stream's time base. */
static size_t probe_pts(const char *path, int64_t **out)
{
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "ffprobe -v error -select_streams v:0 -show_entries packet=pts -of csv=p=0 '%s'",
           path);
  int st;
  char *text = run_capture(cmd, &st);
  assert_int_equal(st, 0);
  size_t n = 0, cap = 1024;
  int64_t *v = malloc(cap * sizeof *v);
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    if (n == cap)
      v = realloc(v, (cap *= 2) * sizeof *v);
    v[n++] = strtoll(line, NULL, 10);
  }
  free(text);
  *out = v;
  return n;
}

/* A cleanly finished MKV has its segment size filled in (the muxer streams it as "unknown", which
 * is what a file cut by a crash keeps). Returns 1 sealed, 0 unknown. */
static int mkv_sealed(const char *path)
{
  uint8_t b[128];
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  size_t n = fread(b, 1, sizeof b, f);
  fseek(f, 0, SEEK_END);
  long total = ftell(f);
  fclose(f);
  for (size_t i = 0; i + 12 <= n; i++) {
    if (memcmp(b + i, "\x18\x53\x80\x67", 4) != 0)
      continue;
    assert_int_equal(b[i + 4], 0x01); /* 8-byte size field */
    uint64_t size = 0;
    for (int k = 1; k < 8; k++)
      size = size << 8 | b[i + 4 + k];
    if (size == 0x00FFFFFFFFFFFFFFull)
      return 0;
    assert_int_equal(size, (uint64_t)total - (i + 12));
    return 1;
  }
  fail_msg("no Matroska segment in '%s'", path);
  return -1;
}

struct row {
  int64_t trial, mono, wall, frame, seq, dev;
  int before; /* before_start */
  int has_dev;
  uint64_t dropped, bytes;
  int64_t offset;
  int has_offset;
};

static size_t read_rows(const char *path, struct row **out)
{
  FILE *f = fopen(path, "r");
  char line[512];
  size_t n = 0, cap = 1024;
  struct row *rows = malloc(cap * sizeof *rows);
  assert_non_null(f);
  assert_non_null(fgets(line, sizeof line, f));
  assert_string_equal(
      line, "trial,mono_ns,wall_ns,frame,seq,device_ts_ns,dropped_before,bytes,offset,before_start\n");
  while (fgets(line, sizeof line, f)) {
    char *field[10];
    int k = 0;
    char *p = line;
    line[strcspn(line, "\n")] = 0;
    for (; k < 10; k++) {
      field[k] = p;
      char *comma = strchr(p, ',');
      if (!comma) {
        k++;
        break;
      }
      *comma = 0;
      p = comma + 1;
    }
    assert_int_equal(k, 10);
    if (n == cap)
      rows = realloc(rows, (cap *= 2) * sizeof *rows);
    struct row *r = &rows[n++];
    r->trial = strtoll(field[0], NULL, 10);
    r->mono = strtoll(field[1], NULL, 10);
    r->wall = strtoll(field[2], NULL, 10);
    r->frame = strtoll(field[3], NULL, 10);
    r->seq = strtoll(field[4], NULL, 10);
    r->has_dev = field[5][0] != 0;
    r->dev = strtoll(field[5], NULL, 10);
    r->dropped = strtoull(field[6], NULL, 10);
    r->bytes = strtoull(field[7], NULL, 10);
    r->has_offset = field[8][0] != 0;
    r->offset = strtoll(field[8], NULL, 10);
    r->before = strcmp(field[9], "1") == 0;
  }
  fclose(f);
  *out = rows;
  return n;
}

/* Invariants every frames CSV must keep. Returns the sum of dropped_before. With a device
 * timestamp, each row's dropped_before must equal the frames missing between it and the row
 * before, as the device's timeline counts them. */
static uint64_t check_rows(const struct row *rows, size_t n, int trial, int64_t period_ns)
{
  uint64_t dropped = 0;
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(rows[i].trial, trial);
    assert_int_equal(rows[i].frame, (int64_t)i);
    assert_true(rows[i].bytes > 0);
    assert_true(rows[i].wall > 1700000000000000000LL);
    dropped += rows[i].dropped;
    if (i == 0)
      continue;
    if (rows[i].mono <= rows[i - 1].mono)
      fail_msg("row %zu: mono_ns %" PRId64 " not after %" PRId64, i, rows[i].mono, rows[i - 1].mono);
    assert_true(rows[i].seq > rows[i - 1].seq);
    /* (a device timeline that starts again — a reconnected camera — is not compared) */
    if (rows[i].has_dev && rows[i - 1].has_dev && period_ns > 0 && rows[i].dev > rows[i - 1].dev) {
      int64_t missing = (rows[i].dev - rows[i - 1].dev + period_ns / 2) / period_ns - 1;
      if ((int64_t)rows[i].dropped != missing)
        fail_msg("row %zu: dropped_before %" PRIu64 " but the device timeline lost %" PRId64, i,
                 rows[i].dropped, missing);
    }
    /* frames the capture thread delivered but that never reached the file count too */
    assert_true(rows[i].dropped >= (uint64_t)(rows[i].seq - rows[i - 1].seq - 1));
  }
  return dropped;
}

/* ---- running a camera on a real loop ---- */

struct run {
  uv_loop_t loop;
  struct pirec_camera *cam;
  struct pirec_camera_status st; /* at the stop callback */
  int stop_err;
  int stopped, closed;
  int hold_at_ms, hold_ms, kill_at_ms, stop_at_ms, snap_at_ms;
  uv_timer_t t_hold, t_release, t_kill, t_stop, t_snap;
  int killed_pid;
  int events[16];
  const char *snap_path;
  int snap_result;
  int64_t max_hold_capture_ns;
  int late_ms;                    /* > 0: the trial starts this long after the camera */
  int64_t start_mono;             /* CLOCK_MONOTONIC just before the trial's start */
  const char *unlink_after_start; /* a path removed once the camera has started */
  char source_error[512];         /* the text of the last SOURCE_ERROR event */
};

static void on_event(struct pirec_camera *cam, enum pirec_camera_event ev, const char *msg, void *user)
{
  struct run *r = user;
  if ((unsigned)ev < 16)
    r->events[ev]++;
  if (ev == PIREC_CAMERA_EVENT_SOURCE_ERROR)
    snprintf(r->source_error, sizeof r->source_error, "%s", msg);
  fprintf(stderr, "event %d: %s\n", (int)ev, msg);
}

static void closed_cb(struct pirec_camera *cam, void *user)
{
  struct run *r = user;
  r->closed = 1;
  uv_close((uv_handle_t *)&r->t_hold, NULL);
  uv_close((uv_handle_t *)&r->t_release, NULL);
  uv_close((uv_handle_t *)&r->t_kill, NULL);
  uv_close((uv_handle_t *)&r->t_stop, NULL);
  uv_close((uv_handle_t *)&r->t_snap, NULL);
}

static void stopped_cb(struct pirec_camera *cam, int err, void *user)
{
  struct run *r = user;
  r->stopped = 1;
  r->stop_err = err;
  pirec_camera_status(cam, &r->st);
  pirec_camera_close(cam, closed_cb, r);
}

static void on_hold(uv_timer_t *t)
{
  struct run *r = t->data;
  pirec__camera_hold(r->cam, 1);
}

static void on_release(uv_timer_t *t)
{
  struct run *r = t->data;
  pirec__camera_hold(r->cam, 0);
}

static void on_kill(uv_timer_t *t)
{
  struct run *r = t->data;
  struct pirec_camera_status st;
  pirec_camera_status(r->cam, &st);
  assert_true(st.encoder_pid > 0);
  r->killed_pid = st.encoder_pid;
  assert_int_equal(kill(st.encoder_pid, SIGKILL), 0);
}

static void on_stop(uv_timer_t *t)
{
  struct run *r = t->data;
  assert_int_equal(pirec_camera_trial_stop(r->cam, stopped_cb, r), 0);
}

static void snap_cb(struct pirec_camera *cam, int err, void *user)
{
  struct run *r = user;
  r->snap_result = err == 0 ? 1 : err;
}

static void on_snap(uv_timer_t *t)
{
  struct run *r = t->data;
  assert_int_equal(pirec_camera_snapshot(r->cam, r->snap_path, snap_cb, r), 0);
}

static void on_late(uv_timer_t *t)
{
  uv_stop(t->loop);
}

/* The frames CSVs of trial 1's segments t001_s001_frames.csv, ... concatenated into out (one
 * header). Returns how many segments there were. */
static int join_segment_rows(const char *dir, const char *out)
{
  FILE *o = fopen(out, "w");
  assert_non_null(o);
  int k = 1;
  for (;; k++) {
    char path[4200], line[512];
    snprintf(path, sizeof path, "%s/t001_s%03d_frames.csv", dir, k);
    FILE *f = fopen(path, "r");
    if (!f)
      break;
    for (int first = 1; fgets(line, sizeof line, f); first = 0)
      if (!first || k == 1)
        fputs(line, o);
    fclose(f);
  }
  fclose(o);
  return k - 1;
}

static void run_camera(struct run *r, const struct pirec_camera_settings *s, const char *dir)
{
  assert_int_equal(uv_loop_init(&r->loop), 0);
  assert_int_equal(pirec_camera_new(&r->loop, s, on_event, r, &r->cam), 0);
  assert_int_equal(pirec_camera_start(r->cam), 0);
  if (r->unlink_after_start)
    assert_int_equal(unlink(r->unlink_after_start), 0);
  if (r->late_ms > 0) { /* the camera runs idle first (its backlog fills) */
    uv_timer_t late;
    uv_timer_init(&r->loop, &late);
    uv_timer_start(&late, on_late, (uint64_t)r->late_ms, 0);
    uv_run(&r->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&late, NULL);
    uv_run(&r->loop, UV_RUN_NOWAIT);
  }
  int64_t t0 = pirec_clock_mono_ns();
  r->start_mono = t0;
  assert_int_equal(pirec_camera_trial_start(r->cam, dir, 1, 0), 0);
  fprintf(stderr, "trial start took %.2f ms of loop time\n", (pirec_clock_mono_ns() - t0) / 1e6);
  /* The run's timers count from the trial's start, however long the start took (under TSan a
   * first trial can wait seconds for its arenas), not from the loop's older cached time. */
  uv_update_time(&r->loop);
  assert_int_equal(pirec_camera_trial_start(r->cam, dir, 2, 0), -EBUSY);
  assert_true(pirec_camera_recording(r->cam));
  uv_timer_t *timers[] = {&r->t_hold, &r->t_release, &r->t_kill, &r->t_stop, &r->t_snap};
  for (int i = 0; i < 5; i++) {
    uv_timer_init(&r->loop, timers[i]);
    timers[i]->data = r;
  }
  if (r->hold_ms > 0) {
    uv_timer_start(&r->t_hold, on_hold, (uint64_t)r->hold_at_ms, 0);
    uv_timer_start(&r->t_release, on_release, (uint64_t)(r->hold_at_ms + r->hold_ms), 0);
  }
  if (r->kill_at_ms > 0)
    uv_timer_start(&r->t_kill, on_kill, (uint64_t)r->kill_at_ms, 0);
  if (r->snap_at_ms > 0)
    uv_timer_start(&r->t_snap, on_snap, (uint64_t)r->snap_at_ms, 0);
  uv_timer_start(&r->t_stop, on_stop, (uint64_t)r->stop_at_ms, 0);
  uv_run(&r->loop, UV_RUN_DEFAULT);
  assert_true(r->stopped);
  assert_true(r->closed);
  assert_int_equal(uv_loop_close(&r->loop), 0);
  /* Every test's trial ends with the counter identities against its file (its segments' files
   * joined: the rows go on across them). */
  char csv[4200];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  if (s->segment_ns > 0 || s->segment_bytes > 0) {
    snprintf(csv, sizeof csv, "%s/joined_frames.csv", dir);
    join_segment_rows(dir, csv);
  }
  counters_check_camera(&r->st, csv);
}

static void print_status(const char *what, const struct pirec_camera_status *st)
{
  fprintf(stderr,
          "%s: captured %" PRIu64 " written %" PRIu64 " idle %" PRIu64 " drops %" PRIu64 " (ring %" PRIu64
          " encoder %" PRIu64 " device %" PRIu64 " sink %" PRIu64 ") restarts %" PRIu64
          " capture ns p50 %" PRId64 " p99 %" PRId64 " p999 %" PRId64 " max %" PRId64 "\n",
          what, st->frames_captured, st->frames_written, st->frames_idle, st->drops_total,
          st->drops_ring_full, st->drops_encoder, st->drops_device, st->drops_sink, st->encoder_restarts,
          st->capture.p50_ns, st->capture.p99_ns, st->capture.p999_ns, st->capture.max_ns);
}

static void lavfi_settings(struct pirec_camera_settings *s, int w, int h, int fps)
{
  pirec_camera_settings_default(s);
  assert_int_equal(pirec_camera_settings_set_source(s, "lavfi:testsrc2"), 0);
  s->width = w;
  s->height = h;
  s->fps_num = fps;
  s->fps_den = 1;
  s->encoder_threads = 1;
}

/* ---- unit: parsing ---- */

static void test_settings_source(void **state)
{
  struct pirec_camera_settings s;
  pirec_camera_settings_default(&s);
  assert_int_equal(s.kind, PIREC_CAMERA_LAVFI);
  assert_string_equal(s.source, "testsrc2");
  assert_int_equal(pirec_camera_settings_set_source(&s, "v4l2:/dev/video2"), 0);
  assert_int_equal(s.kind, PIREC_CAMERA_V4L2);
  assert_string_equal(s.source, "/dev/video2");
  assert_int_equal(pirec_camera_settings_set_source(&s, "/dev/video0"), 0);
  assert_int_equal(s.kind, PIREC_CAMERA_V4L2);
  assert_int_equal(pirec_camera_settings_set_source(&s, "rpicam"), 0);
  assert_int_equal(s.kind, PIREC_CAMERA_RPICAM);
  assert_string_equal(s.source, "0");
  assert_int_equal(pirec_camera_settings_set_source(&s, "rpicam:1"), 0);
  assert_string_equal(s.source, "1");
  assert_int_equal(pirec_camera_settings_set_source(&s, "rtsp://10.0.0.2:8086/?camera=world"), 0);
  assert_int_equal(s.kind, PIREC_CAMERA_URL);
  assert_int_equal(pirec_camera_settings_set_source(&s, "clip.mp4"), 0);
  assert_int_equal(s.kind, PIREC_CAMERA_URL);
  assert_string_equal(s.source, "clip.mp4");
  assert_int_equal(pirec_camera_settings_set_source(&s, "lavfi:smptebars"), 0);
  assert_int_equal(s.kind, PIREC_CAMERA_LAVFI);
  assert_int_equal(pirec_camera_settings_set_source(&s, ""), -EINVAL);
  assert_int_equal(pirec_camera_settings_set_source(&s, "lavfi:"), -EINVAL);
}

static void test_rpicam_metadata_lines(void **state)
{
  int64_t ns = -1;
  assert_int_equal(pirec__rpicam_metadata_line("SensorTimestamp=1234567890123", 29, &ns),
                   PIREC__RPICAM_META_SENSOR_TS);
  assert_int_equal(ns, 1234567890123LL);
  assert_int_equal(pirec__rpicam_metadata_line("SensorTimestamp=9223372036854775807\n", 36, &ns),
                   PIREC__RPICAM_META_SENSOR_TS);
  assert_int_equal(ns, INT64_MAX);
  assert_int_equal(pirec__rpicam_metadata_line("", 0, &ns), PIREC__RPICAM_META_END);
  assert_int_equal(pirec__rpicam_metadata_line("\r\n", 2, &ns), PIREC__RPICAM_META_END);
  assert_int_equal(pirec__rpicam_metadata_line("ExposureTime=10000", 18, &ns), PIREC__RPICAM_META_OTHER);
  assert_int_equal(pirec__rpicam_metadata_line("ColourGains=[ 1.5, 2.0 ]", 24, &ns),
                   PIREC__RPICAM_META_OTHER);
  assert_int_equal(pirec__rpicam_metadata_line("SensorTimestampX=5", 18, &ns), PIREC__RPICAM_META_OTHER);
  assert_int_equal(pirec__rpicam_metadata_line("SensorTimestamp=", 16, &ns), -EINVAL);
  assert_int_equal(pirec__rpicam_metadata_line("SensorTimestamp=-5", 18, &ns), -EINVAL);
  assert_int_equal(pirec__rpicam_metadata_line("SensorTimestamp=12a", 19, &ns), -EINVAL);
  assert_int_equal(pirec__rpicam_metadata_line("SensorTimestamp=9223372036854775808", 35, &ns), -EINVAL);
}

/* Feeds bytes through the splitter in odd-sized pieces; returns frames out. */
static size_t split_all(struct pirec__camera_splitter *sp, const uint8_t *data, size_t len, size_t piece,
                        const uint8_t **frames, size_t *lens, uint8_t **copies, size_t max)
{
  size_t off = 0, n = 0;
  while (off < len) {
    size_t avail;
    uint8_t *space = pirec__camera_splitter_space(sp, &avail);
    assert_true(avail > 0);
    size_t k = len - off < piece ? len - off : piece;
    if (k > avail)
      k = avail;
    memcpy(space, data + off, k);
    pirec__camera_splitter_fill(sp, k);
    off += k;
    const uint8_t *f;
    size_t fl;
    while (n < max && pirec__camera_splitter_next(sp, &f, &fl)) {
      copies[n] = malloc(fl);
      memcpy(copies[n], f, fl);
      frames[n] = copies[n];
      lens[n++] = fl;
    }
  }
  return n;
}

static void test_splitter_size(void **state)
{
  struct pirec__camera_splitter sp;
  enum { FRAME = 1000, N = 37 };
  uint8_t *data = malloc(FRAME * N);
  for (size_t i = 0; i < FRAME * N; i++)
    data[i] = (uint8_t)(i / FRAME * 7 + i);
  assert_int_equal(pirec__camera_splitter_init(&sp, PIREC__CAMERA_SPLIT_SIZE, 0, 0), -EINVAL);
  assert_int_equal(pirec__camera_splitter_init(&sp, PIREC__CAMERA_SPLIT_SIZE, FRAME, 0), 0);
  const uint8_t *frames[N];
  size_t lens[N];
  uint8_t *copies[N];
  size_t n = split_all(&sp, data, FRAME * N, 333, frames, lens, copies, N);
  assert_int_equal(n, N);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(lens[i], FRAME);
    assert_memory_equal(frames[i], data + i * FRAME, FRAME);
    free(copies[i]);
  }
  pirec__camera_splitter_free(&sp);
  free(data);
}

/* Real JPEG images from libavcodec, with an APP segment that contains FF D9 and garbage between
 * images; every image must come out whole and byte-identical, the garbage skipped and counted. */
static void test_splitter_jpeg(void **state)
{
  enum { N = 6 };
  const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
  assert_non_null(codec);
  AVCodecContext *c = avcodec_alloc_context3(codec);
  c->width = 64;
  c->height = 48;
  c->pix_fmt = AV_PIX_FMT_YUVJ420P;
  c->time_base = (AVRational){1, 30};
  assert_int_equal(avcodec_open2(c, codec, NULL), 0);
  AVFrame *pic = av_frame_alloc();
  pic->width = 64;
  pic->height = 48;
  pic->format = AV_PIX_FMT_YUVJ420P;
  assert_int_equal(av_frame_get_buffer(pic, 0), 0);
  AVPacket *pkt = av_packet_alloc();

  static const uint8_t app1[] = {0xFF, 0xE1, 0x00, 0x08, 'x', 'y', 0xFF, 0xD9, 'z', 'w'};
  static const uint8_t junk[] = {0x11, 0xFF, 0xD9, 0x00, 0xFF};
  uint8_t *stream = malloc(1 << 20), *images[N];
  size_t len = 0, ilen[N];
  for (int i = 0; i < N; i++) {
    av_frame_make_writable(pic);
    for (int p = 0; p < 3; p++)
      for (int y = 0; y < (p ? 24 : 48); y++)
        for (int x = 0; x < (p ? 32 : 64); x++)
          pic->data[p][y * pic->linesize[p] + x] = (uint8_t)(x * 3 + y * 5 + i * 40 + p * 90);
    pic->pts = i;
    assert_int_equal(avcodec_send_frame(c, pic), 0);
    assert_int_equal(avcodec_receive_packet(c, pkt), 0);
    images[i] = malloc((size_t)pkt->size + sizeof app1);
    memcpy(images[i], pkt->data, 2);
    memcpy(images[i] + 2, app1, sizeof app1);
    memcpy(images[i] + 2 + sizeof app1, pkt->data + 2, (size_t)pkt->size - 2);
    ilen[i] = (size_t)pkt->size + sizeof app1;
    av_packet_unref(pkt);
    memcpy(stream + len, images[i], ilen[i]);
    len += ilen[i];
    if (i % 2 == 1) {
      memcpy(stream + len, junk, sizeof junk);
      len += sizeof junk;
    }
  }
  for (size_t piece = 1; piece <= 4097; piece = piece * 8 + 1) {
    struct pirec__camera_splitter sp;
    const uint8_t *frames[N];
    size_t lens[N];
    uint8_t *copies[N];
    assert_int_equal(pirec__camera_splitter_init(&sp, PIREC__CAMERA_SPLIT_JPEG, 0, 64 * 1024), 0);
    size_t n = split_all(&sp, stream, len, piece, frames, lens, copies, N);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++) {
      assert_int_equal(lens[i], ilen[i]);
      assert_memory_equal(frames[i], images[i], ilen[i]);
      free(copies[i]);
    }
    /* junk after images 1 and 3 (the one after 5 is still waiting for a following SOI) */
    assert_int_equal(pirec__camera_splitter_skipped(&sp), 2 * sizeof junk);
    pirec__camera_splitter_free(&sp);
  }
  for (int i = 0; i < N; i++)
    free(images[i]);
  free(stream);
  av_packet_free(&pkt);
  av_frame_free(&pic);
  avcodec_free_context(&c);
}

/* ---- unit: sources end to end ---- */

static void test_source_lavfi_paced(void **state)
{
  struct pirec_camera_settings s;
  struct pirec_camera_source *src;
  struct pirec_camera_format fmt;
  struct pirec_camera_frame f;
  char *msg = NULL;
  lavfi_settings(&s, 320, 240, 50);
  assert_int_equal(pirec_camera_source_open(&s, &src, &msg), 0);
  pirec_camera_source_format(src, &fmt);
  assert_int_equal(fmt.codec, PIREC_CAMERA_CODEC_RAW);
  assert_string_equal(fmt.pix_fmt, "yuv420p");
  assert_int_equal(fmt.frame_bytes, 320 * 240 * 3 / 2);
  assert_int_equal(fmt.fps_num, 50);
  int64_t first = 0;
  for (int i = 0; i < 26; i++) {
    assert_int_equal(pirec_camera_source_read(src, &f), 0);
    assert_int_equal(f.len, fmt.frame_bytes);
    assert_int_equal(f.device_ts_ns, (int64_t)i * 20000000);
    if (i == 0)
      first = f.arrival_mono_ns;
  }
  /* 25 intervals of 20 ms: paced like a camera, not as fast as lavfi renders */
  int64_t elapsed = f.arrival_mono_ns - first;
  fprintf(stderr, "lavfi 25 intervals at 50 fps took %.1f ms\n", elapsed / 1e6);
  assert_true(elapsed >= 499000000);
  assert_true(SLOW || elapsed < 900000000);
  pirec_camera_source_interrupt(src);
  assert_int_equal(pirec_camera_source_read(src, &f), -EINTR);
  pirec_camera_source_free(src);

  /* a missing device names itself */
  assert_int_equal(pirec_camera_settings_set_source(&s, "v4l2:/dev/video-nonexistent"), 0);
  assert_true(pirec_camera_source_open(&s, &src, &msg) < 0);
  assert_non_null(msg);
  assert_non_null(strstr(msg, "'/dev/video-nonexistent'"));
  free(msg);
}

static void rpicam_settings(struct pirec_camera_settings *s, const char *codec, const char *extra)
{
  pirec_camera_settings_default(s);
  assert_int_equal(pirec_camera_settings_set_source(s, "rpicam:0"), 0);
  snprintf(s->rpicam_program, sizeof s->rpicam_program, "%s", FAKE_RPICAM);
  snprintf(s->rpicam_args, sizeof s->rpicam_args, "%s", extra);
  snprintf(s->input_format, sizeof s->input_format, "%s", codec);
  s->width = 320;
  s->height = 240;
  s->fps_num = 30;
  s->fps_den = 1;
  s->encoder_threads = 1;
}

/* Records one trial of r->stop_at_ms from the rpicam stand-in (codec, its extra arguments) into
 * dir; the stop must succeed. */
static void run_rpicam(struct run *r, const char *dir, const char *label, const char *codec,
                       const char *extra)
{
  struct pirec_camera_settings s;
  rpicam_settings(&s, codec, extra);
  run_camera(r, &s, dir);
  print_status(label, &r->st);
  assert_int_equal(r->stop_err, 0);
}

/* yuv420 from the stand-in, frames 20..22 lost by the "sensor": the encoded MKV has one packet
 * per row, each row's device timestamp is its frame's SensorTimestamp from the metadata blocks
 * (CLOCK_BOOTTIME, to the nanosecond), and the lost frames show up exactly once as
 * dropped_before = 3 on the frame after them. */
static void test_rpicam_yuv420(void **state)
{
  char dir[300];
  struct run r = {.stop_at_ms = 2500};
  make_tmp(dir, sizeof dir, "rpicam-yuv");
  run_rpicam(&r, dir, "rpicam yuv420", "yuv420", "--skip 20,21,22 --chunk 7000");

  char csv[400], mkv[400];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(mkv, sizeof mkv, "%s/t001.mkv", dir);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  assert_true(n > 40);
  assert_int_equal(probe_packets(mkv, NULL), (long)n);
  uint64_t dropped = check_rows(rows, n, 1, 33333333);
  /* on the boot clock: taken by the stand-in within the last minute */
  struct timespec boot;
  clock_gettime(CLOCK_BOOTTIME, &boot);
  int64_t boot_now = (int64_t)boot.tv_sec * 1000000000 + boot.tv_nsec;
  assert_true(rows[0].dev > boot_now - 60000000000LL && rows[0].dev < boot_now);
  int found = 0;
  for (size_t i = 0; i < n; i++) {
    assert_true(rows[i].has_dev);
    assert_false(rows[i].has_offset);
    /* the first row is frame 0; frame k is exactly k * 10^12 / 30000 ns after it */
    if (rows[i].dev - rows[0].dev == 23000000000000LL / 30000) {
      assert_int_equal(rows[i].dropped, 3);
      found = 1;
    }
  }
  assert_true(found);
  assert_int_equal(r.st.drops_device, 3);
  assert_int_equal(dropped, r.st.drops_total);
  assert_decodes(mkv, NULL, (long)n);
  free(rows);
}

/* Metadata blocks without a SensorTimestamp (an rpicam-vid whose libcamera does not report one):
 * every frame is still recorded, with an empty device_ts_ns, and the pairing does not shift. */
static void test_rpicam_no_sensor_ts(void **state)
{
  char dir[300];
  struct run r = {.stop_at_ms = 1500};
  make_tmp(dir, sizeof dir, "rpicam-nots");
  run_rpicam(&r, dir, "rpicam no sensor ts", "yuv420", "--no-sensor-ts");
  char csv[400], mkv[400];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(mkv, sizeof mkv, "%s/t001.mkv", dir);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  assert_true(n > (SLOW ? 5 : 20));
  for (size_t i = 0; i < n; i++)
    assert_false(rows[i].has_dev);
  assert_int_equal(r.st.drops_total, 0);
  assert_int_equal(probe_packets(mkv, NULL), (long)n);
  free(rows);
}

/* MJPEG from the stand-in (APP segments holding FF D9, garbage between images, 1000-byte reads):
 * written as received, each row's offset and bytes cover exactly one JPEG in the file. */
/* Issue 22 item 6: a trial whose source never delivered a frame left a 0-byte video no reader
 * opens. Now the video is removed and the frames CSV (the header alone) stays. Raw (an MKV from
 * the encoder) and MJPEG (the stream as received). */
static void test_empty_trial(void **state)
{
  static const char *const codecs[] = {"yuv420", "mjpeg"};
  static const char *const videos[] = {"t001.mkv", "t001.mjpeg"};
  for (int i = 0; i < 2; i++) {
    char dir[300], path[400];
    struct run r = {.stop_at_ms = 1000};
    make_tmp(dir, sizeof dir, codecs[i]);
    run_rpicam(&r, dir, "empty trial", codecs[i], "--frames 0");
    assert_int_equal(r.st.frames_written, 0);
    snprintf(path, sizeof path, "%s/%s", dir, videos[i]);
    if (access(path, F_OK) == 0)
      fail_msg("'%s' is left although the trial recorded no frame", path);
    snprintf(path, sizeof path, "%s/t001_frames.csv", dir);
    struct row *rows;
    assert_int_equal(read_rows(path, &rows), 0);
    free(rows);
  }
}

static void test_rpicam_mjpeg(void **state)
{
  char dir[300];
  char snap[400];
  make_tmp(dir, sizeof dir, "rpicam-mjpeg");
  snprintf(snap, sizeof snap, "%s/snap.jpg", dir);
  struct run r = {.stop_at_ms = 2000, .snap_at_ms = 700, .snap_path = snap};
  run_rpicam(&r, dir, "rpicam mjpeg", "mjpeg", "--garbage --chunk 1000");
  /* the snapshot of an MJPEG source is the frame itself */
  assert_int_equal(r.snap_result, 1);
  assert_decodes(snap, NULL, 1);

  char csv[400], video[400];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(video, sizeof video, "%s/t001.mjpeg", dir);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  assert_true(n > (SLOW ? 5 : 30));
  check_rows(rows, n, 1, 33333333);
  FILE *f = fopen(video, "rb");
  assert_non_null(f);
  struct stat stt;
  assert_int_equal(stat(video, &stt), 0);
  uint8_t *data = malloc((size_t)stt.st_size);
  assert_int_equal(fread(data, 1, (size_t)stt.st_size, f), (size_t)stt.st_size);
  fclose(f);
  int64_t expect = 0;
  for (size_t i = 0; i < n; i++) {
    assert_true(rows[i].has_offset);
    assert_int_equal(rows[i].offset, expect);
    assert_int_equal(data[rows[i].offset], 0xFF);
    assert_int_equal(data[rows[i].offset + 1], 0xD8);
    assert_int_equal(data[rows[i].offset + (int64_t)rows[i].bytes - 2], 0xFF);
    assert_int_equal(data[rows[i].offset + (int64_t)rows[i].bytes - 1], 0xD9);
    expect += (int64_t)rows[i].bytes;
  }
  assert_int_equal(expect, stt.st_size);
  free(data);
  assert_int_equal(probe_packets(video, "mjpeg"), (long)n);
  assert_decodes(video, "mjpeg", (long)n);
  free(rows);
}

/* The rpicam child exits (here after 30 frames, as rpicam-vid does when the camera goes away): the
 * capture thread reports it, starts a new child with backoff and goes on; the time without frames
 * is counted as dropped, measured on the boot clock that every rpicam child's SensorTimestamp
 * shares (check_rows holds each row's dropped_before to exactly that). */
/* The rpicam child exits (a transient failure, reported as such) and its program is gone when the
 * capture thread reopens the source: that is a "device missing" failure (ENOENT), reported once
 * with its class however often it is retried, and shown in the status; the trial goes on. */
static void test_rpicam_program_gone(void **state)
{
  char dir[300], link[400];
  struct run r = {.stop_at_ms = 2000};
  struct pirec_camera_settings s;
  make_tmp(dir, sizeof dir, "rpicam-gone");
  assert_int_equal(mkdir(dir, 0755), 0);
  snprintf(link, sizeof link, "%s/rpicam-vid", dir);
  assert_int_equal(symlink(FAKE_RPICAM, link), 0);
  rpicam_settings(&s, "yuv420", "--frames 15");
  snprintf(s.rpicam_program, sizeof s.rpicam_program, "%s", link);
  r.unlink_after_start = link;
  run_camera(&r, &s, dir);
  print_status("rpicam program gone", &r.st);
  assert_int_equal(r.stop_err, 0);
  assert_int_equal(r.events[PIREC_CAMERA_EVENT_SOURCE_ERROR], 2); /* transient, then device missing */
  assert_int_equal(r.events[PIREC_CAMERA_EVENT_SOURCE_RECONNECTED], 0);
  assert_non_null(strstr(r.source_error, "(device missing)"));
  assert_true(r.st.source_errors >= 1);
  assert_int_equal(r.st.source_failure, PIREC_CAMERA_FAILURE_DEVICE_MISSING);
  assert_string_equal(pirec_camera_failure_str(r.st.source_failure), "device missing");
}

static void test_rpicam_child_exit(void **state)
{
  char dir[300];
  struct run r = {.stop_at_ms = 3000};
  make_tmp(dir, sizeof dir, "rpicam-exit");
  run_rpicam(&r, dir, "rpicam exit", "yuv420", "--frames 30");
  assert_true(r.events[PIREC_CAMERA_EVENT_SOURCE_ERROR] >= 1);
  assert_true(r.events[PIREC_CAMERA_EVENT_SOURCE_RECONNECTED] >= 1);
  assert_true(r.st.source_errors >= 1);

  char csv[400], mkv[400];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(mkv, sizeof mkv, "%s/t001.mkv", dir);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  assert_true(n > (SLOW ? 10 : 40));
  assert_int_equal(probe_packets(mkv, NULL), (long)n);
  check_rows(rows, n, 1, 33333333);
  int restarts = 0;
  for (size_t i = 1; i < n; i++)
    if (rows[i].dev - rows[i - 1].dev > 50000000) { /* more than 1.5 frames: the new child */
      restarts++;
      fprintf(stderr, "rpicam exit: new child at row %zu, %" PRIu64 " frames counted lost\n", i,
              rows[i].dropped);
      assert_true(rows[i].dropped >= 1); /* the respawn takes longer than a frame interval */
    }
  assert_true(restarts >= 1);
  assert_true(r.st.drops_device >= 1);
  free(rows);
}

/* A missing rpicam-vid is an error that names the program. */
static void test_rpicam_missing(void **state)
{
  struct pirec_camera_settings s;
  struct pirec_camera_source *src;
  char *msg = NULL;
  rpicam_settings(&s, "yuv420", "");
  snprintf(s.rpicam_program, sizeof s.rpicam_program, "rpicam-vid-not-installed");
  assert_int_equal(pirec_camera_source_open(&s, &src, &msg), -ENOENT);
  assert_non_null(msg);
  assert_non_null(strstr(msg, "'rpicam-vid-not-installed'"));
  free(msg);
  snprintf(s.input_format, sizeof s.input_format, "h264");
  assert_int_equal(pirec_camera_source_open(&s, &src, &msg), -EINVAL);
  free(msg);
}

/* An MP4 file with H.264 replayed at its own rate (ffmpeg -re semantics): written as an Annex B
 * elementary stream without re-encoding; rows == frames, offsets point at start codes, and the
 * replay took the file's duration. */
static void test_url_file_replay(void **state)
{
  char dir[300], clip[400], cmd[1200];
  make_tmp(dir, sizeof dir, "url");
  mkdir(dir, 0755);
  snprintf(clip, sizeof clip, "%s/clip.mp4", dir);
  snprintf(cmd, sizeof cmd,
           "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=320x240:rate=25 -frames:v 40 "
           "-c:v libx264 -preset ultrafast -bf 0 -g 10 -y '%s'",
           clip);
  assert_int_equal(system(cmd), 0);

  struct pirec_camera_settings s;
  pirec_camera_settings_default(&s);
  assert_int_equal(pirec_camera_settings_set_source(&s, clip), 0);
  s.width = s.height = 0;
  s.fps_num = 0;
  char out[400];
  snprintf(out, sizeof out, "%s/rec", dir);
  struct run r = {.stop_at_ms = 2600};
  run_camera(&r, &s, out);
  print_status("url replay", &r.st);
  assert_true(r.events[PIREC_CAMERA_EVENT_SOURCE_EOF] == 1);

  char csv[500], video[500];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", out);
  snprintf(video, sizeof video, "%s/t001.h264", out);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  assert_int_equal(n, 40);
  check_rows(rows, n, 1, 40000000);
  /* paced: 39 intervals of 40 ms */
  int64_t span = rows[n - 1].mono - rows[0].mono;
  fprintf(stderr, "replay of 1.56 s took %.3f s\n", span / 1e9);
  assert_true(span > 1500000000LL && span < 2300000000LL);
  assert_int_equal(rows[0].dev, 0);
  assert_int_equal(rows[39].dev, 39 * 40000000LL);
  assert_int_equal(probe_packets(video, "h264"), 40);
  FILE *f = fopen(video, "rb");
  uint8_t sc[4];
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(fseek(f, rows[i].offset, SEEK_SET), 0);
    assert_int_equal(fread(sc, 1, 4, f), 4);
    assert_true((sc[0] == 0 && sc[1] == 0 && sc[2] == 1) ||
                (sc[0] == 0 && sc[1] == 0 && sc[2] == 0 && sc[3] == 1));
  }
  fclose(f);
  assert_decodes(video, "h264", (long)n);
  free(rows);
}

/* Issue 24 item 3 for a camera whose source sends H.264 with a keyframe every second: a trial
 * started mid-GOP (pre_trigger 0) starts at the keyframe before it, and with pre_trigger = 1 s at
 * the keyframe at or before T - 1 s; those rows come first, marked before_start, with the times
 * they were captured at; packets = rows, every packet decodes, no frame is dropped. */
/* A camera whose source is a clip in tmp dir `name` of `frames` H.264 frames at 25 fps with a
 * keyframe every second (25 frames), stored as received. */
static void keyed_clip_camera(const char *name, int frames, char *dir, size_t cap,
                              struct pirec_camera_settings *s)
{
  char clip[400], cmd[1200];
  make_tmp(dir, cap, name);
  mkdir(dir, 0755);
  snprintf(clip, sizeof clip, "%s/clip.mp4", dir);
  snprintf(cmd, sizeof cmd,
           "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=320x240:rate=25 -frames:v %d "
           "-c:v libx264 -preset ultrafast -bf 0 -g 25 -keyint_min 25 -sc_threshold 0 -y '%s'",
           frames, clip);
  assert_int_equal(system(cmd), 0);
  pirec_camera_settings_default(s);
  assert_int_equal(pirec_camera_settings_set_source(s, clip), 0);
  s->width = s->height = 0;
  s->fps_num = 0;
}

static void url_pre_trigger(int64_t pre_ns)
{
  char dir[300];
  struct pirec_camera_settings s;
  keyed_clip_camera(pre_ns ? "urlpre" : "urlgop", 150, dir, sizeof dir, &s);
  s.pre_trigger_ns = pre_ns;
  char out[400];
  snprintf(out, sizeof out, "%s/rec", dir);
  struct run r = {.stop_at_ms = 1500, .late_ms = 2500};
  run_camera(&r, &s, out);
  print_status(pre_ns ? "url pre-trigger" : "url gop", &r.st);
  char csv[500], video[500];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", out);
  snprintf(video, sizeof video, "%s/t001.h264", out);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  size_t before = 0;
  while (before < n && rows[before].before)
    before++;
  for (size_t i = before; i < n; i++)
    assert_int_equal(rows[i].before, 0);
  fprintf(stderr, "%zu rows, %zu before the start, first at T%+.3f s\n", n, before,
          (rows[0].mono - r.start_mono) / 1e9);
  assert_true(before > 0 && before < n);
  assert_int_equal(r.st.frames_before_start, before);
  assert_true(rows[before - 1].mono < r.start_mono);
  /* from the keyframe at or before T - N: device times are the clip's, keyframes every 1 s */
  assert_int_equal(rows[0].dev % 1000000000LL, 0);
  assert_true(rows[0].mono <= r.start_mono - pre_ns);
  assert_true(rows[0].mono >= r.start_mono - pre_ns - 1200000000LL);
  assert_int_equal(check_rows(rows, n, 1, 40000000), 0); /* one frame after another, none lost */
  assert_int_equal(probe_packets(video, "h264"), (long)n);
  assert_decodes(video, "h264", (long)n);
  assert_true(r.st.backlog_bytes > 0 && r.st.backlog_high_water <= r.st.backlog_bytes);
  free(rows);
}

static void test_url_gop_start(void **state)
{
  url_pre_trigger(0);
}

static void test_url_pre_trigger(void **state)
{
  url_pre_trigger(1000000000LL);
}

/* A live network stream (MPEG-TS over UDP from an ffmpeg sender, as an IP camera would send):
 * read as it comes (not paced by the recorder), H.264 stored as received with offsets. */
static void test_url_network_live(void **state)
{
  char dir[300], cmd[1200];
  make_tmp(dir, sizeof dir, "udp");
  int port = 20000 + (int)(getpid() % 20000);
  snprintf(cmd, sizeof cmd,
           "exec ffmpeg -nostdin -v error -re -f lavfi -i testsrc2=size=320x240:rate=25 -t 6 "
           "-c:v libx264 -preset ultrafast -tune zerolatency -bf 0 -g 5 -f mpegts "
           "'udp://127.0.0.1:%d?pkt_size=1316'",
           port);
  pid_t sender = fork();
  assert_true(sender >= 0);
  if (sender == 0) {
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  struct pirec_camera_settings s;
  pirec_camera_settings_default(&s);
  char url[128];
  snprintf(url, sizeof url, "udp://127.0.0.1:%d?buffer_size=4194304&timeout=5000000", port);
  assert_int_equal(pirec_camera_settings_set_source(&s, url), 0);
  assert_int_equal(s.kind, PIREC_CAMERA_URL);
  s.width = s.height = 0;
  s.fps_num = 0;
  struct run r = {.stop_at_ms = 2500};
  run_camera(&r, &s, dir);
  print_status("udp live", &r.st);
  kill(sender, SIGTERM);
  int status;
  waitpid(sender, &status, 0);
  assert_int_equal(r.stop_err, 0);

  char csv[400], video[400];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(video, sizeof video, "%s/t001.h264", dir);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  assert_true(n > (SLOW ? 5 : 30));
  check_rows(rows, n, 1, 40000000);
  /* live: frames arrive at the sender's pace, about 25 per second of wall time (the first ones
   * come in a burst: libavformat held them while probing the stream) */
  double rate = (double)(n - 11) * 1e9 / (double)(rows[n - 1].mono - rows[10].mono);
  fprintf(stderr, "udp live: %zu frames at %.1f fps\n", n, rate);
  assert_true(SLOW || (rate > 15 && rate < 40));
  assert_int_equal(probe_packets(video, "h264"), (long)n);
  free(rows);
}

/* Waits up to 5 s for a TCP socket listening on 127.0.0.1:port (read from /proc/net/tcp, so the
 * listener's single accept is not used up by the check). */
static int wait_listening(int port)
{
  char want[32];
  snprintf(want, sizeof want, ":%04X 00000000:0000 0A", port);
  for (int i = 0; i < 500; i++) {
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[256];
    int found = 0;
    while (f && !found && fgets(line, sizeof line, f))
      found = strstr(line, want) != NULL;
    if (f)
      fclose(f);
    if (found)
      return 1;
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
  }
  return 0;
}

/* A network camera that closes its connection (its server restarting) is reconnected, not taken
 * for a file that ended: an ffmpeg server streams 3 s over TCP, exits, and a new one listens 1 s
 * later. Frames resume, the gap shows in dropped_before, and the status counts the reconnect. */
static void test_url_network_reconnect(void **state)
{
  char dir[300], cmd[1500];
  make_tmp(dir, sizeof dir, "tcpre");
  int port = 20000 + (int)((getpid() + 7919) % 20000);
  const char *enc = "ffmpeg -nostdin -v error -re -f lavfi -i testsrc2=size=320x240:rate=25 "
                    "-c:v libx264 -preset ultrafast -tune zerolatency -bf 0 -g 5 -f mpegts";
  snprintf(cmd, sizeof cmd,
           "%s -t 3 'tcp://127.0.0.1:%d?listen=1'; sleep 1; exec %s -t 30 'tcp://127.0.0.1:%d?listen=1'", enc,
           port, enc, port);
  pid_t sender = fork();
  assert_true(sender >= 0);
  if (sender == 0) {
    setpgid(0, 0); /* both ffmpegs die with the group */
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  setpgid(sender, sender);
  assert_true(wait_listening(port));
  struct pirec_camera_settings s;
  pirec_camera_settings_default(&s);
  char url[128];
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
  assert_int_equal(pirec_camera_settings_set_source(&s, url), 0);
  s.width = s.height = 0;
  s.fps_num = 0;
  struct run r = {.stop_at_ms = 9000};
  run_camera(&r, &s, dir);
  print_status("tcp reconnect", &r.st);
  kill(-sender, SIGTERM);
  int status;
  waitpid(sender, &status, 0);
  assert_int_equal(r.stop_err, 0);
  assert_int_equal(r.events[PIREC_CAMERA_EVENT_SOURCE_EOF], 0);
  assert_true(r.events[PIREC_CAMERA_EVENT_SOURCE_RECONNECTED] >= 1);
  assert_true(r.st.reconnects >= 1);
  assert_true(r.st.source_errors >= 1);

  char csv[400], video[400];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(video, sizeof video, "%s/t001.h264", dir);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  check_rows(rows, n, 1, 40000000);
  size_t at = 0; /* the row after the longest pause */
  int64_t gap_ns = 0;
  for (size_t i = 1; i < n; i++)
    if (rows[i].mono - rows[i - 1].mono > gap_ns)
      at = i, gap_ns = rows[i].mono - rows[i - 1].mono;
  assert_true(at > 0);
  fprintf(stderr, "tcp reconnect: %zu rows, %zu after a gap of %.0f ms, dropped_before %" PRIu64 "\n", n,
          n - at, gap_ns / 1e6, rows[at].dropped);
  assert_true(gap_ns > 1000000000);      /* the server was away for 1 s at least */
  assert_true(n - at > (SLOW ? 5 : 25)); /* frames resumed and rows continued */
  assert_true(rows[at].dropped >= (uint64_t)(gap_ns / 40000000) / 2); /* the gap, at 25 fps */
  assert_int_equal(probe_packets(video, "h264"), (long)n);
  free(rows);
}

static void flag_closed(struct pirec_camera *cam, void *user)
{
  *(int *)user = 1;
}

/* A snapshot of a raw source is a real JPEG of the frame size. */
static void test_snapshot(void **state)
{
  char dir[300], path[400], cmd[600];
  struct pirec_camera_settings s;
  make_tmp(dir, sizeof dir, "snapshot");
  snprintf(path, sizeof path, "%s/snap.jpg", dir);
  lavfi_settings(&s, 320, 240, 30);
  struct run r = {.stop_at_ms = 1500, .snap_at_ms = 500, .snap_path = path};
  run_camera(&r, &s, dir);
  assert_int_equal(r.snap_result, 1);
  snprintf(cmd, sizeof cmd, "ffprobe -v error -show_entries stream=codec_name,width,height -of csv=p=0 '%s'",
           path);
  int st;
  char *out = run_capture(cmd, &st);
  assert_int_equal(st, 0);
  assert_string_equal(out, "mjpeg,320,240\n");
  free(out);

  /* a snapshot that can get no frame (held) ends with -ECANCELED at close, and close completes */
  struct run r2 = {0};
  int closed = 0;
  assert_int_equal(uv_loop_init(&r2.loop), 0);
  assert_int_equal(pirec_camera_new(&r2.loop, &s, NULL, NULL, &r2.cam), 0);
  assert_int_equal(pirec_camera_start(r2.cam), 0);
  pirec__camera_hold(r2.cam, 1);
  assert_int_equal(pirec_camera_snapshot(r2.cam, path, snap_cb, &r2), 0);
  assert_int_equal(pirec_camera_snapshot(r2.cam, path, snap_cb, &r2), -EAGAIN);
  uv_run(&r2.loop, UV_RUN_NOWAIT);
  pirec_camera_close(r2.cam, flag_closed, &closed);
  uv_run(&r2.loop, UV_RUN_DEFAULT);
  assert_int_equal(closed, 1);
  assert_int_equal(r2.snap_result, -ECANCELED);
  assert_int_equal(uv_loop_close(&r2.loop), 0);
}

/* Two cameras on one loop (as two [camera.NAME] sections in one process would be): each its own
 * capture thread, ring, encoder and files, both complete. */
static void test_two_cameras(void **state)
{
  char dir_a[300], dir_b[300];
  struct pirec_camera_settings sa, sb;
  struct pirec_camera *a, *b;
  uv_loop_t loop;
  make_tmp(dir_a, sizeof dir_a, "two/cam-a");
  make_tmp(dir_b, sizeof dir_b, "two/cam-b");
  lavfi_settings(&sa, 320, 240, 30);
  lavfi_settings(&sb, 256, 144, 25);
  snprintf(sa.name, sizeof sa.name, "cam-a");
  snprintf(sb.name, sizeof sb.name, "cam-b");
  assert_int_equal(pirec_camera_settings_set_source(&sb, "lavfi:smptebars"), 0);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(pirec_camera_new(&loop, &sa, NULL, NULL, &a), 0);
  assert_int_equal(pirec_camera_new(&loop, &sb, NULL, NULL, &b), 0);
  assert_int_equal(pirec_camera_start(a), 0);
  assert_int_equal(pirec_camera_start(b), 0);
  assert_int_equal(pirec_camera_trial_start(a, dir_a, 3, 0), 0);
  assert_int_equal(pirec_camera_trial_start(b, dir_b, 3, 0), 0);
  int64_t end = pirec_clock_mono_ns() + 2000000000;
  while (pirec_clock_mono_ns() < end)
    uv_run(&loop, UV_RUN_ONCE);
  int stopped = 0;
  assert_int_equal(pirec_camera_trial_stop(a, NULL, NULL), 0);
  assert_int_equal(pirec_camera_trial_stop(b, NULL, NULL), 0);
  while (pirec_camera_recording(a) || pirec_camera_recording(b))
    uv_run(&loop, UV_RUN_ONCE);
  pirec_camera_close(a, NULL, NULL);
  pirec_camera_close(b, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
  const char *dirs[2] = {dir_a, dir_b};
  int64_t periods[2] = {33333333, 40000000};
  for (int i = 0; i < 2; i++) {
    char csv[400], mkv[400];
    snprintf(csv, sizeof csv, "%s/t003_frames.csv", dirs[i]);
    snprintf(mkv, sizeof mkv, "%s/t003.mkv", dirs[i]);
    struct row *rows;
    size_t n = read_rows(csv, &rows);
    assert_true(n > (SLOW ? 5 : 30));
    check_rows(rows, n, 3, periods[i]);
    assert_int_equal(probe_packets(mkv, NULL), (long)n);
    free(rows);
    stopped++;
  }
  assert_int_equal(stopped, 2);
}

/* The disk refuses the video (RLIMIT_FSIZE: EFBIG) mid-recording: the sink reports it once as an
 * event, the capture thread keeps delivering frames, the stop reports the error, and the file keeps
 * every frame written before the limit. Runs in a child process because the limit is per process
 * (plain checks there, the exit code carries the verdict). */
static int efbig_child(const char *dir)
{
  struct pirec_camera_settings s;
  rpicam_settings(&s, "mjpeg", "");
  s.width = 640;
  s.height = 480;
  struct run r = {.stop_at_ms = 2500};
  run_camera(&r, &s, dir);
  print_status("efbig", &r.st);
  if (r.stop_err != -EFBIG)
    return 11;
  if (r.events[PIREC_CAMERA_EVENT_WRITE_ERROR] != 1)
    return 12;
  if (r.st.frames_captured <= r.st.frames_written) /* frames kept coming after the file stopped */
    return 13;
  if (r.st.drops_sink == 0)
    return 14;
  return 0;
}

static void test_write_error(void **state)
{
  char dir[300];
  make_tmp(dir, sizeof dir, "efbig");
  /* exec, not just fork: the parent has threads (libuv's pool), and the child starts its own */
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    struct rlimit rl = {.rlim_cur = 150000, .rlim_max = RLIM_INFINITY};
    signal(SIGXFSZ, SIG_IGN);
    if (setrlimit(RLIMIT_FSIZE, &rl) < 0)
      _exit(10);
    execl("/proc/self/exe", "test-camera", "efbig-child", dir, (char *)NULL);
    _exit(127);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  char video[400];
  snprintf(video, sizeof video, "%s/t001.mjpeg", dir);
  struct stat st;
  assert_int_equal(stat(video, &st), 0);
  assert_true(st.st_size > 50000 && st.st_size <= 150000);
  /* whole images up to the cut decode; the rows for them point at them */
  long frames = probe_packets(video, "mjpeg");
  fprintf(stderr, "efbig: %lld bytes kept, %ld images\n", (long long)st.st_size, frames);
  assert_true(frames > 3);
}

/* ---- segments (issue 24) ---- */

/* Segment k of trial 1 in dir: its rows (malloc'd in *rows) and the video's path. -1: no such file. */
static long segment_rows(const char *dir, int k, const char *ext, struct row **rows, char *video, size_t cap)
{
  char csv[4200];
  snprintf(csv, sizeof csv, "%s/t001_s%03d_frames.csv", dir, k);
  snprintf(video, cap, "%s/t001_s%03d.%s", dir, k, ext);
  if (access(csv, F_OK) != 0)
    return -1;
  return (long)read_rows(csv, rows);
}

/* Each segment whole: packets = rows, every picture decodes, its first frame starts a GOP (for
 * the clip: a device time on a whole second); returns the number of segments and every row, in
 * order, in *all. */
static int check_segments(const char *dir, const char *ext, int64_t key_ns, struct row **all, size_t *n_all)
{
  int k = 1;
  *all = NULL;
  *n_all = 0;
  for (;; k++) {
    struct row *rows;
    char video[4200];
    long n = segment_rows(dir, k, ext, &rows, video, sizeof video);
    if (n < 0)
      break;
    fprintf(stderr, "segment %d: %ld rows, first frame %" PRId64 "\n", k, n, n ? rows[0].frame : -1);
    assert_true(n > 0);
    assert_int_equal(probe_packets(video, strcmp(ext, "mkv") ? ext : NULL), n);
    assert_decodes(video, strcmp(ext, "mkv") ? ext : NULL, n);
    if (!strcmp(ext, "mkv"))
      assert_int_equal(mkv_sealed(video), 1);
    if (key_ns > 0)
      assert_int_equal(rows[0].dev % key_ns, 0);
    *all = realloc(*all, (*n_all + (size_t)n) * sizeof **all);
    memcpy(*all + *n_all, rows, (size_t)n * sizeof *rows);
    *n_all += (size_t)n;
    free(rows);
  }
  return k - 1;
}

/* A clip with a keyframe every second, 1 s segments: the trial's files split at keyframes into
 * t001_s001.h264 ..., the rows go on across them (frame, seq, device time: none repeated or
 * missing at a join, since the clip is paced and nothing is lost), packets = rows per file, and no
 * t001.h264 is written. */
static void test_segments_h264(void **state)
{
  char dir[300], out[400];
  struct pirec_camera_settings s;
  keyed_clip_camera("seg264", 300, dir, sizeof dir, &s);
  s.segment_ns = 1000000000LL;
  snprintf(out, sizeof out, "%s/rec", dir);
  struct run r = {.stop_at_ms = 4500};
  run_camera(&r, &s, out);
  print_status("segments h264", &r.st);
  assert_int_equal(r.stop_err, 0);
  struct row *all;
  size_t n;
  int segs = check_segments(out, "h264", 1000000000LL, &all, &n);
  assert_true(segs >= 3);
  assert_int_equal(r.events[PIREC_CAMERA_EVENT_SEGMENT], segs - 1);
  assert_int_equal(check_rows(all, n, 1, 40000000), 0);
  assert_int_equal(r.st.frames_written, n);
  char whole[500];
  snprintf(whole, sizeof whole, "%s/t001.h264", out);
  assert_int_not_equal(access(whole, F_OK), 0);
  free(all);
}

/* Raw frames encoded per segment: each file a sealed MKV that starts with a keyframe (its own
 * encoder), the rows continuous across the files, the counters exact over all of them. */
static void test_segments_raw(void **state)
{
  char dir[300];
  make_tmp(dir, sizeof dir, "segraw");
  struct pirec_camera_settings s;
  lavfi_settings(&s, 320, 240, 30);
  s.segment_ns = 1000000000LL;
  struct run r = {.stop_at_ms = 3600};
  run_camera(&r, &s, dir);
  print_status("segments raw", &r.st);
  assert_int_equal(r.stop_err, 0);
  struct row *all;
  size_t n;
  int segs = check_segments(dir, "mkv", 0, &all, &n);
  assert_true(segs >= 3);
  assert_int_equal(r.events[PIREC_CAMERA_EVENT_SEGMENT], segs - 1);
  check_rows(all, n, 1, 33333333);
  assert_int_equal(r.st.frames_written, n);
  free(all);
}

/* The recorder SIGKILLed while writing its third segment: the first two are whole (sealed, packets
 * = rows, every picture decodes). */
static int segment_child(const char *dir)
{
  struct pirec_camera_settings s;
  lavfi_settings(&s, 320, 240, 30);
  s.segment_ns = 700000000LL;
  struct run r = {.stop_at_ms = 60000};
  run_camera(&r, &s, dir);
  return 1; /* never reached: killed before */
}

static void test_segments_kill(void **state)
{
  char dir[300], third[400];
  make_tmp(dir, sizeof dir, "segkill");
  snprintf(third, sizeof third, "%s/t001_s003_frames.csv", dir);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    setpgid(0, 0); /* its encoder goes with it */
    execl("/proc/self/exe", "test-camera", "segment-child", dir, (char *)NULL);
    _exit(127);
  }
  setpgid(pid, pid);
  for (int i = 0; i < 600 && access(third, F_OK) != 0; i++)
    usleep(50000);
  assert_int_equal(access(third, F_OK), 0);
  usleep(300000); /* mid-segment: some of its frames are written */
  assert_int_equal(kill(-pid, SIGKILL), 0);
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFSIGNALED(status));
  uint64_t next = 0;
  for (int k = 1; k <= 2; k++) {
    struct row *rows;
    char video[4200];
    long n = segment_rows(dir, k, "mkv", &rows, video, sizeof video);
    assert_true(n > 0);
    assert_int_equal(probe_packets(video, NULL), n);
    assert_decodes(video, NULL, n);
    assert_int_equal(mkv_sealed(video), 1);
    assert_int_equal(rows[0].frame, (int64_t)next); /* the second goes on where the first ended */
    next += (uint64_t)n;
    free(rows);
  }
}

/* ---- the executable under the controller's protocol ---- */

struct child {
  pid_t pid;
  int in, out;
  char buf[65536];
  size_t len;
};

static void child_start(struct child *c, const char *const *argv)
{
  int to[2], from[2];
  assert_int_equal(pipe2(to, O_CLOEXEC), 0);
  assert_int_equal(pipe2(from, O_CLOEXEC), 0);
  c->pid = fork();
  assert_true(c->pid >= 0);
  if (c->pid == 0) {
    dup2(to[0], 0);
    dup2(from[1], 1);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(to[0]);
  close(from[1]);
  c->in = to[1];
  c->out = from[0];
  c->len = 0;
}

/* The next line from the child's stdout (waits up to timeout_ms). */
static char *child_line(struct child *c, int timeout_ms)
{
  int64_t end = pirec_clock_mono_ns() + (int64_t)timeout_ms * 1000000;
  for (;;) {
    char *nl = memchr(c->buf, '\n', c->len);
    if (nl) {
      size_t n = (size_t)(nl - c->buf);
      char *line = strndup(c->buf, n);
      memmove(c->buf, nl + 1, c->len - n - 1);
      c->len -= n + 1;
      return line;
    }
    int64_t left = end - pirec_clock_mono_ns();
    if (left <= 0)
      fail_msg("no line from pirec-camera within %d ms", timeout_ms);
    struct pollfd p = {.fd = c->out, .events = POLLIN};
    poll(&p, 1, (int)(left / 1000000) + 1);
    ssize_t got = read(c->out, c->buf + c->len, sizeof c->buf - c->len);
    if (got == 0)
      fail_msg("pirec-camera closed stdout");
    if (got > 0)
      c->len += (size_t)got;
  }
}

static void child_send(struct child *c, const char *line)
{
  size_t n = strlen(line);
  assert_int_equal(write(c->in, line, n), (ssize_t)n);
}

/* Skips event lines; returns the next reply line. */
static char *child_reply(struct child *c, int timeout_ms)
{
  for (;;) {
    char *line = child_line(c, timeout_ms);
    if (!strstr(line, "\"event\""))
      return line;
    fprintf(stderr, "event line: %s\n", line);
    free(line);
  }
}

static void test_protocol(void **state)
{
  char session[300], cmd[600], csv[400], mkv[400];
  make_tmp(session, sizeof session, "session");
  assert_int_equal(mkdir(session, 0755), 0);
  const char *argv[] = {PIREC_CAMERA_BIN, "--protocol", "--name", "front", "--size", "320x240", NULL};
  struct child c;
  child_start(&c, argv);
  char *line = child_reply(&c, 15000);
  assert_non_null(strstr(line, "\"reply\":\"ready\""));
  assert_non_null(strstr(line, "\"module\":\"front\""));
  free(line);

  snprintf(cmd, sizeof cmd,
           "{\"id\":1,\"cmd\":\"start\",\"session_dir\":\"%s\",\"trial\":1,\"label\":\"\"}\n", session);
  child_send(&c, cmd);
  line = child_reply(&c, 5000);
  assert_non_null(strstr(line, "\"reply\":\"started\""));
  free(line);
  usleep(1500000);
  child_send(&c, "{\"id\":2,\"cmd\":\"status\"}\n");
  line = child_reply(&c, 5000);
  fprintf(stderr, "status: %s\n", line);
  assert_non_null(strstr(line, "\"reply\":\"status\""));
  assert_non_null(strstr(line, "\"frames_written\":"));
  assert_non_null(strstr(line, "\"encoder\":\"running\""));
  assert_non_null(strstr(line, "\"capture_p50_ns\":"));
  assert_non_null(strstr(line, "\"capture_p999_ns\":"));
  assert_non_null(strstr(line, "\"last_error\":null"));
  char *pid = strstr(line, "\"encoder_pid\":");
  assert_non_null(pid);
  assert_true(strtol(pid + strlen("\"encoder_pid\":"), NULL, 10) > 1);
  assert_non_null(strstr(line, "\"format\":{"));
  assert_non_null(strstr(line, "\"codec\":\"raw\""));
  assert_non_null(strstr(line, "\"width\":320"));
  char *fw = strstr(line, "\"frames_written\":");
  assert_true(strtol(fw + strlen("\"frames_written\":"), NULL, 10) > 10);
  free(line);
  child_send(&c, "{\"id\":3,\"cmd\":\"stop\"}\n");
  line = child_reply(&c, 15000);
  assert_non_null(strstr(line, "\"reply\":\"stopped\""));
  free(line);
  /* complete as soon as "stopped" is out */
  snprintf(csv, sizeof csv, "%s/front/t001_frames.csv", session);
  snprintf(mkv, sizeof mkv, "%s/front/t001.mkv", session);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  assert_true(n > 20);
  check_rows(rows, n, 1, 33333333);
  assert_int_equal(probe_packets(mkv, NULL), (long)n);
  free(rows);

  /* the trial after a crash gets new file names; end of stdin finishes it and exits 0 */
  snprintf(cmd, sizeof cmd,
           "{\"id\":4,\"cmd\":\"start\",\"session_dir\":\"%s\",\"trial\":2,\"label\":\"x\",\"part\":1}\n",
           session);
  child_send(&c, cmd);
  line = child_reply(&c, 5000);
  assert_non_null(strstr(line, "\"reply\":\"started\""));
  free(line);
  usleep(1000000);
  close(c.in);
  int status;
  assert_int_equal(waitpid(c.pid, &status, 0), c.pid);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  close(c.out);
  snprintf(csv, sizeof csv, "%s/front/t002_p1_frames.csv", session);
  snprintf(mkv, sizeof mkv, "%s/front/t002_p1.mkv", session);
  n = read_rows(csv, &rows);
  assert_true(n > 10);
  check_rows(rows, n, 2, 33333333);
  assert_int_equal(probe_packets(mkv, NULL), (long)n);
  assert_int_equal(mkv_sealed(mkv), 1);
  free(rows);

  /* SIGKILLed mid-trial: the MKV stays unsealed (how remux tells a cut file) and readable to its
   * last frame on disk. Each frame is written out before its row (one cluster per frame), so
   * every row on disk has its frame; a frame whose row was still in the CSV sink's ring (100 ms of
   * rows, more on a loaded machine) may be in the file without it. */
  child_start(&c, argv);
  free(child_reply(&c, 15000));
  snprintf(cmd, sizeof cmd,
           "{\"id\":1,\"cmd\":\"start\",\"session_dir\":\"%s\",\"trial\":3,\"label\":\"\"}\n", session);
  child_send(&c, cmd);
  line = child_reply(&c, 5000);
  assert_non_null(strstr(line, "\"reply\":\"started\""));
  free(line);
  usleep(2500000);
  assert_int_equal(kill(c.pid, SIGKILL), 0);
  assert_int_equal(waitpid(c.pid, &status, 0), c.pid);
  close(c.in);
  close(c.out);
  snprintf(csv, sizeof csv, "%s/front/t003_frames.csv", session);
  snprintf(mkv, sizeof mkv, "%s/front/t003.mkv", session);
  usleep(200000); /* the encoder child dies with its parent (PR_SET_PDEATHSIG) */
  n = read_rows(csv, &rows);
  long packets = probe_packets(mkv, NULL);
  fprintf(stderr, "killed recorder: %zu rows, %ld packets readable\n", n, packets);
  assert_int_equal(mkv_sealed(mkv), 0);
  assert_true(packets >= (SLOW ? 1 : 20) && packets >= (long)n && packets <= (long)n + 10);
  free(rows);
}

/* ---- record: the acceptance scenarios at test size ---- */

static void record_plain(int w, int h, int seconds)
{
  char dir[300];
  struct pirec_camera_settings s;
  struct run r = {.stop_at_ms = seconds * 1000};
  char name[64];
  snprintf(name, sizeof name, "plain-%dx%d", w, h);
  make_tmp(dir, sizeof dir, name);
  lavfi_settings(&s, w, h, 30);
  s.encoder_threads = 0;
  run_camera(&r, &s, dir);
  print_status(name, &r.st);
  assert_int_equal(r.stop_err, 0);

  char csv[400], mkv[400];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(mkv, sizeof mkv, "%s/t001.mkv", dir);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  long packets = probe_packets(mkv, NULL);
  fprintf(stderr, "%s: %zu rows, %ld packets\n", name, n, packets);
  assert_int_equal(packets, (long)n);
  assert_true(n >= (size_t)(seconds * 30 * 9 / 10));
  uint64_t dropped = check_rows(rows, n, 1, 33333333);
  /* an idle machine drops nothing */
  assert_int_equal(dropped, 0);
  assert_int_equal(r.st.drops_total, 0);
  assert_int_equal(r.st.frames_written, n);
  assert_decodes(mkv, NULL, (long)n);
  assert_int_equal(mkv_sealed(mkv), 1);
  free(rows);
}

static void test_record_10s(void **state)
{
  record_plain(640, 360, 10);
}

/* The ring held for 2 s (nothing drained): the capture thread keeps its per-frame time, the
 * ring-full drops are counted exactly (per row, against the device timeline), the file is valid. */
static void test_record_hold(void **state)
{
  char dir[300];
  struct pirec_camera_settings s;
  struct run r = {.hold_at_ms = 2000, .hold_ms = 2000, .stop_at_ms = 6000};
  make_tmp(dir, sizeof dir, "hold");
  lavfi_settings(&s, 640, 360, 30);
  s.ring_ms = 500; /* 2 s held overflows a 0.5 s ring */
  run_camera(&r, &s, dir);
  print_status("hold", &r.st);
  assert_int_equal(r.stop_err, 0);

  char csv[400], mkv[400];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(mkv, sizeof mkv, "%s/t001.mkv", dir);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  assert_int_equal(probe_packets(mkv, NULL), (long)n);
  uint64_t dropped = check_rows(rows, n, 1, 33333333);
  fprintf(stderr,
          "hold: %zu rows, %" PRIu64 " dropped (expected about %d), capture p99.9 %.3f ms max %.3f ms\n", n,
          dropped, 60 - 15, r.st.capture.p999_ns / 1e6, r.st.capture.max_ns / 1e6);
  assert_true(dropped >= 30 && dropped <= 60);
  assert_int_equal(dropped, r.st.drops_ring_full);
  assert_int_equal(dropped, r.st.drops_total);
  /* every frame delivered while recording is a row or a counted drop */
  assert_int_equal(rows[n - 1].seq - rows[0].seq + 1, (int64_t)(n + dropped));
  /* bounded: a ~350 KB copy and a push; a loose bound for a loaded 2-core box */
  assert_true(r.st.capture.p999_ns < (SLOW ? 250000000 : 50000000));
  assert_decodes(mkv, NULL, (long)n);
  free(rows);
}

/* The encoder SIGKILLed at 2.5 s: it is restarted, the recording goes on, the frames lost inside
 * the dead encoder and during the restart are counted on the next row, and the gap in the video's
 * timestamps equals that count. */
/* The ring held from 1 s until the stop (which lifts the hold): the frames that did not fit were
 * lost after the frames the ring kept, so no row follows to carry them. They are the trial's
 * dropped_after, announced by a frames_lost_after event; every ring drop is found in the files
 * (the old code dropped them from every count: the sum of dropped_before stayed 0). */
static void test_record_hold_at_stop(void **state)
{
  char dir[300];
  struct pirec_camera_settings s;
  struct run r = {.hold_at_ms = 1000, .hold_ms = 10000, .stop_at_ms = 2500};
  make_tmp(dir, sizeof dir, "holdstop");
  lavfi_settings(&s, 320, 240, 30);
  s.ring_ms = 300;
  run_camera(&r, &s, dir);
  print_status("hold at stop", &r.st);
  assert_int_equal(r.stop_err, 0);

  char csv[400], mkv[400];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(mkv, sizeof mkv, "%s/t001.mkv", dir);
  uint64_t rows = 0, dropped_before = 0;
  assert_int_equal(counters_csv(csv, "dropped_before", &rows, &dropped_before), 0);
  assert_int_equal(probe_packets(mkv, NULL), (long)rows);
  fprintf(stderr, "hold at stop: %" PRIu64 " rows, dropped_before %" PRIu64 ", dropped_after %" PRIu64 "\n",
          rows, dropped_before, r.st.dropped_after);
  /* about 1.2 s of frames did not fit the 0.3 s ring, all after the ring's last frame */
  assert_true(r.st.drops_ring_full >= 10);
  assert_true(r.st.dropped_after > 0);
  /* lost while the trial ran: all but the frames due after the stop (within a frame or two of
   * it, the stop lifting the hold); those are idle (the exact identity is run_camera's check) */
  assert_true(dropped_before + r.st.dropped_after <= r.st.drops_ring_full);
  assert_true(dropped_before + r.st.dropped_after + 3 >= r.st.drops_ring_full);
  assert_int_equal(r.events[PIREC_CAMERA_EVENT_FRAMES_LOST_AFTER], 1);
}

static void test_record_encoder_kill(void **state)
{
  char dir[300];
  struct pirec_camera_settings s;
  struct run r = {.kill_at_ms = 2500, .stop_at_ms = 6000};
  make_tmp(dir, sizeof dir, "kill");
  lavfi_settings(&s, 640, 360, 30);
  run_camera(&r, &s, dir);
  print_status("kill", &r.st);
  assert_int_equal(r.stop_err, 0);
  assert_int_equal(r.events[PIREC_CAMERA_EVENT_ENCODER_CRASHED], 1);
  assert_int_equal(r.events[PIREC_CAMERA_EVENT_ENCODER_RESTARTED], 1);
  assert_int_equal(r.st.encoder_restarts, 1);

  char csv[400], mkv[400];
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(mkv, sizeof mkv, "%s/t001.mkv", dir);
  struct row *rows;
  size_t n = read_rows(csv, &rows);
  assert_int_equal(probe_packets(mkv, NULL), (long)n);
  uint64_t dropped = check_rows(rows, n, 1, 33333333);
  assert_true(dropped > 0);
  assert_int_equal(dropped, r.st.drops_total);
  /* On an idle machine every drop is the encoder's; under a sanitizer the loop can also fall
   * behind long enough for the ring to fill, which is counted too. */
  assert_true(r.st.drops_encoder > 0);
  assert_int_equal(dropped, r.st.drops_encoder + r.st.drops_ring_full);
  int64_t *pts;
  size_t np = probe_pts(mkv, &pts);
  assert_int_equal(np, n);
  /* The MKV's pts are the rows' mono_ns (ms), so the restart leaves a hole of dropped_before
   * frame intervals. mono_ns carries arrival jitter of a few ms, hence +-1; the device timeline
   * check in check_rows() is the exact one. (Ring drops under a sanitizer happen to frames that
   * arrived bunched after a stall, so their holes are shorter; only the restart is measured.) */
  size_t gap_row = 0;
  for (size_t i = 1; i < n; i++)
    if (rows[i].dropped > 0 && (gap_row == 0 || rows[i].dropped > rows[gap_row].dropped))
      gap_row = i;
  int64_t hole_ms = pts[gap_row] - pts[gap_row - 1];
  int64_t lost = (hole_ms * 1000000 + 16666666) / 33333333 - 1;
  fprintf(stderr, "kill: gap of %" PRId64 " ms at row %zu = %" PRId64 " frames; dropped_before %" PRIu64 "\n",
          hole_ms, gap_row, lost, rows[gap_row].dropped);
  assert_true(SLOW ||
              (lost >= (int64_t)rows[gap_row].dropped - 1 && lost <= (int64_t)rows[gap_row].dropped + 1));
  assert_true(gap_row > 30 && n - gap_row > 30);
  assert_decodes(mkv, NULL, (long)n);
  free(pts);
  free(rows);
}

static void test_record_60s_720p(void **state)
{
  record_plain(1280, 720, 60);
}

static int teardown_all(void **state)
{
  if (tmp_root[0] && !getenv("PIREC_KEEP_TMP"))
    rm_tree(tmp_root);
  return 0;
}

int main(int argc, char **argv)
{
  const char *group = argc > 1 ? argv[1] : "unit";
  if (getenv("PIREC_TEST_FILTER")) /* e.g. PIREC_TEST_FILTER=test_url_* runs just those */
    cmocka_set_test_filter(getenv("PIREC_TEST_FILTER"));
  const struct CMUnitTest unit[] = {
      cmocka_unit_test(test_settings_source),
      cmocka_unit_test(test_rpicam_metadata_lines),
      cmocka_unit_test(test_splitter_size),
      cmocka_unit_test(test_splitter_jpeg),
      cmocka_unit_test(test_source_lavfi_paced),
      cmocka_unit_test(test_rpicam_missing),
      cmocka_unit_test(test_rpicam_yuv420),
      cmocka_unit_test(test_rpicam_mjpeg),
      cmocka_unit_test(test_empty_trial),
      cmocka_unit_test(test_rpicam_no_sensor_ts),
      cmocka_unit_test(test_rpicam_child_exit),
      cmocka_unit_test(test_rpicam_program_gone),
      cmocka_unit_test(test_url_file_replay),
      cmocka_unit_test(test_url_gop_start),
      cmocka_unit_test(test_url_pre_trigger),
      cmocka_unit_test(test_url_network_live),
      cmocka_unit_test(test_url_network_reconnect),
      cmocka_unit_test(test_snapshot),
      cmocka_unit_test(test_two_cameras),
      cmocka_unit_test(test_write_error),
      cmocka_unit_test(test_protocol),
  };
  const struct CMUnitTest record[] = {
      cmocka_unit_test(test_record_10s),
      cmocka_unit_test(test_record_hold),
      cmocka_unit_test(test_record_hold_at_stop),
      cmocka_unit_test(test_record_encoder_kill),
  };
  const struct CMUnitTest segments[] = {
      cmocka_unit_test(test_segments_h264),
      cmocka_unit_test(test_segments_raw),
      cmocka_unit_test(test_segments_kill),
  };
  const struct CMUnitTest longer[] = {
      cmocka_unit_test(test_record_60s_720p),
  };
  if (strcmp(group, "efbig-child") == 0 && argc > 2)
    return efbig_child(argv[2]);
  if (strcmp(group, "segment-child") == 0 && argc > 2)
    return segment_child(argv[2]);
  if (strcmp(group, "segments") == 0)
    return cmocka_run_group_tests_name("camera segments", segments, NULL, teardown_all);
  if (strcmp(group, "record") == 0)
    return cmocka_run_group_tests_name("camera record", record, NULL, teardown_all);
  if (strcmp(group, "long") == 0) {
    if (!getenv("PIREC_LONG_TESTS")) {
      fprintf(stderr, "skipped: set PIREC_LONG_TESTS=1 for the 60 s 1280x720 acceptance run\n");
      return 77;
    }
    return cmocka_run_group_tests_name("camera long", longer, NULL, teardown_all);
  }
  return cmocka_run_group_tests_name("camera unit", unit, NULL, teardown_all);
}
