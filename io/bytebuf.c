#include "pirec/bytebuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int pirec_bytebuf_init(struct pirec_bytebuf *b, size_t initial, size_t max)
{
  memset(b, 0, sizeof *b);
  if (max == 0 || initial > max)
    return -EINVAL;
  b->max = max;
  if (initial) {
    b->data = malloc(initial);
    if (!b->data)
      return -ENOMEM;
    b->cap = initial;
  }
  return 0;
}

void pirec_bytebuf_free(struct pirec_bytebuf *b)
{
  free(b->data);
  memset(b, 0, sizeof *b);
}

static void compact(struct pirec_bytebuf *b)
{
  size_t n = b->end - b->start;
  if (b->start > 0 && n > 0)
    memmove(b->data, b->data + b->start, n);
  b->start = 0;
  b->end = n;
}

/* Doubling keeps the number of copies logarithmic in the largest item; the cap keeps a stream
 * that never ends its item from taking the machine's memory. */
static int grow(struct pirec_bytebuf *b, size_t need)
{
  size_t cap = b->cap ? b->cap : 4096;
  while (cap < need)
    cap = cap > b->max / 2 ? b->max : cap * 2;
  if (cap > b->max)
    cap = b->max;
  if (cap < need)
    return -ENOBUFS;
  uint8_t *p = realloc(b->data, cap);
  if (!p)
    return -ENOMEM;
  b->data = p;
  b->cap = cap;
  return 0;
}

uint8_t *pirec_bytebuf_space(struct pirec_bytebuf *b, size_t want, size_t *avail)
{
  *avail = 0;
  if (b->cap - b->end < want) {
    /* Moving the tail is cheap next to a read; do it before growing so a buffer sized for the
     * largest item never grows at all. */
    compact(b);
    if (b->cap - b->end < want) {
      if (want > b->max - b->end || grow(b, b->end + want) < 0)
        return NULL;
    }
  }
  *avail = b->cap - b->end;
  return b->data + b->end;
}

void pirec_bytebuf_fill(struct pirec_bytebuf *b, size_t n)
{
  b->end += n;
}

int pirec_bytebuf_append(struct pirec_bytebuf *b, const void *p, size_t n)
{
  size_t avail;
  uint8_t *dst = pirec_bytebuf_space(b, n, &avail);
  if (!dst)
    return n > b->max - pirec_bytebuf_len(b) ? -ENOBUFS : -ENOMEM;
  if (n)
    memcpy(dst, p, n);
  b->end += n;
  return 0;
}

void pirec_bytebuf_consume(struct pirec_bytebuf *b, size_t n)
{
  b->start += n;
  if (b->start == b->end)
    b->start = b->end = 0;
}

void pirec_bytebuf_reset(struct pirec_bytebuf *b)
{
  b->start = b->end = 0;
}
