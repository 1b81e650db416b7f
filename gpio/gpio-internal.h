#ifndef PIREC_GPIO_INTERNAL_H
#define PIREC_GPIO_INTERNAL_H

/* The seam between gpio.c (everything above the line: batching, debounce, filters, seqno gaps,
 * rate limiting, outputs, libuv handles) and one backend (libgpiod v1, libgpiod v2, pipe) that
 * only finds, requests, reads and drives one line. */

#include <stdint.h>
#include <uv.h>

#include "pirec/gpio.h"

/* One edge as a backend reads it: logical direction (active_low already applied). */
struct pirec__gpio_edge {
  int64_t ts_ns;
  uint64_t seqno; /* 0: the backend has no sequence numbers */
  int rising;
};

struct pirec__gpio_backend;

struct pirec__gpio_backend_ops {
  const char *name;
  /* Find and request the line described by s (role decides input or output). On success sets
   * *fd (the event fd for triggers, -1 or the record fd for outputs), b->describe, b->initial
   * (logical level at request time, -1 if unknown), b->reports_both (the kernel reports both
   * edges, so a repeated direction means a lost edge) and b->kernel_debounce. On failure returns a
   * negative errno and leaves nothing open. */
  int (*open)(struct pirec__gpio_backend *b, const struct pirec_gpio_settings *s);
  /* Reads up to max edges without blocking: returns how many (> 0), -EAGAIN if none is pending,
   * or another negative errno. */
  int (*read)(struct pirec__gpio_backend *b, struct pirec__gpio_edge *out, int max);
  /* Drives an output to a logical level. */
  int (*set)(struct pirec__gpio_backend *b, int value);
  /* Releases the line and closes every fd. Called once, after the poll handle is closed. */
  void (*release)(struct pirec__gpio_backend *b);
};

struct pirec__gpio_backend {
  const struct pirec__gpio_backend_ops *ops;
  void *priv;  /* the backend's own state */
  int fd;      /* fd to poll for edges (triggers), -1 if none */
  int initial; /* logical level when requested, -1 unknown */
  int reports_both;
  int kernel_debounce;
  int active_low;
  int offset;
  char describe[160];
};

extern const struct pirec__gpio_backend_ops pirec__gpio_pipe_ops;
/* The libgpiod backend compiled in (v1 or v2). */
extern const struct pirec__gpio_backend_ops pirec__gpio_libgpiod_ops;
/* "libgpiod v2 (2.2.1)" etc. */
const char *pirec__gpio_libgpiod_version(void);

/* The pipe backend on an fd it owns. */
int pirec__gpio_pipe_attach(struct pirec__gpio_backend *b, int fd);

/* Parses a decimal line offset: returns it (>= 0), or -1 if s is not a plain number. Inline here
 * because both layers need it: gpio.c to check settings, each backend to request the line. */
static inline int pirec__gpio_parse_offset(const char *s)
{
  if (s == NULL || *s == '\0')
    return -1;
  long v = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9')
      return -1;
    v = v * 10 + (*p - '0');
    if (v > 65535)
      return -1;
  }
  return (int)v;
}

#endif
