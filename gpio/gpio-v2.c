/* libgpiod 2.x (v2 API): find, request, read and drive one line.
 * The kernel debounces and numbers the edges (line seqno), so gpio.c only has to count gaps.
 * Every libgpiod failure (-1 or NULL with errno) becomes a negative errno here. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gpiod.h>

#include "gpio-internal.h"

#define EVENT_BUFFER 16

struct v2_state {
  struct gpiod_line_request *req;
  struct gpiod_edge_event_buffer *events;
  unsigned int offset;
};

static int neg_errno(int fallback)
{
  return errno > 0 ? -errno : fallback;
}

/* Resolves the line on chip: a decimal offset or a line name. */
static int line_offset(struct gpiod_chip *chip, const char *line, unsigned int *off)
{
  int o = pirec__gpio_parse_offset(line);
  if (o < 0) {
    errno = 0;
    o = gpiod_chip_get_line_offset_from_name(chip, line);
    if (o < 0)
      return neg_errno(-ENOENT);
  }
  *off = (unsigned)o;
  return 0;
}

/* libgpiod v2 opens only paths; labels and "auto" are found by walking /dev/gpiochip*, in name
 * order so that the result does not depend on directory order. want_label NULL: first chip that
 * has a line of that name. */
static int scan_chips(const char *want_label, const char *line, struct gpiod_chip **out_chip,
                      unsigned int *out_off)
{
  struct dirent **names = NULL;
  int n = scandir("/dev", &names, NULL, alphasort);
  if (n < 0)
    return -errno;
  int rc = -ENOENT;
  int done = 0;
  for (int i = 0; i < n; i++) {
    char path[300];
    snprintf(path, sizeof(path), "/dev/%s", names[i]->d_name);
    free(names[i]);
    if (done || strncmp(path, "/dev/gpiochip", 13) != 0 || !gpiod_is_gpiochip_device(path))
      continue;
    struct gpiod_chip *chip = gpiod_chip_open(path);
    if (chip == NULL)
      continue;
    if (want_label != NULL) {
      struct gpiod_chip_info *info = gpiod_chip_get_info(chip);
      int match = info != NULL && strcmp(gpiod_chip_info_get_label(info), want_label) == 0;
      if (info != NULL)
        gpiod_chip_info_free(info);
      if (match) {
        /* the label names one chip: its answer is final, found or not */
        done = 1;
        rc = line_offset(chip, line, out_off);
      }
    } else {
      done = line_offset(chip, line, out_off) == 0;
      rc = done ? 0 : -ENOENT;
    }
    if (done && rc == 0)
      *out_chip = chip;
    else
      gpiod_chip_close(chip);
  }
  free(names);
  return rc;
}

static int open_chip(const char *chip, const char *line, struct gpiod_chip **out, unsigned int *off)
{
  if (strcmp(chip, "auto") == 0)
    return scan_chips(NULL, line, out, off);
  char path[300];
  if (chip[0] == '/')
    snprintf(path, sizeof(path), "%s", chip);
  else if (strncmp(chip, "gpiochip", 8) == 0)
    snprintf(path, sizeof(path), "/dev/%s", chip);
  else if (pirec__gpio_parse_offset(chip) >= 0)
    snprintf(path, sizeof(path), "/dev/gpiochip%s", chip);
  else
    return scan_chips(chip, line, out, off);
  errno = 0;
  struct gpiod_chip *c = gpiod_chip_open(path);
  if (c == NULL)
    return neg_errno(-ENOENT);
  int rc = line_offset(c, line, off);
  if (rc < 0) {
    gpiod_chip_close(c);
    return rc;
  }
  *out = c;
  return 0;
}

/* Fills ls as s asks: direction, bias, and for a trigger its edges and the kernel's debounce. */
static int line_settings(struct gpiod_line_settings *ls, const struct pirec_gpio_settings *s)
{
  gpiod_line_settings_set_active_low(ls, s->active_low != 0);
  static const enum gpiod_line_bias bias[] = {GPIOD_LINE_BIAS_AS_IS, GPIOD_LINE_BIAS_DISABLED,
                                              GPIOD_LINE_BIAS_PULL_UP, GPIOD_LINE_BIAS_PULL_DOWN};
  errno = 0;
  if (gpiod_line_settings_set_bias(ls, bias[s->bias]) < 0)
    return neg_errno(-EINVAL);
  if (s->role != PIREC_GPIO_ROLE_TRIGGER) {
    gpiod_line_settings_set_direction(ls, GPIOD_LINE_DIRECTION_OUTPUT);
    gpiod_line_settings_set_output_value(ls, GPIOD_LINE_VALUE_INACTIVE);
    return 0;
  }
  gpiod_line_settings_set_direction(ls, GPIOD_LINE_DIRECTION_INPUT);
  enum gpiod_line_edge e = s->edge == PIREC_GPIO_EDGE_RISING    ? GPIOD_LINE_EDGE_RISING
                           : s->edge == PIREC_GPIO_EDGE_FALLING ? GPIOD_LINE_EDGE_FALLING
                                                                : GPIOD_LINE_EDGE_BOTH;
  gpiod_line_settings_set_edge_detection(ls, e);
  if (s->debounce_ns > 0)
    gpiod_line_settings_set_debounce_period_us(ls, (unsigned long)((s->debounce_ns + 999) / 1000));
  return 0;
}

/* Requests line off of chip with the settings s asks for into *out. Returns 0 or a negative errno. */
static int request_line(struct gpiod_chip *chip, unsigned int off, const struct pirec_gpio_settings *s,
                        struct gpiod_line_request **out)
{
  struct gpiod_line_settings *ls = gpiod_line_settings_new();
  struct gpiod_line_config *lc = gpiod_line_config_new();
  struct gpiod_request_config *rcfg = gpiod_request_config_new();
  int rc = ls == NULL || lc == NULL || rcfg == NULL ? -ENOMEM : line_settings(ls, s);
  if (rc < 0)
    goto out;
  errno = 0;
  if (gpiod_line_config_add_line_settings(lc, &off, 1, ls) < 0) {
    rc = neg_errno(-EINVAL);
    goto out;
  }
  gpiod_request_config_set_consumer(rcfg, "pirec");
  if (s->role == PIREC_GPIO_ROLE_TRIGGER)
    /* the kernel's default queue is 16 edges per line; a loop stalled for a moment (disk, a
     * burst of other work) should not lose a pedal's bounces for that */
    gpiod_request_config_set_event_buffer_size(rcfg, 256);
  errno = 0;
  *out = gpiod_chip_request_lines(chip, rcfg, lc);
  if (*out == NULL) {
    rc = neg_errno(-EIO);
    if (rc == -EPERM)
      rc = -EACCES;
  }
out:
  gpiod_request_config_free(rcfg);
  gpiod_line_config_free(lc);
  gpiod_line_settings_free(ls);
  return rc;
}

/* A trigger's request: the edge buffer, and its fd made non-blocking for the loop's poll. */
static int watch_edges(struct pirec__gpio_backend *b, struct v2_state *st,
                       const struct pirec_gpio_settings *s)
{
  st->events = gpiod_edge_event_buffer_new(EVENT_BUFFER);
  if (st->events == NULL)
    return -ENOMEM;
  b->fd = gpiod_line_request_get_fd(st->req);
  /* the request fd blocks on read by default; the loop must never block */
  int fl = fcntl(b->fd, F_GETFL);
  if (fl < 0 || fcntl(b->fd, F_SETFL, fl | O_NONBLOCK) < 0)
    return -errno;
  b->reports_both = s->edge == PIREC_GPIO_EDGE_BOTH;
  b->kernel_debounce = 1;
  return 0;
}

static void describe(struct pirec__gpio_backend *b, struct gpiod_chip *chip, unsigned int off)
{
  struct gpiod_chip_info *ci = gpiod_chip_get_info(chip);
  struct gpiod_line_info *li = gpiod_chip_get_line_info(chip, off);
  const char *lname = li != NULL ? gpiod_line_info_get_name(li) : NULL;
  snprintf(b->describe, sizeof(b->describe), "%s:%u (%s %s)", ci != NULL ? gpiod_chip_info_get_name(ci) : "?",
           off, ci != NULL ? gpiod_chip_info_get_label(ci) : "?", lname != NULL ? lname : "unnamed");
  if (li != NULL)
    gpiod_line_info_free(li);
  if (ci != NULL)
    gpiod_chip_info_free(ci);
}

static int v2_open(struct pirec__gpio_backend *b, const struct pirec_gpio_settings *s)
{
  struct gpiod_chip *chip = NULL;
  unsigned int off = 0;
  int rc = open_chip(s->chip, s->line, &chip, &off);
  if (rc < 0)
    return rc == -EPERM ? -EACCES : rc;
  struct v2_state *st = calloc(1, sizeof(*st));
  if (st == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  st->offset = off;
  rc = request_line(chip, off, s, &st->req);
  if (rc == 0 && s->role == PIREC_GPIO_ROLE_TRIGGER)
    rc = watch_edges(b, st, s);
  else
    b->fd = -1;
  if (rc < 0)
    goto out;
  b->offset = (int)off;
  describe(b, chip, off);
  b->priv = st;
  st = NULL;
out:
  if (st != NULL) {
    if (st->events != NULL)
      gpiod_edge_event_buffer_free(st->events);
    if (st->req != NULL)
      gpiod_line_request_release(st->req);
    free(st);
  }
  /* the request keeps its own fd; the chip is needed only to make it */
  gpiod_chip_close(chip);
  return rc;
}

static int v2_read(struct pirec__gpio_backend *b, struct pirec__gpio_edge *out, int max)
{
  struct v2_state *st = b->priv;
  if (max > EVENT_BUFFER)
    max = EVENT_BUFFER;
  errno = 0;
  int n = gpiod_line_request_read_edge_events(st->req, st->events, (size_t)max);
  if (n < 0)
    return errno == EINTR ? -EAGAIN : neg_errno(-EIO);
  for (int i = 0; i < n; i++) {
    struct gpiod_edge_event *ev = gpiod_edge_event_buffer_get_event(st->events, (unsigned long)i);
    out[i].ts_ns = (int64_t)gpiod_edge_event_get_timestamp_ns(ev);
    out[i].seqno = gpiod_edge_event_get_line_seqno(ev);
    out[i].rising = gpiod_edge_event_get_event_type(ev) == GPIOD_EDGE_EVENT_RISING_EDGE;
  }
  return n > 0 ? n : -EAGAIN;
}

static int v2_set(struct pirec__gpio_backend *b, int value)
{
  struct v2_state *st = b->priv;
  errno = 0;
  return gpiod_line_request_set_value(st->req, st->offset,
                                      value ? GPIOD_LINE_VALUE_ACTIVE : GPIOD_LINE_VALUE_INACTIVE) < 0
             ? neg_errno(-EIO)
             : 0;
}

static void v2_release(struct pirec__gpio_backend *b)
{
  struct v2_state *st = b->priv;
  if (st == NULL)
    return;
  if (st->events != NULL)
    gpiod_edge_event_buffer_free(st->events);
  gpiod_line_request_release(st->req);
  free(st);
  b->priv = NULL;
}

const struct pirec__gpio_backend_ops pirec__gpio_libgpiod_ops = {
    .name = "libgpiod-v2",
    .open = v2_open,
    .read = v2_read,
    .set = v2_set,
    .release = v2_release,
};

/* PIREC_GPIOD_VERSION is the pkg-config version built against (gpio/CMakeLists.txt). */
const char *pirec__gpio_libgpiod_version(void)
{
  return "libgpiod v2 (" PIREC_GPIOD_VERSION ")";
}
