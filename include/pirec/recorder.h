#ifndef PIREC_RECORDER_H
#define PIREC_RECORDER_H

/* The recorder side of the controller protocol (docs/PROTOCOL.md).
 *
 * A recorder executable (pirec-notes, pirec-camera, ...) started by the controller with --protocol
 * reads one JSON command per line on stdin and writes one JSON reply per line on stdout. This
 * library does the framing, parsing, validation and reply formatting on the recorder's own libuv
 * loop (uv_pipe on fds 0 and 1, never a blocking read or write), and dispatches each command to the
 * module through the callbacks in struct pirec_recorder_ops. The module never sees JSON text.
 *
 * Lifecycle
 *   1. pirec_recorder_new(loop, name, &ops, user, NULL, &rec)   allocates; nothing runs yet
 *   2. pirec_recorder_start(rec)     opens stdin/stdout, starts reading, writes the "ready" line
 *   3. commands arrive: the library calls ops.start/stop/status/note/quit on the loop thread. Each
 *      callback gets a request; the module answers it exactly once with pirec_recorder_finish(),
 *      either inside the callback or later (for example when its sinks have closed).
 *   4. after answering "quit" (or at any time on a fatal error) the module closes its own handles
 *      and calls pirec_recorder_close(rec, cb): stdin stops being read, queued replies are written,
 *      the handles close, cb runs, then rec is freed. The loop then runs out and main returns.
 *
 * The library validates commands before dispatch: unknown commands, missing or mistyped fields,
 * lines over max_line bytes, "start" while recording and "stop" while idle are answered with an
 * error reply and never reach the module. Commands reach the module in the order sent: while a
 * start or stop is outstanding, later commands wait behind it (a note sent right after start finds
 * the trial open), except status, which is answered at once; replies carry the command's id.
 *
 * End of stdin (the controller died or closed the pipe), SIGINT and SIGTERM are turned into a
 * "quit" request with no id (its reply is written if stdout still works), so the module finalises
 * its files the same way in every case. A second signal while quitting is ignored; the controller
 * escalates to SIGKILL if the module hangs.
 *
 * Threads: every function here runs on the loop thread, except pirec_recorder_counters_add(), which
 * is not thread-safe either: fill counters on the loop thread from snapshots your threads publish.
 * Errors are negative errno values. If pirec_recorder_new() fails, nothing is allocated.
 */

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pirec_recorder;

enum pirec_recorder_cmd {
  PIREC_RECORDER_START = 1,
  PIREC_RECORDER_STOP,
  PIREC_RECORDER_STATUS,
  PIREC_RECORDER_NOTE,
  PIREC_RECORDER_MARK,
  PIREC_RECORDER_QUIT,
  PIREC_RECORDER_PREVIEW,
};

/* One command awaiting its reply. Owned by the library; valid from the callback until the module
 * calls pirec_recorder_finish() on it (after which every pointer in it is dead). Fields are
 * read-only for the module except counters. */
struct pirec_recorder_req {
  enum pirec_recorder_cmd cmd;
  int64_t recv_mono_ns; /* CLOCK_MONOTONIC when the line was parsed */

  /* START: the session directory (exists; the module creates its own subdirectory in it), the
   * trial number (>= 1; files are named t%03d...) and the trial label (sanitised by the controller:
   * no '/', no "..", at most 64 bytes; may be ""). */
  const char *session_dir;
  int trial;
  const char *label;
  /* START: 0 normally; n > 0 when the controller restarts this trial after the module crashed for
   * the n-th time in it. Files already written for the trial must not be overwritten: name the new
   * ones with a suffix, e.g. t001_p1.mkv (appending to a session-wide CSV is fine). */
  int part;
  /* START: 1 when this is the first start in session_dir (since the recorder began, the previous
   * start named another session): counters a module reports per session start from zero here,
   * and nothing from an earlier session (names, part numbers, counts) carries over. */
  int new_session;
  /* STOP: 1 when the controller changes trials: the next trial's start is already behind this
   * stop. Samples captured from the stop on belong to that next trial: keep them (bounded, the
   * rest counted as dropped before its first row) instead of discarding them as captured between
   * trials, so rows run on across the change (docs/PROTOCOL.md, "Trial changes"). */
  int handover;
  /* STOP: 1 when the session is abandoned as it starts (a [session] required module cannot
   * record): what the module started for it elsewhere (the eye tracker's device recording) is
   * cancelled rather than kept. The files are finished as for any stop. */
  int abort;

  /* NOTE: text exactly as sent (UTF-8; may contain commas, quotes, newlines; NUL-free) and the
   * controller's clocks when it received the note (its capture time). If the command carried no
   * clocks the library fills in its own reading at receipt. */
  const char *text;
  size_t text_len;
  int64_t mono_ns;
  int64_t wall_ns;
  /* MARK: what happened ("note", "gpio"); text, text_len, mono_ns and wall_ns as for NOTE. */
  const char *kind;

  /* STATUS: a JSON object the module fills with its counters (pirec_recorder_counters_add or
   * json_object_set_new). The library adds state, trial, uptime and loop lag itself.
   * PREVIEW: the reply's fields (docs/PROTOCOL.md, "preview"), which the module sets here. */
  json_t *counters;

  /* PREVIEW: the widest picture the controller wants (pixels, >= 16; 640 when the command gave
   * none). */
  int max_width;

  /* private */
  json_t *id;
  json_t *msg;
  struct pirec_recorder *rec;
  struct pirec_recorder_req *next;
};

/* Module callbacks. Each runs on the loop thread and must answer req exactly once with
 * pirec_recorder_finish(), now or later; it must not block. start, stop and quit are required;
 * status and note may be NULL (status then reports only the library's fields; note is answered
 * "unsupported" and the command is not advertised in "ready"). */
struct pirec_recorder_ops {
  void (*start)(struct pirec_recorder *rec, struct pirec_recorder_req *req);
  /* Finalise the current trial's files; answer when they are closed and complete. */
  void (*stop)(struct pirec_recorder *rec, struct pirec_recorder_req *req);
  void (*status)(struct pirec_recorder *rec, struct pirec_recorder_req *req);
  void (*note)(struct pirec_recorder *rec, struct pirec_recorder_req *req);
  /* Stop the trial if one is running (pirec_recorder_recording() says so), close everything, then
   * answer and call pirec_recorder_close(). */
  void (*quit)(struct pirec_recorder *rec, struct pirec_recorder_req *req);
  /* Optional: a picture of what the module captures now (a JPEG of a frame already captured,
   * made off the capture and loop threads), answered like status: at once, not behind a start or
   * stop. NULL: "preview" is refused and not advertised in "ready". */
  void (*preview)(struct pirec_recorder *rec, struct pirec_recorder_req *req);
  /* Optional: a happening elsewhere in the session (a note, a GPIO edge) for a module that forwards
   * markers to its device (the eye tracker); answered like note. NULL: "mark" is refused and not
   * advertised in "ready". */
  void (*mark)(struct pirec_recorder *rec, struct pirec_recorder_req *req);
};

struct pirec_recorder_options {
  int in_fd;            /* default 0 */
  int out_fd;           /* default 1 */
  size_t max_line;      /* longest accepted command line in bytes; default 2 MiB */
  size_t max_out_bytes; /* replies queued but unwritten beyond this are dropped (counted); 4 MiB */
  int handle_signals;   /* 1 (default): SIGINT/SIGTERM become a quit request; 0: leave them */
};

/* Fills opts with the defaults above. */
void pirec_recorder_options_default(struct pirec_recorder_options *opts);

/* Allocates a recorder named name (the module name in replies and status, e.g. "notes",
 * "camera0"; copied). ops is copied. opts may be NULL for the defaults.
 * Returns 0 and *out, or -EINVAL (missing start/stop/quit, empty name), -ENOMEM. */
int pirec_recorder_new(uv_loop_t *loop, const char *name, const struct pirec_recorder_ops *ops, void *user,
                       const struct pirec_recorder_options *opts, struct pirec_recorder **out);

/* Opens the pipes, starts reading commands and writes {"reply":"ready",...}.
 * Returns 0 or a negative errno (fd not usable), after which only close is allowed. */
int pirec_recorder_start(struct pirec_recorder *rec);

/* Answers req. status 0 sends the command's success reply ("started", "stopped", "status",
 * "noted", "bye", "preview" with the fields set in req->counters); a negative errno sends {"reply":"error","message":...} with message, or
 * pirec_strerror(status) when message is NULL. A successful START switches the library's state to
 * recording (trial = req->trial); a STOP, failed or not, back to idle: the module answers a stop
 * only once its trial is over, so a stop that reports an error (files incomplete) leaves it stopped
 * and ready for the next start. req is freed before this returns.
 * Returns 0, or -ENOBUFS if the reply was dropped because the output queue was full. */
int pirec_recorder_finish(struct pirec_recorder_req *req, int status, const char *message);

/* For a START the module accepts while its device is not there yet (a network device that has not
 * connected): the "started" reply carries "waiting": why, so the controller records that the module
 * is not recording until it sends the event "device_ready". Call before pirec_recorder_finish(). */
void pirec_recorder_start_waiting(struct pirec_recorder_req *req, const char *why);

/* Sends an unsolicited event line {"event":type, "module":name, ...fields} (fields is stolen and
 * may be NULL), e.g. a sink's disk error so the controller records it in events.csv while the
 * trial goes on. Returns 0 or -ENOBUFS. */
int pirec_recorder_event(struct pirec_recorder *rec, const char *type, json_t *fields);

/* Answers a PREVIEW with a JPEG picture (jpeg, len bytes; copied, sent as base64 in "jpeg"), its
 * size and the capture time of its frame (CLOCK_MONOTONIC ns), or with the error err < 0 (jpeg
 * NULL). Returns what pirec_recorder_finish returns. */
int pirec_recorder_preview_done(struct pirec_recorder_req *req, int err, const uint8_t *jpeg, size_t len,
                                int width, int height, int64_t mono_ns);

/* Adds an unsigned counter to a status request's counters object (a helper for module code). */
void pirec_recorder_counters_add(struct pirec_recorder_req *req, const char *key, uint64_t value);

/* The session key sent with the last start ("key", docs/PROTOCOL.md), or NULL when the session is
 * not encrypted. Valid until the next start, the session's stop (a stop without handover) or
 * close, after which it is wiped: a module that needs it longer copies it (pirec_crypt_key_dup). */
struct pirec_crypt_key;
const struct pirec_crypt_key *pirec_recorder_key(const struct pirec_recorder *rec);

/* The module's pointer given to pirec_recorder_new(). */
void *pirec_recorder_user(const struct pirec_recorder *rec);
const char *pirec_recorder_name(const struct pirec_recorder *rec);
/* 1 while a trial is running (between a successful start and a successful stop). */
int pirec_recorder_recording(const struct pirec_recorder *rec);
/* The running trial's number, or the last one; 0 before the first start. */
int pirec_recorder_trial(const struct pirec_recorder *rec);

struct pirec_recorder_counters {
  uint64_t commands;        /* lines parsed as commands */
  uint64_t bad_lines;       /* lines answered with an error before dispatch */
  uint64_t replies;         /* lines queued on stdout */
  uint64_t replies_dropped; /* lines dropped because the output queue was over max_out_bytes */
  size_t out_queued;        /* bytes queued on stdout now */
};
void pirec_recorder_counters(const struct pirec_recorder *rec, struct pirec_recorder_counters *out);

/* Stops reading, writes what is queued (bounded by a 2 s timeout if the reader is gone), closes
 * every handle, calls cb (may be NULL), then frees rec. Requests still outstanding are freed
 * without a reply; the module must not touch them afterwards. Call once; rec NULL is a no-op. */
typedef void (*pirec_recorder_close_cb)(struct pirec_recorder *rec, void *user);
void pirec_recorder_close(struct pirec_recorder *rec, pirec_recorder_close_cb cb);

#endif
