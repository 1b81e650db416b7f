/* The Time Echo protocol of Pupil Labs' realtime API (pupil-labs/realtime-python-api,
 * time_echo.py): over TCP to the port /api/status names (Phone.time_echo_port), the client sends
 * its time in ms as a big-endian uint64; the device answers 16 bytes, that value echoed and its own
 * time in ms. A burst of ECHO_ROUNDS such exchanges makes one estimate.
 *
 * Upstream takes the middle of the round trip as the instant the device read its clock, which is
 * wrong by half the difference of the two directions' delays, and rounds everything to whole ms.
 * Here each round gives bounds instead: the device read its clock at some host instant between
 * the send (t1) and the answer (t2), and its ms value D means its clock stood in [D, D + 1 ms), so
 * offset = device - host lies in (D - t2, D + 1 ms - t1), whatever the delays were. The estimate is
 * the middle of the intersection of the rounds' intervals; rounds are paced 1 to 3 ms apart so
 * that they fall at different phases of the device's ms and the intersection narrows below 1 ms.
 * Should the intersection be empty (a clock step mid-burst), the rounds with the shortest round
 * trips are averaged instead. */

#include "eyetracker-int.h"

#include "be.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ECHO_BEST 8 /* the shortest round trips averaged when the intervals do not meet */

static void send_round(struct pirec_eyetracker *et);
static void on_timer(uv_timer_t *t);

static void schedule(struct pirec_eyetracker *et, int64_t after_ns);

/* The intersection of the rounds' intervals so far: 1 when it is not empty. */
static int bounds(const struct pirec_eyetracker *et, int64_t *lo, int64_t *hi)
{
  *lo = INT64_MIN, *hi = INT64_MAX;
  for (int i = 0; i < et->echo_round; i++) {
    *lo = et->echo_lo[i] > *lo ? et->echo_lo[i] : *lo;
    *hi = et->echo_hi[i] < *hi ? et->echo_hi[i] : *hi;
  }
  return *lo <= *hi;
}

/* The mean offset of the ECHO_BEST rounds with the shortest round trips (a clock step mid-burst
 * emptied the intersection); *best_rtt the shortest. */
static int64_t best_mean(const struct pirec_eyetracker *et, int64_t *best_rtt)
{
  int idx[ECHO_MAX_ROUNDS], n = et->echo_round;
  for (int i = 0; i < n; i++)
    idx[i] = i;
  for (int i = 1; i < n; i++) /* insertion sort by round trip: at most 96 values */
    for (int j = i; j > 0 && et->echo_rtt[idx[j]] < et->echo_rtt[idx[j - 1]]; j--) {
      int t = idx[j];
      idx[j] = idx[j - 1];
      idx[j - 1] = t;
    }
  int64_t sum = 0;
  for (int i = 0; i < ECHO_BEST; i++)
    sum += et->echo_off[idx[i]];
  *best_rtt = et->echo_rtt[idx[0]];
  return sum / ECHO_BEST;
}

/* The estimate from the rounds measured (see the top of this file). */
static void estimate(struct pirec_eyetracker *et)
{
  int64_t lo, hi, rtt;
  int64_t mean = best_mean(et, &rtt);
  if (bounds(et, &lo, &hi)) {
    et->echo_offset_ns = lo + (hi - lo) / 2;
    et->echo_uncertainty_ns = (hi - lo + 1) / 2;
  } else {
    et->echo_offset_ns = mean;
    et->echo_uncertainty_ns = rtt / 2 + NS_MS / 2;
  }
  et->echo_rtt_ns = rtt;
  et->echo_estimates++;
  int64_t mono = pirec_clock_mono_ns(), wall = pirec_clock_wall_ns();
  pirec__et_echo_row(et, mono, wall, et->echo_offset_ns, et->echo_rtt_ns);
}

static void closed(uv_handle_t *h)
{
  struct pirec_eyetracker *et = container_of((uv_tcp_t *)h, struct pirec_eyetracker, echo_tcp);
  et->pending--;
  et->echo_busy = 0;
  if (et->closing) {
    pirec__et_maybe_closed(et);
    return;
  }
  if (et->echo_failure[0]) {
    et->echo_failures++;
    pirec__et_emit(et, PIREC_EYETRACKER_EVENT_ERROR, "%s: time echo at '%s:%d' failed: %s", et->s.name,
                   et->s.host, et->echo_port, et->echo_failure);
  } else {
    estimate(et);
  }
  schedule(et, et->s.time_echo_interval_ns);
}

static void finish(struct pirec_eyetracker *et, const char *failure)
{
  if (uv_is_closing((uv_handle_t *)&et->echo_tcp))
    return;
  uv_timer_stop(&et->echo_timer);
  if (failure && !et->echo_failure[0])
    snprintf(et->echo_failure, sizeof et->echo_failure, "%s", failure);
  uv_close((uv_handle_t *)&et->echo_tcp, closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct pirec_eyetracker *et = container_of((uv_tcp_t *)h, struct pirec_eyetracker, echo_tcp);
  *buf = uv_buf_init((char *)et->echo_in + et->echo_have, (unsigned)(sizeof et->echo_in - et->echo_have));
}

/* One whole 16-byte answer to the round in flight. */
static void on_answer(struct pirec_eyetracker *et)
{
  int64_t t2_mono = pirec_clock_mono_ns();
  uint64_t echoed = pirec_be_read64(et->echo_in), dev_ms = pirec_be_read64(et->echo_in + 8);
  if (echoed != et->echo_t1_ms) {
    finish(et, "the answer does not echo the time sent");
    return;
  }
  int64_t rtt = t2_mono - et->echo_t1_mono, dev = (int64_t)dev_ms * NS_MS;
  int i = et->echo_round;
  et->echo_off[i] = dev + NS_MS / 2 - (et->echo_t1_wall + rtt / 2);
  et->echo_rtt[i] = rtt;
  et->echo_lo[i] = dev - (et->echo_t1_wall + rtt);
  et->echo_hi[i] = dev + NS_MS - et->echo_t1_wall;
  et->echo_have = 0;
  int64_t lo, hi;
  ++et->echo_round;
  if (et->echo_round == ECHO_MAX_ROUNDS ||
      (et->echo_round >= ECHO_ROUNDS && (!bounds(et, &lo, &hi) || hi - lo <= 2 * ECHO_GOOD_NS))) {
    finish(et, NULL);
  } else {
    /* 1, 2 or 3 ms: the loop's timers tick in whole ms, so a varied wait spreads the rounds over
     * the device's ms more than a fixed one */
    et->echo_pacing = 1;
    uv_timer_start(&et->echo_timer, on_timer, 1 + (uint64_t)(et->echo_round % 3), 0);
  }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct pirec_eyetracker *et = container_of((uv_tcp_t *)s, struct pirec_eyetracker, echo_tcp);
  if (n == UV_EOF)
    finish(et, "the device closed the connection");
  else if (n < 0)
    finish(et, uv_strerror((int)n));
  else if ((et->echo_have += (size_t)n) == sizeof et->echo_in)
    on_answer(et);
}

static void send_round(struct pirec_eyetracker *et)
{
  uint8_t req[8];
  et->echo_t1_mono = pirec_clock_mono_ns();
  et->echo_t1_wall = pirec_clock_wall_ns();
  et->echo_t1_ms = (uint64_t)(et->echo_t1_wall / NS_MS);
  pirec_be_write64(req, et->echo_t1_ms);
  int r = pirec__et_write((uv_stream_t *)&et->echo_tcp, (const char *)req, sizeof req);
  if (r < 0)
    finish(et, uv_strerror(r));
}

static void on_connected(uv_connect_t *req, int status)
{
  struct pirec_eyetracker *et = container_of(req, struct pirec_eyetracker, echo_connect);
  if (status < 0) {
    finish(et, uv_strerror(status));
    return;
  }
  uv_tcp_nodelay(&et->echo_tcp, 1);
  int r = uv_read_start((uv_stream_t *)&et->echo_tcp, on_alloc, on_read);
  if (r < 0)
    finish(et, uv_strerror(r));
  else
    send_round(et);
}

static void on_timer(uv_timer_t *t)
{
  struct pirec_eyetracker *et = container_of(t, struct pirec_eyetracker, echo_timer);
  if (et->echo_busy && et->echo_pacing) {
    et->echo_pacing = 0;
    uv_timer_start(&et->echo_timer, on_timer, (uint64_t)(et->s.api_timeout_ns / NS_MS), 0);
    send_round(et);
  } else if (et->echo_busy) {
    char why[96];
    snprintf(why, sizeof why, "no answer within %lld ms (round %d)",
             (long long)(et->s.api_timeout_ns / NS_MS), et->echo_round + 1);
    finish(et, why);
  } else
    pirec_eyetracker_time_echo(et);
}

static void schedule(struct pirec_eyetracker *et, int64_t after_ns)
{
  if (!et->closing)
    uv_timer_start(&et->echo_timer, on_timer, (uint64_t)(after_ns / NS_MS), 0);
}

void pirec_eyetracker_time_echo(struct pirec_eyetracker *et)
{
  struct sockaddr_storage ss;
  if (et->echo_busy || et->closing || !et->s.time_echo || et->echo_port <= 0 ||
      pirec__et_make_addr(et->s.host, et->echo_port, &ss) < 0)
    return;
  et->echo_failure[0] = 0;
  et->echo_pacing = 0;
  et->echo_round = 0;
  et->echo_have = 0;
  uv_tcp_init(et->loop, &et->echo_tcp);
  et->pending++;
  et->echo_busy = 1;
  uv_timer_start(&et->echo_timer, on_timer, (uint64_t)(et->s.api_timeout_ns / NS_MS), 0);
  int r = uv_tcp_connect(&et->echo_connect, &et->echo_tcp, (struct sockaddr *)&ss, on_connected);
  if (r < 0)
    finish(et, uv_strerror(r));
}

void pirec__et_echo_port(struct pirec_eyetracker *et, int port)
{
  int changed = port != et->echo_port;
  et->echo_port = port;
  if (changed && port > 0)
    pirec_eyetracker_time_echo(et);
}

void pirec__et_echo_init(struct pirec_eyetracker *et)
{
  uv_timer_init(et->loop, &et->echo_timer);
  et->echo_offset_ns = INT64_MIN;
}

static void timer_closed(uv_handle_t *h)
{
  struct pirec_eyetracker *et = container_of((uv_timer_t *)h, struct pirec_eyetracker, echo_timer);
  et->pending--;
  pirec__et_maybe_closed(et);
}

void pirec__et_echo_close(struct pirec_eyetracker *et)
{
  et->pending++;
  uv_close((uv_handle_t *)&et->echo_timer, timer_closed);
  if (et->echo_busy && !uv_is_closing((uv_handle_t *)&et->echo_tcp))
    uv_close((uv_handle_t *)&et->echo_tcp, closed);
}
