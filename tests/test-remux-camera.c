/* pirec-remux on what pirec-camera really writes: the real pirec-camera binary records for a few
 * seconds and is SIGKILLed mid-recording, then the real pirec-remux turns its directory into an MP4,
 * which ffprobe reads back. Three of the camera's outputs: its own MKV (lavfi source encoded by
 * x264), and the MJPEG and H.264 elementary streams it writes when a source's packets pass through. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "helpers/remux-gen.h"

struct fixture {
  char dir[256];
  char camera[512];
  char remux[512];
  char out[1 << 16];
};

/* The CSV as the test reads it, independently of the engine's loader. */
struct rows {
  int64_t n;
  int64_t mono[100000];
  int64_t dev[100000]; /* device_ts_ns, -1 when empty */
  int64_t bytes[100000];
  int64_t offset[100000];
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(remux_gen_app("pirec-camera", f->camera, sizeof f->camera), 0);
  assert_int_equal(remux_gen_app("pirec-remux", f->remux, sizeof f->remux), 0);
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

static int sh(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int sh(char *out, size_t cap, const char *fmt, ...)
{
  char cmd[4096];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  {
    char *argv[] = {"sh", "-c", cmd, NULL};
    return remux_gen_run(argv, out, cap);
  }
}

/* Field k of a CSV line of integers; -1 when empty. */
static int64_t field(const char *line, int k)
{
  for (int i = 0; i < k; i++) {
    line = strchr(line, ',');
    assert_non_null(line);
    line++;
  }
  return *line == ',' || *line == '\n' ? -1 : strtoll(line, NULL, 10);
}

/* Reads the complete lines of a frames CSV (a SIGKILL can leave the last one partial). */
static void read_rows(const char *path, struct rows *r)
{
  FILE *fp = fopen(path, "r");
  char line[1024];
  int col_mono = -1, col_bytes = -1, col_offset = -1, col_dev = -1, k = 0;

  assert_non_null(fp);
  assert_non_null(fgets(line, sizeof line, fp));
  for (char *tok = strtok(line, ",\n"); tok; tok = strtok(NULL, ",\n"), k++) {
    if (strcmp(tok, "mono_ns") == 0)
      col_mono = k;
    else if (strcmp(tok, "bytes") == 0)
      col_bytes = k;
    else if (strcmp(tok, "offset") == 0)
      col_offset = k;
    else if (strcmp(tok, "device_ts_ns") == 0)
      col_dev = k;
  }
  assert_true(col_mono >= 0 && col_bytes >= 0 && col_offset >= 0);
  r->n = 0;
  while (fgets(line, sizeof line, fp) && strchr(line, '\n') != NULL) {
    assert_true(r->n < (int64_t)(sizeof r->mono / sizeof r->mono[0]));
    r->mono[r->n] = field(line, col_mono);
    r->bytes[r->n] = field(line, col_bytes);
    r->offset[r->n] = field(line, col_offset);
    r->dev[r->n] = col_dev >= 0 ? field(line, col_dev) : -1;
    r->n++;
  }
  fclose(fp);
}

/* Records from source into DIR/NAME for `seconds`, SIGKILLs the camera, remuxes the directory with
 * --clock mono and checks the output against the CSV: one packet per row that points at a complete
 * frame, each at its row's mono_ns (within a tick of 1/90000 s). */
static void record_kill_remux(struct fixture *f, const char *name, const char *source, const char *video)
{
  static struct rows rows;
  char dir[512], in[600], csv[600], mp4[600];
  int64_t *pos = NULL, *size = NULL, *pts = NULL, packets, expect, got;
  struct stat st;
  json_t *top, *o;
  json_error_t jerr;
  int den;

  snprintf(dir, sizeof dir, "%s/%s", f->dir, name);
  assert_int_equal(mkdir(dir, 0755), 0);
  /* Killed with SIGKILL: no chance to finish the MKV, flush the CSV or close anything. */
  /* Killed once 60 rows are on disk plus a second (not after a fixed time: on a loaded machine
   * the camera may take seconds to start), at most 60 s in. */
  sh(NULL, 0,
     "'%s' --source '%s' --size 320x240 --fps 30 --out '%s' >'%s/camera.log' 2>&1 & "
     "for i in $(seq 600); do n=$(cat '%s/t001_frames.csv' 2>/dev/null | wc -l); "
     "[ \"$n\" -gt 60 ] && break; sleep 0.1; done; sleep 1; kill -KILL $!; wait",
     f->camera, source, dir, f->dir, dir);
  snprintf(in, sizeof in, "%s/t001.%s", dir, video);
  snprintf(csv, sizeof csv, "%s/t001_frames.csv", dir);
  snprintf(mp4, sizeof mp4, "%s/t001.mp4", dir);
  assert_int_equal(stat(in, &st), 0);
  read_rows(csv, &rows);
  assert_true(rows.n > 20); /* it was recording when it was killed */

  /* The frames that are really there: packets the demuxer reads in full, and for an elementary
   * stream only those whose row's offset + bytes lie inside the file. */
  packets = remux_gen_packets(in, &pos, &size);
  assert_true(packets > 20);
  expect = packets < rows.n ? packets : rows.n;
  if (strcmp(video, "mkv") != 0) {
    int64_t complete = 0;
    while (complete < rows.n && rows.offset[complete] >= 0 &&
           rows.offset[complete] + rows.bytes[complete] <= st.st_size)
      complete++;
    if (complete < expect)
      expect = complete;
  }

  if (sh(f->out, sizeof f->out, "'%s' --clock mono --json '%s'", f->remux, dir) != 0)
    fail_msg("pirec-remux on '%s' failed:\n%s", dir, f->out);
  top = json_loads(f->out, 0, &jerr);
  if (top == NULL)
    fail_msg("not JSON (%s): %s", jerr.text, f->out);
  o = json_array_get(json_object_get(top, "files"), 0);
  assert_true(json_is_true(json_object_get(o, "ok")));
  assert_int_equal(json_integer_value(json_object_get(o, "frames")), expect);
  assert_int_equal(json_integer_value(json_object_get(o, "rows")), rows.n);
  json_decref(top);

  got = remux_gen_probe_pts(mp4, 0, &pts, &den);
  assert_int_equal(got, expect);
  assert_int_equal(den, 90000);
  for (int64_t i = 0; i < got; i++) {
    int64_t want = ((rows.mono[i] - rows.mono[0]) * 9 + 50000) / 100000;
    int64_t diff = pts[i] - pts[0] - want;
    if (diff < -1 || diff > 1)
      fail_msg("%s: packet %lld at %lld ticks, its row's mono_ns says %lld", mp4, (long long)i,
               (long long)(pts[i] - pts[0]), (long long)want);
  }
  {
    char err[4096];
    /* passthrough in the input's time base: the default rounds each frame to the guessed rate,
     * and two frames a camera delivered a few ms apart then collide in the null muxer */
    assert_int_equal(sh(err, sizeof err,
                        "ffmpeg -nostdin -v error -i '%s' -fps_mode passthrough -enc_time_base -1 "
                        "-f null - 2>&1",
                        mp4),
                     0);
    if (err[0] != '\0')
      fail_msg("decoding '%s' printed: %s", mp4, err);
  }
  /* --verify compares every frame's payload with the camera's file (issue 22 item 2). */
  if (sh(f->out, sizeof f->out, "'%s' --clock mono --verify '%s'", f->remux, mp4) != 0)
    fail_msg("--verify '%s' failed:\n%s", mp4, f->out);
  free(pts);
  free(pos);
  free(size);
}

/* lavfi testsrc2 encoded by the camera's x264 child into its own MKV writer. */
static void test_camera_mkv(void **state)
{
  record_kill_remux(*state, "lavfi", "lavfi:testsrc2", "mkv");
}

/* Records a 10 s lavfi clip encoded with `codec_args` as the camera's source file, so the camera
 * stores what it receives (passthrough) as a file of type `ext`, then the shared kill+remux check. */
static void passthrough(struct fixture *f, const char *name, const char *codec_args, const char *ext)
{
  char src[512];
  snprintf(src, sizeof src, "%s/src-%s.mkv", f->dir, name);
  assert_int_equal(sh(NULL, 0,
                      "ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=320x240:rate=30 -t 10 "
                      "%s '%s'",
                      codec_args, src),
                   0);
  record_kill_remux(f, name, src, ext);
}

/* An MJPEG source passes through untouched: the camera writes t001.mjpeg with offsets. */
static void test_camera_mjpeg_passthrough(void **state)
{
  passthrough(*state, "mjpeg", "-c:v mjpeg -q:v 8", "mjpeg");
}

/* An H.264 source passes through as an Annex B elementary stream (t001.h264). */
static void test_camera_h264_passthrough(void **state)
{
  passthrough(*state, "h264", "-c:v libx264 -preset ultrafast -bf 0 -g 30", "h264");
}

/* ---- segments (issue 24) ---- */

/* The frames CSVs of trial 1's segments in dir, in order, as one list of rows (the rows go on
 * across the files: frame k of segment 2 follows the last of segment 1). Returns the segments. */
static int segment_rows(const char *dir, struct rows *all, int64_t *per, int max)
{
  static struct rows one;
  int k = 0;
  all->n = 0;
  for (; k < max; k++) {
    char csv[600];
    snprintf(csv, sizeof csv, "%s/t001_s%03d_frames.csv", dir, k + 1);
    if (access(csv, F_OK) != 0)
      break;
    read_rows(csv, &one);
    per[k] = one.n;
    for (int64_t i = 0; i < one.n; i++, all->n++) {
      all->mono[all->n] = one.mono[i];
      all->dev[all->n] = one.dev[i];
    }
  }
  return k;
}

/* The clock pirec-remux --clock auto takes: device_ts_ns when every row has one and they
 * increase, else mono_ns (arrival times, which can tie under load: not this test's subject). */
static const int64_t *auto_clock(const struct rows *r)
{
  for (int64_t i = 0; i < r->n; i++)
    if (r->dev[i] < 0 || (i > 0 && r->dev[i] <= r->dev[i - 1]))
      return r->mono;
  return r->dev;
}

/* The camera records a trial in 1 s segments (config: [camera.camera0] segment = 1s), then:
 * pirec-remux writes one output per segment, each with packets = its rows; --join writes one
 * tNNN.mp4 with every row's frame once, at its row's time (none repeated or missing at a join),
 * lasting the trial's duration within one frame; --verify passes on both forms. */
static void segments_join(struct fixture *f, const char *name, const char *source, const char *ext)
{
  static struct rows rows;
  int64_t per[64], *pts = NULL;
  char dir[512], conf[600], path[700];
  int den;
  snprintf(dir, sizeof dir, "%s/%s", f->dir, name);
  snprintf(conf, sizeof conf, "%s/%s.conf", f->dir, name);
  FILE *c = fopen(conf, "w");
  assert_non_null(c);
  fputs("[camera.camera0]\nsize = 320x240\nfps = 30\nsegment = 1s\n", c);
  fclose(c);
  if (sh(f->out, sizeof f->out, "'%s' -c '%s' --source '%s' --out '%s' --duration 3.5 2>&1", f->camera, conf,
         source, dir) != 0)
    fail_msg("pirec-camera failed:\n%s", f->out);
  int segs = segment_rows(dir, &rows, per, 64);
  fprintf(stderr, "%s: %d segments, %lld rows\n", name, segs, (long long)rows.n);
  assert_true(segs >= 3);
  if (sh(f->out, sizeof f->out, "'%s' '%s'", f->remux, dir) != 0)
    fail_msg("pirec-remux on '%s' failed:\n%s", dir, f->out);
  for (int k = 0; k < segs; k++) {
    snprintf(path, sizeof path, "%s/t001_s%03d.mp4", dir, k + 1);
    assert_int_equal(remux_gen_probe_pts(path, 0, &pts, &den), per[k]);
    free(pts);
  }
  if (sh(f->out, sizeof f->out, "'%s' --join '%s'", f->remux, dir) != 0)
    fail_msg("pirec-remux --join on '%s' failed:\n%s", dir, f->out);
  snprintf(path, sizeof path, "%s/t001.mp4", dir);
  int64_t got = remux_gen_probe_pts(path, 0, &pts, &den);
  assert_int_equal(got, rows.n);
  const int64_t *t = auto_clock(&rows);
  for (int64_t i = 0; i < got; i++) {
    int64_t want = ((t[i] - t[0]) * 9 + 50000) / 100000, diff = pts[i] - pts[0] - want;
    if (diff < -1 || diff > 1)
      fail_msg("%s: packet %lld at %lld ticks, its row's mono_ns says %lld", path, (long long)i,
               (long long)(pts[i] - pts[0]), (long long)want);
  }
  free(pts);
  /* the duration: the trial's (first to last frame) plus the last frame's, within one frame */
  char out[256];
  assert_int_equal(
      sh(out, sizeof out, "ffprobe -v error -show_entries format=duration -of csv=p=0 '%s'", path), 0);
  double dur = strtod(out, NULL), span = (t[rows.n - 1] - t[0]) / 1e9;
  fprintf(stderr, "%s: joined %.4f s, trial %.4f s\n", name, dur, span);
  assert_true(dur >= span && dur <= span + 2.0 / 30);
  if (sh(f->out, sizeof f->out, "'%s' --verify --json '%s'", f->remux, dir) != 0)
    fail_msg("pirec-remux --verify on '%s' failed:\n%s", dir, f->out);
  assert_non_null(strstr(f->out, "t001.mp4"));
  (void)ext;
}

/* Raw frames encoded by the camera: Matroska segments, joined by the concat demuxer. */
static void test_segments_mkv(void **state)
{
  segments_join(*state, "seg-mkv", "lavfi:testsrc2", "mkv");
}

/* An H.264 source stored as received: elementary-stream segments, joined byte for byte. */
static void test_segments_h264(void **state)
{
  struct fixture *f = *state;
  char src[512];
  snprintf(src, sizeof src, "%s/src-seg.mp4", f->dir);
  assert_int_equal(sh(NULL, 0,
                      "ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=320x240:rate=30 -t 6 "
                      "-c:v libx264 -preset ultrafast -bf 0 -g 15 '%s'",
                      src),
                   0);
  segments_join(f, "seg-h264", src, "h264");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_camera_mkv, setup, teardown),
      cmocka_unit_test_setup_teardown(test_segments_mkv, setup, teardown),
      cmocka_unit_test_setup_teardown(test_segments_h264, setup, teardown),
      cmocka_unit_test_setup_teardown(test_camera_mjpeg_passthrough, setup, teardown),
      cmocka_unit_test_setup_teardown(test_camera_h264_passthrough, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
