/* Tests for io/sink on a real libuv loop writing real files: a 256 MB round trip from a producer
 * thread, close draining a held sink, open failure, and ENOSPC (a small tmpfs) and EFBIG
 * (RLIMIT_FSIZE) provoked for real. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "pirec/container_of.h"
#include "pirec/sink.h"

/* ---- the byte stream: its content depends only on the position, so any part of the file can be
 * regenerated and compared without keeping a copy. ---- */

static uint64_t mix64(uint64_t x)
{
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

static void gen(uint64_t pos, unsigned char *buf, size_t len)
{
  size_t i = 0;
  while (i < len) {
    uint64_t p = pos + i;
    uint64_t w = mix64(p >> 3);
    for (unsigned b = (unsigned)(p & 7); b < 8 && i < len; b++, i++)
      buf[i] = (unsigned char)(w >> (8 * b));
  }
}

/* Compares the file with the stream's first `expect` bytes. Returns the first differing offset,
 * or -1 when the file is exactly that prefix. */
static int64_t verify_file(const char *path, uint64_t expect)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    fprintf(stderr, "cannot open '%s': %s\n", path, strerror(errno));
    return 0;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != expect) {
    fprintf(stderr, "'%s' has %lld bytes, expected %llu\n", path, (long long)st.st_size,
            (unsigned long long)expect);
    close(fd);
    return (int64_t)(expect < (uint64_t)st.st_size ? expect : (uint64_t)st.st_size);
  }
  enum { CHUNK = 1 << 20 };
  unsigned char *got = malloc(CHUNK), *want = malloc(CHUNK);
  uint64_t pos = 0;
  int64_t bad = -1;
  while (pos < expect && bad < 0) {
    ssize_t n = read(fd, got, CHUNK);
    if (n <= 0) {
      bad = (int64_t)pos;
      break;
    }
    gen(pos, want, (size_t)n);
    if (memcmp(got, want, (size_t)n) != 0)
      for (ssize_t i = 0; i < n; i++)
        if (got[i] != want[i]) {
          bad = (int64_t)pos + i;
          break;
        }
    pos += (uint64_t)n;
  }
  free(got);
  free(want);
  close(fd);
  if (bad >= 0)
    fprintf(stderr, "'%s' differs from the input at offset %lld\n", path, (long long)bad);
  return bad;
}

static void sleep_us(long us)
{
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

static char *make_tmpdir(void)
{
  char tmpl[] = "/tmp/pirec-test-sink-XXXXXX";
  char *dir = mkdtemp(tmpl);
  assert_non_null(dir);
  return strdup(dir);
}

/* ---- a producer thread that pushes the stream and a loop that closes the sink after it ---- */

struct run {
  uv_loop_t loop;
  uv_async_t done_async;
  struct pirec_sink *sink;
  uint64_t total; /* stream bytes to offer */
  int big_every;  /* every n-th record is a frame-sized one */
  size_t big_max, small_max;

  /* Producer results. */
  uint64_t offered_bytes; /* stream bytes accepted */
  uint64_t records;
  uint64_t refused_full;  /* -ENOBUFS answers (retried) */
  int first_error;        /* the first error other than -ENOBUFS */
  uint64_t refused_error; /* pushes answered with first_error, including the first */
  int later_other;        /* pushes after the error that got anything else */

  /* Loop results. */
  int error_calls;
  int error_seen;
  int closed;
  struct pirec_sink_counters final;
  const char *path;
  uv_timer_t cut_timer; /* after a failure: waits for the file to end at a whole record */
  int cut_before_close;
};

static void on_sink_error(struct pirec_sink *sink, int err, void *user)
{
  struct run *r = user;
  assert_ptr_equal(sink, r->sink);
  r->error_calls++;
  r->error_seen = err;
}

static void on_sink_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  struct run *r = user;
  assert_ptr_equal(sink, r->sink);
  r->final = *final;
  r->closed++;
}

static size_t record_len(const struct run *r, uint64_t n)
{
  uint64_t h = mix64(n ^ 0x5151);
  if (r->big_every && n % (uint64_t)r->big_every == 0)
    return 1 + (size_t)(h % r->big_max);
  return 1 + (size_t)(h % r->small_max);
}

/* Whether the producer's stream has a record boundary at byte pos. */
static int record_boundary(const struct run *r, uint64_t pos)
{
  uint64_t end = 0;
  for (uint64_t n = 0; end < pos; n++)
    end += record_len(r, n);
  return end == pos;
}

/* A sink that failed cuts its file back to a whole record on its own, before any close: polls the
 * file's size until it is one (the test's timeout bounds the wait), then closes. */
static void on_cut_timer(uv_timer_t *t)
{
  struct run *r = t->data;
  struct stat st;
  struct pirec_sink_counters c;
  pirec_sink_counters(r->sink, &c);
  if (stat(r->path, &st) != 0 || (uint64_t)st.st_size != c.bytes_written ||
      !record_boundary(r, (uint64_t)st.st_size))
    return;
  r->cut_before_close = 1;
  uv_close((uv_handle_t *)t, NULL);
  pirec_sink_close(r->sink, on_sink_closed, r);
}

static void on_producer_done(uv_async_t *handle)
{
  struct run *r = handle->data;
  uv_close((uv_handle_t *)handle, NULL);
  /* Acquire pairs with the producer's release: TSan cannot see that uv_async_send orders them. */
  if (__atomic_load_n(&r->first_error, __ATOMIC_ACQUIRE) && r->path) {
    uv_timer_init(&r->loop, &r->cut_timer);
    r->cut_timer.data = r;
    uv_timer_start(&r->cut_timer, on_cut_timer, 5, 5);
    return;
  }
  pirec_sink_close(r->sink, on_sink_closed, r);
}

static void *producer(void *arg)
{
  struct run *r = arg;
  unsigned char *buf = malloc(r->small_max > r->big_max ? r->small_max : r->big_max);
  uint64_t pos = 0;
  for (uint64_t n = 0; pos < r->total; n++) {
    size_t len = record_len(r, n);
    if (len > r->total - pos)
      len = (size_t)(r->total - pos);
    int rc;
    for (;;) {
      if (n % 2 == 0) {
        /* Zero-copy: generate straight into the ring. */
        void *p;
        rc = pirec_sink_reserve(r->sink, len, &p);
        if (rc == 0) {
          gen(pos, p, len);
          pirec_sink_commit(r->sink, len);
        }
      } else {
        gen(pos, buf, len);
        rc = pirec_sink_push(r->sink, buf, len);
      }
      if (rc != -ENOBUFS)
        break;
      r->refused_full++;
      sleep_us(200); /* the test wants every byte, so it retries what a recorder would drop */
    }
    if (rc != 0) {
      r->first_error = rc;
      r->refused_error++;
      break;
    }
    pos += len;
    r->records++;
  }
  r->offered_bytes = pos;
  if (r->first_error) {
    /* After the error every push fails at once with the same error and counts as a drop. */
    for (int i = 0; i < 1000; i++) {
      int rc = pirec_sink_push(r->sink, buf, 100);
      if (rc == r->first_error)
        r->refused_error++;
      else
        r->later_other++;
    }
  }
  free(buf);
  /* Publishes first_error (and everything before it) to on_producer_done on the loop thread. */
  __atomic_store_n(&r->first_error, r->first_error, __ATOMIC_RELEASE);
  uv_async_send(&r->done_async);
  return NULL;
}

static void run_producer(struct run *r, const char *path, const struct pirec_sink_options *opts)
{
  assert_int_equal(uv_loop_init(&r->loop), 0);
  assert_int_equal(uv_async_init(&r->loop, &r->done_async, on_producer_done), 0);
  r->done_async.data = r;
  assert_int_equal(pirec_sink_new(&r->loop, path, opts, on_sink_error, r, &r->sink), 0);
  assert_string_equal(pirec_sink_path(r->sink), path);
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, producer, r), 0);
  assert_int_equal(uv_run(&r->loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(pthread_join(t, NULL), 0);
  assert_int_equal(uv_loop_close(&r->loop), 0);
  assert_int_equal(r->closed, 1);
}

/* ---- tests ---- */

#define ROUNDTRIP_BYTES (256ull << 20)

static void test_roundtrip_256mb(void **state)
{
  (void)state;
  char *dir = make_tmpdir();
  char path[256];
  snprintf(path, sizeof path, "%s/stream.bin", dir);

  struct run r;
  memset(&r, 0, sizeof r);
  r.total = ROUNDTRIP_BYTES;
  r.big_every = 4;
  r.big_max = 1500000; /* frames */
  r.small_max = 300;   /* rows */
  struct pirec_sink_options o;
  pirec_sink_options_default(&o);
  o.batch_bytes = 256 << 10;
  o.max_writes_in_flight = 4;
  o.fsync_interval_ms = 100;
  /* A drain timer that never fires in the test's lifetime: the data must get out through the
   * producer's wake-ups and the write completions alone. */
  o.drain_interval_ms = 600000;
  run_producer(&r, path, &o);

  printf("roundtrip: %llu bytes in %llu records, %llu writes, %llu syncs, %llu refused while full\n",
         (unsigned long long)r.offered_bytes, (unsigned long long)r.records,
         (unsigned long long)r.final.writes, (unsigned long long)r.final.syncs,
         (unsigned long long)r.refused_full);
  assert_int_equal(r.first_error, 0);
  assert_int_equal(r.error_calls, 0);
  assert_int_equal(r.offered_bytes, ROUNDTRIP_BYTES);
  assert_int_equal(r.final.error, 0);
  assert_int_equal(r.final.records, r.records);
  assert_int_equal(r.final.drops, r.refused_full);
  assert_int_equal(r.final.bytes_written, ROUNDTRIP_BYTES);
  assert_int_equal(r.final.ring_used, 0);
  assert_true(r.final.syncs >= 1); /* at least the final one */
  /* A batch is at most batch_bytes unless a single record is larger. */
  assert_true(r.final.writes >= ROUNDTRIP_BYTES / (o.batch_bytes + r.big_max));
  assert_int_equal(verify_file(path, ROUNDTRIP_BYTES), -1);

  unlink(path);
  rmdir(dir);
  free(dir);
}

struct held {
  int fired;
};

static void on_timer(uv_timer_t *t)
{
  struct held *h = t->data;
  h->fired = 1;
}

static void on_closed_simple(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  *(struct pirec_sink_counters *)user = *final;
}

/* Pushes from the loop thread into a held sink until it is full: nothing is written while held,
 * close writes all accepted records, and the drops are exact. */
static void test_close_drains_held_sink(void **state)
{
  (void)state;
  char *dir = make_tmpdir();
  char path[256];
  snprintf(path, sizeof path, "%s/held.bin", dir);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_sink_options o;
  pirec_sink_options_default(&o);
  o.ring_bytes = 65536;
  o.drain_interval_ms = 1;
  o.wake_bytes = 1;
  struct pirec_sink *sink;
  assert_int_equal(pirec_sink_new(&loop, path, &o, NULL, NULL, &sink), 0);
  pirec_sink_hold(sink, 1);

  /* 100-byte records take 128 ring bytes each: 512 fit in 64 KiB. */
  unsigned char buf[100];
  uint64_t pos = 0;
  int accepted = 0, refused = 0;
  for (int i = 0; i < 530; i++) {
    gen(pos, buf, sizeof buf);
    int rc = pirec_sink_push(sink, buf, sizeof buf);
    if (rc == 0) {
      accepted++;
      pos += sizeof buf;
    } else {
      assert_int_equal(rc, -ENOBUFS);
      refused++;
    }
  }
  assert_int_equal(accepted, 512);
  assert_int_equal(refused, 18);

  /* Let the loop run for 50 ms (open completes, timers fire): a held sink writes nothing. */
  struct held h = {0};
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  t.data = &h;
  uv_timer_start(&t, on_timer, 50, 0);
  while (!h.fired)
    uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  struct pirec_sink_counters c;
  pirec_sink_counters(sink, &c);
  assert_int_equal(c.bytes_written, 0);
  assert_int_equal(c.writes, 0);
  assert_int_equal(c.records, 512);
  assert_int_equal(c.drops, 18);
  assert_int_equal(c.ring_used, 65536);

  struct pirec_sink_counters final;
  memset(&final, 0xff, sizeof final);
  pirec_sink_close(sink, on_closed_simple, &final);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(final.bytes_written, 512 * 100);
  assert_int_equal(final.records, 512);
  assert_int_equal(final.drops, 18);
  assert_int_equal(final.error, 0);
  assert_int_equal(final.ring_used, 0);
  assert_true(final.syncs >= 1);
  assert_int_equal(verify_file(path, 512 * 100), -1);
  unlink(path);
  rmdir(dir);
  free(dir);
}

struct trickle {
  struct pirec_sink *sink;
  uv_timer_t timer;
  int pushed;
  uint64_t pos;
};

static void on_trickle(uv_timer_t *t)
{
  struct trickle *tr = container_of(t, struct trickle, timer);
  unsigned char buf[100];
  gen(tr->pos, buf, sizeof buf);
  assert_int_equal(pirec_sink_push(tr->sink, buf, sizeof buf), 0);
  tr->pos += sizeof buf;
  if (++tr->pushed == 200)
    uv_timer_stop(t);
}

/* Rows arriving one by one (200 Hz gaze) are written in batches by the drain timer, not in one
 * threadpool hand-off each: 200 rows over a second take about 10 write requests at a 100 ms drain
 * interval (the eye tracker's); before, each write's completion drained again the row that had
 * arrived meanwhile, about 20. Late timers on a loaded machine only batch more. */
static void test_trickled_rows_batched(void **state)
{
  (void)state;
  char *dir = make_tmpdir();
  char path[256];
  snprintf(path, sizeof path, "%s/trickle.bin", dir);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct trickle tr = {0};
  struct pirec_sink_options o;
  pirec_sink_options_default(&o);
  o.drain_interval_ms = 100;
  assert_int_equal(pirec_sink_new(&loop, path, &o, NULL, NULL, &tr.sink), 0);
  uv_timer_init(&loop, &tr.timer);
  uv_timer_start(&tr.timer, on_trickle, 5, 5);
  while (tr.pushed < 200)
    uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&tr.timer, NULL);
  struct pirec_sink_counters final;
  pirec_sink_close(tr.sink, on_closed_simple, &final);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  printf("trickle: 200 rows in %llu writes\n", (unsigned long long) final.writes);
  assert_int_equal(final.bytes_written, 200 * 100);
  assert_true(final.writes <= 15);
  assert_int_equal(verify_file(path, 200 * 100), -1);
  unlink(path);
  rmdir(dir);
  free(dir);
}

/* Small records (CSV rows) are copied back to back into one buffer per write request rather than
 * each taking an iovec, so a request carries thousands of rows; larger records in between stay
 * zero-copy. Pushed while held, so the batching does not depend on timing. */
static void test_small_records_coalesce(void **state)
{
  (void)state;
  char *dir = make_tmpdir();
  char path[256];
  snprintf(path, sizeof path, "%s/rows.bin", dir);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_sink_options o;
  pirec_sink_options_default(&o);
  struct pirec_sink *sink;
  assert_int_equal(pirec_sink_new(&loop, path, &o, NULL, NULL, &sink), 0);
  pirec_sink_hold(sink, 1);

  enum { ROWS = 60000 };
  unsigned char buf[3000];
  uint64_t pos = 0;
  for (int i = 0; i < ROWS; i++) {
    size_t len = i % 1000 == 999 ? sizeof buf : 60 + (size_t)(mix64((uint64_t)i) % 80);
    gen(pos, buf, len);
    assert_int_equal(pirec_sink_push(sink, buf, len), 0);
    pos += len;
  }
  struct pirec_sink_counters final;
  pirec_sink_close(sink, on_closed_simple, &final);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  printf("coalesce: %d records, %llu bytes in %llu writes\n", ROWS, (unsigned long long)pos,
         (unsigned long long) final.writes);
  assert_int_equal(final.error, 0);
  assert_int_equal(final.records, ROWS);
  assert_int_equal(final.bytes_written, pos);
  /* One iovec per record would need at least ROWS / 1024 = 59 requests; 256 KiB staging buffers
   * need about pos / 255 KiB (24). */
  assert_true(final.writes <= pos / (255 << 10) + 4);
  assert_int_equal(verify_file(path, pos), -1);
  unlink(path);
  rmdir(dir);
  free(dir);
}

static void on_timer_closed(uv_handle_t *t)
{
  struct held *h = t->data;
  h->fired = 1;
}

/* Runs the loop for ms milliseconds of real time (the sink's own handles keep it busy meanwhile). */
static void run_for(uv_loop_t *loop, uint64_t ms)
{
  struct held h = {0};
  uv_timer_t t;
  uv_timer_init(loop, &t);
  t.data = &h;
  uv_timer_start(&t, on_timer, ms, 0);
  while (!h.fired)
    uv_run(loop, UV_RUN_ONCE);
  /* The timer lives on this stack frame: wait for its close callback before returning. */
  h.fired = 0;
  uv_close((uv_handle_t *)&t, on_timer_closed);
  while (!h.fired)
    uv_run(loop, UV_RUN_ONCE);
}

/* Periodic fdatasync runs while data was written since the last one, never with
 * PIREC_SINK_FSYNC_NEVER; close always ends with one. */
static void test_fsync_interval(void **state)
{
  (void)state;
  char *dir = make_tmpdir();
  char path[2][256];
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_sink *sink[2];
  for (int i = 0; i < 2; i++) {
    snprintf(path[i], sizeof path[i], "%s/sync%d.bin", dir, i);
    struct pirec_sink_options o;
    pirec_sink_options_default(&o);
    o.fsync_interval_ms = i == 0 ? PIREC_SINK_FSYNC_NEVER : 10;
    o.drain_interval_ms = 1;
    assert_int_equal(pirec_sink_new(&loop, path[i], &o, NULL, NULL, &sink[i]), 0);
  }
  unsigned char buf[4096];
  uint64_t pos = 0;
  for (int round = 0; round < 5; round++) {
    gen(pos, buf, sizeof buf);
    for (int i = 0; i < 2; i++)
      assert_int_equal(pirec_sink_push(sink[i], buf, sizeof buf), 0);
    pos += sizeof buf;
    run_for(&loop, 30);
  }
  struct pirec_sink_counters c[2];
  for (int i = 0; i < 2; i++)
    pirec_sink_counters(sink[i], &c[i]);
  assert_int_equal(c[0].bytes_written, pos);
  assert_int_equal(c[0].syncs, 0);
  assert_int_equal(c[1].bytes_written, pos);
  /* Idle: once the syncs for what was written have finished, no more start (nothing new was
   * written). A sync can take hundreds of ms on a loaded disk and the counter moves only when it
   * completes, so: wait for the count to stay put for 250 ms, allow the one sync that may still
   * have been in flight then, and after that nothing may move for another 500 ms. */
  uint64_t before = c[1].syncs;
  for (int i = 0, still = 0; i < 200 && still < 5; i++) {
    run_for(&loop, 50);
    pirec_sink_counters(sink[1], &c[1]);
    still = c[1].syncs == before && before > 0 ? still + 1 : 0;
    before = c[1].syncs;
  }
  assert_true(before >= 1);
  run_for(&loop, 500);
  pirec_sink_counters(sink[1], &c[1]);
  assert_true(c[1].syncs <= before + 1);
  before = c[1].syncs;
  run_for(&loop, 500);
  pirec_sink_counters(sink[1], &c[1]);
  assert_int_equal(c[1].syncs, before);

  struct pirec_sink_counters final[2];
  for (int i = 0; i < 2; i++)
    pirec_sink_close(sink[i], on_closed_simple, &final[i]);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(final[0].syncs, 1);
  assert_int_equal(final[1].syncs, before + 1);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(verify_file(path[i], pos), -1);
    unlink(path[i]);
  }
  rmdir(dir);
  free(dir);
}

/* fsync_interval_ms 0 is the config's `fsync_interval = 0`: no fdatasync until close, however long
 * the sink writes (it used to read as "the default", a sync every second). */
static void test_fsync_zero_only_at_close(void **state)
{
  (void)state;
  assert_int_equal(pirec_sink_fsync_interval_ms(0), PIREC_SINK_FSYNC_NEVER);
  assert_int_equal(pirec_sink_fsync_interval_ms(1), 1);
  assert_int_equal(pirec_sink_fsync_interval_ms(1500000), 2);
  assert_int_equal(pirec_sink_fsync_interval_ms(1000000000), 1000);
  char *dir = make_tmpdir();
  char path[256];
  snprintf(path, sizeof path, "%s/zero.bin", dir);
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_sink_options o;
  pirec_sink_options_default(&o);
  assert_int_equal(o.fsync_interval_ms, 1000);
  o.fsync_interval_ms = 0;
  o.drain_interval_ms = 1;
  struct pirec_sink *sink;
  assert_int_equal(pirec_sink_new(&loop, path, &o, NULL, NULL, &sink), 0);
  unsigned char buf[4096];
  uint64_t pos = 0;
  /* 1.4 s of writes: past the default interval, so a sink taking 0 as "the default" syncs. */
  for (int round = 0; round < 14; round++) {
    gen(pos, buf, sizeof buf);
    assert_int_equal(pirec_sink_push(sink, buf, sizeof buf), 0);
    pos += sizeof buf;
    run_for(&loop, 100);
  }
  struct pirec_sink_counters c;
  pirec_sink_counters(sink, &c);
  assert_int_equal(c.bytes_written, pos);
  assert_int_equal(c.syncs, 0);
  struct pirec_sink_counters final;
  pirec_sink_close(sink, on_closed_simple, &final);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(final.syncs, 1);
  assert_int_equal(verify_file(path, pos), -1);
  unlink(path);
  rmdir(dir);
  free(dir);
}

/* With O_APPEND the kernel chooses offsets: records land after what the file held, in order. */
static void test_append(void **state)
{
  (void)state;
  char *dir = make_tmpdir();
  char path[256];
  snprintf(path, sizeof path, "%s/append.bin", dir);
  enum { HEAD = 1000 };
  unsigned char buf[70000];
  gen(0, buf, HEAD);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, buf, HEAD), HEAD);
  close(fd);

  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_sink_options o;
  pirec_sink_options_default(&o);
  o.open_flags = O_WRONLY | O_APPEND | O_CLOEXEC;
  o.batch_bytes = 100000;
  o.max_writes_in_flight = 4;
  struct pirec_sink *sink;
  assert_int_equal(pirec_sink_new(&loop, path, &o, NULL, NULL, &sink), 0);
  uint64_t pos = HEAD;
  for (int i = 0; i < 40; i++) {
    size_t len = 1 + (size_t)(mix64((uint64_t)i) % sizeof buf);
    gen(pos, buf, len);
    assert_int_equal(pirec_sink_push(sink, buf, len), 0);
    pos += len;
    if (i % 8 == 0)
      run_for(&loop, 2);
  }
  struct pirec_sink_counters final;
  pirec_sink_close(sink, on_closed_simple, &final);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(final.error, 0);
  assert_int_equal(final.bytes_written, pos - HEAD);
  assert_int_equal(verify_file(path, pos), -1);
  unlink(path);
  rmdir(dir);
  free(dir);
}

static void test_open_failure(void **state)
{
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct run r;
  memset(&r, 0, sizeof r);
  assert_int_equal(pirec_sink_new(&loop, "/nonexistent-pirec-dir/x.bin", NULL, on_sink_error, &r, &r.sink),
                   0);
  /* Before the open completes, records wait in the ring. */
  assert_int_equal(pirec_sink_push(r.sink, "abc", 3), 0);
  while (r.error_calls == 0)
    uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(r.error_seen, -ENOENT);
  assert_int_equal(pirec_sink_push(r.sink, "abc", 3), -ENOENT);
  pirec_sink_close(r.sink, on_sink_closed, &r);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(r.error_calls, 1);
  assert_int_equal(r.closed, 1);
  assert_int_equal(r.final.error, -ENOENT);
  assert_int_equal(r.final.records, 1);
  assert_int_equal(r.final.drops, 1);
  assert_int_equal(r.final.bytes_written, 0);
}

/* mkdir_mode: the open makes the missing directories on the way (in the threadpool), and a
 * directory that cannot be made is an open failure through on_error. */
static void test_mkdir_parents(void **state)
{
  (void)state;
  char *dir = make_tmpdir();
  char path[512], blocker[512];
  uv_loop_t loop;
  struct pirec_sink_options o;
  struct pirec_sink *sink;
  struct pirec_sink_counters final;
  struct stat st;

  snprintf(path, sizeof path, "%s/session/camera0/t001.bin", dir);
  assert_int_equal(uv_loop_init(&loop), 0);
  pirec_sink_options_default(&o);
  o.mkdir_mode = 0750;
  assert_int_equal(pirec_sink_new(&loop, path, &o, NULL, NULL, &sink), 0);
  assert_int_equal(pirec_sink_push(sink, "abc", 3), 0);
  pirec_sink_close(sink, on_closed_simple, &final);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(final.error, 0);
  assert_int_equal(final.bytes_written, 3);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, 3);
  snprintf(blocker, sizeof blocker, "%s/session/camera0", dir);
  assert_int_equal(stat(blocker, &st), 0);
  assert_true(S_ISDIR(st.st_mode));
  assert_int_equal(st.st_mode & 0777 & ~0750, 0); /* the mode given, less the umask */

  /* A file where a directory should be: ENOTDIR through on_error, the record counted as dropped. */
  struct run r;
  memset(&r, 0, sizeof r);
  snprintf(blocker, sizeof blocker, "%s/plainfile", dir);
  int fd = open(blocker, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  assert_true(fd >= 0);
  close(fd);
  snprintf(path, sizeof path, "%s/plainfile/sub/t001.bin", dir);
  assert_int_equal(pirec_sink_new(&loop, path, &o, on_sink_error, &r, &r.sink), 0);
  while (r.error_calls == 0)
    uv_run(&loop, UV_RUN_ONCE);
  assert_int_equal(r.error_seen, -ENOTDIR);
  pirec_sink_close(r.sink, on_sink_closed, &r);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(uv_loop_close(&loop), 0);
  assert_int_equal(r.final.error, -ENOTDIR);

  snprintf(path, sizeof path, "rm -rf '%s'", dir);
  assert_int_equal(system(path), 0);
  free(dir);
}

/* A write failure part-way through: reported once, the producer keeps going (its pushes fail at
 * once), and the file holds exactly the stream's first bytes_written bytes. */
static void failure_scenario_flags(const char *path, int expect_err, uint64_t limit, int open_flags)
{
  struct run r;
  memset(&r, 0, sizeof r);
  r.total = 8 * limit; /* far more than fits */
  r.big_every = 8;
  r.big_max = 40000;
  r.small_max = 4096;
  struct pirec_sink_options o;
  pirec_sink_options_default(&o);
  o.ring_bytes = 256 << 10; /* small, so the producer has to wait for the disk */
  o.batch_bytes = 64 << 10;
  o.max_writes_in_flight = 2;
  o.fsync_interval_ms = 20;
  o.open_flags = open_flags;
  r.path = path;
  run_producer(&r, path, &o);

  printf("failure: error %d after %llu bytes written of %llu accepted; %llu refused after it\n",
         r.final.error, (unsigned long long)r.final.bytes_written, (unsigned long long)r.offered_bytes,
         (unsigned long long)r.refused_error);
  assert_int_equal(r.error_calls, 1);
  assert_int_equal(r.error_seen, expect_err);
  assert_int_equal(r.first_error, expect_err);
  assert_int_equal(r.final.error, expect_err);
  assert_int_equal(r.refused_error, 1001);
  assert_int_equal(r.later_other, 0);
  assert_int_equal(r.final.drops, r.refused_full + r.refused_error);
  assert_true(r.final.bytes_written > 0);
  assert_true(r.final.bytes_written <= limit);
  assert_true(r.final.bytes_written <= r.offered_bytes);
  assert_int_equal(verify_file(path, r.final.bytes_written), -1);
  /* the file ends at a whole record, and did so before the close */
  assert_int_equal(r.cut_before_close, 1);
  assert_true(record_boundary(&r, r.final.bytes_written));
}

static void failure_scenario(const char *path, int expect_err, uint64_t limit)
{
  failure_scenario_flags(path, expect_err, limit, 0);
}

static void test_enospc_tmpfs(void **state)
{
  (void)state;
  char *dir = make_tmpdir();
  if (mount("tmpfs", dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m") != 0) {
    int e = errno;
    rmdir(dir);
    free(dir);
    char msg[200];
    snprintf(msg, sizeof msg, "cannot mount a 1 MiB tmpfs (%s); ENOSPC needs root", strerror(e));
    print_message("skipped: %s\n", msg);
    skip();
  }
  char path[256];
  snprintf(path, sizeof path, "%s/full.bin", dir);
  failure_scenario(path, -ENOSPC, 1 << 20);
  unlink(path);
  assert_int_equal(umount2(dir, 0), 0);
  rmdir(dir);
  free(dir);
}

static struct rlimit saved_fsize;
static struct sigaction saved_xfsz;
static int limits_changed;

/* Restores the file size limit and SIGXFSZ even when an assertion ended the test early. */
static int restore_limits(void **state)
{
  (void)state;
  if (limits_changed) {
    limits_changed = 0;
    if (setrlimit(RLIMIT_FSIZE, &saved_fsize) != 0 || sigaction(SIGXFSZ, &saved_xfsz, NULL) != 0)
      return -1;
  }
  return 0;
}

static void test_efbig_rlimit(void **state)
{
  (void)state;
  char *dir = make_tmpdir();
  char path[256];
  snprintf(path, sizeof path, "%s/big.bin", dir);

  /* The limit is per process, so libuv's threadpool threads that run the writes get it too.
   * An odd limit makes the failing write a short one first. */
  const rlim_t limit = 1000003;
  assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved_fsize), 0);
  struct sigaction ign;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  assert_int_equal(sigaction(SIGXFSZ, &ign, &saved_xfsz), 0);
  limits_changed = 1;
  struct rlimit lim = {limit, saved_fsize.rlim_max};
  assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);

  failure_scenario(path, -EFBIG, limit);
  /* O_APPEND (notes.csv): the kernel chose the offsets, the cut still finds the last whole record */
  unlink(path);
  failure_scenario_flags(path, -EFBIG, limit, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC);

  assert_int_equal(restore_limits(NULL), 0);
  unlink(path);
  rmdir(dir);
  free(dir);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip_256mb),
      cmocka_unit_test(test_close_drains_held_sink),
      cmocka_unit_test(test_small_records_coalesce),
      cmocka_unit_test(test_trickled_rows_batched),
      cmocka_unit_test(test_fsync_interval),
      cmocka_unit_test(test_fsync_zero_only_at_close),
      cmocka_unit_test(test_append),
      cmocka_unit_test(test_open_failure),
      cmocka_unit_test(test_mkdir_parents),
      cmocka_unit_test(test_enospc_tmpfs),
      cmocka_unit_test_teardown(test_efbig_rlimit, restore_limits),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
