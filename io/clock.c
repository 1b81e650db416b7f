#include "pirec/clock.h"

#include <errno.h>
#include <string.h>
#include <sys/timex.h>
#include <time.h>

static int64_t read_ns(clockid_t id)
{
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t pirec_clock_mono_ns(void)
{
  return read_ns(CLOCK_MONOTONIC);
}
int64_t pirec_clock_wall_ns(void)
{
  return read_ns(CLOCK_REALTIME);
}
int64_t pirec_clock_boot_ns(void)
{
  return read_ns(CLOCK_BOOTTIME);
}

void pirec_clock_anchor_take(struct pirec_clock_anchor *anchor)
{
  /* A preemption between the readings would skew the triple, so bracket the other two clocks by
   * monotonic readings and keep the narrowest of a few tries. */
  enum { TRIES = 5 };
  int64_t best_width = INT64_MAX;

  for (int i = 0; i < TRIES; i++) {
    int64_t before = read_ns(CLOCK_MONOTONIC);
    int64_t wall = read_ns(CLOCK_REALTIME);
    int64_t boot = read_ns(CLOCK_BOOTTIME);
    int64_t after = read_ns(CLOCK_MONOTONIC);
    int64_t width = after - before;
    if (width < best_width) {
      best_width = width;
      anchor->mono_ns = before + width / 2;
      anchor->wall_ns = wall;
      anchor->boot_ns = boot;
      anchor->uncertainty_ns = width;
    }
  }
}

int pirec_clock_sync_read(struct pirec_clock_sync *out)
{
  memset(out, 0, sizeof *out);
  struct timex tx;
  memset(&tx, 0, sizeof tx); /* modes 0: read, change nothing */
  int state = adjtimex(&tx);
  if (state < 0)
    return -errno;
  out->synchronised = state != TIME_ERROR && !(tx.status & STA_UNSYNC);
  out->max_error_ns = (int64_t)tx.maxerror * 1000; /* the kernel keeps microseconds */
  out->est_error_ns = (int64_t)tx.esterror * 1000;
  out->status = tx.status;
  return 0;
}
