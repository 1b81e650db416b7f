#ifndef PIREC_APPS_RUN_H
#define PIREC_APPS_RUN_H

/* What every recorder main does around its module, written once (apps/run.c, linked by the recorder
 * executables only): the stop signals through uv_signal_t, an optional --duration timer, running
 * the loop to its end and turning the outcome into the exit status.
 *
 * Lifecycle:
 *   1. run_watch(): SIGINT, SIGTERM and (when seconds > 0) a timer each call on_stop, once: the
 *      first of them wins and later ones are swallowed while the app stops.
 *   2. The app stops its module and calls run_unwatch() when it no longer wants the signals (at
 *      once, or only after its module has closed so that a second Ctrl-C cannot cut the stop
 *      short). run_unwatch() may be called more than once, and without run_watch() (a no-op).
 *   3. run_exit() runs the loop until every handle is closed and closes it.
 *
 * Threads: the loop's thread only. */

#include <uv.h>

#include "pirec/recorder.h"

struct run {
  uv_loop_t *loop;
  uv_signal_t sigint, sigterm;
  uv_timer_t duration;
  int watching; /* the three handles are open */
  int stopped;  /* on_stop has been called */
  void (*on_stop)(struct run *run);
};

/* Starts the spawn helper (pirec/spawner.h): call first thing after the options are parsed, before
 * the loop, threads and arenas exist, so that starting a child never forks the grown recorder from
 * its loop. On failure says "PROG: cannot start the spawn helper: ..." on stderr and goes on
 * (children are then forked from the loop, as with uv_spawn). */
void run_spawner_start(const char *prog);

/* Starts the watchers on loop; on_stop receives run (recover the app with container_of). */
void run_watch(struct run *run, uv_loop_t *loop, double seconds, void (*on_stop)(struct run *run));

/* Closes the watchers; the loop can then end once the app's own handles are closed. */
void run_unwatch(struct run *run);

/* Runs loop until no handle is left and closes it. Returns *status, read once the loop has ended
 * (the app's callbacks set it while the loop runs), unless handles were left open (a bug): then it
 * says so on stderr as "PROG: handles left open at exit: ..." and returns 1. */
int run_exit(uv_loop_t *loop, const char *prog, const int *status);

/* Under the controller (run-protocol.c): makes and starts the recorder side of the protocol into
 * *out. On failure says "PROG: cannot start the protocol: ..." on stderr, closes what was made
 * (on_closed, may be NULL, runs from the loop), sets *out to NULL and returns the negative errno. */
int run_serve(uv_loop_t *loop, const char *name, const struct pirec_recorder_ops *ops, void *user,
              const char *prog, pirec_recorder_close_cb on_closed, struct pirec_recorder **out);

#endif
