/* Tests for subprocess/ffmpeg.c: the argv builders, the probe against the real ffmpeg, and a real
 * encode of raw frames fed through a job's stdin with backpressure, checked with ffprobe. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "pirec/ffmpeg.h"
#include "pirec/job.h"
#include "pirec/log.h"

static int argv_has(char **argv, const char *a, const char *b)
{
  for (int i = 0; argv[i]; i++)
    if (strcmp(argv[i], a) == 0 && (!b || (argv[i + 1] && strcmp(argv[i + 1], b) == 0)))
      return 1;
  return 0;
}

static void test_encode_argv(void **state)
{
  struct pirec_ffmpeg_encode e;
  char **argv;

  pirec_ffmpeg_encode_init(&e);
  assert_int_equal(pirec_ffmpeg_encode_argv(&e, &argv), -EINVAL); /* no output */
  assert_null(argv);
  e.output = "/tmp/x.mkv";
  assert_int_equal(pirec_ffmpeg_encode_argv(&e, &argv), -EINVAL); /* no size */
  e.width = 640;
  e.height = 360;
  e.crf = 52;
  assert_int_equal(pirec_ffmpeg_encode_argv(&e, &argv), -EINVAL);
  e.crf = 20;
  e.gop = 60;
  e.preset = "ultrafast";
  e.progress_fd = 3;
  assert_int_equal(pirec_ffmpeg_encode_argv(&e, &argv), 0);
  assert_string_equal(argv[0], "ffmpeg");
  assert_true(argv_has(argv, "-f", "rawvideo"));
  assert_true(argv_has(argv, "-pix_fmt", "yuv420p"));
  assert_true(argv_has(argv, "-video_size", "640x360"));
  assert_true(argv_has(argv, "-framerate", "30/1"));
  assert_true(argv_has(argv, "-i", "pipe:0"));
  assert_true(argv_has(argv, "-fps_mode", "passthrough"));
  assert_false(argv_has(argv, "-vsync", NULL));
  assert_true(argv_has(argv, "-c:v", "libx264"));
  assert_true(argv_has(argv, "-preset", "ultrafast"));
  assert_true(argv_has(argv, "-crf", "20"));
  assert_true(argv_has(argv, "-g", "60"));
  assert_true(argv_has(argv, "-bf", "0"));
  assert_true(argv_has(argv, "-progress", "pipe:3"));
  assert_true(argv_has(argv, "-nostdin", NULL));
  assert_true(argv_has(argv, "-f", "matroska"));
  int n = 0;
  while (argv[n])
    n++;
  assert_string_equal(argv[n - 1], "/tmp/x.mkv");
  pirec_ffmpeg_argv_free(argv);

  e.legacy_vsync = 1;
  e.program = "/opt/ffmpeg4/bin/ffmpeg";
  e.bframes = -1;
  assert_int_equal(pirec_ffmpeg_encode_argv(&e, &argv), 0);
  assert_string_equal(argv[0], "/opt/ffmpeg4/bin/ffmpeg");
  assert_true(argv_has(argv, "-vsync", "passthrough"));
  assert_false(argv_has(argv, "-fps_mode", NULL));
  assert_false(argv_has(argv, "-bf", NULL));
  assert_true(argv_has(argv, "-cluster_time_limit", "1000"));
  assert_false(argv_has(argv, "-aud", NULL));
  pirec_ffmpeg_argv_free(argv);
  pirec_ffmpeg_argv_free(NULL);

  /* The defaults are the config schema's: what a [camera.NAME] section gets unless it says. */
  pirec_ffmpeg_encode_init(&e);
  e.output = "/tmp/fifo";
  e.width = 320;
  e.height = 240;
  assert_int_equal(pirec_ffmpeg_encode_argv(&e, &argv), 0);
  assert_true(argv_has(argv, "-preset", "ultrafast"));
  assert_true(argv_has(argv, "-g", "60"));
  assert_true(argv_has(argv, "-crf", "23"));
  pirec_ffmpeg_argv_free(argv);

  /* Raw H.264 for a caller that muxes itself: delimiters on, no Matroska options. */
  e.format = "h264";
  assert_int_equal(pirec_ffmpeg_encode_argv(&e, &argv), 0);
  assert_true(argv_has(argv, "-aud", "1"));
  assert_true(argv_has(argv, "-f", "h264"));
  assert_false(argv_has(argv, "-f", "matroska"));
  assert_false(argv_has(argv, "-cluster_time_limit", NULL));
  pirec_ffmpeg_argv_free(argv);
  e.format = "mpegts";
  assert_int_equal(pirec_ffmpeg_encode_argv(&e, &argv), -EINVAL);
  assert_null(argv);
}

static void test_remux_argv(void **state)
{
  struct pirec_ffmpeg_remux r;
  char **argv;

  pirec_ffmpeg_remux_init(&r);
  assert_int_equal(pirec_ffmpeg_remux_argv(&r, &argv), -EINVAL);
  r.input = "in.mkv";
  r.output = "out.mp4";
  r.faststart = 1;
  assert_int_equal(pirec_ffmpeg_remux_argv(&r, &argv), 0);
  assert_true(argv_has(argv, "-i", "in.mkv"));
  assert_true(argv_has(argv, "-c", "copy"));
  assert_true(argv_has(argv, "-map", "0"));
  assert_true(argv_has(argv, "-movflags", "+faststart"));
  pirec_ffmpeg_argv_free(argv);
}

static void test_probe(void **state)
{
  struct pirec_ffmpeg_info info;
  char err[512];

  assert_int_equal(pirec_ffmpeg_probe(NULL, "libx264", &info, err, sizeof err), 0);
  assert_true(info.major >= 4);
  assert_string_equal(err, "");

  assert_int_equal(pirec_ffmpeg_probe(NULL, "pirec_no_such_encoder", &info, err, sizeof err), -ENOTSUP);
  assert_non_null(strstr(err, "has no encoder 'pirec_no_such_encoder'"));

  assert_int_equal(pirec_ffmpeg_probe("/nonexistent/ffmpeg", "libx264", &info, err, sizeof err), -ENOENT);
  assert_non_null(strstr(err, "'/nonexistent/ffmpeg'"));

  assert_int_equal(pirec_ffmpeg_probe("/bin/true", NULL, &info, err, sizeof err), -EPROTO);
  assert_non_null(strstr(err, "/bin/true"));
}

struct probe_result {
  int calls;
  int status;
  struct pirec_ffmpeg_info info;
  char err[512];
};

static void probe_cb(int status, const struct pirec_ffmpeg_info *info, const char *err, void *user)
{
  struct probe_result *r = user;
  r->calls++;
  r->status = status;
  r->info = *info;
  snprintf(r->err, sizeof r->err, "%s", err);
}

static void run_probe(const char *program, const char *encoder, struct probe_result *r)
{
  uv_loop_t loop;
  memset(r, 0, sizeof *r);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(pirec_ffmpeg_probe_start(&loop, program, encoder, probe_cb, r), 0);
  assert_int_equal(r->calls, 0); /* never inside the call */
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(r->calls, 1);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_probe_async(void **state)
{
  struct probe_result r;
  struct pirec_ffmpeg_info sync_info;
  char err[256];
  uv_loop_t loop;

  assert_int_equal(pirec_ffmpeg_probe(NULL, "libx264", &sync_info, err, sizeof err), 0);
  run_probe(NULL, "libx264", &r);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.err, "");
  assert_int_equal(r.info.major, sync_info.major); /* both read the same ffmpeg */
  assert_int_equal(r.info.minor, sync_info.minor);
  assert_int_equal(r.info.legacy_vsync, sync_info.legacy_vsync);

  run_probe("ffmpeg", "pirec_no_such_encoder", &r);
  assert_int_equal(r.status, -ENOTSUP);
  assert_non_null(strstr(r.err, "has no encoder 'pirec_no_such_encoder'"));

  run_probe("/bin/true", "libx264", &r);
  assert_int_equal(r.status, -EPROTO);
  assert_non_null(strstr(r.err, "/bin/true"));

  /* a missing program fails synchronously, and then no callback */
  memset(&r, 0, sizeof r);
  assert_int_equal(uv_loop_init(&loop), 0);
  assert_int_equal(pirec_ffmpeg_probe_start(&loop, "/nonexistent/ffmpeg", "libx264", probe_cb, &r), -ENOENT);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(r.calls, 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* ---- a real encode through the job's stdin ---- */

enum { W = 640, H = 360, FRAME = W * H * 3 / 2, WANT = 320 };

struct enc {
  uv_loop_t loop;
  uv_timer_t feeder;
  struct pirec_job *job;
  unsigned char *frame;
  int offered, accepted, refused;
  int ended;
  struct pirec_job_result result;
  char tail[4096];
  int limit; /* frames to accept before closing stdin */
  int progress_reports;
  int64_t last_progress_frame;
  int saw_end;
};

static void enc_end(struct pirec_job *job, const struct pirec_job_result *r)
{
  struct enc *e = pirec_job_user(job);
  e->ended++;
  e->result = *r;
  snprintf(e->tail, sizeof e->tail, "%s", r->stderr_tail);
}

static void enc_progress(struct pirec_job *job, const struct pirec_job_progress *p)
{
  struct enc *e = pirec_job_user(job);
  e->progress_reports++;
  e->last_progress_frame = p->frame;
  if (p->end)
    e->saw_end = 1;
}

static void paint(unsigned char *f, int n)
{
  /* a moving gradient, so every frame differs and the encoder has real work */
  for (int y = 0; y < H; y++)
    for (int x = 0; x < W; x++)
      f[y * W + x] = (unsigned char)(x + y + n * 3);
  memset(f + W * H, 128 + (n % 64), FRAME - W * H);
}

static void feed(uv_timer_t *t)
{
  struct enc *e = t->data;

  /* Offer faster than any encoder here can take (4 frames per ms): the job must refuse the excess
   * instead of queueing it. */
  for (int i = 0; i < 4 && e->accepted < e->limit; i++) {
    paint(e->frame, e->accepted);
    uv_buf_t b = uv_buf_init((char *)e->frame, FRAME);
    int err = pirec_job_write(e->job, &b, 1);
    e->offered++;
    if (err == 0)
      e->accepted++;
    else {
      assert_int_equal(err, -ENOBUFS);
      e->refused++;
    }
  }
  if (e->accepted >= e->limit) {
    uv_timer_stop(t);
    assert_int_equal(pirec_job_close_stdin(e->job), 0);
  }
}

static long ffprobe_count(const char *path, const char *entry)
{
  char cmd[1024], out[128];
  FILE *p;
  long n = -1;

  snprintf(cmd, sizeof cmd,
           "ffprobe -v error -count_packets -select_streams v:0 -show_entries stream=%s "
           "-of csv=p=0 '%s'",
           entry, path);
  p = popen(cmd, "r");
  assert_non_null(p);
  if (fgets(out, sizeof out, p))
    n = strtol(out, NULL, 10);
  assert_int_equal(pclose(p), 0);
  return n;
}

static void test_real_encode_packets_equal_frames(void **state)
{
  struct enc e;
  struct pirec_ffmpeg_info info;
  struct pirec_ffmpeg_encode enc;
  struct pirec_job_options o;
  struct pirec_job_stats st;
  char err[256], dir[] = "/tmp/pirec-test-ffmpeg-XXXXXX", out[256], mp4[256];
  char **argv;

  assert_int_equal(pirec_ffmpeg_probe(NULL, "libx264", &info, err, sizeof err), 0);
  assert_non_null(mkdtemp(dir));
  snprintf(out, sizeof out, "%s/t001.mkv", dir);
  snprintf(mp4, sizeof mp4, "%s/t001.mp4", dir);

  memset(&e, 0, sizeof e);
  e.limit = WANT;
  e.frame = malloc(FRAME);
  assert_non_null(e.frame);
  assert_int_equal(uv_loop_init(&e.loop), 0);

  pirec_ffmpeg_encode_init(&enc);
  enc.output = out;
  enc.width = W;
  enc.height = H;
  enc.preset = "ultrafast";
  enc.gop = 30;
  enc.threads = 2;
  enc.progress_fd = 3;
  enc.legacy_vsync = info.legacy_vsync;
  assert_int_equal(pirec_ffmpeg_encode_argv(&enc, &argv), 0);

  pirec_job_options_init(&o);
  o.argv = (const char *const *)argv;
  o.name = "camera0 encoder";
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.progress_fd = 3;
  o.stdin_max_outstanding = 4 * FRAME; /* a few frames in flight at most */
  o.stall_timeout_ms = 20000;
  o.total_timeout_ms = 60000;
  o.on_end = enc_end;
  o.on_progress = enc_progress;
  o.user = &e;
  assert_int_equal(pirec_job_new(&e.loop, &o, &e.job), 0);
  pirec_ffmpeg_argv_free(argv); /* the job copied it */
  assert_int_equal(pirec_job_start(e.job), 0);

  uv_timer_init(&e.loop, &e.feeder);
  e.feeder.data = &e;
  uv_timer_start(&e.feeder, feed, 1, 1);
  uv_run(&e.loop, UV_RUN_DEFAULT);

  if (e.result.status != 0)
    fail_msg("ffmpeg ended (%s) with status %d: %s", pirec_job_end_str(e.result.reason), e.result.status,
             e.tail);
  assert_int_equal(e.ended, 1);
  assert_int_equal(e.result.reason, PIREC_JOB_END_EXITED);
  assert_int_equal(e.accepted, WANT);
  assert_true(e.refused > 0); /* backpressure really happened */
  pirec_job_stats(e.job, &st);
  assert_int_equal(st.stdin_bytes, (uint64_t)WANT * FRAME);
  assert_true(st.stdin_outstanding_max <= 4 * FRAME);
  assert_int_equal(st.stdin_refused, (uint64_t)e.refused);
  assert_true(e.saw_end);
  assert_int_equal(e.last_progress_frame, WANT);

  /* frames accepted == packets written == frames decodable */
  assert_int_equal(ffprobe_count(out, "nb_read_packets"), WANT);

  /* stream copy to MP4 through the remux builder, as a job too */
  struct pirec_ffmpeg_remux rx;
  pirec_ffmpeg_remux_init(&rx);
  rx.input = out;
  rx.output = mp4;
  rx.faststart = 1;
  assert_int_equal(pirec_ffmpeg_remux_argv(&rx, &argv), 0);
  pirec_job_free(e.job);
  pirec_job_options_init(&o);
  o.argv = (const char *const *)argv;
  o.name = "remux";
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.on_end = enc_end;
  o.user = &e;
  e.ended = 0;
  assert_int_equal(pirec_job_new(&e.loop, &o, &e.job), 0);
  pirec_ffmpeg_argv_free(argv);
  assert_int_equal(pirec_job_start(e.job), 0);
  uv_run(&e.loop, UV_RUN_DEFAULT);
  if (e.result.status != 0)
    fail_msg("remux failed with status %d: %s", e.result.status, e.tail);
  assert_int_equal(e.ended, 1);
  assert_int_equal(ffprobe_count(mp4, "nb_read_packets"), WANT);
  pirec_job_free(e.job);

  uv_close((uv_handle_t *)&e.feeder, NULL);
  uv_run(&e.loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&e.loop), 0);
  free(e.frame);
  unlink(out);
  unlink(mp4);
  rmdir(dir);
}

/* The encoder SIGKILLed mid-recording (as when the recorder loses power or the stop escalation
 * ends in SIGKILL): the MKV written so far stays readable. */
static void test_killed_encoder_leaves_readable_mkv(void **state)
{
  struct enc e;
  struct pirec_ffmpeg_encode enc;
  struct pirec_ffmpeg_info info;
  struct pirec_job_options o;
  struct pirec_job_stats st;
  char err[256], dir[] = "/tmp/pirec-test-ffmpeg-XXXXXX", out[256];
  char **argv;

  assert_int_equal(pirec_ffmpeg_probe(NULL, "libx264", &info, err, sizeof err), 0);
  assert_non_null(mkdtemp(dir));
  snprintf(out, sizeof out, "%s/killed.mkv", dir);
  memset(&e, 0, sizeof e);
  e.limit = 1 << 30; /* never closes stdin: killed while fed */
  e.frame = malloc(FRAME);
  assert_non_null(e.frame);
  assert_int_equal(uv_loop_init(&e.loop), 0);

  pirec_ffmpeg_encode_init(&enc);
  enc.output = out;
  enc.width = W;
  enc.height = H;
  enc.preset = "ultrafast";
  enc.gop = 10;
  enc.progress_fd = 3;
  enc.legacy_vsync = info.legacy_vsync;
  assert_int_equal(pirec_ffmpeg_encode_argv(&enc, &argv), 0);
  pirec_job_options_init(&o);
  o.argv = (const char *const *)argv;
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.progress_fd = 3;
  o.stdin_max_outstanding = 4 * FRAME;
  o.on_end = enc_end;
  o.on_progress = enc_progress;
  o.user = &e;
  assert_int_equal(pirec_job_new(&e.loop, &o, &e.job), 0);
  pirec_ffmpeg_argv_free(argv);
  assert_int_equal(pirec_job_start(e.job), 0);
  uv_timer_init(&e.loop, &e.feeder);
  e.feeder.data = &e;
  uv_timer_start(&e.feeder, feed, 1, 1);
  /* run until ffmpeg reports well over a second of video (clusters are cut every second) */
  while (e.last_progress_frame < 150)
    uv_run(&e.loop, UV_RUN_ONCE);
  uv_timer_stop(&e.feeder);
  pirec_job_stats(e.job, &st);
  assert_true(st.pid > 0);
  assert_int_equal(kill(st.pid, SIGKILL), 0);
  uv_run(&e.loop, UV_RUN_DEFAULT);
  assert_int_equal(e.ended, 1);
  assert_int_equal(e.result.status, 128 + SIGKILL);

  long packets = ffprobe_count(out, "nb_read_packets");
  assert_true(packets >= 30);         /* at least the first full clusters */
  assert_true(packets <= e.accepted); /* never more than was fed */
  pirec_job_free(e.job);
  uv_close((uv_handle_t *)&e.feeder, NULL);
  uv_run(&e.loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&e.loop), 0);
  free(e.frame);
  unlink(out);
  rmdir(dir);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_encode_argv),
      cmocka_unit_test(test_remux_argv),
      cmocka_unit_test(test_probe),
      cmocka_unit_test(test_probe_async),
      cmocka_unit_test(test_real_encode_packets_equal_frames),
      cmocka_unit_test(test_killed_encoder_leaves_readable_mkv),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
