#ifndef PIREC_IO_ARENA_H
#define PIREC_IO_ARENA_H

/* Ring arenas: page-backed memory touched at creation, and a small process-wide cache of arenas that
 * rings gave back, so a trial that starts after another one ended reuses memory already backed by
 * the kernel instead of faulting in megabytes on the loop thread.
 *
 * Threads: every function may be called from any thread; the cache is guarded by a mutex that is
 * never held across a system call. None of this is on a producer's path (rings are created and
 * freed while neither side runs). */

#include <stddef.h>

struct pirec_arena {
  unsigned char *base;
  size_t len;    /* usable bytes, a multiple of the page size */
  size_t mapped; /* the mapping's length for munmap; 0 for a heap arena (AddressSanitizer builds) */
};

/* Gives an arena of at least min_len bytes (rounded up to pages): a cached one if one fits without
 * wasting more than its own size, else a new one with every page backed. Never waits for an arena
 * another thread is preparing. Its bytes are not necessarily zero. Returns 0 or -ENOMEM.
 * Mapped arenas are MADV_DONTFORK: a child process (uv_spawn forks) gets none of them, so spawning
 * costs the same with 500 MiB of rings as with none (docs/PERFORMANCE.md, bench-loop). */
int pirec__arena_get(size_t min_len, struct pirec_arena *out);

/* Gives the arena back: it is cached for the next pirec__arena_get if it is at most 64 MiB and the
 * cache has room (16 arenas, 128 MiB), otherwise unmapped. */
void pirec__arena_put(struct pirec_arena *arena);

/* Makes an arena of at least min_len bytes and leaves it in the cache. Returns 0, -ENOMEM,
 * or -ENOSPC when the cache had no room (the arena was given back). */
int pirec__arena_prepare(size_t min_len);

/* The transparent huge page size, or 0 when the kernel offers none (THP disabled or absent):
 * arenas of at least this size start on a multiple of it. Read once from /sys. */
size_t pirec__arena_huge_page_size(void);

/* Arenas and bytes held in the cache now, and arenas being prepared (for tests). */
void pirec__arena_cached(size_t *arenas, size_t *bytes, size_t *being_prepared);

#endif
