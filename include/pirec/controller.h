#ifndef PIREC_CONTROLLER_H
#define PIREC_CONTROLLER_H

/* The session controller behind `pirec record`, and the control-socket client behind
 * `pirec status|start|stop|trial|note|reload`.
 *
 * The controller owns one libuv loop's worth of work:
 *   - every enabled recorder module runs as a supervised child job (pirec/job.h) speaking the
 *     recorder protocol (docs/PROTOCOL.md); a child that dies unexpectedly is restarted with
 *     backoff and, if a trial is running, rejoins it (the crash and the gap go into events.csv and
 *     session.json);
 *   - sessions and trials (pirec/session.h): session directory, events.csv, clocks.csv,
 *     session.json;
 *   - the control socket (Unix stream socket, JSON lines, bounded per-client buffers);
 *   - signals through uv_signal_t: SIGINT/SIGTERM stop the session cleanly and exit, SIGUSR1
 *     toggles recording, SIGHUP reloads the config (a bad file keeps the old settings; new settings
 *     apply from the next session);
 *   - sd_notify READY/STATUS/WATCHDOG when built with libsystemd and run under systemd;
 *   - a loop-lag monitor whose figures `pirec status` shows.
 *
 * Lifecycle: pirec_controller_new (loads the config synchronously: this is start-up), then
 * pirec_controller_start, then uv_run; the loop returns once a shutdown (signal or
 * pirec_controller_shutdown) has finished: session final, children ended, every handle but one
 * closed. Then pirec_controller_close (also instead of start, or after a failed start) and uv_run
 * once more, which closes the last handle and frees the controller. Loop thread only.
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pirec_controller;

struct pirec_controller_options {
  const char *config_path;   /* NULL: the built-in demo configuration */
  const char *label;         /* label of the first session (sanitised; "../x" is refused) */
  const char *socket_path;   /* NULL: [control] socket if set, else $RUNTIME_DIRECTORY/control.sock,
                                $XDG_RUNTIME_DIR/pirec/control.sock, /tmp/pirec-UID/control.sock */
  const char *recorder_dir;  /* where pirec-notes, pirec-camera, ... are; NULL: the directory of
                                this executable, then PATH */
  const char *output_dir;    /* overrides [session] output_dir (tests, demo) */
  int wait;                  /* 1: start idle and wait for `pirec start`, SIGUSR1 or a GPIO
                                trigger; 0: start a session at once */
  int handle_signals;        /* 1: SIGINT/SIGTERM/SIGUSR1/SIGHUP as above */
  uint32_t ready_timeout_ms; /* a recorder must say ready within this; default 10000 */
  uint32_t stop_timeout_ms;  /* a recorder must answer stop within this; default 10000 */
  /* Start-up problems the user must read (each config error as FILE:LINE: ..., an invalid label,
   * a control socket in use): one line each, without '\n', to report(line, report_user) on the
   * calling thread. NULL: not reported (the return value still says what failed). */
  void (*report)(const char *line, void *report_user);
  void *report_user;
};

void pirec_controller_options_default(struct pirec_controller_options *opts);

/* Loads the config (every problem passed to opts->report as FILE:LINE: ...) and prepares. Returns 0,
 * -EINVAL (bad config or label), -ENOMEM. */
int pirec_controller_new(uv_loop_t *loop, const struct pirec_controller_options *opts,
                         struct pirec_controller **out);

/* Binds the control socket, spawns the recorders, starts the first session unless wait is set.
 * Returns 0 or a negative errno (socket in use by a live controller: -EADDRINUSE). */
int pirec_controller_start(struct pirec_controller *c);

/* Stops the session (if any) with every file final, ends the recorders, closes the socket and every
 * handle but the last (pirec_controller_close's). The loop then runs out. Idempotent. */
void pirec_controller_shutdown(struct pirec_controller *c);

/* 0 after a clean run, 1 if the session ended with errors (the process exit status). */
int pirec_controller_exit_status(const struct pirec_controller *c);

/* The control socket path in use (valid until free). */
const char *pirec_controller_socket_path(const struct pirec_controller *c);

/* Shuts down (as pirec_controller_shutdown, if that has not run yet), closes the last handle, then
 * calls cb(c) (may be NULL; c is still readable, e.g. its exit status) and frees c, all on later
 * loop turns: run the loop until it returns. c NULL, or a second call: a no-op. */
typedef void (*pirec_controller_close_cb)(struct pirec_controller *c);
void pirec_controller_close(struct pirec_controller *c, pirec_controller_close_cb cb);

/* Resolves the control socket path as the controller does, for clients: explicit path, else the
 * config's [control] socket when set, else the environment defaults. Writes into buf (cap bytes).
 * Returns 0 or -ENAMETOOLONG. */
int pirec_controller_socket_default(const char *config_path, char *buf, size_t cap);

/* `pirec record [-c FILE] [--label L] [--wait] [--socket PATH] [--output-dir DIR]` and the
 * clients `pirec status|start|stop|trial|note TEXT|reload [--json] [--socket PATH] [-c FILE]`:
 * argv[0] is the command name. Return the process exit status (0 ok, 1 failure or error reply,
 * 64 usage, 69 controller not running). */
int pirec_controller_record_main(int argc, char **argv);
int pirec_controller_client_main(int argc, char **argv);
/* `pirec fleet status|start|stop|trial|note [-c FILE] [--broker URL] [--group G] ...`: the fleet's
 * client over MQTT (docs/FLEET.md). Exit status: 0 every device answered ok, 1 a refusal or no
 * answer, 64 usage, 69 broker unreachable. */
int pirec_controller_fleet_main(int argc, char **argv);

#endif
