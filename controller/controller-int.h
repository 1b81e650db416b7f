#ifndef PIREC_CONTROLLER_INT_H
#define PIREC_CONTROLLER_INT_H

/* The controller's internal state, shared by the files of controller/ (their layering is in
 * controller/CMakeLists.txt). Nothing here is public: everything runs on the controller's loop
 * thread, and every struct below belongs to one struct pirec_controller. */

#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>
#include <uv.h>

#include "fleet.h"
#include "pirec/config.h"
#include "pirec/fs.h"
#include "pirec/controller.h"
#include "pirec/gpio.h"
#include "pirec/job.h"
#include "pirec/looplag.h"
#include "pirec/session.h"

#define MAX_MODULES     16
#define MAX_GPIO        16
#define MAX_CLIENTS     64
#define OUTBOX_MAX      (32u * 1024 * 1024)
#define EARLY_EDGES_MAX 64

/* ---- recorder modules (module.c) ---- */

enum mstate {
  M_DOWN = 0, /* no child: not started yet, waiting to restart, or ended */
  M_SPAWNING, /* child running, "ready" not seen yet */
  M_READY,    /* takes commands */
  M_ENDED,    /* the job is over for good (stopped by us or gave up) */
};

struct module;
/* A module's reply to one command, or NULL when the command failed (the child died, the line
 * could not be sent). */
typedef void (*pirec__reply_cb)(struct module *m, json_t *reply, void *user);

/* A command sent to a recorder and not answered yet. Notes keep their line so they can be sent
 * again to the restarted recorder if this one dies before acknowledging them. */
struct pending {
  json_int_t id;
  pirec__reply_cb cb;
  void *user;
  char *note_line;
  size_t note_len;
  struct pending *next;
};

/* A line waiting in a module's outbox (the child is starting, or its pipe is full). */
struct outline {
  struct outline *next;
  size_t len;
  int is_note;
  json_int_t id;
  char data[];
};

struct module {
  struct pirec_controller *c;
  char name[64];
  char kind[32];
  char program[PATH_MAX];
  struct pirec_job *job;
  enum mstate state;
  int accepts_notes;
  int accepts_preview; /* its ready line listed "preview" */
  int accepts_marks;   /* its ready line listed "mark": notes and GPIO edges are forwarded to it */
  int stopping;        /* we asked the job to end */
  json_int_t next_id;
  struct pending *pend_head, *pend_tail;
  struct outline *out_head, *out_tail;
  size_t out_bytes;
  int writable_blocked; /* a write was refused: everything goes through the outbox until drain */
  int hold;             /* a session is starting: notes wait until the trial's start is sent */
  int started_trial;    /* last trial this recorder was told to start */
  int part;             /* restarts inside started_trial */
  int in_trial;         /* it should be recording now */
  int join_then_stop;   /* the trial ended while it was (re)starting with notes queued: when ready it
                           joins, writes them and stops; the running op counts its stop reply */
  int64_t crash_mono_ns;
  uint32_t crashes;
  uint32_t restarts;
  int pid;
  json_t *last_status;
  int status_inflight;
  int64_t last_status_mono;
  char last_error[256];
  char not_recording[400]; /* why it is not recording the current trial ("" when it is, or idle) */
  int line_discarding;     /* inside a stdout line over the protocol's limit */
  /* Its measured data rate (disk.c): what its counters' bytes grew by since rate_t0 (the first
   * status of the session it records), and the last rate measured, kept between sessions. */
  uint64_t rate_prev, rate_bytes, rate_bps;
  int64_t rate_t0;
  int rate_measured; /* rate_bps was measured (0 B/s from a recorder that wrote nothing, too) */
};

/* ---- the op queue (ops.c) ---- */

enum op_kind { OP_START, OP_STOP, OP_TRIAL, OP_TOGGLE, OP_RELOAD, OP_SHUTDOWN };

/* Who waits for an op's reply: reply(who, obj) gets a copy (stolen) with the waiter's id, or an
 * error "cancelled" when the op is dropped. who is cleared (NULL) when that client goes away. */
struct waiter {
  void (*reply)(void *who, json_t *obj);
  void *who;
  json_t *id;
  struct waiter *next;
};

struct op {
  enum op_kind kind;
  int gpio_slot;   /* index in c->gpios of the trigger that queued it while pending, else -1 */
  uint64_t merged; /* further edges of that trigger folded into this op while it waited */
  char source[8];  /* who asked, for the events.csv control row: socket, cli, gpio, signal */
  char from[80];   /* which one: "gpio.pedal", "SIGUSR1"; "" for socket and cli */
  char label[PIREC_SESSION_LABEL_MAX + 1];
  json_t *fleet; /* a fleet start's "fleet" object for session.json (fleetctl.c), else NULL */
  struct waiter *waiters;
  struct op *next;
};

/* ---- the control socket (clients.c) ---- */

struct client;

/* ---- the after-session remux (remux.c) ---- */

struct remux_run {
  struct pirec_controller *c;
  struct pirec_job *job;
  char *dir;
  int asked;             /* by the control socket's `remux`, not [session] remux_after */
  int64_t done, total;   /* bytes, from pirec-remux --progress-lines */
  char last_err[200];    /* its last line on stderr, to say why it failed */
  char last_failed[200]; /* the last "FAILED: why" of its summary's file rows */
  char last_out[200];    /* and on stdout (the session's verdict) */
  struct remux_run *next;
};

/* An ended remux, kept for the status reply. */
#define REMUX_RECENT 8
struct remux_recent {
  char dir[4096]; /* "" for an unused slot */
  int ok, asked;
  int64_t total;
  char message[400];
};

enum cstate { C_IDLE, C_STARTING, C_RECORDING, C_STOPPING };

/* ---- the disk budget (disk.c) ---- */

/* A pre-flight's outcome: refuse (a start without room that [storage] if_low_space = refuse
 * refuses) or a warning (message non-empty, refuse 0), with the numbers. */
struct pirec__disk_check {
  int refuse;
  uint64_t free_bytes, needed, rate;
  char message[500];
};
struct pirec_controller;
typedef void (*pirec__disk_preflight_cb)(struct pirec_controller *c, const struct pirec__disk_check *r);

struct disk_budget {
  uv_timer_t timer; /* the watchdog: a probe every [storage] space_check_interval */
  uv_timer_t blink; /* the LED while alarm is on */
  uv_work_t work;   /* one statvfs at a time, in the threadpool */
  int busy;
  char probe_path[PATH_MAX]; /* asked: output_dir */
  char probe_fs[PATH_MAX];   /* measured (threadpool side): output_dir or its nearest parent */
  int probe_err;
  uint64_t probe_free, probe_total;
  /* The last good probe, on the loop. */
  int known;
  char fs_path[PATH_MAX];
  uint64_t free_bytes, total_bytes;
  int64_t checked_mono;
  int err;                                          /* the last probe's error, 0 */
  void (*preflight_cb)(struct pirec_controller *c); /* runs when the probe in flight ends */
  pirec__disk_preflight_cb preflight_done;
  int stopping; /* the watchdog asked this session to stop */
  int alarm;    /* LED blinking: a low-space stop or a refused start, until room or a start */
  int blink_level;
  char last_event[600]; /* the last refusal, warning or low-space stop, for status ("" none) */
};

/* Calls from a lower file up to a higher one go through these, set once by pirec_controller_new
 * (controller.c), so that no file calls a file above it. */
struct pirec__hooks {
  /* Something a shutdown or a config switch waits for has ended (status.c). */
  void (*settle)(struct pirec_controller *c);
  /* The session state changed: tell systemd (status.c). */
  void (*state_changed)(struct pirec_controller *c);
  /* The op queue ran empty (status.c: a shutdown then stops the recorders). */
  void (*ops_idle)(struct pirec_controller *c);
  /* A recorder said ready / its job ended for good (ops.c: joins or leaves the trial). */
  void (*module_ready)(struct module *m);
  void (*module_ended)(struct module *m);
  /* A recorder that was waiting for its device has it now (ops.c: joins the running trial). */
  void (*module_device_ready)(struct module *m);
  /* A trigger's edge asks for an op (ops.c). */
  void (*gpio_submit)(struct pirec_controller *c, int slot, enum op_kind kind, const char *from);
  /* The reply to a status command (status.c). */
  json_t *(*status_json)(struct pirec_controller *c);
  /* The low-space watchdog wants the session stopped, for why (ops.c). */
  void (*low_space)(struct pirec_controller *c, const char *why);
  /* Every handle but op_timer is closed and the owner asked for close (controller.c). */
  void (*closed)(struct pirec_controller *c);
};

/* ---- fleet membership (fleetctl.c; the MQTT client is fleet.c) ---- */

struct fleet_glue {
  struct pirec_fleet *conn; /* NULL: no [fleet] broker, or closed */
  struct pirec_fleet_settings s;
  uv_timer_t start_timer; /* a fleet start waiting for its agreed wall-clock instant */
  int timer_open;
  json_t *pending;                         /* that start's command, while it waits */
  char session[PIREC_FLEET_NAME_MAX + 1];  /* the fleet session recorded now ("" none) */
  char starting[PIREC_FLEET_NAME_MAX + 1]; /* the fleet session whose start op runs */
  char *last_status;                       /* the last status published, compact JSON */
};

struct pirec_controller {
  uv_loop_t *loop;
  struct pirec_controller_options opts;
  struct pirec__hooks hooks;
  char *config_path;
  char *label;
  char *recorder_dir;
  char *output_dir_override;
  char socket_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  char snapshot_path[PATH_MAX]; /* the accepted config text the recorders read (pirec__snapshot_write) */
  /* A reload's snapshot, written in the threadpool to a new name (pirec__snapshot_write_async) */
  struct pirec_fs_req snapshot_req;
  char snapshot_next[PATH_MAX];
  unsigned snapshot_gen;
  int snapshot_busy;
  void (*snapshot_done)(struct pirec_controller *c, int err);
  json_t *snapshot_reply;                 /* the op's reply, sent once the switch is made */
  const struct pirec_config *snapshot_of; /* the pending config being written */
  struct pirec_config *cfg;
  struct pirec_config *pending_cfg; /* reloaded while recording: applied when the session ends */
  int demo;

  struct module modules[MAX_MODULES];
  int nmodules;
  struct pirec_gpio *gpios[MAX_GPIO];
  int ngpio;
  /* The one op per trigger that is queued and not running yet: later action edges of that line
   * are merged into it instead of queueing more, so an edge storm costs no memory and no churn. */
  struct op *gpio_pending[MAX_GPIO];
  uint64_t gpio_merged[MAX_GPIO];  /* edges merged so far, per trigger (status) */
  uint64_t gpio_outside[MAX_GPIO]; /* edges that came while no session was there to take them */
  int gpio_closing;                /* lines still closing before a reload re-opens the set */
  /* [gpio.*] lines whose chip is not there (yet): tried again on gpio_retry, 1 s doubling to 10 s,
   * and reported (status, each session's events.csv and session.json, [session] required). */
  struct gpio_waiting {
    char section[80];
    char why[256];
  } gpio_waiting[MAX_GPIO];
  int ngpio_waiting;
  uint64_t gpio_retry_ms;
  uv_timer_t gpio_retry;
  int gpio_reopen;           /* open the [gpio.*] set of c->cfg once gpio_closing is 0 */
  struct remux_run *remuxes; /* pirec-remux children started after sessions ([session] remux_after) */
  struct pirec_job_queue *remux_queue;
  struct remux_recent remux_recent[REMUX_RECENT]; /* the last remuxes that ended, a ring */
  size_t remux_recent_n;                          /* how many ended in all */
  int remux_priority_warned;                      /* said once that nice/ionice are missing */
  /* Edges that arrive before the session they belong to has its directory: the one that starts
   * it and any that follow while it starts (markers pressed at once). Written first thing into
   * that session's events.csv; beyond EARLY_EDGES_MAX they are counted, and the count is written. */
  struct early_edge {
    int64_t mono, wall;
    char module[80], detail[192];
  } early_edges[EARLY_EDGES_MAX];
  int nearly_edges;
  uint64_t early_edges_lost[MAX_GPIO]; /* per trigger: beyond EARLY_EDGES_MAX, counted only */

  enum cstate state;
  struct pirec_session *session;
  /* [storage] encrypt_to: the running session's key (locked memory), sent with every start; wiped
   * when the session has stopped. NULL: clear files. */
  struct pirec_crypt_key *session_key;
  int trial;
  int64_t trial_start_mono;
  uint64_t note_seq;
  struct note_wait *note_waits;       /* notes whose client waits for the recorder's acknowledgement */
  struct preview_wait *preview_waits; /* previews whose client waits for the recorder (clients.c) */
  uint64_t notes_in_events;

  struct op *ops; /* queue; the head is running */
  int op_running;
  int op_wait;                                 /* module replies the running op still waits for */
  void (*op_cont)(struct pirec_controller *c); /* runs when op_wait reaches 0 or on timeout */
  uv_timer_t op_timer;
  struct pirec_config_req reload_req;

  uv_pipe_t server;
  int server_open;
  uv_idle_t idle; /* runs clients' left-over lines */
  struct client *clients;
  int nclients;
  uint64_t clients_dropped;

  uv_signal_t sig[4];
  int sig_open;
  uv_timer_t status_timer;
  unsigned status_ticks;
  char last_status_text[512];
  uv_timer_t watchdog_timer;
  struct disk_budget disk;
  struct fleet_glue fleet;
  uv_timer_t demo_timer;
  int demo_notes;
  struct pirec_looplag lag;
  int lag_open;
  int handles_open;

  int shutting_down;
  int shutdown_done;
  int closing; /* pirec_controller_close was called: free after the last handle */
  pirec_controller_close_cb close_cb;
  int errors;
  int started;
  /* A start that a required module could not join ([session] required): the session is stopped
   * at once and the start answered with this error instead of "started". */
  char start_failed[600];
  /* The pre-flight's warning for the session starting ([storage] if_low_space = warn): into its
   * events.csv and its start's reply. */
  char start_low_space[600];
};

/* ---- paths.c: options, paths, the config snapshot ---- */

/* Fills paths (each 108 bytes: sun_path) with the places a control socket may be, in the order a
 * client tries them: the config's [control] socket when set, $RUNTIME_DIRECTORY/control.sock,
 * $XDG_RUNTIME_DIR/pirec/control.sock, /run/pirec/control.sock, /tmp/pirec-UID/control.sock.
 * Returns how many were written. */
int pirec__control_socket_candidates(const char *config_path, char paths[][108], int max);
/* The executable `name` next to this one (or in --recorder-dir), else on PATH. 0 or -ENOENT. */
int pirec__find_program(struct pirec_controller *c, const char *name, char *out, size_t cap);
/* Creates the directories above path (not path itself). 0 or -errno. */
int pirec__mkdir_parents(const char *path, mode_t mode);
/* A start-up problem for the user, through c->opts.report (printf-style; one line). */
void pirec__report(struct pirec_controller *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes cfg's source text to c->snapshot_path, the file every recorder is spawned with. */
int pirec__snapshot_write(struct pirec_controller *c, const struct pirec_config *cfg);
/* The same off the loop: cfg's text goes atomically to a new file next to the snapshot
 * (c->snapshot_next), in the threadpool; done runs on the loop with 0 or -errno. The caller makes
 * it the snapshot (pirec__snapshot_adopt) only if it still wants it, so the file recorders read
 * never changes under a session. Returns 0 or -errno (then done never runs). */
int pirec__snapshot_write_async(struct pirec_controller *c, const struct pirec_config *cfg,
                                void (*done)(struct pirec_controller *c, int err));
/* Makes c->snapshot_next the snapshot and removes the old file (in the threadpool). */
void pirec__snapshot_adopt(struct pirec_controller *c);
/* Removes path in the threadpool (the loop runs until it is done); the request owns itself, so
 * nothing waits for it and a failure is ignored. */
void pirec__unlink_later(struct pirec_controller *c, const char *path);
/* Removes c->snapshot_next (a written snapshot that was not adopted), in the threadpool. */
void pirec__snapshot_discard(struct pirec_controller *c);

/* ---- module.c: recorder children and the controller's side of the protocol ---- */

const char *pirec__mstate_name(enum mstate s);
/* Sends cmd (stolen) to the recorder with a fresh id; cb(m, reply or NULL on failure) runs once,
 * unless this returns an error. */
int pirec__module_send(struct module *m, json_t *cmd, pirec__reply_cb cb, void *user);
/* A note or a GPIO edge (kind "note", "gpio") to every module that takes marks and is in a session
 * (the eye tracker forwards them to its device); fire and forget: the reply is not waited for, a
 * module too far behind misses it (logged once by the module's queue). */
void pirec__modules_mark(struct pirec_controller *c, const char *kind, const char *text, size_t len,
                         int64_t mono, int64_t wall);
/* The same, but the line goes out ahead of anything waiting in the outbox. */
int pirec__module_send_first(struct module *m, json_t *cmd, pirec__reply_cb cb, void *user);
/* Writes what waits in the outbox, if the recorder takes commands and nothing holds it. */
void pirec__module_flush(struct module *m);
/* 1 when a note waits in the outbox. */
int pirec__module_has_note(const struct module *m);
/* Keeps a status reply's counters (the last status of m). */
void pirec__module_on_status(struct module *m, json_t *reply, void *user);
void pirec__module_poll_status(struct module *m);
/* Asks the recorder to end (closes its stdin); its job ends later. */
void pirec__module_stop(struct module *m);
/* Frees what m holds (after its job ended, or before it ever ran). */
void pirec__module_release(struct module *m);
/* c->modules from c->cfg, then their children spawned. */
void pirec__modules_build(struct pirec_controller *c);
void pirec__modules_spawn(struct pirec_controller *c);

/* ---- remux.c: pirec-remux after a session ---- */

void pirec__remux_session(struct pirec_controller *c, const char *dir);
/* The `remux` command: name is a session directory's name in the output directory; its path goes in
 * dir. Returns 0 once pirec-remux is queued, or -1 with why in err (still recording, already being
 * remuxed, a bad name, shutting down). Its progress and verdict are in pirec__remux_status. */
int pirec__remux_command(struct pirec_controller *c, const char *name, char *dir, size_t dircap, char *err,
                         size_t errlen);
/* The status reply's "remux" array (docs/PROTOCOL.md). */
json_t *pirec__remux_status(struct pirec_controller *c);
/* argv (NULL-terminated) run at background priority: nice 10 and the idle I/O class, through
 * /usr/bin/nice and /usr/bin/ionice when both exist (*wrapped 1), else argv unchanged (*wrapped
 * 0). Writes the NULL-terminated result to out (pointers into argv and static strings) and returns
 * its length, or 0 when cap is too small. */
size_t pirec__remux_background_argv(const char *const *argv, const char **out, size_t cap, int *wrapped);

/* ---- gpio.c: GPIO triggers and outputs ---- */

void pirec__gpio_open_all(struct pirec_controller *c);
void pirec__gpio_close_all(struct pirec_controller *c);
void pirec__gpio_reopen_all(struct pirec_controller *c);
void pirec__gpio_trial_started(struct pirec_controller *c);
void pirec__gpio_set_recording(struct pirec_controller *c, int recording);
json_t *pirec__gpio_status(struct pirec_controller *c);
/* The edges kept for a session that will not come (its start failed or was not queued after all):
 * counted as outside any session, then forgotten. */
void pirec__gpio_early_discard(struct pirec_controller *c);
/* The edges kept for session s, into its events.csv (and, per line, how many were not kept). */
void pirec__gpio_early_write(struct pirec_controller *c, struct pirec_session *s);
/* Why the trigger or output `name` ("gpio.pedal") cannot work now, or NULL when it is open or not
 * configured (*configured says which). */
const char *pirec__gpio_missing(struct pirec_controller *c, const char *name, size_t len, int *configured);
/* Into the session that just started: events.csv and session.json name every line that waits. */
void pirec__gpio_session_started(struct pirec_controller *c);
/* op leaves the pending slot of the trigger that queued it. */
void pirec__gpio_unpend(struct pirec_controller *c, struct op *op);

/* Drives every LED output (role led) to level, whatever the recording state (disk.c blinks them). */
void pirec__gpio_set_led(struct pirec_controller *c, int level);

/* ---- disk.c: the disk budget ---- */

/* The handles (in pirec_controller_new), the watchdog's timer (started with the others). */
void pirec__disk_init(struct pirec_controller *c);
void pirec__disk_start(struct pirec_controller *c);
/* The config changed: the watchdog takes the new interval. */
void pirec__disk_restart(struct pirec_controller *c);
void pirec__disk_close(struct pirec_controller *c, uv_close_cb cb);
/* 1 while a statvfs runs in the threadpool (a shutdown waits for it). */
int pirec__disk_busy(const struct pirec_controller *c);
/* Where sessions go: --output, else [session] output_dir. */
const char *pirec__output_dir(const struct pirec_controller *c);
/* A start's pre-flight: free space is probed off the loop, then done(c, outcome) runs (on the
 * loop, later). Returns 0, or -ENOSYS when [storage] asks for no budget, or another negative
 * errno; then done never runs. */
int pirec__disk_preflight(struct pirec_controller *c, pirec__disk_preflight_cb done);
void pirec__disk_session_started(struct pirec_controller *c);
void pirec__disk_session_stopped(struct pirec_controller *c);
/* m's data rate in bytes/s: measured (plus its rows) when it has recorded, else estimated. */
uint64_t pirec__disk_module_rate(const struct module *m, int *measured);
/* m's rate estimated from its settings alone. */
uint64_t pirec__disk_module_estimate(const struct pirec_config *cfg, const struct module *m);
/* Bytes a start needs: min_free_time at rate, plus reserve. */
uint64_t pirec__disk_needed(uint64_t rate, int64_t min_free_ns, uint64_t reserve);
/* 0 when free_bytes holds what a start needs, else 1 with why in msg (the numbers in MiB; source
 * says how the rate was found). */
int pirec__disk_verdict(uint64_t free_bytes, uint64_t rate, int64_t min_free_ns, uint64_t reserve,
                        const char *source, char *msg, size_t cap);
/* The "storage" object of the status reply (docs/PROTOCOL.md). */
json_t *pirec__disk_status(struct pirec_controller *c);

/* ---- ops.c: state, the op queue, sessions and trials ---- */

/* Appends an op (source and from: see struct op) without running anything; NULL without memory. */
struct op *pirec__op_queue(struct pirec_controller *c, enum op_kind kind, const char *label,
                           const char *source, const char *from);
void pirec__op_add_waiter(struct op *op, void (*reply)(void *who, json_t *obj), void *who, json_t *id);
/* Runs the op at the head of the queue unless one runs. */
void pirec__op_next(struct pirec_controller *c);
/* pirec__op_queue, then pirec__op_next. */
void pirec__op_enqueue(struct pirec_controller *c, enum op_kind kind, const char *label, const char *source,
                       const char *from);
/* Answers every op behind the running one with an error `message` and drops them. */
void pirec__ops_cancel_waiting(struct pirec_controller *c, const char *message);
/* Drops every op, answering nobody (free). */
void pirec__ops_free(struct pirec_controller *c);
/* A note stamped now; see ops.c. */
/* reply(who, obj) gets the note's answer later ("noted" once the notes recorder acknowledged
 * it, or an error), unless this returns an error (err filled; reply never runs). reply may be
 * NULL (nobody waits). */
int pirec__take_note(struct pirec_controller *c, const char *text, size_t len,
                     void (*reply)(void *who, json_t *obj), void *who, json_t *id, char *err, size_t errlen);
/* A client went away: its notes are still written, their answers go nowhere. */
void pirec__note_waits_forget(struct pirec_controller *c, void *who);
/* Hook implementations (struct pirec__hooks). */
void pirec__ops_module_ready(struct module *m);
void pirec__ops_module_ended(struct module *m);
void pirec__ops_module_device_ready(struct module *m);
void pirec__ops_gpio_submit(struct pirec_controller *c, int slot, enum op_kind kind, const char *from);
void pirec__ops_low_space(struct pirec_controller *c, const char *why);

/* ---- fleetctl.c: fleet commands into ops, the device's status out ---- */

/* Connects to [fleet] broker when set (c->cfg, read at start-up). 0, or a negative errno with the
 * problem reported (a credentials file that cannot be read). */
int pirec__fleet_open(struct pirec_controller *c);
/* Publishes the status when the state changed (the state_changed hook). */
void pirec__fleet_state_changed(struct pirec_controller *c);
/* The "fleet" object of the status reply, or NULL without a fleet. */
json_t *pirec__fleet_status(struct pirec_controller *c);
/* Closes the connection and the start timer; each closed handle counts down handles_open and
 * calls the settle hook. */
void pirec__fleet_close(struct pirec_controller *c);

/* ---- clients.c: the control socket ---- */

/* Binds and listens on c->socket_path unless [control] mode is off. 0 or a negative errno. */
int pirec__control_listen(struct pirec_controller *c);
/* Disconnects clients that have not read their replies for a while (status timer). */
void pirec__clients_check_stalled(struct pirec_controller *c);
void pirec__clients_close_all(struct pirec_controller *c);

/* ---- status.c: status, sd_notify, timers, signals, shutdown ---- */

void pirec__sdnotify(const char *state);
json_t *pirec__status_json(struct pirec_controller *c);
void pirec__notify_status(struct pirec_controller *c);
void pirec__settle(struct pirec_controller *c);
void pirec__ops_idle(struct pirec_controller *c);
/* Starts the status, watchdog and demo timers, the loop-lag monitor and the signal handlers. */
void pirec__timers_start(struct pirec_controller *c);
/* Starts or parks the periodic timers for what the controller is doing (status.c). */
void pirec__timers_update(struct pirec_controller *c);
void pirec__shutdown(struct pirec_controller *c, const char *source, const char *from);

#endif
