#ifndef PIREC_JOB_H
#define PIREC_JOB_H

/* Supervised child jobs on libuv: one child process (ffmpeg, pirec-remux, rpicam-vid, ...) run
 * from the loop with bounded stdin, drained output, timeouts, stop escalation and restarts.
 *
 * Lifecycle
 *   1. pirec_job_options_init(&o), fill in argv and what you need.
 *   2. pirec_job_new(loop, &o, &job): copies everything it needs out of o (argv, env, cwd, name,
 *      paths); o and its strings may be freed right after. No process yet.
 *   3. pirec_job_start(job): spawns the child now. An exec failure (program missing: -ENOENT, not
 *      executable: -EACCES, bad cwd, ...) is returned here, synchronously, and then NO callback runs
 *      for this start. (A job handed to a pirec_job_queue is one exception, see below.)
 *      With the spawn helper running (pirec/spawner.h: the programs start it in main) the start
 *      only hands the request over and never waits for the child: an exec failure then arrives
 *      through on_end as PIREC_JOB_END_FAILED with result.error the same -ENOENT/-EACCES/...,
 *      status -1 and runs 0 (a stdio file that cannot be opened likewise, logged with its path).
 *      Only errors made on our side (pipes, the request itself) are returned synchronously. The
 *      pid (pirec_job_stats, on_spawn for restarts) is known once the helper answers.
 *   4. While it runs: pirec_job_write*() feed stdin, callbacks report lines, progress, binary
 *      stdout (on_stdout) and drained writes; pirec_job_close_stdin() signals end of input; pirec_job_stop() asks it to end.
 *   5. on_end runs exactly once per successful start, when the job is over for good (after the
 *      last restart, if restarts are enabled). The job is then idle: it may be started again or
 *      freed, also from inside on_end.
 *   6. pirec_job_free(job): a running child is SIGKILLed at once (its whole process group) and no
 *      further callback runs, not even on_end. The memory is released once libuv has closed the
 *      job's handles, so run the loop at least once more before uv_loop_close().
 *
 * Threads: every function here is called on the thread running the job's loop, and every callback
 * runs on that thread, never inside a call to this API (a stop that ends a job at once reports
 * on_end from the next loop iteration). Data from a capture thread reaches a job through a ring
 * buffer drained on the loop. Jobs on different loops in different threads are independent.
 *
 * Exit status: reported as a shell's $?: the exit code, or 128 + signal number when a signal killed
 * the child, together with the reason the job ended (enum pirec_job_end).
 *
 * Children never outlive the supervisor. Through the spawn helper (the programs' case), the
 * helper is the children's parent: it sends the stop escalation's signals on the job's request,
 * reaps them and reports their exit; when the supervisor dies in any way it stops the children
 * as pirec_job_stop() would (stdin EOF, SIGTERM after stop_term_ms, SIGKILL after stop_kill_ms),
 * so an encoder can finish its file; and each child has PR_SET_PDEATHSIG(SIGKILL) for the helper.
 * Without the helper (uv_spawn):
 *   - Each child runs in its own session and process group (UV_PROCESS_DETACHED), so a terminal's
 *     Ctrl-C reaches only the supervisor, which then stops its children in order; the stop
 *     escalation signals the whole group (shell wrappers and their children included).
 *   - Each child gets PR_SET_PDEATHSIG(SIGKILL) before exec, so it is killed by the kernel when the
 *     supervisor dies in any way, SIGKILL included. uv_spawn has no pre-exec hook; the setting is
 *     made by a pthread_atfork() child handler that acts only in a fork made by pirec_job's own
 *     uv_spawn call (a thread-local flag), and it also checks getppid() so a supervisor that died
 *     during the fork is caught. This relies on libuv spawning with fork() on Linux (true through
 *     libuv 1.4x; tests/test-job.c "orphans" checks it). Two kernel rules to know: the signal fires
 *     when the *thread* that spawned the child exits, so run the loop on a thread that lives as long
 *     as its jobs; and only the direct child is covered, not grandchildren of a wrapper script.
 *   - pirec_job_free() on a running job SIGKILLs its group.
 *
 * SIGPIPE: the first pirec_job_new() sets SIGPIPE to ignored if it is at its default, because a
 * write to a dead child's stdin would otherwise kill the supervisor. (Children get the default
 * back before exec.)
 *
 * Errors are negative errno values; pirec_strerror() prints them. Logging: each stop escalation
 * step, timeout, restart and give-up is logged once with pirec_log() and the job's name.
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pirec_job;
struct pirec_job_queue;

/* ---- options ---- */

enum pirec_job_stdio_kind {
  PIREC_JOB_STDIO_NULL = 0, /* /dev/null (the default for all three) */
  PIREC_JOB_STDIO_INHERIT,  /* the supervisor's own fd */
  PIREC_JOB_STDIO_PIPE,     /* a pipe to the job: stdin fed by pirec_job_write*, output drained */
  PIREC_JOB_STDIO_FILE,     /* a file: stdin reads it; stdout/stderr create or truncate it */
};

struct pirec_job_stdio {
  enum pirec_job_stdio_kind kind;
  const char *path; /* PIREC_JOB_STDIO_FILE only; opened by pirec_job_start() for each run */
  int append;       /* stdout/stderr files: append instead of truncate */
};

enum pirec_job_restart_mode {
  PIREC_JOB_RESTART_NEVER = 0,
  /* Restart after a failed run: exit code != 0, death by signal, start or stall timeout. */
  PIREC_JOB_RESTART_ON_FAILURE,
  /* Also restart after exit code 0 (a job that should never end by itself, like an encoder). */
  PIREC_JOB_RESTART_ALWAYS,
};

/* Restart policy. A run that ends unexpectedly (see mode) is a failure. Before restart number n
 * (n = failures inside the current window) the job waits
 *   min(backoff_initial_ms * 2^(n-1), backoff_max_ms), scaled by a random factor in
 *   [1 - jitter_pct/100, 1 + jitter_pct/100],
 * unless that is the max_failures-th failure within window_ms: then the circuit breaker opens, no
 * restart happens and the job ends with PIREC_JOB_END_FAILED. A run that lasted longer than
 * window_ms starts a fresh window (the backoff goes back to backoff_initial_ms).
 * A stop request or the total timeout never restarts. */
struct pirec_job_restart {
  enum pirec_job_restart_mode mode;
  uint32_t backoff_initial_ms; /* default 200 */
  uint32_t backoff_max_ms;     /* default 10000 */
  uint32_t jitter_pct;         /* 0..100, default 20 */
  uint32_t max_failures;       /* K, default 5; 1 = never restart, just report FAILED */
  uint32_t window_ms;          /* default 60000 */
};

/* One ffmpeg "-progress" report (a block of key=value lines ending with "progress=..."). Fields the
 * block did not contain are -1 (speed: a negative value). */
struct pirec_job_progress {
  int64_t frame;       /* "frame" */
  int64_t out_time_us; /* "out_time_us", else "out_time_ms" (which ffmpeg also gives in us) */
  double speed;        /* "speed", e.g. 1.02 for "1.02x"; < 0 when "N/A" or missing */
  int64_t total_size;  /* "total_size" in bytes */
  int end;             /* 1 for "progress=end" (ffmpeg's last report), else 0 */
};

/* How a job ended. */
enum pirec_job_end {
  PIREC_JOB_END_EXITED = 0,    /* the child ended by itself (any code or signal), no restart due */
  PIREC_JOB_END_STOPPED,       /* pirec_job_stop() (or a queue stopping it) */
  PIREC_JOB_END_TIMEOUT_START, /* no output within start_timeout_ms (and no restart due) */
  PIREC_JOB_END_TIMEOUT_STALL, /* no progress within stall_timeout_ms (and no restart due) */
  PIREC_JOB_END_TIMEOUT_TOTAL, /* ran longer than total_timeout_ms */
  PIREC_JOB_END_FAILED,        /* restarts given up (circuit breaker), or a restart / queued
                                   start could not spawn (see result.error) */
};

struct pirec_job_result {
  enum pirec_job_end reason;
  /* Of the last run: $? as a shell reports it (0..255 exit code, or 128 + signal), -1 if the last
   * attempt never ran (spawn failed). */
  int status;
  int exit_code;         /* -1 when a signal killed it or it never ran */
  int term_signal;       /* 0 unless a signal killed it */
  int error;             /* 0, or the negative errno of the spawn that failed (PIREC_JOB_END_FAILED) */
  uint32_t runs;         /* children spawned since pirec_job_start() */
  int64_t start_mono_ns; /* pirec_job_start() */
  int64_t end_mono_ns;   /* the end of the last run */
  /* The last bytes the last run wrote to stderr (PIREC_JOB_STDIO_PIPE only, else empty), up to
   * stderr_tail_bytes, NUL-terminated. Valid only during the callback. */
  const char *stderr_tail;
  size_t stderr_tail_len;
};

typedef void (*pirec_job_end_cb)(struct pirec_job *job, const struct pirec_job_result *result);
/* One line of output without its '\n' (a trailing '\r' is removed too), NUL-terminated, valid only
 * during the callback. fd is 1, 2, or 3 (lines_fd3). Lines longer than line_max arrive in
 * line_max-sized pieces. Lines of the progress stream go to on_progress instead, and stdout goes
 * to on_stdout instead when that is set. */
typedef void (*pirec_job_line_cb)(struct pirec_job *job, int fd, const char *line, size_t len);
typedef void (*pirec_job_progress_cb)(struct pirec_job *job, const struct pirec_job_progress *p);
/* Raw bytes the child wrote to its stdout (a binary stream such as an encoder's output), in order,
 * cut wherever a read happened to end: one call may hold several of the child's writes or part of
 * one, and NUL bytes are data like any other.
 *   - Ownership and lifetime: data is the job's own read buffer, valid only during the call; copy
 *     what you keep. len > 0.
 *   - When it runs: on the loop thread, never inside a call to this API, only for the job's
 *     current run and never after pirec_job_free(). It does run after pirec_job_stop(): what the
 *     child writes until it exits is still delivered, and all of a run's bytes are delivered
 *     before on_restart or on_end reports that run (unless a grandchild kept the pipe open past
 *     the exit; see the EOF grace in job.c, which drops the rest).
 *   - Back-pressure: none inside the job. Bytes are read as fast as the loop turns; a callback
 *     that takes long slows the loop, the kernel pipe fills, and the child then blocks in write().
 * Setting it needs stdio[1] PIREC_JOB_STDIO_PIPE and progress_fd != 1; on_line then sees no fd 1. */
typedef void (*pirec_job_stdout_cb)(struct pirec_job *job, const uint8_t *data, size_t len);
/* A queued stdin write completed; outstanding is the number of bytes still queued. A write that
 * went into the pipe whole at once (see pirec_job_write) completes without this callback, but a
 * caller refused with -ENOBUFS always gets one later (something was queued), so "offer until
 * -ENOBUFS, then offer again from on_drain" never stalls. */
typedef void (*pirec_job_drain_cb)(struct pirec_job *job, size_t outstanding);
/* A run ended unexpectedly and the job restarts after delay_ms. run describes the ended run
 * (reason is the would-be end reason; stderr_tail valid during the call). Until the new child is up,
 * stdin writes fail with -ENOTCONN. The callback may call pirec_job_set_argv(), e.g. to write the
 * next run to a new output file. */
typedef void (*pirec_job_restart_cb)(struct pirec_job *job, const struct pirec_job_result *run,
                                     uint32_t attempt, uint64_t delay_ms);
/* An automatic restart spawned a new child (not called for pirec_job_start()'s own spawn). */
typedef void (*pirec_job_spawn_cb)(struct pirec_job *job, int pid);

struct pirec_job_options {
  /* argv[0] is the program; without a '/' it is searched in PATH (of env when given). NULL-
   * terminated; copied. Required. */
  const char *const *argv;
  const char *const *env; /* "KEY=value" entries, NULL-terminated; NULL inherits ours. Copied. */
  const char *cwd;        /* NULL: ours. Copied. */
  const char *name;       /* for logs, e.g. "camera0 encoder"; NULL: argv[0]. Copied. */

  struct pirec_job_stdio stdio[3]; /* stdin, stdout, stderr */

  /* Where ffmpeg's "-progress pipe:N" output is read: 0 none; 1 or 2 the stdout or stderr pipe
   * (which must be PIREC_JOB_STDIO_PIPE); 3 an extra pipe given to the child as fd 3, so
   * "-progress pipe:3" leaves stdout and stderr free. */
  int progress_fd;
  /* 1: give the child an extra pipe as fd 3 whose lines go to on_line with fd 3 (a side channel
   * such as rpicam-vid's "--metadata /proc/self/fd/3"). Not together with progress_fd 3. */
  int lines_fd3;

  size_t stdin_max_outstanding; /* bytes queued in uv_write at most; default 4 MiB */
  size_t stdin_pipe_size;       /* F_SETPIPE_SZ on the stdin pipe (EPERM ignored); 0: 1 MiB; set
                             SIZE_MAX to keep the kernel default */
  /* 1: feed stdin with vmsplice(2) instead of write(2): the pipe references the caller's pages and
   * the child's read is the only copy (no copy into the pipe, no fresh pipe pages). Only
   * pirec_job_write_borrowed() is allowed (pirec_job_write() says -EINVAL), and its buffers must
   * stay unchanged until release runs, which is when the child has read them (the pipe's fill level
   * says so), or when the child has exited; outstanding bytes are those not yet released. A
   * buffer written to before release corrupts what the child reads. */
  int stdin_splice;
  size_t stderr_tail_bytes; /* default 8192 */
  size_t line_max;          /* default 4096 */

  /* Timeouts in ms, 0 = off. start: from spawn until the first byte on any output pipe (stdout,
   * stderr or progress); needs at least one of them piped. stall: longest gap between two progress
   * reports when progress_fd is set, else between output bytes or completed stdin writes; counted
   * from spawn. total: from pirec_job_start() across restarts; ends the job without restart.
   * The start and stall timeouts end a run like a failure (restarted if the policy says so). */
  uint32_t start_timeout_ms;
  uint32_t stall_timeout_ms;
  uint32_t total_timeout_ms;

  /* Stop escalation (pirec_job_stop() and every timeout): close stdin (pending writes are still
   * delivered if the child reads them), wait stop_term_ms, SIGTERM the process group, wait
   * stop_kill_ms, SIGKILL it. Without a stdin pipe the SIGTERM is immediate. Defaults 2000, 2000. */
  uint32_t stop_term_ms;
  uint32_t stop_kill_ms;

  struct pirec_job_restart restart;

  pirec_job_end_cb on_end;           /* may be NULL */
  pirec_job_line_cb on_line;         /* may be NULL: lines are dropped (stderr tail still kept) */
  pirec_job_stdout_cb on_stdout;     /* may be NULL: stdout is cut into lines for on_line */
  pirec_job_progress_cb on_progress; /* may be NULL */
  pirec_job_drain_cb on_drain;       /* may be NULL */
  pirec_job_restart_cb on_restart;   /* may be NULL */
  pirec_job_spawn_cb on_spawn;       /* may be NULL */
  void *user;                        /* returned by pirec_job_user() */
};

/* Fills o with the defaults above (all stdio /dev/null, no timeouts, no restarts). */
void pirec_job_options_init(struct pirec_job_options *o);

/* ---- the job ---- */

/* Creates an idle job. Returns 0 and *out, -EINVAL (no argv, progress_fd or start timeout without
 * the pipe it needs, FILE without path), -ENOMEM. */
int pirec_job_new(uv_loop_t *loop, const struct pirec_job_options *o, struct pirec_job **out);

/* See lifecycle 6. NULL is a no-op. Safe inside any of the job's callbacks. */
void pirec_job_free(struct pirec_job *job);

/* Spawns the child. 0 on success (on_end will run exactly once); else a negative errno and no
 * callback: -EBUSY (already started and not ended), -ENOENT / -EACCES / ... from exec, or the
 * error opening a stdio file (also -ENOENT etc.; logged with the path). */
int pirec_job_start(struct pirec_job *job);

/* Begins the stop escalation; on_end reports PIREC_JOB_END_STOPPED with the child's status (0 when
 * it finished by itself within stop_term_ms, e.g. ffmpeg closing its file after stdin closed;
 * stdin already closed by pirec_job_close_stdin() still gets the stop_term_ms wait). A job
 * waiting to restart or waiting in a queue ends without a child (status -1) on the next loop
 * iteration. Returns 0, also when already stopping; -EINVAL when the job is idle. */
int pirec_job_stop(struct pirec_job *job);

/* End of input: once every accepted write is delivered, the stdin pipe is closed (ffmpeg then
 * finishes the file and exits). Later writes fail with -EPIPE. Returns 0, or -EINVAL when stdin is
 * not a pipe, -ENOTCONN when no child runs. */
int pirec_job_close_stdin(struct pirec_job *job);

/* Offers bytes to the child's stdin; all of the buffers are taken or none, and the caller's memory
 * is free again when this returns. When nothing is queued the bytes go straight into the pipe as
 * far as they fit (uv_try_write); the rest is copied into a per-job arena of
 * stdin_max_outstanding bytes (allocated on the first write, reused, no allocation per write), so
 * memory never grows with a slow child. Bytes are delivered in the order offered.
 * Returns 0, or without taking anything:
 *   -ENOBUFS  outstanding + len would pass stdin_max_outstanding: count a drop and go on
 *   -EMSGSIZE len alone exceeds stdin_max_outstanding
 *   -ENOTCONN no child runs (not started, waiting to restart, ended)
 *   -EPIPE    stdin is closed (close_stdin, stop, or the child closed its end)
 *   -EINVAL   stdin is not a pipe */
int pirec_job_write(struct pirec_job *job, const uv_buf_t bufs[], unsigned nbufs);

/* The same without copying: the caller keeps the buffers' memory valid and unchanged until
 * release(job, arg, status) runs, exactly once, when the write completed (status 0; with
 * stdin_splice: when the child has read the bytes, at most 4 buffers per call) or failed or was
 * discarded because the child went away or the job was stopped (negative errno). release runs on
 * the loop, never inside this call, and also runs (status -ECANCELED) for writes still pending when
 * pirec_job_free() is called. On a nonzero return release is never called. */
typedef void (*pirec_job_release_cb)(struct pirec_job *job, void *arg, int status);
int pirec_job_write_borrowed(struct pirec_job *job, const uv_buf_t bufs[], unsigned nbufs,
                             pirec_job_release_cb release, void *arg);

/* Replaces argv (copied) for the next spawn: allowed while idle or waiting to restart (e.g. in
 * on_restart); -EBUSY while a child runs; -EINVAL for an empty argv; -ENOMEM. */
int pirec_job_set_argv(struct pirec_job *job, const char *const *argv);

enum pirec_job_state {
  PIREC_JOB_IDLE = 0, /* never started, or ended */
  PIREC_JOB_QUEUED,   /* waiting for a slot in a pirec_job_queue */
  PIREC_JOB_RUNNING,
  PIREC_JOB_STOPPING, /* stop escalation in progress */
  PIREC_JOB_BACKOFF,  /* waiting to restart */
};

struct pirec_job_stats {
  enum pirec_job_state state;
  int pid;                /* 0 when no child runs */
  uint32_t runs;          /* children spawned since the last pirec_job_start() */
  uint32_t restarts;      /* runs - 1, when > 0 */
  uint64_t stdin_bytes;   /* bytes delivered to the pipe (completed writes) */
  uint64_t stdin_writes;  /* offers accepted */
  uint64_t stdin_refused; /* offers refused (any error) */
  uint64_t stdin_refused_bytes;
  size_t stdin_outstanding;     /* bytes queued now */
  size_t stdin_outstanding_max; /* high-water mark of stdin_outstanding */
  uint64_t stdout_bytes;
  uint64_t stderr_bytes;
  struct pirec_job_progress last_progress; /* all -1 before the first report */
  int64_t last_activity_mono_ns;           /* what the stall timeout watches */
};

/* Counters accumulate over the job's life (not reset by restarts or a new start), except state,
 * pid, runs and the outstanding fields. */
void pirec_job_stats(const struct pirec_job *job, struct pirec_job_stats *out);

const char *pirec_job_name(const struct pirec_job *job);
void *pirec_job_user(const struct pirec_job *job);
/* "exited", "stopped", "start timeout", "stall timeout", "total timeout", "failed". */
const char *pirec_job_end_str(enum pirec_job_end reason);
/* How the run in r ended, for a person, into buf (cap bytes, always NUL-terminated): "exited with
 * status 1", "killed by signal 9 (Killed)" -- never a signal disguised as status 128 + N --, after
 * the end reason when it says more ("stall timeout: killed by signal 9 (Killed)"), or "never ran:
 * <error>" when the spawn failed. Returns buf. */
const char *pirec_job_result_str(const struct pirec_job_result *r, char *buf, size_t cap);

/* ---- a queue with a concurrency limit ----
 * Jobs added to a queue are started in order, at most max_running at a time; each job still
 * reports through its own on_end, after which the queue starts the next one. The queue never owns
 * the jobs: freeing a job removes it from its queue. */

/* Returns 0 and *out, -EINVAL (max_running 0), -ENOMEM. */
int pirec_job_queue_new(uv_loop_t *loop, unsigned max_running, struct pirec_job_queue **out);

/* Adds an idle job. When a slot is free it is started at once and a spawn failure is returned
 * here with no callback (the job is not queued). Otherwise it waits (state PIREC_JOB_QUEUED), and
 * a spawn failure when its turn comes is reported through on_end as PIREC_JOB_END_FAILED with
 * result.error set. Returns 0, -EBUSY (job not idle), or a spawn error. */
int pirec_job_queue_add(struct pirec_job_queue *queue, struct pirec_job *job);

/* Stops every running job of the queue (pirec_job_stop) and ends every waiting one with
 * PIREC_JOB_END_STOPPED (status -1, on the next loop iteration), then frees the queue at once.
 * The jobs stay the caller's. NULL is a no-op. */
void pirec_job_queue_free(struct pirec_job_queue *queue);

/* Jobs running and waiting now. */
void pirec_job_queue_counts(const struct pirec_job_queue *queue, unsigned *running, unsigned *waiting);

#endif
