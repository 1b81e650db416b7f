/* Internal to the eye tracker's simulator (pirec_eyesim in include/pirec/eyetracker.h): a Pupil
 * Labs Neon simulator on loopback: GET /api/status over HTTP, RTSP sessions streaming gaze
 * (com.pupillabs.gaze1) and world video (H.264 from an ffmpeg child encoding a lavfi source), RTP
 * and RTCP interleaved on the RTSP connection, with fault modes. See include/pirec/eyetracker.h.
 *
 * The device clock: RTP timestamps count 90 kHz ticks since start (plus a random origin, so they
 * wrap within seconds), and device time of tick k is dev0 + floor(k * 1e9 / 90000). Sender
 * Reports name ticks that are multiples of 9 (100 us), where that division is exact, so a client
 * doing the same arithmetic reproduces every sample's stamp to the nanosecond. */

/* The simulator's files form layers; each calls only those above it in this list:
 *   sim-core.c    the device clock, random numbers, connections and their writes, the close count
 *   sim-api.c     the control API (POST /api/event, /api/recording:*) and the Time Echo server
 *   sim-rtsp.c    the server side of HTTP (/api/status) and RTSP
 *   sim-streams.c gaze samples, eye events and Sender Reports on the tick timer; forced outages
 *   sim-video.c   the world video: an ffmpeg child's H.264 cut into access units and payloaded
 *   sim.c         settings and the public lifecycle */

#ifndef PIREC_SIM_INT_H
#define PIREC_SIM_INT_H

#include "pirec/bytebuf.h"
#include "pirec/eyesim.h"
#include "rtsp.h"

#include <stdint.h>
#include <uv.h>

struct pirec_sink;

enum { RATE = 90000, MTU = 1400, MAX_QUEUED = 4 << 20 };
enum cam { CAM_NONE = 0, CAM_GAZE, CAM_WORLD, CAM_EVENTS };

struct sim_conn {
  uv_tcp_t tcp;
  struct pirec_eyesim *sim;
  struct sim_conn *next;
  int http;
  struct pirec_rtsp_framer framer;
  enum cam cam;
  int setup, playing, closing, close_after_write;
  char session[20];
  int rtp_ch, rtcp_ch;
  int64_t next_sr_ns;
  size_t queued;
  uint64_t dropped;
};

struct pirec_eyesim {
  uv_loop_t *loop;
  struct pirec_eyesim_settings s;
  uv_tcp_t http_srv, rtsp_srv, echo_srv;
  int http_port, rtsp_port, echo_port;
  struct echo_conn *echo_conns;
  char recording_id[64]; /* the running recording's id, "" when none */
  int events_to_fail;
  struct pirec_sink *api_log;
  uv_timer_t tick;
  uv_process_t ff;
  uv_pipe_t ff_out;
  int ff_running, ff_pipe_open;
  uv_timer_t ff_restart;
  struct pirec_bytebuf au; /* the encoder's output not yet cut into access units */
  struct sim_conn *conns;
  int64_t mono0, dev0;
  uint32_t gaze_ts0, world_ts0, gaze_ssrc, world_ssrc, events_ts0, events_ssrc;
  uint16_t events_seq;
  uint64_t events_n; /* event slots generated (one per 100 ms) */
  uint64_t keepalive_n;
  uint16_t gaze_seq0, world_seq;
  uint64_t gaze_n;
  int64_t ff_base_ticks; /* the device tick of the encoder's first frame */
  uint64_t ff_frames;    /* frames since the encoder started */
  uint32_t rng;
  int down, disconnect_done;
  int64_t down_until;
  struct pirec_sink *gaze_log, *world_log, *events_log;
  struct pirec_eyesim_counters c;
  int closing, pending;
  pirec_eyesim_close_cb close_cb;
  void *close_user;
};

/* ---- sim-core.c ---- */

uint32_t pirec__sim_rnd(struct pirec_eyesim *sim);
double pirec__sim_rnd01(struct pirec_eyesim *sim);
/* Device ticks elapsed at CLOCK_MONOTONIC mono; the device clock runs drift_ppm fast. */
int64_t pirec__sim_ticks_at(const struct pirec_eyesim *sim, int64_t mono);
/* Device time of tick k (see the top of this file). */
int64_t pirec__sim_device_ns(const struct pirec_eyesim *sim, int64_t ticks);
/* One pending close has finished: runs the close callback and frees sim after the last. */
void pirec__sim_release(struct pirec_eyesim *sim);
/* The close callback of a handle whose data is the simulator. */
void pirec__sim_handle_closed(uv_handle_t *h);
/* Queues len bytes (prefixed by pre of pre_len) on c. Drops when the client does not read:
 * -ENOBUFS (counted), -ECANCELED on a closing connection, -ENOMEM, or uv_write's error. */
int pirec__sim_send(struct sim_conn *c, const void *pre, size_t pre_len, const void *data, size_t len);
/* One RTP or RTCP packet on an interleaved channel. */
int pirec__sim_send_interleaved(struct sim_conn *c, int channel, const uint8_t *pkt, size_t len);
void pirec__sim_conn_close(struct sim_conn *c);
/* 1 when a client plays cam. */
int pirec__sim_any_playing(const struct pirec_eyesim *sim, enum cam cam);
/* Why a generated sample or frame of cam is not sent: "down" (a forced outage), "idle" (nobody
 * plays it), or NULL when it goes out. */
const char *pirec__sim_blocked(const struct pirec_eyesim *sim, enum cam cam);
/* Sends one RTP packet to every client playing cam. */
void pirec__sim_broadcast(struct pirec_eyesim *sim, enum cam cam, const uint8_t *pkt, size_t len);

/* ---- sim-api.c ---- */

/* The device's time at CLOCK_MONOTONIC mono. */
int64_t pirec__sim_device_now(const struct pirec_eyesim *sim, int64_t mono);
/* A POST to path with its JSON body: the reply's JSON into out and the HTTP status code, or
 * -ENOENT for a path the API does not have. */
int pirec__sim_api_post(struct pirec_eyesim *sim, const char *path, size_t path_len, const char *body,
                        size_t len, char *out, size_t cap);
/* The listen callback of the Time Echo server, and the close of its connections at shutdown. */
void pirec__sim_on_echo_connection(uv_stream_t *srv, int status);
void pirec__sim_close_echoes(struct pirec_eyesim *sim);

/* ---- sim-rtsp.c ---- */

/* The listen callback of both servers (srv->data is the simulator). */
void pirec__sim_on_connection(uv_stream_t *srv, int status);

/* ---- sim-streams.c ---- */

/* Appends a formatted line to a log sink; NULL (no log, or one closing) logs nothing. */
void pirec__sim_log_row(struct pirec_sink *sink, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pirec__sim_on_tick(uv_timer_t *t);

/* ---- sim-video.c ---- */

/* Starts the encoder child and reads its stream. 0 or a negative error. */
int pirec__sim_ff_spawn(struct pirec_eyesim *sim);

#endif
