#ifndef PIREC_JOB_SPLICE_H
#define PIREC_JOB_SPLICE_H

/* A child's stdin fed with vmsplice(2) instead of write(2) (internal to subprocess/, used by job.c
 * for pirec_job_options.stdin_splice).
 *
 * vmsplice without SPLICE_F_GIFT puts references to the caller's pages into the pipe; the bytes
 * are copied only once, by the child's read(2), and that read sees the pages as they are then.
 * So a buffer offered here must stay unchanged until the child has read it, not merely until it
 * is in the pipe. The feed learns how far the child has read from the pipe's fill level
 * (FIONREAD): read = spliced - still in the pipe. It looks when the pipe has room again (while
 * bytes wait), at every new offer, and every SPLICE_CHECK_MS while read-pending bytes remain.
 * Buffers are released in the order offered. After the feed is closed (end of input, an error),
 * bytes already in the pipe may still be read by the child: their buffers are released only by
 * pirec__splice_feed_release_all(), which the job calls once the child has exited.
 *
 * One loop thread. The feed is embedded in its owner's memory; its two handles close through the
 * close callback given to init (one call per handle). */

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct pirec__splice_feed;

/* The owner's callback and argument for one offer, carried untouched. */
typedef void (*pirec__splice_fn)(void);

/* A buffer offered with pirec__splice_feed_write is released: status 0 when the child read it (or
 * it was wholly in the pipe when the child ended), -ECANCELED when it never wholly went in. */
typedef void (*pirec__splice_release_cb)(struct pirec__splice_feed *feed, pirec__splice_fn fn, void *arg,
                                         size_t len, int status);
/* vmsplice failed (EPIPE: the child closed its stdin): the owner closes the feed. */
typedef void (*pirec__splice_error_cb)(struct pirec__splice_feed *feed, int err);
/* Every offered byte is in the pipe (after pirec__splice_feed_shutdown). */
typedef void (*pirec__splice_flushed_cb)(struct pirec__splice_feed *feed);

#define PIREC__SPLICE_MAX_BUFS 4

struct pirec__splice_entry {
  uv_buf_t bufs[PIREC__SPLICE_MAX_BUFS];
  unsigned nbufs;
  size_t len;
  uint64_t end; /* the stream offset just past this entry */
  pirec__splice_fn fn;
  void *arg;
};

struct pirec__splice_feed {
  uv_poll_t poll;
  uv_timer_t timer;
  int fd;
  int open;                      /* fd open, handles not closed */
  int polling;                   /* waiting for room in the pipe */
  int shutting;                  /* flushed_cb wanted once everything is in the pipe */
  struct pirec__splice_entry *q; /* ring of entries not yet released */
  size_t q_cap, q_head, q_count;
  size_t q_next;     /* entries (from head) wholly in the pipe */
  size_t next_off;   /* bytes of entry q_next already in the pipe */
  uint64_t offered;  /* stream offset after the last accepted entry */
  uint64_t spliced;  /* bytes put into the pipe */
  uint64_t consumed; /* bytes the child has read */
  uint64_t released; /* bytes of entries released */
  pirec__splice_release_cb on_release;
  pirec__splice_error_cb on_error;
  pirec__splice_flushed_cb on_flushed;
  uv_close_cb close_cb;
};

/* Takes over fd (the pipe's write end; made non-blocking here) and starts two handles on loop;
 * close_cb runs once for each when the feed is closed, with handle->data == close_data. The owner
 * finds itself from the feed with container_of in on_error and on_flushed.
 * Returns 0 or a negative errno (then fd is not closed and no handle was started). */
int pirec__splice_feed_init(uv_loop_t *loop, struct pirec__splice_feed *feed, int fd,
                            pirec__splice_release_cb on_release, pirec__splice_error_cb on_error,
                            pirec__splice_flushed_cb on_flushed, uv_close_cb close_cb, void *close_data);

/* Queues the buffers (copied descriptors, at most PIREC__SPLICE_MAX_BUFS, len > 0 in total) and
 * puts as much into the pipe as fits now. on_release(feed, fn, arg, len, status) runs exactly once
 * for it, never inside this call. Returns 0, -EINVAL (no bytes, too many buffers), -EPIPE (closed
 * or shutting down), -ENOMEM. */
int pirec__splice_feed_write(struct pirec__splice_feed *feed, const uv_buf_t bufs[], unsigned nbufs,
                             pirec__splice_fn fn, void *arg);

/* Bytes offered and not yet released. */
uint64_t pirec__splice_feed_pending(const struct pirec__splice_feed *feed);

/* Asks for on_flushed once every offered byte is in the pipe (at once when they already are). */
void pirec__splice_feed_shutdown(struct pirec__splice_feed *feed);

/* Closes the fd and the handles; nothing is released here (a part of an entry may be in the pipe
 * still, for the child to read): every entry left waits for release_all. */
void pirec__splice_feed_close(struct pirec__splice_feed *feed);

/* The child is gone, nobody reads the pipe any more: every entry still held is released, in
 * order. Callbacks may offer again (refused: -EPIPE). */
void pirec__splice_feed_release_all(struct pirec__splice_feed *feed);

/* Frees the entry ring (after release_all and the handles' close). */
void pirec__splice_feed_free(struct pirec__splice_feed *feed);

#endif
