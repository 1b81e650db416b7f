/* pirec-remux as the operator runs it: a whole session with good, crashed, corrupt, hanging and
 * crashing files, each in its own supervised child; exit codes; --verify; --json; silence off a TTY.
 * Inputs come from the real ffmpeg (lavfi), outputs are checked with the real ffprobe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers/remux-gen.h"

#define NS INT64_C(1000000000)

struct fixture {
  char dir[256];
  char bin[512];
  char out[1 << 16];
  char err[1 << 14];
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof *f);
  assert_non_null(f);
  assert_int_equal(remux_gen_app("pirec-remux", f->bin, sizeof f->bin), 0);
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

/* Runs pirec-remux with the given arguments (a shell word list), stdout into f->out and stderr
 * into f->err. Returns its exit status. */
static int cli(struct fixture *f, const char *env, const char *args)
{
  char cmd[4096], errpath[400];
  FILE *fp;
  size_t n;
  int rc;

  snprintf(errpath, sizeof errpath, "%s/stderr.txt", f->dir);
  snprintf(cmd, sizeof cmd, "cd '%s' && %s '%s' %s 2>'%s' </dev/null", f->dir, env ? env : "", f->bin, args,
           errpath);
  {
    char *argv[] = {"sh", "-c", cmd, NULL};
    rc = remux_gen_run(argv, f->out, sizeof f->out);
  }
  fp = fopen(errpath, "r");
  n = fp ? fread(f->err, 1, sizeof f->err - 1, fp) : 0;
  f->err[n] = '\0';
  if (fp)
    fclose(fp);
  return rc;
}

static const char *at(struct fixture *f, const char *name, char *buf, size_t cap)
{
  snprintf(buf, cap, "%s/%s", f->dir, name);
  return buf;
}

static void make_dirs(struct fixture *f, const char *const *names)
{
  char p[512];
  for (; *names; names++)
    assert_int_equal(mkdir(at(f, *names, p, sizeof p), 0755), 0);
}

static json_t *file_result(json_t *top, const char *input)
{
  json_t *files = json_object_get(top, "files"), *o;
  size_t i;
  json_array_foreach(files, i, o)
  {
    if (strcmp(json_string_value(json_object_get(o, "input")), input) == 0)
      return o;
  }
  fail_msg("no result for '%s'", input);
  return NULL;
}

static void assert_decodes_clean(const char *path)
{
  char err[4096];
  char *argv[] = {"sh", "-c",
                  "ffmpeg -nostdin -v error -i \"$0\" -fps_mode passthrough -enc_time_base -1 "
                  "-f null - 2>&1" /* frames keep their own times: no collisions at a guessed rate */,
                  (char *)path, NULL};
  assert_int_equal(remux_gen_run(argv, err, sizeof err), 0);
  if (err[0] != '\0')
    fail_msg("decoding '%s' printed: %s", path, err);
}

/* The session: good files, a crashed recording, corrupt files, and two files whose children hang
 * and crash. Every good and recoverable file is done; every bad one fails with its own reason. */
static void test_session_mixed(void **state)
{
  struct fixture *f = *state;
  static const char *const dirs[] = {"S", "S/camera0", "S/camera1", "S/camera2", "S/eyetracker", NULL};
  char p[512], q[512];
  int64_t *t = remux_gen_times(150, 1 * NS, 3000000, 31), *pos, *size;
  struct stat st_raw;
  json_t *top, *o;
  json_error_t jerr;

  make_dirs(f, dirs);
  /* Good: MKV with device timestamps, and the scene video (with B-frames). */
  assert_int_equal(remux_gen_video(at(f, "S/camera0/t001.mkv", p, sizeof p), 90, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "S/camera0/t001_frames.csv", p, sizeof p), 90, t, t, NULL, NULL, 0),
                   0);
  assert_int_equal(remux_gen_video(at(f, "S/eyetracker/t001_scene.mkv", p, sizeof p), 60, "160x120", 2), 0);
  assert_int_equal(
      remux_gen_csv(at(f, "S/eyetracker/t001_scene_frames.csv", p, sizeof p), 60, t, NULL, NULL, NULL, 0), 0);
  /* Crashed: a raw stream cut inside frame 80, CSV with 85 rows and a partial one. */
  at(f, "S/camera1/t001.h264", p, sizeof p);
  assert_int_equal(remux_gen_video(p, 150, "160x120", 0), 0);
  assert_int_equal(remux_gen_packets(p, &pos, &size), 150);
  assert_int_equal(remux_gen_truncate(p, pos[80] + 10), 0);
  assert_int_equal(stat(p, &st_raw), 0);
  assert_int_equal(remux_gen_csv(at(f, "S/camera1/t001_frames.csv", q, sizeof q), 85, t, NULL, size, pos, 17),
                   0);
  /* Corrupt: garbage, a CSV one row short, an empty video. */
  {
    FILE *fp = fopen(at(f, "S/camera0/t002.mkv", p, sizeof p), "wb");
    for (int i = 0; i < 50000; i++)
      fputc((i * 131 + 7) & 0xff, fp);
    fclose(fp);
  }
  assert_int_equal(remux_gen_csv(at(f, "S/camera0/t002_frames.csv", p, sizeof p), 90, t, NULL, NULL, NULL, 0),
                   0);
  assert_int_equal(remux_gen_video(at(f, "S/camera0/t003.mkv", p, sizeof p), 90, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "S/camera0/t003_frames.csv", p, sizeof p), 89, t, NULL, NULL, NULL, 0),
                   0);
  fclose(fopen(at(f, "S/camera0/t004.mkv", p, sizeof p), "w"));
  assert_int_equal(remux_gen_csv(at(f, "S/camera0/t004_frames.csv", p, sizeof p), 90, t, NULL, NULL, NULL, 0),
                   0);
  /* Children that hang and crash (a real hanging / aborting process, see PIREC_REMUX_TEST_FAULT). */
  assert_int_equal(remux_gen_video(at(f, "S/camera2/t001.mkv", p, sizeof p), 30, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "S/camera2/t001_frames.csv", p, sizeof p), 30, t, NULL, NULL, NULL, 0),
                   0);
  assert_int_equal(remux_gen_video(at(f, "S/camera2/t002.mkv", p, sizeof p), 30, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "S/camera2/t002_frames.csv", p, sizeof p), 30, t, NULL, NULL, NULL, 0),
                   0);

  assert_int_equal(
      cli(f, "PIREC_REMUX_TEST_FAULT=camera2/t001:hang,camera2/t002:abort", "-j 2 --timeout 3 --json S"), 1);
  top = json_loads(f->out, 0, &jerr);
  if (top == NULL)
    fail_msg("not JSON (%s): %s", jerr.text, f->out);
  assert_int_equal(json_array_size(json_object_get(top, "files")), 8);
  assert_int_equal(json_integer_value(json_object_get(top, "ok")), 3);

  o = file_result(top, "S/camera0/t001.mkv");
  assert_true(json_is_true(json_object_get(o, "ok")));
  assert_string_equal(json_string_value(json_object_get(o, "clock")), "device");
  assert_int_equal(json_integer_value(json_object_get(o, "frames")), 90);
  o = file_result(top, "S/eyetracker/t001_scene.mkv");
  assert_true(json_is_true(json_object_get(o, "ok")));
  assert_int_equal(json_integer_value(json_object_get(o, "frames")), 60);
  o = file_result(top, "S/camera1/t001.h264");
  assert_true(json_is_true(json_object_get(o, "ok")));
  assert_int_equal(json_integer_value(json_object_get(o, "frames")), 80);
  assert_int_equal(json_integer_value(json_object_get(o, "rows_cut")), 5);
  assert_true(json_is_true(json_object_get(o, "partial_row")));
  assert_true(json_is_true(json_object_get(o, "video_truncated")));

  assert_non_null(strstr(json_string_value(json_object_get(file_result(top, "S/camera0/t002.mkv"), "error")),
                         "cannot read"));
  assert_non_null(strstr(json_string_value(json_object_get(file_result(top, "S/camera0/t003.mkv"), "error")),
                         "has 89 rows but"));
  assert_non_null(strstr(json_string_value(json_object_get(file_result(top, "S/camera0/t004.mkv"), "error")),
                         "is empty"));
  assert_non_null(strstr(json_string_value(json_object_get(file_result(top, "S/camera2/t001.mkv"), "error")),
                         "timed out"));
  assert_non_null(strstr(json_string_value(json_object_get(file_result(top, "S/camera2/t002.mkv"), "error")),
                         "signal 6"));
  json_decref(top);

  /* Outputs exist for the good and the recovered files and decode without a single error. */
  assert_decodes_clean(at(f, "S/camera0/t001.mp4", p, sizeof p));
  assert_decodes_clean(at(f, "S/eyetracker/t001_scene.mp4", p, sizeof p));
  assert_decodes_clean(at(f, "S/camera1/t001.mp4", p, sizeof p));
  /* No output, and no temporary, for the failed ones; inputs untouched. */
  assert_int_equal(access(at(f, "S/camera0/t003.mp4", p, sizeof p), F_OK), -1);
  assert_int_equal(access(at(f, "S/camera2/t001.mp4.part", p, sizeof p), F_OK), -1);
  {
    struct stat st;
    assert_int_equal(stat(at(f, "S/camera1/t001.h264", p, sizeof p), &st), 0);
    assert_int_equal(st.st_size, st_raw.st_size);
  }

  /* --verify finds the three outputs and checks them against their CSVs. */
  assert_int_equal(cli(f, NULL, "--verify S"), 0);
  assert_non_null(strstr(f->out, "3 of 3 files verified"));
  free(pos);
  free(size);
  free(t);
}

/* A recording SIGKILLed for real: ffmpeg writing MKV in real time is killed mid-stream. */
static void test_sigkilled_recorder(void **state)
{
  struct fixture *f = *state;
  char p[512], cmd[1024];
  int64_t *pos, *size, n, *t;

  at(f, "k.mkv", p, sizeof p);
  snprintf(cmd, sizeof cmd,
           "ffmpeg -nostdin -v error -y -re -f lavfi -i testsrc2=size=160x120:rate=30 -t 20 "
           "-c:v libx264 -preset ultrafast -bf 0 -flush_packets 1 -cluster_time_limit 100 '%s' & "
           "sleep 2; kill -KILL $!; wait",
           p);
  {
    char *argv[] = {"sh", "-c", cmd, NULL};
    remux_gen_run(argv, NULL, 0);
  }
  n = remux_gen_packets(p, &pos, &size);
  assert_true(n > 10);
  /* The CSV writer got a few rows further and was cut mid-row. */
  t = remux_gen_times(n + 3, 1 * NS, 4000000, 37);
  assert_int_equal(remux_gen_csv(at(f, "k_frames.csv", p, sizeof p), n + 3, t, NULL, NULL, NULL, 9), 0);
  assert_int_equal(cli(f, NULL, "k.mkv"), 0);
  assert_non_null(strstr(f->out, "recovered"));
  assert_decodes_clean(at(f, "k.mp4", p, sizeof p));
  {
    int64_t *pts = NULL;
    int den;
    assert_int_equal(remux_gen_probe_pts(p, 0, &pts, &den), n);
    free(pts);
  }
  free(pos);
  free(size);
  free(t);
}

/* The summary table names a file in at most 40 characters: a long path keeps the whole components
 * that fit after ".../" (here the module and the file), never half a directory name. */
static void test_table_shortens_long_paths(void **state)
{
  struct fixture *f = *state;
  char p[512], args[600];
  int64_t *t = remux_gen_times(10, 1 * NS, 0, 1);

  assert_int_equal(mkdir(at(f, "20261203T221351Z_a-long-label", p, sizeof p), 0700), 0);
  assert_int_equal(mkdir(at(f, "20261203T221351Z_a-long-label/front", p, sizeof p), 0700), 0);
  assert_int_equal(
      remux_gen_video(at(f, "20261203T221351Z_a-long-label/front/t001.mkv", p, sizeof p), 10, "160x120", 0),
      0);
  assert_int_equal(remux_gen_csv(at(f, "20261203T221351Z_a-long-label/front/t001_frames.csv", p, sizeof p),
                                 10, t, NULL, NULL, NULL, 0),
                   0);
  snprintf(args, sizeof args, "--dry-run '%s/20261203T221351Z_a-long-label/front/t001.mkv'", f->dir);
  assert_int_equal(cli(f, NULL, args), 0);
  const char *row = strstr(f->out, "\n.../");
  if (row == NULL || strncmp(row + 1, ".../front/t001.mkv ", 19) != 0)
    fail_msg("no shortened name in the table:\n%s", f->out);
  free(t);
}

/* Issue 22 item 1: a path that is not UTF-8 was reported FAILED with no reason ("files":[{}])
 * although it was done, and --replace had removed its input. Paths are bytes: escaped in the JSON
 * and the table, and the input goes only once the parent holds an ok result. */
static void test_non_utf8_path_replace(void **state)
{
  struct fixture *f = *state;
  char p[512];
  int64_t *t = remux_gen_times(10, 1 * NS, 0, 3);

  assert_int_equal(mkdir(at(f, "jq_lat\xe9", p, sizeof p), 0700), 0);
  assert_int_equal(remux_gen_video(at(f, "jq_lat\xe9/t001.mkv", p, sizeof p), 10, "160x120", 0), 0);
  assert_int_equal(
      remux_gen_csv(at(f, "jq_lat\xe9/t001_frames.csv", p, sizeof p), 10, t, NULL, NULL, NULL, 0), 0);
  assert_int_equal(remux_gen_video(at(f, "jq_lat\xe9/t002.mkv", p, sizeof p), 10, "160x120", 0), 0);
  assert_int_equal(
      remux_gen_csv(at(f, "jq_lat\xe9/t002_frames.csv", p, sizeof p), 10, t, NULL, NULL, NULL, 0), 0);

  /* A child that does its work but whose result never arrives: its input must stay. */
  assert_int_equal(cli(f, "PIREC_REMUX_TEST_FAULT=t002:mute", "--replace --json $(printf 'jq_lat\\351')"), 1);
  json_error_t je;
  json_t *top = json_loads(f->out, 0, &je);
  if (top == NULL)
    fail_msg("not JSON (%s): %s", je.text, f->out);
  json_t *one = file_result(top, "jq_lat\\xE9/t001.mkv"), *two = file_result(top, "jq_lat\\xE9/t002.mkv");
  assert_true(json_is_true(json_object_get(one, "ok")));
  assert_string_equal(json_string_value(json_object_get(one, "output")), "jq_lat\\xE9/t001.mp4");
  assert_false(json_is_true(json_object_get(two, "ok")));
  json_decref(top);
  assert_int_equal(access(at(f, "jq_lat\xe9/t001.mkv", p, sizeof p), F_OK), -1);
  assert_int_equal(access(at(f, "jq_lat\xe9/t001.mp4", p, sizeof p), F_OK), 0);
  assert_int_equal(access(at(f, "jq_lat\xe9/t002.mkv", p, sizeof p), F_OK), 0);

  /* The table shows the path escaped, with its result. */
  assert_int_equal(cli(f, NULL, "--replace $(printf 'jq_lat\\351/t002.mkv')"), 0);
  if (strstr(f->out, "jq_lat\\xE9/t002.mkv") == NULL || strstr(f->out, "ok -> jq_lat\\xE9/t002.mp4") == NULL)
    fail_msg("no escaped path in the table:\n%s", f->out);
  assert_int_equal(access(at(f, "jq_lat\xe9/t002.mkv", p, sizeof p), F_OK), -1);
  free(t);
}

/* Issue 22 item 8: the table padded by bytes, so a row with a multi-byte path was misaligned. */
static void test_table_pads_by_width(void **state)
{
  struct fixture *f = *state;
  char p[512];
  int64_t *t = remux_gen_times(10, 1 * NS, 0, 5);
  static const char *const names[] = {"a", "\xc3\xa9t\xc3\xa9",
                                      "\xe6\x97\xa5\xe6\x9c\xac"}; /* a, été, 日本 */
  static const int widths[] = {1, 3, 4};

  for (int i = 0; i < 3; i++) {
    char name[64];
    snprintf(name, sizeof name, "%s.mkv", names[i]);
    assert_int_equal(remux_gen_video(at(f, name, p, sizeof p), 10, "160x120", 0), 0);
    snprintf(name, sizeof name, "%s_frames.csv", names[i]);
    assert_int_equal(remux_gen_csv(at(f, name, p, sizeof p), 10, t, NULL, NULL, NULL, 0), 0);
  }
  assert_int_equal(cli(f, NULL, "--dry-run a.mkv \xc3\xa9t\xc3\xa9.mkv \xe6\x97\xa5\xe6\x9c\xac.mkv"), 0);
  for (int i = 0; i < 3; i++) {
    char want[128];
    /* name + ".mkv" takes widths[i] + 4 columns; the column is 44 wide, then " " and FRAMES (%7). */
    snprintf(want, sizeof want, "\n%s.mkv%*s      10 ", names[i], 44 - widths[i] - 4, "");
    if (strstr(f->out, want) == NULL)
      fail_msg("row of '%s' not padded to 44 columns:\n%s", names[i], f->out);
  }
  free(t);
}

/* Issue 22 item 6: a trial that recorded no frames (a frames CSV with its header alone and no
 * video, or an older recorder's 0-byte video) is reported as "no frames" and does not fail the
 * session; a good file next to them is done. */
static void test_no_frames(void **state)
{
  struct fixture *f = *state;
  char p[512];
  int64_t *t = remux_gen_times(10, 1 * NS, 0, 9);
  static const char *const dirs[] = {"s", "s/camera0", "s/eyetracker", NULL};
  static const char header[] = "trial,mono_ns,wall_ns,frame,seq,device_ts_ns,dropped_before,bytes,offset\n";
  FILE *fp;

  make_dirs(f, dirs);
  assert_int_equal(remux_gen_video(at(f, "s/camera0/t001.mkv", p, sizeof p), 10, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "s/camera0/t001_frames.csv", p, sizeof p), 10, t, NULL, NULL, NULL, 0),
                   0);
  const char *empty_csvs[] = {"s/camera0/t002_frames.csv", "s/eyetracker/t001_scene_frames.csv"};
  for (int i = 0; i < 2; i++) {
    assert_non_null(fp = fopen(at(f, empty_csvs[i], p, sizeof p), "w"));
    fputs(header, fp);
    fclose(fp);
  }
  assert_non_null(fp = fopen(at(f, "s/eyetracker/t001_scene.mkv", p, sizeof p), "w")); /* 0 bytes */
  fclose(fp);

  assert_int_equal(cli(f, NULL, "s"), 0);
  if (strstr(f->out, "s/camera0/t002_frames.csv") == NULL ||
      strstr(f->out, "no frames (the trial recorded none)") == NULL ||
      strstr(f->out, "s/eyetracker/t001_scene.mkv") == NULL ||
      strstr(f->out, "no frames (an empty file)") == NULL ||
      strstr(f->out, "ok -> s/camera0/t001.mp4") == NULL || strstr(f->out, "FAILED") != NULL)
    fail_msg("want 'no frames' for the empty trials and the good one done:\n%s", f->out);
  /* Named on the command line, an empty video is "no frames" too. */
  assert_int_equal(cli(f, NULL, "--json s/eyetracker/t001_scene.mkv"), 0);
  assert_non_null(strstr(f->out, "\"reason\": \"no frames (an empty file)\""));
  free(t);
}

/* A session.json with final as given, naming this host, pid and boot (boot NULL: not recorded). */
static void write_manifest(const char *dir, int final, int pid, const char *boot)
{
  char path[600], host[256] = "";
  gethostname(host, sizeof host - 1);
  json_t *h = json_pack("{s:s,s:i}", "hostname", host, "pid", pid);
  if (boot)
    json_object_set_new(h, "boot_id", json_string(boot));
  json_t *m = json_pack("{s:s,s:b,s:o}", "format", "pirec-session-1", "final", final, "host", h);
  snprintf(path, sizeof path, "%s/session.json", dir);
  assert_int_equal(json_dump_file(m, path, 0), 0);
  json_decref(m);
}

/* A session whose session.json was never finalised and whose controller is gone is reported as
 * crashed, in the table and in --json, with what its files lost; a finished one is not; a pid that
 * runs but in an earlier boot (a power cut, then the pid reused) does not make a session live. */
static void test_session_verdict(void **state)
{
  struct fixture *f = *state;
  char p[512], d[512];
  int64_t *t = remux_gen_times(12, 1 * NS, 0, 5);
  static const char *const dirs[] = {"c", "c/cam0", "d", "d/cam0", "b", "b/cam0", NULL};
  make_dirs(f, dirs);
  pid_t dead = fork();
  assert_true(dead >= 0);
  if (dead == 0)
    _exit(0);
  assert_int_equal(waitpid(dead, NULL, 0), dead);
  /* c: crashed; the CSV got two rows further than the video and was cut in its last one */
  assert_int_equal(remux_gen_video(at(f, "c/cam0/t001.mkv", p, sizeof p), 10, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "c/cam0/t001_frames.csv", p, sizeof p), 12, t, NULL, NULL, NULL, 9),
                   0);
  write_manifest(at(f, "c", d, sizeof d), 0, (int)dead, NULL);
  /* d: finished */
  assert_int_equal(remux_gen_video(at(f, "d/cam0/t001.mkv", p, sizeof p), 10, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "d/cam0/t001_frames.csv", p, sizeof p), 10, t, NULL, NULL, NULL, 0),
                   0);
  write_manifest(at(f, "d", d, sizeof d), 1, (int)getpid(), NULL);
  /* b: not final, its pid runs (this test), but it was recorded in another boot */
  assert_int_equal(remux_gen_video(at(f, "b/cam0/t001.mkv", p, sizeof p), 10, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "b/cam0/t001_frames.csv", p, sizeof p), 10, t, NULL, NULL, NULL, 0),
                   0);
  write_manifest(at(f, "b", d, sizeof d), 0, (int)getpid(), "00000000-0000-0000-0000-000000000000");

  assert_int_equal(cli(f, NULL, "c d"), 0);
  if (!strstr(f->out, "session 'c': CRASHED (session.json never finalised; its controller (pid ") ||
      !strstr(f->out, "1 of 1 files recovered; cut 2 rows without data, 0 frames without a row, 0 trailing "
                      "bytes, 1 partial CSV lines") ||
      !strstr(f->out, "session 'd': finished") || strstr(f->out, "session 'd': CRASHED"))
    fail_msg("want c crashed with its loss and d finished:\n%s", f->out);
  assert_int_equal(cli(f, NULL, "--json --dry-run c d b"), 0);
  json_t *top = json_loads(f->out, 0, NULL), *s;
  assert_non_null(top);
  size_t i, crashed = 0;
  json_array_foreach(json_object_get(top, "sessions"), i, s)
  {
    const char *dir = json_string_value(json_object_get(s, "dir"));
    const char *verdict = json_string_value(json_object_get(s, "state"));
    if (strcmp(dir, "c") == 0) {
      assert_string_equal(verdict, "crashed");
      assert_int_equal(json_integer_value(json_object_get(s, "rows_cut")), 2);
      assert_int_equal(json_integer_value(json_object_get(s, "partial_rows")), 1);
      crashed++;
    } else if (strcmp(dir, "b") == 0) {
      assert_string_equal(verdict, "crashed");
      assert_non_null(
          strstr(json_string_value(json_object_get(s, "reason")), "before this machine last booted"));
      crashed++;
    } else {
      assert_string_equal(dir, "d");
      assert_string_equal(verdict, "finished");
    }
  }
  assert_int_equal(json_array_size(json_object_get(top, "sessions")), 3);
  assert_int_equal(crashed, 2);
  json_decref(top);
  free(t);
}

/* Rounds a/b to the nearest integer, half away from zero, like the engine (a, b >= 0). */
static int64_t div_round(int64_t a, int64_t b)
{
  return (a + b / 2) / b;
}

/* The camera's clock restarts at 0 halfway (rpicam-vid restarted): auto falls back to mono_ns and
 * says so; --clock device still fails, naming the file, the line and the value. */
static void test_device_clock_restarts(void **state)
{
  struct fixture *f = *state;
  char p[512];
  int64_t *t = remux_gen_times(90, 1 * NS, 4000000, 59), dev[90], *pts = NULL;
  int den;
  json_t *top, *o;
  json_error_t jerr;

  for (int i = 0; i < 90; i++)
    dev[i] = i < 45 ? 5 * NS + i * (NS / 30) : (i - 45) * (NS / 30);
  assert_int_equal(remux_gen_video(at(f, "d.mkv", p, sizeof p), 90, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "d_frames.csv", p, sizeof p), 90, t, dev, NULL, NULL, 0), 0);

  assert_int_equal(cli(f, NULL, "d.mkv"), 0);
  assert_non_null(strstr(f->out, "ok -> d.mp4 (clock mono: device_ts_ns 0 on line 47 is not after"));
  assert_int_equal(remux_gen_probe_pts(at(f, "d.mp4", p, sizeof p), 0, &pts, &den), 90);
  assert_int_equal(den, 90000);
  for (int i = 0; i < 90; i++)
    assert_int_equal(pts[i] - pts[0], div_round((t[i] - t[0]) * 9, 100000));
  free(pts);

  assert_int_equal(cli(f, NULL, "--dry-run --json d.mkv"), 0);
  top = json_loads(f->out, 0, &jerr);
  if (top == NULL)
    fail_msg("not JSON (%s): %s", jerr.text, f->out);
  o = file_result(top, "d.mkv");
  assert_string_equal(json_string_value(json_object_get(o, "clock")), "mono");
  assert_non_null(strstr(json_string_value(json_object_get(o, "clock_note")), "line 47"));
  json_decref(top);

  assert_int_equal(cli(f, NULL, "--clock device --dry-run d.mkv"), 1);
  assert_non_null(strstr(f->out, "d_frames.csv:47: device_ts_ns 0 is not after 6466666652"));
  free(t);
}

/* A session scan skips a stray video without a timing file (listed, exit 0) and never takes
 * pirec-remux's own outputs for inputs: not tNNN.mkv next to the tNNN.h264 it was made from (which
 * would map to the same tNNN.mp4 and race under -j 2), nor, once --replace removed the .h264, the
 * tNNN.mkv that remains (recognised by its WritingApp). */
static void test_scan_skips_strays_and_outputs(void **state)
{
  struct fixture *f = *state;
  static const char *const dirs[] = {"S", "S/camera0", NULL};
  char p[512];
  int64_t *t = remux_gen_times(60, 1 * NS, 2000000, 61), *pts = NULL;
  int den;
  json_t *top, *files, *skipped;
  json_error_t jerr;

  make_dirs(f, dirs);
  assert_int_equal(remux_gen_video(at(f, "S/camera0/t001.h264", p, sizeof p), 60, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "S/camera0/t001_frames.csv", p, sizeof p), 60, t, NULL, NULL, NULL, 0),
                   0);
  assert_int_equal(remux_gen_video(at(f, "S/camera0/stray.h264", p, sizeof p), 30, "160x120", 0), 0);

  /* The stray is listed as skipped and does not fail the run. */
  assert_int_equal(cli(f, NULL, "--format mkv -j 2 S"), 0);
  assert_non_null(strstr(f->out, "SKIPPED: no timing file"));
  assert_non_null(strstr(f->out, "1 of 1 files done"));
  assert_int_equal(remux_gen_probe_pts(at(f, "S/camera0/t001.mkv", p, sizeof p), 0, &pts, &den), 60);
  free(pts);

  /* A re-run (MP4 now) takes t001.h264 only: t001.mkv is its output, not an input. */
  assert_int_equal(cli(f, NULL, "-j 2 --json S"), 0);
  top = json_loads(f->out, 0, &jerr);
  if (top == NULL)
    fail_msg("not JSON (%s): %s", jerr.text, f->out);
  files = json_object_get(top, "files");
  skipped = json_object_get(top, "skipped");
  assert_int_equal(json_array_size(files), 1);
  assert_string_equal(json_string_value(json_object_get(json_array_get(files, 0), "input")),
                      "S/camera0/t001.h264");
  assert_int_equal(json_array_size(skipped), 2);
  assert_string_equal(json_string_value(json_object_get(json_array_get(skipped, 0), "input")),
                      "S/camera0/stray.h264");
  assert_string_equal(json_string_value(json_object_get(json_array_get(skipped, 1), "input")),
                      "S/camera0/t001.mkv");
  assert_non_null(strstr(json_string_value(json_object_get(json_array_get(skipped, 1), "reason")),
                         "output of pirec-remux"));
  json_decref(top);
  assert_int_equal(remux_gen_probe_pts(at(f, "S/camera0/t001.mp4", p, sizeof p), 0, &pts, &den), 60);
  free(pts);

  /* --replace removes t001.h264; what remains, t001.mkv, is still known as ours. */
  assert_int_equal(unlink(at(f, "S/camera0/t001.mp4", p, sizeof p)), 0);
  assert_int_equal(cli(f, NULL, "--format mkv --replace S/camera0/t001.h264"), 0);
  assert_int_equal(access(at(f, "S/camera0/t001.h264", p, sizeof p), F_OK), -1);
  assert_int_equal(cli(f, NULL, "--json S"), 0);
  top = json_loads(f->out, 0, &jerr);
  if (top == NULL)
    fail_msg("not JSON (%s): %s", jerr.text, f->out);
  assert_int_equal(json_array_size(json_object_get(top, "files")), 0);
  skipped = json_object_get(top, "skipped");
  assert_int_equal(json_array_size(skipped), 2);
  assert_non_null(
      strstr(json_string_value(json_object_get(json_array_get(skipped, 1), "reason")), "WritingApp"));
  json_decref(top);
  assert_int_equal(access(at(f, "S/camera0/t001.mp4", p, sizeof p), F_OK), -1);
  free(t);
}

/* Copies the first len bytes of src over dst (len < 0: all of it). */
static void copy_prefix(const char *src, const char *dst, long len)
{
  FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
  int c;

  assert_non_null(in);
  assert_non_null(out);
  while ((len < 0 || len-- > 0) && (c = fgetc(in)) != EOF)
    fputc(c, out);
  fclose(in);
  assert_int_equal(fclose(out), 0);
}

/* --verify holds an output to the frames its CSV and input hold: a cut output (bytes missing at
 * the end, as from an interrupted copy) and a complete but short one (fewer frames than the input
 * and CSV pair up) fail, the latter also once the input is gone; a recovered output still passes. */
static void test_verify_short_output(void **state)
{
  struct fixture *f = *state;
  char p[512], q[512], cmd[1024];
  int64_t *t = remux_gen_times(90, 1 * NS, 2000000, 67);
  struct stat st;

  assert_int_equal(remux_gen_video(at(f, "v.mkv", p, sizeof p), 90, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "v_frames.csv", p, sizeof p), 90, t, NULL, NULL, NULL, 0), 0);
  assert_int_equal(cli(f, NULL, "--format mkv v.mkv"), 0);
  copy_prefix(at(f, "v_timed.mkv", p, sizeof p), at(f, "good.mkv", q, sizeof q), -1);
  assert_int_equal(cli(f, NULL, "--verify v_timed.mkv"), 0);

  /* Cut at 60 %: the demuxer reads the first ~54 frames and stops without an error. */
  assert_int_equal(stat(at(f, "good.mkv", p, sizeof p), &st), 0);
  copy_prefix(p, at(f, "v_timed.mkv", q, sizeof q), (long)(st.st_size * 6 / 10));
  assert_int_equal(cli(f, NULL, "--verify v_timed.mkv"), 1);
  assert_non_null(strstr(f->out, "FAILED: 'v_timed.mkv' is cut or unfinished"));

  /* Complete but short: 50 of the 90 frames, remuxed again by ffmpeg (timestamps copied). */
  snprintf(cmd, sizeof cmd,
           "cd '%s' && ffmpeg -nostdin -v error -y -i good.mkv -c copy -frames:v 50 v_timed.mkv", f->dir);
  {
    char *argv[] = {"sh", "-c", cmd, NULL};
    assert_int_equal(remux_gen_run(argv, NULL, 0), 0);
  }
  assert_int_equal(cli(f, NULL, "--verify v_timed.mkv"), 1);
  assert_non_null(strstr(f->out, "FAILED: 'v_timed.mkv' has 50 frames but should have 90: 'v.mkv' "
                                 "and 'v_frames.csv' hold 90"));
  /* Without the input (as after --replace), a complete CSV still wants all its rows. */
  assert_int_equal(rename(at(f, "v.mkv", p, sizeof p), at(f, "away.mkv", q, sizeof q)), 0);
  assert_int_equal(cli(f, NULL, "--verify v_timed.mkv"), 1);
  assert_non_null(strstr(f->out, "has 50 frames but 'v_frames.csv' has 90 complete rows"));
  free(t);
}

/* Issue 22 item 2: an MP4 remuxed from another clip with the same frame count and timing,
 * renamed into place, was "verified". Its frames are now compared with the input's (payload
 * bytes and hash), for an MKV input and a raw H.264 one. */
static void test_verify_other_video(void **state)
{
  struct fixture *f = *state;
  char p[512], q[512], cmd[2048];
  int64_t *t = remux_gen_times(30, 1 * NS, 2000000, 71);
  static const char *const exts[] = {"mkv", "h264"};

  for (int i = 0; i < 2; i++) {
    char name[64], args[128];
    snprintf(name, sizeof name, "a%d.%s", i, exts[i]);
    assert_int_equal(remux_gen_video(at(f, name, p, sizeof p), 30, "160x120", 0), 0);
    snprintf(cmd, sizeof cmd,
             "cd '%s' && ffmpeg -nostdin -v error -y -f lavfi -i smptebars=size=160x120:rate=30 -frames:v 30 "
             "-c:v libx264 -preset ultrafast -bf 0 b%d.%s",
             f->dir, i, exts[i]);
    char *argv[] = {"sh", "-c", cmd, NULL};
    assert_int_equal(remux_gen_run(argv, NULL, 0), 0);
    snprintf(name, sizeof name, "a%d_frames.csv", i);
    assert_int_equal(remux_gen_csv(at(f, name, p, sizeof p), 30, t, NULL, NULL, NULL, 0), 0);
    snprintf(name, sizeof name, "b%d_frames.csv", i);
    assert_int_equal(remux_gen_csv(at(f, name, p, sizeof p), 30, t, NULL, NULL, NULL, 0), 0);
    snprintf(args, sizeof args, "a%d.%s b%d.%s", i, exts[i], i, exts[i]);
    assert_int_equal(cli(f, NULL, args), 0);
    snprintf(args, sizeof args, "--verify a%d.mp4", i);
    assert_int_equal(cli(f, NULL, args), 0);
    snprintf(name, sizeof name, "b%d.mp4", i);
    at(f, name, q, sizeof q);
    snprintf(name, sizeof name, "a%d.mp4", i);
    assert_int_equal(rename(q, at(f, name, p, sizeof p)), 0);
    assert_int_equal(cli(f, NULL, args), 1);
    if (strstr(f->out, "frame 0 holds other data than the input's frame 0") == NULL)
      fail_msg("another video passed as a%d.mp4:\n%s", i, f->out);
  }
  free(t);
}

static void test_usage_and_quiet(void **state)
{
  struct fixture *f = *state;
  char p[512];
  int64_t *t = remux_gen_times(30, 1 * NS, 1000000, 41);

  assert_int_equal(cli(f, NULL, ""), 64);
  assert_int_equal(cli(f, NULL, "--format avi x.mkv"), 64);
  assert_int_equal(cli(f, NULL, "--clock sundial x.mkv"), 64);
  assert_int_equal(cli(f, NULL, "--timing a.csv x.mkv y.mkv"), 64);
  assert_int_equal(cli(f, NULL, "-j 0 x.mkv"), 64);
  assert_int_equal(cli(f, NULL, "--no-such-option x.mkv"), 64);
  assert_int_equal(cli(f, NULL, "missing.mkv"), 1);
  assert_non_null(strstr(f->out, "missing.mkv"));

  assert_int_equal(remux_gen_video(at(f, "q.mkv", p, sizeof p), 30, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "q_frames.csv", p, sizeof p), 30, t, NULL, NULL, NULL, 0), 0);
  assert_int_equal(cli(f, NULL, "--dry-run q.mkv"), 0);
  assert_non_null(strstr(f->out, "would write"));
  assert_int_equal(access(at(f, "q.mp4", p, sizeof p), F_OK), -1);
  /* Not a terminal: no progress bars, nothing on stderr. */
  assert_int_equal(cli(f, NULL, "--format mkv --write-timestamps q.mkv"), 0);
  assert_string_equal(f->err, "");
  assert_int_equal(access(at(f, "q_timed.mkv.timestamps.txt", p, sizeof p), F_OK), 0);
  assert_int_equal(cli(f, NULL, "--verify --format mkv q_timed.mkv"), 0);
  /* A CSV edited after the fact: --verify fails and says by how much. */
  t[12] += 5000000;
  assert_int_equal(remux_gen_csv(at(f, "q_frames.csv", p, sizeof p), 30, t, NULL, NULL, NULL, 0), 0);
  assert_int_equal(cli(f, NULL, "--verify q_timed.mkv"), 1);
  assert_non_null(strstr(f->out, "frame 12 has pts - pts0"));
  free(t);
}

/* On a terminal (a real pty from script(1)) there are progress bars: one per file and a total. */
static void test_progress_on_tty(void **state)
{
  struct fixture *f = *state;
  char p[512], cmd[2048];
  int64_t *t = remux_gen_times(300, 1 * NS, 1000000, 47);

  if (access("/usr/bin/script", X_OK) != 0)
    skip();
  assert_int_equal(remux_gen_video(at(f, "tty.h264", p, sizeof p), 300, "320x240", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "tty_frames.csv", p, sizeof p), 300, t, NULL, NULL, NULL, 0), 0);
  snprintf(cmd, sizeof cmd, "cd '%s' && script -qec \"'%s' tty.h264\" /dev/null", f->dir, f->bin);
  {
    char *argv[] = {"sh", "-c", cmd, NULL};
    assert_int_equal(remux_gen_run(argv, f->out, sizeof f->out), 0);
  }
  assert_non_null(strstr(f->out, "total"));
  assert_non_null(strstr(f->out, "100%"));
  assert_non_null(strstr(f->out, "1 of 1 files done"));
  free(t);
}

/* Interop: mkvmerge, given the raw stream and our --write-timestamps file, makes an MKV with the
 * same pts as ours. */
static void test_mkvmerge_reads_timestamps(void **state)
{
  struct fixture *f = *state;
  char p[512], cmd[2048];
  int64_t *t = remux_gen_times(90, 1 * NS, 9000000, 53), *a = NULL, *b = NULL, na, nb;
  int den;

  if (access("/usr/bin/mkvmerge", X_OK) != 0)
    skip(); /* scripts/install-deps installs mkvtoolnix */
  assert_int_equal(remux_gen_video(at(f, "w.h264", p, sizeof p), 90, "160x120", 0), 0);
  assert_int_equal(remux_gen_csv(at(f, "w_frames.csv", p, sizeof p), 90, t, NULL, NULL, NULL, 0), 0);
  assert_int_equal(cli(f, NULL, "--format mkv --write-timestamps w.h264"), 0);
  snprintf(cmd, sizeof cmd, "cd '%s' && mkvmerge -q -o theirs.mkv --timestamps 0:w.mkv.timestamps.txt w.h264",
           f->dir);
  {
    char *argv[] = {"sh", "-c", cmd, NULL};
    assert_int_equal(remux_gen_run(argv, NULL, 0), 0);
  }
  na = remux_gen_probe_pts(at(f, "w.mkv", p, sizeof p), 0, &a, &den);
  nb = remux_gen_probe_pts(at(f, "theirs.mkv", p, sizeof p), 0, &b, &den);
  assert_int_equal(na, 90);
  assert_int_equal(nb, 90);
  for (int i = 0; i < 90; i++)
    assert_int_equal(a[i] - a[0], b[i] - b[0]);
  free(a);
  free(b);
  free(t);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_session_mixed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sigkilled_recorder, setup, teardown),
      cmocka_unit_test_setup_teardown(test_device_clock_restarts, setup, teardown),
      cmocka_unit_test_setup_teardown(test_table_shortens_long_paths, setup, teardown),
      cmocka_unit_test_setup_teardown(test_non_utf8_path_replace, setup, teardown),
      cmocka_unit_test_setup_teardown(test_table_pads_by_width, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_frames, setup, teardown),
      cmocka_unit_test_setup_teardown(test_session_verdict, setup, teardown),
      cmocka_unit_test_setup_teardown(test_scan_skips_strays_and_outputs, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verify_short_output, setup, teardown),
      cmocka_unit_test_setup_teardown(test_verify_other_video, setup, teardown),
      cmocka_unit_test_setup_teardown(test_usage_and_quiet, setup, teardown),
      cmocka_unit_test_setup_teardown(test_progress_on_tty, setup, teardown),
      cmocka_unit_test_setup_teardown(test_mkvmerge_reads_timestamps, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
