/* bench-remux: pirec's remux of a long 720p30 H.264 recording against ffmpeg's own stream copy,
 * measured alternately in the same run. Prints one JSON object.
 *
 *   build/bench/bench-remux [--minutes N] [--runs N] [--cache DIR] [--json]
 *
 * The input (testsrc2 720p30 through libx264 ultrafast, plus a frames CSV with jittered timestamps
 * and the real byte offsets) is generated once into the cache directory
 * ($PIREC_BENCH_CACHE, default $XDG_CACHE_HOME/pirec or ~/.cache/pirec). */
#include "helpers/remux-gen.h"
#include "pirec/clock.h"
#include "pirec/remux.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

static int64_t median(int64_t *v, int n)
{
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
      int64_t x = v[j];
      v[j] = v[j - 1];
      v[j - 1] = x;
    }
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* CPU time (user + system) of this process and of its waited-for descendants, in ns. */
static int64_t cpu_ns(void)
{
  struct rusage self, kids;
  getrusage(RUSAGE_SELF, &self);
  getrusage(RUSAGE_CHILDREN, &kids);
  return (int64_t)(self.ru_utime.tv_sec + self.ru_stime.tv_sec + kids.ru_utime.tv_sec +
                   kids.ru_stime.tv_sec) *
             1000000000 +
         (int64_t)(self.ru_utime.tv_usec + self.ru_stime.tv_usec + kids.ru_utime.tv_usec +
                   kids.ru_stime.tv_usec) *
             1000;
}

static int make_input(const char *dir, int minutes, char *video, size_t cap)
{
  char csv[1100], tmp[1200], src[64], dur[32];
  struct stat st;
  int64_t *pos, *size, *t, n;

  snprintf(video, cap, "%s/remux-720p30-%dmin.h264", dir, minutes);
  snprintf(csv, sizeof csv, "%s/remux-720p30-%dmin_frames.csv", dir, minutes);
  if (stat(video, &st) == 0 && stat(csv, &st) == 0)
    return 0;
  fprintf(stderr, "bench-remux: generating %d min of 720p30 H.264 into '%s' (once)\n", minutes, dir);
  snprintf(tmp, sizeof tmp, "%s.part", video);
  snprintf(src, sizeof src, "testsrc2=size=1280x720:rate=30");
  snprintf(dur, sizeof dur, "%d", minutes * 60);
  {
    char *argv[] = {"ffmpeg", "-nostdin", "-v",      "error", "-y",      "-f",      "lavfi",     "-i",
                    src,      "-t",       dur,       "-c:v",  "libx264", "-preset", "ultrafast", "-g",
                    "60",     "-pix_fmt", "yuv420p", "-f",    "h264",    tmp,       NULL};
    if (remux_gen_run(argv, NULL, 0) != 0 || rename(tmp, video) != 0) {
      fprintf(stderr, "bench-remux: cannot generate '%s'\n", video);
      return -EIO;
    }
  }
  n = remux_gen_packets(video, &pos, &size);
  if (n <= 0)
    return -EIO;
  t = remux_gen_times(n, INT64_C(1000000000), 4000000, 1234);
  if (remux_gen_csv(csv, n, t, NULL, size, pos, 0) < 0)
    return -EIO;
  free(pos);
  free(size);
  free(t);
  return 0;
}

int main(int argc, char **argv)
{
  int minutes = 10, runs = 5;
  char cache[1024], video[1100], out_p[1200], out_f[1200], cli[1200];
  const char *env = getenv("PIREC_BENCH_CACHE");
  int64_t remux_ns[16], ffmpeg_ns[16], cli_ns[16], frames = 0, bytes = 0;
  int64_t remux_cpu[16], ffmpeg_cpu[16], cli_cpu[16];
  int have_cli;
  struct pirec_remux_result res;
  struct pirec_remux_options opt;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--minutes") == 0 && i + 1 < argc)
      minutes = atoi(argv[++i]);
    else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--cache") == 0 && i + 1 < argc)
      env = argv[++i];
    else if (strcmp(argv[i], "--json") == 0)
      ; /* JSON is the only output */
    else {
      fprintf(stderr, "usage: bench-remux [--minutes N] [--runs N] [--cache DIR] [--json]\n");
      return 64;
    }
  }
  if (minutes < 1 || runs < 1 || runs > 16) {
    fprintf(stderr, "bench-remux: --minutes >= 1, --runs 1..16\n");
    return 64;
  }
  if (env && *env)
    snprintf(cache, sizeof cache, "%s", env);
  else if (getenv("XDG_CACHE_HOME"))
    snprintf(cache, sizeof cache, "%s/pirec", getenv("XDG_CACHE_HOME"));
  else
    snprintf(cache, sizeof cache, "%s/.cache/pirec", getenv("HOME") ? getenv("HOME") : "/tmp");
  {
    char *argv_mk[] = {"mkdir", "-p", cache, NULL};
    remux_gen_run(argv_mk, NULL, 0);
  }
  if (make_input(cache, minutes, video, sizeof video) < 0)
    return 1;
  snprintf(out_p, sizeof out_p, "%s/bench-out-pirec.mp4", cache);
  snprintf(out_f, sizeof out_f, "%s/bench-out-ffmpeg.mp4", cache);
  snprintf(cli, sizeof cli, "%s/apps/pirec-remux", PIREC_BUILD_DIR);
  have_cli = access(cli, X_OK) == 0;

  memset(&opt, 0, sizeof opt);
  opt.output_path = out_p;
  /* Each tool writes as many bytes as the input; the kernel's writeback of one run's output must
   * not be billed to the next, so every measurement starts after sync() with the old outputs
   * removed, and the order rotates between runs. Run -1 is a warm-up (page cache). */
  for (int r = -1; r < runs; r++) {
    for (int step = 0; step < 3; step++) {
      int which = (step + (r < 0 ? 0 : r)) % 3; /* 0 engine, 1 ffmpeg, 2 the pirec-remux binary */
      int64_t t0, t1, c0, c1;
      unlink(out_p);
      unlink(out_f);
      sync();
      c0 = cpu_ns();
      t0 = pirec_clock_mono_ns();
      if (which == 0) {
        if (pirec_remux_file(video, &opt, &res, NULL, NULL) < 0) {
          fprintf(stderr, "bench-remux: %s\n", res.error);
          return 1;
        }
        frames = res.frames;
        bytes = res.input_bytes;
      } else if (which == 1) {
        char *fa[] = {"ffmpeg", "-nostdin", "-v", "error", "-y", "-i", video, "-c", "copy", out_f, NULL};
        if (remux_gen_run(fa, NULL, 0) != 0) {
          fprintf(stderr, "bench-remux: ffmpeg copy failed\n");
          return 1;
        }
      } else if (have_cli) {
        char *ca[] = {cli, "--output", out_p, video, NULL};
        char sink[4096];
        if (remux_gen_run(ca, sink, sizeof sink) != 0) {
          fprintf(stderr, "bench-remux: pirec-remux failed: %s\n", sink);
          return 1;
        }
      }
      t1 = pirec_clock_mono_ns();
      c1 = cpu_ns();
      if (r >= 0) {
        (which == 0 ? remux_ns : which == 1 ? ffmpeg_ns : cli_ns)[r] = t1 - t0;
        (which == 0 ? remux_cpu : which == 1 ? ffmpeg_cpu : cli_cpu)[r] = c1 - c0;
      }
    }
  }
  unlink(out_p);
  unlink(out_f);
  {
    double rs = (double)median(remux_ns, runs) / 1e9, fs = (double)median(ffmpeg_ns, runs) / 1e9;
    double cs = have_cli ? (double)median(cli_ns, runs) / 1e9 : -1;
    double rc = (double)median(remux_cpu, runs) / 1e9, fc = (double)median(ffmpeg_cpu, runs) / 1e9;
    double cc = have_cli ? (double)median(cli_cpu, runs) / 1e9 : -1;
    /* Medians of the runs; *_cpu_s is user + system time, steadier than wall time on a shared box. */
    printf("{\"bench\":\"remux\",\"minutes\":%d,\"runs\":%d,\"frames\":%" PRId64 ",\"input_bytes\":%" PRId64
           ",\"remux_s\":%.3f,\"ffmpeg_copy_s\":%.3f,"
           "\"ratio\":%.3f,\"remux_cli_s\":%.3f,\"cli_ratio\":%.3f,\"remux_cpu_s\":%.3f,"
           "\"ffmpeg_copy_cpu_s\":%.3f,\"cpu_ratio\":%.3f,\"remux_cli_cpu_s\":%.3f,"
           "\"remux_mb_s\":%.1f}\n",
           minutes, runs, frames, bytes, rs, fs, rs / fs, cs, have_cli ? cs / fs : -1.0, rc, fc, rc / fc, cc,
           (double)bytes / 1e6 / rs);
  }
  return 0;
}
