/* io/log: log lines never make the caller wait, even when nobody reads stderr (issue 14). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "pirec/log.h"

#define TICKS          200
#define LINES_PER_TICK 50

struct flood {
  uv_timer_t timer;
  int ticks;
};

static void on_tick(uv_timer_t *t)
{
  struct flood *f = t->data;
  for (int i = 0; i < LINES_PER_TICK; i++)
    pirec_log(PIREC_LOG_WARN, "flood line %d.%d: the quick brown fox jumps over the lazy dog", f->ticks, i);
  if (++f->ticks == TICKS)
    uv_timer_stop(t);
}

struct reader {
  int fd;
  char *buf;
  size_t len, cap;
};

static void *read_all(void *arg)
{
  struct reader *r = arg;
  for (;;) {
    if (r->len + 4096 > r->cap) {
      r->cap = r->cap ? r->cap * 2 : 1 << 20;
      r->buf = realloc(r->buf, r->cap + 1);
    }
    ssize_t n = read(r->fd, r->buf + r->len, 4096);
    if (n <= 0)
      break;
    r->len += (size_t)n;
  }
  r->buf[r->len] = '\0';
  return NULL;
}

/* stderr is a pipe that nobody reads (a stuck journald, a controller that stopped draining): the
 * loop logs 10000 lines (about 1 MB, far beyond the pipe's 64 KiB and the queue's 256 KiB) from a
 * timer and must run every tick to the end. On the old code, which wrote stderr on the caller's
 * thread, the first full pipe blocked the loop for good and this test hit its timeout. */
static void test_full_stderr_pipe_never_blocks_the_loop(void **state)
{
  int p[2], saved;
  uv_loop_t loop;
  struct flood f = {0};
  struct pirec_log_queue_stats st;
  struct reader r = {0};
  pthread_t t;

  assert_int_equal(pipe(p), 0);
  saved = dup(STDERR_FILENO);
  assert_true(saved >= 0);
  assert_int_equal(dup2(p[1], STDERR_FILENO), STDERR_FILENO);
  close(p[1]);

  assert_int_equal(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &f.timer);
  f.timer.data = &f;
  uv_timer_start(&f.timer, on_tick, 1, 1);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(f.ticks, TICKS);
  pirec_log_queue_stats(&st);
  assert_true(st.dropped > 0);
  assert_true(st.lines > 0);
  assert_int_equal(st.lines + st.dropped, TICKS * LINES_PER_TICK);

  /* Now a reader comes: everything queued goes out, then the count of what was dropped. */
  r.fd = p[0];
  assert_int_equal(pthread_create(&t, NULL, read_all, &r), 0);
  assert_int_equal(pirec_log_flush(20000), 0);
  assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO); /* EOF for the reader */
  close(saved);
  pthread_join(t, NULL);
  close(p[0]);
  char expect[128];
  snprintf(expect, sizeof expect, "pirec: warning: %llu log lines dropped", (unsigned long long)st.dropped);
  assert_non_null(strstr(r.buf, expect));
  assert_non_null(strstr(r.buf, "pirec: warning: flood line 0.0: the quick brown fox"));
  /* lines are whole: each one that went out ends with its newline */
  assert_int_equal(r.buf[r.len - 1], '\n');
  free(r.buf);
  uv_close((uv_handle_t *)&f.timer, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_full_stderr_pipe_never_blocks_the_loop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
