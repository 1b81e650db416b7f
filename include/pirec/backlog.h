#ifndef PIREC_BACKLOG_H
#define PIREC_BACKLOG_H

/* A backlog: the most recent records of a recorder kept in bounded memory while no trial writes
 * them, so that a trial can begin with what came just before its start (the scene video's current
 * GOP, the seconds of a pre-trigger buffer, the samples of a trial change).
 *
 * It differs from pirec_ring (ring.h) in what happens when it is full: a ring refuses the newest
 * record, a backlog forgets the oldest. One thread only (the recorder's loop), no locks.
 *
 * Memory: one arena of the given capacity, every page backed at creation (io/arena.h), so appending
 * never faults or allocates. Records are stored in order of appending, each with the caller's
 * CLOCK_MONOTONIC stamp, a kind and flags; payloads are contiguous and 8-byte aligned.
 */

#include <stddef.h>
#include <stdint.h>

struct pirec_backlog;

struct pirec_backlog_rec {
  int64_t mono_ns;
  uint32_t kind, flags; /* the caller's */
  size_t len;
  const void *data; /* valid until the next append, trim, clear or free */
};

struct pirec_backlog_stats {
  size_t capacity;    /* arena bytes */
  size_t used;        /* bytes held now, headers and padding included */
  size_t high_water;  /* the largest used seen */
  uint64_t records;   /* records held now */
  uint64_t forgotten; /* records removed to make room (not by trim or clear) */
};

/* Makes a backlog of capacity bytes (rounded up to pages; at least 4 KiB). Returns 0 and *out,
 * -EINVAL or -ENOMEM. Nothing is allocated on failure. */
int pirec_backlog_new(size_t capacity, struct pirec_backlog **out);
/* Frees; NULL is a no-op. */
void pirec_backlog_free(struct pirec_backlog *b);

/* Appends a record of len bytes and returns where to write them (valid until the next call on b).
 * To make room the oldest records are forgotten, but only those stamped before keep_from: when
 * room needs a newer one, or len exceeds half the capacity, nothing is appended and NULL returned
 * (the caller counts the sample as lost). INT64_MAX as keep_from lets every record go. */
void *pirec_backlog_append(struct pirec_backlog *b, uint32_t kind, uint32_t flags, int64_t mono_ns,
                           size_t len, int64_t keep_from);

/* Removes the oldest records stamped before before_ns (appending order: it stops at the first
 * record stamped at or after it). Returns how many went. */
uint64_t pirec_backlog_trim(struct pirec_backlog *b, int64_t before_ns);
/* Removes the records before the newest one that has every bit of key_flags and is stamped at or
 * before before_ns (a video backlog keeps whole GOPs: from the keyframe at or before a moment).
 * Nothing goes when no record qualifies. Returns how many went. */
uint64_t pirec_backlog_trim_to_key(struct pirec_backlog *b, uint32_t key_flags, int64_t before_ns);
/* The index (in iteration order) of the record a video file should start with for a start at
 * cut: the newest record with every bit of key_flags stamped at or before cut, else the first
 * one with them; -1 when none has them. */
int64_t pirec_backlog_first_key(const struct pirec_backlog *b, uint32_t key_flags, int64_t cut);
/* Removes every record. */
void pirec_backlog_clear(struct pirec_backlog *b);

/* Iteration, oldest first: *cursor starts at 0; returns 1 and *rec, or 0 at the end. Appending,
 * trimming or clearing ends an iteration. */
int pirec_backlog_next(const struct pirec_backlog *b, uint64_t *cursor, struct pirec_backlog_rec *rec);

void pirec_backlog_stats(const struct pirec_backlog *b, struct pirec_backlog_stats *out);

#endif
