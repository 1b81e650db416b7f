/* bench-camera: the camera recorder end to end (lavfi testsrc2 -> capture thread -> ring -> ffmpeg
 * libx264 child -> in-process MKV -> file sink, plus the frames CSV), in one run:
 *
 *   realtime  720p and 1080p at 30 fps: frames/s written, drops by cause, capture-thread time per
 *             frame (arrival to pushed) {p50, p99, p999, max}, CPU per frame of the recorder
 *             (RUSAGE_SELF) and of ffmpeg (RUSAGE_CHILDREN) separately
 *   max       the same asking the source for 240 fps: the sustained rate the box manages and
 *             where the frames that did not make it were dropped
 *   hold      720p30 with the ring held (no draining) for 2 s: capture time stays bounded, drops
 *             are counted exactly (rows + drops == frames delivered)
 *   source    the synthetic source alone (testsrc2 rendering and pacing), so the recorder's own
 *             CPU per frame can be given without it
 *   --long    the acceptance run: 60 s of 1280x720 at 30 fps, packets (ffprobe) == rows
 *   --mkv     only the muxer: 10 s of 720p30 libx264 access units muxed into an MKV through a file
 *             sink, once with the default one flushed cluster per unit (every frame's bytes leave the
 *             process before its row, issue 23) and once with 1 s clusters kept in memory: loop time
 *             per frame (mkv write plus sink flush), bytes and write requests, and their ratios
 *   --split   only the MJPEG byte-stream splitter: the camera's own (camera-split.c) against
 *             libavcodec's MJPEG parser on the same stream of 1280x720 JPEGs fed in 64 KiB reads:
 *             MB/s, and how many whole images each hands out when exactly N images are in
 *
 *   --compare the camera path against what a user would run instead (issue 21): 720p30 recorded by
 *             pirec (encoder fed with write(2), and with vmsplice(2), the default) and by one
 *             `ffmpeg -re -f lavfi -i testsrc2 ... -c:v libx264` with the encoder child's settings
 *             writing an MKV, alternated over --runs N rounds (default 3, each round starting with
 *             the next case); CPU per frame of recorder + encoder child (user and system apart)
 *             against the reference's, medians, and their ratios with and without the synthetic
 *             source's own cost
 *   --cpus N  everything (this process, its threads, the encoder, the reference) on the first N
 *             CPUs: the Pi-like mode (tests/hw/pilike.py adds the slow disk)
 *
 * Prints one JSON object with --json, a summary otherwise. --seconds N changes the realtime, max
 * and compare durations (default 10 and 5). Recordings go under $TMPDIR (default /tmp).
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <sys/wait.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <uv.h>

#include <libavcodec/avcodec.h>

#include "camera-int.h"
#include "pirec/camera.h"
#include "pirec/clock.h"
#include "pirec/error.h"
#include "pirec/log.h"
#include "pirec/sink.h"
#include "h264.h"
#include "mkv.h"

/* CPU time of a process or its reaped children, user and system apart. */
struct cpu {
  int64_t user_ns, sys_ns;
};

static struct cpu cpu_of(int who)
{
  struct rusage ru;
  getrusage(who, &ru);
  return (struct cpu){(int64_t)ru.ru_utime.tv_sec * 1000000000 + (int64_t)ru.ru_utime.tv_usec * 1000,
                      (int64_t)ru.ru_stime.tv_sec * 1000000000 + (int64_t)ru.ru_stime.tv_usec * 1000};
}

static struct cpu cpu_minus(struct cpu a, struct cpu b)
{
  return (struct cpu){a.user_ns - b.user_ns, a.sys_ns - b.sys_ns};
}

struct result {
  const char *name;
  int w, h, fps;
  double seconds;
  struct pirec_camera_status st;
  uint64_t rows;
  int64_t rows_span_ns;
  double fps_written;
  double self_cpu_ns_per_frame;
  double child_cpu_ns_per_frame;
  int feed_by_write;              /* the encoder fed with write(2) instead of vmsplice(2) */
  struct cpu self_cpu, child_cpu; /* totals over the trial */
  long packets;                   /* --long only */
  int mono_increasing;
  uint64_t csv_dropped;
  uint64_t csv_dropped_all; /* every row's dropped_before, the first row's included */
  int64_t seq_span;
  int identity_exact; /* rows + sum dropped_before + dropped_after + idle = seen + device gaps */
};

struct run {
  uv_loop_t loop;
  struct pirec_camera *cam;
  uv_timer_t stop_timer, hold_timer, release_timer;
  int hold_at_ms, hold_ms;
  int stopped;
  int err;
  struct pirec_camera_status st;
};

static void die(const char *what, int err)
{
  fprintf(stderr, "bench-camera: %s: %s\n", what, pirec_strerror(err));
  exit(1);
}

/* The recordings' directory: a new one under $TMPDIR (the Pi-like mode puts it on a slow disk),
 * else /tmp. */
static void make_root(char *root, size_t cap)
{
  const char *base = getenv("TMPDIR");
  snprintf(root, cap, "%s/pirec-bench-camera-XXXXXX", base && *base ? base : "/tmp");
  if (!mkdtemp(root))
    die("mkdtemp", -errno);
}

/* --cpus N, the Pi-like mode: this process and everything it starts (capture thread, threadpool,
 * encoder child, the ffmpeg reference) run on the first N CPUs only. */
static void pin_cpus(int n)
{
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int i = 0; i < n && i < CPU_SETSIZE; i++)
    CPU_SET(i, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0)
    die("sched_setaffinity", -errno);
}

static int64_t cpu_ns(int who)
{
  struct rusage ru;
  getrusage(who, &ru);
  return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
         ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

static void closed(struct pirec_camera *cam, void *user)
{
  struct run *r = user;
  uv_close((uv_handle_t *)&r->stop_timer, NULL);
  uv_close((uv_handle_t *)&r->hold_timer, NULL);
  uv_close((uv_handle_t *)&r->release_timer, NULL);
}

static void stopped(struct pirec_camera *cam, int err, void *user)
{
  struct run *r = user;
  r->stopped = 1;
  r->err = err;
  pirec_camera_status(cam, &r->st);
  pirec_camera_close(cam, closed, r);
}

static void on_stop(uv_timer_t *t)
{
  struct run *r = t->data;
  if (pirec_camera_trial_stop(r->cam, stopped, r) < 0)
    die("trial stop", -EINVAL);
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

static void read_csv(const char *path, struct result *res)
{
  FILE *f = fopen(path, "r");
  char line[512];
  int64_t first_mono = 0, last_mono = 0, first_seq = -1, last_seq = 0;
  if (!f)
    die(path, -errno);
  res->mono_increasing = 1;
  if (!fgets(line, sizeof line, f))
    die("empty frames csv", -EINVAL);
  while (fgets(line, sizeof line, f)) {
    long long trial, mono, wall, frame, seq;
    unsigned long long dropped = 0;
    char *p = line;
    if (sscanf(p, "%lld,%lld,%lld,%lld,%lld", &trial, &mono, &wall, &frame, &seq) != 5)
      die("bad csv row", -EINVAL);
    for (int i = 0; i < 6 && p; i++)
      p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL;
    if (p)
      dropped = strtoull(p, NULL, 10);
    if (res->rows > 0 && mono <= last_mono)
      res->mono_increasing = 0;
    res->csv_dropped_all += dropped;
    if (first_seq < 0) {
      first_seq = seq;
      first_mono = mono;
    } else {
      res->csv_dropped += dropped;
    }
    last_mono = mono;
    last_seq = seq;
    res->rows++;
  }
  fclose(f);
  res->rows_span_ns = last_mono - first_mono;
  res->seq_span = first_seq < 0 ? 0 : last_seq - first_seq + 1;
}

static long probe_packets(const char *path)
{
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=nb_read_packets "
           "-of csv=p=0 '%s'",
           path);
  FILE *p = popen(cmd, "r");
  long n = -1;
  if (p && fscanf(p, "%ld", &n) != 1)
    n = -1;
  if (p)
    pclose(p);
  return n;
}

static void record(struct result *res, const char *root, int hold_at_ms, int hold_ms, int probe)
{
  struct pirec_camera_settings s;
  struct run r = {.hold_at_ms = hold_at_ms, .hold_ms = hold_ms};
  char dir[512], csv[600], mkv[600];
  int err;

  snprintf(dir, sizeof dir, "%s/%s", root, res->name);
  pirec_camera_settings_default(&s);
  s.width = res->w;
  s.height = res->h;
  s.fps_num = res->fps;
  s.fps_den = 1;
  if (hold_ms)
    s.ring_ms = 500;
  if ((err = uv_loop_init(&r.loop)) < 0)
    die("loop", err);
  if ((err = pirec_camera_new(&r.loop, &s, NULL, NULL, &r.cam)) < 0)
    die("camera", err);
  pirec__camera_set_feed(r.cam, res->feed_by_write);
  if ((err = pirec_camera_start(r.cam)) < 0)
    die("camera start", err);
  int64_t self0 = cpu_ns(RUSAGE_SELF), child0 = cpu_ns(RUSAGE_CHILDREN);
  struct cpu self_split0 = cpu_of(RUSAGE_SELF), child_split0 = cpu_of(RUSAGE_CHILDREN);
  if ((err = pirec_camera_trial_start(r.cam, dir, 1, 0)) < 0)
    die("trial start", err);
  uv_timer_init(&r.loop, &r.stop_timer);
  uv_timer_init(&r.loop, &r.hold_timer);
  uv_timer_init(&r.loop, &r.release_timer);
  r.stop_timer.data = r.hold_timer.data = r.release_timer.data = &r;
  uv_timer_start(&r.stop_timer, on_stop, (uint64_t)(res->seconds * 1000), 0);
  if (hold_ms) {
    uv_timer_start(&r.hold_timer, on_hold, (uint64_t)hold_at_ms, 0);
    uv_timer_start(&r.release_timer, on_release, (uint64_t)(hold_at_ms + hold_ms), 0);
  }
  uv_run(&r.loop, UV_RUN_DEFAULT);
  if ((err = uv_loop_close(&r.loop)) != 0)
    die("loop close", err);
  if (!r.stopped || r.err)
    die("recording", r.err ? r.err : -EIO);
  int64_t self = cpu_ns(RUSAGE_SELF) - self0, child = cpu_ns(RUSAGE_CHILDREN) - child0;
  res->self_cpu = cpu_minus(cpu_of(RUSAGE_SELF), self_split0);
  res->child_cpu = cpu_minus(cpu_of(RUSAGE_CHILDREN), child_split0);
  res->st = r.st;
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(mkv, sizeof mkv, "%s/t001.mkv", dir);
  read_csv(csv, res);
  res->fps_written = res->rows_span_ns > 0 ? (double)(res->rows - 1) * 1e9 / (double)res->rows_span_ns : 0;
  uint64_t frames = res->st.frames_captured ? res->st.frames_captured : 1;
  res->self_cpu_ns_per_frame = (double)self / (double)frames;
  res->child_cpu_ns_per_frame = res->rows ? (double)child / (double)res->rows : 0;
  res->packets = probe ? probe_packets(mkv) : -1;
  /* Every frame is a row, counted in a row's dropped_before or after the last row, or idle
   * (include/pirec/camera.h): an off-by-one anywhere fails the run. */
  const struct pirec_camera_status *st = &res->st;
  res->identity_exact = res->rows + res->csv_dropped_all + st->dropped_after + st->frames_idle ==
                        st->frames_seen + st->device_gaps;
  if (!res->identity_exact)
    fprintf(stderr,
            "bench-camera: %s: rows %" PRIu64 " + dropped_before %" PRIu64 " + dropped_after %" PRIu64
            " + idle %" PRIu64 " != frames_seen %" PRIu64 " + device_gaps %" PRIu64 "\n",
            res->name, res->rows, res->csv_dropped_all, st->dropped_after, st->frames_idle, st->frames_seen,
            st->device_gaps);
}

/* CPU per frame of the synthetic source alone (rendering testsrc2, pacing), on this thread. */
static double source_cpu(int w, int h, int frames)
{
  struct pirec_camera_settings s;
  struct pirec_camera_source *src;
  struct pirec_camera_frame f;
  char *msg = NULL;
  pirec_camera_settings_default(&s);
  s.width = w;
  s.height = h;
  s.fps_num = 240;
  int err = pirec_camera_source_open(&s, &src, &msg);
  if (err < 0)
    die(msg ? msg : "source", err);
  int64_t c0 = cpu_ns(RUSAGE_SELF);
  for (int i = 0; i < frames; i++)
    if ((err = pirec_camera_source_read(src, &f)) < 0)
      die("source read", err);
  int64_t c = cpu_ns(RUSAGE_SELF) - c0;
  pirec_camera_source_free(src);
  return (double)c / frames;
}

static void print_json_result(const struct result *r, double src_cpu, int last)
{
  const struct pirec_camera_status *st = &r->st;
  printf("    \"%s\": {\"width\": %d, \"height\": %d, \"fps_requested\": %d, \"seconds\": %.0f,\n", r->name,
         r->w, r->h, r->fps, r->seconds);
  printf("      \"frames_captured\": %" PRIu64 ", \"frames_written\": %" PRIu64 ", \"frames_per_s\": %.2f,\n",
         st->frames_captured, r->rows, r->fps_written);
  printf("      \"drops\": {\"total\": %" PRIu64 ", \"ring_full\": %" PRIu64 ", \"encoder\": %" PRIu64
         ", \"device\": %" PRIu64 ", \"sink\": %" PRIu64 ", \"csv_dropped_before_sum\": %" PRIu64 "},\n",
         st->drops_total, st->drops_ring_full, st->drops_encoder, st->drops_device, st->drops_sink,
         r->csv_dropped);
  printf("      \"dropped_after\": %" PRIu64 ", \"counter_identity_exact\": %s,\n", st->dropped_after,
         r->identity_exact ? "true" : "false");
  printf("      \"rows_plus_drops_equals_frames\": %s, \"mono_strictly_increasing\": %s,\n",
         (int64_t)(r->rows + r->csv_dropped) == r->seq_span ? "true" : "false",
         r->mono_increasing ? "true" : "false");
  printf("      \"capture_ns\": {\"p50\": %" PRId64 ", \"p99\": %" PRId64 ", \"p999\": %" PRId64
         ", \"max\": %" PRId64 "},\n",
         st->capture.p50_ns, st->capture.p99_ns, st->capture.p999_ns, st->capture.max_ns);
  printf("      \"cpu_ns_per_frame\": {\"recorder\": %.0f, \"recorder_without_source\": %.0f, "
         "\"synthetic_source\": %.0f, \"ffmpeg\": %.0f}",
         r->self_cpu_ns_per_frame, r->self_cpu_ns_per_frame - src_cpu, src_cpu, r->child_cpu_ns_per_frame);
  if (r->packets >= 0)
    printf(",\n      \"mkv_packets\": %ld, \"packets_equal_rows\": %s", r->packets,
           r->packets == (long)r->rows ? "true" : "false");
  printf("}%s\n", last ? "" : ",");
}

static void print_text_result(const struct result *r, double src_cpu)
{
  const struct pirec_camera_status *st = &r->st;
  printf("%-10s %4dx%-4d req %3d fps: %6.2f fps written, %" PRIu64 " rows, drops %" PRIu64 " (ring %" PRIu64
         " enc %" PRIu64 "), capture p50 %.3f p99 %.3f p999 %.3f max %.3f ms, "
         "cpu/frame recorder %.0f us (w/o source %.0f us) ffmpeg %.0f us%s\n",
         r->name, r->w, r->h, r->fps, r->fps_written, r->rows, st->drops_total, st->drops_ring_full,
         st->drops_encoder, st->capture.p50_ns / 1e6, st->capture.p99_ns / 1e6, st->capture.p999_ns / 1e6,
         st->capture.max_ns / 1e6, r->self_cpu_ns_per_frame / 1e3, (r->self_cpu_ns_per_frame - src_cpu) / 1e3,
         r->child_cpu_ns_per_frame / 1e3,
         r->packets >= 0 ? (r->packets == (long)r->rows ? ", packets == rows" : ", PACKETS != ROWS") : "");
}

/* ---- --compare: the camera path against one ffmpeg doing the same capture and encode ---- */

#define CMP_MAX_RUNS 15

enum { CMP_WRITE, CMP_SPLICE, CMP_FFMPEG, CMP_N };
static const char *const cmp_names[CMP_N] = {"pirec_write", "pirec_vmsplice", "ffmpeg_alone"};

struct cmp_sample {
  struct cpu self, child; /* ffmpeg_alone: self is the ffmpeg process, child zero */
  uint64_t frames, drops;
};

/* One ffmpeg reading the same lavfi source in real time (-re) and encoding with the encoder child's
 * settings into an MKV: what a user would run instead of pirec-camera. */
static struct cmp_sample cmp_ffmpeg(const char *root, int w, int h, int fps, double seconds)
{
  char src[96], t[32], out[600], cmd[1024];
  struct cmp_sample r = {0};
  struct rusage ru;
  int st;

  snprintf(src, sizeof src, "testsrc2=size=%dx%d:rate=%d", w, h, fps);
  snprintf(t, sizeof t, "%.3f", seconds);
  snprintf(out, sizeof out, "%s/ffmpeg-alone.mkv", root);
  snprintf(cmd, sizeof cmd,
           "exec ffmpeg -hide_banner -nostdin -nostats -loglevel error -re -f lavfi -i %s -t %s -map 0:v "
           "-fps_mode passthrough -c:v libx264 -preset ultrafast -crf 23 -g 60 -bf 0 -f matroska -y '%s'",
           src, t, out);
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  if (pid < 0 || wait4(pid, &st, 0, &ru) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    die("ffmpeg alone", -EIO);
  r.self = (struct cpu){(int64_t)ru.ru_utime.tv_sec * 1000000000 + (int64_t)ru.ru_utime.tv_usec * 1000,
                        (int64_t)ru.ru_stime.tv_sec * 1000000000 + (int64_t)ru.ru_stime.tv_usec * 1000};
  r.frames = (uint64_t)(seconds * fps + 0.5);
  return r;
}

static struct cmp_sample cmp_pirec(const char *root, int by_write, double seconds)
{
  struct result res = {.name = by_write ? "cmp_write" : "cmp_splice",
                       .w = 1280,
                       .h = 720,
                       .fps = 30,
                       .seconds = seconds,
                       .feed_by_write = by_write};
  record(&res, root, 0, 0, 0);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s/%s'", root, res.name);
  if (system(cmd) != 0)
    fprintf(stderr, "bench-camera: could not remove '%s/%s'\n", root, res.name);
  return (struct cmp_sample){res.self_cpu, res.child_cpu, res.st.frames_captured, res.st.drops_total};
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(const double *v, int n)
{
  double s[CMP_MAX_RUNS];
  memcpy(s, v, (size_t)n * sizeof *v);
  qsort(s, (size_t)n, sizeof *s, cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/* Per-frame figure of one run: which 0 total, 1 recorder (or ffmpeg alone) user, 2 its system, 3 the
 * encoder child's user, 4 its system. */
static double cmp_per_frame(const struct cmp_sample *s, int which)
{
  int64_t v[5] = {s->self.user_ns + s->self.sys_ns + s->child.user_ns + s->child.sys_ns, s->self.user_ns,
                  s->self.sys_ns, s->child.user_ns, s->child.sys_ns};
  return s->frames ? (double)v[which] / (double)s->frames : 0;
}

static void cmp_print_case(int c, const struct cmp_sample *runs, int n, int last)
{
  static const char *const parts[5] = {"cpu_ns_per_frame", "self_user", "self_sys", "child_user",
                                       "child_sys"};
  double v[CMP_MAX_RUNS];
  printf("    \"%s\": {\"cpu_ns_per_frame_runs\": [", cmp_names[c]);
  for (int i = 0; i < n; i++)
    printf("%s%.0f", i ? ", " : "", cmp_per_frame(&runs[i], 0));
  printf("], \"drops\": [");
  for (int i = 0; i < n; i++)
    printf("%s%" PRIu64, i ? ", " : "", runs[i].drops);
  printf("],\n      \"median_ns_per_frame\": {");
  for (int k = 0; k < 5; k++) {
    for (int i = 0; i < n; i++)
      v[i] = cmp_per_frame(&runs[i], k);
    printf("%s\"%s\": %.0f", k ? ", " : "", parts[k], median(v, n));
  }
  printf("}}%s\n", last ? "" : ",");
}

/* Ratio of the medians of case c's and ffmpeg alone's CPU per frame, less src per frame on both
 * sides when given. */
static double cmp_ratio(struct cmp_sample (*runs)[CMP_MAX_RUNS], int c, int n, double src)
{
  double a[CMP_MAX_RUNS], b[CMP_MAX_RUNS];
  for (int i = 0; i < n; i++) {
    a[i] = cmp_per_frame(&runs[c][i], 0);
    b[i] = cmp_per_frame(&runs[CMP_FFMPEG][i], 0);
  }
  return (median(a, n) - src) / (median(b, n) - src);
}

static void bench_compare(int json, int nruns, double seconds, int cpus)
{
  struct cmp_sample runs[CMP_N][CMP_MAX_RUNS];
  char root[512];
  double src[CMP_MAX_RUNS];

  make_root(root, sizeof root);
  for (int i = 0; i < nruns; i++) {
    src[i] = source_cpu(1280, 720, 60);
    for (int k = 0; k < CMP_N; k++) {
      int c = (i + k) % CMP_N; /* each round starts with the next case: no case always goes first */
      runs[c][i] = c == CMP_FFMPEG ? cmp_ffmpeg(root, 1280, 720, 30, seconds)
                                   : cmp_pirec(root, c == CMP_WRITE, seconds);
      if (!json)
        fprintf(stderr, "round %d %-15s %.0f us/frame, drops %" PRIu64 "\n", i + 1, cmp_names[c],
                cmp_per_frame(&runs[c][i], 0) / 1e3, runs[c][i].drops);
    }
  }
  double s = median(src, nruns), load[3] = {0};
  if (getloadavg(load, 3) < 0)
    load[0] = -1;
  printf("{\n  \"bench\": \"camera-compare\", \"cpus_online\": %ld, \"pinned_cpus\": %d, \"loadavg_1m\": "
         "%.2f,\n",
         sysconf(_SC_NPROCESSORS_ONLN), cpus, load[0]);
  printf("  \"source\": \"lavfi testsrc2 1280x720 at 30 fps, real time\", \"seconds\": %.0f, \"runs\": %d,\n",
         seconds, nruns);
  printf("  \"synthetic_source_ns_per_frame\": %.0f,\n  \"cases\": {\n", s);
  for (int c = 0; c < CMP_N; c++)
    cmp_print_case(c, runs[c], nruns, c == CMP_N - 1);
  printf("  },\n  \"ratio_vs_ffmpeg\": {\"pirec_write\": %.3f, \"pirec_vmsplice\": %.3f},\n",
         cmp_ratio(runs, CMP_WRITE, nruns, 0), cmp_ratio(runs, CMP_SPLICE, nruns, 0));
  printf("  \"ratio_vs_ffmpeg_without_source\": {\"pirec_write\": %.3f, \"pirec_vmsplice\": %.3f}\n}\n",
         cmp_ratio(runs, CMP_WRITE, nruns, s), cmp_ratio(runs, CMP_SPLICE, nruns, s));
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0)
    fprintf(stderr, "bench-camera: could not remove '%s'\n", root);
}

/* ---- --split: the MJPEG splitter against libavcodec's parser ---- */

#define SPLIT_IMAGES 120
#define SPLIT_READ   (64 * 1024)

/* SPLIT_IMAGES JPEGs of a moving 1280x720 pattern with some noise (entropy-coded data as busy as a
 * camera's), concatenated as rpicam-vid writes them. */
static uint8_t *jpeg_stream(size_t *len)
{
  const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
  AVCodecContext *c = codec ? avcodec_alloc_context3(codec) : NULL;
  AVFrame *pic = av_frame_alloc();
  AVPacket *pkt = av_packet_alloc();
  uint8_t *out = NULL;
  size_t n = 0;

  if (!c || !pic || !pkt)
    die("mjpeg encoder", -ENOMEM);
  c->width = pic->width = 1280;
  c->height = pic->height = 720;
  c->pix_fmt = pic->format = AV_PIX_FMT_YUVJ420P;
  c->time_base = (AVRational){1, 30};
  if (avcodec_open2(c, codec, NULL) < 0 || av_frame_get_buffer(pic, 0) < 0)
    die("mjpeg encoder", -EINVAL);
  for (int i = 0; i < SPLIT_IMAGES; i++) {
    av_frame_make_writable(pic);
    for (int p = 0; p < 3; p++)
      for (int y = 0; y < (p ? 360 : 720); y++)
        for (int x = 0; x < (p ? 640 : 1280); x++)
          pic->data[p][y * pic->linesize[p] + x] =
              (uint8_t)((x ^ y) + i * 3 + p * 50 +
                        (((unsigned)(x * 7919 + y * 104729 + i) * 2654435761u) >> 29));
    pic->pts = i;
    if (avcodec_send_frame(c, pic) < 0 || avcodec_receive_packet(c, pkt) < 0)
      die("mjpeg encode", -EIO);
    out = realloc(out, n + (size_t)pkt->size);
    memcpy(out + n, pkt->data, (size_t)pkt->size);
    n += (size_t)pkt->size;
    av_packet_unref(pkt);
  }
  av_packet_free(&pkt);
  av_frame_free(&pic);
  avcodec_free_context(&c);
  *len = n;
  return out;
}

static double split_own(const uint8_t *stream, size_t len, int reps, long *images)
{
  int64_t t0 = pirec_clock_mono_ns();
  *images = 0;
  for (int r = 0; r < reps; r++) {
    struct pirec__camera_splitter sp;
    const uint8_t *f;
    size_t fl;
    if (pirec__camera_splitter_init(&sp, PIREC__CAMERA_SPLIT_JPEG, 0, 1280 * 720 * 2 + 65536) < 0)
      die("splitter", -ENOMEM);
    for (size_t off = 0; off < len; off += SPLIT_READ) {
      size_t k = len - off < SPLIT_READ ? len - off : SPLIT_READ;
      if (pirec__camera_splitter_append(&sp, stream + off, k) < 0)
        die("splitter", -ENOBUFS);
      while (pirec__camera_splitter_next(&sp, &f, &fl))
        (*images)++;
    }
    pirec__camera_splitter_free(&sp);
  }
  return (double)len * reps / ((double)(pirec_clock_mono_ns() - t0) / 1e9) / 1e6;
}

static double split_lav(const uint8_t *stream, size_t len, int reps, long *images)
{
  int64_t t0 = pirec_clock_mono_ns();
  *images = 0;
  for (int r = 0; r < reps; r++) {
    AVCodecParserContext *pc = av_parser_init(AV_CODEC_ID_MJPEG);
    AVCodecContext *cx = avcodec_alloc_context3(NULL);
    uint8_t *out;
    int outlen;
    for (size_t off = 0; off < len;) {
      int k = (int)(len - off < SPLIT_READ ? len - off : SPLIT_READ);
      int used = av_parser_parse2(pc, cx, &out, &outlen, stream + off, k, AV_NOPTS_VALUE, AV_NOPTS_VALUE, 0);
      off += (size_t)used;
      if (outlen > 0)
        (*images)++;
    }
    av_parser_close(pc);
    avcodec_free_context(&cx);
  }
  return (double)len * reps / ((double)(pirec_clock_mono_ns() - t0) / 1e9) / 1e6;
}

static void bench_split(int json)
{
  size_t len;
  uint8_t *stream = jpeg_stream(&len);
  long own_images, lav_images;
  int reps = 20;
  split_own(stream, len, 2, &own_images); /* warm-up */
  double own = split_own(stream, len, reps, &own_images);
  double lav = split_lav(stream, len, reps, &lav_images);
  if (json)
    printf("{\"bench\": \"camera-split\", \"stream_bytes\": %zu, \"images\": %d, \"own_mb_s\": %.0f, "
           "\"lavc_mb_s\": %.0f, \"own_images_out\": %ld, \"lavc_images_out\": %ld}\n",
           len, SPLIT_IMAGES, own, lav, own_images / reps, lav_images / reps);
  else
    printf("mjpeg split, %d images of 1280x720 (%zu bytes) in 64 KiB reads:\n"
           "  camera-split.c     %6.0f MB/s, %ld of %d images out\n"
           "  libavcodec parser  %6.0f MB/s, %ld of %d images out (an image leaves only when the next "
           "one's SOI arrives)\n",
           SPLIT_IMAGES, len, own, own_images / reps, SPLIT_IMAGES, lav, lav_images / reps, SPLIT_IMAGES);
  free(stream);
}

/* ---- --mkv ---- */

struct mkv_run {
  double ns_per_frame;
  uint64_t bytes, writes;
};

static void mkv_closed(struct pirec_sink *sink, const struct pirec_sink_counters *c, void *user)
{
  struct pirec_sink_counters *out = user;
  *out = *c;
}

static void mkv_pass(const char *path, uint8_t *const *aus, const size_t *lens, int n, int per_frame,
                     struct mkv_run *out)
{
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct pirec_sink *sink;
  struct pirec_mkv *m;
  int r = pirec_sink_new(&loop, path, NULL, NULL, NULL, &sink);
  if (r < 0 || (r = pirec_mkv_new(sink, 0, 0, 30, 1, &m)) < 0)
    die("mkv setup", r);
  pirec_mkv_set_per_frame(m, per_frame);
  int64_t spent = 0;
  for (int i = 0; i < n; i++) {
    int64_t t0 = pirec_clock_mono_ns();
    if ((r = pirec_mkv_write(m, aus[i], lens[i], pirec_h264_is_keyframe(aus[i], lens[i]),
                             (int64_t)i * 33333333)) < 0)
      die("mkv write", r);
    if (per_frame)
      pirec_sink_flush(sink); /* as the recorders do */
    spent += pirec_clock_mono_ns() - t0;
    uv_run(&loop, UV_RUN_NOWAIT); /* let the writes complete as a live loop would */
  }
  pirec_mkv_finish(m);
  struct pirec_sink_counters c;
  pirec_sink_close(sink, mkv_closed, &c);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  pirec_mkv_free(m);
  out->ns_per_frame = (double)spent / n;
  out->bytes = c.bytes_written;
  out->writes = c.writes;
}

static void bench_mkv(int json)
{
  char root[] = "/tmp/pirec-bench-mkv-XXXXXX";
  if (!mkdtemp(root))
    die("mkdtemp", -errno);
  char h264[600], cmd[1400];
  snprintf(h264, sizeof h264, "%s/in.h264", root);
  snprintf(cmd, sizeof cmd,
           "ffmpeg -v error -f lavfi -i testsrc2=size=1280x720:rate=30 -t 10 -c:v libx264 -preset ultrafast "
           "-bf 0 -g 30 -bsf:v h264_metadata=aud=insert -f h264 '%s'",
           h264);
  if (system(cmd) != 0)
    die("ffmpeg (libx264) for --mkv", -EIO);
  struct pirec_h264_splitter au;
  pirec_h264_splitter_init(&au, 1 << 20);
  FILE *f = fopen(h264, "rb");
  if (!f)
    die("open the encoded stream", -errno);
  size_t got;
  uint8_t *space;
  while ((space = pirec_h264_splitter_space(&au, 1 << 16)) && (got = fread(space, 1, 1 << 16, f)) > 0)
    pirec_h264_splitter_fill(&au, got);
  fclose(f);
  static uint8_t *aus[4096];
  static size_t lens[4096];
  int n = 0;
  const uint8_t *d;
  size_t len;
  while (n < 4096 && (pirec_h264_splitter_next(&au, &d, &len) || pirec_h264_splitter_last(&au, &d, &len))) {
    aus[n] = malloc(len);
    memcpy(aus[n], d, len);
    lens[n++] = len;
  }
  pirec_h264_splitter_free(&au);
  struct mkv_run best[2] = {{1e18, 0, 0}, {1e18, 0, 0}};
  for (int rep = 0; rep < 5; rep++) /* the best of five of each, interleaved */
    for (int mode = 0; mode < 2; mode++) {
      struct mkv_run one;
      char path[640];
      snprintf(path, sizeof path, "%s/out%d.mkv", root, mode);
      mkv_pass(path, aus, lens, n, mode == 0, &one);
      if (one.ns_per_frame < best[mode].ns_per_frame)
        best[mode] = one;
    }
  double ratio = best[0].ns_per_frame / best[1].ns_per_frame;
  double bytes_per_frame = ((double)best[0].bytes - (double)best[1].bytes) / n;
  if (json)
    printf("{\"bench\": \"camera-mkv\", \"frames\": %d, \"per_frame\": {\"ns_per_frame\": %.0f, \"bytes\": "
           "%" PRIu64 ", \"writes\": %" PRIu64
           "}, \"one_second_clusters\": {\"ns_per_frame\": %.0f, \"bytes\": %" PRIu64 ", \"writes\": %" PRIu64
           "}, \"time_ratio\": %.2f, \"extra_bytes_per_frame\": %.1f}\n",
           n, best[0].ns_per_frame, best[0].bytes, best[0].writes, best[1].ns_per_frame, best[1].bytes,
           best[1].writes, ratio, bytes_per_frame);
  else
    printf("mkv, %d frames of 720p30: per-frame clusters %.0f ns/frame, %" PRIu64 " bytes, %" PRIu64
           " writes; 1 s clusters %.0f ns/frame, %" PRIu64 " bytes, %" PRIu64
           " writes; ratio %.2f, %+.1f bytes/frame\n",
           n, best[0].ns_per_frame, best[0].bytes, best[0].writes, best[1].ns_per_frame, best[1].bytes,
           best[1].writes, ratio, bytes_per_frame);
  for (int i = 0; i < n; i++)
    free(aus[i]);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0)
    fprintf(stderr, "bench-camera: could not remove '%s'\n", root);
}

struct opts {
  int json, longrun, split, mkv, compare, runs, cpus;
  double seconds, max_seconds;
};

/* 0, or -1 after printing the usage. */
static int parse_opts(int argc, char **argv, struct opts *o)
{
  *o = (struct opts){.runs = 3, .seconds = 10, .max_seconds = 5};
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int more = i + 1 < argc;
    if (!strcmp(a, "--json") || !strcmp(a, "--long") || !strcmp(a, "--split") || !strcmp(a, "--mkv") ||
        !strcmp(a, "--compare")) {
      int *flag[] = {&o->json, &o->longrun, &o->split, &o->mkv, &o->compare};
      const char *names[] = {"--json", "--long", "--split", "--mkv", "--compare"};
      for (int k = 0; k < 5; k++)
        if (!strcmp(a, names[k]))
          *flag[k] = 1;
    } else if (!strcmp(a, "--seconds") && more) {
      o->seconds = o->max_seconds = atof(argv[++i]);
    } else if (!(!strcmp(a, "--runs") && more && (o->runs = atoi(argv[++i])) >= 1 &&
                 o->runs <= CMP_MAX_RUNS) &&
               !(!strcmp(a, "--cpus") && more && (o->cpus = atoi(argv[++i])) >= 1)) {
      fprintf(stderr, "usage: bench-camera [--json] [--seconds N] [--cpus N] [--long | --split | --mkv | "
                      "--compare [--runs N]]\n");
      return -1;
    }
  }
  return 0;
}

int main(int argc, char **argv)
{
  struct opts o;
  if (parse_opts(argc, argv, &o) < 0)
    return 64;
  int json = o.json, longrun = o.longrun, split = o.split, mkv = o.mkv, compare = o.compare, runs = o.runs,
      cpus = o.cpus;
  double seconds = o.seconds, max_seconds = o.max_seconds;
  pirec_log_set_level(PIREC_LOG_WARN);
  if (cpus > 0)
    pin_cpus(cpus);
  if (compare) {
    bench_compare(json, runs, seconds, cpus);
    return 0;
  }
  if (split) {
    bench_split(json);
    return 0;
  }
  if (mkv) {
    bench_mkv(json);
    return 0;
  }
  char root[512];
  make_root(root, sizeof root);

  struct result res[6] = {
      {.name = "rt_720p", .w = 1280, .h = 720, .fps = 30, .seconds = seconds},
      {.name = "rt_1080p", .w = 1920, .h = 1080, .fps = 30, .seconds = seconds},
      {.name = "max_720p", .w = 1280, .h = 720, .fps = 240, .seconds = max_seconds},
      {.name = "max_1080p", .w = 1920, .h = 1080, .fps = 240, .seconds = max_seconds},
      {.name = "hold_720p", .w = 1280, .h = 720, .fps = 30, .seconds = 6},
      {.name = "accept_720p_60s", .w = 1280, .h = 720, .fps = 30, .seconds = 60},
  };
  int n = longrun ? 6 : 5, inexact = 0;
  double src_cpu[6];
  for (int i = 0; i < n; i++) {
    src_cpu[i] = source_cpu(res[i].w, res[i].h, 60);
    record(&res[i], root, i == 4 ? 2000 : 0, i == 4 ? 2000 : 0, 1);
    inexact += !res[i].identity_exact;
    if (!json)
      print_text_result(&res[i], src_cpu[i]);
  }
  if (json) {
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    double load[3] = {0};
    if (getloadavg(load, 3) < 0)
      load[0] = -1;
    printf("{\n  \"bench\": \"camera\", \"cpus\": %ld, \"pinned_cpus\": %d, \"loadavg_1m\": %.2f,\n", online,
           cpus, load[0]);
    printf("  \"encoder\": \"libx264 ultrafast crf 23, no B-frames, ffmpeg child\",\n");
    printf("  \"runs\": {\n");
    for (int i = 0; i < n; i++)
      print_json_result(&res[i], src_cpu[i], i == n - 1);
    printf("  }\n}\n");
  }
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0)
    fprintf(stderr, "bench-camera: could not remove '%s'\n", root);
  return inexact ? 1 : 0;
}
