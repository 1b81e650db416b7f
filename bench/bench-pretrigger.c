/* bench-pretrigger: a camera's pre-trigger buffer (issue 24 item 3). A compressed source (an
 * H.264 720p30 clip at 4 Mbit/s, an MJPEG 1080p30 clip) is replayed at its own rate into a camera
 * that runs idle, no trial, for N + 3 s with pre_trigger = N, N in 0 (the current GOP only, the
 * reference), 2, 5 and 10 s; then a trial starts and the frames from before it are counted.
 *
 * Per run: the backlog's allocated bytes, its high water and the bytes in use at the start,
 * frames written from before the start and how far back the first one was captured, the
 * recorder's CPU per idle second (RUSAGE_SELF: the copy into the backlog; there is no encoder
 * between trials, the sources are stored as received) and the loop lag while idle (p99, max; 10 ms
 * ticks). Ratios are against N = 0 of the same format, in the same run.
 *
 * Prints one JSON object. Needs ffmpeg with libx264 to make the clips. --quick: N in 0, 2 only.
 * --idle S: the long idle run instead: H.264 720p30 only, N = 5, idle for S s (600: the issue's
 * 10 minutes; the clip is S + 10 s, about 0.5 MB/s in /tmp): memory must stay where it was after
 * N + a GOP.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <uv.h>

#include "pirec/camera.h"
#include "pirec/clock.h"
#include "pirec/log.h"
#include "pirec/looplag.h"

struct run {
  uv_loop_t loop;
  struct pirec_camera *cam;
  struct pirec_looplag lag;
  uv_timer_t timer;
  int phase, stopped;
  const char *dir;
  int64_t start_mono, idle_cpu_ns, first_mono;
  struct pirec_camera_status at_start, final;
  struct pirec_looplag_stats lag_idle;
};

static int64_t cpu_ns(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
         ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
}

static void closed(struct pirec_camera *cam, void *user)
{
  struct run *r = user;
  pirec_looplag_close(&r->lag, NULL);
  uv_close((uv_handle_t *)&r->timer, NULL);
}

static void stopped(struct pirec_camera *cam, int err, void *user)
{
  struct run *r = user;
  pirec_camera_status(cam, &r->final);
  pirec_camera_close(cam, closed, r);
}

static void on_timer(uv_timer_t *t)
{
  struct run *r = t->data;
  if (r->phase++ == 0) {
    pirec_looplag_stats(&r->lag, &r->lag_idle);
    r->idle_cpu_ns = cpu_ns() - r->idle_cpu_ns;
    pirec_camera_status(r->cam, &r->at_start);
    r->start_mono = pirec_clock_mono_ns();
    if (pirec_camera_trial_start(r->cam, r->dir, 1, 0) < 0) {
      fprintf(stderr, "bench-pretrigger: trial start failed\n");
      exit(1);
    }
    uv_timer_start(t, on_timer, 1000, 0);
  } else {
    pirec_camera_trial_stop(r->cam, stopped, r);
  }
}

/* The first row's mono_ns of DIR/t001_frames.csv. */
static int64_t first_row_mono(const char *dir)
{
  char path[600], line[512];
  snprintf(path, sizeof path, "%s/t001_frames.csv", dir);
  FILE *f = fopen(path, "r");
  int64_t mono = 0;
  if (f && fgets(line, sizeof line, f) && fgets(line, sizeof line, f))
    sscanf(line, "%*d,%" SCNd64, &mono);
  if (f)
    fclose(f);
  return mono;
}

static void run_one(const char *clip, const char *dir, int64_t pre_s, int64_t idle_s, struct run *r)
{
  memset(r, 0, sizeof *r);
  r->dir = dir;
  struct pirec_camera_settings s;
  pirec_camera_settings_default(&s);
  if (pirec_camera_settings_set_source(&s, clip) < 0)
    exit(1);
  s.width = s.height = 0;
  s.fps_num = 0;
  s.pre_trigger_ns = pre_s * 1000000000LL;
  uv_loop_init(&r->loop);
  if (pirec_camera_new(&r->loop, &s, NULL, NULL, &r->cam) < 0 || pirec_camera_start(r->cam) < 0) {
    fprintf(stderr, "bench-pretrigger: cannot start a camera on '%s'\n", clip);
    exit(1);
  }
  pirec_looplag_init(&r->loop, &r->lag, 10, 50000000, NULL);
  pirec_looplag_start(&r->lag);
  uv_timer_init(&r->loop, &r->timer);
  r->timer.data = r;
  r->idle_cpu_ns = cpu_ns();
  uv_timer_start(&r->timer, on_timer, (uint64_t)idle_s * 1000, 0);
  uv_run(&r->loop, UV_RUN_DEFAULT);
  uv_loop_close(&r->loop);
  r->first_mono = first_row_mono(dir);
}

static int make_clip(const char *path, const char *codec_args, const char *size, int seconds)
{
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "ffmpeg -nostdin -v error -f lavfi -i testsrc2=size=%s:rate=30 -t %d %s -y '%s'",
           size, seconds, codec_args, path);
  return system(cmd);
}

int main(int argc, char **argv)
{
  int quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
  int64_t long_idle = argc > 2 && strcmp(argv[1], "--idle") == 0 ? atoll(argv[2]) : 0;
  pirec_log_set_level(PIREC_LOG_ERROR);
  char tmp[] = "/tmp/bench-pretrigger-XXXXXX";
  if (!mkdtemp(tmp))
    return 1;
  struct {
    const char *name, *file, *args, *size;
  } fmts[] = {
      {"h264_720p30", "clip.mp4", "-c:v libx264 -preset ultrafast -bf 0 -g 30 -b:v 4M", "1280x720"},
      {"mjpeg_1080p30", "clip.mkv", "-c:v mjpeg -q:v 5", "1920x1080"},
  };
  const int64_t ns[] = {0, 2, 5, 10}, long_ns[] = {5};
  int nn = long_idle ? 1 : quick ? 2 : 4, nf = long_idle ? 1 : 2;
  printf("{\"bench\":\"pretrigger\",\"runs\":[");
  for (int f = 0; f < nf; f++) {
    char clip[300];
    snprintf(clip, sizeof clip, "%s/%s", tmp, fmts[f].file);
    if (make_clip(clip, fmts[f].args, fmts[f].size, long_idle ? (int)long_idle + 10 : 20) != 0) {
      fprintf(stderr, "bench-pretrigger: ffmpeg could not make '%s'\n", clip);
      return 1;
    }
    double ref_cpu = 0;
    for (int i = 0; i < nn; i++) {
      char dir[400];
      snprintf(dir, sizeof dir, "%s/%s_%" PRId64, tmp, fmts[f].name, ns[i]);
      struct run r;
      int64_t n = long_idle ? long_ns[i] : ns[i];
      run_one(clip, dir, n, long_idle ? long_idle : n + 3, &r);
      double idle_s = (double)(long_idle ? long_idle : n + 3);
      double cpu_per_s = (double)r.idle_cpu_ns / 1e6 / idle_s;
      if (i == 0)
        ref_cpu = cpu_per_s;
      printf("%s{\"format\":\"%s\",\"pre_trigger_s\":%" PRId64 ",\"backlog_bytes\":%" PRIu64
             ",\"backlog_high_water\":%" PRIu64 ",\"backlog_used_at_start\":%" PRIu64
             ",\"frames_before_start\":%" PRIu64 ",\"first_frame_before_start_s\":%.3f"
             ",\"idle_cpu_ms_per_s\":%.2f,\"idle_cpu_vs_n0\":%.2f,\"idle_loop_lag_p99_ms\":%.3f"
             ",\"idle_loop_lag_max_ms\":%.3f}",
             f || i ? "," : "", fmts[f].name, n, r.final.backlog_bytes, r.final.backlog_high_water,
             r.at_start.backlog_used, r.final.frames_before_start, (r.start_mono - r.first_mono) / 1e9,
             cpu_per_s, ref_cpu > 0 ? cpu_per_s / ref_cpu : 0, r.lag_idle.p99_ns / 1e6,
             r.lag_idle.max_ns / 1e6);
      fflush(stdout);
    }
  }
  printf("]}\n");
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  return system(cmd) == 0 ? 0 : 1;
}
