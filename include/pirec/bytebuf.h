#ifndef PIREC_BYTEBUF_H
#define PIREC_BYTEBUF_H

/* A window of bytes for parsers that take a stream in chunks of whatever size arrives (a pipe, a
 * socket, RTP fragments) and hand out whole items (frames, RTSP messages, access units).
 *
 * The unconsumed bytes are data[start, end). A reader asks for writable space, reads into it,
 * reports how much it filled, parses from pirec_bytebuf_data() and consumes what it handed out.
 * Space is made by moving the unconsumed bytes to the front (at most one partial item is moved),
 * then by growing the allocation, never past `max`. Offsets a parser keeps must be relative to
 * pirec_bytebuf_data(): compaction moves the bytes, growth moves the allocation.
 *
 * A plain value embedded in its owner: _init, then _free (which takes a zeroed or freed buffer as
 * a no-op). One thread at a time. */

#include <stddef.h>
#include <stdint.h>

struct pirec_bytebuf {
  uint8_t *data;
  size_t cap;   /* bytes allocated */
  size_t max;   /* the allocation never grows past this */
  size_t start; /* first unconsumed byte */
  size_t end;   /* one past the last filled byte */
};

/* Allocates `initial` bytes (0: none until first needed); the buffer may grow to `max`
 * (max >= initial, max > 0). Returns 0, -EINVAL or -ENOMEM (then nothing is allocated). */
int pirec_bytebuf_init(struct pirec_bytebuf *b, size_t initial, size_t max);
/* Releases the allocation and zeroes b. */
void pirec_bytebuf_free(struct pirec_bytebuf *b);

/* At least `want` writable bytes after the data: returns where they begin and sets *avail to all
 * that is writable there (>= want). NULL (and *avail = 0) when `want` cannot fit even after
 * compaction and growth to `max` (the caller decides: drop the partial item, or fail the stream),
 * or when memory runs out. */
uint8_t *pirec_bytebuf_space(struct pirec_bytebuf *b, size_t want, size_t *avail);
/* Marks n bytes of the space just returned as filled (n <= *avail). */
void pirec_bytebuf_fill(struct pirec_bytebuf *b, size_t n);
/* Copies n bytes to the end. Returns 0, or -ENOBUFS past `max`, -ENOMEM. */
int pirec_bytebuf_append(struct pirec_bytebuf *b, const void *p, size_t n);

/* The unconsumed bytes; valid until the next space, append or free. */
static inline const uint8_t *pirec_bytebuf_data(const struct pirec_bytebuf *b)
{
  return b->data + b->start;
}
static inline size_t pirec_bytebuf_len(const struct pirec_bytebuf *b)
{
  return b->end - b->start;
}
/* Hands out the first n unconsumed bytes (n <= len). Emptying the buffer rewinds it for free. */
void pirec_bytebuf_consume(struct pirec_bytebuf *b, size_t n);
/* Forgets every unconsumed byte (a parser resynchronising); keeps the allocation. */
void pirec_bytebuf_reset(struct pirec_bytebuf *b);

#endif
