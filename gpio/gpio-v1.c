/* libgpiod 1.6 (v1 API, Debian 12): find, request, read and drive one line.
 * Every libgpiod failure (-1 or NULL with errno) becomes a negative errno here. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gpiod.h>

#include "gpio-internal.h"

struct v1_state {
  struct gpiod_chip *chip;
  struct gpiod_line *line;
};

static int neg_errno(int fallback)
{
  return errno > 0 ? -errno : fallback;
}

/* Finds the line s names and opens its chip into st. Returns 0 or a negative errno. */
static int find_line(struct v1_state *st, const struct pirec_gpio_settings *s)
{
  errno = 0;
  if (strcmp(s->chip, "auto") == 0) {
    /* searches every chip for the name; the line keeps its chip open */
    st->line = gpiod_line_find(s->line);
    if (st->line == NULL)
      return neg_errno(-ENOENT);
    st->chip = gpiod_line_get_chip(st->line);
    return 0;
  }
  /* accepts a path, a name (gpiochip0), a label (pinctrl-rp1) or a number */
  st->chip = gpiod_chip_open_lookup(s->chip);
  if (st->chip == NULL)
    return neg_errno(-ENOENT);
  errno = 0;
  int off = pirec__gpio_parse_offset(s->line);
  st->line =
      off >= 0 ? gpiod_chip_get_line(st->chip, (unsigned)off) : gpiod_chip_find_line(st->chip, s->line);
  return st->line == NULL ? neg_errno(-ENOENT) : 0;
}

static int request_flags(const struct pirec_gpio_settings *s)
{
  int flags = 0;
  if (s->active_low)
    flags |= GPIOD_LINE_REQUEST_FLAG_ACTIVE_LOW;
  switch (s->bias) {
  case PIREC_GPIO_BIAS_DISABLED: flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_DISABLE; break;
  case PIREC_GPIO_BIAS_PULL_UP: flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_UP; break;
  case PIREC_GPIO_BIAS_PULL_DOWN: flags |= GPIOD_LINE_REQUEST_FLAG_BIAS_PULL_DOWN; break;
  default: break;
  }
  return flags;
}

static int v1_open(struct pirec__gpio_backend *b, const struct pirec_gpio_settings *s)
{
  struct v1_state *st = calloc(1, sizeof(*st));
  if (st == NULL)
    return -ENOMEM;
  int rc = find_line(st, s);
  if (rc < 0)
    goto fail;
  int flags = request_flags(s);
  errno = 0;
  int r;
  if (s->role == PIREC_GPIO_ROLE_TRIGGER) {
    /* Debouncing in software needs to see both edges of a glitch, and both edges are what lets
     * a repeated direction reveal a lost edge, so only an undebounced single edge asks for less. */
    int both = s->edge == PIREC_GPIO_EDGE_BOTH || s->debounce_ns > 0;
    if (both)
      r = gpiod_line_request_both_edges_events_flags(st->line, "pirec", flags);
    else if (s->edge == PIREC_GPIO_EDGE_RISING)
      r = gpiod_line_request_rising_edge_events_flags(st->line, "pirec", flags);
    else
      r = gpiod_line_request_falling_edge_events_flags(st->line, "pirec", flags);
    if (r < 0) {
      rc = neg_errno(-EIO);
      goto fail;
    }
    b->reports_both = both;
    b->fd = gpiod_line_event_get_fd(st->line);
    if (b->fd < 0) {
      rc = neg_errno(-EIO);
      goto fail_release;
    }
    /* the event fd blocks on read by default; the loop must never block */
    int fl = fcntl(b->fd, F_GETFL);
    if (fl < 0 || fcntl(b->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
      rc = -errno;
      goto fail_release;
    }
    int v = gpiod_line_get_value(st->line);
    b->initial = v < 0 ? -1 : v;
  } else {
    r = gpiod_line_request_output_flags(st->line, "pirec", flags, 0);
    if (r < 0) {
      rc = neg_errno(-EIO);
      goto fail;
    }
    b->fd = -1;
  }
  b->kernel_debounce = 0;
  b->offset = (int)gpiod_line_offset(st->line);
  const char *lname = gpiod_line_name(st->line);
  snprintf(b->describe, sizeof(b->describe), "%s:%d (%s %s)", gpiod_chip_name(st->chip), b->offset,
           gpiod_chip_label(st->chip), lname ? lname : "unnamed");
  b->priv = st;
  return 0;

fail_release:
  gpiod_line_release(st->line);
fail:
  if (rc == -EPERM)
    rc = -EACCES;
  if (st->chip != NULL)
    gpiod_chip_close(st->chip);
  free(st);
  return rc;
}

static int v1_read(struct pirec__gpio_backend *b, struct pirec__gpio_edge *out, int max)
{
  struct gpiod_line_event ev[16];
  if (max > 16)
    max = 16;
  errno = 0;
  int n = gpiod_line_event_read_fd_multiple(b->fd, ev, (unsigned)max);
  if (n < 0)
    return errno == EINTR ? -EAGAIN : neg_errno(-EIO);
  for (int i = 0; i < n; i++) {
    out[i].ts_ns = (int64_t)ev[i].ts.tv_sec * 1000000000 + ev[i].ts.tv_nsec;
    out[i].seqno = 0; /* the v1 uAPI has none */
    out[i].rising = ev[i].event_type == GPIOD_LINE_EVENT_RISING_EDGE;
  }
  return n > 0 ? n : -EAGAIN;
}

static int v1_set(struct pirec__gpio_backend *b, int value)
{
  struct v1_state *st = b->priv;
  errno = 0;
  return gpiod_line_set_value(st->line, value) < 0 ? neg_errno(-EIO) : 0;
}

static void v1_release(struct pirec__gpio_backend *b)
{
  struct v1_state *st = b->priv;
  if (st == NULL)
    return;
  gpiod_line_release(st->line);
  gpiod_chip_close(st->chip);
  free(st);
  b->priv = NULL;
}

const struct pirec__gpio_backend_ops pirec__gpio_libgpiod_ops = {
    .name = "libgpiod-v1",
    .open = v1_open,
    .read = v1_read,
    .set = v1_set,
    .release = v1_release,
};

/* PIREC_GPIOD_VERSION is the pkg-config version built against (gpio/CMakeLists.txt). */
const char *pirec__gpio_libgpiod_version(void)
{
  return "libgpiod v1 (" PIREC_GPIOD_VERSION ")";
}
