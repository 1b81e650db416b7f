/* bench-remux: pirec's remux of a long recording against ffmpeg's own stream copy, and pirec-remux
 * --format mkv against mkvmerge --timestamps, measured alternately in the same run. Prints one JSON
 * object per input.
 *
 *   build/bench/bench-remux [--minutes N] [--runs N] [--cache DIR] [--input h264|camera|scene|all]
 *
 * Inputs, generated once into the cache directory ($PIREC_BENCH_CACHE, default
 * $XDG_CACHE_HOME/pirec or ~/.cache/pirec), each with a frames CSV (jittered timestamps):
 *   h264    testsrc2 720p30 through libx264 ultrafast (GOP 60), the raw .h264 stream
 *   camera  the same units in the MKV pirec-camera writes: media/mkv through a file sink, one
 *           cluster per frame, sealed as a clean trial stop seals it
 *   scene   an eye tracker's scene video the same way: 1088x1080 at 30 fps (the Pupil Invisible
 *           scene camera's size), muxed by the same writer the eye tracker uses
 * Every pirec figure includes its verification pass (every packet read back and compared). */
#include "helpers/remux-gen.h"
#include "media/mkv.h"
#include "pirec/clock.h"
#include "pirec/remux.h"
#include "pirec/sink.h"

#include <errno.h>
#include <fcntl.h>
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

/* An access unit holds an IDR slice (NAL type 5). */
static int has_idr(const uint8_t *p, size_t len)
{
  for (size_t i = 0; i + 3 < len; i++)
    if (p[i] == 0 && p[i + 1] == 0 && p[i + 2] == 1 && (p[i + 3] & 0x1f) == 5)
      return 1;
  return 0;
}

static void on_mux_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  (void)sink;
  *(int *)user = final->error ? final->error : 1;
}

/* The units of the raw stream h264 (positions and sizes from ffprobe) muxed into mkv the way the
 * recorders do: pirec_mkv into a file sink, then the segment size written in as a clean stop does. */
static int mux_like_recorder(const char *h264, const char *mkv, int64_t n, const int64_t *pos,
                             const int64_t *size, const int64_t *t)
{
  uv_loop_t loop;
  struct pirec_sink_options o;
  struct pirec_sink *sink;
  struct pirec_mkv *m;
  int fd = open(h264, O_RDONLY | O_CLOEXEC), closed = 0, err = 0;
  uint8_t *buf = malloc(8u << 20);
  if (fd < 0 || !buf || uv_loop_init(&loop) != 0)
    return -EIO;
  pirec_sink_options_default(&o);
  o.ring_bytes = 64u << 20;
  if (pirec_sink_new(&loop, mkv, &o, NULL, NULL, &sink) < 0 || pirec_mkv_new(sink, 0, 0, 30, 1, &m) < 0)
    return -EIO;
  for (int64_t i = 0; i < n && err == 0; i++) {
    size_t len = (size_t)size[i];
    if (len > (8u << 20) || pread(fd, buf, len, pos[i]) != (ssize_t)len)
      return -EIO;
    struct pirec_sink_counters c;
    for (pirec_sink_counters(sink, &c); c.ring_capacity - c.ring_used < len + pirec_mkv_margin() + 4096;
         pirec_sink_counters(sink, &c)) {
      pirec_sink_flush(sink);
      uv_run(&loop, UV_RUN_ONCE);
    }
    err = pirec_mkv_write(m, buf, len, has_idr(buf, len), t[i] - t[0]);
    uv_run(&loop, UV_RUN_NOWAIT);
  }
  if (err == 0)
    err = pirec_mkv_finish(m);
  pirec_sink_close(sink, on_mux_closed, &closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  int64_t off;
  uint8_t seal[8];
  if (err == 0 && closed == 1 && pirec_mkv_seal(m, &off, seal) == 0) {
    int wfd = open(mkv, O_WRONLY | O_CLOEXEC);
    if (wfd < 0 || pwrite(wfd, seal, 8, off) != 8)
      err = -EIO;
    if (wfd >= 0)
      close(wfd);
  } else {
    err = err ? err : -EIO;
  }
  pirec_mkv_free(m);
  free(buf);
  close(fd);
  uv_loop_close(&loop);
  return err;
}

/* kind: "h264" (the raw stream), "camera" or "scene" (an MKV as the recorders write it). */
static int make_input(const char *dir, int minutes, const char *kind, char *video, size_t cap)
{
  char csv[1100], tmp[1200], src[64], dur[32], raw[1100];
  struct stat st;
  int64_t *pos, *size, *t, n;
  int scene = strcmp(kind, "scene") == 0, mkv = strcmp(kind, "h264") != 0;
  const char *res = scene ? "1088x1080" : "1280x720";
  const char *stem = scene ? "remux-scene-1088p30" : mkv ? "remux-camera-720p30" : "remux-720p30";

  snprintf(raw, sizeof raw, "%s/%s-%dmin.h264", dir, scene ? "remux-1088p30" : "remux-720p30", minutes);
  snprintf(video, cap, "%s/%s-%dmin%s", dir, stem, minutes, mkv ? ".mkv" : ".h264");
  snprintf(csv, sizeof csv, "%s/%s-%dmin_frames.csv", dir, stem, minutes);
  if (stat(video, &st) == 0 && stat(csv, &st) == 0)
    return 0;
  fprintf(stderr, "bench-remux: generating %d min of %s 30 fps H.264 into '%s' (once)\n", minutes, res, dir);
  snprintf(tmp, sizeof tmp, "%s.part", raw);
  snprintf(src, sizeof src, "testsrc2=size=%s:rate=30", res);
  snprintf(dur, sizeof dur, "%d", minutes * 60);
  {
    char *argv[] = {"ffmpeg", "-nostdin", "-v",      "error", "-y",      "-f",      "lavfi",     "-i",
                    src,      "-t",       dur,       "-c:v",  "libx264", "-preset", "ultrafast", "-g",
                    "60",     "-pix_fmt", "yuv420p", "-f",    "h264",    tmp,       NULL};
    if (stat(raw, &st) != 0 && (remux_gen_run(argv, NULL, 0) != 0 || rename(tmp, raw) != 0)) {
      fprintf(stderr, "bench-remux: cannot generate '%s'\n", raw);
      return -EIO;
    }
  }
  n = remux_gen_packets(raw, &pos, &size);
  if (n <= 0)
    return -EIO;
  t = remux_gen_times(n, INT64_C(1000000000), 4000000, 1234);
  snprintf(tmp, sizeof tmp, "%s.part.mkv", video);
  if (mkv && (mux_like_recorder(raw, tmp, n, pos, size, t) < 0 || rename(tmp, video) != 0)) {
    fprintf(stderr, "bench-remux: cannot mux '%s'\n", video);
    return -EIO;
  }
  /* the raw stream's CSV has where each unit is in the file; an MKV's has only their sizes */
  if (remux_gen_csv(csv, n, t, NULL, size, mkv ? NULL : pos, 0) < 0)
    return -EIO;
  /* mkvmerge's timestamps v2 file: the same times, in ms */
  snprintf(tmp, sizeof tmp, "%s.timestamps.txt", video);
  FILE *ts = fopen(tmp, "w");
  if (!ts)
    return -EIO;
  fprintf(ts, "# timestamp format v2\n");
  for (int64_t i = 0; i < n; i++)
    fprintf(ts, "%.6f\n", (double)(t[i] - t[0]) / 1e6);
  if (fclose(ts) != 0)
    return -EIO;
  free(pos);
  free(size);
  free(t);
  return 0;
}

enum { TOOL_ENGINE, TOOL_FFMPEG, TOOL_CLI, TOOL_CLI_MKV, TOOL_MKVMERGE, NTOOLS };
static const char *const tool_names[NTOOLS] = {"remux", "ffmpeg_copy", "remux_cli", "remux_mkv", "mkvmerge"};

struct tools {
  char cli[1200], out_mp4[1200], out_ref[1200], out_mkv[1200], out_mkvmerge[1200];
  int have_cli, have_mkvmerge;
};

/* One run of one tool on video; returns 0 or -1 (message printed). */
static int run_tool(int which, const char *video, const struct tools *tl, int64_t *frames, int64_t *bytes)
{
  char sink[4096], ts[1200];
  if (which == TOOL_ENGINE) {
    struct pirec_remux_options opt;
    struct pirec_remux_result res;
    memset(&opt, 0, sizeof opt);
    opt.output_path = tl->out_mp4;
    if (pirec_remux_file(video, &opt, &res, NULL, NULL) < 0) {
      fprintf(stderr, "bench-remux: %s\n", res.error);
      return -1;
    }
    *frames = res.frames;
    *bytes = res.input_bytes;
    return 0;
  }
  if (which == TOOL_FFMPEG) {
    char *fa[] = {"ffmpeg", "-nostdin",          "-v", "error", "-y", "-i", (char *)video, "-c",
                  "copy",   (char *)tl->out_ref, NULL};
    return remux_gen_run(fa, NULL, 0) == 0 ? 0 : -1;
  }
  if (which == TOOL_MKVMERGE) {
    snprintf(ts, sizeof ts, "0:%s.timestamps.txt", video);
    char *ma[] = {"mkvmerge", "-q", "-o", (char *)tl->out_mkvmerge, "--timestamps", ts, (char *)video, NULL};
    int rc = remux_gen_run(ma, sink, sizeof sink);
    return rc == 0 || rc == 1 ? 0 : -1; /* 1: warnings */
  }
  char *ca[] = {(char *)tl->cli,
                "--output",
                (char *)(which == TOOL_CLI ? tl->out_mp4 : tl->out_mkv),
                "--format",
                which == TOOL_CLI ? "mp4" : "mkv",
                (char *)video,
                NULL};
  if (remux_gen_run(ca, sink, sizeof sink) != 0) {
    fprintf(stderr, "bench-remux: pirec-remux failed: %s\n", sink);
    return -1;
  }
  return 0;
}

static int tool_available(int which, const struct tools *tl)
{
  if (which == TOOL_CLI || which == TOOL_CLI_MKV)
    return tl->have_cli;
  if (which == TOOL_MKVMERGE)
    return tl->have_mkvmerge;
  return 1;
}

static void remove_outputs(const struct tools *tl)
{
  unlink(tl->out_mp4);
  unlink(tl->out_ref);
  unlink(tl->out_mkv);
  unlink(tl->out_mkvmerge);
}

/* Every tool `runs` times, after a warm-up round, in rotating order, each after sync() with the old
 * outputs removed (one tool's writeback must not be billed to the next). Prints one JSON line. */
static int measure(const char *kind, const char *video, int minutes, int runs, const struct tools *tl)
{
  int64_t wall[NTOOLS][16], cpu[NTOOLS][16], frames = 0, bytes = 0;
  for (int r = -1; r < runs; r++) {
    for (int step = 0; step < NTOOLS; step++) {
      int which = (step + (r < 0 ? 0 : r)) % NTOOLS;
      if (!tool_available(which, tl))
        continue;
      remove_outputs(tl);
      sync();
      int64_t c0 = cpu_ns(), t0 = pirec_clock_mono_ns();
      if (run_tool(which, video, tl, &frames, &bytes) < 0)
        return -1;
      int64_t t1 = pirec_clock_mono_ns(), c1 = cpu_ns();
      if (r >= 0) {
        wall[which][r] = t1 - t0;
        cpu[which][r] = c1 - c0;
      }
    }
  }
  remove_outputs(tl);
  double w[NTOOLS], c[NTOOLS];
  for (int k = 0; k < NTOOLS; k++) {
    w[k] = tool_available(k, tl) ? (double)median(wall[k], runs) / 1e9 : -1;
    c[k] = tool_available(k, tl) ? (double)median(cpu[k], runs) / 1e9 : -1;
  }
  printf("{\"bench\":\"remux\",\"input\":\"%s\",\"minutes\":%d,\"runs\":%d,\"frames\":%" PRId64
         ",\"input_bytes\":%" PRId64,
         kind, minutes, runs, frames, bytes);
  for (int k = 0; k < NTOOLS; k++)
    printf(",\"%s_s\":%.3f,\"%s_cpu_s\":%.3f", tool_names[k], w[k], tool_names[k], c[k]);
  /* Medians of the runs; *_cpu_s is user + system time, steadier than wall time on a shared box. */
  printf(",\"ratio\":%.3f,\"cli_ratio\":%.3f,\"cpu_ratio\":%.3f,\"cli_cpu_ratio\":%.3f", w[0] / w[1],
         w[2] / w[1], c[0] / c[1], c[2] / c[1]);
  printf(",\"mkv_ratio\":%.3f,\"mkv_cpu_ratio\":%.3f,\"remux_mb_s\":%.1f}\n", w[3] / w[4], c[3] / c[4],
         (double)bytes / 1e6 / w[0]);
  fflush(stdout);
  return 0;
}

int main(int argc, char **argv)
{
  int minutes = 10, runs = 5;
  char cache[1024], video[1100];
  const char *env = getenv("PIREC_BENCH_CACHE"), *input = "all";
  struct tools tl;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--minutes") == 0 && i + 1 < argc)
      minutes = atoi(argv[++i]);
    else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc)
      runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--cache") == 0 && i + 1 < argc)
      env = argv[++i];
    else if (strcmp(argv[i], "--input") == 0 && i + 1 < argc)
      input = argv[++i];
    else if (strcmp(argv[i], "--json") == 0)
      ; /* JSON is the only output */
    else {
      fprintf(stderr,
              "usage: bench-remux [--minutes N] [--runs N] [--cache DIR] [--input h264|camera|scene|all]\n");
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
  snprintf(tl.out_mp4, sizeof tl.out_mp4, "%s/bench-out-pirec.mp4", cache);
  snprintf(tl.out_ref, sizeof tl.out_ref, "%s/bench-out-ffmpeg.mp4", cache);
  snprintf(tl.out_mkv, sizeof tl.out_mkv, "%s/bench-out-pirec.mkv", cache);
  snprintf(tl.out_mkvmerge, sizeof tl.out_mkvmerge, "%s/bench-out-mkvmerge.mkv", cache);
  snprintf(tl.cli, sizeof tl.cli, "%s/apps/pirec-remux", PIREC_BUILD_DIR);
  tl.have_cli = access(tl.cli, X_OK) == 0;
  {
    char *mv[] = {"mkvmerge", "--version", NULL};
    char out[256];
    tl.have_mkvmerge = remux_gen_run(mv, out, sizeof out) == 0;
  }
  static const char *const kinds[] = {"h264", "camera", "scene"};
  for (int k = 0; k < 3; k++) {
    if (strcmp(input, "all") != 0 && strcmp(input, kinds[k]) != 0)
      continue;
    if (make_input(cache, minutes, kinds[k], video, sizeof video) < 0 ||
        measure(kinds[k], video, minutes, runs, &tl) < 0)
      return 1;
  }
  return 0;
}
