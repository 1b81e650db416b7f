#ifndef PIREC_SESSION_H
#define PIREC_SESSION_H

/* One recording session's own files (docs/ARCHITECTURE.md, "Session directory"):
 *
 *   <output_dir>/<YYYYMMDDTHHMMSSZ>[_<label>]/
 *     session.json   manifest, rewritten atomically (pirec_fs_write_atomic) at start, at every
 *                    trial start and stop, on crashes and errors, and finally at stop
 *     events.csv     trial,mono_ns,wall_ns,event,module,detail
 *     clocks.csv     trial,mono_ns,wall_ns,boot_ns,uncertainty_ns every clocks_interval
 *
 * The recorders write their own files into the same directory; the controller (controller/ops.c)
 * drives a session through this API and feeds it what the recorders report.
 *
 * Rows go through sinks (pirec/sink.h): adding an event never waits for the disk. session.json is
 * built on the loop thread and written in libuv's threadpool; a rewrite requested while one is in
 * flight is coalesced into one more write afterwards, so the file on disk is always a complete
 * manifest and the last one reflects the last change.
 *
 * Heap object owning loop handles: pirec_session_new, pirec_session_start, ..., then
 * pirec_session_close(cb), which ends the session's files and frees it after cb (also instead of
 * start, or after a failed start). Loop thread only. Errors are negative errno;
 * a file error after start is recorded in session.json's "errors" and reported by
 * pirec_session_error_count(), never fatal to the session.
 */

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pirec_session;

#define PIREC_SESSION_LABEL_MAX 64

/* Sanitises a user-supplied label for directory and file names: letters, digits, '.', '_' and '-'
 * are kept, every other byte becomes '_' (so "/" can never pass), a leading '.' becomes '_'.
 * Returns the label's length, or -EINVAL for a label containing ".." or '/' (refused rather than
 * rewritten, so that `--label ../../etc` is an error the user sees), -ENAMETOOLONG when it is
 * longer than PIREC_SESSION_LABEL_MAX bytes. An empty label is valid (length 0). out must hold
 * PIREC_SESSION_LABEL_MAX + 1 bytes. */
int pirec_session_label_sanitise(const char *label, char *out);

struct pirec_session_options {
  const char *output_dir;     /* created when missing (with parents); required */
  const char *label;          /* already sanitised; NULL or "" for none */
  int64_t clocks_interval_ns; /* default 10 s */
  unsigned fsync_interval_ms; /* events.csv and clocks.csv; 0: default 1000; UINT_MAX: only
                                    when closed ([storage] fsync_interval = 0) */
  json_t *
      config; /* config snapshot for session.json (a reference is taken; do not modify it afterwards); may be NULL */
  json_t *host_extra;     /* more fields for "host" (borrowed, copied); may be NULL */
  json_t *versions_extra; /* more entries for "versions", e.g. libgpiod (borrowed, copied);
                                    may be NULL. pirec, libuv, jansson and FFmpeg are always there */
  /* [storage] encrypt_to: key (copied) encrypts events.csv and clocks.csv, and is written sealed to
   * the public key encrypt_to (32 bytes, copied) into session.key before start's cb runs (a failure
   * there fails the start). NULL: clear files. */
  const struct pirec_crypt_key *key;
  const unsigned char *encrypt_to;
};

typedef void (*pirec_session_cb)(struct pirec_session *session, int status, void *user);

int pirec_session_new(uv_loop_t *loop, const struct pirec_session_options *opts, struct pirec_session **out);

/* Creates the directory (adding "-2", "-3", ... if the name exists), opens events.csv and
 * clocks.csv, records the start anchor, writes session.json and the session_start event, starts
 * the clocks timer; then cb(status). On a failure in cb the session is not running: free it.
 * Returns 0 or a negative errno (then cb never runs). */
int pirec_session_start(struct pirec_session *s, pirec_session_cb cb, void *user);

/* The session directory (valid after start's cb succeeded, until free). */
const char *pirec_session_dir(const struct pirec_session *s);
/* The running trial, 0 between trials; the last trial number begun. */
int pirec_session_trial(const struct pirec_session *s);
int pirec_session_last_trial(const struct pirec_session *s);
/* 1 while events.csv takes rows: from the session's directory being made until its stop begins
 * (pirec_session_close). */
int pirec_session_takes_rows(const struct pirec_session *s);
int64_t pirec_session_start_mono_ns(const struct pirec_session *s);

/* Appends an events.csv row stamped now (or at mono_ns/wall_ns, e.g. a GPIO edge's kernel time,
 * with pirec_session_event_at). module and detail may be NULL. Returns 0 or the sink's push error
 * (counted in session.json's "events_dropped"). */
int pirec_session_event(struct pirec_session *s, const char *event, const char *module, const char *detail);
int pirec_session_event_at(struct pirec_session *s, int64_t mono_ns, int64_t wall_ns, const char *event,
                           const char *module, const char *detail);

/* Begins trial number trial (> the last one) with a sanitised label: event trial_start, a clock
 * anchor, an entry in "trials", session.json rewritten. -EBUSY when a trial is running. */
int pirec_session_trial_begin(struct pirec_session *s, int trial, const char *label);
/* Ends the running trial (event trial_stop, session.json rewritten). -ENOENT when none runs. */
int pirec_session_trial_end(struct pirec_session *s);

/* Per-module facts for session.json's "modules" object. */
/* Sets modules.NAME.KEY = value (stolen), e.g. "pid", "counters", "state". */
void pirec_session_module_set(struct pirec_session *s, const char *module, const char *key, json_t *value);
/* Sets the manifest's top-level KEY = value (stolen) and rewrites session.json, e.g.
 * "stop_reason" (docs/FORMATS.md). Keys the session writes itself are not for this. */
void pirec_session_set(struct pirec_session *s, const char *key, json_t *value);
/* A recorder died unexpectedly: event module_crash with "exit N" / "signal N", an entry in
 * modules.NAME.crashes. Returns 0. */
int pirec_session_module_crash(struct pirec_session *s, const char *module, int exit_status, int term_signal,
                               int64_t mono_ns);
/* The recorder is recording again: event module_restart, an entry in modules.NAME.gaps with the
 * gap from gap_start_mono_ns (its crash) to now and the trial it fell in. */
int pirec_session_module_restart(struct pirec_session *s, const char *module, int64_t gap_start_mono_ns);
/* An error worth keeping: event error, an entry in "errors". module may be NULL. */
int pirec_session_error(struct pirec_session *s, const char *module, const char *message);
size_t pirec_session_error_count(const struct pirec_session *s);

/* Asks for session.json to be rewritten (coalesced). */
void pirec_session_save(struct pirec_session *s);

/* Ends the session and frees it. A started session (even one whose start failed after its
 * directory was made) is ended first: a running trial ended, event session_stop, a final clocks
 * row and anchor, events.csv and clocks.csv closed (everything pushed is written and
 * fdatasync'ed), the final session.json ("state":"stopped","final":true). Then the session's
 * handles close, cb(s, status, user) runs on a later loop turn with 0 or the first file error (s
 * is still readable inside cb: dir, error count, manifest), and s is freed when cb returns. cb may
 * be NULL. s NULL: a no-op (returns 0). Returns 0, -EALREADY (a close is under way) or -EBUSY
 * (start's cb has not run yet); then cb never runs. */
int pirec_session_close(struct pirec_session *s, pirec_session_cb cb, void *user);

/* The manifest as it stands (borrowed; valid until the next call into the session). */
const json_t *pirec_session_manifest(const struct pirec_session *s);

#endif
