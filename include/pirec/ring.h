#ifndef PIREC_RING_H
#define PIREC_RING_H

/* A lock-free single-producer single-consumer ring of variable-length records.
 *
 * One preallocated arena, every page backed at creation so no page fault happens on a capture path.
 * Arenas of freed rings are kept for reuse (see pirec_ring_prepare), so the bytes of a new ring are
 * not necessarily zero.
 * Each record's payload is contiguous in the arena (a record that would cross the end is placed at
 * the start and the tail of the arena is skipped), so the consumer can hand payload pointers to
 * writev() without copying.
 *
 * Threads: exactly one producer thread calls the producer functions, exactly one consumer thread
 * calls the consumer functions; pirec_ring_stats() may be called from any thread. Creation and
 * pirec_ring_free() happen while neither side runs.
 *
 * Producer functions never block, allocate or make a system call. When a record does not fit, the
 * push fails in O(1) with -ENOBUFS and the drop is counted; the next record that gets in carries the
 * number of records dropped immediately before it (its dropped_before).
 */

#include <stddef.h>
#include <stdint.h>

struct pirec_ring;

struct pirec_ring_record {
  void *data;              /* payload; valid until the record is released */
  size_t len;              /* payload bytes */
  uint64_t dropped_before; /* records refused by a full ring just before this one */
};

struct pirec_ring_stats {
  uint64_t pushed;       /* records committed */
  uint64_t dropped;      /* records refused because the ring was full */
  uint64_t bytes_pushed; /* payload bytes committed */
  uint64_t released;     /* records released by the consumer */
  size_t used_bytes;     /* arena bytes in use, headers and padding included */
  size_t high_water;     /* the largest used_bytes seen by the producer */
  size_t capacity;       /* arena size in bytes */
};

/* Creates a ring whose arena holds capacity_bytes (rounded up to a multiple of 64). A record of up to
 * pirec_ring_max_record(ring) payload bytes always fits an empty ring.
 * Returns 0 and *out, or -EINVAL (capacity below 4 KiB), -ENOMEM. */
int pirec_ring_new(size_t capacity_bytes, struct pirec_ring **out);

/* Readies memory for a later pirec_ring_new of capacity_bytes: an arena is created with every page
 * backed and left in a small process-wide cache (16 arenas of up to 64 MiB, 128 MiB in all), where
 * pirec_ring_new finds it and returns in microseconds instead of faulting the arena in. Rings given
 * back by pirec_ring_free land in the same cache, so the rings of a trial that follows another reuse
 * its memory. This call takes as long as the faults do: run it off the loop thread. Any thread.
 * Returns 0, -EINVAL or -ENOMEM. */
int pirec_ring_prepare(size_t capacity_bytes);

/* Runs pirec_ring_prepare for each of n (at most 8) capacities on a short-lived detached thread, so a
 * recorder can ready its next trial's rings without stalling its loop. Best effort: a ring created
 * before its arena is ready is made on the spot as without this call. Returns 0, -EINVAL, or the
 * negative errno of a thread that could not be started. */
int pirec_ring_prepare_detached(const size_t *capacities, size_t n);

/* Frees the ring; its arena goes to the cache described above or back to the system. NULL is a
 * no-op. */
void pirec_ring_free(struct pirec_ring *ring);

/* The largest payload a single record may have: half the capacity less one record header. */
size_t pirec_ring_max_record(const struct pirec_ring *ring);

/* ---- producer side ---- */

/* Copies len bytes into a new record. Returns 0, -ENOBUFS (full: dropped and counted) or -EMSGSIZE
 * (larger than pirec_ring_max_record(); also counted as a drop). */
int pirec_ring_push(struct pirec_ring *ring, const void *data, size_t len);

/* Zero-copy push in two steps. reserve makes room for up to max_len payload bytes and sets *out to
 * the place to write them; commit publishes the first len bytes (len <= max_len). Commit with len 0
 * abandons the reservation without counting a drop. Nothing else may be pushed in between.
 * reserve returns 0, -ENOBUFS or -EMSGSIZE as push does (and counts the drop). */
int pirec_ring_reserve(struct pirec_ring *ring, size_t max_len, void **out);
void pirec_ring_commit(struct pirec_ring *ring, size_t len);

/* Counts a record the producer decided to drop without trying the ring (for example a frame refused
 * by a full encoder pipe) so it shows up in the next record's dropped_before. */
void pirec_ring_count_drop(struct pirec_ring *ring);

/* ---- consumer side ---- */

/* Takes up to max_records records that follow the ones already taken, stopping before the total
 * payload would pass max_bytes (at least one record is taken if any is available, whatever its
 * size). Taking does not free space: the records stay valid until released. Returns the number of
 * records written to out. */
size_t pirec_ring_take(struct pirec_ring *ring, struct pirec_ring_record *out, size_t max_records,
                       size_t max_bytes);

/* Releases the n oldest taken records, in the order they were taken, and gives their space back to
 * the producer. n must not exceed the number taken and not yet released. */
void pirec_ring_release(struct pirec_ring *ring, size_t n);

/* Where the records taken so far end. Noted right after a take, it lets pirec_ring_release_to()
 * give those records back in O(1) instead of walking their headers again. */
uint64_t pirec_ring_take_cursor(const struct pirec_ring *ring);

/* As pirec_ring_release(ring, n), for the n oldest taken records that end at cursor (the value of
 * pirec_ring_take_cursor() right after the take that took the last of them). A cursor behind the
 * released space or past what was taken aborts. */
void pirec_ring_release_to(struct pirec_ring *ring, size_t n, uint64_t cursor);

/* Records taken but not yet released. */
size_t pirec_ring_taken(const struct pirec_ring *ring);

/* True when no record is waiting to be taken (taken but unreleased records do not count). */
int pirec_ring_empty(const struct pirec_ring *ring);

/* ---- any thread ---- */

void pirec_ring_stats(const struct pirec_ring *ring, struct pirec_ring_stats *stats);

#endif
