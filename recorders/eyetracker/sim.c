/* A Pupil Labs Neon simulator on loopback: GET /api/status over HTTP, RTSP sessions streaming gaze
 * (com.pupillabs.gaze1) and world video (H.264 from an ffmpeg child encoding a lavfi source), RTP
 * and RTCP interleaved on the RTSP connection, with fault modes. See include/pirec/eyetracker.h.
 *
 * The device clock: RTP timestamps count 90 kHz ticks since start (plus a random origin, so they
 * wrap within seconds), and device time of tick k is dev0 + floor(k * 1e9 / 90000). Sender
 * Reports name ticks that are multiples of 9 (100 us), where that division is exact, so a client
 * doing the same arithmetic reproduces every sample's stamp to the nanosecond. */

#include "sim-int.h"

#include "pirec/clock.h"
#include "pirec/log.h"
#include "pirec/sink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>

void pirec_eyesim_settings_default(struct pirec_eyesim_settings *s)
{
  memset(s, 0, sizeof *s);
  snprintf(s->host, sizeof s->host, "127.0.0.1");
  s->gaze_hz = 200;
  s->gaze_size = 89;
  s->world = 1;
  s->events = 1;
  s->world_fps = 30;
  s->width = 320;
  s->height = 240;
  snprintf(s->ffmpeg, sizeof s->ffmpeg, "ffmpeg");
  s->sr_interval_ns = 1000000000;
  s->first_sr_ns = 500000000;
  s->seed = 1;
}

static int listen_on(struct pirec_eyesim *sim, uv_tcp_t *srv, int port, int *bound, uv_connection_cb cb)
{
  struct sockaddr_storage ss;
  int r = strchr(sim->s.host, ':') ? uv_ip6_addr(sim->s.host, port, (struct sockaddr_in6 *)&ss)
                                   : uv_ip4_addr(sim->s.host, port, (struct sockaddr_in *)&ss);
  if (r < 0)
    return r;
  uv_tcp_init(sim->loop, srv);
  srv->data = sim;
  sim->pending++;
  if ((r = uv_tcp_bind(srv, (struct sockaddr *)&ss, 0)) < 0 ||
      (r = uv_listen((uv_stream_t *)srv, 16, cb)) < 0) {
    pirec_log(PIREC_LOG_ERROR, "eyesim: cannot listen on '%s' port %d: %s", sim->s.host, port,
              uv_strerror(r));
    return r;
  }
  struct sockaddr_storage got;
  int len = sizeof got;
  uv_tcp_getsockname(srv, (struct sockaddr *)&got, &len);
  *bound = got.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&got)->sin6_port)
                                     : ntohs(((struct sockaddr_in *)&got)->sin_port);
  return 0;
}

static void sink_closed(struct pirec_sink *sink, const struct pirec_sink_counters *c, void *user)
{
  struct pirec_eyesim *sim = user;
  pirec__sim_release(sim);
}

static void noop_close_cb(struct pirec_eyesim *sim, void *user)
{
}

static int check_settings(const struct pirec_eyesim_settings *s)
{
  if (strcmp(s->host, "127.0.0.1") != 0 && strcmp(s->host, "::1") != 0) {
    pirec_log(PIREC_LOG_ERROR, "eyesim: refusing to listen on '%s': loopback only", s->host);
    return -EINVAL;
  }
  if (s->gaze_hz <= 0 || RATE % s->gaze_hz != 0 ||
      (s->gaze_size != 9 && s->gaze_size != 17 && s->gaze_size != 65 && s->gaze_size != 89) ||
      (s->world && (s->world_fps <= 0 || s->width < 16 || s->height < 16)) || s->loss < 0 || s->loss > 1 ||
      s->malformed < 0 || s->malformed > 1) {
    pirec_log(PIREC_LOG_ERROR,
              "eyesim: bad settings (gaze_hz %d must divide 90000, gaze_size %d, "
              "world %dx%d at %d fps)",
              s->gaze_hz, s->gaze_size, s->width, s->height, s->world_fps);
    return -EINVAL;
  }
  return 0;
}

/* The streams' random origins, from the seed. */
static void seed_origins(struct pirec_eyesim *sim)
{
  sim->rng = sim->s.seed ? sim->s.seed : 1;
  for (int i = 0; i < 8; i++)
    pirec__sim_rnd(sim);
  /* Origins close to the wrap, so 32-bit timestamps and 16-bit sequence numbers wrap early. */
  sim->gaze_ts0 = 0xFFFFFFFFu - 3u * RATE - (pirec__sim_rnd(sim) & 0xFFFF);
  sim->world_ts0 = 0xFFFFFFFFu - 5u * RATE - (pirec__sim_rnd(sim) & 0xFFFF);
  sim->gaze_seq0 = (uint16_t)(65536 - 300 - (pirec__sim_rnd(sim) & 0xFF));
  sim->world_seq = (uint16_t)pirec__sim_rnd(sim);
  sim->gaze_ssrc = pirec__sim_rnd(sim);
  sim->world_ssrc = pirec__sim_rnd(sim);
  sim->events_ssrc = pirec__sim_rnd(sim);
  sim->events_ts0 = pirec__sim_rnd(sim);
  sim->events_seq = (uint16_t)pirec__sim_rnd(sim);
}

/* Opens one log of what was sent, when a path is set, with its header line. 0 or an error. */
static int open_log(struct pirec_eyesim *sim, const char *path, const char *header, struct pirec_sink **out)
{
  if (!path[0])
    return 0;
  int r = pirec_sink_new(sim->loop, path, NULL, NULL, NULL, out);
  if (r < 0)
    return r;
  sim->pending++;
  pirec__sim_log_row(*out, "%s", header);
  return 0;
}

int pirec_eyesim_new(uv_loop_t *loop, const struct pirec_eyesim_settings *s, struct pirec_eyesim **out)
{
  int r = check_settings(s);
  if (r < 0)
    return r;
  struct pirec_eyesim *sim = calloc(1, sizeof *sim);
  if (!sim)
    return -ENOMEM;
  sim->loop = loop;
  sim->s = *s;
  pirec_bytebuf_init(&sim->au, 0, (size_t)64 << 20); /* allocates nothing: cannot fail */
  seed_origins(sim);
  sim->mono0 = pirec_clock_mono_ns();
  sim->dev0 = pirec_clock_wall_ns() + s->clock_offset_ns;
  sim->events_to_fail = s->fail_events;
  r = open_log(sim, s->gaze_log, "seq,rtp_ts,device_ns,x,y,fate\n", &sim->gaze_log);
  if (r == 0)
    r = open_log(sim, s->world_log, "frame,rtp_ts,device_ns,bytes,fate\n", &sim->world_log);
  if (r == 0)
    r = open_log(sim, s->events_log, "seq,rtp_ts,device_ns,event,fate\n", &sim->events_log);
  if (r == 0)
    r = listen_on(sim, &sim->http_srv, s->http_port, &sim->http_port, pirec__sim_on_connection);
  if (r == 0)
    r = open_log(sim, s->api_log, "rx_mono_ns,rx_device_ns,path,name,timestamp_ns,code\n", &sim->api_log);
  if (r == 0)
    r = listen_on(sim, &sim->rtsp_srv, s->rtsp_port, &sim->rtsp_port, pirec__sim_on_connection);
  if (r == 0 && !s->no_time_echo)
    r = listen_on(sim, &sim->echo_srv, s->echo_port, &sim->echo_port, pirec__sim_on_echo_connection);
  uv_timer_init(loop, &sim->tick);
  sim->tick.data = sim;
  sim->pending++;
  uv_timer_init(loop, &sim->ff_restart);
  sim->ff_restart.data = sim;
  sim->pending++;
  if (r == 0 && s->world)
    r = pirec__sim_ff_spawn(sim);
  if (r < 0) {
    pirec_eyesim_close(sim, noop_close_cb, NULL);
    return r;
  }
  /* Half the sample period: late ticks catch up, so the rate holds whatever the timer does. */
  unsigned period = (unsigned)(500 / s->gaze_hz);
  uv_timer_start(&sim->tick, pirec__sim_on_tick, 0, period ? period : 1);
  *out = sim;
  return 0;
}

void pirec_eyesim_ports(const struct pirec_eyesim *sim, int *http_port, int *rtsp_port)
{
  *http_port = sim->http_port;
  *rtsp_port = sim->rtsp_port;
}

int pirec_eyesim_echo_port(const struct pirec_eyesim *sim)
{
  return sim->echo_port;
}

void pirec_eyesim_counters(const struct pirec_eyesim *sim, struct pirec_eyesim_counters *out)
{
  *out = sim->c;
}

void pirec_eyesim_close(struct pirec_eyesim *sim, pirec_eyesim_close_cb cb, void *user)
{
  if (!sim)
    return;
  sim->closing = 1;
  sim->close_cb = cb;
  sim->close_user = user;
  sim->pending++; /* held until every close below has been started */
  uv_close((uv_handle_t *)&sim->tick, pirec__sim_handle_closed);
  uv_close((uv_handle_t *)&sim->ff_restart, pirec__sim_handle_closed);
  if (sim->http_srv.loop)
    uv_close((uv_handle_t *)&sim->http_srv, pirec__sim_handle_closed);
  if (sim->rtsp_srv.loop)
    uv_close((uv_handle_t *)&sim->rtsp_srv, pirec__sim_handle_closed);
  if (sim->echo_srv.loop)
    uv_close((uv_handle_t *)&sim->echo_srv, pirec__sim_handle_closed);
  pirec__sim_close_echoes(sim);
  for (struct sim_conn *c = sim->conns; c; c = c->next)
    pirec__sim_conn_close(c);
  if (sim->ff_running)
    uv_process_kill(&sim->ff, SIGTERM);
  /* The encoder's pipe keeps delivering frames until ffmpeg has exited, and each would be logged:
   * the logs are forgotten as they close, so those late frames log nothing (log_row skips NULL). */
  struct pirec_sink *logs[] = {sim->gaze_log, sim->world_log, sim->events_log, sim->api_log};
  sim->gaze_log = sim->world_log = sim->events_log = sim->api_log = NULL;
  for (size_t i = 0; i < sizeof logs / sizeof logs[0]; i++)
    if (logs[i])
      pirec_sink_close(logs[i], sink_closed, sim);
  pirec__sim_release(sim);
}
