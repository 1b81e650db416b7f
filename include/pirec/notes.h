#ifndef PIREC_NOTES_H
#define PIREC_NOTES_H

/* The note taker: operator notes into <session>/notes.csv.
 *
 * notes.csv has the columns trial, mono_ns, wall_ns, text (docs/ARCHITECTURE.md). The text is kept
 * byte for byte (UTF-8, commas, quotes, newlines); a note beginning with '=', '+', '-', '@', TAB, CR
 * or a single quote gets one extra leading single quote (see pirec/csv.h). The file is one per
 * session: a trial appends to it, and a recorder restarted after a crash appends too (the header
 * row is written only when the file is new or empty).
 *
 * Adding a note formats one row into a buffer allocated at creation and copies it into the sink's
 * ring: no allocation, no system call, never a wait for the disk. When the ring is full the note is
 * refused and counted as a drop.
 *
 * Heap object: pirec_notes_new / pirec_notes_free. Everything runs on the loop thread.
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pirec_notes;

struct pirec_notes_options {
  size_t ring_bytes;          /* sink ring; default 8 MiB */
  size_t max_text;            /* longest note accepted, bytes; default 65536 (longer: -EMSGSIZE) */
  unsigned fsync_interval_ms; /* default 1000; PIREC_SINK_FSYNC_NEVER for none */
};

struct pirec_notes_counters {
  uint64_t notes;         /* notes accepted into the ring (this process's lifetime) */
  uint64_t drops;         /* notes refused (ring full, too long, file error) */
  uint64_t bytes_written; /* bytes written to notes.csv files so far, closed ones included */
  int error;              /* 0, or the negative errno that stopped the current file */
  int open;               /* 1 while a file is open */
};

typedef void (*pirec_notes_cb)(struct pirec_notes *notes, int status, void *user);

void pirec_notes_options_default(struct pirec_notes_options *opts);

/* opts may be NULL. Returns 0 and *out, or -ENOMEM / -EINVAL. */
int pirec_notes_new(uv_loop_t *loop, const struct pirec_notes_options *opts, struct pirec_notes **out);

/* Opens DIR/notes.csv for appending (creating it with its header row when missing or empty) and
 * sets the trial written in each row. cb runs on the loop with 0 or a negative errno once the file's
 * state is known (an open failure after that is reported through the counters' error). If this
 * returns an error, cb never runs. -EBUSY when a file is already open. */
int pirec_notes_open(struct pirec_notes *notes, const char *dir, int trial, pirec_notes_cb cb, void *user);

/* Encrypts the files of the trials started from now on under key (copied; NULL: clear files), the
 * files named by their path inside session_dir (docs/PRIVACY.md). Returns 0 or -ENOMEM. */
struct pirec_crypt_key;
int pirec_notes_set_key(struct pirec_notes *notes, const struct pirec_crypt_key *key,
                        const char *session_dir);

/* Adds one note stamped with the given clocks (the time it was received). Returns 0, -ENOTCONN (no
 * file open; not counted), -EMSGSIZE (longer than max_text), -ENOBUFS (ring full) or the file's
 * error; all but -ENOTCONN count as drops. */
int pirec_notes_add(struct pirec_notes *notes, int64_t mono_ns, int64_t wall_ns, const char *text,
                    size_t len);

/* Writes out every note added so far, closes the file (final fdatasync) and runs cb with 0 or the
 * file's error. If it returns an error (-ENOTCONN: nothing open), cb never runs. */
int pirec_notes_close_file(struct pirec_notes *notes, pirec_notes_cb cb, void *user);

void pirec_notes_counters(const struct pirec_notes *notes, struct pirec_notes_counters *out);

/* Frees notes. The file must be closed (pirec_notes_close_file has called back). NULL is a no-op. */
void pirec_notes_free(struct pirec_notes *notes);

#endif
