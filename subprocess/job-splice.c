/* A child's stdin fed with vmsplice(2): see job-splice.h for why buffers live until read. */

#include "job-splice.h"

#include "pirec/container_of.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <unistd.h>

/* How often a feed whose bytes all sit in the pipe looks whether the child has read them, when no
 * new offer comes to look first (a camera offers a frame every 33 ms, so this is a fallback). */
#define SPLICE_CHECK_MS 20

static struct pirec__splice_entry *entry_at(struct pirec__splice_feed *feed, size_t i)
{
  return &feed->q[(feed->q_head + i) % feed->q_cap];
}

/* Releases, in order, the entries the child has read (their end is at or before `upto`). */
static void release_upto(struct pirec__splice_feed *feed, uint64_t upto, int status)
{
  while (feed->q_count > 0 && feed->q_next > 0) {
    struct pirec__splice_entry e = *entry_at(feed, 0);
    if (e.end > upto)
      break;
    feed->q_head = (feed->q_head + 1) % feed->q_cap;
    feed->q_count--;
    feed->q_next--;
    feed->released += e.len;
    feed->on_release(feed, e.fn, e.arg, e.len, status);
  }
}

/* Reads the pipe's fill level and releases what the child has read since the last look. */
static void check_consumed(struct pirec__splice_feed *feed)
{
  int inpipe = 0;

  if (!feed->open || ioctl(feed->fd, FIONREAD, &inpipe) != 0 || inpipe < 0)
    return;
  feed->consumed = feed->spliced - (uint64_t)inpipe;
  release_upto(feed, feed->consumed, 0);
}

static void on_check_timer(uv_timer_t *t);
static void on_poll(uv_poll_t *p, int status, int events);

/* Keeps the fallback timer running exactly while bytes are in the pipe and nothing else will look:
 * no entry waits for room (poll events look then). */
static void arm_check(struct pirec__splice_feed *feed)
{
  if (feed->open && feed->consumed < feed->spliced && feed->q_next == feed->q_count)
    uv_timer_start(&feed->timer, on_check_timer, SPLICE_CHECK_MS, 0);
  else if (feed->open)
    uv_timer_stop(&feed->timer);
}

/* Puts waiting entries into the pipe until it is full. Returns 0, or the vmsplice error. */
static int pump(struct pirec__splice_feed *feed)
{
  while (feed->q_next < feed->q_count) {
    struct pirec__splice_entry *e = entry_at(feed, feed->q_next);
    struct iovec iov[PIREC__SPLICE_MAX_BUFS];
    unsigned n = 0;
    size_t skip = feed->next_off;

    for (unsigned i = 0; i < e->nbufs; i++) {
      if (skip >= e->bufs[i].len) {
        skip -= e->bufs[i].len;
        continue;
      }
      iov[n].iov_base = e->bufs[i].base + skip;
      iov[n++].iov_len = e->bufs[i].len - skip;
      skip = 0;
    }
    ssize_t k = vmsplice(feed->fd, iov, n, SPLICE_F_NONBLOCK);
    if (k < 0)
      return errno == EAGAIN ? 0 : -errno;
    feed->spliced += (uint64_t)k;
    feed->next_off += (size_t)k;
    if (feed->next_off < e->len)
      continue; /* a short splice: the pipe filled up; the next call says EAGAIN */
    feed->q_next++;
    feed->next_off = 0;
  }
  return 0;
}

/* After a pump: wait for room while entries wait, report a finished shutdown. */
static void after_pump(struct pirec__splice_feed *feed, int err)
{
  int want = feed->q_next < feed->q_count;

  if (err < 0) {
    feed->on_error(feed, err);
    return;
  }
  if (want != feed->polling) {
    if (want)
      err = uv_poll_start(&feed->poll, UV_WRITABLE, on_poll);
    else
      err = uv_poll_stop(&feed->poll);
    if (err < 0) {
      feed->on_error(feed, err);
      return;
    }
    feed->polling = want;
  }
  arm_check(feed);
  if (!want && feed->shutting) {
    feed->shutting = 0;
    feed->on_flushed(feed);
  }
}

static void on_poll(uv_poll_t *p, int status, int events)
{
  struct pirec__splice_feed *feed = container_of(p, struct pirec__splice_feed, poll);
  (void)events;
  if (status < 0) {
    feed->on_error(feed, status);
    return;
  }
  check_consumed(feed);
  if (feed->open)
    after_pump(feed, pump(feed));
}

static void on_check_timer(uv_timer_t *t)
{
  struct pirec__splice_feed *feed = container_of(t, struct pirec__splice_feed, timer);
  check_consumed(feed);
  arm_check(feed);
}

int pirec__splice_feed_init(uv_loop_t *loop, struct pirec__splice_feed *feed, int fd,
                            pirec__splice_release_cb on_release, pirec__splice_error_cb on_error,
                            pirec__splice_flushed_cb on_flushed, uv_close_cb close_cb, void *close_data)
{
  int fl = fcntl(fd, F_GETFL);
  int err;

  memset(feed, 0, sizeof *feed);
  feed->fd = -1;
  if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return -errno;
  if ((err = uv_poll_init(loop, &feed->poll, fd)) < 0)
    return err;
  uv_timer_init(loop, &feed->timer);
  feed->poll.data = feed->timer.data = close_data;
  feed->fd = fd;
  feed->open = 1;
  feed->close_cb = close_cb;
  feed->on_release = on_release;
  feed->on_error = on_error;
  feed->on_flushed = on_flushed;
  return 0;
}

/* Room for one more entry; the ring doubles when full (rare: entries are released as the child
 * reads, so it settles at the few a stdin_max_outstanding allows). */
static int reserve_entry(struct pirec__splice_feed *feed)
{
  if (feed->q_count < feed->q_cap)
    return 0;
  size_t cap = feed->q_cap ? feed->q_cap * 2 : 16;
  struct pirec__splice_entry *q = malloc(cap * sizeof *q);
  if (!q)
    return -ENOMEM;
  for (size_t i = 0; i < feed->q_count; i++)
    q[i] = *entry_at(feed, i);
  free(feed->q);
  feed->q = q;
  feed->q_cap = cap;
  feed->q_head = 0;
  return 0;
}

int pirec__splice_feed_write(struct pirec__splice_feed *feed, const uv_buf_t bufs[], unsigned nbufs,
                             pirec__splice_fn fn, void *arg)
{
  struct pirec__splice_entry *e;
  size_t len = 0;
  int err;

  if (nbufs == 0 || nbufs > PIREC__SPLICE_MAX_BUFS)
    return -EINVAL;
  if (!feed->open || feed->shutting)
    return -EPIPE;
  for (unsigned i = 0; i < nbufs; i++)
    len += bufs[i].len;
  if (len == 0)
    return -EINVAL;
  if ((err = reserve_entry(feed)) < 0)
    return err;
  e = entry_at(feed, feed->q_count++);
  memcpy(e->bufs, bufs, nbufs * sizeof bufs[0]);
  e->nbufs = nbufs;
  e->len = len;
  feed->offered += len;
  e->end = feed->offered;
  e->fn = fn;
  e->arg = arg;
  after_pump(feed, pump(feed));
  /* What the child read meanwhile is looked at on the next loop turn: release callbacks never run
   * inside this call (a caller may offer again from one). */
  if (feed->open && feed->consumed < feed->spliced)
    uv_timer_start(&feed->timer, on_check_timer, 0, 0);
  return 0;
}

uint64_t pirec__splice_feed_pending(const struct pirec__splice_feed *feed)
{
  return feed->offered - feed->released;
}

void pirec__splice_feed_shutdown(struct pirec__splice_feed *feed)
{
  if (!feed->open)
    return;
  feed->shutting = 1;
  after_pump(feed, 0);
}

void pirec__splice_feed_close(struct pirec__splice_feed *feed)
{
  if (!feed->open)
    return;
  feed->open = 0;
  feed->shutting = 0;
  uv_close((uv_handle_t *)&feed->poll, feed->close_cb);
  uv_close((uv_handle_t *)&feed->timer, feed->close_cb);
  close(feed->fd);
  feed->fd = -1;
}

void pirec__splice_feed_release_all(struct pirec__splice_feed *feed)
{
  while (feed->q_count > 0) {
    struct pirec__splice_entry e = *entry_at(feed, 0);
    int status = feed->q_next > 0 ? 0 : -ECANCELED;
    feed->q_head = (feed->q_head + 1) % feed->q_cap;
    feed->q_count--;
    if (feed->q_next > 0)
      feed->q_next--;
    else
      feed->next_off = 0;
    feed->released += e.len;
    feed->on_release(feed, e.fn, e.arg, e.len, status);
  }
}

void pirec__splice_feed_free(struct pirec__splice_feed *feed)
{
  free(feed->q);
  feed->q = NULL;
  feed->q_cap = feed->q_count = 0;
}
