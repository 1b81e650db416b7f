/* bench-write: the write path measured side by side with the naive alternatives, in one run.
 *
 *   latency   rows (100 B, 1000/s) and frames (1.4 MB, 30 fps) pushed by two producer threads into
 *             two ring+sinks on one libuv loop: while the sinks are held (stalled, rounds of
 *             stall then drain) and while they write; then the same rows and frames written with
 *             write(2) from the producer threads, as a naive recorder does
 *   memcpy    the reference for a frame hand-off: one plain memcpy of a frame
 *   throughput 1.4 MB frames through ring+sink vs a plain write(2) loop, both ending in fdatasync
 *   csv       100-byte rows through the CSV writer, ring and sink vs fprintf to a buffered FILE*
 *
 * Prints one JSON object with --json (the figures docs/PERFORMANCE.md quotes), a summary otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "pirec/clock.h"
#include "pirec/csv.h"
#include "pirec/ring.h"
#include "pirec/sink.h"
#include "pirec/crypt.h"

#define FRAME_BYTES 1400000
#define ROW_BYTES   100

static void die(const char *what, int err)
{
  fprintf(stderr, "bench-write: %s: %s\n", what, strerror(err < 0 ? -err : err));
  exit(1);
}

/* ---- settings ---- */

struct settings {
  int json;
  int pin;
  int rt;
  const char *dir;
  unsigned stall_rounds;
  unsigned stall_ms;
  unsigned writing_ms;
  unsigned direct_ms;
  unsigned throughput_mb;
  unsigned throughput_runs; /* at most MAX_RUNS */
  unsigned csv_rows;
  size_t tput_ring, tput_batch;
  unsigned tput_inflight;
  int encrypt; /* --encrypt: the latency sinks encrypt (io/crypt) */
};

static void usage(void)
{
  fprintf(
      stderr,
      "usage: bench-write [--json] [--dir DIR] [--scale N] [--quick] [--only PART] [--runs N]\n"
      "                   [--no-pin] [--no-rt] [--tput-ring-mb N] [--tput-batch-kb N] [--tput-inflight N]\n"
      "  --json        print one JSON object\n"
      "  --dir DIR     where the files go (default: a new directory under $TMPDIR or /var/tmp)\n"
      "  --scale N     N times longer latency phases and N times more throughput/csv data\n"
      "                (default 1: about 45 s in all)\n"
      "  --quick       a few seconds in all, for a smoke test (figures are rough)\n"
      "  --tput-ring-mb N, --tput-batch-kb N, --tput-inflight N\n"
      "                the throughput sink's ring, batch and writes in flight (16, 2048, 2)\n"
      "  --only PART   run one part: latency, direct, tput, csv or arena (others print 0)\n"
      "  --encrypt     the latency part's sinks encrypt ([storage] encrypt_to); the throughput part\n"
      "                always also runs an encrypting sink beside the clear one\n"
      "  --runs N      throughput and csv runs per side, alternated, medians (default 5)\n"
      "  --no-pin      do not pin the loop, producers and libuv's threadpool to CPUs\n"
      "  --no-rt       do not try SCHED_FIFO for the latency producers (tried by default;\n"
      "                without the privilege they run as ordinary threads, see \"rt\")\n"
      "BENCH_DEBUG=1 prints the timeline of each csv run on stderr.\n");
}

/* ---- CPUs ---- */

struct cpu_plan {
  int n; /* CPUs we may run on */
  int loop, rows, frames, workers;
};

static int cpu_list[CPU_SETSIZE];

static void plan_cpus(struct cpu_plan *p, int pin)
{
  cpu_set_t set;
  memset(p, 0, sizeof(*p));
  p->loop = p->rows = p->frames = p->workers = -1;
  if (sched_getaffinity(0, sizeof set, &set) != 0)
    return;
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set))
      cpu_list[p->n++] = c;
  if (!pin || p->n < 2)
    return;
  /* libuv's workers copy megabytes into the page cache; on the loop's CPU they delay the loop's
   * completions by milliseconds, so they get a CPU of their own (the last). The frame producer
   * shares it on a 2-CPU machine: its copies are short and the row producer, whose latency is the
   * figure that matters, stays with the mostly idle loop. */
  p->loop = cpu_list[0];
  p->workers = cpu_list[p->n - 1];
  if (p->n == 2) {
    p->rows = cpu_list[0];
    p->frames = cpu_list[1];
  } else if (p->n == 3) {
    p->rows = cpu_list[1];
    p->frames = cpu_list[1];
  } else {
    p->rows = cpu_list[1];
    p->frames = cpu_list[2];
  }
}

static void pin_self(int cpu)
{
  if (cpu < 0)
    return;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
  if (rc != 0)
    die("pthread_setaffinity_np", rc);
}

static _Atomic int rt_refused;

/* A capture thread that only stamps and copies can run at real-time priority: it sleeps almost all
 * the time, and then no ordinary thread on its CPU can preempt it in the middle of a push. */
static void make_rt(int on)
{
  if (!on)
    return;
  struct sched_param sp = {.sched_priority = 10};
  if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) != 0)
    atomic_store(&rt_refused, 1);
}

static void noop_work(uv_work_t *w)
{
  (void)w;
}
static void noop_after(uv_work_t *w, int status)
{
  (void)w, (void)status;
}

/* libuv starts all its threadpool threads at the first submission, and threads inherit the
 * creating thread's CPU mask: start them now from the worker CPU, then move the loop thread. */
static void start_threadpool(uv_loop_t *loop, const struct cpu_plan *p)
{
  pin_self(p->workers);
  uv_work_t w;
  int rc = uv_queue_work(loop, &w, noop_work, noop_after);
  if (rc < 0)
    die("uv_queue_work", rc);
  uv_run(loop, UV_RUN_DEFAULT);
  if (p->loop >= 0)
    pin_self(p->loop);
}

/* ---- helpers ---- */

/* CPU time of the whole process (every thread: producer, loop, libuv's workers), user + system. */
static int64_t process_cpu_ns(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ((int64_t)ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
         ((int64_t)ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

static int64_t now_ns(void)
{
  return pirec_clock_mono_ns();
}

static void sleep_until(int64_t t)
{
  struct timespec ts = {t / 1000000000, t % 1000000000};
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

static void sleep_ns(int64_t ns)
{
  sleep_until(now_ns() + ns);
}

static void *touched_alloc(size_t n)
{
  void *p = aligned_alloc(4096, (n + 4095) / 4096 * 4096);
  if (p == NULL)
    die("out of memory", ENOMEM);
  memset(p, 0x5a, n);
  return p;
}

struct samples {
  int64_t *v;
  size_t n, cap;
};

static void samples_init(struct samples *s, size_t cap)
{
  s->v = touched_alloc(cap * sizeof(int64_t));
  s->n = 0;
  s->cap = cap;
}

static void samples_add(struct samples *s, int64_t x)
{
  if (s->n < s->cap)
    s->v[s->n++] = x;
}

static int cmp_i64(const void *a, const void *b)
{
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

struct pct {
  int64_t p50, p99, p999, max;
  size_t n;
};

/* Nearest-rank percentiles. */
static struct pct percentiles(struct samples *s)
{
  struct pct r = {0, 0, 0, 0, s->n};
  if (s->n == 0)
    return r;
  qsort(s->v, s->n, sizeof(int64_t), cmp_i64);
  size_t n = s->n;
#define RANK(q) \
  (s->v[(size_t)((q) * (double)n + 0.999999) > 0 ? (size_t)((q) * (double)n + 0.999999) - 1 : 0])
  r.p50 = RANK(0.5);
  r.p99 = RANK(0.99);
  r.p999 = RANK(0.999);
  r.max = s->v[n - 1];
#undef RANK
  return r;
}

static void merge(struct samples *dst, const struct samples *a, const struct samples *b)
{
  samples_init(dst, a->n + b->n + 1);
  memcpy(dst->v, a->v, a->n * sizeof(int64_t));
  memcpy(dst->v + a->n, b->v, b->n * sizeof(int64_t));
  dst->n = a->n + b->n;
}

/* ---- latency experiment: two producers, two sinks, one loop ---- */

enum phase { PH_STALL = 1, PH_DRAIN, PH_WRITING, PH_DONE };

struct producer {
  struct bench *b;
  const char *name;
  struct pirec_sink *sink; /* ring+sink mode */
  int fd;                  /* write(2) mode */
  int cpu;
  int64_t period_ns;
  size_t len;
  unsigned char *src;
  struct samples stall, writing, refused_ns, direct;
  uint64_t pushes, refused, refused_stall, errors;
};

struct bench {
  struct settings set;
  struct cpu_plan cpus;
  uv_loop_t loop;
  _Atomic int phase;
  uv_timer_t tick;
  int closes;
  unsigned rounds_done;
  int64_t phase_end;
  struct producer rows, frames;
  struct pirec_sink_counters rows_final, frames_final;
};

static void *latency_producer(void *arg)
{
  struct producer *p = arg;
  struct bench *b = p->b;
  pthread_setname_np(pthread_self(), p->name);
  pin_self(p->cpu);
  make_rt(b->set.rt);
  int64_t next = now_ns() + p->period_ns;
  uint64_t n = 0;
  for (;;) {
    sleep_until(next);
    next += p->period_ns;
    int64_t t = now_ns();
    if (next < t)
      next = t + p->period_ns; /* we were off the CPU for a period or more: do not burst */
    int ph0 = atomic_load_explicit(&b->phase, memory_order_acquire);
    if (ph0 == PH_DONE)
      break;
    memcpy(p->src, &n, sizeof n); /* each row or frame differs */
    n++;
    int rc;
    int64_t t0 = now_ns();
    if (p->sink != NULL) {
      rc = pirec_sink_push(p->sink, p->src, p->len);
    } else {
      ssize_t w = 0;
      size_t done = 0;
      while (done < p->len && (w = write(p->fd, p->src + done, p->len - done)) > 0)
        done += (size_t)w;
      rc = w < 0 ? -errno : 0;
    }
    int64_t t1 = now_ns();
    int ph1 = atomic_load_explicit(&b->phase, memory_order_acquire);
    p->pushes++;
    if (rc != 0) {
      if (rc == -ENOBUFS) {
        p->refused++;
        if (ph0 == PH_STALL)
          p->refused_stall++;
        samples_add(&p->refused_ns, t1 - t0);
      } else {
        p->errors++;
      }
      continue;
    }
    if (ph0 != ph1)
      continue; /* straddles a phase change: belongs to neither */
    if (p->sink == NULL)
      samples_add(&p->direct, t1 - t0);
    else if (ph0 == PH_STALL)
      samples_add(&p->stall, t1 - t0);
    else if (ph0 == PH_WRITING)
      samples_add(&p->writing, t1 - t0);
  }
  return NULL;
}

static void on_latency_sink_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final,
                                   void *user)
{
  struct bench *b = user;
  if (sink == b->rows.sink)
    b->rows_final = *final;
  else
    b->frames_final = *final;
  b->closes++;
}

static void on_sink_error(struct pirec_sink *sink, int err, void *user)
{
  (void)user;
  fprintf(stderr, "bench-write: sink '%s' failed: %s\n", pirec_sink_path(sink), strerror(-err));
}

static void set_phase(struct bench *b, enum phase ph)
{
  atomic_store_explicit(&b->phase, (int)ph, memory_order_release);
}

static void on_tick(uv_timer_t *t)
{
  struct bench *b = t->data;
  int64_t now = now_ns();
  struct pirec_sink_counters rc, fc;
  switch (atomic_load(&b->phase)) {
  case PH_STALL:
    if (now >= b->phase_end) {
      set_phase(b, PH_DRAIN);
      pirec_sink_hold(b->rows.sink, 0);
      pirec_sink_hold(b->frames.sink, 0);
    }
    break;
  case PH_DRAIN:
    pirec_sink_counters(b->rows.sink, &rc);
    pirec_sink_counters(b->frames.sink, &fc);
    if (fc.ring_used > 0 || rc.ring_used > ROW_BYTES * 64)
      break;
    if (++b->rounds_done < b->set.stall_rounds) {
      pirec_sink_hold(b->rows.sink, 1);
      pirec_sink_hold(b->frames.sink, 1);
      b->phase_end = now + (int64_t)b->set.stall_ms * 1000000;
      set_phase(b, PH_STALL);
    } else {
      b->phase_end = now + (int64_t)b->set.writing_ms * 1000000;
      set_phase(b, PH_WRITING);
    }
    break;
  case PH_WRITING:
    if (now >= b->phase_end) {
      set_phase(b, PH_DONE);
      uv_timer_stop(t);
      uv_close((uv_handle_t *)t, NULL);
    }
    break;
  default: break;
  }
}

static void producer_init(struct producer *p, struct bench *b, const char *name, int cpu, int64_t period_ns,
                          size_t len, size_t max_samples)
{
  memset(p, 0, sizeof(*p));
  p->b = b;
  p->name = name;
  p->cpu = cpu;
  p->period_ns = period_ns;
  p->len = len;
  p->fd = -1;
  p->src = touched_alloc(len);
  samples_init(&p->stall, max_samples);
  samples_init(&p->writing, max_samples);
  samples_init(&p->refused_ns, max_samples);
  samples_init(&p->direct, max_samples);
}

/* With enc, points o at an encrypting transform (tf) for path under a fresh session key. */
static void maybe_encrypt(const char *path, struct pirec_sink_options *o, struct pirec_sink_transform *tf,
                          int enc)
{
  struct pirec_crypt_key *key;
  if (!enc)
    return;
  int rc = pirec_crypt_key_new(&key);
  if (rc == 0)
    rc = pirec_crypt_sink_transform(key, NULL, path, tf);
  if (rc < 0)
    die("encrypting sink", rc);
  pirec_crypt_key_free(key);
  o->transform = tf;
}

static void run_latency(struct bench *b)
{
  char path[512];
  struct pirec_sink_options o;

  pirec_sink_options_default(&o);
  struct pirec_sink_transform xf;
  o.ring_bytes = 1 << 20; /* 8 s of rows */
  o.batch_bytes = 256 << 10;
  snprintf(path, sizeof path, "%s/rows.csv", b->set.dir);
  maybe_encrypt(path, &o, &xf, b->set.encrypt);
  int rc = pirec_sink_new(&b->loop, path, &o, on_sink_error, b, &b->rows.sink);
  if (rc < 0)
    die("pirec_sink_new rows", rc);

  pirec_sink_options_default(&o);
  o.ring_bytes = 32u << 20; /* 22 frames, 0.75 s at 30 fps */
  o.batch_bytes = 4u << 20;
  o.wake_bytes = 1u << 20; /* every frame wakes the loop */
  snprintf(path, sizeof path, "%s/frames.bin", b->set.dir);
  maybe_encrypt(path, &o, &xf, b->set.encrypt);
  rc = pirec_sink_new(&b->loop, path, &o, on_sink_error, b, &b->frames.sink);
  if (rc < 0)
    die("pirec_sink_new frames", rc);

  pirec_sink_hold(b->rows.sink, 1);
  pirec_sink_hold(b->frames.sink, 1);
  b->phase_end = now_ns() + (int64_t)b->set.stall_ms * 1000000;
  set_phase(b, PH_STALL);

  uv_timer_init(&b->loop, &b->tick);
  b->tick.data = b;
  uv_timer_start(&b->tick, on_tick, 5, 5);

  pthread_t tr, tf;
  pthread_create(&tr, NULL, latency_producer, &b->rows);
  pthread_create(&tf, NULL, latency_producer, &b->frames);
  /* Run until the tick timer closes itself (PH_DONE); the sinks' own handles keep the loop alive. */
  while (atomic_load(&b->phase) != PH_DONE)
    uv_run(&b->loop, UV_RUN_ONCE);
  pthread_join(tr, NULL);
  pthread_join(tf, NULL);
  pirec_sink_close(b->rows.sink, on_latency_sink_closed, b);
  pirec_sink_close(b->frames.sink, on_latency_sink_closed, b);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  if (b->closes != 2)
    die("latency sinks did not close", EIO);
}

static void run_direct(struct bench *b)
{
  char path[512];
  snprintf(path, sizeof path, "%s/direct-rows.csv", b->set.dir);
  b->rows.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  snprintf(path, sizeof path, "%s/direct-frames.bin", b->set.dir);
  b->frames.fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (b->rows.fd < 0 || b->frames.fd < 0)
    die("open direct files", errno);
  b->rows.sink = b->frames.sink = NULL;
  set_phase(b, PH_WRITING);
  pthread_t tr, tf;
  pthread_create(&tr, NULL, latency_producer, &b->rows);
  pthread_create(&tf, NULL, latency_producer, &b->frames);
  sleep_ns((int64_t)b->set.direct_ms * 1000000);
  set_phase(b, PH_DONE);
  pthread_join(tr, NULL);
  pthread_join(tf, NULL);
  close(b->rows.fd);
  close(b->frames.fd);
}

/* ---- memcpy reference ---- */

struct memcpy_ref {
  size_t area_bytes;
  int runs;
  int64_t period_ns; /* 0: back to back */
  int cpu, rt;
  int64_t median;
};

/* The reference for a frame hand-off: plain memcpy of a frame into pre-touched memory. Paced at
 * the frame rate by a thread placed like the frame producer, the copy meets the caches, TLB and
 * clock speed a capture thread meets; back to back over one buffer it shows the best case. */
static void *memcpy_ref_thread(void *arg)
{
  struct memcpy_ref *r = arg;
  pthread_setname_np(pthread_self(), "memcpy-ref");
  pin_self(r->cpu);
  make_rt(r->rt);
  unsigned char *src = touched_alloc(FRAME_BYTES);
  unsigned char *area = touched_alloc(r->area_bytes);
  size_t slots = r->area_bytes / FRAME_BYTES;
  struct samples s;
  samples_init(&s, (size_t)r->runs);
  int64_t next = now_ns() + r->period_ns;
  for (int i = 0; i < r->runs; i++) {
    if (r->period_ns) {
      sleep_until(next);
      next += r->period_ns;
    }
    unsigned char *dst = area + (size_t)i % slots * FRAME_BYTES;
    memcpy(src, &i, sizeof i);
    int64_t t0 = now_ns();
    memcpy(dst, src, FRAME_BYTES);
    int64_t t1 = now_ns();
    __asm__ volatile("" : : "r"(dst) : "memory"); /* keep the copy */
    samples_add(&s, t1 - t0);
  }
  r->median = percentiles(&s).p50;
  free(s.v);
  free(src);
  free(area);
  return NULL;
}

/* Creating a ring of a camera's trial size (8.5 MiB) as a trial start does on the loop thread, three
 * ways, medians of `runs` each, side by side: a fresh arena (rings held, so none is reused), an arena
 * a freed ring left in the cache (the second and later trials), and the old way, freshly allocated
 * 4 KiB pages faulted in with memset. */
static void ring_new_costs(int runs, int64_t *fresh_ns, int64_t *reused_ns, int64_t *fault_ns)
{
  const size_t bytes = (8u << 20) + (512u << 10);
  int64_t *fr = calloc((size_t)runs, sizeof *fr), *re = calloc((size_t)runs, sizeof *re),
          *fa = calloc((size_t)runs, sizeof *fa);
  struct pirec_ring **held = calloc((size_t)runs, sizeof *held);
  if (!fr || !re || !fa || !held)
    die("calloc", ENOMEM);
  for (int i = 0; i < runs; i++) {
    int64_t t0 = now_ns();
    unsigned char *p = aligned_alloc(4096, bytes);
    if (!p)
      die("aligned_alloc", ENOMEM);
    memset(p, 0, bytes);
    __asm__ volatile("" ::"r"(p) : "memory"); /* the pages must really be touched */
    fa[i] = now_ns() - t0;
    free(p);
    t0 = now_ns();
    int rc = pirec_ring_new(bytes, &held[i]);
    if (rc < 0)
      die("pirec_ring_new", rc);
    fr[i] = now_ns() - t0;
  }
  for (int i = 0; i < runs; i++)
    pirec_ring_free(held[i]);
  for (int i = 0; i < runs; i++) {
    struct pirec_ring *ring;
    int64_t t0 = now_ns();
    int rc = pirec_ring_new(bytes, &ring);
    if (rc < 0)
      die("pirec_ring_new", rc);
    re[i] = now_ns() - t0;
    pirec_ring_free(ring);
  }
  qsort(fr, (size_t)runs, sizeof *fr, cmp_i64);
  qsort(re, (size_t)runs, sizeof *re, cmp_i64);
  qsort(fa, (size_t)runs, sizeof *fa, cmp_i64);
  *fresh_ns = fr[runs / 2];
  *reused_ns = re[runs / 2];
  *fault_ns = fa[runs / 2];
  free(fr);
  free(re);
  free(fa);
  free(held);
}

/* Huge pages or not for a ring arena, decided from figures: an 8.5 MiB anonymous mapping aligned to
 * 2 MiB, made exactly as io/arena.c makes one (one write per 4 KiB backs it), with MADV_HUGEPAGE and
 * with MADV_NOHUGEPAGE, alternated, medians of `runs`; then what each costs afterwards: one frame
 * (1.4 MB) copied into it, the median over the frames that fit, from a warm source. */
struct arena_fig {
  int64_t new_thp_ns, new_plain_ns, copy_thp_ns, copy_plain_ns;
};

static void arena_one(int huge, size_t bytes, const unsigned char *src, int64_t *new_ns, int64_t *copy_ns)
{
  const size_t align = 2u << 20;
  int64_t t0 = now_ns();
  unsigned char *m = mmap(NULL, bytes + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED)
    die("mmap", errno);
  unsigned char *p = m + (-(uintptr_t)m & (align - 1));
  (void)madvise(p, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
  for (size_t off = 0; off < bytes; off += 4096)
    ((volatile unsigned char *)p)[off] = 0;
  *new_ns = now_ns() - t0;
  int64_t c[8];
  int n = 0;
  for (size_t off = 0; off + FRAME_BYTES <= bytes && n < 8; off += FRAME_BYTES, n++) {
    int64_t t1 = now_ns();
    memcpy(p + off, src, FRAME_BYTES);
    __asm__ volatile("" ::"r"(p) : "memory");
    c[n] = now_ns() - t1;
  }
  qsort(c, (size_t)n, sizeof c[0], cmp_i64);
  *copy_ns = c[n / 2];
  munmap(m, bytes + align);
}

static void arena_thp_costs(int runs, struct arena_fig *out)
{
  const size_t bytes = (8u << 20) + (512u << 10);
  int64_t *v = calloc(4 * (size_t)runs, sizeof *v);
  unsigned char *src = touched_alloc(FRAME_BYTES);
  if (!v)
    die("calloc", ENOMEM);
  for (int i = 0; i < runs; i++) {
    int first = i % 2; /* alternated */
    arena_one(first, bytes, src, &v[(first ? 0 : 1) * runs + i], &v[(first ? 2 : 3) * runs + i]);
    arena_one(!first, bytes, src, &v[(first ? 1 : 0) * runs + i], &v[(first ? 3 : 2) * runs + i]);
  }
  int64_t *m[4];
  for (int k = 0; k < 4; k++) {
    m[k] = v + (size_t)k * runs;
    qsort(m[k], (size_t)runs, sizeof *v, cmp_i64);
  }
  *out = (struct arena_fig){m[0][runs / 2], m[1][runs / 2], m[2][runs / 2], m[3][runs / 2]};
  free(v);
  free(src);
}

static int64_t frame_memcpy_median(size_t area_bytes, int runs, int64_t period_ns, int cpu, int rt)
{
  struct memcpy_ref r = {area_bytes, runs, period_ns, cpu, rt, 0};
  pthread_t t;
  pthread_create(&t, NULL, memcpy_ref_thread, &r);
  pthread_join(t, NULL);
  return r.median;
}

/* ---- throughput: frames through ring+sink vs write(2) ---- */

struct tput {
  uv_loop_t *loop;
  struct pirec_sink *sink;
  uv_async_t done;
  int cpu;
  size_t frames;
  unsigned char *src;
  int64_t t_pushed;
  int64_t t_end;
  struct pirec_sink_counters final;
  uint64_t refused;
};

static void *tput_producer(void *arg)
{
  struct tput *t = arg;
  pthread_setname_np(pthread_self(), "tput-producer");
  pin_self(t->cpu);
  for (size_t i = 0; i < t->frames; i++) {
    memcpy(t->src, &i, sizeof i);
    int rc;
    while ((rc = pirec_sink_push(t->sink, t->src, FRAME_BYTES)) == -ENOBUFS) {
      t->refused++;
      sleep_ns(50000); /* throughput run: wait for the disk instead of dropping */
    }
    if (rc != 0)
      break;
  }
  t->t_pushed = now_ns();
  uv_async_send(&t->done);
  return NULL;
}

static void on_tput_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  struct tput *t = user;
  (void)sink;
  t->final = *final;
  t->t_end = now_ns();
}

static void on_tput_done(uv_async_t *h)
{
  struct tput *t = h->data;
  uv_close((uv_handle_t *)h, NULL);
  pirec_sink_close(t->sink, on_tput_closed, t);
}

static double sink_mbps(struct bench *b, size_t frames, unsigned char *src, int enc)
{
  char path[512];
  snprintf(path, sizeof path, "%s/tput-sink.bin", b->set.dir);
  struct pirec_sink_options o;
  struct pirec_sink_transform tf;
  pirec_sink_options_default(&o);
  maybe_encrypt(path, &o, &tf, enc);
  o.ring_bytes = b->set.tput_ring;
  o.batch_bytes = b->set.tput_batch;
  o.max_writes_in_flight = b->set.tput_inflight;
  o.wake_bytes = 1u << 20;
  struct tput t;
  memset(&t, 0, sizeof t);
  t.loop = &b->loop;
  t.cpu = b->cpus.rows;
  t.frames = frames;
  t.src = src;
  int64_t t0 = now_ns();
  int rc = pirec_sink_new(&b->loop, path, &o, on_sink_error, b, &t.sink);
  if (rc < 0)
    die("pirec_sink_new throughput", rc);
  uv_async_init(&b->loop, &t.done, on_tput_done);
  t.done.data = &t;
  pthread_t th;
  pthread_create(&th, NULL, tput_producer, &t);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  if (t.final.error != 0 || t.final.bytes_written < (uint64_t)frames * FRAME_BYTES)
    die("throughput sink wrote short", t.final.error ? t.final.error : EIO);
  unlink(path);
  if (getenv("BENCH_DEBUG"))
    fprintf(stderr,
            "sink: pushed %.3f s, closed %.3f s, %" PRIu64 " writes, %" PRIu64 " syncs, refused %" PRIu64
            "\n",
            (t.t_pushed - t0) / 1e9, (t.t_end - t0) / 1e9, t.final.writes, t.final.syncs, t.refused);
  return (double)frames * FRAME_BYTES / ((double)(t.t_end - t0) / 1e9) / 1e6;
}

static double write2_mbps(struct bench *b, size_t frames, unsigned char *src)
{
  char path[512];
  snprintf(path, sizeof path, "%s/tput-write2.bin", b->set.dir);
  int64_t t0 = now_ns();
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    die("open write2 file", errno);
  for (size_t i = 0; i < frames; i++) {
    memcpy(src, &i, sizeof i);
    size_t done = 0;
    while (done < FRAME_BYTES) {
      ssize_t w = write(fd, src + done, FRAME_BYTES - done);
      if (w <= 0)
        die("write(2)", w < 0 ? errno : EIO);
      done += (size_t)w;
    }
  }
  if (fdatasync(fd) != 0)
    die("fdatasync", errno);
  int64_t tw = now_ns();
  close(fd);
  int64_t t1 = now_ns();
  unlink(path);
  if (getenv("BENCH_DEBUG"))
    fprintf(stderr, "write2: written+synced %.3f s, closed %.3f s\n", (tw - t0) / 1e9, (t1 - t0) / 1e9);
  return (double)frames * FRAME_BYTES / ((double)(t1 - t0) / 1e9) / 1e6;
}

/* ---- csv: rows through the CSV writer, ring and sink vs fprintf ---- */

static const char row_text[] = "frame captured ok";

struct row_values {
  unsigned trial;
  int64_t mono, wall;
  uint64_t frame, seq, dropped, bytes;
  int64_t offset;
};

static void row_values(uint64_t i, struct row_values *v)
{
  v->trial = 1 + (unsigned)(i / 1000000);
  v->mono = 1234567890123456789 + (int64_t)i * 33333333;
  v->wall = 1763780000000000000 + (int64_t)i * 33333333;
  v->frame = i;
  v->seq = i + 17;
  v->dropped = i % 97 == 0;
  v->bytes = 1000000 + i % 400000;
  v->offset = (int64_t)i * 1200000;
}

struct csvrun {
  struct pirec_sink *sink;
  uv_async_t done;
  uv_check_t check;
  int cpu;
  uint64_t rows;
  int64_t t_pushed;               /* the producer pushed its last row */
  int64_t t_written;              /* every row handed to the kernel */
  int64_t t_end;                  /* and the file synced and closed */
  int64_t cpu_start, cpu_written; /* process CPU time at the start and at t_written */
  struct pirec_sink_counters final;
  uint64_t refused;
  int bad_rows;
};

/* Row i of the CSV part: the same values fprintf_rows_per_s prints. */
static int build_row(uint64_t i, char *buf, size_t cap, struct pirec_csv_row *row)
{
  struct row_values v;
  row_values(i, &v);
  pirec_csv_row_begin(row, buf, cap);
  pirec_csv_row_u64(row, v.trial);
  pirec_csv_row_i64(row, v.mono);
  pirec_csv_row_i64(row, v.wall);
  pirec_csv_row_u64(row, v.frame);
  pirec_csv_row_u64(row, v.seq);
  pirec_csv_row_empty(row);
  pirec_csv_row_u64(row, v.dropped);
  pirec_csv_row_u64(row, v.bytes);
  pirec_csv_row_i64(row, v.offset);
  pirec_csv_row_text(row, row_text, sizeof row_text - 1);
  return pirec_csv_row_end(row);
}

static void *csv_producer(void *arg)
{
  struct csvrun *c = arg;
  pthread_setname_np(pthread_self(), "csv-producer");
  pin_self(c->cpu);
  char buf[256];
  for (uint64_t i = 0; i < c->rows; i++) {
    struct pirec_csv_row row;
    if (build_row(i, buf, sizeof buf, &row) < 0) {
      c->bad_rows++;
      continue;
    }
    int rc;
    while ((rc = pirec_csv_push(c->sink, &row)) == -ENOBUFS) {
      c->refused++;
      sleep_ns(50000); /* throughput run: wait instead of dropping */
    }
    if (rc != 0)
      break;
  }
  c->t_pushed = now_ns();
  uv_async_send(&c->done);
  return NULL;
}

static void on_csv_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  struct csvrun *c = user;
  (void)sink;
  c->final = *final;
  c->t_end = now_ns();
}

/* Runs after every loop iteration once the producer is done: the moment the ring is empty, every
 * row has been written (space is released only after its write completed). */
static void on_csv_check(uv_check_t *h)
{
  struct csvrun *c = h->data;
  struct pirec_sink_counters k;
  pirec_sink_counters(c->sink, &k);
  if (k.records != c->rows || k.ring_used != 0)
    return;
  c->t_written = now_ns();
  c->cpu_written = process_cpu_ns();
  uv_check_stop(h);
  uv_close((uv_handle_t *)h, NULL);
  pirec_sink_close(c->sink, on_csv_closed, c);
}

static void on_csv_done(uv_async_t *h)
{
  struct csvrun *c = h->data;
  uv_close((uv_handle_t *)h, NULL);
  pirec_sink_flush(c->sink); /* the tail below wake_bytes need not wait for the drain timer */
  uv_check_start(&c->check, on_csv_check);
}

static uint64_t csv_refused;

static double csv_rows_per_s(struct bench *b, uint64_t rows, uint64_t *bytes, double *synced,
                             double *per_cpu_s)
{
  char path[512];
  snprintf(path, sizeof path, "%s/rows-csv.csv", b->set.dir);
  struct csvrun c;
  memset(&c, 0, sizeof c);
  c.cpu = b->cpus.rows;
  c.rows = rows;
  /* A throughput run keeps the producer busy all the time, so on two CPUs it gets one to itself and
   * the loop joins libuv's workers on the other (the latency layout above puts the row producer with
   * the loop, which a producer formatting 7 M rows/s would starve). */
  int moved_loop = b->cpus.n == 2 && b->cpus.loop >= 0;
  if (moved_loop)
    pin_self(b->cpus.workers);
  int64_t t0 = now_ns();
  c.cpu_start = process_cpu_ns();
  int rc = pirec_sink_new(&b->loop, path, NULL, on_sink_error, b, &c.sink);
  if (rc < 0)
    die("pirec_sink_new csv", rc);
  uv_async_init(&b->loop, &c.done, on_csv_done);
  c.done.data = &c;
  uv_check_init(&b->loop, &c.check);
  c.check.data = &c;
  pthread_t th;
  pthread_create(&th, NULL, csv_producer, &c);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  pthread_join(th, NULL);
  if (moved_loop)
    pin_self(b->cpus.loop);
  if (c.final.error != 0 || c.bad_rows != 0 || c.final.records != rows)
    die("csv run failed", c.final.error ? c.final.error : EIO);
  *bytes = c.final.bytes_written;
  csv_refused += c.refused;
  if (getenv("BENCH_DEBUG"))
    fprintf(stderr,
            "csv: pushed %.3f s, written %.3f s, closed %.3f s, %" PRIu64 " writes, refused %" PRIu64 "\n",
            (c.t_pushed - t0) / 1e9, (c.t_written - t0) / 1e9, (c.t_end - t0) / 1e9, c.final.writes,
            c.refused);
  *synced = (double)rows / ((double)(c.t_end - t0) / 1e9);
  *per_cpu_s = (double)rows / ((double)(c.cpu_written - c.cpu_start) / 1e9);
  return (double)rows / ((double)(c.t_written - t0) / 1e9);
}

/* Each side of the CSV pipeline alone, to tell which one limits it: rows formatted and pushed into
 * a held sink whose ring holds them all (no consumer running), then the hold lifted and the loop
 * timed until every byte is with the kernel (final fdatasync not included). Both on the loop's
 * thread, one after the other. */
struct split_wait {
  uv_idle_t idle;
  struct pirec_sink *sink;
  uint64_t bytes;
  int64_t t_written;
};

static void on_split_idle(uv_idle_t *h)
{
  struct split_wait *w = (struct split_wait *)h;
  struct pirec_sink_counters c;
  pirec_sink_counters(w->sink, &c);
  if (c.bytes_written >= w->bytes) {
    w->t_written = now_ns();
    uv_idle_stop(h);
  }
}

static void on_split_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  (void)sink;
  *(struct pirec_sink_counters *)user = *final;
}

static void csv_split(struct bench *b, uint64_t rows, double *produce, double *drain)
{
  char path[512];
  snprintf(path, sizeof path, "%s/rows-split.csv", b->set.dir);
  struct pirec_sink_options o;
  pirec_sink_options_default(&o);
  o.ring_bytes = (size_t)rows * 128 + (1u << 20); /* a 99-byte row takes 128 ring bytes */
  o.fsync_interval_ms = PIREC_SINK_FSYNC_NEVER;
  struct split_wait w;
  memset(&w, 0, sizeof w);
  int rc = pirec_sink_new(&b->loop, path, &o, on_sink_error, b, &w.sink);
  if (rc < 0)
    die("pirec_sink_new split", rc);
  pirec_sink_hold(w.sink, 1);
  uv_run(&b->loop, UV_RUN_NOWAIT); /* let the open start */
  char buf[256];
  int64_t t0 = now_ns();
  for (uint64_t i = 0; i < rows; i++) {
    struct pirec_csv_row row;
    if (build_row(i, buf, sizeof buf, &row) < 0 || pirec_csv_push(w.sink, &row) != 0)
      die("csv split push", ENOBUFS);
    w.bytes += row.len;
  }
  int64_t t1 = now_ns();
  uv_idle_init(&b->loop, &w.idle);
  uv_idle_start(&w.idle, on_split_idle);
  pirec_sink_hold(w.sink, 0);
  struct pirec_sink_counters final;
  while (w.t_written == 0)
    uv_run(&b->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&w.idle, NULL);
  pirec_sink_close(w.sink, on_split_closed, &final);
  uv_run(&b->loop, UV_RUN_DEFAULT);
  if (final.error != 0 || final.bytes_written != w.bytes)
    die("csv split run failed", final.error ? final.error : EIO);
  unlink(path);
  *produce = (double)rows / ((double)(t1 - t0) / 1e9);
  *drain = (double)rows / ((double)(w.t_written - t1) / 1e9);
}

static double fprintf_rows_per_s(struct bench *b, uint64_t rows, double *synced, double *per_cpu_s)
{
  char path[512];
  snprintf(path, sizeof path, "%s/rows-fprintf.csv", b->set.dir);
  int64_t t0 = now_ns(), cpu0 = process_cpu_ns();
  FILE *f = fopen(path, "we");
  if (f == NULL)
    die("fopen", errno);
  struct row_values v;
  for (uint64_t i = 0; i < rows; i++) {
    row_values(i, &v);
    fprintf(f, "%u,%" PRId64 ",%" PRId64 ",%" PRIu64 ",%" PRIu64 ",,%" PRIu64 ",%" PRIu64 ",%" PRId64 ",%s\n",
            v.trial, v.mono, v.wall, v.frame, v.seq, v.dropped, v.bytes, v.offset, row_text);
  }
  if (fflush(f) != 0)
    die("fflush", errno);
  int64_t t1 = now_ns();
  *per_cpu_s = (double)rows / ((double)(process_cpu_ns() - cpu0) / 1e9);
  if (fdatasync(fileno(f)) != 0)
    die("fdatasync", errno);
  fclose(f);
  int64_t t2 = now_ns();
  *synced = (double)rows / ((double)(t2 - t0) / 1e9);
  return (double)rows / ((double)(t1 - t0) / 1e9);
}

/* The CSV writer's output must be exactly what fprintf produced (no field needs quoting here). */
static int csv_files_equal(struct bench *b)
{
  char p1[512], p2[512];
  snprintf(p1, sizeof p1, "%s/rows-csv.csv", b->set.dir);
  snprintf(p2, sizeof p2, "%s/rows-fprintf.csv", b->set.dir);
  FILE *a = fopen(p1, "re"), *c = fopen(p2, "re");
  int equal = a != NULL && c != NULL;
  static char ba[1 << 16], bc[1 << 16];
  while (equal) {
    size_t na = fread(ba, 1, sizeof ba, a), nc = fread(bc, 1, sizeof bc, c);
    if (na != nc || memcmp(ba, bc, na) != 0)
      equal = 0;
    if (na == 0 || nc == 0)
      break;
  }
  if (a)
    fclose(a);
  if (c)
    fclose(c);
  unlink(p1);
  unlink(p2);
  return equal;
}

/* ---- output ---- */

static void print_ratio(double num, double den)
{
  if (den > 0)
    printf("%.2f", num / den);
  else
    printf("null");
}

static void print_pct(const char *name, struct pct p, int last)
{
  printf("  \"%s\": {\"p50\": %" PRId64 ", \"p99\": %" PRId64 ", \"p999\": %" PRId64 ", \"max\": %" PRId64
         ", \"n\": %zu}%s\n",
         name, p.p50, p.p99, p.p999, p.max, p.n, last ? "" : ",");
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* The median of v[0..n) (sorts v); 0 for n == 0. */
static double median(double *v, unsigned n)
{
  if (n == 0)
    return 0;
  qsort(v, n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define MAX_RUNS 64

int main(int argc, char **argv)
{
  struct bench *b = calloc(1, sizeof(*b));
  b->set.pin = 1;
  b->set.rt = 1;
  b->set.throughput_runs = 5;
  /* A ring larger than the last-level cache makes every byte go to DRAM and back once more when the
   * producer runs ahead of the disk; 16 MiB keeps the throughput run about the disk. */
  b->set.tput_ring = 16u << 20;
  b->set.tput_batch = 2u << 20;
  b->set.tput_inflight = 2;
  unsigned scale = 1;
  int quick = 0;
  const char *only = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) {
      b->set.json = 1;
    } else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      b->set.dir = argv[++i];
    } else if (strcmp(argv[i], "--scale") == 0 && i + 1 < argc) {
      scale = (unsigned)strtoul(argv[++i], NULL, 10);
      if (scale == 0)
        scale = 1;
    } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      only = argv[++i];
    } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      b->set.throughput_runs = (unsigned)strtoul(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--quick") == 0) {
      quick = 1;
    } else if (strcmp(argv[i], "--tput-ring-mb") == 0 && i + 1 < argc) {
      b->set.tput_ring = (size_t)strtoul(argv[++i], NULL, 10) << 20;
    } else if (strcmp(argv[i], "--tput-batch-kb") == 0 && i + 1 < argc) {
      b->set.tput_batch = (size_t)strtoul(argv[++i], NULL, 10) << 10;
    } else if (strcmp(argv[i], "--tput-inflight") == 0 && i + 1 < argc) {
      b->set.tput_inflight = (unsigned)strtoul(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--no-pin") == 0) {
      b->set.pin = 0;
    } else if (strcmp(argv[i], "--no-rt") == 0) {
      b->set.rt = 0;
    } else if (strcmp(argv[i], "--encrypt") == 0) {
      b->set.encrypt = 1;
    } else {
      usage();
      return strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  if (b->set.throughput_runs > MAX_RUNS)
    b->set.throughput_runs = MAX_RUNS;
  b->set.stall_rounds = 10 * scale;
  b->set.stall_ms = 1000;
  b->set.writing_ms = 10000 * scale;
  b->set.direct_ms = 10000 * scale;
  b->set.throughput_mb = 700 * scale;
  b->set.csv_rows = 2000000 * scale;
  if (quick) {
    b->set.stall_rounds = 2;
    b->set.stall_ms = 1000;
    b->set.writing_ms = b->set.direct_ms = 2000;
    b->set.throughput_mb = 140;
    b->set.csv_rows = 200000;
  }

  char dirbuf[512];
  int made_dir = 0;
  if (b->set.dir == NULL) {
    /* /var/tmp is on disk on most systems; /tmp may be RAM, which would hide the file system. */
    const char *base = getenv("TMPDIR");
    snprintf(dirbuf, sizeof dirbuf, "%s/pirec-bench-write-XXXXXX", base ? base : "/var/tmp");
    if (mkdtemp(dirbuf) == NULL)
      die(dirbuf, errno);
    b->set.dir = dirbuf;
    made_dir = 1;
  }

  plan_cpus(&b->cpus, b->set.pin);
  if (uv_loop_init(&b->loop) != 0)
    die("uv_loop_init", EINVAL);
  start_threadpool(&b->loop, &b->cpus);

  /* 1. Latency with ring+sink: stalled rounds, then writing. */
  size_t row_cap =
      (size_t)(b->set.stall_rounds * b->set.stall_ms + b->set.writing_ms + b->set.direct_ms + 4000) + 1000;
  producer_init(&b->rows, b, "rows", b->cpus.rows, 1000000, ROW_BYTES, row_cap);
  producer_init(&b->frames, b, "frames", b->cpus.frames, 1000000000 / 30, FRAME_BYTES, row_cap / 30 + 100);
  if (!b->set.json)
    fprintf(stderr, "latency: %u stalled rounds of %u ms, then %u ms writing...\n", b->set.stall_rounds,
            b->set.stall_ms, b->set.writing_ms);
  if (only == NULL || strcmp(only, "latency") == 0)
    run_latency(b);
  uint64_t refused = b->rows.refused + b->frames.refused;
  uint64_t refused_stall = b->rows.refused_stall + b->frames.refused_stall;
  uint64_t drops = b->rows_final.drops + b->frames_final.drops;
  uint64_t push_errors = b->rows.errors + b->frames.errors;
  struct pct row_stall = percentiles(&b->rows.stall);
  struct pct row_writing = percentiles(&b->rows.writing);
  struct pct frame_stall = percentiles(&b->frames.stall);
  struct pct frame_writing = percentiles(&b->frames.writing);
  struct pct frame_refused = percentiles(&b->frames.refused_ns);

  /* 2. The same rows and frames with write(2) from the producer threads. */
  if (!b->set.json)
    fprintf(stderr, "direct write(2): %u ms...\n", b->set.direct_ms);
  if (only == NULL || strcmp(only, "direct") == 0)
    run_direct(b);
  struct samples all_direct;
  merge(&all_direct, &b->rows.direct, &b->frames.direct);
  struct pct direct = percentiles(&all_direct);
  struct pct direct_rows = percentiles(&b->rows.direct);
  struct pct direct_frames = percentiles(&b->frames.direct);

  /* 3. memcpy reference: at 30 fps into a ring-sized pre-touched area (as the frame producer's
   * copies go), and back to back into one cache-warm buffer. */
  int64_t memcpy_ns =
      (only && strcmp(only, "arena") == 0)
          ? 0
          : frame_memcpy_median(32u << 20, quick ? 30 : 90, 1000000000 / 30, b->cpus.frames, b->set.rt);
  int64_t memcpy_hot_ns = frame_memcpy_median(FRAME_BYTES, 300, 0, b->cpus.frames, 0);
  int64_t ring_fresh_ns, ring_reused_ns, fault_ns;
  ring_new_costs(quick ? 5 : 11, &ring_fresh_ns, &ring_reused_ns, &fault_ns);
  struct arena_fig thp = {0};
  if (only == NULL || strcmp(only, "latency") == 0 || strcmp(only, "arena") == 0)
    arena_thp_costs(quick ? 5 : 11, &thp);

  /* 4. Throughput, alternating so drift in the machine's load hits both sides. */
  size_t frames = (size_t)b->set.throughput_mb * 1000000 / FRAME_BYTES;
  unsigned char *src = touched_alloc(FRAME_BYTES);
  double w2v[MAX_RUNS], skv[MAX_RUNS], skev[MAX_RUNS], tput_ratio[MAX_RUNS], enc_ratio[MAX_RUNS];
  unsigned nt = 0;
  if (!b->set.json)
    fprintf(stderr, "throughput: %zu frames, %u runs each...\n", frames, b->set.throughput_runs);
  for (unsigned r = 0; r < b->set.throughput_runs && (only == NULL || strcmp(only, "tput") == 0); r++, nt++) {
    /* alternated: which side goes first changes every run */
    if (r % 2) {
      skv[nt] = sink_mbps(b, frames, src, 0);
      w2v[nt] = write2_mbps(b, frames, src);
    } else {
      w2v[nt] = write2_mbps(b, frames, src);
      skv[nt] = sink_mbps(b, frames, src, 0);
    }
    skev[nt] = sink_mbps(b, frames, src, 1);
    tput_ratio[nt] = skv[nt] / w2v[nt];
    enc_ratio[nt] = skev[nt] / skv[nt];
  }
  double w2 = median(w2v, nt), sk = median(skv, nt), sk_ratio = median(tput_ratio, nt);
  double ske = median(skev, nt), ske_ratio = median(enc_ratio, nt);

  /* 5. CSV rows. */
  if (!b->set.json)
    fprintf(stderr, "csv: %u rows, %u runs each...\n", b->set.csv_rows, b->set.throughput_runs);
  double fpv[MAX_RUNS], csv_v[MAX_RUNS], fp_syncv[MAX_RUNS], cs_syncv[MAX_RUNS], fp_cpuv[MAX_RUNS],
      cs_cpuv[MAX_RUNS], csv_ratio[MAX_RUNS], csv_cpu_ratio[MAX_RUNS];
  unsigned nc = 0;
  uint64_t csv_bytes = 0;
  int csv_same = 1;
  for (unsigned r = 0; r < b->set.throughput_runs && (only == NULL || strcmp(only, "csv") == 0); r++, nc++) {
    if (r % 2) {
      csv_v[nc] = csv_rows_per_s(b, b->set.csv_rows, &csv_bytes, &cs_syncv[nc], &cs_cpuv[nc]);
      fpv[nc] = fprintf_rows_per_s(b, b->set.csv_rows, &fp_syncv[nc], &fp_cpuv[nc]);
    } else {
      fpv[nc] = fprintf_rows_per_s(b, b->set.csv_rows, &fp_syncv[nc], &fp_cpuv[nc]);
      csv_v[nc] = csv_rows_per_s(b, b->set.csv_rows, &csv_bytes, &cs_syncv[nc], &cs_cpuv[nc]);
    }
    csv_ratio[nc] = csv_v[nc] / fpv[nc];
    csv_cpu_ratio[nc] = cs_cpuv[nc] / fp_cpuv[nc];
    csv_same = csv_same && csv_files_equal(b);
  }
  double fp = median(fpv, nc), cs = median(csv_v, nc), fp_sync = median(fp_syncv, nc),
         cs_sync = median(cs_syncv, nc), fp_cpu = median(fp_cpuv, nc), cs_cpu = median(cs_cpuv, nc),
         cs_ratio = median(csv_ratio, nc), cs_cpu_ratio = median(csv_cpu_ratio, nc);
  /* At most 500 k rows (64 MiB of ring), so a small Pi can run it too. */
  double spv[MAX_RUNS], sdv[MAX_RUNS];
  unsigned ns = 0;
  uint64_t split_rows = b->set.csv_rows < 500000 ? b->set.csv_rows : 500000;
  for (unsigned r = 0; r < b->set.throughput_runs && (only == NULL || strcmp(only, "csv") == 0); r++, ns++)
    csv_split(b, split_rows, &spv[ns], &sdv[ns]);
  double split_produce = median(spv, ns), split_drain = median(sdv, ns);

  char path[512];
  const char *names[] = {"rows.csv", "frames.bin", "direct-rows.csv", "direct-frames.bin"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", b->set.dir, names[i]);
    unlink(path);
  }
  if (made_dir)
    rmdir(b->set.dir);
  if (uv_loop_close(&b->loop) != 0)
    die("uv_loop_close", EBUSY);
  free(src);
  free(all_direct.v);
  struct producer *ps[] = {&b->rows, &b->frames};
  for (int i = 0; i < 2; i++) {
    free(ps[i]->src);
    free(ps[i]->stall.v);
    free(ps[i]->writing.v);
    free(ps[i]->refused_ns.v);
    free(ps[i]->direct.v);
  }

  int ok_row = row_stall.p999 <= 2000 && row_writing.p999 <= 2000;
  int ok_frame = frame_stall.p999 <= 3 * memcpy_ns;
  int ok_tput = sk_ratio >= 0.9;
  int ok_csv = cs_cpu_ratio >= 3;
  int ok_drops = drops == refused && push_errors == 0;

  if (b->set.json) {
    printf("{\n");
    printf("  \"cpus\": %d, \"pinned\": %s, \"rt\": %s,\n", b->cpus.n, b->cpus.loop >= 0 ? "true" : "false",
           b->set.rt && !atomic_load(&rt_refused) ? "true" : "false");
    print_pct("row_push_ns", row_stall, 0);
    print_pct("row_push_writing_ns", row_writing, 0);
    print_pct("frame_push_ns", frame_stall, 0);
    print_pct("frame_push_writing_ns", frame_writing, 0);
    print_pct("frame_refused_ns", frame_refused, 0);
    printf("  \"frame_memcpy_ns\": %" PRId64 ",\n", memcpy_ns);
    printf("  \"frame_memcpy_hot_ns\": %" PRId64 ",\n", memcpy_hot_ns);
    printf("  \"ring_new_fresh_8_5mib_ns\": %" PRId64 ",\n  \"ring_new_reused_8_5mib_ns\": %" PRId64
           ",\n  \"fault_8_5mib_ns\": %" PRId64 ",\n",
           ring_fresh_ns, ring_reused_ns, fault_ns);
    printf("  \"arena_new_thp_ns\": %" PRId64 ",\n  \"arena_new_plain_ns\": %" PRId64
           ",\n  \"arena_frame_copy_thp_ns\": %" PRId64 ",\n  \"arena_frame_copy_plain_ns\": %" PRId64 ",\n",
           thp.new_thp_ns, thp.new_plain_ns, thp.copy_thp_ns, thp.copy_plain_ns);
    print_pct("direct_write_ns", direct, 0);
    print_pct("direct_row_write_ns", direct_rows, 0);
    print_pct("direct_frame_write_ns", direct_frames, 0);
    printf("  \"sink_mbps\": %.0f,\n  \"write2_mbps\": %.0f,\n", sk, w2);
    printf("  \"sink_encrypted_mbps\": %.0f,\n  \"latency_sinks_encrypted\": %s,\n", ske,
           b->set.encrypt ? "true" : "false");
    printf("  \"csv_rows_per_s\": %.0f,\n  \"fprintf_rows_per_s\": %.0f,\n", cs, fp);
    printf("  \"csv_rows_per_s_synced\": %.0f,\n  \"fprintf_rows_per_s_synced\": %.0f,\n", cs_sync, fp_sync);
    printf("  \"csv_rows_per_cpu_s\": %.0f,\n  \"fprintf_rows_per_cpu_s\": %.0f,\n", cs_cpu, fp_cpu);
    printf("  \"csv_refused_while_full\": %" PRIu64 ",\n", csv_refused);
    printf("  \"csv_produce_only_rows_per_s\": %.0f,\n  \"csv_drain_only_rows_per_s\": %.0f,\n",
           split_produce, split_drain);
    printf("  \"csv_row_bytes\": %.1f,\n  \"csv_equals_fprintf\": %s,\n", (double)csv_bytes / b->set.csv_rows,
           csv_same ? "true" : "false");
    printf("  \"drops\": %" PRIu64 ",\n  \"refused\": %" PRIu64 ",\n  \"refused_stalled\": %" PRIu64
           ",\n  \"push_errors\": %" PRIu64 ",\n",
           drops, refused, refused_stall, push_errors);
    /* A part skipped with --only leaves its figures at 0: its ratio is null, not NaN, so the
     * output stays valid JSON. */
    printf("  \"ratios\": {\"frame_push_p999_over_memcpy\": ");
    print_ratio((double)frame_stall.p999, (double)memcpy_ns);
    printf(", \"sink_over_write2\": ");
    print_ratio(sk_ratio, nt ? 1 : 0);
    printf(", \"encrypted_sink_over_sink\": ");
    print_ratio(ske_ratio, nt ? 1 : 0);
    printf(", \"csv_over_fprintf\": ");
    print_ratio(cs_ratio, nc ? 1 : 0);
    printf(", \"csv_over_fprintf_per_cpu\": ");
    print_ratio(cs_cpu_ratio, nc ? 1 : 0);
    printf("},\n");
    printf("  \"targets_met\": {\"row_push_p999\": %s, \"frame_push_p999\": %s, \"throughput\": %s, "
           "\"csv\": %s, \"drops_equal_refused\": %s}\n",
           ok_row ? "true" : "false", ok_frame ? "true" : "false", ok_tput ? "true" : "false",
           ok_csv ? "true" : "false", ok_drops ? "true" : "false");
    printf("}\n");
  } else {
    printf("row push (stalled)     p50 %" PRId64 " p99 %" PRId64 " p999 %" PRId64 " max %" PRId64
           " ns (%zu)\n",
           row_stall.p50, row_stall.p99, row_stall.p999, row_stall.max, row_stall.n);
    printf("row push (writing)     p50 %" PRId64 " p99 %" PRId64 " p999 %" PRId64 " max %" PRId64
           " ns (%zu)\n",
           row_writing.p50, row_writing.p99, row_writing.p999, row_writing.max, row_writing.n);
    printf("frame push (stalled)   p50 %" PRId64 " p99 %" PRId64 " p999 %" PRId64 " max %" PRId64
           " ns (%zu); memcpy %" PRId64 " ns\n",
           frame_stall.p50, frame_stall.p99, frame_stall.p999, frame_stall.max, frame_stall.n, memcpy_ns);
    printf("direct write(2)        p50 %" PRId64 " p99 %" PRId64 " p999 %" PRId64 " max %" PRId64
           " ns (%zu)\n",
           direct.p50, direct.p99, direct.p999, direct.max, direct.n);
    printf("throughput             sink %.0f MB/s, write(2) %.0f MB/s (%.2fx)\n", sk, w2, sk / w2);
    printf("encrypting sink        %.0f MB/s (%.2fx the clear sink)\n", ske, ske / sk);
    printf("csv                    %.0f rows/s, fprintf %.0f rows/s (%.2fx)\n", cs, fp, cs / fp);
    printf("drops                  %" PRIu64 " counted, %" PRIu64 " refused\n", drops, refused);
  }
  /* Timing targets are reported, not enforced (the machine decides them); correctness is. */
  free(b);
  return ok_drops && csv_same ? 0 : 1;
}
