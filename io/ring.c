#include "pirec/ring.h"

#include "arena.h"

#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Layout. Positions are byte counters that only grow (64 bits never wrap in practice); the arena
 * offset of a position is pos % capacity. Every record starts with a header and occupies a multiple
 * of RECORD_ALIGN bytes, and the capacity is a multiple of 64, so the space left before the end of
 * the arena is always either zero or large enough for a header. A record that would cross the end
 * is preceded by a pad header that tells the consumer to skip to the start of the arena.
 *
 * Ownership of positions: the producer alone writes head (published with release after the record
 * is complete); the consumer alone writes tail (published with release after the consumer is done
 * with the bytes). Each side keeps a cached copy of the other's position so that the common case
 * reads no cache line the other side writes. */

#define RECORD_ALIGN 16u
#define PAD_MARK     UINT64_MAX
#define CACHE_LINE   64

struct record_header {
  uint64_t len; /* payload bytes, or PAD_MARK */
  uint64_t dropped_before;
};

_Static_assert(sizeof(struct record_header) == RECORD_ALIGN, "header is one alignment unit");

struct pirec_ring {
  /* Fixed at creation. */
  unsigned char *arena;
  struct pirec_arena memory; /* what arena points into, given back to the cache on free */
  size_t capacity;
  size_t max_record;

  /* Producer-written. */
  alignas(CACHE_LINE) _Atomic uint64_t head;
  _Atomic uint64_t pushed;
  _Atomic uint64_t dropped;
  _Atomic uint64_t bytes_pushed;
  _Atomic uint64_t high_water;

  /* Producer-private. */
  alignas(CACHE_LINE) uint64_t tail_cache;
  size_t head_off; /* head % capacity, kept so a push divides nothing */
  uint64_t pending_drops;
  uint64_t reserve_pos; /* where the reserved record's header goes (after any pad) */
  int reserve_pad;      /* a pad goes at head_off on commit */
  size_t reserve_max;
  int reserved;

  /* Consumer-written. */
  alignas(CACHE_LINE) _Atomic uint64_t tail;
  _Atomic uint64_t released;

  /* Consumer-private. */
  alignas(CACHE_LINE) uint64_t head_cache;
  uint64_t take_pos;
  size_t take_off; /* take_pos % capacity */
  size_t tail_off; /* tail % capacity */
  size_t taken;
};

static size_t round_up(size_t n, size_t a)
{
  return (n + a - 1) / a * a;
}

static size_t record_bytes(size_t len)
{
  return round_up(sizeof(struct record_header) + len, RECORD_ALIGN);
}

static struct record_header *header_at(const struct pirec_ring *ring, size_t off)
{
  return (struct record_header *)(ring->arena + off);
}

int pirec_ring_new(size_t capacity_bytes, struct pirec_ring **out)
{
  if (out == NULL || capacity_bytes < 4096 || capacity_bytes > SIZE_MAX / 4)
    return -EINVAL;
  size_t capacity = round_up(capacity_bytes, CACHE_LINE);

  struct pirec_ring *ring = aligned_alloc(CACHE_LINE, round_up(sizeof(*ring), CACHE_LINE));
  if (ring == NULL)
    return -ENOMEM;
  memset(ring, 0, sizeof(*ring));

  if (pirec__arena_get(capacity, &ring->memory) < 0) {
    free(ring);
    return -ENOMEM;
  }
  ring->arena = ring->memory.base;

  ring->capacity = capacity;
  ring->max_record = capacity / 2 - sizeof(struct record_header);
  atomic_init(&ring->head, 0);
  atomic_init(&ring->pushed, 0);
  atomic_init(&ring->dropped, 0);
  atomic_init(&ring->bytes_pushed, 0);
  atomic_init(&ring->high_water, 0);
  atomic_init(&ring->tail, 0);
  atomic_init(&ring->released, 0);
  *out = ring;
  return 0;
}

int pirec_ring_prepare(size_t capacity_bytes)
{
  if (capacity_bytes < 4096 || capacity_bytes > SIZE_MAX / 4)
    return -EINVAL;
  int rc = pirec__arena_prepare(round_up(capacity_bytes, CACHE_LINE));
  return rc == -ENOSPC ? 0 : rc;
}

#define PREPARE_MAX 8

struct prepare_job {
  size_t n;
  size_t capacities[PREPARE_MAX];
};

static void *prepare_thread(void *arg)
{
  struct prepare_job *job = arg;
  /* Named: a thread started from a loop thread would otherwise carry its name, pirec-loop. */
  pthread_setname_np(pthread_self(), "pirec-arena");
  for (size_t i = 0; i < job->n; i++)
    (void)pirec_ring_prepare(job->capacities[i]); /* best effort: a miss only costs time later */
  free(job);
  return NULL;
}

int pirec_ring_prepare_detached(const size_t *capacities, size_t n)
{
  if (n == 0 || n > PREPARE_MAX)
    return -EINVAL;
  struct prepare_job *job = malloc(sizeof *job);
  if (job == NULL)
    return -ENOMEM;
  job->n = n;
  memcpy(job->capacities, capacities, n * sizeof *capacities);
  pthread_attr_t attr;
  pthread_t thread;
  int rc = pthread_attr_init(&attr);
  if (rc == 0) {
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&thread, &attr, prepare_thread, job);
    pthread_attr_destroy(&attr);
  }
  if (rc != 0) {
    free(job);
    return -rc;
  }
  return 0;
}

void pirec_ring_free(struct pirec_ring *ring)
{
  if (ring == NULL)
    return;
  pirec__arena_put(&ring->memory);
  free(ring);
}

size_t pirec_ring_max_record(const struct pirec_ring *ring)
{
  return ring->max_record;
}

/* ---- producer ---- */

/* Single writer: a relaxed load plus store is enough, and readers on other threads see whole values. */
static void counter_add(_Atomic uint64_t *counter, uint64_t n)
{
  atomic_store_explicit(counter, atomic_load_explicit(counter, memory_order_relaxed) + n,
                        memory_order_relaxed);
}

static int refuse(struct pirec_ring *ring, int err)
{
  ring->pending_drops++;
  counter_add(&ring->dropped, 1);
  return err;
}

/* Finds room for a record of len payload bytes. On success sets the record's position and whether
 * a pad goes at the current head (the record then starts the arena) and returns 0. */
static int find_room(struct pirec_ring *ring, size_t len, uint64_t *pos, int *pad)
{
  if (len > ring->max_record)
    return -EMSGSIZE;
  uint64_t head = atomic_load_explicit(&ring->head, memory_order_relaxed);
  uint64_t need = record_bytes(len);
  uint64_t skip = 0;
  if (ring->head_off + need > ring->capacity)
    skip = ring->capacity - ring->head_off;

  if (head + skip + need - ring->tail_cache > ring->capacity) {
    /* Acquire pairs with the consumer's release of tail: its reads of the freed bytes are done. */
    ring->tail_cache = atomic_load_explicit(&ring->tail, memory_order_acquire);
    if (head + skip + need - ring->tail_cache > ring->capacity)
      return -ENOBUFS;
  }
  *pad = skip != 0;
  *pos = head + skip;
  return 0;
}

/* The arena offset of a record found by find_room. */
static size_t room_off(const struct pirec_ring *ring, int pad)
{
  return pad ? 0 : ring->head_off;
}

static void publish(struct pirec_ring *ring, uint64_t pos, int pad, size_t len)
{
  if (pad) {
    struct record_header *ph = header_at(ring, ring->head_off);
    ph->len = PAD_MARK;
    ph->dropped_before = 0;
    ring->head_off = 0;
  }
  struct record_header *h = header_at(ring, ring->head_off);
  h->len = len;
  h->dropped_before = ring->pending_drops;
  ring->pending_drops = 0;

  uint64_t new_head = pos + record_bytes(len);
  ring->head_off += record_bytes(len);
  if (ring->head_off == ring->capacity)
    ring->head_off = 0;
  /* Release: the header and payload written above are visible to a consumer that acquires head. */
  atomic_store_explicit(&ring->head, new_head, memory_order_release);
  counter_add(&ring->pushed, 1);
  counter_add(&ring->bytes_pushed, len);

  uint64_t used = new_head - ring->tail_cache;
  if (used > atomic_load_explicit(&ring->high_water, memory_order_relaxed)) {
    /* The cached tail may be old; look at the real one before raising the mark. */
    ring->tail_cache = atomic_load_explicit(&ring->tail, memory_order_acquire);
    used = new_head - ring->tail_cache;
    if (used > atomic_load_explicit(&ring->high_water, memory_order_relaxed))
      atomic_store_explicit(&ring->high_water, used, memory_order_relaxed);
  }
}

int pirec_ring_push(struct pirec_ring *ring, const void *data, size_t len)
{
  uint64_t pos;
  int pad;
  int err = find_room(ring, len, &pos, &pad);
  if (err < 0)
    return refuse(ring, err);
  if (len > 0)
    memcpy(header_at(ring, room_off(ring, pad)) + 1, data, len);
  publish(ring, pos, pad, len);
  return 0;
}

int pirec_ring_reserve(struct pirec_ring *ring, size_t max_len, void **out)
{
  uint64_t pos;
  int pad;
  int err = find_room(ring, max_len, &pos, &pad);
  if (err < 0) {
    ring->reserved = 0;
    return refuse(ring, err);
  }
  ring->reserve_pos = pos;
  ring->reserve_pad = pad;
  ring->reserve_max = max_len;
  ring->reserved = 1;
  *out = header_at(ring, room_off(ring, pad)) + 1;
  return 0;
}

void pirec_ring_commit(struct pirec_ring *ring, size_t len)
{
  if (!ring->reserved)
    return;
  ring->reserved = 0;
  if (len == 0)
    return;
  if (len > ring->reserve_max)
    len = ring->reserve_max;
  publish(ring, ring->reserve_pos, ring->reserve_pad, len);
}

void pirec_ring_count_drop(struct pirec_ring *ring)
{
  (void)refuse(ring, 0);
}

/* ---- consumer ---- */

size_t pirec_ring_take(struct pirec_ring *ring, struct pirec_ring_record *out, size_t max_records,
                       size_t max_bytes)
{
  size_t n = 0;
  size_t bytes = 0;
  uint64_t pos = ring->take_pos;
  size_t off = ring->take_off;

  while (n < max_records) {
    if (pos == ring->head_cache) {
      /* Acquire pairs with the producer's release of head: the records before it are complete. */
      ring->head_cache = atomic_load_explicit(&ring->head, memory_order_acquire);
      if (pos == ring->head_cache)
        break;
    }
    struct record_header *h = header_at(ring, off);
    if (h->len == PAD_MARK) {
      pos += ring->capacity - off;
      off = 0;
      continue;
    }
    if (n > 0 && bytes + h->len > max_bytes)
      break;
    out[n].data = h + 1;
    out[n].len = h->len;
    out[n].dropped_before = h->dropped_before;
    bytes += h->len;
    n++;
    pos += record_bytes(h->len);
    off += record_bytes(h->len);
    if (off == ring->capacity)
      off = 0;
  }
  ring->take_pos = pos;
  ring->take_off = off;
  ring->taken += n;
  return n;
}

void pirec_ring_release(struct pirec_ring *ring, size_t n)
{
  if (n > ring->taken)
    abort(); /* a caller bug that would hand unread space to the producer */
  uint64_t pos = atomic_load_explicit(&ring->tail, memory_order_relaxed);
  size_t off = ring->tail_off;
  for (size_t i = 0; i < n;) {
    struct record_header *h = header_at(ring, off);
    if (h->len != PAD_MARK) {
      pos += record_bytes(h->len);
      off += record_bytes(h->len);
      i++;
    } else {
      pos += ring->capacity - off;
      off = ring->capacity;
    }
    if (off == ring->capacity)
      off = 0;
  }
  /* A pad right behind the released records was already passed by take; free it too. */
  if (pos < ring->take_pos && header_at(ring, off)->len == PAD_MARK) {
    pos += ring->capacity - off;
    off = 0;
  }
  ring->tail_off = off;
  ring->taken -= n;
  counter_add(&ring->released, n);
  /* Release: the consumer's reads of these bytes happen before the producer reuses them. */
  atomic_store_explicit(&ring->tail, pos, memory_order_release);
}

uint64_t pirec_ring_take_cursor(const struct pirec_ring *ring)
{
  return ring->take_pos;
}

void pirec_ring_release_to(struct pirec_ring *ring, size_t n, uint64_t cursor)
{
  uint64_t pos = atomic_load_explicit(&ring->tail, memory_order_relaxed);
  if (n > ring->taken || cursor > ring->take_pos || cursor < pos)
    abort(); /* a caller bug that would hand unread space to the producer */
  /* Byte positions and arena offsets advance together (a pad moves both to the next lap), so the
   * offset is the position modulo the capacity. */
  size_t off = (size_t)(cursor % ring->capacity);
  if (cursor < ring->take_pos && header_at(ring, off)->len == PAD_MARK) {
    cursor += ring->capacity - off;
    off = 0;
  }
  ring->tail_off = off;
  ring->taken -= n;
  counter_add(&ring->released, n);
  atomic_store_explicit(&ring->tail, cursor, memory_order_release);
}

size_t pirec_ring_taken(const struct pirec_ring *ring)
{
  return ring->taken;
}

int pirec_ring_empty(const struct pirec_ring *ring)
{
  uint64_t pos = ring->take_pos;
  uint64_t head = atomic_load_explicit(&ring->head, memory_order_acquire);
  /* Only a pad can sit between take_pos and head without a record after it, and a pad is written
   * only together with the record that follows it, so pos != head means a record is waiting. */
  return pos == head;
}

/* ---- any thread ---- */

void pirec_ring_stats(const struct pirec_ring *ring, struct pirec_ring_stats *stats)
{
  uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_acquire);
  uint64_t head = atomic_load_explicit(&ring->head, memory_order_acquire);
  stats->pushed = atomic_load_explicit(&ring->pushed, memory_order_relaxed);
  stats->dropped = atomic_load_explicit(&ring->dropped, memory_order_relaxed);
  stats->bytes_pushed = atomic_load_explicit(&ring->bytes_pushed, memory_order_relaxed);
  stats->released = atomic_load_explicit(&ring->released, memory_order_relaxed);
  /* tail is read first, so head >= tail even if both moved in between. */
  stats->used_bytes = (size_t)(head - tail);
  stats->high_water = (size_t)atomic_load_explicit(&ring->high_water, memory_order_relaxed);
  stats->capacity = ring->capacity;
}
