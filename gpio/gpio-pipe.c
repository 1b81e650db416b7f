/* The pipe backend: a real fd (pipe or FIFO) instead of a GPIO line. Inputs read
 * struct pirec_gpio_pipe_record (physical levels); outputs write one record per level change.
 * It stands in for the kernel below libgpiod, so everything in gpio.c runs unchanged. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gpio-internal.h"
#include "pirec/clock.h"

struct pipe_state {
  int fd;
  int attached; /* fd given by the caller (pirec_gpio_new_pipe), not opened from a path */
  uint64_t out_seq;
  size_t have; /* bytes of a partial record carried over from the last read */
  unsigned char part[sizeof(struct pirec_gpio_pipe_record)];
};

int pirec__gpio_pipe_attach(struct pirec__gpio_backend *b, int fd)
{
  struct pipe_state *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    close(fd);
    return -ENOMEM;
  }
  p->fd = fd;
  p->attached = 1;
  b->priv = p;
  return 0;
}

static int pipe_open(struct pirec__gpio_backend *b, const struct pirec_gpio_settings *s)
{
  struct pipe_state *p = b->priv;
  if (p == NULL) {
    const char *path = s->chip + 5; /* after "pipe:" */
    if (*path == '\0')
      return -EINVAL;
    p = calloc(1, sizeof(*p));
    if (p == NULL)
      return -ENOMEM;
    /* read-write: a FIFO opened for reading alone reports end of file (and POLLHUP forever)
     * whenever no writer has it open */
    p->fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (p->fd < 0) {
      int err = -errno;
      free(p);
      return err;
    }
    b->priv = p;
  } else {
    int fl = fcntl(p->fd, F_GETFL);
    if (fl < 0 || fcntl(p->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
      int err = -errno;
      close(p->fd);
      free(p);
      b->priv = NULL;
      return err;
    }
  }
  int off = pirec__gpio_parse_offset(s->line);
  b->offset = off < 0 ? 0 : off;
  b->fd = s->role == PIREC_GPIO_ROLE_TRIGGER ? p->fd : -1;
  /* the simulated line starts at physical level 0 */
  b->initial = b->active_low ? 1 : 0;
  b->reports_both = 1;
  b->kernel_debounce = 0;
  snprintf(b->describe, sizeof(b->describe), "pipe fd %d line '%s'", p->fd, s->line);
  return 0;
}

static int pipe_read(struct pirec__gpio_backend *b, struct pirec__gpio_edge *out, int max)
{
  struct pipe_state *p = b->priv;
  struct pirec_gpio_pipe_record rec[16];
  if (max > 16)
    max = 16;
  memcpy(rec, p->part, p->have);
  ssize_t n = read(p->fd, (char *)rec + p->have, (size_t)max * sizeof(rec[0]) - p->have);
  if (n < 0)
    return errno == EINTR ? -EAGAIN : -errno;
  if (n == 0)
    return -EPIPE; /* only a plain pipe whose writers all closed */
  size_t total = p->have + (size_t)n;
  int count = (int)(total / sizeof(rec[0]));
  p->have = total % sizeof(rec[0]);
  memcpy(p->part, (char *)rec + (size_t)count * sizeof(rec[0]), p->have);
  for (int i = 0; i < count; i++) {
    out[i].ts_ns = rec[i].ts_ns;
    out[i].seqno = rec[i].seqno;
    out[i].rising = (rec[i].level != 0) != (b->active_low != 0);
  }
  return count > 0 ? count : -EAGAIN;
}

static int pipe_set(struct pirec__gpio_backend *b, int value)
{
  struct pipe_state *p = b->priv;
  struct pirec_gpio_pipe_record r = {
      .ts_ns = pirec_clock_mono_ns(),
      .seqno = ++p->out_seq,
      .level = (value != 0) != (b->active_low != 0),
      .offset = b->offset,
  };
  ssize_t n = write(p->fd, &r, sizeof(r));
  if (n < 0)
    return -errno;
  return n == (ssize_t)sizeof(r) ? 0 : -EIO;
}

static void pipe_release(struct pirec__gpio_backend *b)
{
  struct pipe_state *p = b->priv;
  if (p == NULL)
    return;
  close(p->fd);
  free(p);
  b->priv = NULL;
}

const struct pirec__gpio_backend_ops pirec__gpio_pipe_ops = {
    .name = "pipe",
    .open = pipe_open,
    .read = pipe_read,
    .set = pipe_set,
    .release = pipe_release,
};
