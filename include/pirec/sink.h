#ifndef PIREC_SINK_H
#define PIREC_SINK_H

/* A file sink: one ring drained into one file on a libuv loop.
 *
 * A producer thread (or the loop thread itself) pushes records; the loop takes them in batches and
 * writes their payloads back to back with uv_fs_write and an iovec array, at explicit offsets, so
 * up to max_writes_in_flight writes can run in libuv's threadpool at once. Space in the ring is
 * released only when the write that covers it has completed, oldest first. Records up to 1 KiB (CSV
 * rows) are copied back to back into a 256 KiB staging buffer per write request, allocated on the
 * loop the first time one is seen, because an iovec per row costs the kernel more than the copy;
 * larger records (frames) go to the kernel straight from the ring. fdatasync runs every
 * fsync_interval_ms while data was written since the last one, and once more at close.
 *
 * Waking: a push wakes the loop through uv_async_send only when the bytes pushed since the loop last
 * drained reach wake_bytes; otherwise a timer drains every drain_interval_ms (default 10), on
 * multiples of the interval of the loop's clock, so all of a loop's sinks drain in one wake-up, and
 * a write's completion drains again only when records waited for a free write slot. Rows thus cost
 * no system call on the producer side and are written in batches of one interval (the eye tracker
 * asks for 100 ms: 20 rows of 200 Hz gaze per write instead of one threadpool hand-off each), and
 * large frames are written at once. pirec_sink_flush() writes what is there now. A process killed
 * loses at most the rows of the last drain interval (power loss: the last fsync interval).
 *
 * Errors: the first write, open or sync failure (EIO, ENOSPC, EFBIG, ...) puts the sink in an error
 * state: later pushes fail with that error and count as drops, the error callback runs once on the
 * loop thread, and everything written before stays in the file. As soon as the writes in flight have
 * finished, the file is cut back to the end of the last record written whole without a gap before it
 * (a write that failed part-way leaves part of a record; a later batch in flight may have landed past
 * a failed one), so the file holds exactly the accepted records in order up to the failure, each one
 * whole (a CSV file ends at a whole row); the final bytes_written is what this sink left in the file.
 * With O_APPEND the cut removes only the failed write's partial record. Only a crash between the
 * failure and the cut (a few milliseconds) can leave a record cut short.
 *
 * Threads: pirec_sink_push/_reserve/_commit from exactly one producer thread at a time;
 * pirec_sink_counters() from any thread; everything else on the loop thread.
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct pirec_sink;

struct pirec_sink_options {
  size_t ring_bytes;             /* arena size; default 8 MiB */
  size_t batch_bytes;            /* most payload bytes per write request; default 1 MiB */
  unsigned max_writes_in_flight; /* default 2 */
  unsigned fsync_interval_ms;    /* default 1000; PIREC_SINK_FSYNC_NEVER (0): only the final
                                    fdatasync at close. Taken as given, so start from
                                    pirec_sink_options_default() to get the default */
  size_t wake_bytes;             /* pushes wake the loop past this many pending bytes; default 64 KiB */
  unsigned drain_interval_ms;    /* otherwise drained this often; default 10 */
  int open_flags;                /* default O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC; with O_APPEND the
                                    kernel picks offsets, so only one write is in flight */
  int mode;                      /* default 0644 */
  int mkdir_mode;                /* 0 (default): the directory must exist; else the open first
                                    creates the path's missing parent directories with this mode
                                    (the umask applies), in the threadpool like the open itself,
                                    so a trial's directory costs its loop nothing; a failure is an
                                    open failure, reported through on_error */
  const struct pirec_sink_transform *transform; /* NULL (default): bytes go to the file as pushed */
};

/* An optional transform of each write batch (io/crypt's encryption, docs/PRIVACY.md). With one,
 * every batch becomes one chunk: the loop asks size() for the bytes the chunk takes in the file,
 * a threadpool thread gathers the batch's records and calls apply(), then writes the chunk at its
 * offset; close adds a last chunk with final set (possibly of no records). Chunks are made one at
 * a time, in order (max_writes_in_flight becomes 1), since a chunk may depend on those before it.
 * After an error the file is cut back to the end of the last whole chunk (not record). The
 * counters' bytes_written counts the file's bytes; pirec_sink_whole_end() counts the records' bytes
 * in the whole chunks written (offsets as the producer computed them). The sink owns ctx from pirec_sink_new() on,
 * whatever it returns, and calls free(ctx) when it is freed. */
struct pirec_sink_transform {
  /* Loop thread: the file bytes of the chunk numbered index (0, 1, ...) holding in_len bytes. */
  size_t (*size)(void *ctx, uint64_t index, size_t in_len);
  /* Threadpool: writes exactly size(index, in_len) bytes to out. Returns 0 or a negative errno
   * (the sink's error). */
  int (*apply)(void *ctx, uint64_t index, const unsigned char *in, size_t in_len, int final,
               unsigned char *out);
  void (*free)(void *ctx);
  void *ctx;
};

/* fsync_interval_ms: no periodic fdatasync, only the one at close (the config's
 * `[storage] fsync_interval = 0`). Every other options field reads 0 as "the default". */
#define PIREC_SINK_FSYNC_NEVER 0u

struct pirec_sink_counters {
  uint64_t records;       /* records accepted into the ring */
  uint64_t drops;         /* pushes refused: ring full, too large, or sink in error */
  uint64_t bytes_written; /* bytes the kernel accepted into the file */
  uint64_t writes;        /* write requests completed */
  uint64_t syncs;         /* fdatasync calls completed */
  size_t ring_used;       /* bytes waiting in the ring */
  size_t ring_capacity;
  int error; /* 0, or the negative errno that stopped the sink */
};

/* Runs once on the loop thread when the sink enters the error state. */
typedef void (*pirec_sink_error_cb)(struct pirec_sink *sink, int err, void *user);
/* Runs once on the loop thread when close has finished; counters are final. The sink's memory is
 * freed right after the callback returns. */
typedef void (*pirec_sink_close_cb)(struct pirec_sink *sink, const struct pirec_sink_counters *final,
                                    void *user);

/* Fills opts with the defaults. */
void pirec_sink_options_default(struct pirec_sink_options *opts);

/* Converts the config's `[storage] fsync_interval` (nanoseconds, 0 = only at close) into
 * fsync_interval_ms: 0 gives PIREC_SINK_FSYNC_NEVER, anything else at least 1 ms. */
unsigned pirec_sink_fsync_interval_ms(int64_t interval_ns);

/* Creates a sink for path and starts opening it asynchronously; records pushed before the open
 * completes wait in the ring. opts may be NULL for the defaults; on_error may be NULL.
 * Returns 0 and *out, or a negative errno (invalid options, out of memory) and then nothing runs.
 * An open failure is reported later through on_error. */
int pirec_sink_new(uv_loop_t *loop, const char *path, const struct pirec_sink_options *opts,
                   pirec_sink_error_cb on_error, void *user, struct pirec_sink **out);

/* Producer: copies a record into the ring and wakes the loop if due. Never blocks.
 * Returns 0, -ENOBUFS (ring full), -EMSGSIZE (too large), or the sink's error; all but 0 count a
 * drop. */
int pirec_sink_push(struct pirec_sink *sink, const void *data, size_t len);

/* Producer: zero-copy push; see pirec_ring_reserve/pirec_ring_commit. */
int pirec_sink_reserve(struct pirec_sink *sink, size_t max_len, void **out);
void pirec_sink_commit(struct pirec_sink *sink, size_t len);

/* Counts a record dropped before it reached the sink (shows in drops). Producer thread. */
void pirec_sink_count_drop(struct pirec_sink *sink);

/* Loop thread: drains now instead of waiting for the timer. */
void pirec_sink_flush(struct pirec_sink *sink);

/* Test and benchmark hook: while held, the sink issues no new writes (records pile up in the ring
 * and pushes start failing when it is full). Releasing resumes draining. Loop thread. */
void pirec_sink_hold(struct pirec_sink *sink, int hold);

/* Any thread: a consistent-enough snapshot of the counters. */
void pirec_sink_counters(const struct pirec_sink *sink, struct pirec_sink_counters *out);

/* Loop thread: the end of the file's prefix written whole and in order (every record accepted
 * before this offset is in the file, complete; what the cut after a failure keeps). It only grows,
 * and never passes a record that a failed write left incomplete. Always 0 with O_APPEND. A writer
 * that must not describe data before it is in the file (a frames-CSV row and its frame) waits for
 * this to reach the data's end. */
uint64_t pirec_sink_whole_end(const struct pirec_sink *sink);

/* Runs on the loop thread, with the user pointer given to pirec_sink_new, each time
 * pirec_sink_whole_end() has grown (after write completions, close included); never inside a push.
 * It may push into other sinks. */
typedef void (*pirec_sink_written_cb)(struct pirec_sink *sink, uint64_t whole_end, void *user);
/* Loop thread: sets (or with NULL clears) the written callback. */
void pirec_sink_on_written(struct pirec_sink *sink, pirec_sink_written_cb cb);

/* The path given at creation; valid until the sink is freed. */
const char *pirec_sink_path(const struct pirec_sink *sink);

/* Loop thread. Stops taking pushes, writes everything pushed before the call (a hold is lifted),
 * runs a final fdatasync, closes the file and calls cb, then frees the sink. The producer must have
 * stopped pushing before close is called. cb may be NULL. pirec_sink_close(NULL, ...) is a no-op. */
void pirec_sink_close(struct pirec_sink *sink, pirec_sink_close_cb cb, void *user);

#endif
