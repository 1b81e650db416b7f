/* The remux engine against real inputs made by ffmpeg (lavfi testsrc2 + libx264) and checked with
 * the real ffprobe: exact pts per packet, B-frames, crash recovery, corrupt inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers/remux-gen.h"
#include "pirec/remux.h"

#define NS INT64_C(1000000000)

struct fixture {
  char dir[256];
  char path[512];
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(remux_gen_tmpdir(f->dir, sizeof f->dir), 0);
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  remux_gen_rmrf(f->dir);
  free(f);
  return 0;
}

static const char *at(struct fixture *f, const char *name)
{
  snprintf(f->path, sizeof f->path, "%s/%s", f->dir, name);
  return f->path;
}

static int64_t round_div(int64_t a, int64_t b)
{
  return a >= 0 ? (a + b / 2) / b : -((-a + b / 2) / b);
}

static int cmp64(const void *a, const void *b)
{
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* Every packet's pts - pts0 (sorted, so B-frame decode order does not matter) must equal the
 * captured time since frame 0 rounded to the time base; ffprobe reads the file independently. */
static void assert_pts_exact(const char *out, const int64_t *t, int64_t n, int want_den)
{
  int64_t *pts = NULL;
  int den = 0;
  int64_t got = remux_gen_probe_pts(out, 0, &pts, &den);

  assert_int_equal(got, n);
  assert_int_equal(den, want_den);
  qsort(pts, (size_t)n, sizeof *pts, cmp64);
  for (int64_t i = 0; i < n; i++) {
    int64_t want = round_div((t[i] - t[0]) * want_den, NS);
    if (pts[i] - pts[0] != want)
      fail_msg("frame %lld: pts - pts0 = %lld, want %lld", (long long)i, (long long)(pts[i] - pts[0]),
               (long long)want);
  }
  free(pts);
}

/* ffmpeg decodes the whole file and prints nothing at -v error. */
static void assert_decodes_clean(const char *out)
{
  char err[4096];
  char *argv[] = {"sh", "-c",
                  "ffmpeg -nostdin -v error -i \"$0\" -fps_mode passthrough -enc_time_base -1 "
                  "-f null - 2>&1" /* frames keep their own times: no collisions at a guessed rate */,
                  (char *)out, NULL};
  assert_int_equal(remux_gen_run(argv, err, sizeof err), 0);
  if (err[0] != '\0')
    fail_msg("decoding '%s' printed: %s", out, err);
}

static void test_vfr_jitter_mp4(void **state)
{
  struct fixture *f = *state;
  /* 10 s at 30 fps; PIREC_REMUX_TEST_SECONDS=60 runs the acceptance length (test-remux-60s). */
  const char *secs = getenv("PIREC_REMUX_TEST_SECONDS");
  const int n = 30 * (secs && atoi(secs) > 0 ? atoi(secs) : 10);
  char video[512], out[512];
  struct pirec_remux_result res;
  struct pirec_remux_options opt = {0};
  int64_t *mono = remux_gen_times(n, 5 * NS, 8000000, 7);
  int64_t *dev = remux_gen_times(n, 2 * NS, 9000000, 11);

  snprintf(video, sizeof video, "%s", at(f, "t001.mkv"));
  assert_int_equal(remux_gen_video(video, n, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "t001_frames.csv"), n, mono, dev, NULL, NULL, 0), 0);
  assert_int_equal(pirec_remux_file(video, &opt, &res, NULL, NULL), 0);
  assert_string_equal(res.error, "");
  assert_int_equal(res.frames, n);
  assert_int_equal(res.clock_used, PIREC_REMUX_CLOCK_DEVICE);
  snprintf(out, sizeof out, "%s", at(f, "t001.mp4"));
  assert_string_equal(res.output_path, out);
  assert_pts_exact(out, dev, n, 90000);
  assert_decodes_clean(out);
  /* The input stays; no temporary file is left. */
  assert_int_equal(access(video, F_OK), 0);
  assert_int_equal(access(at(f, "t001.mp4.part"), F_OK), -1);

  assert_int_equal(pirec_remux_verify(out, NULL, &res), 0);
  assert_int_equal(res.frames, n);

  /* --clock mono picks the other column; verify with the device clock then fails with numbers. */
  opt.clock = PIREC_REMUX_CLOCK_MONO;
  assert_int_equal(pirec_remux_file(video, &opt, &res, NULL, NULL), 0);
  assert_pts_exact(out, mono, n, 90000);
  opt.clock = PIREC_REMUX_CLOCK_DEVICE;
  assert_int_equal(pirec_remux_verify(out, &opt, &res), -EPROTO);
  assert_non_null(strstr(res.error, "expected"));
  free(mono);
  free(dev);
}

/* Frames that arrived in one read are stamped 1 ns apart (the eye tracker's scene) or a few us
 * apart (an MJPEG stream parsed from one buffer): less than one output tick. Each goes one tick
 * after the one before, the result says how many and by how much, and --verify agrees. The code
 * before refused the file ("less than one tick of the output time base"). */
static void test_frames_closer_than_a_tick(void **state)
{
  struct fixture *f = *state;
  const int n = 60;
  char video[512], out[512];
  struct pirec_remux_result res;
  struct pirec_remux_options opt = {0};
  int64_t *mono = remux_gen_times(n, 5 * NS, 0, 0);

  mono[20] = mono[19] + 1;    /* 1 ns: the same read */
  mono[21] = mono[20] + 1;    /* and a third in it */
  mono[40] = mono[39] + 4500; /* 4.5 us */
  snprintf(video, sizeof video, "%s", at(f, "t001.mkv"));
  assert_int_equal(remux_gen_video(video, n, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "t001_frames.csv"), n, mono, NULL, NULL, NULL, 0), 0);
  opt.clock = PIREC_REMUX_CLOCK_MONO;
  assert_int_equal(pirec_remux_file(video, &opt, &res, NULL, NULL), 0);
  assert_string_equal(res.error, "");
  assert_int_equal(res.frames, n);
  assert_int_equal(res.frames_moved, 3);
  /* frame 21 goes two ticks (22.2 us) after its own rounded time, which was frame 19's */
  assert_true(res.max_moved_ns > 22000 && res.max_moved_ns < 22300);
  snprintf(out, sizeof out, "%s", at(f, "t001.mp4"));
  int64_t *pts = NULL;
  int den = 0;
  assert_int_equal(remux_gen_probe_pts(out, 0, &pts, &den), n);
  qsort(pts, (size_t)n, sizeof *pts, cmp64);
  for (int i = 1; i < n; i++)
    assert_true(pts[i] > pts[i - 1]);
  assert_int_equal(pts[20] - pts[19], 1);
  assert_int_equal(pts[21] - pts[19], 2);
  assert_int_equal(pts[40] - pts[39], 1);
  /* every frame not moved is exactly on its captured time */
  for (int i = 0; i < n; i++)
    if (i != 20 && i != 21 && i != 40)
      assert_int_equal(pts[i] - pts[0], round_div((mono[i] - mono[0]) * 90000, NS));
  free(pts);
  assert_decodes_clean(out);
  assert_int_equal(pirec_remux_verify(out, &opt, &res), 0);
  assert_int_equal(res.frames, n);
  free(mono);
}

static void test_mkv_output_and_timestamps_file(void **state)
{
  struct fixture *f = *state;
  const int n = 90;
  char video[512], ts[600];
  struct pirec_remux_result res;
  struct pirec_remux_options opt = {.format = PIREC_REMUX_MKV, .flags = PIREC_REMUX_WRITE_TIMESTAMPS};
  int64_t *mono = remux_gen_times(n, 1 * NS, 5000000, 3);
  FILE *fp;
  char line[128];
  int64_t lines = 0;

  snprintf(video, sizeof video, "%s", at(f, "t002.mkv"));
  assert_int_equal(remux_gen_video(video, n, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "t002_frames.csv"), n, mono, NULL, NULL, NULL, 0), 0);
  assert_int_equal(pirec_remux_file(video, &opt, &res, NULL, NULL), 0);
  assert_int_equal(res.clock_used, PIREC_REMUX_CLOCK_MONO); /* no device timestamps */
  assert_string_equal(res.output_path, at(f, "t002_timed.mkv"));
  assert_pts_exact(res.output_path, mono, n, 1000);
  assert_int_equal(pirec_remux_verify(res.output_path, &opt, &res), 0);

  snprintf(ts, sizeof ts, "%s.timestamps.txt", at(f, "t002_timed.mkv"));
  fp = fopen(ts, "r");
  assert_non_null(fp);
  assert_non_null(fgets(line, sizeof line, fp));
  assert_string_equal(line, "# timestamp format v2\n");
  while (fgets(line, sizeof line, fp)) {
    long long ms, frac;
    assert_int_equal(sscanf(line, "%lld.%6lld", &ms, &frac), 2);
    assert_int_equal(ms * 1000000 + frac, mono[lines] - mono[0]);
    lines++;
  }
  fclose(fp);
  assert_int_equal(lines, n);
  free(mono);
}

static void test_cfr(void **state)
{
  struct fixture *f = *state;
  const int n = 60;
  char video[512];
  struct pirec_remux_result res;
  struct pirec_remux_options opt = {.flags = PIREC_REMUX_CFR};
  int64_t *mono = remux_gen_times(n, 1 * NS, 6000000, 5);
  int64_t *pts = NULL, span = mono[n - 1] - mono[0];
  int den;

  snprintf(video, sizeof video, "%s", at(f, "t003.mkv"));
  assert_int_equal(remux_gen_video(video, n, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "t003_frames.csv"), n, mono, NULL, NULL, NULL, 0), 0);
  assert_int_equal(pirec_remux_file(video, &opt, &res, NULL, NULL), 0);
  assert_int_equal(remux_gen_probe_pts(res.output_path, 0, &pts, &den), n);
  assert_int_equal(den, 90000);
  for (int64_t i = 0; i < n; i++)
    assert_int_equal(pts[i] - pts[0], round_div(i * span * 9, (n - 1) * 100000)); /* 90000/1e9 */
  assert_int_equal(pirec_remux_verify(res.output_path, &opt, &res), 0);
  free(pts);
  free(mono);
}

/* Raw H.264 with the CSV's bytes/offset columns taken from ffprobe's packet table. */
static void test_raw_h264_offsets(void **state)
{
  struct fixture *f = *state;
  const int n = 120;
  char video[512];
  struct pirec_remux_result res;
  int64_t *pos, *size, *mono = remux_gen_times(n, 3 * NS, 4000000, 9);

  snprintf(video, sizeof video, "%s", at(f, "cam.h264"));
  assert_int_equal(remux_gen_video(video, n, "160x120", 0), 0);
  assert_int_equal(remux_gen_packets(video, &pos, &size), n);
  assert_int_equal(remux_gen_csv(at(f, "cam_frames.csv"), n, mono, NULL, size, pos, 0), 0);
  assert_int_equal(pirec_remux_file(video, NULL, &res, NULL, NULL), 0);
  assert_int_equal(res.frames, n);
  assert_int_equal(res.bytes_cut, 0);
  assert_pts_exact(res.output_path, mono, n, 90000);
  assert_decodes_clean(res.output_path);
  free(pos);
  free(size);
  free(mono);
}

/* rpicam-vid's pts file: "# timecode format v2", ms with three decimals. */
static void test_rpicam_pts_file(void **state)
{
  struct fixture *f = *state;
  const int n = 60;
  char video[512];
  struct pirec_remux_result res;
  int64_t *t = remux_gen_times(n, 0, 3000000, 21);
  FILE *fp;

  snprintf(video, sizeof video, "%s", at(f, "rpi.h264"));
  assert_int_equal(remux_gen_video(video, n, "160x120", 0), 0);
  fp = fopen(at(f, "rpi.pts"), "w");
  assert_non_null(fp);
  fputs("# timecode format v2\n", fp);
  for (int i = 0; i < n; i++) {
    t[i] = (t[i] - t[0]) / 1000 * 1000; /* microsecond resolution, like rpicam-vid's %.3f ms */
    fprintf(fp, "%lld.%03lld\n", (long long)(t[i] / 1000000), (long long)(t[i] / 1000 % 1000));
  }
  fclose(fp);
  assert_int_equal(pirec_remux_file(video, NULL, &res, NULL, NULL), 0);
  assert_string_equal(res.timing_path, at(f, "rpi.pts"));
  assert_int_equal(res.frames, n);
  assert_pts_exact(res.output_path, t, n, 90000);
  free(t);
}

/* A USB camera's raw MJPEG stream: one JPEG per frame, split by the parser. */
static void test_raw_mjpeg(void **state)
{
  struct fixture *f = *state;
  const int n = 45;
  char video[512], cmd[1024];
  struct pirec_remux_result res;
  int64_t *t = remux_gen_times(n, 4 * NS, 6000000, 43);

  snprintf(video, sizeof video, "%s", at(f, "usb.mjpeg"));
  snprintf(cmd, sizeof cmd,
           "ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=160x120:rate=30 -frames:v %d "
           "-c:v mjpeg -f mjpeg '%s'",
           n, video);
  {
    char *argv[] = {"sh", "-c", cmd, NULL};
    assert_int_equal(remux_gen_run(argv, NULL, 0), 0);
  }
  assert_int_equal(remux_gen_csv(at(f, "usb_frames.csv"), n, t, NULL, NULL, NULL, 0), 0);
  assert_int_equal(pirec_remux_file(video, NULL, &res, NULL, NULL), 0);
  assert_int_equal(res.frames, n);
  assert_pts_exact(res.output_path, t, n, 90000);
  assert_decodes_clean(res.output_path);
  free(t);
}

/* x264 with B-frames: packets are in decode order, rows in presentation order. The decoder (in
 * ffprobe) must present frames with strictly increasing pts equal to the captured times. */
static void check_bframes(struct fixture *f, const char *name, const char *csv)
{
  const int n = 90;
  char video[512];
  struct pirec_remux_result res;
  int64_t *t = remux_gen_times(n, 1 * NS, 10000000, 13), *fpts = NULL;
  int den;

  snprintf(video, sizeof video, "%s", at(f, name));
  assert_int_equal(remux_gen_video(video, n, "160x120", 3), 0);
  assert_int_equal(remux_gen_csv(at(f, csv), n, t, NULL, NULL, NULL, 0), 0);
  assert_int_equal(pirec_remux_file(video, NULL, &res, NULL, NULL), 0);
  assert_string_equal(res.error, "");
  assert_true(res.reorder_depth > 0);
  assert_pts_exact(res.output_path, t, n, 90000);
  assert_int_equal(remux_gen_probe_pts(res.output_path, 1, &fpts, &den), n);
  for (int i = 0; i < n; i++)
    assert_int_equal(fpts[i] - fpts[0], round_div((t[i] - t[0]) * 90000, NS));
  assert_decodes_clean(res.output_path);
  free(fpts);
  free(t);
}

/* Issue 22 item 5: read back with ffprobe, every frame of an MP4 is presented at the timing
 * file's time for as long as the timing file says: until the next frame, and the last one for the
 * mean interval, so the track lasts as long as the frames (its duration_ts). Each sample's own
 * duration in the file (its dts step, what MP4 stores) is its frame's duration too, also when the
 * samples are in B-frame decode order. (ffprobe's packet durations are filled in by the H.264
 * parser from a guessed rate, so dts steps are read instead.) cfr: the constant grid. */
static void assert_durations_exact(const char *out, const int64_t *t, int64_t n, int cfr)
{
  char cmd[9000], *text = malloc(1 << 20), *line, *save = NULL;
  int64_t *pts = calloc((size_t)n, sizeof *pts), *dts = calloc((size_t)n, sizeof *dts),
          *want = calloc((size_t)n + 1, sizeof *want);
  int64_t k = 0, span = t[n - 1] - t[0];
  long long a, b, total = -1;
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error -select_streams v:0 -show_entries packet=pts,dts -of csv=p=0 '%s';"
           "ffprobe -v error -select_streams v:0 -show_entries stream=duration_ts -of csv=p=0 '%s'",
           out, out);
  char *argv[] = {"sh", "-c", cmd, NULL};
  assert_int_equal(remux_gen_run(argv, text, 1 << 20), 0);
  for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    if (sscanf(line, "%lld,%lld", &a, &b) == 2 && k < n) {
      pts[k] = a;
      dts[k++] = b;
    } else if (sscanf(line, "%lld", &a) == 1) {
      total = a;
    }
  }
  assert_int_equal(k, n);
  for (int64_t i = 0; i < n; i++)
    want[i] = cfr ? round_div(i * span * 90000 / (n - 1), NS) : round_div((t[i] - t[0]) * 90000, NS);
  want[n] = want[n - 1] + (want[n - 1] + (n - 1) / 2) / (n - 1); /* the mean interval */
  int64_t p0 = pts[0];
  for (int64_t i = 0; i < n; i++)
    p0 = pts[i] < p0 ? pts[i] : p0;
  if (total != want[n])
    fail_msg("'%s': the track lasts %lld ticks, the frames %lld (the last one the mean interval)", out, total,
             (long long)want[n]);
  for (int64_t j = 0; j < n; j++) {
    int64_t f = 0;
    while (f < n && want[f] != pts[j] - p0)
      f++;
    if (f == n)
      fail_msg("'%s' sample %lld: pts - pts0 %lld is no frame's time", out, (long long)j,
               (long long)(pts[j] - p0));
    int64_t step = j + 1 < n ? dts[j + 1] - dts[j] : total - (dts[j] - dts[0]);
    if (step != want[f + 1] - want[f])
      fail_msg("'%s' sample %lld (frame %lld): lasts %lld ticks in the file, the frame %lld", out,
               (long long)j, (long long)f, (long long)step, (long long)(want[f + 1] - want[f]));
  }
  free(pts);
  free(dts);
  free(want);
  free(text);
}

static void test_bframes_durations(void **state)
{
  struct fixture *f = *state;
  const int n = 150;
  struct pirec_remux_result res;
  struct pirec_remux_options opt = {0};
  int64_t *t = remux_gen_times(n, 1 * NS, 6000000, 17);
  static const char *const inputs[] = {"d.h264", "d.mkv", "p.mkv"};
  for (int i = 0; i < 3; i++) {
    char video[512], csv[64];
    snprintf(video, sizeof video, "%s", at(f, inputs[i]));
    assert_int_equal(remux_gen_video(video, n, "160x120", i < 2 ? 2 : 0), 0);
    snprintf(csv, sizeof csv, "%.1s_frames.csv", inputs[i]);
    assert_int_equal(remux_gen_csv(at(f, csv), n, t, NULL, NULL, NULL, 0), 0);
    for (int cfr = 0; cfr <= 1; cfr++) {
      opt.flags = cfr ? PIREC_REMUX_CFR : 0;
      assert_int_equal(pirec_remux_file(video, &opt, &res, NULL, NULL), 0);
      assert_int_equal(res.reorder_depth > 0, i < 2);
      assert_durations_exact(res.output_path, t, n, cfr);
      assert_decodes_clean(res.output_path);
      if (i < 2)
        remux_gen_rmrf(res.output_path); /* d.h264 and d.mkv map to the same d.mp4 */
    }
  }
  free(t);
}

static void test_bframes_mkv(void **state)
{
  check_bframes(*state, "b.mkv", "b_frames.csv");
}

static void test_bframes_raw_h264(void **state)
{
  check_bframes(*state, "b.h264", "b_frames.csv");
}

/* A recorder SIGKILLed mid-write: the MKV ends inside a cluster and the CSV inside a row. Every
 * frame with a complete packet and a complete row comes out, decodable. */
static void test_truncated_mkv_recovers(void **state)
{
  struct fixture *f = *state;
  const int n = 150;
  char video[512], orig[512];
  struct pirec_remux_result res;
  struct stat st;
  int64_t *pos, *size, *t = remux_gen_times(n, 1 * NS, 2000000, 17), complete;

  snprintf(video, sizeof video, "%s", at(f, "t009.mkv"));
  snprintf(orig, sizeof orig, "%s", at(f, "full.mkv"));
  assert_int_equal(remux_gen_video(orig, n, "160x120", 0), 0);
  assert_int_equal(remux_gen_video(video, n, "160x120", 0), 0);
  assert_int_equal(remux_gen_packets(orig, &pos, &size), n);
  /* Cut in the middle of packet 120's data: packets 0..119 stay complete. */
  assert_int_equal(remux_gen_truncate(video, pos[120] + size[120] / 2), 0);
  complete = 120;
  /* The CSV got 130 complete rows and half of the next. */
  assert_int_equal(remux_gen_csv(at(f, "t009_frames.csv"), 130, t, NULL, NULL, NULL, 20), 0);
  assert_int_equal(stat(video, &st), 0);

  assert_int_equal(pirec_remux_file(video, NULL, &res, NULL, NULL), 0);
  assert_string_equal(res.error, "");
  assert_true(res.partial_row);
  assert_true(res.video_truncated);
  assert_int_equal(res.frames, complete);
  assert_int_equal(res.rows_cut, 130 - complete);
  assert_int_equal(res.packets_cut, 0);
  assert_pts_exact(res.output_path, t, complete, 90000);
  assert_decodes_clean(res.output_path);
  /* The input is untouched. */
  {
    struct stat after;
    assert_int_equal(stat(video, &after), 0);
    assert_int_equal(after.st_size, st.st_size);
  }
  free(pos);
  free(size);
  free(t);
}

/* A raw stream cut mid-frame with a CSV that also has rows for frames never fully written. */
static void test_truncated_h264_recovers(void **state)
{
  struct fixture *f = *state;
  const int n = 150;
  char video[512];
  struct pirec_remux_result res;
  int64_t *pos, *size, *t = remux_gen_times(n, 1 * NS, 2000000, 19);

  snprintf(video, sizeof video, "%s", at(f, "raw.h264"));
  assert_int_equal(remux_gen_video(video, n, "160x120", 0), 0);
  assert_int_equal(remux_gen_packets(video, &pos, &size), n);
  assert_int_equal(remux_gen_truncate(video, pos[100] + size[100] - 5), 0);
  assert_int_equal(remux_gen_csv(at(f, "raw_frames.csv"), 104, t, NULL, size, pos, 0), 0);
  assert_int_equal(pirec_remux_file(video, NULL, &res, NULL, NULL), 0);
  assert_true(res.video_truncated);
  assert_int_equal(res.frames, 100);
  assert_int_equal(res.rows_cut, 4);
  assert_int_equal(res.bytes_cut, size[100] - 5);
  assert_pts_exact(res.output_path, t, 100, 90000);
  assert_decodes_clean(res.output_path);

  /* Cut 3 bytes into frame 60's start code: the parser cannot see that boundary and flushes those
   * bytes with frame 59; the CSV's size trims them off again. */
  assert_int_equal(remux_gen_truncate(video, pos[60] + 3), 0);
  assert_int_equal(pirec_remux_file(video, NULL, &res, NULL, NULL), 0);
  assert_int_equal(res.frames, 60);
  assert_int_equal(res.rows_cut, 44);
  assert_int_equal(res.bytes_cut, 3);
  assert_pts_exact(res.output_path, t, 60, 90000);
  assert_decodes_clean(res.output_path);
  {
    int64_t *opos, *osize;
    assert_int_equal(remux_gen_packets(res.output_path, &opos, &osize), 60);
    assert_int_equal(osize[59], size[59]);
    free(opos);
    free(osize);
  }
  free(pos);
  free(size);
  free(t);
}

static void expect_failure(const char *video, const char *needle)
{
  struct pirec_remux_result res;
  char out[600];
  int rc = pirec_remux_file(video, NULL, &res, NULL, NULL);

  if (rc >= 0 || strstr(res.error, needle) == NULL)
    fail_msg("'%s': rc %d, error '%s', wanted '%s'", video, rc, res.error, needle);
  /* Nothing half-written is left behind. */
  assert_int_equal(pirec_remux_output_path(video, PIREC_REMUX_MP4, out, sizeof out), 0);
  assert_int_equal(access(out, F_OK), -1);
  strcat(out, ".part");
  assert_int_equal(access(out, F_OK), -1);
}

static void test_corrupt_inputs(void **state)
{
  struct fixture *f = *state;
  const int n = 60;
  char good[512], path[512];
  int64_t *t = remux_gen_times(n, 1 * NS, 1000000, 23);
  struct pirec_remux_result res;
  FILE *fp;

  snprintf(good, sizeof good, "%s", at(f, "good.mkv"));
  assert_int_equal(remux_gen_video(good, n, "160x120", 0), 0);

  /* Garbage bytes where a video should be. */
  fp = fopen(at(f, "garbage.mkv"), "wb");
  for (int i = 0; i < 100000; i++)
    fputc((i * 7919 + 13) & 0xff, fp);
  fclose(fp);
  assert_int_equal(remux_gen_csv(at(f, "garbage_frames.csv"), n, t, NULL, NULL, NULL, 0), 0);
  expect_failure(at(f, "garbage.mkv"), "cannot read");
  fp = fopen(at(f, "garbage.h264"), "wb");
  for (int i = 0; i < 100000; i++)
    fputc((i * 7919 + 13) & 0xff, fp);
  fclose(fp);
  assert_int_equal(remux_gen_csv(at(f, "garbage_frames.csv"), n, t, NULL, NULL, NULL, 0), 0);
  expect_failure(at(f, "garbage.h264"), "garbage");

  /* A CSV with fewer rows, and one with more rows, than the (complete) video has frames. */
  snprintf(path, sizeof path, "%s", at(f, "fewer.mkv"));
  assert_int_equal(link(good, path), 0);
  assert_int_equal(remux_gen_csv(at(f, "fewer_frames.csv"), n - 5, t, NULL, NULL, NULL, 0), 0);
  expect_failure(path, "has 55 rows but");
  snprintf(path, sizeof path, "%s", at(f, "more.mkv"));
  assert_int_equal(link(good, path), 0);
  assert_int_equal(remux_gen_csv(at(f, "more_frames.csv"), n, t, NULL, NULL, NULL, 0), 0);
  fp = fopen(at(f, "more_frames.csv"), "a");
  fputs("1,99000000000,99000000000,60,67,,0,,\n", fp);
  fclose(fp);
  expect_failure(path, "has 61 rows but");

  /* Non-monotonic timestamps: the message names file:line and both values. */
  snprintf(path, sizeof path, "%s", at(f, "back.mkv"));
  assert_int_equal(link(good, path), 0);
  t[30] = t[29] - 1000;
  assert_int_equal(remux_gen_csv(at(f, "back_frames.csv"), n, t, NULL, NULL, NULL, 0), 0);
  expect_failure(path, "back_frames.csv:32: mono_ns");
  t[30] = t[29] + 33333333;

  /* A value that is not a number. */
  snprintf(path, sizeof path, "%s", at(f, "text.mkv"));
  assert_int_equal(link(good, path), 0);
  fp = fopen(at(f, "text_frames.csv"), "w");
  fputs("trial,mono_ns,wall_ns,frame,seq,device_ts_ns,dropped_before,bytes,offset\n"
        "1,100,200,0,0,,0,,\n1,1x3,300,1,1,,0,,\n",
        fp);
  fclose(fp);
  expect_failure(path, "text_frames.csv:3: mono_ns '1x3'");

  /* Empty files: video and CSV. */
  fclose(fopen(at(f, "empty.mkv"), "w"));
  assert_int_equal(remux_gen_csv(at(f, "empty_frames.csv"), n, t, NULL, NULL, NULL, 0), 0);
  expect_failure(at(f, "empty.mkv"), "is empty");
  snprintf(path, sizeof path, "%s", at(f, "nocsv.mkv"));
  assert_int_equal(link(good, path), 0);
  fclose(fopen(at(f, "nocsv_frames.csv"), "w"));
  expect_failure(path, "nocsv_frames.csv' is empty");
  /* No timing file at all. */
  snprintf(path, sizeof path, "%s", at(f, "alone.mkv"));
  assert_int_equal(link(good, path), 0);
  expect_failure(path, "no timing file");

  /* With all that around, the good file still remuxes. */
  assert_int_equal(remux_gen_csv(at(f, "good_frames.csv"), n, t, NULL, NULL, NULL, 0), 0);
  assert_int_equal(pirec_remux_file(good, NULL, &res, NULL, NULL), 0);
  assert_int_equal(res.frames, n);

  /* --allow-cut accepts a clean mismatch and keeps the frames that pair up. */
  {
    struct pirec_remux_options opt = {.flags = PIREC_REMUX_ALLOW_CUT};
    assert_int_equal(pirec_remux_file(at(f, "fewer.mkv"), &opt, &res, NULL, NULL), 0);
    assert_int_equal(res.frames, n - 5);
    assert_int_equal(res.packets_cut, 5);
  }
  free(t);
}

static void write_file(const char *path, const char *text, size_t len)
{
  FILE *fp = fopen(path, "wb");
  assert_non_null(fp);
  assert_int_equal(fwrite(text, 1, len, fp), len);
  assert_int_equal(fclose(fp), 0);
}

/* The timing loader on its own: crash tails, clocks, and the messages it gives. */
static void test_timing_loader(void **state)
{
  struct fixture *f = *state;
  struct pirec_remux_timing t;
  char err[512];
  static const char head[] = "trial,mono_ns,wall_ns,frame,seq,device_ts_ns,dropped_before,bytes,offset\n";
  char buf[1024];
  int n;

  /* A power-loss tail: a partial row followed by zero bytes. */
  n = snprintf(buf, sizeof buf, "%s1,100,900,0,0,50,0,10,0\n1,200,800,1,1,60,0,10,10\n1,30", head);
  memset(buf + n, 0, 16);
  write_file(at(f, "a.csv"), buf, (size_t)n + 16);
  assert_int_equal(pirec_remux_timing_load(at(f, "a.csv"), PIREC_REMUX_CLOCK_AUTO, &t, err, sizeof err), 0);
  assert_int_equal(t.count, 2);
  assert_true(t.partial_row);
  assert_int_equal(t.clock_used, PIREC_REMUX_CLOCK_DEVICE);
  assert_int_equal(t.t_ns[1], 60);
  assert_int_equal(t.offset[1], 10);
  pirec_remux_timing_free(&t);
  /* The wall clock stepped back: named, with the hint. */
  assert_int_equal(pirec_remux_timing_load(at(f, "a.csv"), PIREC_REMUX_CLOCK_WALL, &t, err, sizeof err),
                   -EINVAL);
  assert_non_null(strstr(err, "a.csv:3: wall_ns 800 is not after 900"));
  assert_non_null(strstr(err, "--clock mono"));
  /* A row with a device timestamp missing: auto falls back to mono, device refuses. */
  n = snprintf(buf, sizeof buf, "%s1,100,900,0,0,50,0,,\r\n1,200,1000,1,1,,0,,\r\n", head);
  write_file(at(f, "b.csv"), buf, (size_t)n);
  assert_int_equal(pirec_remux_timing_load(at(f, "b.csv"), PIREC_REMUX_CLOCK_AUTO, &t, err, sizeof err), 0);
  assert_int_equal(t.clock_used, PIREC_REMUX_CLOCK_MONO);
  assert_int_equal(t.count, 2);
  assert_false(t.partial_row);
  pirec_remux_timing_free(&t);
  assert_int_equal(pirec_remux_timing_load(at(f, "b.csv"), PIREC_REMUX_CLOCK_DEVICE, &t, err, sizeof err),
                   -EINVAL);
  assert_non_null(strstr(err, "b.csv:3: device_ts_ns is empty"));
  /* Wrong field count and a negative number. */
  n = snprintf(buf, sizeof buf, "%s1,100,900,0,0,,0,,\n1,200,1000\n", head);
  write_file(at(f, "c.csv"), buf, (size_t)n);
  assert_int_equal(pirec_remux_timing_load(at(f, "c.csv"), PIREC_REMUX_CLOCK_AUTO, &t, err, sizeof err),
                   -EINVAL);
  assert_non_null(strstr(err, "c.csv:3: row has 3 fields, the header has 9"));
  n = snprintf(buf, sizeof buf, "%s1,-100,900,0,0,,0,,\n", head);
  write_file(at(f, "d.csv"), buf, (size_t)n);
  assert_int_equal(pirec_remux_timing_load(at(f, "d.csv"), PIREC_REMUX_CLOCK_AUTO, &t, err, sizeof err),
                   -EINVAL);
  assert_non_null(strstr(err, "d.csv:2: mono_ns '-100' is not a non-negative integer"));
  /* Not a frames CSV at all. */
  write_file(at(f, "e.csv"), "x,y\n1,2\n", 8);
  assert_int_equal(pirec_remux_timing_load(at(f, "e.csv"), PIREC_REMUX_CLOCK_AUTO, &t, err, sizeof err),
                   -EINVAL);
  assert_non_null(strstr(err, "no 'mono_ns' column"));
  /* pts files: ms with decimals to exact ns, a partial last line, a bad value. */
  write_file(at(f, "p.pts"), "# timecode format v2\n0.000\n33.366\n66.7\n100.0", 44);
  assert_int_equal(pirec_remux_timing_load(at(f, "p.pts"), PIREC_REMUX_CLOCK_AUTO, &t, err, sizeof err), 0);
  assert_int_equal(t.count, 3);
  assert_true(t.partial_row);
  assert_int_equal(t.t_ns[1], 33366000);
  assert_int_equal(t.t_ns[2], 66700000);
  pirec_remux_timing_free(&t);
  assert_int_equal(pirec_remux_timing_load(at(f, "p.pts"), PIREC_REMUX_CLOCK_MONO, &t, err, sizeof err),
                   -EINVAL);
  write_file(at(f, "q.pts"), "# timestamp format v2\n0\n3x\n", 27);
  assert_int_equal(pirec_remux_timing_load(at(f, "q.pts"), PIREC_REMUX_CLOCK_AUTO, &t, err, sizeof err),
                   -EINVAL);
  assert_non_null(strstr(err, "q.pts:3: '3x' is not a time in milliseconds"));
}

static void test_replace_and_dry_run(void **state)
{
  struct fixture *f = *state;
  const int n = 30;
  char video[512];
  struct pirec_remux_result res;
  struct pirec_remux_options opt = {.flags = PIREC_REMUX_DRY_RUN};
  int64_t *t = remux_gen_times(n, 1 * NS, 1000000, 29);

  snprintf(video, sizeof video, "%s", at(f, "r.mkv"));
  assert_int_equal(remux_gen_video(video, n, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "r_frames.csv"), n, t, NULL, NULL, NULL, 0), 0);
  assert_int_equal(pirec_remux_file(video, &opt, &res, NULL, NULL), 0);
  assert_int_equal(res.frames, n);
  assert_int_equal(access(at(f, "r.mp4"), F_OK), -1);
  assert_int_equal(access(at(f, "r.mp4.part"), F_OK), -1);

  opt.flags = PIREC_REMUX_REPLACE;
  assert_int_equal(pirec_remux_file(video, &opt, &res, NULL, NULL), 0);
  assert_int_equal(access(at(f, "r.mp4"), F_OK), 0);
  assert_int_equal(access(video, F_OK), -1);
  assert_int_equal(access(at(f, "r_frames.csv"), F_OK), 0);
  free(t);
}

int main(void)
{
  if (getenv("PIREC_REMUX_TEST_SECONDS") != NULL) {
    const struct CMUnitTest one[] = {
        cmocka_unit_test_setup_teardown(test_vfr_jitter_mp4, setup, teardown),
    };
    return cmocka_run_group_tests(one, NULL, NULL);
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_vfr_jitter_mp4, setup, teardown),
      cmocka_unit_test_setup_teardown(test_frames_closer_than_a_tick, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mkv_output_and_timestamps_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cfr, setup, teardown),
      cmocka_unit_test_setup_teardown(test_raw_h264_offsets, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rpicam_pts_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_raw_mjpeg, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bframes_mkv, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bframes_raw_h264, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bframes_durations, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncated_mkv_recovers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_truncated_h264_recovers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_inputs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_replace_and_dry_run, setup, teardown),
      cmocka_unit_test_setup_teardown(test_timing_loader, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
