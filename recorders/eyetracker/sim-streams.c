/* The simulated sensors on the tick timer: gaze samples and eye events as RTP, Sender Reports,
 * the fault modes (loss, malformed payloads, a forced outage) and the logs of what was sent. */

#include "sim-int.h"

#include "rtcp.h"
#include "rtp.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"
#include "pirec/gaze.h"
#include "pirec/log.h"
#include "pirec/sink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <stdarg.h>

void pirec__sim_log_row(struct pirec_sink *sink, const char *fmt, ...)
{
  if (!sink)
    return;
  char line[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n > 0 && (size_t)n < sizeof line)
    pirec_sink_push(sink, line, (size_t)n);
}

static void make_sample(const struct pirec_eyesim *sim, uint64_t n, struct pirec_gaze_sample *g)
{
  memset(g, 0, sizeof *g);
  g->kind = (enum pirec_gaze_kind)sim->s.gaze_size;
  double t = (double)n / sim->s.gaze_hz;
  /* In the scene video's pixels, as a Neon's gaze is (800 +- 400, 600 +- 300 at its 1600x1200). */
  g->x = (float)(sim->s.width / 2.0 + sim->s.width / 4.0 * sin(t * 2.0));
  g->y = (float)(sim->s.height / 2.0 + sim->s.height / 4.0 * cos(t * 3.0));
  g->worn = (n / (uint64_t)sim->s.gaze_hz) % 10 == 9 ? 0 : 255;
  g->right_x = g->x + 12.5f;
  g->right_y = g->y - 3.25f;
  for (int e = 0; e < 2; e++) {
    struct pirec_gaze_eye *eye = &g->eye[e];
    eye->pupil_diameter = (float)(3.5 + 0.5 * sin(t + e));
    for (int i = 0; i < 3; i++) {
      eye->eyeball_center[i] = (float)((e ? 30.0 : -30.0) + i * 5.0 + sin(t + i));
      eye->optical_axis[i] = (float)(0.1 * (i + 1) * cos(t + e));
    }
    eye->eyelid_angle_top = (float)(0.5 + 0.1 * sin(t));
    eye->eyelid_angle_bottom = (float)(-0.3 + 0.05 * cos(t));
    eye->eyelid_aperture = (float)(10.0 + sin(t * 0.5));
  }
}

static void send_gaze(struct pirec_eyesim *sim, uint64_t n, int64_t ticks)
{
  struct pirec_gaze_sample g;
  make_sample(sim, n, &g);
  uint16_t seq = (uint16_t)(sim->gaze_seq0 + n);
  uint32_t ts = sim->gaze_ts0 + (uint32_t)ticks;
  uint8_t pkt[12 + 128];
  size_t len = 0;
  sim->c.gaze_generated++;
  const char *fate = pirec__sim_blocked(sim, CAM_GAZE);
  if (fate && sim->down) {
    sim->c.gaze_down++;
  } else if (fate) {
    sim->c.gaze_idle++;
  } else if (sim->s.loss > 0 && pirec__sim_rnd01(sim) < sim->s.loss) {
    fate = "lost";
    sim->c.gaze_lost++;
  } else {
    size_t h = pirec_rtp_write_header(pkt, 1, 99, seq, ts, sim->gaze_ssrc);
    int plen = pirec_gaze_encode(&g, pkt + h, sizeof pkt - h);
    len = h + (size_t)plen;
    fate = "sent";
    if (sim->s.malformed > 0 && pirec__sim_rnd01(sim) < sim->s.malformed) {
      fate = "malformed";
      sim->c.gaze_malformed++;
      switch (n % 3) {
      case 0: len = h + (size_t)plen / 2; break; /* truncated payload */
      case 1: len = h + (size_t)plen + 4; break; /* a size no layout has */
      default: len = 5; break;                   /* not even an RTP header */
      }
    } else {
      sim->c.gaze_sent++;
    }
    pirec__sim_broadcast(sim, CAM_GAZE, pkt, len);
  }
  char xs[32], ys[32];
  snprintf(xs, sizeof xs, "%.9g", (double)g.x);
  snprintf(ys, sizeof ys, "%.9g", (double)g.y);
  pirec__sim_log_row(sim->gaze_log, "%u,%u,%lld,%s,%s,%s\n", seq, ts,
                     (long long)pirec__sim_device_ns(sim, ticks), xs, ys, fate);
}

/* Eye events: one slot every 100 ms of device time cycling fixation onset, fixation, saccade onset,
 * saccade; every 20th slot is a blink instead; a keep-alive every second. */
static void send_event(struct pirec_eyesim *sim, uint64_t n, int64_t ticks, int keepalive)
{
  struct pirec_gaze_event e = {0};
  int64_t now_ns = pirec__sim_device_ns(sim, ticks);
  if (keepalive) {
    e.type = PIREC_GAZE_EVENT_KEEPALIVE;
  } else if (n % 20 == 19) {
    e.type = PIREC_GAZE_EVENT_BLINK;
    e.start_ns = now_ns - 150000000;
    e.end_ns = now_ns - 20000000;
  } else {
    static const enum pirec_gaze_event_type cycle[4] = {
        PIREC_GAZE_EVENT_FIXATION_ONSET, PIREC_GAZE_EVENT_FIXATION, PIREC_GAZE_EVENT_SACCADE_ONSET,
        PIREC_GAZE_EVENT_SACCADE};
    e.type = cycle[n % 4];
    e.start_ns = now_ns - (e.type == PIREC_GAZE_EVENT_FIXATION ? 100000000 : 0);
    e.end_ns = now_ns;
    e.start_x = 800.0f + (float)(n % 7);
    e.start_y = 600.0f;
    e.end_x = e.start_x + 40.0f;
    e.end_y = 610.5f;
    e.mean_x = e.start_x + 20.0f;
    e.mean_y = 605.25f;
    e.amplitude_px = 40.0f;
    e.amplitude_deg = 2.5f;
    e.mean_velocity = 120.0f + (float)(n % 5);
    e.max_velocity = 300.0f;
  }
  uint8_t pkt[12 + 64];
  uint16_t seq = sim->events_seq++;
  uint32_t ts = sim->events_ts0 + (uint32_t)ticks;
  size_t h = pirec_rtp_write_header(pkt, 1, 100, seq, ts, sim->events_ssrc);
  int len = pirec_gaze_event_encode(&e, pkt + h, sizeof pkt - h);
  sim->c.events_generated++;
  const char *fate = pirec__sim_blocked(sim, CAM_EVENTS);
  if (!fate) {
    fate = "sent";
    sim->c.events_sent++;
    pirec__sim_broadcast(sim, CAM_EVENTS, pkt, h + (size_t)len);
  }
  pirec__sim_log_row(sim->events_log, "%u,%u,%lld,%s,%s\n", seq, ts, (long long)now_ns,
                     pirec_gaze_event_name(e.type), fate);
}

static void send_sr(struct pirec_eyesim *sim, struct sim_conn *c, int64_t ticks_now)
{
  int64_t k = ticks_now - ticks_now % 9; /* exact in ns: see the top of this file */
  struct pirec_rtcp_sr sr = {0};
  sr.ssrc = c->cam == CAM_GAZE ? sim->gaze_ssrc : c->cam == CAM_WORLD ? sim->world_ssrc : sim->events_ssrc;
  sr.rtp_ts = (c->cam == CAM_GAZE    ? sim->gaze_ts0
               : c->cam == CAM_WORLD ? sim->world_ts0
                                     : sim->events_ts0) +
              (uint32_t)k;
  sr.ntp = pirec_rtcp_unix_ns_to_ntp(pirec__sim_device_ns(sim, k));
  uint8_t b[28];
  pirec_rtcp_write_sr(b, &sr);
  pirec__sim_send_interleaved(c, c->rtcp_ch, b, sizeof b);
}

static void go_down(struct pirec_eyesim *sim, int64_t now)
{
  sim->down = 1;
  sim->disconnect_done = 1;
  sim->down_until = now + sim->s.disconnect_for_ns;
  pirec_log(PIREC_LOG_INFO, "eyesim: disconnecting every client for %lld ms",
            (long long)(sim->s.disconnect_for_ns / 1000000));
  for (struct sim_conn *c = sim->conns; c; c = c->next)
    if (!c->closing) {
      sim->c.disconnects_forced++;
      pirec__sim_conn_close(c);
    }
}

void pirec__sim_on_tick(uv_timer_t *t)
{
  struct pirec_eyesim *sim = container_of(t, struct pirec_eyesim, tick);
  int64_t now = pirec_clock_mono_ns();
  if (sim->s.disconnect_at_ns > 0 && !sim->disconnect_done && now - sim->mono0 >= sim->s.disconnect_at_ns)
    go_down(sim, now);
  if (sim->down && now >= sim->down_until) {
    sim->down = 0;
    pirec_log(PIREC_LOG_INFO, "eyesim: accepting clients again");
  }
  int64_t ticks = pirec__sim_ticks_at(sim, now);
  int64_t step = RATE / sim->s.gaze_hz;
  while ((int64_t)sim->gaze_n * step <= ticks) {
    send_gaze(sim, sim->gaze_n, (int64_t)sim->gaze_n * step);
    sim->gaze_n++;
  }
  if (sim->s.events) {
    while ((int64_t)sim->events_n * (RATE / 10) <= ticks)
      send_event(sim, sim->events_n, (int64_t)sim->events_n * (RATE / 10), 0), sim->events_n++;
    while ((int64_t)sim->keepalive_n * RATE + RATE / 20 <= ticks)
      send_event(sim, 0, (int64_t)sim->keepalive_n * RATE + RATE / 20, 1), sim->keepalive_n++;
  }
  for (struct sim_conn *c = sim->conns; c; c = c->next)
    if (c->playing && !c->closing && now >= c->next_sr_ns) {
      send_sr(sim, c, ticks);
      c->next_sr_ns = now + sim->s.sr_interval_ns;
    }
}
