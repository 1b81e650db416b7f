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

/* How well the kernel believes CLOCK_REALTIME is disciplined (NTP, chrony, PTP), as adjtimex(2)
 * reports it read-only: synchronised is 0 when the kernel's STA_UNSYNC flag is set or the clock
 * state is TIME_ERROR; max_error_ns and est_error_ns are the kernel's maximum and estimated
 * error (set by the time daemon). This one is a system call (no vDSO), cheap and non-blocking.
 * Returns 0, or a negative errno (then *out is zeroed). */
struct pirec_clock_sync {
  int synchronised;
  int64_t max_error_ns;
  int64_t est_error_ns;
  int status; /* the STA_* flags */
};

int pirec_clock_sync_read(struct pirec_clock_sync *out);

#endif
