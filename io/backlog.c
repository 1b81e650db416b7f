/* The backlog (pirec/backlog.h): a byte ring whose positions only grow, like ring.c's, with one
 * owner thread, so no atomics. A record that would cross the arena's end is preceded by a pad
 * header and placed at the start. */

#include "pirec/backlog.h"

#include "arena.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN    32u
#define PAD_KIND UINT32_MAX

struct header {
  int64_t mono_ns;
  uint32_t kind, flags;
  uint64_t len;
  uint64_t spare; /* keeps the header a multiple of ALIGN */
};

_Static_assert(sizeof(struct header) % ALIGN == 0, "header keeps payloads aligned");

struct pirec_backlog {
  struct pirec_arena memory;
  size_t capacity;
  uint64_t head, tail; /* write and read positions */
  uint64_t records, forgotten;
  size_t high_water;
};

static size_t round_up(size_t n, size_t to)
{
  return (n + to - 1) / to * to;
}

int pirec_backlog_new(size_t capacity, struct pirec_backlog **out)
{
  if (capacity < 4096 || capacity > ((size_t)1 << 40))
    return -EINVAL;
  struct pirec_backlog *b = calloc(1, sizeof *b);
  if (!b)
    return -ENOMEM;
  if (pirec__arena_get(capacity, &b->memory) < 0) {
    free(b);
    return -ENOMEM;
  }
  b->capacity = b->memory.len;
  *out = b;
  return 0;
}

void pirec_backlog_free(struct pirec_backlog *b)
{
  if (!b)
    return;
  pirec__arena_put(&b->memory);
  free(b);
}

static struct header *at(const struct pirec_backlog *b, uint64_t pos)
{
  return (struct header *)(b->memory.base + pos % b->capacity);
}

/* The position of the record at pos, past a pad if one is there. */
static uint64_t skip_pad(const struct pirec_backlog *b, uint64_t pos)
{
  if (pos != b->head && at(b, pos)->kind == PAD_KIND)
    pos += b->capacity - pos % b->capacity;
  return pos;
}

static void forget_oldest(struct pirec_backlog *b)
{
  b->tail = skip_pad(b, b->tail);
  const struct header *h = at(b, b->tail);
  b->tail += sizeof *h + round_up(h->len, ALIGN);
  b->records--;
}

void *pirec_backlog_append(struct pirec_backlog *b, uint32_t kind, uint32_t flags, int64_t mono_ns,
                           size_t len, int64_t keep_from)
{
  size_t need = sizeof(struct header) + round_up(len, ALIGN);
  if (need > b->capacity / 2)
    return NULL;
  for (;;) {
    size_t off = b->head % b->capacity;
    size_t pad = off + need > b->capacity ? b->capacity - off : 0;
    if (b->head - b->tail + pad + need <= b->capacity) {
      if (pad) {
        at(b, b->head)->kind = PAD_KIND;
        b->head += pad;
      }
      break;
    }
    if (b->records == 0)
      return NULL; /* cannot happen: an empty arena holds half its size */
    uint64_t oldest = skip_pad(b, b->tail);
    if (at(b, oldest)->mono_ns >= keep_from)
      return NULL;
    forget_oldest(b);
    b->forgotten++;
  }
  struct header *h = at(b, b->head);
  h->mono_ns = mono_ns;
  h->kind = kind;
  h->flags = flags;
  h->len = len;
  b->head += need;
  b->records++;
  if (b->head - b->tail > b->high_water)
    b->high_water = (size_t)(b->head - b->tail);
  return h + 1;
}

uint64_t pirec_backlog_trim(struct pirec_backlog *b, int64_t before_ns)
{
  uint64_t n = 0;
  while (b->records > 0 && at(b, skip_pad(b, b->tail))->mono_ns < before_ns) {
    forget_oldest(b);
    n++;
  }
  if (b->records == 0)
    b->tail = b->head;
  return n;
}

uint64_t pirec_backlog_trim_to_key(struct pirec_backlog *b, uint32_t key_flags, int64_t before_ns)
{
  uint64_t cursor = 0, index = 0, key = 0;
  int found = 0;
  struct pirec_backlog_rec r;
  while (pirec_backlog_next(b, &cursor, &r)) {
    if (r.mono_ns <= before_ns && (r.flags & key_flags) == key_flags) {
      key = index;
      found = 1;
    }
    index++;
  }
  for (uint64_t i = 0; found && i < key; i++)
    forget_oldest(b);
  return found ? key : 0;
}

int64_t pirec_backlog_first_key(const struct pirec_backlog *b, uint32_t key_flags, int64_t cut)
{
  uint64_t cursor = 0;
  int64_t index = 0, found = -1;
  struct pirec_backlog_rec r;
  while (pirec_backlog_next(b, &cursor, &r)) {
    if ((r.flags & key_flags) == key_flags && (found < 0 || r.mono_ns <= cut))
      found = index;
    if (r.mono_ns > cut && found >= 0)
      break;
    index++;
  }
  return found;
}

void pirec_backlog_clear(struct pirec_backlog *b)
{
  b->tail = b->head;
  b->records = 0;
}

int pirec_backlog_next(const struct pirec_backlog *b, uint64_t *cursor, struct pirec_backlog_rec *rec)
{
  uint64_t pos = *cursor < b->tail ? b->tail : *cursor;
  pos = skip_pad(b, pos);
  if (pos >= b->head)
    return 0;
  const struct header *h = at(b, pos);
  rec->mono_ns = h->mono_ns;
  rec->kind = h->kind;
  rec->flags = h->flags;
  rec->len = (size_t)h->len;
  rec->data = h + 1;
  *cursor = pos + sizeof *h + round_up(h->len, ALIGN);
  return 1;
}

void pirec_backlog_stats(const struct pirec_backlog *b, struct pirec_backlog_stats *out)
{
  out->capacity = b->capacity;
  out->used = (size_t)(b->head - b->tail);
  out->high_water = b->high_water;
  out->records = b->records;
  out->forgotten = b->forgotten;
}
