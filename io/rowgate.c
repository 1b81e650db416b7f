/* See include/pirec/rowgate.h. The rows wait in a pirec_ring used by the loop thread alone: one
 * preallocated arena, no allocation per row. */
#include "pirec/rowgate.h"

#include "pirec/ring.h"
#include "pirec/sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct held {
  uint64_t end;
  uint64_t dropped;
};

struct pirec_rowgate {
  struct pirec_ring *ring;
  struct pirec_ring_record cur; /* the oldest row, taken from the ring; valid when have_cur */
  int have_cur;
  size_t held;
};

int pirec_rowgate_new(size_t capacity_bytes, struct pirec_rowgate **out)
{
  *out = NULL;
  if (capacity_bytes < 2 * (PIREC_ROWGATE_ROW_MAX + sizeof(struct held)))
    return -EINVAL;
  struct pirec_rowgate *g = calloc(1, sizeof *g);
  if (!g)
    return -ENOMEM;
  int r = pirec_ring_new(capacity_bytes, &g->ring);
  if (r < 0) {
    free(g);
    return r;
  }
  *out = g;
  return 0;
}

void pirec_rowgate_free(struct pirec_rowgate *g)
{
  if (!g)
    return;
  pirec_ring_free(g->ring);
  free(g);
}

int pirec_rowgate_room(const struct pirec_rowgate *g)
{
  struct pirec_ring_stats st;
  pirec_ring_stats(g->ring, &st);
  /* Free space may be split between the arena's end and its start; twice a record's worst case
   * guarantees one part holds it. */
  return st.capacity - st.used_bytes >= 2 * (PIREC_ROWGATE_ROW_MAX + sizeof(struct held) + 64);
}

int pirec_rowgate_hold(struct pirec_rowgate *g, const char *row, size_t len, uint64_t end, uint64_t dropped)
{
  void *dst;
  if (len > PIREC_ROWGATE_ROW_MAX)
    return -EMSGSIZE;
  int r = pirec_ring_reserve(g->ring, sizeof(struct held) + len, &dst);
  if (r < 0)
    return r;
  struct held h = {.end = end, .dropped = dropped};
  memcpy(dst, &h, sizeof h);
  memcpy((char *)dst + sizeof h, row, len);
  pirec_ring_commit(g->ring, sizeof h + len);
  g->held++;
  return 0;
}

/* The oldest held row into cur; 0 when none is held. */
static int peek(struct pirec_rowgate *g, struct held *h)
{
  if (!g->have_cur && pirec_ring_take(g->ring, &g->cur, 1, SIZE_MAX) == 0)
    return 0;
  g->have_cur = 1;
  memcpy(h, g->cur.data, sizeof *h);
  return 1;
}

static void pop(struct pirec_rowgate *g)
{
  pirec_ring_release(g->ring, 1);
  g->have_cur = 0;
  g->held--;
}

void pirec_rowgate_release(struct pirec_rowgate *g, uint64_t whole_end, struct pirec_sink *csv,
                           struct pirec_rowgate_result *out)
{
  struct held h;
  memset(out, 0, sizeof *out);
  while (peek(g, &h) && h.end <= whole_end) {
    int r = pirec_sink_push(csv, (const char *)g->cur.data + sizeof h, g->cur.len - sizeof h);
    if (r < 0) {
      out->refused++;
      out->refused_dropped += h.dropped;
      if (!out->error)
        out->error = r;
    } else {
      out->rows++;
      out->dropped += h.dropped;
    }
    pop(g);
  }
}

void pirec_rowgate_discard(struct pirec_rowgate *g, uint64_t *rows, uint64_t *dropped)
{
  struct held h;
  uint64_t n = 0, d = 0;
  while (peek(g, &h)) {
    n++;
    d += h.dropped;
    pop(g);
  }
  if (rows)
    *rows = n;
  if (dropped)
    *dropped = d;
}

size_t pirec_rowgate_held(const struct pirec_rowgate *g)
{
  return g->held;
}
