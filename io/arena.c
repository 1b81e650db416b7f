#include "arena.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define ARENA_ON_HEAP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ARENA_ON_HEAP 1
#endif
#endif
#ifndef ARENA_ON_HEAP
#define ARENA_ON_HEAP 0
#endif

#define CACHE_SLOTS     16
#define CACHE_MAX_BYTES ((size_t)128 << 20)
#define CACHE_MAX_ARENA ((size_t)64 << 20) /* larger arenas are capture rings, not trial rings */

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pirec_arena cache[CACHE_SLOTS]; /* base == NULL: empty slot */
static size_t cache_bytes;
static size_t preparing[CACHE_SLOTS]; /* lengths of arenas being made by pirec__arena_prepare */

static size_t page_size(void)
{
  long page = sysconf(_SC_PAGESIZE);
  return page > 0 ? (size_t)page : 4096;
}

size_t pirec__arena_huge_page_size(void)
{
  static _Atomic size_t known = SIZE_MAX;
  size_t size = atomic_load_explicit(&known, memory_order_relaxed);
  if (size != SIZE_MAX)
    return size;
  size = 0;
  char mode[128] = "";
  FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "re");
  if (f) {
    if (!fgets(mode, sizeof mode, f))
      mode[0] = 0;
    fclose(f);
  }
  f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "re");
  unsigned long long pmd = 0;
  if (f) {
    if (fscanf(f, "%llu", &pmd) != 1)
      pmd = 0;
    fclose(f);
  }
  if (mode[0] && !strstr(mode, "[never]") && pmd >= 4096 && (pmd & (pmd - 1)) == 0)
    size = (size_t)pmd;
  atomic_store_explicit(&known, size, memory_order_relaxed);
  return size;
}

/* A new arena of len bytes (a multiple of the page size), every page backed now so a capture
 * thread's first pass copies at full speed instead of taking a fault per page. Arenas of a huge page
 * or more start on a huge-page boundary and are asked for huge pages (MADV_HUGEPAGE): a few faults
 * instead of thousands, and fewer TLB misses while copying. Without THP they are plain pages. */
static int arena_new(size_t len, struct pirec_arena *out)
{
  size_t huge = pirec__arena_huge_page_size();
  int aligned = huge && len >= huge;
#if ARENA_ON_HEAP
  /* Under AddressSanitizer the arena comes from its heap, which has redzones around it, so a bug
   * that runs past the arena's end is reported instead of landing in a neighbouring mapping. */
  void *heap = NULL;
  if (posix_memalign(&heap, aligned ? huge : page_size(), len) != 0)
    return -ENOMEM;
  memset(heap, 0, len);
  *out = (struct pirec_arena){heap, len, 0};
  return 0;
#else
  size_t map_len = len + (aligned ? huge : 0);
  unsigned char *p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return -ENOMEM;
  if (aligned) {
    /* Trim to a huge-page-aligned start: the unused head and tail go back at once. */
    size_t head = (size_t)(-(uintptr_t)p & (huge - 1));
    if (head)
      munmap(p, head);
    munmap(p + head + len, huge - head);
    p += head;
    map_len = len;
    (void)madvise(p, len, MADV_HUGEPAGE); /* advice only: plain pages if refused */
  }
  /* fork() copies the page tables of every private mapping, so a recorder holding hundreds of MiB
   * of arenas paid milliseconds of loop time per child it spawned (uv_spawn forks on Linux). The
   * child only execs, and never needs the rings. */
  (void)madvise(p, map_len, MADV_DONTFORK);
  /* The mapping reads as zeros already; one write per 4 KiB makes the kernel back every page now
   * (a whole huge page for the first write into it) without a second pass over the bytes. */
  for (size_t off = 0; off < len; off += 4096)
    ((volatile unsigned char *)p)[off] = 0;
  *out = (struct pirec_arena){p, len, map_len};
  return 0;
#endif
}

static void arena_release(struct pirec_arena *a)
{
  if (a->mapped)
    munmap(a->base, a->mapped);
  else
    free(a->base);
  a->base = NULL;
}

static size_t page_round(size_t len)
{
  size_t page = page_size();
  return (len + page - 1) / page * page;
}

/* Whether an arena of have bytes should serve a request for len: no more than twice the size asked
 * for, so a video ring's 32 MiB does not end up holding a 512 KiB CSV ring. */
static int fits(size_t have, size_t len)
{
  return have >= len && have / 2 <= len;
}

/* Caller holds cache_lock. Takes the best-fitting cached arena; 0 if there was one. */
static int cache_take(size_t len, struct pirec_arena *out)
{
  int best = -1;
  for (int i = 0; i < CACHE_SLOTS; i++)
    if (cache[i].base && fits(cache[i].len, len) && (best < 0 || cache[i].len < cache[best].len))
      best = i;
  if (best < 0)
    return -1;
  *out = cache[best];
  cache_bytes -= cache[best].len;
  cache[best].base = NULL;
  return 0;
}

/* Caller holds cache_lock. Keeps the arena if there is room (arena->base becomes NULL). */
static void cache_keep(struct pirec_arena *arena)
{
  if (arena->len > CACHE_MAX_ARENA || cache_bytes + arena->len > CACHE_MAX_BYTES)
    return;
  for (int i = 0; i < CACHE_SLOTS; i++)
    if (cache[i].base == NULL) {
      cache[i] = *arena;
      cache_bytes += arena->len;
      arena->base = NULL;
      return;
    }
}

int pirec__arena_get(size_t min_len, struct pirec_arena *out)
{
  size_t len = page_round(min_len);
  pthread_mutex_lock(&cache_lock);
  /* Never waits for an arena being prepared on another thread: the caller is usually a loop thread
   * starting a trial, and waiting there for megabytes to be faulted in elsewhere stalled it for
   * tens of milliseconds (the census, tests/census). Making a second one at the same time costs
   * memory work only; the spare goes to the cache. */
  int found = cache_take(len, out) == 0;
  pthread_mutex_unlock(&cache_lock);
  return found ? 0 : arena_new(len, out);
}

void pirec__arena_put(struct pirec_arena *arena)
{
  if (arena->base == NULL)
    return;
  pthread_mutex_lock(&cache_lock);
  cache_keep(arena);
  pthread_mutex_unlock(&cache_lock);
  if (arena->base)
    arena_release(arena);
}

int pirec__arena_prepare(size_t min_len)
{
  size_t len = page_round(min_len);
  int slot = -1;
  pthread_mutex_lock(&cache_lock);
  for (int i = 0; i < CACHE_SLOTS && slot < 0; i++)
    if (preparing[i] == 0)
      slot = i;
  if (slot >= 0)
    preparing[slot] = len;
  pthread_mutex_unlock(&cache_lock);

  struct pirec_arena arena;
  int rc = arena_new(len, &arena);

  pthread_mutex_lock(&cache_lock);
  if (rc == 0)
    cache_keep(&arena);
  if (slot >= 0)
    preparing[slot] = 0;
  pthread_mutex_unlock(&cache_lock);
  if (rc == 0 && arena.base) {
    arena_release(&arena); /* no room in the cache */
    rc = -ENOSPC;
  }
  return rc;
}

void pirec__arena_cached(size_t *arenas, size_t *bytes, size_t *being_prepared)
{
  size_t n = 0, p = 0;
  pthread_mutex_lock(&cache_lock);
  for (int i = 0; i < CACHE_SLOTS; i++) {
    n += cache[i].base != NULL;
    p += preparing[i] != 0;
  }
  *bytes = cache_bytes;
  pthread_mutex_unlock(&cache_lock);
  *arenas = n;
  *being_prepared = p;
}
