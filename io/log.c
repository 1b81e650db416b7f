#include "pirec/log.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The handler is process-wide on purpose: logging is the one place every module reaches, and a
 * program sets it once before any thread starts. */
static pirec_log_handler log_handler;
static void *log_user;
static atomic_int log_max_level = PIREC_LOG_INFO;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

/* ---- the stderr queue ----
 * A loop thread that wrote its log lines to stderr itself would wait whenever the reader is slow
 * (journald busy, a controller not draining a recorder's stderr pipe, a terminal on hold). Lines
 * go into a bounded ring instead, under a mutex held only to copy memory, and one writer thread
 * ("pirec-log") writes them out, blocking on the pipe as long as it must. When the ring is full a
 * line is dropped and counted, and the writer reports the count as a line of its own once it has
 * room again. The ring's bytes are one static array: logging never allocates. */

#define QUEUE_BYTES (256 * 1024)

static struct {
  pthread_mutex_t lock;
  pthread_cond_t wake;  /* bytes queued, or a flush waiting */
  pthread_cond_t empty; /* the writer emptied the ring */
  char ring[QUEUE_BYTES];
  size_t head, len; /* oldest byte, bytes queued */
  uint64_t dropped; /* lines dropped since the last report */
  uint64_t dropped_total;
  uint64_t queued_total;
  int writing; /* the writer holds bytes it took out of the ring */
  int started;
  int failed; /* the writer could not start: write inline */
} q = {
    .lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER, .empty = PTHREAD_COND_INITIALIZER};

static void write_all(const char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = write(STDERR_FILENO, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return; /* stderr closed or broken: nothing else to tell it */
    p += w;
    n -= (size_t)w;
  }
}

/* Takes up to cap bytes out of the ring into buf (whole lines or not: the bytes go out in order). */
static size_t take(char *buf, size_t cap)
{
  size_t n = q.len < cap ? q.len : cap;
  size_t first = QUEUE_BYTES - q.head < n ? QUEUE_BYTES - q.head : n;

  memcpy(buf, q.ring + q.head, first);
  memcpy(buf + first, q.ring, n - first);
  q.head = (q.head + n) % QUEUE_BYTES;
  q.len -= n;
  return n;
}

static void put(const char *p, size_t n)
{
  size_t tail = (q.head + q.len) % QUEUE_BYTES;
  size_t first = QUEUE_BYTES - tail < n ? QUEUE_BYTES - tail : n;

  memcpy(q.ring + tail, p, first);
  memcpy(q.ring, p + first, n - first);
  q.len += n;
}

static void *writer_main(void *arg)
{
  static char buf[16384];
  (void)arg;

  pthread_setname_np(pthread_self(), "pirec-log");
  pthread_mutex_lock(&q.lock);
  for (;;) {
    while (q.len == 0 && q.dropped == 0)
      pthread_cond_wait(&q.wake, &q.lock);
    size_t n = take(buf, sizeof buf);
    if (n == 0) {
      /* The ring is empty and lines were dropped: say how many, in their place. */
      n = (size_t)snprintf(buf, sizeof buf, "pirec: warning: %llu log lines dropped (stderr was not read)\n",
                           (unsigned long long)q.dropped);
      q.dropped = 0;
    }
    q.writing = 1;
    pthread_mutex_unlock(&q.lock);
    write_all(buf, n);
    pthread_mutex_lock(&q.lock);
    q.writing = 0;
    if (q.len == 0 && q.dropped == 0)
      pthread_cond_broadcast(&q.empty);
  }
  return NULL;
}

static void flush_at_exit(void)
{
  pirec_log_flush(1000);
}

/* Under q.lock. */
static void start_writer(void)
{
  pthread_t t;
  pthread_attr_t a;
  sigset_t all, old;

  q.started = 1;
  pthread_attr_init(&a);
  pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&a, 64 * 1024);
  /* No signal is for the writer: uv_signal and the programs' handlers stay on their threads. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  q.failed = pthread_create(&t, &a, writer_main, NULL) != 0;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&a);
  if (!q.failed)
    atexit(flush_at_exit);
}

static void queue_line(const char *line, size_t n)
{
  pthread_mutex_lock(&q.lock);
  if (!q.started)
    start_writer();
  if (q.failed) {
    pthread_mutex_unlock(&q.lock);
    write_all(line, n);
    return;
  }
  if (QUEUE_BYTES - q.len < n || q.dropped > 0) {
    /* Full, or lines before this one were dropped: keep the report ahead of later lines. */
    q.dropped++;
    q.dropped_total++;
  } else {
    put(line, n);
    q.queued_total++;
  }
  pthread_cond_signal(&q.wake);
  pthread_mutex_unlock(&q.lock);
}

int pirec_log_flush(int timeout_ms)
{
  struct timespec until;
  int r = 0;

  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&q.lock);
  while (!q.failed && q.started && (q.len > 0 || q.dropped > 0 || q.writing) && r == 0)
    r = pthread_cond_timedwait(&q.empty, &q.lock, &until);
  r = q.len > 0 || q.dropped > 0 || q.writing ? -ETIMEDOUT : 0;
  pthread_mutex_unlock(&q.lock);
  return r;
}

void pirec_log_queue_stats(struct pirec_log_queue_stats *out)
{
  pthread_mutex_lock(&q.lock);
  out->lines = q.queued_total;
  out->dropped = q.dropped_total;
  out->queued_bytes = q.len;
  pthread_mutex_unlock(&q.lock);
}

/* ---- the front ---- */

void pirec_log_set_handler(pirec_log_handler handler, void *user)
{
  log_handler = handler;
  log_user = user;
}

void pirec_log_set_level(enum pirec_log_level max_level)
{
  atomic_store(&log_max_level, (int)max_level);
}

void pirec_logv(enum pirec_log_level level, const char *fmt, va_list ap)
{
  char line[1024];
  char out[1100];
  int n;

  if ((int)level > atomic_load(&log_max_level))
    return;
  vsnprintf(line, sizeof line, fmt, ap);
  if (log_handler) {
    log_handler(level, line, log_user);
    return;
  }
  n = snprintf(out, sizeof out, "pirec: %s: %s\n", level_names[level], line);
  if (n >= (int)sizeof out) {
    n = (int)sizeof out - 1;
    out[n - 1] = '\n';
  }
  queue_line(out, (size_t)n);
}

void pirec_log(enum pirec_log_level level, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  pirec_logv(level, fmt, ap);
  va_end(ap);
}
