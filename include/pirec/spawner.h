#ifndef PIREC_SPAWNER_H
#define PIREC_SPAWNER_H

/* The spawn helper: a small process, forked once at the very start of a program, that creates
 * every child process of pirec_job on the loop's behalf.
 *
 * Why: fork() copies the page tables of every mapping of the process that calls it, and libuv's
 * uv_spawn forks and then waits for the child's exec. From a recorder holding hundreds of MiB of
 * ring arenas that cost milliseconds of loop time per child (docs/PERFORMANCE.md, "spawn"). The
 * helper is forked before any arena, thread or large allocation exists, so its own forks are
 * cheap, and the loop only hands it a request over a non-blocking socket and goes on; the pid,
 * an exec failure and later the exit status come back as messages the loop reads when they arrive.
 *
 * Lifecycle
 *   1. pirec_spawner_start() first thing in main(), before threads, arenas and the loop.
 *   2. From then on every pirec_job of the process spawns through the helper (each job gets its
 *      own socket to it, so jobs on loops in different threads stay independent).
 *   3. Nothing to stop: when the program ends (exit, crash, SIGKILL) the helper sees its socket
 *      close and stops the children still running the way pirec_job_stop() would: their stdin
 *      pipes are already closed by the kernel, after each job's stop_term_ms it sends SIGTERM to
 *      the child's process group, after stop_kill_ms SIGKILL, then it exits. An encoder thus gets
 *      the chance to finish its file instead of losing the open GOP to an immediate SIGKILL.
 *      The helper ignores SIGINT, SIGTERM and SIGHUP (a terminal's Ctrl-C or systemd's stop reach
 *      the program, which stops its children in order); if the helper itself is killed, its
 *      children get SIGKILL from the kernel (PR_SET_PDEATHSIG).
 *
 * Without pirec_spawner_start() (libraries used on their own, most unit tests) pirec_job spawns
 * with uv_spawn as before.
 *
 * Threads: pirec_spawner_start() on the main thread before any other; the rest is internal. */

/* Forks the helper. Returns 0, or a negative errno (socketpair, fork); then jobs use uv_spawn.
 * A second call is a no-op returning 0. The helper keeps no fd of the program but its socket:
 * its stdin, stdout and stderr are /dev/null (a job that inherits stdio gets the program's
 * current fds passed along). A job without its own env gets the environment the program had when
 * the helper was forked: a setenv() afterwards is not seen by children (pass env instead). */
int pirec_spawner_start(void);

/* 1 when the helper was started and its socket is still open, else 0. */
int pirec_spawner_running(void);

/* The helper's pid, or 0 (tests). */
int pirec_spawner_pid(void);

#endif
