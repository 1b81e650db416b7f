#ifndef PIREC_CLOCK_H
#define PIREC_CLOCK_H

/* Clock readings as int64 nanoseconds. All functions are thread-safe, make no allocation and are
 * vDSO calls (no system call) on Linux for MONOTONIC and REALTIME. */

#include <stdint.h>

int64_t pirec_clock_mono_ns(void); /* CLOCK_MONOTONIC: V4L2 buffers and GPIO events use it */
int64_t pirec_clock_wall_ns(void); /* CLOCK_REALTIME, ns since the Unix epoch; can step */
int64_t pirec_clock_boot_ns(void); /* CLOCK_BOOTTIME: counts suspend; libcamera uses it */

/* One reading of the three clocks taken as close together as possible: the monotonic clock is read
 * before and after the other two, and the tightest of a few attempts is kept. mono_ns is the
 * midpoint; uncertainty_ns is the width of the bracketing interval. */
struct pirec_clock_anchor {
  int64_t mono_ns;
  int64_t wall_ns;
  int64_t boot_ns;
  int64_t uncertainty_ns;
};

void pirec_clock_anchor_take(struct pirec_clock_anchor *anchor);

#endif
