/* Tests for subprocess/job.c against real child processes (tests/helpers/job-child.c), the real
 * libuv loop and real pipes. Timing assertions have loose upper bounds: the machine is shared. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "pirec/clock.h"
#include "pirec/job.h"
#include "pirec/log.h"
#include "pirec/spawner.h"

#ifndef JOB_CHILD
#error "JOB_CHILD (path of tests/helpers/job-child) must be defined by the build"
#endif

#define MS(ns) ((ns) / 1000000)

/* ---- log capture ---- */

static char log_text[1 << 16];
static size_t log_len;

static void log_capture(enum pirec_log_level level, const char *line, void *user)
{
  size_t n = strlen(line);
  if (log_len + n + 2 < sizeof log_text) {
    memcpy(log_text + log_len, line, n);
    log_len += n;
    log_text[log_len++] = '\n';
    log_text[log_len] = '\0';
  }
}

static int setup(void **state)
{
  log_len = 0;
  log_text[0] = '\0';
  pirec_log_set_handler(log_capture, NULL);
  pirec_log_set_level(PIREC_LOG_DEBUG);
  return 0;
}

static int teardown(void **state)
{
  pirec_log_set_handler(NULL, NULL);
  pirec_log_set_level(PIREC_LOG_INFO);
  return 0;
}

/* ---- a context shared by the callbacks of one test ---- */

struct ctx {
  uv_loop_t loop;
  int ends;
  struct pirec_job_result result;
  char tail[16384];
  int64_t end_ns;
  int lines[4];
  char last_line[4][256];
  size_t line_bytes[4];
  size_t longest_line[4];
  uint64_t stdout_bytes; /* from on_stdout */
  uint64_t stdout_bad;   /* bytes that differ from job-child's "binary" pattern */
  int stdout_calls;
  int stdout_after_end;
  int progress_count;
  struct pirec_job_progress progress[64];
  int restarts;
  uint64_t restart_delay[16];
  int64_t spawn_ns[16];
  int spawns;
  int drains;
  int releases;
  int release_errors;
  const char *restart_argv0; /* when set, on_restart replaces argv */
  struct pirec_job_queue *queue;
  unsigned max_running_seen;
  void *user2; /* a test's own state */
};

static void on_end(struct pirec_job *job, const struct pirec_job_result *r)
{
  struct ctx *c = pirec_job_user(job);
  c->ends++;
  c->result = *r;
  c->end_ns = pirec_clock_mono_ns();
  snprintf(c->tail, sizeof c->tail, "%s", r->stderr_tail);
  c->result.stderr_tail = c->tail;
  assert_int_equal(strlen(r->stderr_tail), r->stderr_tail_len);
}

static void on_line(struct pirec_job *job, int fd, const char *line, size_t len)
{
  struct ctx *c = pirec_job_user(job);
  assert_true(fd >= 1 && fd <= 3);
  assert_int_equal(strlen(line), len);
  c->lines[fd]++;
  c->line_bytes[fd] += len;
  if (len > c->longest_line[fd])
    c->longest_line[fd] = len;
  snprintf(c->last_line[fd], sizeof c->last_line[fd], "%s", line);
}

/* job-child's binary_byte(i): the byte at offset i of its "binary" output and of what
 * "read-check" expects. */
static uint8_t binary_byte_of(long i)
{
  return (uint8_t)((i * 7) ^ (i >> 8));
}

/* Checks every byte against job-child's binary_byte(i), by its offset in the stream. */
static void on_stdout(struct pirec_job *job, const uint8_t *data, size_t len)
{
  struct ctx *c = pirec_job_user(job);
  assert_true(len > 0);
  if (c->ends)
    c->stdout_after_end++;
  for (size_t j = 0; j < len; j++) {
    long i = (long)(c->stdout_bytes + j);
    if (data[j] != binary_byte_of(i))
      c->stdout_bad++;
  }
  c->stdout_bytes += len;
  c->stdout_calls++;
}

static void on_progress(struct pirec_job *job, const struct pirec_job_progress *p)
{
  struct ctx *c = pirec_job_user(job);
  if (c->progress_count < 64)
    c->progress[c->progress_count] = *p;
  c->progress_count++;
}

static void on_restart(struct pirec_job *job, const struct pirec_job_result *run, uint32_t attempt,
                       uint64_t delay_ms)
{
  struct ctx *c = pirec_job_user(job);
  assert_int_equal(attempt, (uint32_t)c->restarts + 1);
  if (c->restarts < 16)
    c->restart_delay[c->restarts] = delay_ms;
  c->restarts++;
  if (c->restart_argv0) {
    const char *argv[] = {c->restart_argv0, NULL};
    assert_int_equal(pirec_job_set_argv(job, argv), 0);
  }
}

static void on_spawn(struct pirec_job *job, int pid)
{
  struct ctx *c = pirec_job_user(job);
  assert_true(pid > 0);
  if (c->spawns < 16)
    c->spawn_ns[c->spawns] = pirec_clock_mono_ns();
  c->spawns++;
}

static void on_drain(struct pirec_job *job, size_t outstanding)
{
  struct ctx *c = pirec_job_user(job);
  c->drains++;
}

static void ctx_init(struct ctx *c)
{
  memset(c, 0, sizeof *c);
  assert_int_equal(uv_loop_init(&c->loop), 0);
}

static void ctx_close(struct ctx *c)
{
  uv_run(&c->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&c->loop), 0);
}

static void opts_init(struct pirec_job_options *o, struct ctx *c, const char *const *argv)
{
  pirec_job_options_init(o);
  o->argv = argv;
  o->name = "test child";
  o->user = c;
  o->on_end = on_end;
  o->on_line = on_line;
  o->on_progress = on_progress;
  o->on_restart = on_restart;
  o->on_spawn = on_spawn;
  o->on_drain = on_drain;
}

/* Creates, starts, runs to the end; returns the elapsed ms. */
static int64_t run_job(struct ctx *c, struct pirec_job_options *o, struct pirec_job **jobp)
{
  struct pirec_job *job;
  int64_t t0;

  assert_int_equal(pirec_job_new(&c->loop, o, &job), 0);
  t0 = pirec_clock_mono_ns();
  assert_int_equal(pirec_job_start(job), 0);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  assert_int_equal(c->ends, 1);
  if (jobp)
    *jobp = job;
  else
    pirec_job_free(job);
  return MS(c->end_ns - t0);
}

/* ---- tests ---- */

static void test_exit_code(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "exit", "7", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  run_job(&c, &o, NULL);
  assert_int_equal(c.result.reason, PIREC_JOB_END_EXITED);
  assert_int_equal(c.result.status, 7);
  assert_int_equal(c.result.exit_code, 7);
  assert_int_equal(c.result.term_signal, 0);
  assert_int_equal(c.result.runs, 1);
  char how[128];
  assert_string_equal(pirec_job_result_str(&c.result, how, sizeof how), "exited with status 7");
  ctx_close(&c);
}

static void test_killed_by_signal(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "signal", "11", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  run_job(&c, &o, NULL);
  assert_int_equal(c.result.reason, PIREC_JOB_END_EXITED);
  assert_int_equal(c.result.status, 128 + SIGSEGV);
  assert_int_equal(c.result.term_signal, SIGSEGV);
  assert_int_equal(c.result.exit_code, -1);
  /* Told as a signal, never as "exited, status 139" (issue 23). */
  char how[128];
  assert_string_equal(pirec_job_result_str(&c.result, how, sizeof how),
                      "killed by signal 11 (Segmentation fault)");
  ctx_close(&c);
}

/* A start that cannot run the program: without the spawn helper pirec_job_start() says so at once
 * and no callback runs; through the helper the start is accepted and on_end reports FAILED with the
 * same error, the run not counted. Either way the job is idle afterwards. */
static void expect_start_fails(struct ctx *c, struct pirec_job *job, int err)
{
  if (!pirec_spawner_running()) {
    assert_int_equal(pirec_job_start(job), err);
    return;
  }
  int ends = c->ends;
  assert_int_equal(pirec_job_start(job), 0);
  while (c->ends == ends)
    uv_run(&c->loop, UV_RUN_ONCE);
  assert_int_equal(c->result.reason, PIREC_JOB_END_FAILED);
  assert_int_equal(c->result.error, err);
  assert_int_equal(c->result.status, -1);
  assert_int_equal(c->result.runs, 0);
  c->ends = ends;
}

static void test_missing_program(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *missing[] = {"/nonexistent/pirec-no-such-program", NULL};
  const char *in_path[] = {"pirec-no-such-program-in-path", NULL};
  char path[] = "/tmp/pirec-test-job-noexec-XXXXXX";
  int fd;

  ctx_init(&c);
  opts_init(&o, &c, missing);
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  expect_start_fails(&c, job, -ENOENT);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.ends, 0);
  assert_non_null(strstr(log_text, "pirec-no-such-program"));
  /* the job is idle again: a second attempt fails the same way */
  expect_start_fails(&c, job, -ENOENT);
  pirec_job_free(job);

  opts_init(&o, &c, in_path);
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  expect_start_fails(&c, job, -ENOENT);
  pirec_job_free(job);

  /* A file without execute permission (root too cannot exec it). */
  fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "#!/bin/sh\nexit 0\n", 17), 17);
  close(fd);
  assert_int_equal(chmod(path, 0644), 0);
  const char *noexec[] = {path, NULL};
  opts_init(&o, &c, noexec);
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  expect_start_fails(&c, job, -EACCES);
  pirec_job_free(job);
  unlink(path);

  /* So does a working directory that does not exist (chdir fails in the child before exec). */
  const char *ok0[] = {JOB_CHILD, "exit", "0", NULL};
  opts_init(&o, &c, ok0);
  o.cwd = "/nonexistent/dir";
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  expect_start_fails(&c, job, -ENOENT);
  pirec_job_free(job);

  /* A missing stdio file fails synchronously too. */
  const char *ok[] = {JOB_CHILD, "exit", "0", NULL};
  opts_init(&o, &c, ok);
  o.stdio[0].kind = PIREC_JOB_STDIO_FILE;
  o.stdio[0].path = "/nonexistent/input";
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  expect_start_fails(&c, job, -ENOENT);
  pirec_job_free(job);

  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.ends, 0);
  ctx_close(&c);
}

static void test_invalid_options(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "exit", "0", NULL};
  const char *empty[] = {NULL};

  ctx_init(&c);
  opts_init(&o, &c, empty);
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), -EINVAL);
  opts_init(&o, &c, argv);
  o.start_timeout_ms = 100; /* nothing piped to watch */
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), -EINVAL);
  opts_init(&o, &c, argv);
  o.progress_fd = 1; /* stdout not a pipe */
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), -EINVAL);
  opts_init(&o, &c, argv);
  o.stdio[1].kind = PIREC_JOB_STDIO_FILE;
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), -EINVAL);
  opts_init(&o, &c, argv);
  o.on_stdout = on_stdout; /* stdout not a pipe */
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), -EINVAL);
  opts_init(&o, &c, argv);
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.on_stdout = on_stdout;
  o.progress_fd = 1; /* stdout cannot be both */
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), -EINVAL);
  opts_init(&o, &c, argv);
  o.lines_fd3 = 1;
  o.progress_fd = 3; /* fd 3 cannot be both */
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), -EINVAL);
  opts_init(&o, &c, argv);
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_stop(job), -EINVAL); /* idle */
  const uv_buf_t b = uv_buf_init("x", 1);
  assert_int_equal(pirec_job_write(job, &b, 1), -EINVAL); /* stdin not a pipe */
  assert_int_equal(pirec_job_start(job), 0);
  assert_int_equal(pirec_job_start(job), -EBUSY);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.ends, 1);
  pirec_job_free(job);
  ctx_close(&c);
}

static void test_stop_closes_stdin_then_sigterm(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "never-read", NULL};
  int64_t t0;

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.name = "stopper";
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.stop_term_ms = 300;
  o.stop_kill_ms = 5000;
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  /* wait for "ready" so the child's handlers are in place */
  while (c.lines[2] == 0)
    uv_run(&c.loop, UV_RUN_ONCE);
  t0 = pirec_clock_mono_ns();
  assert_int_equal(pirec_job_stop(job), 0);
  assert_int_equal(pirec_job_stop(job), 0); /* already stopping */
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.ends, 1);
  assert_int_equal(c.result.reason, PIREC_JOB_END_STOPPED);
  assert_int_equal(c.result.status, 128 + SIGTERM);
  assert_true(MS(c.end_ns - t0) >= 290);
  assert_true(MS(c.end_ns - t0) < 4000);
  assert_non_null(strstr(log_text, "'stopper'"));
  assert_non_null(strstr(log_text, "closing stdin"));
  assert_non_null(strstr(log_text, "sending SIGTERM"));
  assert_null(strstr(log_text, "sending SIGKILL"));
  assert_string_equal(c.tail, "ready\n");
  pirec_job_free(job);
  ctx_close(&c);
}

/* An encoder told "end of input" and then stopped keeps stop_term_ms to finish by itself. */
static void test_stop_after_close_stdin_lets_child_finish(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "read-all", NULL};
  static char data[200000];
  uv_buf_t b = uv_buf_init(data, sizeof data);

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.stop_term_ms = 10000;
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  assert_int_equal(pirec_job_write(job, &b, 1), 0);
  assert_int_equal(pirec_job_close_stdin(job), 0);
  assert_int_equal(pirec_job_write(job, &b, 1), -EPIPE);
  assert_int_equal(pirec_job_stop(job), 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.result.reason, PIREC_JOB_END_STOPPED);
  assert_int_equal(c.result.status, 0); /* ended by itself, not by SIGTERM */
  assert_string_equal(c.last_line[1], "200000");
  assert_null(strstr(log_text, "sending SIGTERM"));
  pirec_job_free(job);
  ctx_close(&c);
}

static void test_stop_escalates_to_sigkill(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "hang-ignore-term", NULL};
  int64_t t0;

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.name = "stubborn";
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.stop_term_ms = 200;
  o.stop_kill_ms = 300;
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  while (c.lines[2] == 0)
    uv_run(&c.loop, UV_RUN_ONCE);
  t0 = pirec_clock_mono_ns();
  assert_int_equal(pirec_job_stop(job), 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.result.reason, PIREC_JOB_END_STOPPED);
  assert_int_equal(c.result.status, 128 + SIGKILL);
  char how[128];
  assert_string_equal(pirec_job_result_str(&c.result, how, sizeof how),
                      "stopped: killed by signal 9 (Killed)");
  assert_true(MS(c.end_ns - t0) >= 490);
  assert_true(MS(c.end_ns - t0) < 5000);
  assert_non_null(strstr(log_text, "job 'stubborn' (pid"));
  assert_non_null(strstr(log_text, "closing stdin"));
  assert_non_null(
      strstr(log_text, "job 'stubborn': still running 200 ms after stdin was closed: sending SIGTERM"));
  assert_non_null(strstr(log_text, "job 'stubborn': still running 300 ms after SIGTERM: sending SIGKILL"));
  pirec_job_free(job);
  ctx_close(&c);
}

static void test_stop_without_stdin_pipe_sends_sigterm_at_once(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "hang", NULL};
  int64_t t0;

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.stop_term_ms = 5000; /* must not be waited for */
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  while (c.lines[2] == 0)
    uv_run(&c.loop, UV_RUN_ONCE);
  t0 = pirec_clock_mono_ns();
  assert_int_equal(pirec_job_stop(job), 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.result.reason, PIREC_JOB_END_STOPPED);
  assert_int_equal(c.result.status, 128 + SIGTERM);
  assert_true(MS(c.end_ns - t0) < 3000);
  pirec_job_free(job);
  ctx_close(&c);
}

static void test_start_timeout(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "silent", NULL};
  int64_t ms;

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.name = "mute";
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.start_timeout_ms = 200;
  ms = run_job(&c, &o, NULL);
  assert_int_equal(c.result.reason, PIREC_JOB_END_TIMEOUT_START);
  assert_int_equal(c.result.status, 128 + SIGTERM);
  assert_true(ms >= 190 && ms < 4000);
  assert_non_null(strstr(log_text, "job 'mute' (pid"));
  assert_non_null(strstr(log_text, "start timeout"));
  ctx_close(&c);
}

static void test_start_timeout_satisfied_by_output(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "progress", "1", "3", "150", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.progress_fd = 1;
  o.start_timeout_ms = 300; /* the whole run takes ~450 ms: only the first output matters */
  run_job(&c, &o, NULL);
  assert_int_equal(c.result.reason, PIREC_JOB_END_EXITED);
  assert_int_equal(c.result.status, 0);
  assert_int_equal(c.progress_count, 4);
  ctx_close(&c);
}

static void test_stall_timeout(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "progress-stall", "3", "5", NULL};
  int64_t ms;

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.name = "staller";
  o.progress_fd = 3;
  o.stall_timeout_ms = 300;
  ms = run_job(&c, &o, NULL);
  assert_int_equal(c.result.reason, PIREC_JOB_END_TIMEOUT_STALL);
  assert_int_equal(c.result.status, 128 + SIGTERM);
  assert_int_equal(c.progress_count, 5);
  assert_int_equal(c.progress[4].frame, 5);
  assert_true(ms >= 290 && ms < 4000);
  assert_non_null(strstr(log_text, "job 'staller' (pid"));
  assert_non_null(strstr(log_text, "stall timeout 300 ms"));
  ctx_close(&c);
}

/* Without a progress stream, output and completed stdin writes are the activity: a child that
 * stops reading its stdin and says nothing stalls. */
static void test_stall_timeout_without_progress(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "never-read", NULL};
  static char chunk[256 * 1024];
  uv_buf_t b = uv_buf_init(chunk, sizeof chunk);

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.stdin_pipe_size = 64 * 1024;
  o.stall_timeout_ms = 300;
  o.stop_term_ms = 100;
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  while (c.lines[2] == 0)
    uv_run(&c.loop, UV_RUN_ONCE);
  int64_t t0 = pirec_clock_mono_ns();
  assert_int_equal(pirec_job_write(job, &b, 1), 0); /* more than the pipe holds: stays queued */
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.result.reason, PIREC_JOB_END_TIMEOUT_STALL);
  assert_int_equal(c.result.status, 128 + SIGTERM);
  assert_true(MS(c.end_ns - t0) >= 290 && MS(c.end_ns - t0) < 4000);
  pirec_job_free(job);
  ctx_close(&c);
}

static void test_progress_keeps_stall_timeout_away(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  /* 8 reports 100 ms apart: 800 ms in all, far over the 300 ms stall timeout, never stalled */
  const char *argv[] = {JOB_CHILD, "progress", "3", "8", "100", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.progress_fd = 3;
  o.stall_timeout_ms = 300;
  run_job(&c, &o, NULL);
  assert_int_equal(c.result.reason, PIREC_JOB_END_EXITED);
  assert_int_equal(c.result.status, 0);
  assert_int_equal(c.progress_count, 9);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(c.progress[i].frame, (i + 1) * 10);
    assert_int_equal(c.progress[i].out_time_us, (i + 1) * 10 * 33333);
    assert_true(c.progress[i].speed > 1.49 && c.progress[i].speed < 1.51);
    assert_int_equal(c.progress[i].total_size, (i + 1) * 10 * 1000);
    assert_int_equal(c.progress[i].end, 0);
  }
  assert_int_equal(c.progress[8].end, 1);
  assert_int_equal(c.progress[8].frame, 90);
  ctx_close(&c);
}

static void test_total_timeout(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "hang", NULL};
  int64_t ms;

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.name = "forever";
  o.total_timeout_ms = 300;
  o.restart.mode = PIREC_JOB_RESTART_ALWAYS; /* a deadline never restarts */
  ms = run_job(&c, &o, NULL);
  assert_int_equal(c.result.reason, PIREC_JOB_END_TIMEOUT_TOTAL);
  assert_int_equal(c.result.status, 128 + SIGTERM);
  assert_int_equal(c.result.runs, 1);
  assert_int_equal(c.restarts, 0);
  assert_true(ms >= 290 && ms < 4000);
  assert_non_null(strstr(log_text, "job 'forever': still running after 300 ms (total timeout)"));
  ctx_close(&c);
}

static void test_flood_stderr_drained(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  struct pirec_job_stats st;
  const char *argv[] = {JOB_CHILD, "flood-stderr", "8", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.stderr_tail_bytes = 4096;
  o.stall_timeout_ms = 5000; /* output bytes are the activity */
  run_job(&c, &o, &job);
  assert_int_equal(c.result.reason, PIREC_JOB_END_EXITED);
  assert_int_equal(c.result.status, 0);
  pirec_job_stats(job, &st);
  assert_true(st.stderr_bytes >= 8u * 1024 * 1024);
  /* every byte reached a line: line bytes + one newline per line */
  assert_int_equal(c.line_bytes[2] + (size_t)c.lines[2], st.stderr_bytes);
  assert_string_equal(c.last_line[2], "done");
  assert_int_equal(c.result.stderr_tail_len, 4096);
  assert_int_equal(strlen(c.tail), 4096);
  assert_non_null(strstr(c.tail, "flood line"));
  assert_string_equal(c.tail + 4096 - 5, "done\n");
  pirec_job_free(job);
  ctx_close(&c);
}

static void test_lines_partial_and_long(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "lines", "100", NULL};
  const char *sh[] = {"/bin/sh", "-c", "printf '%0300d\\r\\n' 0; printf 'x\\n'", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  run_job(&c, &o, NULL);
  assert_int_equal(c.lines[1], 100);
  assert_string_equal(c.last_line[1], "line 99"); /* no trailing newline, still delivered */
  ctx_close(&c);

  ctx_init(&c);
  opts_init(&o, &c, sh);
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.line_max = 128;
  run_job(&c, &o, NULL);
  /* 300 digits in pieces of 128, 128, 44 (the \r removed), then "x" */
  assert_int_equal(c.lines[1], 4);
  assert_int_equal(c.longest_line[1], 128);
  assert_int_equal(c.line_bytes[1], 301);
  assert_string_equal(c.last_line[1], "x");
  ctx_close(&c);
}

/* Binary stdout arrives whole and in order, NULs and newlines included, none of it as lines, all
 * of it before on_end; fd 3's lines come through on_line. */
static void test_binary_stdout(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "binary", "3000000", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.on_stdout = on_stdout;
  o.lines_fd3 = 1;
  run_job(&c, &o, NULL);
  assert_int_equal(c.result.status, 0);
  assert_int_equal(c.stdout_bytes, 3000000);
  assert_int_equal(c.stdout_bad, 0);
  assert_true(c.stdout_calls > 1);
  assert_int_equal(c.stdout_after_end, 0);
  assert_int_equal(c.lines[1], 0);
  assert_int_equal(c.lines[3], 3);
  assert_string_equal(c.last_line[3], "meta 3");
  ctx_close(&c);
}

/* A stop does not cut the stream short: what the child wrote before it exited is delivered. */
static void test_binary_stdout_after_stop(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "binary", "2000000", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.on_stdout = on_stdout;
  o.stop_kill_ms = 5000;
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  assert_int_equal(pirec_job_stop(job), 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.ends, 1);
  assert_int_equal(c.result.reason, PIREC_JOB_END_STOPPED);
  assert_int_equal(c.stdout_bad, 0);
  assert_int_equal(c.stdout_after_end, 0);
  pirec_job_free(job);
  ctx_close(&c);
}

static void test_stdio_files_env_cwd(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  char dir[] = "/tmp/pirec-test-job-XXXXXX";
  char in[256], out[256], buf[256];
  const char *sh[] = {"/bin/sh", "-c", "cat; echo \"$PIREC_TEST_VAR\"; pwd; echo err >&2", NULL};
  const char *env[] = {"PIREC_TEST_VAR=hello env", "PATH=/usr/bin:/bin", NULL};
  FILE *f;

  assert_non_null(mkdtemp(dir));
  snprintf(in, sizeof in, "%s/in.txt", dir);
  snprintf(out, sizeof out, "%s/out.txt", dir);
  f = fopen(in, "w");
  assert_non_null(f);
  fputs("from file\n", f);
  fclose(f);

  ctx_init(&c);
  opts_init(&o, &c, sh);
  o.env = env;
  o.cwd = dir;
  o.stdio[0].kind = PIREC_JOB_STDIO_FILE;
  o.stdio[0].path = in;
  o.stdio[1].kind = PIREC_JOB_STDIO_FILE;
  o.stdio[1].path = out;
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  run_job(&c, &o, NULL);
  assert_int_equal(c.result.status, 0);
  assert_string_equal(c.tail, "err\n");
  f = fopen(out, "r");
  assert_non_null(f);
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char want[512];
  snprintf(want, sizeof want, "from file\nhello env\n%s\n", dir);
  assert_string_equal(buf, want);
  unlink(in);
  unlink(out);
  rmdir(dir);
  ctx_close(&c);
}

/* ---- stdin ---- */

static void test_stdin_backpressure_refuses(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  struct pirec_job_stats st;
  const char *argv[] = {JOB_CHILD, "never-read", NULL};
  static char chunk[64 * 1024];
  uv_buf_t b = uv_buf_init(chunk, sizeof chunk);
  int accepted = 0, refused = 0, err;

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.stdin_max_outstanding = 256 * 1024;
  o.stdin_pipe_size = 64 * 1024;
  o.stop_term_ms = 100;
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  b.len = 0;
  assert_int_equal(pirec_job_write(job, &b, 1), -ENOTCONN); /* not started */
  b.len = sizeof chunk;
  assert_int_equal(pirec_job_start(job), 0);
  while (c.lines[2] == 0)
    uv_run(&c.loop, UV_RUN_ONCE);

  /* The child never reads: the pipe fills (64 KiB), then 256 KiB queue, then refusals. */
  for (int i = 0; i < 40; i++) {
    err = pirec_job_write(job, &b, 1);
    if (err == 0)
      accepted++;
    else {
      assert_int_equal(err, -ENOBUFS);
      refused++;
    }
    uv_run(&c.loop, UV_RUN_NOWAIT);
    pirec_job_stats(job, &st);
    assert_true(st.stdin_outstanding <= 256 * 1024);
  }
  assert_true(refused > 0);
  assert_true(accepted >= 4);      /* the queue itself */
  assert_true(accepted <= 4 + 16); /* plus what the pipe swallowed: far from 40 */
  pirec_job_stats(job, &st);
  assert_int_equal(st.stdin_writes, (uint64_t)accepted);
  assert_int_equal(st.stdin_refused, (uint64_t)refused + 1); /* + the ENOTCONN one */
  assert_int_equal(st.stdin_refused_bytes, (uint64_t)refused * sizeof chunk);
  assert_int_equal(st.stdin_outstanding_max, 256 * 1024);

  /* larger than the whole allowance */
  static char big[300 * 1024];
  uv_buf_t bb = uv_buf_init(big, sizeof big);
  assert_int_equal(pirec_job_write(job, &bb, 1), -EMSGSIZE);

  assert_int_equal(pirec_job_stop(job), 0);
  assert_int_equal(pirec_job_write(job, &b, 1), -EPIPE); /* stdin closing */
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.result.reason, PIREC_JOB_END_STOPPED);
  assert_int_equal(pirec_job_write(job, &b, 1), -ENOTCONN);
  pirec_job_stats(job, &st);
  assert_int_equal(st.stdin_outstanding, 0);
  pirec_job_free(job);
  ctx_close(&c);
}

struct borrowed {
  int released;
  int status;
};

static void on_release(struct pirec_job *job, void *arg, int status)
{
  struct borrowed *b = arg;
  struct ctx *c = pirec_job_user(job);
  b->released++;
  b->status = status;
  c->releases++;
  if (status != 0)
    c->release_errors++;
}

static void test_stdin_slow_reader_borrowed(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "read-slow", "4096", NULL}; /* ~4 MiB/s */
  enum { N = 64, SZ = 32 * 1024 };
  static char data[N][SZ];
  struct borrowed rel[N];
  int next = 0, refused = 0;
  uint64_t accepted_bytes = 0;

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.stdin_max_outstanding = 128 * 1024;
  o.stdin_pipe_size = 64 * 1024;
  memset(rel, 0, sizeof rel);
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  while (next < N) {
    uv_buf_t b = uv_buf_init(data[next], SZ);
    memset(data[next], 'a' + next % 26, SZ);
    int err = pirec_job_write_borrowed(job, &b, 1, on_release, &rel[next]);
    if (err == 0) {
      accepted_bytes += SZ;
      next++;
    } else {
      assert_int_equal(err, -ENOBUFS);
      refused++;
      uv_run(&c.loop, UV_RUN_ONCE); /* wait for a drain */
    }
  }
  assert_true(refused > 0); /* the reader is slower than the writer */
  assert_int_equal(pirec_job_close_stdin(job), 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.result.status, 0);
  for (int i = 0; i < N; i++) {
    assert_int_equal(rel[i].released, 1);
    assert_int_equal(rel[i].status, 0);
  }
  char want[32];
  snprintf(want, sizeof want, "%llu", (unsigned long long)accepted_bytes);
  assert_string_equal(c.last_line[1], want);
  assert_true(c.drains >= N);
  pirec_job_free(job);
  ctx_close(&c);
}

static void test_borrowed_released_when_child_dies(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "never-read", NULL};
  static char data[8][64 * 1024];
  struct borrowed rel[8];
  int accepted = 0;

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.stdin_pipe_size = 64 * 1024;
  o.stop_term_ms = 50;
  memset(rel, 0, sizeof rel);
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  while (c.lines[2] == 0)
    uv_run(&c.loop, UV_RUN_ONCE);
  for (int i = 0; i < 8; i++) {
    uv_buf_t b = uv_buf_init(data[i], sizeof data[i]);
    if (pirec_job_write_borrowed(job, &b, 1, on_release, &rel[i]) == 0)
      accepted++;
  }
  assert_int_equal(accepted, 8);
  assert_int_equal(c.releases, 0); /* never inside the call */
  assert_int_equal(pirec_job_stop(job), 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.result.reason, PIREC_JOB_END_STOPPED);
  assert_int_equal(c.releases, 8);
  assert_true(c.release_errors >= 6); /* at most ~64 KiB got into the pipe */
  for (int i = 0; i < 8; i++)
    assert_int_equal(rel[i].released, 1);
  pirec_job_free(job);
  ctx_close(&c);
}

/* stdin_splice: the pipe holds references to the caller's pages, so a buffer is released only once
 * the child has read it. Four 64 KiB buffers are reused as a ring (like the camera's); each is
 * overwritten with garbage the moment it is released. A slow child checks every byte it reads: a
 * release at splice time instead of read time lets it read garbage. */
struct splice_ring {
  char buf[4][64 * 1024];
  int busy[4];
  int released, bad_status;
  struct pirec_job *job;
  int offered; /* chunks offered so far, of SPLICE_CHUNKS */
  long offset; /* stream bytes offered so far */
};

enum { SPLICE_CHUNKS = 32 };

static void splice_released(struct pirec_job *job, void *arg, int status);

/* Offers the next chunks while a buffer is free; stdin is closed after the last one. Runs at the
 * start and from every release (the loop then runs in UV_RUN_DEFAULT: a test loop of
 * uv_run(UV_RUN_ONCE) until a buffer is free hung when the release came in that iteration's
 * timers and the poll that followed waited for the child, which waited for the next chunk). */
static void splice_offer(struct splice_ring *r)
{
  while (r->offered < SPLICE_CHUNKS && !r->busy[r->offered % 4]) {
    int i = r->offered % 4;
    for (size_t j = 0; j < sizeof r->buf[i]; j++)
      r->buf[i][j] = (char)binary_byte_of(r->offset + (long)j);
    uv_buf_t b = uv_buf_init(r->buf[i], sizeof r->buf[i]);
    assert_int_equal(pirec_job_write_borrowed(r->job, &b, 1, splice_released, (void *)(intptr_t)i), 0);
    r->busy[i] = 1;
    r->offset += (long)sizeof r->buf[i];
    if (++r->offered == SPLICE_CHUNKS)
      assert_int_equal(pirec_job_close_stdin(r->job), 0);
  }
}

static void splice_released(struct pirec_job *job, void *arg, int status)
{
  struct ctx *c = pirec_job_user(job);
  struct splice_ring *r = (struct splice_ring *)c->user2;
  int i = (int)(intptr_t)arg;
  memset(r->buf[i], 0xEE, sizeof r->buf[i]);
  r->busy[i] = 0;
  r->released++;
  if (status != 0)
    r->bad_status++;
  else
    splice_offer(r);
}

static void test_stdin_splice_released_after_read(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "read-check", "4096", NULL}; /* ~4 MiB/s: 0.5 s */
  static struct splice_ring r;

  memset(&r, 0, sizeof r);
  ctx_init(&c);
  c.user2 = &r;
  opts_init(&o, &c, argv);
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.stdin_splice = 1;
  o.stdin_max_outstanding = sizeof r.buf;
  o.stdin_pipe_size = 64 * 1024;
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  r.job = job;
  uv_buf_t b0 = uv_buf_init(r.buf[0], 16);
  assert_int_equal(pirec_job_start(job), 0);
  assert_int_equal(pirec_job_write(job, &b0, 1), -EINVAL); /* copies cannot be spliced */
  splice_offer(&r);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.result.status, 0);
  assert_int_equal(r.offered, SPLICE_CHUNKS);
  assert_int_equal(r.released, SPLICE_CHUNKS);
  assert_int_equal(r.bad_status, 0);
  char want[64];
  snprintf(want, sizeof want, "%ld 0", r.offset); /* every byte read, none of them garbage */
  assert_string_equal(c.last_line[1], want);
  struct pirec_job_stats st;
  pirec_job_stats(job, &st);
  assert_int_equal(st.stdin_bytes, (uint64_t)r.offset);
  assert_int_equal(st.stdin_outstanding, 0);
  pirec_job_free(job);
  ctx_close(&c);
}

static void idle_timer(uv_timer_t *t)
{
  (void)t;
}

/* stdin_splice with a child that never reads: nothing is released while it lives (its pipe still
 * references the pages), everything once it is gone. */
static void test_stdin_splice_released_when_child_dies(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "never-read", NULL};
  static char data[8][64 * 1024] __attribute__((aligned(4096))); /* 16 pipe slots each */
  struct borrowed rel[8];

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.stdin_splice = 1;
  o.stdin_pipe_size = 64 * 1024;
  o.stop_term_ms = 300;
  memset(rel, 0, sizeof rel);
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  while (c.lines[2] == 0)
    uv_run(&c.loop, UV_RUN_ONCE);
  for (int i = 0; i < 8; i++) {
    uv_buf_t b = uv_buf_init(data[i], sizeof data[i]);
    assert_int_equal(pirec_job_write_borrowed(job, &b, 1, on_release, &rel[i]), 0);
  }
  /* the child is alive and reads nothing: a few loop turns (the feed looks every 20 ms) release
   * nothing */
  uv_timer_t t;
  uv_timer_init(&c.loop, &t);
  uv_timer_start(&t, idle_timer, 100, 0);
  while (uv_is_active((uv_handle_t *)&t))
    uv_run(&c.loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  assert_int_equal(c.releases, 0);
  assert_int_equal(pirec_job_stop(job), 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.releases, 8);
  for (int i = 0; i < 8; i++)
    assert_int_equal(rel[i].released, 1);
  assert_true(rel[0].status == 0);          /* wholly in the pipe */
  assert_true(rel[7].status == -ECANCELED); /* never went in: the pipe holds 64 KiB */
  pirec_job_free(job);
  ctx_close(&c);
}

static void test_stdin_closed_by_child_gives_epipe(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  /* closes its stdin, says so, then lives on for a while */
  const char *argv[] = {"/bin/sh", "-c", "exec 0<&-; echo closed; sleep 5", NULL};
  static char data[4096];
  uv_buf_t b = uv_buf_init(data, sizeof data);
  int err = 0;

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.stop_term_ms = 100;
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  while (c.lines[1] == 0)
    uv_run(&c.loop, UV_RUN_ONCE);
  for (int i = 0; i < 100 && err == 0; i++) {
    err = pirec_job_write(job, &b, 1);
    uv_run(&c.loop, UV_RUN_NOWAIT);
  }
  assert_int_equal(err, -EPIPE);
  assert_int_equal(pirec_job_write(job, &b, 1), -EPIPE); /* and stays so */
  assert_int_equal(pirec_job_stop(job), 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.result.reason, PIREC_JOB_END_STOPPED);
  pirec_job_free(job);
  ctx_close(&c);
}

static int child_pipe_size(size_t setting)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "pipe-size", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.stdin_pipe_size = setting;
  run_job(&c, &o, NULL);
  assert_int_equal(c.result.status, 0);
  ctx_close(&c);
  return atoi(c.last_line[1]);
}

static void test_stdin_pipe_enlarged(void **state)
{
  long max = 0;
  FILE *f = fopen("/proc/sys/fs/pipe-max-size", "r");
  if (f) {
    if (fscanf(f, "%ld", &max) != 1)
      max = 0;
    fclose(f);
  }
  /* the child sees the pipe the job enlarged; without privilege the kernel caps it at
   * pipe-max-size (EPERM, ignored: the default stays) */
  int p[2], deflt;
  assert_int_equal(pipe(p), 0);
  deflt = fcntl(p[0], F_GETPIPE_SZ); /* 16 pages: 64 KiB, or 256 KiB with 16 KiB pages */
  close(p[0]);
  close(p[1]);
  int got = child_pipe_size(0);
  if (geteuid() == 0 || max >= (1 << 20))
    assert_int_equal(got, 1 << 20);
  else
    assert_int_equal(got, deflt);
  assert_int_equal(child_pipe_size(512 * 1024), 512 * 1024);
  assert_int_equal(child_pipe_size(SIZE_MAX), deflt); /* kernel default kept */
}

/* ---- restarts ---- */

static void test_restart_always_counts_clean_exits(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "exit", "0", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.restart.mode = PIREC_JOB_RESTART_ALWAYS;
  o.restart.backoff_initial_ms = 10;
  o.restart.jitter_pct = 0;
  o.restart.max_failures = 3;
  run_job(&c, &o, NULL);
  assert_int_equal(c.result.reason, PIREC_JOB_END_FAILED);
  assert_int_equal(c.result.status, 0);
  assert_int_equal(c.result.runs, 3);
  assert_int_equal(c.restarts, 2);
  assert_int_equal(c.restart_delay[0], 10); /* no jitter: exact */
  assert_int_equal(c.restart_delay[1], 20);
  ctx_close(&c);
}

static void test_restart_backoff_then_give_up(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "exit", "3", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.name = "crasher";
  o.restart.mode = PIREC_JOB_RESTART_ON_FAILURE;
  o.restart.backoff_initial_ms = 60;
  o.restart.backoff_max_ms = 10000;
  o.restart.jitter_pct = 20;
  o.restart.max_failures = 5;
  o.restart.window_ms = 30000;
  run_job(&c, &o, NULL);
  assert_int_equal(c.result.reason, PIREC_JOB_END_FAILED);
  assert_int_equal(c.result.status, 3);
  assert_int_equal(c.result.runs, 5);
  assert_int_equal(c.restarts, 4);
  assert_int_equal(c.spawns, 4);
  /* delays double (60, 120, 240, 480) within +-20% jitter: each is larger than the last */
  for (int i = 0; i < 4; i++) {
    uint64_t base = 60u << i;
    assert_true(c.restart_delay[i] >= base * 8 / 10);
    assert_true(c.restart_delay[i] <= base * 12 / 10);
    if (i > 0)
      assert_true(c.restart_delay[i] > c.restart_delay[i - 1]);
  }
  /* and the waits really happened: spawn i came at least delay i after spawn i - 1 */
  for (int i = 1; i < 4; i++)
    assert_true(MS(c.spawn_ns[i] - c.spawn_ns[i - 1]) >= (int64_t)c.restart_delay[i] - 5);
  assert_non_null(strstr(log_text, "job 'crasher': 5 failures within 30000 ms: giving up"));
  assert_non_null(strstr(log_text, "job 'crasher': run 1 ended (exited, status 3): restart 1 in"));
  ctx_close(&c);
}

static void test_restart_on_failure_not_after_success(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "exit", "0", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.restart.mode = PIREC_JOB_RESTART_ON_FAILURE;
  run_job(&c, &o, NULL);
  assert_int_equal(c.result.reason, PIREC_JOB_END_EXITED);
  assert_int_equal(c.restarts, 0);
  ctx_close(&c);
}

static void test_restart_stall_then_stop_in_backoff(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "progress-stall", "3", "1", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.progress_fd = 3;
  o.stall_timeout_ms = 150;
  o.restart.mode = PIREC_JOB_RESTART_ON_FAILURE;
  o.restart.backoff_initial_ms = 5000; /* long enough to stop it while it waits */
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  while (c.restarts == 0)
    uv_run(&c.loop, UV_RUN_ONCE);
  struct pirec_job_stats st;
  pirec_job_stats(job, &st);
  assert_int_equal(st.state, PIREC_JOB_BACKOFF);
  const uv_buf_t b = uv_buf_init("x", 1);
  assert_int_equal(pirec_job_write(job, &b, 1), -EINVAL); /* stdin not a pipe here */
  int64_t t0 = pirec_clock_mono_ns();
  assert_int_equal(pirec_job_stop(job), 0);
  assert_int_equal(c.ends, 0); /* not inside the call */
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.ends, 1);
  assert_int_equal(c.result.reason, PIREC_JOB_END_STOPPED);
  assert_int_equal(c.result.status, -1);
  assert_int_equal(c.result.runs, 1);
  assert_true(MS(c.end_ns - t0) < 1000);
  pirec_job_free(job);
  ctx_close(&c);
}

static void test_restart_respawn_fails(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  const char *argv[] = {JOB_CHILD, "exit", "1", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.restart.mode = PIREC_JOB_RESTART_ON_FAILURE;
  o.restart.backoff_initial_ms = 10;
  o.restart.max_failures = 3;
  c.restart_argv0 = "/nonexistent/pirec-gone";
  run_job(&c, &o, NULL);
  assert_int_equal(c.result.reason, PIREC_JOB_END_FAILED);
  assert_int_equal(c.result.error, -ENOENT);
  assert_int_equal(c.result.status, -1);
  assert_int_equal(c.result.runs, 1);
  assert_int_equal(c.restarts, 2);
  assert_non_null(strstr(log_text, "cannot restart '/nonexistent/pirec-gone'"));
  ctx_close(&c);
}

/* ---- free, queue ---- */

static void test_free_running_kills_child(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  struct pirec_job_stats st;
  const char *argv[] = {JOB_CHILD, "hang-ignore-term", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  while (c.lines[2] == 0)
    uv_run(&c.loop, UV_RUN_ONCE);
  pirec_job_stats(job, &st);
  /* through the spawn helper the pid comes with its answer, which may follow the first output */
  while (st.pid == 0 && pirec_spawner_running()) {
    uv_run(&c.loop, UV_RUN_ONCE);
    pirec_job_stats(job, &st);
  }
  assert_true(st.pid > 0);
  pirec_job_free(job);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.ends, 0);
  /* reaped by libuv, not left as a zombie */
  assert_int_equal(kill(st.pid, 0), -1);
  assert_int_equal(errno, ESRCH);
  ctx_close(&c);
}

static void free_in_end(struct pirec_job *job, const struct pirec_job_result *r)
{
  struct ctx *c = pirec_job_user(job);
  c->ends++;
  c->result = *r;
  pirec_job_free(job);
}

static void test_free_inside_callback(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *job;
  const char *argv[] = {JOB_CHILD, "lines", "3", NULL};

  ctx_init(&c);
  opts_init(&o, &c, argv);
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.on_end = free_in_end;
  assert_int_equal(pirec_job_new(&c.loop, &o, &job), 0);
  assert_int_equal(pirec_job_start(job), 0);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.ends, 1);
  assert_int_equal(c.lines[1], 3);
  ctx_close(&c);
}

static void queue_on_end(struct pirec_job *job, const struct pirec_job_result *r)
{
  struct ctx *c = pirec_job_user(job);
  unsigned running, waiting;
  pirec_job_queue_counts(c->queue, &running, &waiting);
  if (running > c->max_running_seen)
    c->max_running_seen = running;
  c->ends++;
  if (r->reason == PIREC_JOB_END_FAILED)
    c->release_errors++; /* reused as "failed ends" */
  else
    assert_int_equal(r->status, 0);
}

static void test_queue_limits_concurrency(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *jobs[6];
  const char *argv[] = {JOB_CHILD, "progress", "3", "2", "100", NULL};
  const char *missing[] = {"/nonexistent/pirec-queued", NULL};
  unsigned running, waiting;
  int64_t t0;

  ctx_init(&c);
  assert_int_equal(pirec_job_queue_new(&c.loop, 0, &c.queue), -EINVAL);
  assert_int_equal(pirec_job_queue_new(&c.loop, 2, &c.queue), 0);
  for (int i = 0; i < 6; i++) {
    opts_init(&o, &c, i == 4 ? missing : argv);
    o.progress_fd = 3;
    o.on_end = queue_on_end;
    assert_int_equal(pirec_job_new(&c.loop, &o, &jobs[i]), 0);
  }
  t0 = pirec_clock_mono_ns();
  for (int i = 0; i < 6; i++)
    assert_int_equal(pirec_job_queue_add(c.queue, jobs[i]), 0);
  assert_int_equal(pirec_job_queue_add(c.queue, jobs[0]), -EBUSY);
  pirec_job_queue_counts(c.queue, &running, &waiting);
  assert_int_equal(running, 2);
  assert_int_equal(waiting, 4);
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.ends, 6);
  assert_int_equal(c.release_errors, 1); /* the missing program, reported through on_end */
  assert_true(c.max_running_seen <= 2);
  /* 5 jobs of ~200 ms two at a time: at least 3 rounds */
  assert_true(MS(pirec_clock_mono_ns() - t0) >= 550);
  pirec_job_queue_counts(c.queue, &running, &waiting);
  assert_int_equal(running + waiting, 0);
  pirec_job_queue_free(c.queue);
  for (int i = 0; i < 6; i++)
    pirec_job_free(jobs[i]);
  ctx_close(&c);
}

static void test_queue_free_stops_everything(void **state)
{
  struct ctx c;
  struct pirec_job_options o;
  struct pirec_job *jobs[4];
  const char *argv[] = {JOB_CHILD, "hang", NULL};

  ctx_init(&c);
  assert_int_equal(pirec_job_queue_new(&c.loop, 1, &c.queue), 0);
  for (int i = 0; i < 4; i++) {
    opts_init(&o, &c, argv);
    assert_int_equal(pirec_job_new(&c.loop, &o, &jobs[i]), 0);
    assert_int_equal(pirec_job_queue_add(c.queue, jobs[i]), 0);
  }
  assert_int_equal(pirec_job_stop(jobs[2]), 0); /* a waiting one */
  uv_run(&c.loop, UV_RUN_NOWAIT);
  pirec_job_queue_free(c.queue);
  c.queue = NULL;
  uv_run(&c.loop, UV_RUN_DEFAULT);
  assert_int_equal(c.ends, 4);
  assert_int_equal(c.result.reason, PIREC_JOB_END_STOPPED);
  for (int i = 0; i < 4; i++)
    pirec_job_free(jobs[i]);
  ctx_close(&c);
}

/* ---- no orphans ---- */

/* The supervisor for the orphan test: a separate process (this binary with --supervisor) that runs
 * two jobs and prints their pids, then waits to be SIGKILLed. */
static void sup_line(struct pirec_job *job, int fd, const char *line, size_t len)
{
  printf("%s\n", line);
  fflush(stdout);
}

static int supervisor_main(const char *marker)
{
  uv_loop_t loop;
  struct pirec_job_options o;
  struct pirec_job *job[2];
  const char *hang[] = {JOB_CHILD, "print-pid-hang", NULL};
  const char *encoder[] = {JOB_CHILD, "finish-on-eof", marker, NULL};

  uv_loop_init(&loop);
  for (int i = 0; i < 2; i++) {
    pirec_job_options_init(&o);
    /* with a marker: the second child is an "encoder" fed through a stdin pipe */
    o.argv = marker && i == 1 ? encoder : hang;
    o.stdio[0].kind = marker && i == 1 ? PIREC_JOB_STDIO_PIPE : PIREC_JOB_STDIO_NULL;
    o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
    o.on_line = sup_line;
    if (pirec_job_new(&loop, &o, &job[i]) != 0 || pirec_job_start(job[i]) != 0)
      return 1;
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  return 0;
}

/* Starts this binary as a supervisor of two children; returns its pid and their pids. */
static pid_t start_supervisor(const char *marker, pid_t kids[2])
{
  int p[2], got = 0;
  char buf[128];
  size_t have = 0;
  pid_t sup;

  assert_int_equal(pipe(p), 0);
  sup = fork();
  assert_true(sup >= 0);
  if (sup == 0) {
    dup2(p[1], 1);
    close(p[0]);
    close(p[1]);
    execl("/proc/self/exe", "test-job", "--supervisor", marker, (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  while (got < 2) {
    ssize_t r = read(p[0], buf + have, sizeof buf - 1 - have);
    assert_true(r > 0);
    have += (size_t)r;
    buf[have] = '\0';
    got = sscanf(buf, "%d\n%d\n", &kids[0], &kids[1]);
    if (got == 2 && buf[have - 1] != '\n')
      got = 1;
  }
  close(p[0]);
  return sup;
}

/* Through the spawn helper the children are the helper's, not the supervisor's: when the
 * supervisor dies the helper stops them in order (stdin EOF, SIGTERM after stop_term_ms, SIGKILL),
 * and an encoder reading stdin finishes its file. Waits up to 20 s for both to be gone. */
static void test_spawner_stops_children_in_order(void **state)
{
  char marker[] = "/tmp/pirec-test-job-marker-XXXXXX";
  pid_t sup, kids[2];
  int fd, status, gone = 0;
  char buf[32] = "";

  if (!pirec_spawner_running())
    skip();
  /* The test reaps the orphaned children itself; qemu-user (scripts/ci-arm64) refuses this prctl. */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    print_message("skipped: PR_SET_CHILD_SUBREAPER refused (%s)%s\n", strerror(errno),
                  getenv("PIREC_EMULATED") ? ", as qemu-user does" : "");
    skip();
  }
  fd = mkstemp(marker);
  assert_true(fd >= 0);
  close(fd);
  unlink(marker);
  sup = start_supervisor(marker, kids);
  assert_int_equal(kill(sup, SIGKILL), 0);
  assert_int_equal(waitpid(sup, &status, 0), sup);
  int64_t t0 = pirec_clock_mono_ns();
  while (!gone && pirec_clock_mono_ns() - t0 < 20000000000LL) {
    struct timespec ts = {0, 20000000};
    gone = kill(kids[0], 0) != 0 && kill(kids[1], 0) != 0;
    while (waitpid(-1, NULL, WNOHANG) > 0) /* the helper, reparented to us, once it is done */
      ;
    nanosleep(&ts, NULL);
  }
  for (int i = 0; i < 2; i++)
    if (kill(kids[i], 0) == 0)
      kill(kids[i], SIGKILL);
  prctl(PR_SET_CHILD_SUBREAPER, 0);
  assert_true(gone);
  fd = open(marker, O_RDONLY);
  assert_true(fd >= 0);
  assert_true(read(fd, buf, sizeof buf - 1) > 0);
  close(fd);
  unlink(marker);
  assert_string_equal(buf, "finished\n");
}

static void test_no_orphans_when_supervisor_killed(void **state)
{
  pid_t sup, kids[2];
  int status;
  int reaped[2] = {0, 0};

  /* Under qemu-user (scripts/ci-arm64 sets PIREC_EMULATED) the parent-death signal belongs to the
   * emulator's host threads, not to the emulated supervisor, so the property cannot be observed
   * there; native runs and the arm64 VM check it. */
  if (getenv("PIREC_EMULATED")) {
    print_message("skipped under %s: parent-death signals are not emulated\n", getenv("PIREC_EMULATED"));
    skip();
  }

  /* Through the spawn helper the children are not the supervisor's (see the test above). */
  if (pirec_spawner_running())
    skip();
  /* Orphans are reparented to us, so we can see exactly when they die. */
  assert_int_equal(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  sup = start_supervisor(NULL, kids);
  assert_int_equal(kill(kids[0], 0), 0);
  assert_int_equal(kill(kids[1], 0), 0);

  int64_t t0 = pirec_clock_mono_ns();
  assert_int_equal(kill(sup, SIGKILL), 0);
  assert_int_equal(waitpid(sup, &status, 0), sup);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  while ((!reaped[0] || !reaped[1]) && pirec_clock_mono_ns() - t0 < 1000000000LL) {
    pid_t w = waitpid(-1, &status, WNOHANG);
    if (w > 0) {
      for (int i = 0; i < 2; i++)
        if (w == kids[i]) {
          assert_true(WIFSIGNALED(status));
          assert_int_equal(WTERMSIG(status), SIGKILL);
          reaped[i] = 1;
        }
    } else {
      struct timespec ts = {0, 5000000};
      nanosleep(&ts, NULL);
    }
  }
  /* clean up before asserting, so a failure leaves nothing behind */
  for (int i = 0; i < 2; i++)
    if (!reaped[i]) {
      kill(kids[i], SIGKILL);
      waitpid(kids[i], NULL, 0);
    }
  prctl(PR_SET_CHILD_SUBREAPER, 0);
  assert_true(reaped[0]);
  assert_true(reaped[1]);
}

int main(int argc, char **argv)
{
  /* test-job-spawner: the same tests with every child made by the spawn helper (pirec/spawner.h),
   * started here as a program's main does, before anything else. */
  if (getenv("PIREC_TEST_SPAWNER") && pirec_spawner_start() != 0)
    return 1;
  if (argc > 1 && strcmp(argv[1], "--supervisor") == 0)
    return supervisor_main(argc > 2 ? argv[2] : NULL);

  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_exit_code, setup, teardown),
      cmocka_unit_test_setup_teardown(test_killed_by_signal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_missing_program, setup, teardown),
      cmocka_unit_test_setup_teardown(test_invalid_options, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_closes_stdin_then_sigterm, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_after_close_stdin_lets_child_finish, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_escalates_to_sigkill, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stop_without_stdin_pipe_sends_sigterm_at_once, setup, teardown),
      cmocka_unit_test_setup_teardown(test_start_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_start_timeout_satisfied_by_output, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stall_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stall_timeout_without_progress, setup, teardown),
      cmocka_unit_test_setup_teardown(test_progress_keeps_stall_timeout_away, setup, teardown),
      cmocka_unit_test_setup_teardown(test_total_timeout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_flood_stderr_drained, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lines_partial_and_long, setup, teardown),
      cmocka_unit_test_setup_teardown(test_binary_stdout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_binary_stdout_after_stop, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stdio_files_env_cwd, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stdin_backpressure_refuses, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stdin_slow_reader_borrowed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_borrowed_released_when_child_dies, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stdin_splice_released_after_read, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stdin_splice_released_when_child_dies, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stdin_closed_by_child_gives_epipe, setup, teardown),
      cmocka_unit_test_setup_teardown(test_stdin_pipe_enlarged, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_backoff_then_give_up, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_always_counts_clean_exits, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_on_failure_not_after_success, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_stall_then_stop_in_backoff, setup, teardown),
      cmocka_unit_test_setup_teardown(test_restart_respawn_fails, setup, teardown),
      cmocka_unit_test_setup_teardown(test_free_running_kills_child, setup, teardown),
      cmocka_unit_test_setup_teardown(test_free_inside_callback, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queue_limits_concurrency, setup, teardown),
      cmocka_unit_test_setup_teardown(test_queue_free_stops_everything, setup, teardown),
      cmocka_unit_test_setup_teardown(test_no_orphans_when_supervisor_killed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_spawner_stops_children_in_order, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
