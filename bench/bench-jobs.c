/* bench-jobs: the cost of supervised child jobs, against a plain reference measured in the same run.
 *
 *   spawn_exit_us        median time from pirec_job_start() of `true` to its on_end
 *   stdin_mbps           MB/s (10^6 bytes/s) through pirec_job_write() (copying) into `cat` whose
 *                        stdout is /dev/null, refilled from on_drain
 *   stdin_borrowed_mbps  the same with pirec_job_write_borrowed() (no copy)
 *   pipe_mbps            the same bytes through a plain blocking write() loop into
 *                        `sh -c 'cat > /dev/null'`, its pipe enlarged to 1 MiB like the job's
 *   ratio                median over repetitions of (job MB/s / plain MB/s), each pair measured
 *                        back to back (target >= 0.8); borrowed_ratio likewise
 *   loop_lag_max_ms      the loop's worst timer lateness while feeding (pirec_looplag, 1 ms ticks);
 *                        on a shared machine this includes time the loop thread was not scheduled,
 *                        so idle_loop_lag_* measures the same monitor on an idle loop afterwards
 *
 * Each throughput figure is the median of --reps runs, interleaved so drift hits all alike.
 * Usage: bench-jobs [--json] [--mib N] [--reps N] [--spawns N]
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "pirec/clock.h"
#include "pirec/job.h"
#include "pirec/log.h"
#include "pirec/looplag.h"

#define CHUNK (640 * 360 * 3 / 2) /* one 640x360 yuv420p frame */

static int cmp_i64(const void *a, const void *b)
{
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static int64_t median(int64_t *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_i64);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void die(const char *what, int err)
{
  fprintf(stderr, "bench-jobs: %s: %s\n", what, strerror(err < 0 ? -err : err));
  exit(1);
}

/* ---- spawn to exit ---- */

struct spawn_ctx {
  int64_t t_end;
  int status;
};

static void spawn_end(struct pirec_job *job, const struct pirec_job_result *r)
{
  struct spawn_ctx *s = pirec_job_user(job);
  s->t_end = pirec_clock_mono_ns();
  s->status = r->status;
}

static int64_t spawn_exit_us(uv_loop_t *loop, int n)
{
  const char *argv[] = {"true", NULL};
  struct pirec_job_options o;
  struct pirec_job *job;
  struct spawn_ctx s;
  int64_t *v = calloc((size_t)n, sizeof *v), m;
  int err;

  pirec_job_options_init(&o);
  o.argv = argv;
  o.on_end = spawn_end;
  o.user = &s;
  if ((err = pirec_job_new(loop, &o, &job)) != 0)
    die("pirec_job_new", err);
  for (int i = 0; i < n; i++) {
    int64_t t0 = pirec_clock_mono_ns();
    if ((err = pirec_job_start(job)) != 0)
      die("start 'true'", err);
    uv_run(loop, UV_RUN_DEFAULT);
    if (s.status != 0)
      die("'true' failed", EIO);
    v[i] = (s.t_end - t0) / 1000;
  }
  pirec_job_free(job);
  uv_run(loop, UV_RUN_DEFAULT);
  m = median(v, n);
  free(v);
  return m;
}

/* ---- stdin throughput through a job ---- */

struct feed_ctx {
  struct pirec_job *job;
  char *buf;
  uint64_t total, offered;
  int borrowed;
  int closed;
  int status;
};

static void feed_release(struct pirec_job *job, void *arg, int status)
{
  (void)job;
  (void)arg;
  (void)status;
}

static void feed_more(struct feed_ctx *f)
{
  while (f->offered < f->total) {
    size_t n = f->total - f->offered < CHUNK ? (size_t)(f->total - f->offered) : CHUNK;
    uv_buf_t b = uv_buf_init(f->buf, (unsigned)n);
    int err = f->borrowed ? pirec_job_write_borrowed(f->job, &b, 1, feed_release, NULL)
                          : pirec_job_write(f->job, &b, 1);
    if (err == -ENOBUFS)
      return; /* on_drain calls again */
    if (err != 0)
      die("pirec_job_write", err);
    f->offered += n;
  }
  if (!f->closed) {
    f->closed = 1;
    pirec_job_close_stdin(f->job);
  }
}

static void feed_drain(struct pirec_job *job, size_t outstanding)
{
  feed_more(pirec_job_user(job));
}

static void feed_end(struct pirec_job *job, const struct pirec_job_result *r)
{
  struct feed_ctx *f = pirec_job_user(job);
  f->status = r->status;
}

static double job_mbps(uv_loop_t *loop, char *buf, uint64_t total, int borrowed, struct pirec_looplag *lag)
{
  const char *argv[] = {"cat", NULL};
  struct pirec_job_options o;
  struct feed_ctx f;
  struct pirec_job_stats st;
  int64_t t0, t1;
  int err;

  memset(&f, 0, sizeof f);
  f.buf = buf;
  f.total = total;
  f.borrowed = borrowed;
  f.status = -1;
  pirec_job_options_init(&o);
  o.argv = argv;
  o.name = "bench cat";
  o.stdio[0].kind = PIREC_JOB_STDIO_PIPE; /* stdout stays /dev/null */
  o.on_drain = feed_drain;
  o.on_end = feed_end;
  o.user = &f;
  if ((err = pirec_job_new(loop, &o, &f.job)) != 0)
    die("pirec_job_new", err);
  t0 = pirec_clock_mono_ns();
  if ((err = pirec_job_start(f.job)) != 0)
    die("start 'cat'", err);
  if (lag)
    pirec_looplag_start(lag);
  feed_more(&f);
  uv_run(loop, UV_RUN_DEFAULT);
  t1 = pirec_clock_mono_ns();
  if (lag)
    pirec_looplag_stop(lag);
  pirec_job_stats(f.job, &st);
  if (f.status != 0 || st.stdin_bytes != total)
    die("job feed incomplete", EIO);
  pirec_job_free(f.job);
  uv_run(loop, UV_RUN_DEFAULT);
  return (double)total / ((double)(t1 - t0) / 1e9) / 1e6;
}

/* ---- the reference: a blocking write loop into cat ---- */

static double pipe_mbps(char *buf, uint64_t total)
{
  int p[2], status;
  pid_t pid;
  int64_t t0, t1;
  uint64_t done = 0;

  t0 = pirec_clock_mono_ns();
  if (pipe(p) != 0)
    die("pipe", errno);
  /* the same pipe size the job uses by default, so the ratio measures the job, not the pipe */
  fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
  pid = fork();
  if (pid < 0)
    die("fork", errno);
  if (pid == 0) {
    dup2(p[0], 0);
    close(p[0]);
    close(p[1]);
    execlp("sh", "sh", "-c", "cat > /dev/null", (char *)NULL);
    _exit(127);
  }
  close(p[0]);
  while (done < total) {
    size_t n = total - done < CHUNK ? (size_t)(total - done) : CHUNK;
    ssize_t w = write(p[1], buf, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      die("write", errno);
    }
    done += (uint64_t)w;
  }
  close(p[1]);
  waitpid(pid, &status, 0);
  t1 = pirec_clock_mono_ns();
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    die("cat failed", EIO);
  return (double)total / ((double)(t1 - t0) / 1e9) / 1e6;
}

static uint64_t lag_episodes;

static void stop_loop(uv_timer_t *t)
{
  uv_stop(t->loop);
}

/* The same monitor on an idle loop for the same wall time: what the machine alone costs. */
static void idle_lag(uv_loop_t *loop, struct pirec_looplag *lag, int64_t ms)
{
  uv_timer_t t;
  uv_timer_init(loop, &t);
  uv_timer_start(&t, stop_loop, (uint64_t)ms, 0);
  pirec_looplag_start(lag);
  uv_run(loop, UV_RUN_DEFAULT);
  pirec_looplag_stop(lag);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
}

static void on_lag_episode(struct pirec_looplag *lag, int64_t lag_ns)
{
  /* counted and reported in the JSON instead of a log line per episode */
  (void)lag;
  (void)lag_ns;
  lag_episodes++;
}

static int cmp_d(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median_d(double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv)
{
  int json = 0, reps = 7, spawns = 50;
  uint64_t mib = 256;
  uv_loop_t loop;
  struct pirec_looplag lag;
  struct pirec_looplag_stats ls;
  char *buf;

  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json"))
      json = 1;
    else if (!strcmp(argv[i], "--mib") && i + 1 < argc)
      mib = strtoull(argv[++i], NULL, 10);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--spawns") && i + 1 < argc)
      spawns = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench-jobs [--json] [--mib N] [--reps N] [--spawns N]\n");
      return 2;
    }
  }
  if (reps < 1 || reps > 99 || spawns < 1 || mib < 1)
    die("bad arguments", EINVAL);
  pirec_log_set_level(PIREC_LOG_WARN);
  buf = malloc(CHUNK);
  memset(buf, 0x5a, CHUNK);
  uv_loop_init(&loop);
  pirec_looplag_init(&loop, &lag, 1, 0, on_lag_episode);
  signal(SIGPIPE, SIG_IGN);

  int64_t spawn_us = spawn_exit_us(&loop, spawns);
  uint64_t total = mib << 20;
  double job_v[99], bor_v[99], pipe_v[99];
  for (int r = 0; r < reps; r++) {
    pipe_v[r] = pipe_mbps(buf, total);
    job_v[r] = job_mbps(&loop, buf, total, 0, &lag);
    bor_v[r] = job_mbps(&loop, buf, total, 1, NULL);
  }
  pirec_looplag_stats(&lag, &ls);
  uint64_t episodes_feeding = lag_episodes;
  /* idle baseline as long as the feeding runs took */
  int64_t feed_ms = 0;
  for (int r = 0; r < reps; r++)
    feed_ms += (int64_t)((double)total / (job_v[r] * 1e6) * 1e3);
  struct pirec_looplag_stats idle;
  pirec_looplag_reset(&lag);
  idle_lag(&loop, &lag, feed_ms < 200 ? 200 : feed_ms);
  pirec_looplag_stats(&lag, &idle);
  /* Ratios per repetition (pairs measured back to back), then the median: load from other
   * processes drifts slowly, so adjacent runs see about the same machine. */
  double ratio_v[99], bratio_v[99];
  for (int r = 0; r < reps; r++) {
    ratio_v[r] = job_v[r] / pipe_v[r];
    bratio_v[r] = bor_v[r] / pipe_v[r];
  }
  double ratio = median_d(ratio_v, reps), bratio = median_d(bratio_v, reps);
  double job_m = median_d(job_v, reps), bor_m = median_d(bor_v, reps), pipe_m = median_d(pipe_v, reps);

  if (json)
    printf("{\"spawn_exit_us\": %lld, \"stdin_mbps\": %.1f, \"stdin_borrowed_mbps\": %.1f, "
           "\"pipe_mbps\": %.1f, \"ratio\": %.3f, \"borrowed_ratio\": %.3f, "
           "\"loop_lag_max_ms\": %.3f, \"loop_lag_p99_ms\": %.3f, \"lag_episodes_over_20ms\": %llu, "
           "\"idle_loop_lag_max_ms\": %.3f, \"idle_loop_lag_p99_ms\": %.3f, "
           "\"bytes\": %llu, "
           "\"chunk\": %d, \"reps\": %d, \"spawns\": %d}\n",
           (long long)spawn_us, job_m, bor_m, pipe_m, ratio, bratio, (double)ls.max_ns / 1e6,
           (double)ls.p99_ns / 1e6, (unsigned long long)episodes_feeding, (double)idle.max_ns / 1e6,
           (double)idle.p99_ns / 1e6, (unsigned long long)total, CHUNK, reps, spawns);
  else
    printf("spawn to exit of 'true' (median of %d): %lld us\n"
           "stdin through a job (copy):     %.1f MB/s\n"
           "stdin through a job (borrowed): %.1f MB/s\n"
           "blocking write loop into cat:   %.1f MB/s\n"
           "ratio job/plain: %.3f (borrowed %.3f)\n"
           "loop lag while feeding: max %.3f ms, p99 %.3f ms (idle loop: max %.3f, p99 %.3f)\n",
           spawns, (long long)spawn_us, job_m, bor_m, pipe_m, ratio, bratio, (double)ls.max_ns / 1e6,
           (double)ls.p99_ns / 1e6, (double)idle.max_ns / 1e6, (double)idle.p99_ns / 1e6);

  pirec_looplag_close(&lag, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    die("uv_loop_close", EBUSY);
  free(buf);
  return 0;
}
