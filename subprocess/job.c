#include "pirec/job.h"

#include "job-splice.h"

#include "pirec/clock.h"
#include "pirec/error.h"
#include "pirec/log.h"
#include "pirec/looplag.h"
#include "pirec/container_of.h"
#include "pirec/spawner.h"

#include "spawn-proto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* Streams of a run, indexed by the child's fd number. */
enum { S_IN = 0, S_OUT = 1, S_ERR = 2, S_PROG = 3, S_COUNT = 4 };

enum { T_START, T_STALL, T_TOTAL, T_STOP, T_BACKOFF, T_EOF, T_DEFER, T_COUNT };

/* After the child exited, how long its output pipes may stay open (a grandchild holding them)
 * before the run is closed anyway. */
#define EOF_GRACE_MS  1000
#define READ_BUF_SIZE (64 * 1024)

struct job_run;

struct line_acc {
  char *buf; /* line_max + 1 bytes */
  size_t len;
};

struct pirec_job {
  uv_loop_t *loop;
  /* settings: copied from the options, immutable while a child runs (argv aside between runs) */
  struct pirec_job_options o;
  char **argv;
  char **env;
  char *cwd;
  char *name;
  char *stdio_path[3];

  /* runtime */
  enum pirec_job_state state;
  struct job_run *run; /* the current child, NULL between runs */
  unsigned live_runs;  /* runs whose handles are not closed yet */
  uv_timer_t timers[T_COUNT];
  unsigned timers_closed;
  int freed;
  enum pirec_job_end stop_reason; /* valid while stopping */
  int stopping;
  int stop_step;    /* 0 stdin closed, 1 SIGTERM sent, 2 SIGKILL sent */
  int deferred_end; /* reason + 1 of an end reported from T_DEFER, 0 none */
  int64_t start_mono_ns;
  uint32_t runs;
  int64_t *failures; /* ring of the last max_failures failure times (uv_now ms) */
  uint32_t failure_count;
  uint32_t failure_next;
  int last_spawn_error;
  uint64_t rng;

  /* stderr tail ring and the contiguous copy handed to callbacks */
  char *tail;
  size_t tail_cap, tail_len, tail_pos;
  char *tail_out;

  struct line_acc lines[S_COUNT];
  struct pirec_job_progress block; /* progress block being parsed */
  char *read_buf;

  /* Copied stdin bytes live in one arena of stdin_max_outstanding bytes used as a ring: uv_write
   * completes a stream's writes in order, so the oldest bytes are always the next to be freed, and
   * a copy that reaches the end wraps into a second uv_buf. No allocation and no fresh page faults
   * per write (a malloc of a frame-sized buffer would be an mmap/munmap each time). */
  char *arena;
  size_t arena_head; /* the oldest byte in flight */
  size_t arena_used;
  struct job_write *write_free; /* recycled write requests */

  struct pirec_job_stats stats;

  /* The channel to the spawn helper (pirec/spawner.h), opened at the first spawn through it. */
  uv_poll_t chan_poll;
  int chan_fd;
  int chan_state;
  uint64_t token;             /* of the last request */
  struct job_run *helper_run; /* the run whose STARTED / EXITED is awaited */

  /* queue membership */
  struct pirec_job_queue *queue;
  struct pirec_job *queue_next, *queue_prev;
  int queue_running;
};

struct job_run {
  struct pirec_job *job;
  uv_process_t proc;
  /* With the spawn helper there is no uv_process_t: this timer stands in for it as the run's
   * "process handle", closed when the run finishes, so the handle accounting is the same. */
  uv_timer_t helper_handle;
  int via_helper;
  uint64_t token;
  int spawn_error;  /* the helper could not start it: -errno */
  int notify_spawn; /* a restart: on_spawn once the pid is known */
  uv_pipe_t pipes[S_COUNT];
  int pipe_open[S_COUNT]; /* handle initialised and not yet closed */
  int out_open;           /* output pipes not at EOF yet */
  unsigned handles;       /* handles still to be closed */
  uv_shutdown_t shutdown;
  int stdin_closing; /* shutdown requested or pipe closed: refuse writes */
  size_t outstanding;
  int pid;
  int exited;
  int64_t exit_status;
  int term_signal;
  int finished;
  int got_output;
  int64_t activity_ms; /* uv_now of the last activity */
  int splice_in;       /* stdin is fed by `feed` (stdin_splice), not by pipes[S_IN] */
  struct pirec__splice_feed feed;
};

struct job_write {
  uv_write_t req;
  struct job_run *run;
  size_t len;
  pirec_job_release_cb release; /* NULL: the bytes live in the job's stdin arena */
  void *arg;
  struct job_write *next_free;
};

struct pirec_job_queue {
  uv_loop_t *loop;
  unsigned max_running;
  unsigned running;
  unsigned waiting;
  struct pirec_job *head, *tail;         /* waiting, in order */
  struct pirec_job *run_head, *run_tail; /* running */
  int busy;                              /* inside a job end or pump: free later */
  int dead;
};

static void run_finish(struct job_run *run);
static void job_end(struct pirec_job *job, enum pirec_job_end reason, int status, int exit_code,
                    int term_signal, int error);
static int run_spawn(struct pirec_job *job);
static void helper_signal(struct job_run *run, int sig, int even_reaped);
static void queue_pump(struct pirec_job_queue *q);
static void queue_release(struct pirec_job_queue *q);
static void queue_detach(struct pirec_job *job);

/* ---- no orphans: PR_SET_PDEATHSIG in the forked child ---- */

/* Set by the loop thread around its own uv_spawn() call only; fork() copies the calling thread's
 * value into the child, so the handler acts in that child and in no other fork of the process. */
static _Thread_local pid_t spawn_parent;
static pthread_once_t process_once = PTHREAD_ONCE_INIT;

static void atfork_child(void)
{
  if (spawn_parent == 0)
    return;
  /* Only system calls here: the child of a multithreaded process may not take locks. */
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  /* The supervisor died between fork() and prctl(): the signal would never come. */
  if (getppid() != spawn_parent)
    raise(SIGKILL);
}

static void process_setup(void)
{
  struct sigaction sa;

  pthread_atfork(NULL, NULL, atfork_child);
  if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL) {
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
  }
}

/* ---- small helpers ---- */

static void free_vec(char **v)
{
  if (!v)
    return;
  for (char **p = v; *p; p++)
    free(*p);
  free(v);
}

static char **dup_vec(const char *const *v)
{
  size_t n = 0;
  char **out;

  while (v[n])
    n++;
  out = calloc(n + 1, sizeof *out);
  if (!out)
    return NULL;
  for (size_t i = 0; i < n; i++) {
    out[i] = strdup(v[i]);
    if (!out[i]) {
      free_vec(out);
      return NULL;
    }
  }
  return out;
}

static uint64_t rng_next(struct pirec_job *job)
{
  /* xorshift64*: jitter needs spread, not cryptographic quality. */
  uint64_t x = job->rng;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  job->rng = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static void timer_start(struct pirec_job *job, int which, uint64_t ms, uv_timer_cb cb)
{
  if (job->freed)
    return;
  uv_timer_start(&job->timers[which], cb, ms, 0);
}

static void timer_stop(struct pirec_job *job, int which)
{
  if (!job->freed)
    uv_timer_stop(&job->timers[which]);
}

static struct pirec_job *timer_job(uv_timer_t *t, int which)
{
  return container_of(t, struct pirec_job, timers[which]);
}

static void progress_reset(struct pirec_job_progress *p)
{
  p->frame = -1;
  p->out_time_us = -1;
  p->speed = -1.0;
  p->total_size = -1;
  p->end = 0;
}

const char *pirec_job_end_str(enum pirec_job_end reason)
{
  switch (reason) {
  case PIREC_JOB_END_EXITED: return "exited";
  case PIREC_JOB_END_STOPPED: return "stopped";
  case PIREC_JOB_END_TIMEOUT_START: return "start timeout";
  case PIREC_JOB_END_TIMEOUT_STALL: return "stall timeout";
  case PIREC_JOB_END_TIMEOUT_TOTAL: return "total timeout";
  case PIREC_JOB_END_FAILED: return "failed";
  }
  return "unknown";
}

const char *pirec_job_result_str(const struct pirec_job_result *r, char *buf, size_t cap)
{
  char how[96];
  if (r->term_signal > 0)
    snprintf(how, sizeof how, "killed by signal %d (%s)", r->term_signal, strsignal(r->term_signal));
  else if (r->exit_code >= 0)
    snprintf(how, sizeof how, "exited with status %d", r->exit_code);
  else
    snprintf(how, sizeof how, "never ran: %s", r->error ? pirec_strerror(r->error) : "not started");
  if (r->reason == PIREC_JOB_END_EXITED || (r->reason == PIREC_JOB_END_FAILED && r->runs > 0))
    snprintf(buf, cap, "%s", how);
  else
    snprintf(buf, cap, "%s: %s", pirec_job_end_str(r->reason), how);
  return buf;
}

/* ---- options and creation ---- */

void pirec_job_options_init(struct pirec_job_options *o)
{
  memset(o, 0, sizeof *o);
  o->stdin_max_outstanding = 4u << 20;
  o->stdin_pipe_size = 0;
  o->stderr_tail_bytes = 8192;
  o->line_max = 4096;
  o->stop_term_ms = 2000;
  o->stop_kill_ms = 2000;
  o->restart.mode = PIREC_JOB_RESTART_NEVER;
  o->restart.backoff_initial_ms = 200;
  o->restart.backoff_max_ms = 10000;
  o->restart.jitter_pct = 20;
  o->restart.max_failures = 5;
  o->restart.window_ms = 60000;
}

static void job_release_memory(struct pirec_job *job)
{
  free_vec(job->argv);
  free_vec(job->env);
  free(job->cwd);
  free(job->name);
  for (int i = 0; i < 3; i++)
    free(job->stdio_path[i]);
  free(job->failures);
  free(job->tail);
  free(job->tail_out);
  for (int i = 0; i < S_COUNT; i++)
    free(job->lines[i].buf);
  free(job->read_buf);
  free(job->arena);
  while (job->write_free) {
    struct job_write *w = job->write_free;
    job->write_free = w->next_free;
    free(w);
  }
  free(job);
}

enum { CHAN_NONE = 0, CHAN_OPEN, CHAN_BROKEN, CHAN_CLOSING, CHAN_CLOSED };

static void on_chan_closed(uv_handle_t *h)
{
  struct pirec_job *job = h->data;
  close(job->chan_fd);
  job->chan_fd = -1;
  job->chan_state = CHAN_CLOSED;
  job_release_memory(job);
}

static void maybe_release(struct pirec_job *job)
{
  if (!job->freed || job->timers_closed != T_COUNT || job->live_runs != 0)
    return;
  if (job->chan_state == CHAN_OPEN || job->chan_state == CHAN_BROKEN) {
    /* Closing the channel also tells the helper this job is gone. */
    job->chan_state = CHAN_CLOSING;
    uv_close((uv_handle_t *)&job->chan_poll, on_chan_closed);
  } else if (job->chan_state != CHAN_CLOSING) {
    job_release_memory(job);
  }
}

static void on_timer_closed(uv_handle_t *h)
{
  struct pirec_job *job = h->data;
  job->timers_closed++;
  maybe_release(job);
}

/* stdin, stdout, stderr and the extra fd 3 are each asked for in a form the job can give. */
static int valid_stdio(const struct pirec_job_options *o)
{
  for (int i = 0; i < 3; i++) {
    if (o->stdio[i].kind > PIREC_JOB_STDIO_FILE)
      return 0;
    if (o->stdio[i].kind == PIREC_JOB_STDIO_FILE && (!o->stdio[i].path || !o->stdio[i].path[0]))
      return 0;
  }
  if (o->progress_fd < 0 || o->progress_fd > 3)
    return 0;
  if ((o->progress_fd == 1 || o->progress_fd == 2) && o->stdio[o->progress_fd].kind != PIREC_JOB_STDIO_PIPE)
    return 0;
  if (o->lines_fd3 && o->progress_fd == 3)
    return 0;
  if (o->on_stdout && (o->stdio[1].kind != PIREC_JOB_STDIO_PIPE || o->progress_fd == 1))
    return 0;
  return 1;
}

static int valid_restart(const struct pirec_job_restart *r)
{
  if (r->mode > PIREC_JOB_RESTART_ALWAYS || r->jitter_pct > 100)
    return 0;
  return r->mode == PIREC_JOB_RESTART_NEVER || (r->max_failures > 0 && r->max_failures <= 10000);
}

static int valid_options(const struct pirec_job_options *o)
{
  int piped_out;

  if (!o->argv || !o->argv[0] || !o->argv[0][0] || !valid_stdio(o))
    return 0;
  piped_out = o->stdio[1].kind == PIREC_JOB_STDIO_PIPE || o->stdio[2].kind == PIREC_JOB_STDIO_PIPE ||
              o->progress_fd == 3 || o->lines_fd3;
  if (o->start_timeout_ms && !piped_out)
    return 0;
  if (o->stdin_max_outstanding == 0 || o->line_max == 0)
    return 0;
  if (o->stdin_splice && o->stdio[0].kind != PIREC_JOB_STDIO_PIPE)
    return 0;
  return valid_restart(&o->restart);
}

/* The job's own copies of every string in o; the caller's pointers are dropped so none is used by
 * mistake. 0 or -ENOMEM (what was copied is freed with the job). */
static int copy_strings(struct pirec_job *job, const struct pirec_job_options *o)
{
  job->o.argv = NULL;
  job->o.env = NULL;
  job->o.cwd = NULL;
  job->o.name = NULL;
  for (int i = 0; i < 3; i++)
    job->o.stdio[i].path = NULL;
  if (!(job->argv = dup_vec(o->argv)))
    return -ENOMEM;
  if (o->env && !(job->env = dup_vec(o->env)))
    return -ENOMEM;
  if (o->cwd && !(job->cwd = strdup(o->cwd)))
    return -ENOMEM;
  if (!(job->name = strdup(o->name ? o->name : o->argv[0])))
    return -ENOMEM;
  for (int i = 0; i < 3; i++)
    if (o->stdio[i].kind == PIREC_JOB_STDIO_FILE && !(job->stdio_path[i] = strdup(o->stdio[i].path)))
      return -ENOMEM;
  return 0;
}

/* The buffers every run uses, allocated once: failure times, stderr tail, line accumulators and
 * the read buffer. 0 or -ENOMEM. */
static int alloc_buffers(struct pirec_job *job, const struct pirec_job_options *o)
{
  if (o->restart.mode != PIREC_JOB_RESTART_NEVER &&
      !(job->failures = calloc(o->restart.max_failures, sizeof *job->failures)))
    return -ENOMEM;
  job->tail_cap = o->stderr_tail_bytes;
  if (job->tail_cap && !(job->tail = malloc(job->tail_cap)))
    return -ENOMEM;
  if (!(job->tail_out = malloc(job->tail_cap + 1)))
    return -ENOMEM;
  for (int i = 1; i < S_COUNT; i++)
    if (!(job->lines[i].buf = malloc(o->line_max + 1)))
      return -ENOMEM;
  if (!(job->read_buf = malloc(READ_BUF_SIZE)))
    return -ENOMEM;
  return 0;
}

int pirec_job_new(uv_loop_t *loop, const struct pirec_job_options *o, struct pirec_job **out)
{
  struct pirec_job *job;
  int err;

  *out = NULL;
  if (!loop || !o || !valid_options(o))
    return -EINVAL;
  pthread_once(&process_once, process_setup);

  job = calloc(1, sizeof *job);
  if (!job)
    return -ENOMEM;
  job->loop = loop;
  job->o = *o;
  job->chan_fd = -1;
  if ((err = copy_strings(job, o)) < 0 || (err = alloc_buffers(job, o)) < 0) {
    job_release_memory(job);
    return err;
  }
  job->rng = (uint64_t)pirec_clock_mono_ns() ^ (uint64_t)(uintptr_t)job ^ 0x9E3779B97F4A7C15ULL;
  if (job->rng == 0)
    job->rng = 1;
  progress_reset(&job->stats.last_progress);
  progress_reset(&job->block);
  for (int i = 0; i < T_COUNT; i++) {
    uv_timer_init(loop, &job->timers[i]);
    job->timers[i].data = job;
  }
  *out = job;
  return 0;
}

/* ---- run teardown ---- */

static void on_run_handle_closed(uv_handle_t *h)
{
  struct job_run *run = h->data;
  struct pirec_job *job = run->job;

  if (--run->handles > 0)
    return;
  pirec__splice_feed_free(&run->feed);
  free(run);
  job->live_runs--;
  maybe_release(job);
}

static void run_close_pipe(struct job_run *run, int s)
{
  if (!run->pipe_open[s])
    return;
  run->pipe_open[s] = 0;
  if (s == S_IN)
    run->stdin_closing = 1;
  else
    run->out_open--;
  if (s == S_IN && run->splice_in)
    pirec__splice_feed_close(&run->feed);
  else
    uv_close((uv_handle_t *)&run->pipes[s], on_run_handle_closed);
}

static void kill_group(struct job_run *run, int sig)
{
  /* The child leads its own process group (UV_PROCESS_DETACHED); signal the group so helpers it
   * started go too. Only while it is not reaped, so the pid cannot have been reused. */
  if (run->exited)
    return;
  if (run->via_helper) {
    helper_signal(run, sig, 0);
    return;
  }
  if (run->pid <= 0)
    return;
  if (kill(-run->pid, sig) != 0)
    kill(run->pid, sig);
}

/* ---- stderr tail, lines and progress ---- */

static void tail_add(struct pirec_job *job, const char *p, size_t n)
{
  if (job->tail_cap == 0)
    return;
  if (n >= job->tail_cap) {
    memcpy(job->tail, p + n - job->tail_cap, job->tail_cap);
    job->tail_pos = 0;
    job->tail_len = job->tail_cap;
    return;
  }
  size_t first = job->tail_cap - job->tail_pos;
  if (first > n)
    first = n;
  memcpy(job->tail + job->tail_pos, p, first);
  memcpy(job->tail, p + first, n - first);
  job->tail_pos = (job->tail_pos + n) % job->tail_cap;
  job->tail_len = job->tail_len + n > job->tail_cap ? job->tail_cap : job->tail_len + n;
}

static const char *tail_flatten(struct pirec_job *job, size_t *len)
{
  size_t start = (job->tail_pos + job->tail_cap - job->tail_len) % (job->tail_cap ? job->tail_cap : 1);
  size_t first = job->tail_len;

  if (job->tail_cap && start + first > job->tail_cap)
    first = job->tail_cap - start;
  if (first)
    memcpy(job->tail_out, job->tail + start, first);
  if (job->tail_len > first)
    memcpy(job->tail_out + first, job->tail, job->tail_len - first);
  job->tail_out[job->tail_len] = '\0';
  *len = job->tail_len;
  return job->tail_out;
}

static void mark_activity(struct job_run *run)
{
  run->activity_ms = (int64_t)uv_now(run->job->loop);
  run->job->stats.last_activity_mono_ns = pirec_clock_mono_ns();
}

static int64_t parse_i64(const char *v)
{
  char *end;
  long long x;

  errno = 0;
  x = strtoll(v, &end, 10);
  if (errno || end == v)
    return -1;
  return x;
}

/* "HH:MM:SS.micro" as ffmpeg prints out_time. */
static int64_t parse_hms_us(const char *v)
{
  long h, m;
  double s;

  if (sscanf(v, "%ld:%ld:%lf", &h, &m, &s) != 3 || h < 0 || m < 0 || s < 0)
    return -1;
  return ((int64_t)h * 3600 + m * 60) * 1000000 + (int64_t)(s * 1e6 + 0.5);
}

static void progress_line(struct job_run *run, char *line)
{
  struct pirec_job *job = run->job;
  struct pirec_job_progress *b = &job->block;
  char *eq = strchr(line, '=');
  const char *k, *v;

  if (!eq)
    return;
  *eq = '\0';
  k = line;
  v = eq + 1;
  if (strcmp(k, "frame") == 0) {
    b->frame = parse_i64(v);
  } else if (strcmp(k, "out_time_us") == 0) {
    b->out_time_us = parse_i64(v);
  } else if (strcmp(k, "out_time_ms") == 0) {
    /* ffmpeg prints microseconds under this name too; the _us key wins when both are present. */
    if (b->out_time_us < 0)
      b->out_time_us = parse_i64(v);
  } else if (strcmp(k, "out_time") == 0) {
    if (b->out_time_us < 0)
      b->out_time_us = parse_hms_us(v);
  } else if (strcmp(k, "speed") == 0) {
    char *end;
    double s = strtod(v, &end);
    b->speed = end == v ? -1.0 : s;
  } else if (strcmp(k, "total_size") == 0) {
    b->total_size = parse_i64(v);
  } else if (strcmp(k, "progress") == 0) {
    b->end = strcmp(v, "end") == 0;
    job->stats.last_progress = *b;
    if (job->o.progress_fd)
      mark_activity(run);
    struct pirec_job_progress report = *b;
    progress_reset(b);
    if (job->o.on_progress && !job->freed)
      job->o.on_progress(job, &report);
  }
}

static void emit_line(struct job_run *run, int s, char *line, size_t len)
{
  struct pirec_job *job = run->job;

  if (len && line[len - 1] == '\r')
    len--;
  line[len] = '\0';
  if (s == job->o.progress_fd)
    progress_line(run, line);
  else if (job->o.on_line && !job->freed)
    job->o.on_line(job, s, line, len);
}

static void feed_lines(struct job_run *run, int s, const char *p, size_t n)
{
  struct pirec_job *job = run->job;
  struct line_acc *acc = &job->lines[s];
  size_t max = job->o.line_max;

  while (n > 0 && !job->freed && job->run == run) {
    const char *nl = memchr(p, '\n', n);
    size_t take = nl ? (size_t)(nl - p) : n;
    size_t room = max - acc->len;

    if (take >= room) {
      /* A line longer than line_max goes out in pieces rather than growing a buffer. */
      memcpy(acc->buf + acc->len, p, room);
      acc->len = 0;
      p += room;
      n -= room;
      emit_line(run, s, acc->buf, max);
      continue;
    }
    memcpy(acc->buf + acc->len, p, take);
    acc->len += take;
    if (!nl)
      return;
    p += take + 1;
    n -= take + 1;
    size_t len = acc->len;
    acc->len = 0;
    emit_line(run, s, acc->buf, len);
  }
}

static void flush_line(struct job_run *run, int s)
{
  struct line_acc *acc = &run->job->lines[s];
  if (acc->len) {
    size_t len = acc->len;
    acc->len = 0;
    emit_line(run, s, acc->buf, len);
  }
}

/* ---- reading ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct job_run *run = h->data;
  struct pirec_job *job = run->job;

  /* libuv allocates, reads and calls on_read one read at a time on the loop thread, so one buffer
   * per job serves all of its pipes. */
  *buf = uv_buf_init(job->read_buf, READ_BUF_SIZE);
}

static int pipe_index(struct job_run *run, uv_stream_t *stream)
{
  return (int)((uv_pipe_t *)stream - run->pipes);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
  struct job_run *run = stream->data;
  struct pirec_job *job = run->job;
  int s = pipe_index(run, stream);

  if (nread == 0)
    return;
  if (nread < 0) {
    /* EOF or a read error: either way the stream is done. */
    if (nread != UV_EOF)
      pirec_log(PIREC_LOG_WARN, "job '%s': cannot read fd %d: %s", job->name, s, pirec_strerror((int)nread));
    if (job->run == run)
      flush_line(run, s);
    run_close_pipe(run, s);
    if (run->exited && run->out_open == 0)
      run_finish(run);
    return;
  }
  if (!run->got_output) {
    run->got_output = 1;
    if (job->run == run)
      timer_stop(job, T_START);
  }
  if (s == S_OUT)
    job->stats.stdout_bytes += (uint64_t)nread;
  else if (s == S_ERR) {
    job->stats.stderr_bytes += (uint64_t)nread;
    tail_add(job, buf->base, (size_t)nread);
  }
  if (!job->o.progress_fd)
    mark_activity(run);
  if (job->run != run)
    return;
  if (s == S_OUT && job->o.on_stdout) {
    if (!job->freed)
      job->o.on_stdout(job, (const uint8_t *)buf->base, (size_t)nread);
  } else {
    feed_lines(run, s, buf->base, (size_t)nread);
  }
}

/* ---- stop escalation and timeouts ---- */

static void on_stop_timer(uv_timer_t *t)
{
  struct pirec_job *job = timer_job(t, T_STOP);
  struct job_run *run = job->run;

  if (!run || run->exited)
    return;
  if (job->stop_step == 0) {
    pirec_log(PIREC_LOG_WARN, "job '%s': still running %u ms after stdin was closed: sending SIGTERM",
              job->name, job->o.stop_term_ms);
    kill_group(run, SIGTERM);
    job->stop_step = 1;
    timer_start(job, T_STOP, job->o.stop_kill_ms, on_stop_timer);
  } else if (job->stop_step == 1) {
    pirec_log(PIREC_LOG_WARN, "job '%s': still running %u ms after SIGTERM: sending SIGKILL", job->name,
              job->o.stop_kill_ms);
    kill_group(run, SIGKILL);
    job->stop_step = 2;
  }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
  struct job_run *run = container_of(req, struct job_run, shutdown);
  run_close_pipe(run, S_IN);
}

static void stdin_close(struct job_run *run)
{
  if (!run->pipe_open[S_IN] || run->stdin_closing)
    return;
  run->stdin_closing = 1;
  if (run->splice_in) {
    pirec__splice_feed_shutdown(&run->feed); /* on_splice_flushed closes it */
    return;
  }
  /* shutdown waits for accepted writes, so a stop still delivers what the child will read */
  if (uv_shutdown(&run->shutdown, (uv_stream_t *)&run->pipes[S_IN], on_shutdown) != 0)
    run_close_pipe(run, S_IN);
}

static void begin_stop(struct pirec_job *job, enum pirec_job_end reason)
{
  struct job_run *run = job->run;

  if (job->stopping || !run)
    return;
  job->stopping = 1;
  job->stop_reason = reason;
  job->state = PIREC_JOB_STOPPING;
  timer_stop(job, T_START);
  timer_stop(job, T_STALL);
  if (run->exited)
    return; /* waiting only for output EOF */
  if (job->o.stdio[0].kind == PIREC_JOB_STDIO_PIPE) {
    /* Also when stdin is already closed (pirec_job_close_stdin): an encoder finishing its file
     * gets the full stop_term_ms before the SIGTERM. */
    pirec_log(PIREC_LOG_INFO, "job '%s' (pid %d): stopping (%s): closing stdin, SIGTERM in %u ms", job->name,
              run->pid, pirec_job_end_str(reason), job->o.stop_term_ms);
    stdin_close(run);
    job->stop_step = 0;
    timer_start(job, T_STOP, job->o.stop_term_ms, on_stop_timer);
  } else {
    pirec_log(PIREC_LOG_INFO, "job '%s' (pid %d): stopping (%s): sending SIGTERM, SIGKILL in %u ms",
              job->name, run->pid, pirec_job_end_str(reason), job->o.stop_kill_ms);
    kill_group(run, SIGTERM);
    job->stop_step = 1;
    timer_start(job, T_STOP, job->o.stop_kill_ms, on_stop_timer);
  }
}

static void on_start_timer(uv_timer_t *t)
{
  struct pirec_job *job = timer_job(t, T_START);

  if (!job->run || job->run->got_output)
    return;
  pirec_log(PIREC_LOG_WARN, "job '%s' (pid %d): no output within %u ms (start timeout)", job->name,
            job->run->pid, job->o.start_timeout_ms);
  begin_stop(job, PIREC_JOB_END_TIMEOUT_START);
}

static void on_stall_timer(uv_timer_t *t)
{
  struct pirec_job *job = timer_job(t, T_STALL);
  struct job_run *run = job->run;
  int64_t idle;

  if (!run || job->stopping)
    return;
  idle = (int64_t)uv_now(job->loop) - run->activity_ms;
  if (idle < (int64_t)job->o.stall_timeout_ms) {
    /* Activity since the timer was armed: wait for the rest of the period. */
    timer_start(job, T_STALL, (uint64_t)((int64_t)job->o.stall_timeout_ms - idle), on_stall_timer);
    return;
  }
  pirec_log(PIREC_LOG_WARN, "job '%s' (pid %d): no progress for %lld ms (stall timeout %u ms)", job->name,
            run->pid, (long long)idle, job->o.stall_timeout_ms);
  begin_stop(job, PIREC_JOB_END_TIMEOUT_STALL);
}

static void on_total_timer(uv_timer_t *t)
{
  struct pirec_job *job = timer_job(t, T_TOTAL);

  pirec_log(PIREC_LOG_WARN, "job '%s': still running after %u ms (total timeout)", job->name,
            job->o.total_timeout_ms);
  if (job->state == PIREC_JOB_BACKOFF) {
    timer_stop(job, T_BACKOFF);
    job_end(job, PIREC_JOB_END_TIMEOUT_TOTAL, -1, -1, 0, 0);
  } else if (job->run) {
    if (job->stopping)
      job->stop_reason = PIREC_JOB_END_TIMEOUT_TOTAL; /* no restart after the deadline */
    else
      begin_stop(job, PIREC_JOB_END_TIMEOUT_TOTAL);
  }
}

/* ---- ending and restarting ---- */

/* A result for the callbacks: how the run ended, the job's run count and times, the stderr tail. */
static void result_fill(struct pirec_job *job, struct pirec_job_result *r, enum pirec_job_end reason,
                        int status, int exit_code, int term_signal)
{
  memset(r, 0, sizeof *r);
  r->reason = reason;
  r->status = status;
  r->exit_code = exit_code;
  r->term_signal = term_signal;
  r->runs = job->runs;
  r->start_mono_ns = job->start_mono_ns;
  r->end_mono_ns = pirec_clock_mono_ns();
  r->stderr_tail = tail_flatten(job, &r->stderr_tail_len);
}

static void job_end(struct pirec_job *job, enum pirec_job_end reason, int status, int exit_code,
                    int term_signal, int error)
{
  struct pirec_job_result r;
  struct pirec_job_queue *q = job->queue;

  timer_stop(job, T_TOTAL);
  timer_stop(job, T_BACKOFF);
  timer_stop(job, T_STOP);
  job->state = PIREC_JOB_IDLE;
  job->stopping = 0;
  job->stats.pid = 0;
  if (q) {
    queue_detach(job);
    q->busy++;
  }
  if (job->freed)
    goto out;

  result_fill(job, &r, reason, status, exit_code, term_signal);
  r.error = error;
  if (reason != PIREC_JOB_END_EXITED || status != 0)
    pirec_log(reason == PIREC_JOB_END_STOPPED && status >= 0 ? PIREC_LOG_INFO : PIREC_LOG_WARN,
              "job '%s': ended (%s), status %d after %u run%s", job->name, pirec_job_end_str(reason), status,
              job->runs, job->runs == 1 ? "" : "s");
  if (job->o.on_end)
    job->o.on_end(job, &r);
out:
  if (q) {
    q->busy--;
    queue_pump(q);
    queue_release(q);
  }
}

static void on_defer_timer(uv_timer_t *t)
{
  struct pirec_job *job = timer_job(t, T_DEFER);
  int reason = job->deferred_end - 1;

  job->deferred_end = 0;
  if (reason >= 0)
    job_end(job, (enum pirec_job_end)reason, -1, -1, 0, job->last_spawn_error);
}

static void defer_end(struct pirec_job *job, enum pirec_job_end reason)
{
  job->deferred_end = (int)reason + 1;
  job->state = PIREC_JOB_STOPPING;
  timer_start(job, T_DEFER, 0, on_defer_timer);
}

/* Records a failure; returns how many fall inside the window, the new one included. */
static uint32_t note_failure(struct pirec_job *job)
{
  const struct pirec_job_restart *rp = &job->o.restart;
  int64_t now = (int64_t)uv_now(job->loop);
  uint32_t n = 0;

  job->failures[job->failure_next] = now;
  job->failure_next = (job->failure_next + 1) % rp->max_failures;
  if (job->failure_count < rp->max_failures)
    job->failure_count++;
  for (uint32_t i = 0; i < job->failure_count; i++)
    if (now - job->failures[i] < (int64_t)rp->window_ms)
      n++;
  return n;
}

static uint64_t backoff_delay(struct pirec_job *job, uint32_t n)
{
  const struct pirec_job_restart *rp = &job->o.restart;
  uint64_t d = rp->backoff_initial_ms;
  uint32_t shift = n > 0 ? n - 1 : 0;

  for (uint32_t i = 0; i < shift && d < rp->backoff_max_ms; i++)
    d *= 2;
  if (d > rp->backoff_max_ms)
    d = rp->backoff_max_ms;
  if (rp->jitter_pct && d > 0) {
    /* factor in [1 - j, 1 + j] in 1/10000 steps */
    int64_t span = (int64_t)rp->jitter_pct * 200 + 1;
    int64_t off = (int64_t)(rng_next(job) % (uint64_t)span) - (int64_t)rp->jitter_pct * 100;
    int64_t v = (int64_t)d * (10000 + off) / 10000;
    d = v > 0 ? (uint64_t)v : 0;
  }
  return d;
}

static void on_backoff_timer(uv_timer_t *t);
static void respawn_failed(struct pirec_job *job, int err);

/* A run ended (or a respawn failed) in a way the policy may restart. Returns 1 if a restart is
 * scheduled, 0 if the caller should end the job. */
static int schedule_restart(struct pirec_job *job, const struct pirec_job_result *run_result)
{
  uint32_t n = note_failure(job);
  uint64_t delay;

  if (n >= job->o.restart.max_failures) {
    pirec_log(PIREC_LOG_ERROR, "job '%s': %u failures within %u ms: giving up", job->name, n,
              job->o.restart.window_ms);
    return 0;
  }
  delay = backoff_delay(job, n);
  pirec_log(PIREC_LOG_WARN, "job '%s': run %u ended (%s, status %d): restart %u in %llu ms", job->name,
            job->runs, pirec_job_end_str(run_result->reason), run_result->status, n,
            (unsigned long long)delay);
  job->state = PIREC_JOB_BACKOFF;
  job->stopping = 0;
  timer_start(job, T_BACKOFF, delay, on_backoff_timer);
  if (job->o.on_restart && !job->freed)
    job->o.on_restart(job, run_result, n, delay);
  return 1;
}

static void on_backoff_timer(uv_timer_t *t)
{
  struct pirec_job *job = timer_job(t, T_BACKOFF);
  int err;

  if (job->state != PIREC_JOB_BACKOFF)
    return;
  err = run_spawn(job);
  if (err == 0) {
    if (job->run->via_helper)
      job->run->notify_spawn = 1; /* the pid comes with the helper's answer */
    else if (job->o.on_spawn && !job->freed)
      job->o.on_spawn(job, job->run->pid);
    return;
  }
  pirec_log(PIREC_LOG_ERROR, "job '%s': cannot restart '%s': %s", job->name, job->argv[0],
            pirec_strerror(err));
  respawn_failed(job, err);
}

/* A restart could not spawn: a failure like any other for the restart policy. */
static void respawn_failed(struct pirec_job *job, int err)
{
  job->last_spawn_error = err;
  struct pirec_job_result r;
  memset(&r, 0, sizeof r);
  r.reason = PIREC_JOB_END_FAILED;
  r.status = -1;
  r.exit_code = -1;
  r.error = err;
  r.runs = job->runs;
  r.stderr_tail = "";
  if (!schedule_restart(job, &r))
    job_end(job, PIREC_JOB_END_FAILED, -1, -1, 0, err);
}

/* The spawn helper reported that the run's child never ran (exec, stdio file or cwd failed). The
 * run is not counted. The first run of a start ends the job as FAILED with the error (what
 * pirec_job_start() returns synchronously without the helper); a restart goes to the policy. */
static void spawn_failed(struct pirec_job *job, int err)
{
  int first = job->runs <= 1;

  if (job->runs > 0)
    job->runs--;
  job->stats.runs = job->runs;
  job->stats.restarts = job->runs > 0 ? job->runs - 1 : 0;
  job->last_spawn_error = err;
  if (job->stopping)
    job_end(job, job->stop_reason, -1, -1, 0, 0);
  else if (first)
    job_end(job, PIREC_JOB_END_FAILED, -1, -1, 0, err);
  else
    respawn_failed(job, err);
}

static void run_finish(struct job_run *run)
{
  struct pirec_job *job = run->job;
  enum pirec_job_end reason;
  int status, exit_code, sig, failed, restart;

  if (run->finished)
    return;
  run->finished = 1;
  timer_stop(job, T_EOF);
  for (int s = 0; s < S_COUNT; s++)
    run_close_pipe(run, s);
  if (run->via_helper)
    uv_close((uv_handle_t *)&run->helper_handle, on_run_handle_closed);
  else
    uv_close((uv_handle_t *)&run->proc, on_run_handle_closed);
  if (job->run != run)
    return;
  job->run = NULL;
  job->stats.pid = 0;
  job->stats.stdin_outstanding = 0;
  timer_stop(job, T_START);
  timer_stop(job, T_STALL);
  timer_stop(job, T_STOP);
  if (job->freed)
    return;
  if (run->spawn_error) {
    spawn_failed(job, run->spawn_error);
    return;
  }

  sig = run->term_signal;
  exit_code = sig ? -1 : (int)run->exit_status;
  status = sig ? 128 + sig : (int)run->exit_status;
  reason = job->stopping ? job->stop_reason : PIREC_JOB_END_EXITED;

  if (reason == PIREC_JOB_END_STOPPED || reason == PIREC_JOB_END_TIMEOUT_TOTAL ||
      job->o.restart.mode == PIREC_JOB_RESTART_NEVER) {
    job_end(job, reason, status, exit_code, sig, 0);
    return;
  }
  failed = reason != PIREC_JOB_END_EXITED || status != 0;
  restart = job->o.restart.mode == PIREC_JOB_RESTART_ALWAYS || failed;
  if (!restart) {
    job_end(job, reason, status, exit_code, sig, 0);
    return;
  }
  struct pirec_job_result r;
  result_fill(job, &r, reason, status, exit_code, sig);
  if (!schedule_restart(job, &r))
    job_end(job, PIREC_JOB_END_FAILED, status, exit_code, sig, 0);
}

static void on_eof_timer(uv_timer_t *t)
{
  struct pirec_job *job = timer_job(t, T_EOF);
  struct job_run *run = job->run;

  if (!run)
    return;
  pirec_log(PIREC_LOG_WARN,
            "job '%s': output still open %d ms after pid %d exited (a child of it holds it): "
            "killing its process group and closing",
            job->name, EOF_GRACE_MS, run->pid);
  /* The leader is reaped but its group lives on while members remain, so the id is not reused. */
  if (run->via_helper)
    helper_signal(run, SIGKILL, 1);
  else
    kill(-run->pid, SIGKILL);
  run_finish(run);
}

/* The child is gone (reaped by libuv or by the spawn helper, or it never ran: spawn_error). */
static void run_exited(struct job_run *run, int64_t exit_status, int term_signal)
{
  struct pirec_job *job = run->job;

  run->exited = 1;
  run->exit_status = exit_status;
  run->term_signal = term_signal;
  /* Nobody reads stdin any more: pending writes fail with ECANCELED and release their buffers;
   * spliced ones, whose pages the pipe held for the child's reads, are free now too. */
  run_close_pipe(run, S_IN);
  pirec__splice_feed_release_all(&run->feed);
  if (run->out_open == 0 || job->freed) {
    run_finish(run);
    return;
  }
  if (job->run == run)
    timer_start(job, T_EOF, EOF_GRACE_MS, on_eof_timer);
}

static void on_exit_cb(uv_process_t *proc, int64_t exit_status, int term_signal)
{
  run_exited(container_of(proc, struct job_run, proc), exit_status, term_signal);
}

/* ---- spawning ---- */

static int open_stdio_file(struct pirec_job *job, int fd)
{
  const struct pirec_job_stdio *st = &job->o.stdio[fd];
  int flags = O_CLOEXEC;
  int f;

  if (fd == 0)
    flags |= O_RDONLY;
  else
    flags |= O_WRONLY | O_CREAT | (st->append ? O_APPEND : O_TRUNC);
  f = open(job->stdio_path[fd], flags, 0644);
  if (f < 0) {
    int err = -errno;
    pirec_log(PIREC_LOG_ERROR, "job '%s': cannot open '%s' for fd %d: %s", job->name, job->stdio_path[fd], fd,
              pirec_strerror(err));
    return err;
  }
  return f;
}

/* The fds of one spawn: the child's ends (closed by us once it has them) and ours. */
struct spawn_fds {
  int child[S_COUNT];
  int parent[S_COUNT];
};

static void close_fds(int fds[S_COUNT])
{
  for (int s = 0; s < S_COUNT; s++) {
    if (fds[s] >= 0)
      close(fds[s]);
    fds[s] = -1;
  }
}

/* A pipe for stream s: the pipes are made here rather than by libuv, which would use socketpairs:
 * a real pipe is what ffmpeg expects on "pipe:0" and the only kind F_SETPIPE_SZ can enlarge. Both
 * ends are close-on-exec so no other child inherits them; libuv dup2()s the child's end into
 * place. */
static int make_pipe(struct pirec_job *job, int s, struct spawn_fds *fds)
{
  int p[2];

  if (pipe2(p, O_CLOEXEC) != 0)
    return -errno;
  fds->child[s] = s == S_IN ? p[0] : p[1];
  fds->parent[s] = s == S_IN ? p[1] : p[0];
  if (s == S_IN && job->o.stdin_pipe_size != SIZE_MAX) {
    size_t want = job->o.stdin_pipe_size ? job->o.stdin_pipe_size : (1u << 20);
    if (want > INT_MAX)
      want = INT_MAX;
    /* EPERM above /proc/sys/fs/pipe-max-size or the user's pipe quota: keep the default. */
    if (fcntl(p[1], F_SETPIPE_SZ, (int)want) < 0 && errno != EPERM)
      pirec_log(PIREC_LOG_DEBUG, "job '%s': F_SETPIPE_SZ %zu: %s", job->name, want, pirec_strerror(-errno));
  }
  return 0;
}

/* What the child gets as fds 0..nstdio-1. On failure every fd made so far is closed. */
static int setup_stdio(struct pirec_job *job, int nstdio, uv_stdio_container_t stdio[], struct spawn_fds *fds)
{
  for (int s = 0; s < nstdio; s++) {
    enum pirec_job_stdio_kind kind = s == S_PROG ? PIREC_JOB_STDIO_PIPE : job->o.stdio[s].kind;
    int err = 0;

    stdio[s].flags = UV_IGNORE;
    if (kind == PIREC_JOB_STDIO_NULL)
      continue;
    if (kind == PIREC_JOB_STDIO_INHERIT) {
      stdio[s].flags = UV_INHERIT_FD;
      stdio[s].data.fd = s;
      continue;
    }
    if (kind == PIREC_JOB_STDIO_FILE)
      err = fds->child[s] = open_stdio_file(job, s);
    else
      err = make_pipe(job, s, fds);
    if (err < 0) {
      fds->child[s] = -1;
      close_fds(fds->child);
      close_fds(fds->parent);
      return err;
    }
    stdio[s].flags = UV_INHERIT_FD;
    stdio[s].data.fd = fds->child[s];
  }
  return 0;
}

/* uv_spawn with the PR_SET_PDEATHSIG hook armed around it. The child's ends are closed here either
 * way; ours only on failure. */
static int spawn_child(struct pirec_job *job, struct job_run *run, uv_stdio_container_t stdio[], int nstdio,
                       struct spawn_fds *fds)
{
  uv_process_options_t po;
  int err;

  memset(&po, 0, sizeof po);
  po.exit_cb = on_exit_cb;
  po.file = job->argv[0];
  po.args = job->argv;
  po.env = job->env;
  po.cwd = job->cwd;
  po.flags = UV_PROCESS_DETACHED;
  po.stdio_count = nstdio;
  po.stdio = stdio;

  const char *outer = pirec_looplag_op("spawn");
  spawn_parent = getpid();
  err = uv_spawn(job->loop, &run->proc, &po);
  spawn_parent = 0;
  pirec_looplag_op(outer);
  run->proc.data = run;
  run->handles = 1;
  job->live_runs++;
  close_fds(fds->child);
  if (err != 0) {
    close_fds(fds->parent);
    /* uv_spawn initialised the handle even though it failed; it must be closed all the same. */
    run->finished = 1;
    uv_close((uv_handle_t *)&run->proc, on_run_handle_closed);
  }
  return err;
}

/* ---- spawning through the spawn helper (pirec/spawner.h) ---- */

static void helper_signal(struct job_run *run, int sig, int even_reaped)
{
  struct pirec_job *job = run->job;
  struct pirec__spawn_msg m = pirec__spawn_msg_make(PIREC__SPAWN_SIGNAL, run->token, sig, even_reaped, 0, 0);
  int err;

  if (job->chan_state != CHAN_OPEN)
    return;
  if ((err = pirec__spawn_send(job->chan_fd, &m, sizeof m, NULL, 0)) != 0)
    pirec_log(PIREC_LOG_ERROR, "job '%s': cannot ask the spawn helper to send signal %d: %s", job->name, sig,
              pirec_strerror(err));
}

static void helper_start_failed(struct pirec_job *job, struct job_run *run, const struct pirec__spawn_msg *m)
{
  int err = m->b;

  if (m->c == PIREC__SPAWN_STAGE_OPEN && m->d < 3 && job->stdio_path[m->d])
    pirec_log(PIREC_LOG_ERROR, "job '%s': cannot open '%s' for fd %u: %s", job->name, job->stdio_path[m->d],
              m->d, pirec_strerror(err));
  else if (m->c == PIREC__SPAWN_STAGE_CHDIR)
    pirec_log(PIREC_LOG_ERROR, "job '%s': cannot change to '%s': %s", job->name, job->cwd,
              pirec_strerror(err));
  pirec_log(PIREC_LOG_ERROR, "job '%s': cannot %s '%s': %s", job->name, job->runs > 1 ? "restart" : "start",
            job->argv[0], pirec_strerror(err));
  run->spawn_error = err;
  run_exited(run, 127, 0);
}

/* The channel keeps the loop alive only while a child of the job lives (like uv_process_t). */
static void helper_await(struct pirec_job *job, struct job_run *run)
{
  job->helper_run = run;
  if (run)
    uv_ref((uv_handle_t *)&job->chan_poll);
  else
    uv_unref((uv_handle_t *)&job->chan_poll);
}

static void helper_message(struct pirec_job *job, const struct pirec__spawn_msg *m)
{
  struct job_run *run = job->helper_run;

  if (!run || m->token != run->token)
    return;
  if (m->type == PIREC__SPAWN_STARTED && m->b != 0) {
    helper_await(job, NULL);
    helper_start_failed(job, run, m);
  } else if (m->type == PIREC__SPAWN_STARTED) {
    run->pid = m->a;
    if (job->run == run)
      job->stats.pid = run->pid;
    if (run->notify_spawn && job->o.on_spawn && !job->freed)
      job->o.on_spawn(job, run->pid);
  } else if (m->type == PIREC__SPAWN_EXITED) {
    int st = m->a;
    helper_await(job, NULL);
    run_exited(run, WIFEXITED(st) ? WEXITSTATUS(st) : 0, WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  }
}

/* The helper is gone (it never should be while we live): the child's fate is unknown and it gets
 * SIGKILL from the kernel as the helper's child, so the run ends as killed. */
static void helper_lost(struct pirec_job *job)
{
  struct job_run *run = job->helper_run;

  job->chan_state = CHAN_BROKEN;
  uv_poll_stop(&job->chan_poll);
  pirec_log(PIREC_LOG_ERROR, "job '%s': the spawn helper is gone", job->name);
  helper_await(job, NULL);
  if (run)
    run_exited(run, 0, SIGKILL);
}

static void on_chan_readable(uv_poll_t *p, int status, int events)
{
  struct pirec_job *job = p->data;
  (void)events;

  while (job->chan_state == CHAN_OPEN) {
    struct pirec__spawn_msg m;
    int fds[PIREC__SPAWN_MAX_FDS], nfds;
    long n = status < 0 ? status : pirec__spawn_recv(job->chan_fd, &m, sizeof m, fds, &nfds, MSG_DONTWAIT);

    for (int k = 0; n >= 0 && k < nfds; k++)
      close(fds[k]);
    if (n == -EAGAIN)
      return;
    if (n <= 0) {
      helper_lost(job);
      return;
    }
    if (n == (long)sizeof m)
      helper_message(job, &m);
  }
}

static int chan_open(struct pirec_job *job)
{
  int fd, err;

  if (job->chan_state == CHAN_OPEN)
    return 0;
  if (job->chan_state != CHAN_NONE)
    return -EPIPE;
  if ((fd = pirec__spawner_channel()) < 0)
    return fd;
  if ((err = uv_poll_init(job->loop, &job->chan_poll, fd)) != 0) {
    close(fd);
    return err;
  }
  job->chan_poll.data = job;
  job->chan_fd = fd;
  job->chan_state = CHAN_OPEN;
  uv_unref((uv_handle_t *)&job->chan_poll);
  return uv_poll_start(&job->chan_poll, UV_READABLE, on_chan_readable);
}

/* What the child gets as fd s, for the helper: a kind, a path, or one of our fds to pass. */
static int helper_stdio(struct pirec_job *job, int s, struct spawn_fds *fds, uint8_t *kind, int *pass,
                        int *npass)
{
  enum pirec_job_stdio_kind k = s == S_PROG ? PIREC_JOB_STDIO_PIPE : job->o.stdio[s].kind;
  int err;

  switch (k) {
  case PIREC_JOB_STDIO_NULL: *kind = PIREC__SPAWN_FD_NULL; return 0;
  case PIREC_JOB_STDIO_INHERIT: pass[(*npass)++] = s; break;
  case PIREC_JOB_STDIO_FILE:
    /* opened by the child itself: no open(2) of a regular file on the loop */
    *kind = s == 0                   ? PIREC__SPAWN_FD_READ
            : job->o.stdio[s].append ? PIREC__SPAWN_FD_APPEND
                                     : PIREC__SPAWN_FD_TRUNC;
    return 0;
  case PIREC_JOB_STDIO_PIPE:
    if ((err = make_pipe(job, s, fds)) < 0)
      return err;
    pass[(*npass)++] = fds->child[s];
    break;
  }
  *kind = PIREC__SPAWN_FD_PASSED;
  return 0;
}

/* Hands the request to the helper and returns at once; the pid, an exec failure and the exit come
 * back through on_chan_readable. The child's ends are closed here either way; ours on failure. */
static int spawn_helper(struct pirec_job *job, struct job_run *run, int nstdio, struct spawn_fds *fds)
{
  uint8_t kinds[4] = {0};
  int pass[4], npass = 0, err = chan_open(job);
  char *msg = NULL;
  long len;

  for (int s = 0; err == 0 && s < nstdio; s++)
    err = helper_stdio(job, s, fds, &kinds[s], pass, &npass);
  if (err == 0) {
    const char *paths[4] = {job->stdio_path[0], job->stdio_path[1], job->stdio_path[2], NULL};
    const char *outer = pirec_looplag_op("spawn");
    len = pirec__spawn_pack((const char *const *)job->argv, (const char *const *)job->env, job->cwd, kinds,
                            paths, nstdio, job->o.stop_term_ms, job->o.stop_kill_ms, job->token + 1, &msg);
    err = len < 0 ? (int)len : pirec__spawn_send(job->chan_fd, msg, (size_t)len, pass, npass);
    pirec_looplag_op(outer);
    free(msg);
  }
  close_fds(fds->child);
  if (err != 0) {
    close_fds(fds->parent);
    return err;
  }
  run->via_helper = 1;
  run->token = ++job->token;
  uv_timer_init(job->loop, &run->helper_handle);
  run->helper_handle.data = run;
  run->handles = 1;
  job->live_runs++;
  helper_await(job, run);
  return 0;
}

/* The child is up: it becomes the job's current run. */
static void run_started(struct pirec_job *job, struct job_run *run)
{
  run->pid = run->via_helper ? 0 : run->proc.pid;
  job->run = run;
  job->runs++;
  job->stats.runs = job->runs;
  job->stats.restarts = job->runs - 1;
  job->stats.pid = run->pid;
  job->stats.stdin_outstanding = 0;
  job->state = PIREC_JOB_RUNNING;
  job->stopping = 0;
  job->stop_step = 0;
  job->tail_len = job->tail_pos = 0;
  for (int s = 0; s < S_COUNT; s++)
    job->lines[s].len = 0;
  progress_reset(&job->block);
  mark_activity(run);
}

/* ---- stdin by vmsplice (stdin_splice; job-splice.c) ---- */

static void on_splice_released(struct pirec__splice_feed *feed, pirec__splice_fn fn, void *arg, size_t len,
                               int status)
{
  struct job_run *run = container_of(feed, struct job_run, feed);
  struct pirec_job *job = run->job;

  run->outstanding -= len;
  if (job->run == run) {
    job->stats.stdin_outstanding = run->outstanding;
    if (status == 0 && !job->o.progress_fd)
      mark_activity(run);
  }
  if (status == 0)
    job->stats.stdin_bytes += len;
  ((pirec_job_release_cb)fn)(job, arg, status);
  if (job->run == run && !job->freed && job->o.on_drain)
    job->o.on_drain(job, run->outstanding);
}

static void on_splice_error(struct pirec__splice_feed *feed, int err)
{
  struct job_run *run = container_of(feed, struct job_run, feed);
  (void)err; /* EPIPE: the child closed its stdin; the run ends when it exits */
  run_close_pipe(run, S_IN);
}

static void on_splice_flushed(struct pirec__splice_feed *feed)
{
  run_close_pipe(container_of(feed, struct job_run, feed), S_IN);
}

/* Our end of stdin as a splice feed: its two handles count as the run's. */
static int watch_stdin_splice(struct pirec_job *job, struct job_run *run, int fd)
{
  int err = pirec__splice_feed_init(job->loop, &run->feed, fd, on_splice_released, on_splice_error,
                                    on_splice_flushed, on_run_handle_closed, run);
  if (err < 0) {
    close(fd);
    return err;
  }
  run->splice_in = 1;
  run->pipe_open[S_IN] = 1;
  run->handles += 2;
  return 0;
}

/* Our ends of the pipes become libuv handles; output pipes are read from now on. */
static void watch_pipes(struct pirec_job *job, struct job_run *run, int nstdio, const int parent[S_COUNT])
{
  for (int s = 0; s < nstdio; s++) {
    int err;

    if (parent[s] < 0)
      continue;
    if (s == S_IN && job->o.stdin_splice) {
      if ((err = watch_stdin_splice(job, run, parent[s])) < 0)
        pirec_log(PIREC_LOG_ERROR, "job '%s': cannot watch fd 0 of pid %d: %s", job->name, run->pid,
                  pirec_strerror(err));
      continue;
    }
    uv_pipe_init(job->loop, &run->pipes[s], 0);
    run->pipes[s].data = run;
    run->pipe_open[s] = 1;
    run->handles++;
    if (s != S_IN)
      run->out_open++;
    err = uv_pipe_open(&run->pipes[s], parent[s]);
    if (err == 0 && s != S_IN)
      err = uv_read_start((uv_stream_t *)&run->pipes[s], on_alloc, on_read);
    if (err != 0) {
      /* Cannot watch this pipe: the child is up, so report the failure as its end. */
      pirec_log(PIREC_LOG_ERROR, "job '%s': cannot watch fd %d of pid %d: %s", job->name, s, run->pid,
                pirec_strerror(err));
      run_close_pipe(run, s);
    }
  }
}

static int run_spawn(struct pirec_job *job)
{
  struct job_run *run;
  uv_stdio_container_t stdio[S_COUNT];
  struct spawn_fds fds;
  int nstdio = job->o.progress_fd == 3 || job->o.lines_fd3 ? 4 : 3;
  int err;

  for (int s = 0; s < S_COUNT; s++)
    fds.child[s] = fds.parent[s] = -1;
  run = calloc(1, sizeof *run);
  if (!run)
    return -ENOMEM;
  run->job = job;
  if (pirec_spawner_running()) {
    if ((err = spawn_helper(job, run, nstdio, &fds)) != 0) {
      free(run);
      return err;
    }
  } else if ((err = setup_stdio(job, nstdio, stdio, &fds)) < 0) {
    free(run);
    return err;
  } else if ((err = spawn_child(job, run, stdio, nstdio, &fds)) != 0) {
    return err;
  }
  run_started(job, run);
  watch_pipes(job, run, nstdio, fds.parent);
  if (job->o.start_timeout_ms)
    timer_start(job, T_START, job->o.start_timeout_ms, on_start_timer);
  if (job->o.stall_timeout_ms)
    timer_start(job, T_STALL, job->o.stall_timeout_ms, on_stall_timer);
  return 0;
}

/* ---- public calls ---- */

static void start_common(struct pirec_job *job)
{
  job->runs = 0;
  job->failure_count = 0;
  job->failure_next = 0;
  job->last_spawn_error = 0;
  job->start_mono_ns = pirec_clock_mono_ns();
  job->stats.runs = 0;
  job->stats.restarts = 0;
}

int pirec_job_start(struct pirec_job *job)
{
  int err;

  if (job->freed || job->state != PIREC_JOB_IDLE)
    return -EBUSY;
  start_common(job);
  err = run_spawn(job);
  if (err != 0) {
    pirec_log(PIREC_LOG_ERROR, "job '%s': cannot start '%s': %s", job->name, job->argv[0],
              pirec_strerror(err));
    job->state = PIREC_JOB_IDLE;
    return err;
  }
  if (job->o.total_timeout_ms)
    timer_start(job, T_TOTAL, job->o.total_timeout_ms, on_total_timer);
  return 0;
}

int pirec_job_stop(struct pirec_job *job)
{
  switch (job->state) {
  case PIREC_JOB_IDLE: return -EINVAL;
  case PIREC_JOB_QUEUED:
    queue_detach(job);
    start_common(job);
    defer_end(job, PIREC_JOB_END_STOPPED);
    return 0;
  case PIREC_JOB_BACKOFF:
    timer_stop(job, T_BACKOFF);
    job->last_spawn_error = 0; /* result.error belongs to FAILED ends only */
    defer_end(job, PIREC_JOB_END_STOPPED);
    return 0;
  case PIREC_JOB_RUNNING: begin_stop(job, PIREC_JOB_END_STOPPED); return 0;
  case PIREC_JOB_STOPPING: return 0;
  }
  return -EINVAL;
}

void pirec_job_free(struct pirec_job *job)
{
  if (!job || job->freed)
    return;
  if (job->queue) {
    struct pirec_job_queue *q = job->queue;
    queue_detach(job);
    /* The freed job's slot is free now. */
    q->busy++;
    queue_pump(q);
    q->busy--;
    queue_release(q);
  }
  job->freed = 1;
  if (job->run) {
    struct job_run *run = job->run;
    if (!run->exited)
      kill_group(run, SIGKILL);
    /* The run closes itself once the child is reaped (so no zombie is left behind). */
    run_close_pipe(run, S_IN);
  }
  for (int i = 0; i < T_COUNT; i++) {
    uv_timer_stop(&job->timers[i]);
    uv_close((uv_handle_t *)&job->timers[i], on_timer_closed);
  }
}

int pirec_job_close_stdin(struct pirec_job *job)
{
  if (job->o.stdio[0].kind != PIREC_JOB_STDIO_PIPE)
    return -EINVAL;
  if (!job->run || job->run->exited)
    return -ENOTCONN;
  stdin_close(job->run);
  return 0;
}

static void on_write(uv_write_t *req, int status)
{
  struct job_write *w = container_of(req, struct job_write, req);
  struct job_run *run = w->run;
  struct pirec_job *job = run->job;

  run->outstanding -= w->len;
  if (job->run == run)
    job->stats.stdin_outstanding = run->outstanding;
  if (status == 0) {
    job->stats.stdin_bytes += w->len;
    if (!job->o.progress_fd)
      mark_activity(run);
  } else if (status != UV_ECANCELED && job->run == run && run->pipe_open[S_IN]) {
    /* EPIPE: the child closed its stdin. Stop offering; the run ends when the child exits. */
    run_close_pipe(run, S_IN);
  }
  if (w->release)
    w->release(job, w->arg, status);
  else {
    /* in-order completion: this write's bytes are the oldest in the arena */
    job->arena_head = (job->arena_head + w->len) % job->o.stdin_max_outstanding;
    job->arena_used -= w->len;
    if (job->arena_used == 0)
      job->arena_head = 0;
  }
  w->next_free = job->write_free;
  job->write_free = w;
  if (job->run == run && !job->freed && job->o.on_drain)
    job->o.on_drain(job, run->outstanding);
}

/* Why an offer of len bytes cannot be taken now (a negative errno), or 0. */
static int write_refusal(struct pirec_job *job, size_t len)
{
  struct job_run *run = job->run;

  if (job->o.stdio[0].kind != PIREC_JOB_STDIO_PIPE)
    return -EINVAL;
  if (!run || run->exited || job->freed)
    return -ENOTCONN;
  if (!run->pipe_open[S_IN] || run->stdin_closing)
    return -EPIPE;
  if (len > job->o.stdin_max_outstanding)
    return -EMSGSIZE;
  if (run->outstanding + len > job->o.stdin_max_outstanding)
    return -ENOBUFS;
  return 0;
}

/* Copy path, nothing queued: hands the bytes straight to the pipe, so only what does not fit is
 * copied, which saves the copy for most bytes when the child keeps up. Order is kept because
 * nothing of ours is waiting in the stream. Returns the bytes written, or a negative errno. */
static ssize_t write_direct(struct pirec_job *job, struct job_run *run, const uv_buf_t bufs[], unsigned nbufs)
{
  int n = uv_try_write((uv_stream_t *)&run->pipes[S_IN], bufs, nbufs);

  if (n == UV_EAGAIN)
    return 0;
  if (n < 0) {
    run_close_pipe(run, S_IN); /* EPIPE: the child closed its stdin */
    return n;
  }
  job->stats.stdin_bytes += (size_t)n;
  if (n > 0 && !job->o.progress_fd)
    mark_activity(run);
  return n;
}

/* Copies the offer, minus its first skip bytes, to the end of the stdin arena (a ring, so it may
 * wrap) and describes the copy in out[]; returns how many of out[] it used. */
static unsigned arena_copy(struct pirec_job *job, const uv_buf_t bufs[], unsigned nbufs, size_t skip,
                           size_t len, uv_buf_t out[2])
{
  size_t cap = job->o.stdin_max_outstanding;
  size_t start = (job->arena_head + job->arena_used) % cap;
  size_t pos = start;

  for (unsigned i = 0; i < nbufs; i++) {
    const char *src = bufs[i].base;
    size_t n = bufs[i].len;
    if (skip >= n) {
      skip -= n;
      continue;
    }
    src += skip;
    n -= skip;
    skip = 0;
    while (n > 0) {
      size_t k = cap - pos < n ? cap - pos : n;
      memcpy(job->arena + pos, src, k);
      src += k;
      n -= k;
      pos = (pos + k) % cap;
    }
  }
  size_t first = cap - start < len ? cap - start : len;
  out[0] = uv_buf_init(job->arena + start, (unsigned)first);
  out[1] = uv_buf_init(job->arena, (unsigned)(len - first));
  return len > first ? 2 : 1;
}

/* A write request from the free list, or a new one; NULL when out of memory. */
static struct job_write *write_req(struct pirec_job *job)
{
  struct job_write *w = job->write_free;

  if (w)
    job->write_free = w->next_free;
  else
    w = malloc(sizeof *w);
  return w;
}

static void note_queued(struct pirec_job *job, struct job_run *run, size_t len)
{
  run->outstanding += len;
  job->stats.stdin_outstanding = run->outstanding;
  if (run->outstanding > job->stats.stdin_outstanding_max)
    job->stats.stdin_outstanding_max = run->outstanding;
}

/* Queues the offer (bytes from `direct` on) with uv_write: borrowed as they are, or copied into
 * the arena. */
static int write_queue(struct pirec_job *job, struct job_run *run, const uv_buf_t bufs[], unsigned nbufs,
                       size_t direct, size_t len, pirec_job_release_cb release, void *arg)
{
  struct job_write *w = write_req(job);
  int err;

  if (!w)
    return -ENOMEM;
  w->run = run;
  w->len = len - direct;
  w->release = release;
  w->arg = arg;
  if (release) {
    err = uv_write(&w->req, (uv_stream_t *)&run->pipes[S_IN], bufs, nbufs, on_write);
  } else {
    uv_buf_t b[2];
    unsigned nb = arena_copy(job, bufs, nbufs, direct, w->len, b);
    err = uv_write(&w->req, (uv_stream_t *)&run->pipes[S_IN], b, nb, on_write);
    if (err == 0)
      job->arena_used += w->len;
  }
  if (err != 0) {
    /* Only when the child just closed its stdin; a part sent by uv_try_write is lost with it. */
    w->next_free = job->write_free;
    job->write_free = w;
    return err;
  }
  note_queued(job, run, w->len);
  return 0;
}

/* The splice path (stdin_splice): borrowed offers only, since a copy would have to live until the
 * child reads it, which the arena's in-order reuse does not know. */
static int write_splice(struct pirec_job *job, struct job_run *run, const uv_buf_t bufs[], unsigned nbufs,
                        size_t len, pirec_job_release_cb release, void *arg)
{
  int err;

  if (!release)
    return -EINVAL;
  if ((err = pirec__splice_feed_write(&run->feed, bufs, nbufs, (pirec__splice_fn)release, arg)) < 0)
    return err;
  note_queued(job, run, len);
  return 0;
}

/* The libuv pipe path: straight into the pipe while nothing is queued, the rest queued borrowed
 * or copied into the arena. */
static int write_pipe(struct pirec_job *job, struct job_run *run, const uv_buf_t bufs[], unsigned nbufs,
                      size_t len, pirec_job_release_cb release, void *arg)
{
  ssize_t direct = 0;

  if (!release && !job->arena && !(job->arena = malloc(job->o.stdin_max_outstanding)))
    return -ENOMEM;
  /* Writes of an ended run still waiting for their cancellation hold arena bytes too. */
  if (!release && job->arena_used + len > job->o.stdin_max_outstanding)
    return -ENOBUFS;
  if (!release && run->outstanding == 0 && (direct = write_direct(job, run, bufs, nbufs)) < 0)
    return (int)direct;
  if ((size_t)direct < len)
    return write_queue(job, run, bufs, nbufs, (size_t)direct, len, release, arg);
  return 0;
}

static int write_common(struct pirec_job *job, const uv_buf_t bufs[], unsigned nbufs,
                        pirec_job_release_cb release, void *arg)
{
  struct job_run *run = job->run;
  size_t len = 0;
  int err;

  for (unsigned i = 0; i < nbufs; i++)
    len += bufs[i].len;
  err = write_refusal(job, len);
  if (err == 0 && len == 0)
    return 0;
  if (err == 0)
    err = run->splice_in ? write_splice(job, run, bufs, nbufs, len, release, arg)
                         : write_pipe(job, run, bufs, nbufs, len, release, arg);
  if (err != 0) {
    job->stats.stdin_refused++;
    job->stats.stdin_refused_bytes += len;
    return err;
  }
  job->stats.stdin_writes++;
  return 0;
}

int pirec_job_write(struct pirec_job *job, const uv_buf_t bufs[], unsigned nbufs)
{
  return write_common(job, bufs, nbufs, NULL, NULL);
}

int pirec_job_write_borrowed(struct pirec_job *job, const uv_buf_t bufs[], unsigned nbufs,
                             pirec_job_release_cb release, void *arg)
{
  if (!release)
    return -EINVAL;
  return write_common(job, bufs, nbufs, release, arg);
}

int pirec_job_set_argv(struct pirec_job *job, const char *const *argv)
{
  char **v;

  if (!argv || !argv[0] || !argv[0][0])
    return -EINVAL;
  if (job->run)
    return -EBUSY;
  v = dup_vec(argv);
  if (!v)
    return -ENOMEM;
  free_vec(job->argv);
  job->argv = v;
  return 0;
}

void pirec_job_stats(const struct pirec_job *job, struct pirec_job_stats *out)
{
  *out = job->stats;
  out->state = job->state;
}

const char *pirec_job_name(const struct pirec_job *job)
{
  return job->name;
}

void *pirec_job_user(const struct pirec_job *job)
{
  return job->o.user;
}

/* ---- queue ---- */

static void list_push(struct pirec_job **head, struct pirec_job **tail, struct pirec_job *job)
{
  job->queue_prev = *tail;
  job->queue_next = NULL;
  if (*tail)
    (*tail)->queue_next = job;
  else
    *head = job;
  *tail = job;
}

static void list_remove(struct pirec_job **head, struct pirec_job **tail, struct pirec_job *job)
{
  if (job->queue_prev)
    job->queue_prev->queue_next = job->queue_next;
  else
    *head = job->queue_next;
  if (job->queue_next)
    job->queue_next->queue_prev = job->queue_prev;
  else
    *tail = job->queue_prev;
  job->queue_prev = job->queue_next = NULL;
}

/* Takes the job out of its queue's lists and clears its membership. */
static void queue_detach(struct pirec_job *job)
{
  struct pirec_job_queue *q = job->queue;

  if (!q)
    return;
  if (job->queue_running) {
    list_remove(&q->run_head, &q->run_tail, job);
    q->running--;
  } else {
    list_remove(&q->head, &q->tail, job);
    q->waiting--;
  }
  job->queue = NULL;
  job->queue_running = 0;
}

int pirec_job_queue_new(uv_loop_t *loop, unsigned max_running, struct pirec_job_queue **out)
{
  struct pirec_job_queue *q;

  *out = NULL;
  if (!loop || max_running == 0)
    return -EINVAL;
  q = calloc(1, sizeof *q);
  if (!q)
    return -ENOMEM;
  q->loop = loop;
  q->max_running = max_running;
  *out = q;
  return 0;
}

static int queue_start(struct pirec_job_queue *q, struct pirec_job *job)
{
  int err = pirec_job_start(job);
  if (err != 0)
    return err;
  job->queue = q;
  job->queue_running = 1;
  list_push(&q->run_head, &q->run_tail, job);
  q->running++;
  return 0;
}

static void queue_pump(struct pirec_job_queue *q)
{
  while (!q->dead && q->running < q->max_running && q->head) {
    struct pirec_job *job = q->head;
    int err;

    queue_detach(job);
    job->state = PIREC_JOB_IDLE;
    err = queue_start(q, job);
    if (err != 0) {
      /* Its turn came from a callback or a free, so the failure is reported as the job's end. */
      job->last_spawn_error = err;
      job->runs = 0;
      defer_end(job, PIREC_JOB_END_FAILED);
    }
  }
}

static void queue_release(struct pirec_job_queue *q)
{
  if (q->dead && q->busy == 0)
    free(q);
}

int pirec_job_queue_add(struct pirec_job_queue *q, struct pirec_job *job)
{
  if (q->dead || job->freed || job->state != PIREC_JOB_IDLE || job->queue)
    return -EBUSY;
  if (q->running < q->max_running && !q->head)
    return queue_start(q, job);
  job->queue = q;
  job->queue_running = 0;
  list_push(&q->head, &q->tail, job);
  q->waiting++;
  job->state = PIREC_JOB_QUEUED;
  return 0;
}

void pirec_job_queue_free(struct pirec_job_queue *q)
{
  if (!q || q->dead)
    return;
  q->dead = 1;
  q->busy++;
  while (q->head) {
    struct pirec_job *job = q->head;
    queue_detach(job);
    start_common(job);
    job->last_spawn_error = 0;
    defer_end(job, PIREC_JOB_END_STOPPED);
  }
  /* Detach the running jobs before stopping them, so their ends never touch the freed queue. */
  while (q->run_head) {
    struct pirec_job *job = q->run_head;
    queue_detach(job);
    pirec_job_stop(job);
  }
  q->busy--;
  queue_release(q);
}

void pirec_job_queue_counts(const struct pirec_job_queue *q, unsigned *running, unsigned *waiting)
{
  if (running)
    *running = q->running;
  if (waiting)
    *waiting = q->waiting;
}
