/* Tests for io/ring: layout (wrap-around, contiguity), exact full/drop accounting, the zero-copy
 * path, and a two-thread stress with sequence and checksum checks. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pirec/ring.h"

#include "../io/arena.h" /* the arena cache's counters */

/* A payload that depends on the sequence number only, so the consumer can regenerate it. */
static void fill_payload(unsigned char *p, size_t len, uint64_t seq)
{
  uint64_t x = seq * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = (unsigned char)x;
  }
  if (len >= 8)
    memcpy(p, &seq, 8);
}

static int payload_ok(const unsigned char *p, size_t len, uint64_t seq)
{
  unsigned char want[512];
  if (len > sizeof(want))
    return 0;
  fill_payload(want, len, seq);
  return memcmp(p, want, len) == 0;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t len)
{
  const unsigned char *p = data;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 0x100000001B3ull;
  }
  return h;
}

static void test_new_rejects_small(void **state)
{
  (void)state;
  struct pirec_ring *ring = NULL;
  assert_int_equal(pirec_ring_new(4095, &ring), -EINVAL);
  assert_null(ring);
  assert_int_equal(pirec_ring_new(4096, NULL), -EINVAL);
  assert_int_equal(pirec_ring_new(5000, &ring), 0);
  struct pirec_ring_stats st;
  pirec_ring_stats(ring, &st);
  assert_int_equal(st.capacity, 5056); /* rounded up to a multiple of 64 */
  assert_int_equal(pirec_ring_max_record(ring), 5056 / 2 - 16);
  assert_true(pirec_ring_empty(ring));
  pirec_ring_free(ring);
  pirec_ring_free(NULL);
}

/* 100-byte records take 128 bytes of arena each (16-byte header, 16-byte alignment), so a 4096-byte
 * ring holds exactly 32 of them. */
static void test_full_and_drop_accounting(void **state)
{
  (void)state;
  struct pirec_ring *ring;
  assert_int_equal(pirec_ring_new(4096, &ring), 0);
  unsigned char buf[100];
  uint64_t seq = 0;
  for (int i = 0; i < 32; i++) {
    fill_payload(buf, sizeof(buf), seq++);
    assert_int_equal(pirec_ring_push(ring, buf, sizeof(buf)), 0);
  }
  struct pirec_ring_stats st;
  pirec_ring_stats(ring, &st);
  assert_int_equal(st.used_bytes, 4096);
  assert_int_equal(st.high_water, 4096);
  for (int i = 0; i < 5; i++) {
    fill_payload(buf, sizeof(buf), seq++);
    assert_int_equal(pirec_ring_push(ring, buf, sizeof(buf)), -ENOBUFS);
  }
  pirec_ring_count_drop(ring); /* a drop decided before the ring: seq 37 */
  seq++;
  assert_int_equal(pirec_ring_push(ring, buf, pirec_ring_max_record(ring) + 1), -EMSGSIZE);
  seq++;
  pirec_ring_stats(ring, &st);
  assert_int_equal(st.pushed, 32);
  assert_int_equal(st.dropped, 7);

  /* Taking alone frees nothing. */
  struct pirec_ring_record rec[64];
  assert_int_equal(pirec_ring_take(ring, rec, 2, SIZE_MAX), 2);
  assert_int_equal(pirec_ring_taken(ring), 2);
  fill_payload(buf, sizeof(buf), seq);
  assert_int_equal(pirec_ring_push(ring, buf, sizeof(buf)), -ENOBUFS);
  seq++;
  pirec_ring_release(ring, 1);
  assert_int_equal(pirec_ring_taken(ring), 1);
  fill_payload(buf, sizeof(buf), seq);
  assert_int_equal(pirec_ring_push(ring, buf, sizeof(buf)), 0); /* exactly one slot came back */
  uint64_t last_seq = seq++;
  assert_int_equal(pirec_ring_push(ring, buf, sizeof(buf)), -ENOBUFS);
  seq++;
  pirec_ring_release(ring, 1);
  fill_payload(buf, sizeof(buf), seq);
  assert_int_equal(pirec_ring_push(ring, buf, sizeof(buf)), 0);
  uint64_t very_last = seq++;

  size_t n = pirec_ring_take(ring, rec, 64, SIZE_MAX);
  assert_int_equal(n, 32);
  for (size_t i = 0; i < 30; i++) {
    assert_int_equal(rec[i].len, 100);
    assert_int_equal(rec[i].dropped_before, 0);
    assert_true(payload_ok(rec[i].data, rec[i].len, 2 + i));
  }
  assert_int_equal(rec[30].dropped_before, 8); /* 5 full, 1 counted, 1 too large, 1 full */
  assert_true(payload_ok(rec[30].data, 100, last_seq));
  assert_int_equal(rec[31].dropped_before, 1);
  assert_true(payload_ok(rec[31].data, 100, very_last));
  pirec_ring_release(ring, 32);
  pirec_ring_stats(ring, &st);
  assert_int_equal(st.pushed, 34);
  assert_int_equal(st.dropped, 9);
  assert_int_equal(st.released, 34);
  assert_int_equal(st.used_bytes, 0);
  assert_int_equal(st.bytes_pushed, 3400);
  assert_true(pirec_ring_empty(ring));
  pirec_ring_free(ring);
}

/* Records of sizes that do not divide the arena force pads at the end; every record must come out
 * contiguous and intact, in order, for many laps of the arena. */
static void test_wrap_around(void **state)
{
  (void)state;
  struct pirec_ring *ring;
  assert_int_equal(pirec_ring_new(4096, &ring), 0);
  struct pirec_ring_stats st;
  pirec_ring_stats(ring, &st);
  const unsigned char *lo = NULL, *hi = NULL;
  unsigned char buf[512];
  uint64_t pushed = 0, got = 0, wraps = 0;
  const unsigned char *prev = NULL;
  for (int round = 0; round < 2000; round++) {
    /* Push 1 to 5 records of 1 to 500 bytes, then take and check all. */
    int k = 1 + round % 5;
    for (int i = 0; i < k; i++) {
      size_t len = 1 + (pushed * 131) % 500;
      fill_payload(buf, len, pushed);
      assert_int_equal(pirec_ring_push(ring, buf, len), 0);
      pushed++;
    }
    struct pirec_ring_record rec[8];
    size_t n = pirec_ring_take(ring, rec, 8, SIZE_MAX);
    uint64_t cursor = pirec_ring_take_cursor(ring);
    assert_int_equal(n, (size_t)k);
    for (size_t i = 0; i < n; i++) {
      size_t len = 1 + (got * 131) % 500;
      assert_int_equal(rec[i].len, len);
      assert_int_equal(rec[i].dropped_before, 0);
      assert_true(payload_ok(rec[i].data, len, got));
      const unsigned char *p = rec[i].data;
      if (prev != NULL && p < prev)
        wraps++;
      prev = p;
      if (lo == NULL || p < lo)
        lo = p;
      if (hi == NULL || p + len > hi)
        hi = p + len;
      got++;
    }
    /* Both ways of giving space back, across every kind of wrap. */
    if (round % 2)
      pirec_ring_release_to(ring, n, cursor);
    else
      pirec_ring_release(ring, n);
  }
  /* All payloads lie inside one 4096-byte span (the arena), so none was split across its end. */
  assert_true((size_t)(hi - lo) <= st.capacity);
  assert_true(wraps > 100);
  pirec_ring_stats(ring, &st);
  assert_int_equal(st.used_bytes, 0);
  assert_int_equal(st.dropped, 0);
  assert_int_equal(st.pushed, pushed);
  pirec_ring_free(ring);
}

/* A record of max_record bytes must fit an empty ring whatever the current offset. */
static void test_max_record_fits_at_any_offset(void **state)
{
  (void)state;
  struct pirec_ring *ring;
  assert_int_equal(pirec_ring_new(4096, &ring), 0);
  size_t max = pirec_ring_max_record(ring);
  unsigned char *big = malloc(max);
  assert_non_null(big);
  struct pirec_ring_record rec[2];
  for (size_t shift = 0; shift < 4096; shift += 16) {
    fill_payload(big, max, shift);
    assert_int_equal(pirec_ring_push(ring, big, max), 0);
    assert_int_equal(pirec_ring_take(ring, rec, 2, SIZE_MAX), 1);
    assert_int_equal(rec[0].len, max);
    assert_true(payload_ok(rec[0].data, 64, shift));
    pirec_ring_release(ring, 1);
    /* Advance the offset by one 16-byte unit (a 0-byte record is a bare header). */
    assert_int_equal(pirec_ring_push(ring, NULL, 0), 0);
    assert_int_equal(pirec_ring_take(ring, rec, 2, SIZE_MAX), 1);
    assert_int_equal(rec[0].len, 0);
    pirec_ring_release(ring, 1);
  }
  free(big);
  pirec_ring_free(ring);
}

static void test_reserve_commit(void **state)
{
  (void)state;
  struct pirec_ring *ring;
  assert_int_equal(pirec_ring_new(4096, &ring), 0);
  void *p;
  assert_int_equal(pirec_ring_reserve(ring, 1000, &p), 0);
  memcpy(p, "hello", 5);
  pirec_ring_commit(ring, 5);
  assert_int_equal(pirec_ring_reserve(ring, 1000, &p), 0);
  pirec_ring_commit(ring, 0); /* abandoned: no record, no drop */
  assert_int_equal(pirec_ring_reserve(ring, 3000, &p), -EMSGSIZE);
  struct pirec_ring_stats st;
  pirec_ring_stats(ring, &st);
  assert_int_equal(st.pushed, 1);
  assert_int_equal(st.dropped, 1);
  assert_int_equal(st.used_bytes, 32); /* the committed length decides the space used */
  assert_int_equal(pirec_ring_reserve(ring, 10, &p), 0);
  memcpy(p, "world", 5);
  pirec_ring_commit(ring, 5);
  struct pirec_ring_record rec[4];
  assert_int_equal(pirec_ring_take(ring, rec, 4, SIZE_MAX), 2);
  assert_memory_equal(rec[0].data, "hello", 5);
  assert_int_equal(rec[0].dropped_before, 0);
  assert_memory_equal(rec[1].data, "world", 5);
  assert_int_equal(rec[1].dropped_before, 1);
  pirec_ring_release(ring, 2);
  pirec_ring_free(ring);
}

static void test_take_limits(void **state)
{
  (void)state;
  struct pirec_ring *ring;
  assert_int_equal(pirec_ring_new(65536, &ring), 0);
  unsigned char buf[1000];
  memset(buf, 7, sizeof(buf));
  for (int i = 0; i < 10; i++)
    assert_int_equal(pirec_ring_push(ring, buf, sizeof(buf)), 0);
  struct pirec_ring_record rec[16];
  /* Byte budget: 2500 bytes admit two 1000-byte records. */
  assert_int_equal(pirec_ring_take(ring, rec, 16, 2500), 2);
  /* A budget smaller than one record still takes one. */
  assert_int_equal(pirec_ring_take(ring, rec, 16, 10), 1);
  assert_int_equal(pirec_ring_take(ring, rec, 3, SIZE_MAX), 3);
  assert_int_equal(pirec_ring_taken(ring), 6);
  assert_false(pirec_ring_empty(ring));
  assert_int_equal(pirec_ring_take(ring, rec, 16, SIZE_MAX), 4);
  assert_true(pirec_ring_empty(ring));
  assert_int_equal(pirec_ring_take(ring, rec, 16, SIZE_MAX), 0);
  pirec_ring_release(ring, 10);
  assert_int_equal(pirec_ring_taken(ring), 0);
  pirec_ring_free(ring);
}

/* ---- two-thread stress ---- */

/* 10^7 in every build, TSan's included (about 100 s there on 2 shared cores, hence the test's
 * long timeout): fewer would let a rare ordering bug slip through exactly where it is looked for. */
#define STRESS_RECORDS 10000000ull

struct stress {
  struct pirec_ring *ring;
  uint64_t attempts;      /* producer: records offered (seq numbers used) */
  uint64_t accepted;      /* producer: pushes that succeeded */
  uint64_t sum_accepted;  /* producer: checksum over accepted payloads */
  uint64_t producer_done; /* set with release when the producer stops */
  uint64_t received;      /* consumer */
  uint64_t dropped_seen;  /* consumer: sum of dropped_before */
  uint64_t sum_received;
  uint64_t bad;           /* consumer: records out of sequence or corrupted */
  uint64_t next_expected; /* consumer: the seq after the last record received */
};

/* Lengths 0..299; records that go through reserve/commit are at least 1 byte, since a zero-length
 * commit abandons the reservation. */
static size_t stress_len(uint64_t seq)
{
  size_t len = (size_t)((seq * 2654435761u) >> 7) % 300;
  return (seq % 3 == 0 && len == 0) ? 1 : len;
}

static void *stress_producer(void *arg)
{
  struct stress *s = arg;
  unsigned char buf[512];
  for (uint64_t seq = 0; seq < STRESS_RECORDS; seq++) {
    size_t len = stress_len(seq);
    int rc;
    if (seq % 3 == 0) {
      void *p;
      rc = pirec_ring_reserve(s->ring, 300, &p);
      if (rc == 0) {
        fill_payload(p, len, seq);
        s->sum_accepted += fnv1a(0xcbf29ce484222325ull, p, len);
        pirec_ring_commit(s->ring, len);
      }
    } else {
      fill_payload(buf, len, seq);
      rc = pirec_ring_push(s->ring, buf, len);
      if (rc == 0)
        s->sum_accepted += fnv1a(0xcbf29ce484222325ull, buf, len);
    }
    if (rc == 0)
      s->accepted++;
    else if (seq % 64 == 0)
      sched_yield(); /* let the consumer catch up now and then so both regimes are exercised */
    s->attempts++;
  }
  __atomic_store_n(&s->producer_done, 1, __ATOMIC_RELEASE);
  return NULL;
}

static void *stress_consumer(void *arg)
{
  struct stress *s = arg;
  struct pirec_ring_record rec[64];
  uint64_t expect = 0;
  unsigned idle = 0, iteration = 0;
  size_t pending = 0; /* records of the previous take still held, as a sink's write in flight */
  uint64_t pending_end = 0;
  for (;;) {
    size_t n = pirec_ring_take(s->ring, rec, 64, 8192);
    uint64_t end = pirec_ring_take_cursor(s->ring);
    if (n == 0) {
      if (pending) {
        pirec_ring_release_to(s->ring, pending, pending_end);
        pending = 0;
      }
      if (__atomic_load_n(&s->producer_done, __ATOMIC_ACQUIRE) && pirec_ring_empty(s->ring))
        break;
      if (++idle % 16 == 0)
        sched_yield();
      continue;
    }
    for (size_t i = 0; i < n; i++) {
      uint64_t seq = expect + rec[i].dropped_before;
      size_t len = stress_len(seq);
      if (rec[i].len != len || !payload_ok(rec[i].data, len, seq))
        s->bad++;
      s->sum_received += fnv1a(0xcbf29ce484222325ull, rec[i].data, rec[i].len);
      s->dropped_seen += rec[i].dropped_before;
      expect = seq + 1;
      s->received++;
    }
    /* Every other take is held until after the next one, then released in O(1) by its cursor;
     * the rest are released at once in two steps, to exercise partial releases. */
    if (pending) {
      pirec_ring_release_to(s->ring, pending, pending_end);
      pending = 0;
    }
    if (iteration++ % 2) {
      pending = n;
      pending_end = end;
    } else {
      pirec_ring_release(s->ring, n / 2);
      pirec_ring_release(s->ring, n - n / 2);
    }
  }
  s->next_expected = expect;
  return NULL;
}

/* An arena of a huge page or more starts on a huge-page boundary when the kernel has transparent
 * huge pages, so MADV_HUGEPAGE can back it with a few large pages (creating a ring at a trial start
 * then takes a few faults instead of thousands). The first record's header sits at the arena's
 * start. Whether the kernel actually gave huge pages depends on free memory, so that is printed,
 * not asserted. */
static void test_arena_huge_page_aligned(void **state)
{
  (void)state;
  size_t huge = pirec__arena_huge_page_size();
  if (huge == 0) {
    printf("no transparent huge pages here: nothing to check\n");
    skip();
  }
  struct pirec_ring *ring;
  assert_int_equal(pirec_ring_new((size_t)huge * 4 + 4096, &ring), 0);
  unsigned char byte = 7;
  assert_int_equal(pirec_ring_push(ring, &byte, 1), 0);
  struct pirec_ring_record rec;
  assert_int_equal(pirec_ring_take(ring, &rec, 1, SIZE_MAX), 1);
  uintptr_t arena = (uintptr_t)rec.data - 16; /* one 16-byte header before the payload */
  assert_int_equal(arena % huge, 0);
  /* Informational: how much of it the kernel backed with huge pages. */
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[256];
  int inside = 0;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long long lo, hi, kb;
    if (sscanf(line, "%llx-%llx ", &lo, &hi) == 2)
      inside = lo <= arena && arena < hi;
    else if (inside && sscanf(line, "AnonHugePages: %llu kB", &kb) == 1)
      printf("arena at %#llx: %llu kB in huge pages of %llu kB\n", (unsigned long long)arena, kb,
             (unsigned long long)(huge >> 10));
  }
  if (f)
    fclose(f);
  pirec_ring_release(ring, 1);
  pirec_ring_free(ring);
}

/* The payload address of a one-byte record pushed into an empty ring: the arena's start plus one
 * header, so equal addresses mean the same arena. */
static uintptr_t arena_of(struct pirec_ring *ring)
{
  unsigned char byte = 1;
  assert_int_equal(pirec_ring_push(ring, &byte, 1), 0);
  struct pirec_ring_record rec;
  assert_int_equal(pirec_ring_take(ring, &rec, 1, SIZE_MAX), 1);
  pirec_ring_release(ring, 1);
  return (uintptr_t)rec.data;
}

static size_t cached_arenas(size_t *preparing)
{
  size_t arenas, bytes, p;
  pirec__arena_cached(&arenas, &bytes, &p);
  if (preparing)
    *preparing = p;
  return arenas;
}

/* A freed ring's arena is kept and serves the next ring of its size (a trial after a trial starts
 * without faulting in memory again), but not a ring of less than half its size. */
static void test_freed_arena_reused(void **state)
{
  (void)state;
  size_t before = cached_arenas(NULL);
  struct pirec_ring *a, *b, *small;
  assert_int_equal(pirec_ring_new(3u << 20, &a), 0);
  uintptr_t first = arena_of(a);
  pirec_ring_free(a);
  assert_int_equal(cached_arenas(NULL), before + 1);
  assert_int_equal(pirec_ring_new(3u << 20, &b), 0);
  assert_int_equal(cached_arenas(NULL), before);
  assert_true(arena_of(b) == first);
  /* Reused bytes are not zero, and need not be: a record is only read after it was written. */
  char msg[] = "after reuse";
  assert_int_equal(pirec_ring_push(b, msg, sizeof msg), 0);
  struct pirec_ring_record rec;
  assert_int_equal(pirec_ring_take(b, &rec, 1, SIZE_MAX), 1);
  assert_memory_equal(rec.data, msg, sizeof msg);
  assert_int_equal(rec.dropped_before, 0);
  pirec_ring_free(b);
  assert_int_equal(pirec_ring_new(64u << 10, &small), 0);
  assert_true(arena_of(small) != first);
  assert_int_equal(pirec_ring_new(3u << 20, &b), 0);
  assert_true(arena_of(b) == first); /* still cached: the small ring did not take it */
  pirec_ring_free(small);
  pirec_ring_free(b);
}

/* pirec_ring_prepare leaves an arena that the next pirec_ring_new of that size takes. */
static void test_prepare_then_new(void **state)
{
  (void)state;
  size_t before = cached_arenas(NULL);
  assert_int_equal(pirec_ring_prepare(5u << 20), 0);
  assert_int_equal(cached_arenas(NULL), before + 1);
  struct pirec_ring *ring;
  assert_int_equal(pirec_ring_new(5u << 20, &ring), 0);
  assert_int_equal(cached_arenas(NULL), before);
  pirec_ring_free(ring);
  assert_int_equal(pirec_ring_prepare(100), -EINVAL);
}

/* A ring created while an arena of its size is still being prepared on another thread does not
 * wait for it (a loop thread would stall for the whole page-faulting, tests/census): it makes its
 * own, so once the preparation is done and the ring freed, two more arenas are cached, not one. */
static void test_prepare_detached_is_not_awaited(void **state)
{
  (void)state;
  const size_t size = 24u << 20; /* no other test leaves an arena that would fit */
  size_t before = cached_arenas(NULL), preparing = 0;
  assert_int_equal(pirec_ring_prepare_detached(&size, 1), 0);
  /* Until the thread has announced its work, a new ring would not know to wait. */
  while (cached_arenas(&preparing) == before && preparing == 0)
    sched_yield();
  struct pirec_ring *ring;
  assert_int_equal(pirec_ring_new(size, &ring), 0);
  while (cached_arenas(&preparing), preparing != 0)
    sched_yield();
  pirec_ring_free(ring);
  assert_int_equal(cached_arenas(&preparing), before + 2);
  assert_int_equal(pirec_ring_prepare_detached(&size, 0), -EINVAL);
}

static void test_two_thread_stress(void **state)
{
  (void)state;
  struct stress s;
  memset(&s, 0, sizeof(s));
  assert_int_equal(pirec_ring_new(64 * 1024, &s.ring), 0);
  pthread_t prod, cons;
  assert_int_equal(pthread_create(&cons, NULL, stress_consumer, &s), 0);
  assert_int_equal(pthread_create(&prod, NULL, stress_producer, &s), 0);
  assert_int_equal(pthread_join(prod, NULL), 0);
  assert_int_equal(pthread_join(cons, NULL), 0);

  struct pirec_ring_stats st;
  pirec_ring_stats(s.ring, &st);
  printf("stress: %llu offered, %llu delivered, %llu dropped, high water %zu of %zu\n",
         (unsigned long long)s.attempts, (unsigned long long)s.received, (unsigned long long)st.dropped,
         st.high_water, st.capacity);
  assert_int_equal(s.attempts, STRESS_RECORDS);
  assert_int_equal(s.bad, 0);
  assert_int_equal(s.received, s.accepted);
  assert_int_equal(st.pushed, s.accepted);
  assert_int_equal(st.released, s.accepted);
  assert_int_equal(st.dropped, STRESS_RECORDS - s.accepted);
  /* Drops after the last accepted record are carried by no record; all others are. */
  assert_int_equal(s.dropped_seen + (STRESS_RECORDS - s.next_expected), st.dropped);
  assert_int_equal(s.sum_received, s.sum_accepted);
  assert_int_equal(st.used_bytes, 0);
  assert_true(s.received > STRESS_RECORDS / 10);
  pirec_ring_free(s.ring);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_new_rejects_small),
      cmocka_unit_test(test_full_and_drop_accounting),
      cmocka_unit_test(test_wrap_around),
      cmocka_unit_test(test_max_record_fits_at_any_offset),
      cmocka_unit_test(test_reserve_commit),
      cmocka_unit_test(test_take_limits),
      cmocka_unit_test(test_arena_huge_page_aligned),
      cmocka_unit_test(test_freed_arena_reused),
      cmocka_unit_test(test_prepare_then_new),
      cmocka_unit_test(test_prepare_detached_is_not_awaited),
      cmocka_unit_test(test_two_thread_stress),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
