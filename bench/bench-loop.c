/* bench-loop: how long a trial start and a trial stop hold the loop thread (issue 14), for the
 * camera with raw frames through an ffmpeg encoder child, the camera with a compressed source (an
 * MJPEG file replayed at its own rate: no encoder child), the eye tracker (against pirec-eyesim)
 * and notes, while the process holds a large ring arena (default 500 MiB), beside the idle loop's
 * own lag as the machine's noise.
 *
 * Each recorder runs --rounds trial start/stop pairs, alternating two modes in one process:
 *   before: children made by uv_spawn from the loop (fork of this grown process, then a wait for
 *           the child's exec), as before the spawn helper; the arenas MADV_DONTFORK as io/arena.c
 *           maps them, directories and sinks opened in the threadpool;
 *   after:  children made by the spawn helper (pirec/spawner.h), forked at the start of main.
 * Loop time of an operation = the busiest loop iteration in the window from the call until the
 * operation has settled (300 ms; for a stop, until its callback), measured by io/looplag's stall
 * detector with a 1 ns threshold (so every iteration is measured): the time the loop could not
 * drain a ring. Beside it, per start: "call", the start call's own time on the loop, and
 * "steady", the busiest iteration of the next 300 ms of plain recording (the same per-frame work
 * without a start), so a start window's worst can be told from the recording's own.
 * Also "spawn": pirec_job_start() of /bin/true, the busiest iteration until it ended, both modes.
 *
 * --no-thp maps the arena in 4 KiB pages (MADV_NOHUGEPAGE), as on a kernel without transparent
 * huge pages.
 *
 * Usage: bench-loop [--arena-mib N] [--rounds N] [--eyesim PATH] [--no-thp]
 * Prints one JSON object. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arena.h"
#include "spawn-proto.h"
#include "pirec/camera.h"
#include "pirec/clock.h"
#include "pirec/error.h"
#include "pirec/eyetracker.h"
#include "pirec/fs.h"
#include "pirec/job.h"
#include "pirec/looplag.h"
#include "pirec/notes.h"
#include "pirec/spawner.h"

extern char **environ;

#define MAX_ROUNDS 200
#define SETTLE_MS  300

enum { BEFORE, AFTER };

struct series {
  int64_t v[MAX_ROUNDS];
  int n;
};

struct bench {
  uv_loop_t loop;
  struct pirec_looplag lag;
  uv_timer_t timer;
  struct pirec_arena arena;
  const char *root;
  int rounds;
  int round;
  int phase; /* 0: start next; 1: settled after start; 3: steady window over, stop; 2: stopped */
  const struct subject *subj;
  void *obj;
  struct series start[2], stop[2], call[2], steady[2];
  int64_t window_max;
  int stopped;
};

struct subject {
  const char *name;
  int (*start)(struct bench *b, const char *dir, int trial);
  int (*stop)(struct bench *b);
};

static void die(const char *what, int err)
{
  fprintf(stderr, "bench-loop: %s: %s\n", what, pirec_strerror(err));
  exit(1);
}

static int cmp64(const void *a, const void *b)
{
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* The value at or below which p percent of the series lie. */
static int64_t pct(const struct series *s, int p)
{
  int64_t v[MAX_ROUNDS];
  if (s->n == 0)
    return 0;
  memcpy(v, s->v, (size_t)s->n * sizeof v[0]);
  qsort(v, (size_t)s->n, sizeof v[0], cmp64);
  int i = (s->n * p + 99) / 100 - 1;
  return v[i < 0 ? 0 : i];
}

static void mode_set(struct bench *b, int mode)
{
  (void)b;
  pirec__spawner_pause(mode == BEFORE);
}

/* The loop's busiest iteration since the last window_open, in ns. */
static void window_open(struct bench *b)
{
  pirec_looplag_reset(&b->lag);
}

static int64_t window_close(struct bench *b)
{
  struct pirec_looplag_stats st;
  pirec_looplag_stats(&b->lag, &st);
  return st.worst_stall_ns;
}

/* ---- subjects ---- */

static void cam_stopped(struct pirec_camera *cam, int err, void *user)
{
  struct bench *b = user;
  (void)cam;
  if (err < 0)
    die("camera trial", err);
  b->stopped = 1;
}

static int cam_start(struct bench *b, const char *dir, int trial)
{
  return pirec_camera_trial_start(b->obj, dir, trial, 0);
}

static int cam_stop(struct bench *b)
{
  return pirec_camera_trial_stop(b->obj, cam_stopped, b);
}

static void notes_opened(struct pirec_notes *n, int status, void *user)
{
  (void)user;
  if (status < 0)
    die("notes open", status);
  if ((status = pirec_notes_add(n, 1, 1, "a note", 6)) < 0)
    die("note", status);
}

static void notes_closed(struct pirec_notes *n, int status, void *user)
{
  struct bench *b = user;
  (void)n;
  if (status < 0)
    die("notes close", status);
  b->stopped = 1;
}

static int notes_start(struct bench *b, const char *dir, int trial)
{
  return pirec_notes_open(b->obj, dir, trial, notes_opened, b);
}

static int notes_stop(struct bench *b)
{
  return pirec_notes_close_file(b->obj, notes_closed, b);
}

static void et_stopped(struct pirec_eyetracker *et, int err, void *user)
{
  struct bench *b = user;
  (void)et;
  (void)err; /* a gap in the simulated stream is not what is measured here */
  b->stopped = 1;
}

static int et_start(struct bench *b, const char *dir, int trial)
{
  return pirec_eyetracker_trial_start(b->obj, dir, trial, 0);
}

static int et_stop(struct bench *b)
{
  return pirec_eyetracker_trial_stop(b->obj, et_stopped, b);
}

static const struct subject camera_subject = {"camera_raw_encoder", cam_start, cam_stop};
static const struct subject compressed_subject = {"camera_compressed", cam_start, cam_stop};
static const struct subject notes_subject = {"notes", notes_start, notes_stop};
static const struct subject et_subject = {"eyetracker", et_start, et_stop};

/* ---- the rounds ---- */

static void step(uv_timer_t *t);

static void schedule(struct bench *b, uint64_t ms)
{
  uv_timer_start(&b->timer, step, ms, 0);
}

static void begin_round(struct bench *b)
{
  char dir[1024];
  int mode = b->round % 2 == 0 ? BEFORE : AFTER;

  snprintf(dir, sizeof dir, "%s/%s/r%03d/sub", b->root, b->subj->name, b->round);
  mode_set(b, mode);
  window_open(b);
  pirec_looplag_op("trial start");
  int64_t t0 = pirec_clock_mono_ns();
  int r = b->subj->start(b, dir, b->round + 1);
  struct series *c = &b->call[mode];
  c->v[c->n++] = pirec_clock_mono_ns() - t0;
  pirec_looplag_op(NULL);
  if (r < 0)
    die("trial start", r);
  b->phase = 1;
  schedule(b, SETTLE_MS);
}

static void step(uv_timer_t *t)
{
  struct bench *b = t->data;
  int mode = b->round % 2 == 0 ? BEFORE : AFTER;

  if (b->phase == 1) {
    struct series *s = &b->start[mode];
    s->v[s->n++] = window_close(b);
    window_open(b);
    b->phase = 3;
    schedule(b, SETTLE_MS);
    return;
  }
  if (b->phase == 3) {
    struct series *s = &b->steady[mode];
    s->v[s->n++] = window_close(b);
    window_open(b);
    b->stopped = 0;
    int r = b->subj->stop(b);
    if (r < 0)
      die("trial stop", r);
    b->phase = 2;
    schedule(b, 10);
    return;
  }
  if (b->phase == 2) {
    if (!b->stopped) {
      schedule(b, 10);
      return;
    }
    struct series *s = &b->stop[mode];
    s->v[s->n++] = window_close(b);
    b->round++;
    b->phase = 0;
    schedule(b, 100); /* the encoder's exit and the files' closes settle */
    return;
  }
  if (b->round < b->rounds)
    begin_round(b);
  else
    uv_stop(&b->loop);
}

static void print_series(const char *key, const struct series *s)
{
  printf("\"%s\":{\"n\":%d,\"p50_us\":%lld,\"p99_us\":%lld,\"max_us\":%lld}", key, s->n,
         (long long)pct(s, 50) / 1000, (long long)pct(s, 99) / 1000, (long long)pct(s, 100) / 1000);
}

static void run_subject(struct bench *b, const struct subject *subj, void *obj, uint64_t first_ms)
{
  b->subj = subj;
  b->obj = obj;
  b->round = 0;
  b->phase = 0;
  memset(b->start, 0, sizeof b->start);
  memset(b->stop, 0, sizeof b->stop);
  memset(b->call, 0, sizeof b->call);
  memset(b->steady, 0, sizeof b->steady);
  schedule(b, first_ms);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  printf(",\"%s\":{", subj->name);
  print_series("start_before", &b->start[BEFORE]);
  putchar(',');
  print_series("start_after", &b->start[AFTER]);
  putchar(',');
  print_series("stop_before", &b->stop[BEFORE]);
  putchar(',');
  print_series("stop_after", &b->stop[AFTER]);
  putchar(',');
  print_series("call_before", &b->call[BEFORE]);
  putchar(',');
  print_series("call_after", &b->call[AFTER]);
  putchar(',');
  print_series("steady_before", &b->steady[BEFORE]);
  putchar(',');
  print_series("steady_after", &b->steady[AFTER]);
  putchar('}');
  fflush(stdout);
}

/* ---- idle and spawn ---- */

static void idle_done(uv_timer_t *t)
{
  uv_stop(t->loop);
}

static void idle_lag(struct bench *b)
{
  struct pirec_looplag_stats st;
  struct series it = {.n = 0};
  pirec_looplag_reset(&b->lag);
  uv_timer_start(&b->timer, idle_done, 3000, 0);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  pirec_looplag_stats(&b->lag, &st);
  (void)it;
  printf("\"idle\":{\"timer_lag_p99_us\":%lld,\"timer_lag_max_us\":%lld,\"busiest_iteration_us\":%lld}",
         (long long)st.p99_ns / 1000, (long long)st.max_ns / 1000, (long long)st.worst_stall_ns / 1000);
}

static void on_spawn_end(struct pirec_job *job, const struct pirec_job_result *r)
{
  if (r->status != 0)
    die("/bin/true", r->error ? r->error : -EIO);
  *(int *)pirec_job_user(job) = 1;
}

/* pirec_job_start() of /bin/true: the busiest loop iteration from the call until the job ended. */
static void spawn_cost(struct bench *b, int rounds)
{
  struct series s[2] = {{.n = 0}, {.n = 0}};
  const char *args[] = {"/bin/true", NULL};
  struct pirec_job_options o;
  struct pirec_job *job;
  int ended = 0;

  pirec_job_options_init(&o);
  o.argv = args;
  o.on_end = on_spawn_end;
  o.user = &ended;
  if (pirec_job_new(&b->loop, &o, &job) < 0)
    die("job", -ENOMEM);
  for (int i = 0; i < rounds * 2 && i < MAX_ROUNDS; i++) {
    int mode = i % 2 == 0 ? BEFORE : AFTER;
    mode_set(b, mode);
    ended = 0;
    window_open(b);
    pirec_looplag_op("spawn");
    int r = pirec_job_start(job);
    pirec_looplag_op(NULL);
    if (r < 0)
      die("spawn", r);
    while (!ended)
      uv_run(&b->loop, UV_RUN_ONCE);
    s[mode].v[s[mode].n++] = window_close(b);
  }
  pirec_job_free(job);
  uv_run(&b->loop, UV_RUN_NOWAIT);
  printf(",\"spawn\":{");
  print_series("before", &s[BEFORE]);
  putchar(',');
  print_series("after", &s[AFTER]);
  putchar('}');
}

/* An MJPEG file the compressed camera replays at its own rate (made before the arena exists). */
static void make_mjpeg(const char *path)
{
  char spec[64];
  char *argv[] = {"ffmpeg", "-nostdin", "-loglevel", "error", "-y",   "-f", "lavfi",      "-i", spec,
                  "-t",     "90",       "-c:v",      "mjpeg", "-q:v", "8",  (char *)path, NULL};
  pid_t pid;
  int st;

  snprintf(spec, sizeof spec, "testsrc2=size=640x480:rate=30");
  if (posix_spawnp(&pid, "ffmpeg", NULL, NULL, argv, environ) != 0 || waitpid(pid, &st, 0) != pid ||
      !WIFEXITED(st) || WEXITSTATUS(st) != 0)
    die("ffmpeg making the MJPEG file", -EIO);
}

/* ---- the simulator ---- */

static pid_t start_eyesim(const char *path, char *address, size_t cap, int *rtsp)
{
  int p[2];
  posix_spawn_file_actions_t fa;
  pid_t pid;
  char *argv[] = {(char *)path, "--gaze-hz", "200", "--fps", "15", NULL};
  char line[256] = "";
  int http = 0;

  if (pipe(p) < 0)
    die("pipe", -errno);
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, p[1], 1);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  if (posix_spawn(&pid, path, &fa, NULL, argv, environ) != 0)
    die("pirec-eyesim", -ENOENT);
  posix_spawn_file_actions_destroy(&fa);
  close(p[1]);
  FILE *f = fdopen(p[0], "r");
  if (!f || !fgets(line, sizeof line, f) || sscanf(line, "pirec-eyesim http=%d rtsp=%d", &http, rtsp) != 2)
    die("pirec-eyesim did not start", -EIO);
  fclose(f);
  snprintf(address, cap, "127.0.0.1:%d", http);
  return pid;
}

static void closed_cam(struct pirec_camera *cam, void *user)
{
  (void)cam;
  (void)user;
}

static void closed_et(struct pirec_eyetracker *et, void *user)
{
  (void)et;
  (void)user;
}

int main(int argc, char **argv)
{
  struct bench b;
  size_t arena_mib = 500;
  const char *eyesim = NULL;
  char root[] = "/tmp/pirec-bench-loop.XXXXXX";
  int err;

  /* First, as the programs do: the helper is forked while this process is small. */
  if ((err = pirec_spawner_start()) < 0)
    die("spawn helper", err);
  memset(&b, 0, sizeof b);
  b.rounds = 20;
  int no_thp = 0;
  for (int i = 1; i < argc; i++)
    if (strcmp(argv[i], "--no-thp") == 0)
      no_thp = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--no-thp") == 0)
      i--;
    else if (strcmp(argv[i], "--arena-mib") == 0)
      arena_mib = strtoul(argv[i + 1], NULL, 10);
    else if (strcmp(argv[i], "--rounds") == 0)
      b.rounds = atoi(argv[i + 1]) * 2;
    else if (strcmp(argv[i], "--eyesim") == 0)
      eyesim = argv[i + 1];
  }
  if (b.rounds < 2 || b.rounds > MAX_ROUNDS)
    b.rounds = 20;
  if (!mkdtemp(root))
    die("mkdtemp", -errno);
  b.root = root;
  char mjpeg[1100];
  snprintf(mjpeg, sizeof mjpeg, "%s/source.mkv", root);
  make_mjpeg(mjpeg);
  if (no_thp) {
    size_t len = arena_mib << 20;
    unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
      die("mmap", -errno);
    madvise(p, len, MADV_NOHUGEPAGE);
    madvise(p, len, MADV_DONTFORK); /* as io/arena.c maps every arena */
    for (size_t off = 0; off < len; off += 4096)
      p[off] = 1;
    b.arena = (struct pirec_arena){p, len, len};
  } else if ((err = pirec__arena_get(arena_mib << 20, &b.arena)) < 0) {
    die("arena", err);
  }
  uv_loop_init(&b.loop);
  uv_timer_init(&b.loop, &b.timer);
  b.timer.data = &b;
  pirec_looplag_init(&b.loop, &b.lag, 0, 0, NULL);
  pirec_looplag_set_stall_threshold(&b.lag, 1);
  pirec_looplag_start(&b.lag);

  printf("{\"arena_mib\":%zu,\"huge_pages\":%s,\"rounds_per_mode\":%d,", arena_mib,
         no_thp || !pirec__arena_huge_page_size() ? "false" : "true", b.rounds / 2);
  idle_lag(&b);
  spawn_cost(&b, b.rounds / 2);

  struct pirec_camera_settings cs;
  struct pirec_camera *cam;
  pirec_camera_settings_default(&cs);
  cs.width = 640;
  cs.height = 480;
  cs.fps_num = 30;
  cs.fps_den = 1;
  if ((err = pirec_camera_new(&b.loop, &cs, NULL, NULL, &cam)) < 0 || (err = pirec_camera_start(cam)) < 0)
    die("camera", err);
  run_subject(&b, &camera_subject, cam, 500);
  pirec_camera_close(cam, closed_cam, NULL);

  pirec_camera_settings_default(&cs);
  snprintf(cs.name, sizeof cs.name, "compressed");
  if (pirec_camera_settings_set_source(&cs, mjpeg) < 0 ||
      (err = pirec_camera_new(&b.loop, &cs, NULL, NULL, &cam)) < 0 || (err = pirec_camera_start(cam)) < 0)
    die("compressed camera", err);
  run_subject(&b, &compressed_subject, cam, 500);
  pirec_camera_close(cam, closed_cam, NULL);

  struct pirec_notes_options no;
  struct pirec_notes *notes;
  pirec_notes_options_default(&no);
  if ((err = pirec_notes_new(&b.loop, &no, &notes)) < 0)
    die("notes", err);
  run_subject(&b, &notes_subject, notes, 200);
  pirec_notes_free(notes);

  if (eyesim) {
    struct pirec_eyetracker_settings es;
    struct pirec_eyetracker *et;
    char address[64];
    int rtsp = 0;
    pid_t sim = start_eyesim(eyesim, address, sizeof address, &rtsp);
    pirec_eyetracker_settings_default(&es);
    pirec_eyetracker_settings_set_address(&es, address);
    es.rtsp_port = rtsp;
    if ((err = pirec_eyetracker_new(&b.loop, &es, NULL, NULL, &et)) < 0 ||
        (err = pirec_eyetracker_start(et)) < 0)
      die("eye tracker", err);
    run_subject(&b, &et_subject, et, 3000); /* connected by then */
    pirec_eyetracker_close(et, closed_et, NULL);
    kill(sim, SIGTERM);
    waitpid(sim, NULL, 0);
  }
  printf("}\n");
  pirec_looplag_close(&b.lag, NULL);
  uv_close((uv_handle_t *)&b.timer, NULL);
  uv_run(&b.loop, UV_RUN_DEFAULT);
  if (no_thp)
    munmap(b.arena.base, b.arena.len);
  else
    pirec__arena_put(&b.arena);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  return system(cmd) == 0 ? 0 : 1;
}
