/* A Pupil Labs Neon simulator on loopback: GET /api/status over HTTP, RTSP sessions streaming gaze
 * (com.pupillabs.gaze1) and world video (H.264 from an ffmpeg child encoding a lavfi source), RTP
 * and RTCP interleaved on the RTSP connection, with fault modes. See include/pirec/eyetracker.h.
 *
 * The device clock: RTP timestamps count 90 kHz ticks since start (plus a random origin, so they
 * wrap within seconds), and device time of tick k is dev0 + floor(k * 1e9 / 90000). Sender
 * Reports name ticks that are multiples of 9 (100 us), where that division is exact, so a client
 * doing the same arithmetic reproduces every sample's stamp to the nanosecond. */

#include "pirec/eyetracker.h"

#include "pirec/clock.h"
#include "pirec/gaze.h"
#include "pirec/log.h"
#include "h264.h"
#include "http.h"
#include "rtcp.h"
#include "rtp.h"
#include "rtsp.h"
#include "pirec/sink.h"
#include "pirec/container_of.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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
  uv_tcp_t http_srv, rtsp_srv;
  int http_port, rtsp_port;
  uv_timer_t tick;
  uv_process_t ff;
  uv_pipe_t ff_out;
  int ff_running, ff_pipe_open;
  uv_timer_t ff_restart;
  uint8_t *au;
  size_t au_len, au_cap;
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

static uint32_t rnd(struct pirec_eyesim *sim)
{
  uint32_t x = sim->rng;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return sim->rng = x;
}

static double rnd01(struct pirec_eyesim *sim)
{
  return rnd(sim) / 4294967296.0;
}

/* Device ticks elapsed at CLOCK_MONOTONIC now; the device clock runs drift_ppm fast. */
static int64_t ticks_at(const struct pirec_eyesim *sim, int64_t mono)
{
  __int128 el = (__int128)(mono - sim->mono0) * (1000000 + sim->s.drift_ppm);
  return (int64_t)(el * RATE / ((__int128)1000000 * 1000000000));
}

static int64_t device_ns(const struct pirec_eyesim *sim, int64_t ticks)
{
  return sim->dev0 + pirec_rtp_ticks_to_ns(ticks, RATE);
}

/* ---- connections ---- */

struct wreq {
  uv_write_t req;
  struct sim_conn *conn;
  size_t len;
  uint8_t data[];
};

static void conn_close(struct sim_conn *c);

/* Runs the close callback once every handle and sink has closed. */
static void finish(struct pirec_eyesim *sim)
{
  sim->close_cb(sim, sim->close_user);
  free(sim->au);
  free(sim);
}

static void on_written(uv_write_t *req, int status)
{
  struct wreq *w = container_of(req, struct wreq, req);
  struct sim_conn *c = w->conn;
  c->queued -= w->len;
  free(w);
  if (c->close_after_write && c->queued == 0)
    conn_close(c);
}

/* Queues len bytes (prefixed by pre of pre_len) on c. Drops when the client does not read. */
static int conn_send(struct sim_conn *c, const void *pre, size_t pre_len, const void *data, size_t len)
{
  if (c->closing)
    return -ECANCELED;
  if (c->queued + pre_len + len > MAX_QUEUED) {
    c->dropped++;
    return -ENOBUFS;
  }
  struct wreq *w = malloc(sizeof *w + pre_len + len);
  if (!w)
    return -ENOMEM;
  w->conn = c;
  w->len = pre_len + len;
  if (pre_len)
    memcpy(w->data, pre, pre_len);
  if (len)
    memcpy(w->data + pre_len, data, len);
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
  int r = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
  if (r < 0) {
    free(w);
    return r;
  }
  c->queued += w->len;
  return 0;
}

static int send_interleaved(struct sim_conn *c, int channel, const uint8_t *pkt, size_t len)
{
  uint8_t h[4] = {'$', (uint8_t)channel, (uint8_t)(len >> 8), (uint8_t)len};
  return conn_send(c, h, 4, pkt, len);
}

static void on_conn_closed(uv_handle_t *h)
{
  struct sim_conn *c = container_of((uv_tcp_t *)h, struct sim_conn, tcp);
  struct pirec_eyesim *sim = c->sim;
  for (struct sim_conn **pp = &sim->conns; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  pirec_rtsp_framer_free(&c->framer);
  free(c);
  sim->pending--;
  if (sim->closing && sim->pending == 0 && sim->close_cb)
    finish(sim);
}

static void conn_close(struct sim_conn *c)
{
  if (c->closing)
    return;
  c->closing = 1;
  c->playing = 0;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

/* ---- HTTP ---- */

static void http_request(struct sim_conn *c, const struct pirec_rtsp_item *it)
{
  struct pirec_eyesim *sim = c->sim;
  char body[2048], head[256];
  const char *status = "200 OK";
  sim->c.http_requests++;
  if (it->len >= 16 && memcmp(it->data, "GET /api/status ", 16) == 0) {
    snprintf(body, sizeof body,
             "{\"message\":\"Success\",\"result\":["
             "{\"model\":\"Phone\",\"data\":{\"device_id\":\"pirec-eyesim\",\"device_name\":"
             "\"pirec eyesim\",\"ip\":\"%s\",\"port\":%d,\"battery_level\":100,\"battery_state\":"
             "\"OK\",\"memory\":1000000000,\"memory_state\":\"OK\",\"time_echo_port\":0}},"
             "{\"model\":\"Hardware\",\"data\":{\"version\":\"2.0\",\"glasses_serial\":\"sim\","
             "\"world_camera_serial\":\"sim\",\"module_serial\":\"sim\"}},"
             "{\"model\":\"Sensor\",\"data\":{\"sensor\":\"gaze\",\"conn_type\":\"DIRECT\","
             "\"connected\":true,\"ip\":\"%s\",\"port\":%d,\"protocol\":\"rtsp\",\"params\":"
             "\"camera=gaze\"}},"
             "{\"model\":\"Sensor\",\"data\":{\"sensor\":\"world\",\"conn_type\":\"DIRECT\","
             "\"connected\":%s,\"ip\":\"%s\",\"port\":%d,\"protocol\":\"rtsp\",\"params\":"
             "\"camera=world\"}},"
             "{\"model\":\"Sensor\",\"data\":{\"sensor\":\"eye_events\",\"conn_type\":\"DIRECT\","
             "\"connected\":%s,\"ip\":\"%s\",\"port\":%d,\"protocol\":\"rtsp\",\"params\":"
             "\"camera=eye_events\"}}]}",
             sim->s.host, sim->http_port, sim->s.host, sim->rtsp_port, sim->s.world ? "true" : "false",
             sim->s.host, sim->rtsp_port, sim->s.events ? "true" : "false", sim->s.host, sim->rtsp_port);
  } else {
    status = "404 Not Found";
    snprintf(body, sizeof body, "{\"message\":\"not found\"}");
  }
  if (sim->s.chunked_status) {
    /* the body in 300-byte chunks with a chunk extension, as a streaming server may send it */
    char coded[sizeof body * 2];
    size_t blen = strlen(body), used = 0;
    for (size_t at = 0; at < blen; at += 300) {
      size_t part = blen - at < 300 ? blen - at : 300;
      used += (size_t)snprintf(coded + used, sizeof coded - used, "%zx;sim=1\r\n", part);
      memcpy(coded + used, body + at, part);
      used += part;
      used += (size_t)snprintf(coded + used, sizeof coded - used, "\r\n");
    }
    used += (size_t)snprintf(coded + used, sizeof coded - used, "0\r\n\r\n");
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                     "Connection: close\r\n\r\n",
                     status);
    conn_send(c, head, (size_t)n, coded, used);
  } else {
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, strlen(body));
    conn_send(c, head, (size_t)n, body, strlen(body));
  }
  c->close_after_write = 1;
}

/* ---- RTSP ---- */

static enum cam cam_of(const char *url, size_t len)
{
  const char *q = memmem(url, len, "camera=", 7);
  if (!q)
    return CAM_NONE;
  q += 7;
  size_t rest = len - (size_t)(q - url);
  if (rest >= 4 && memcmp(q, "gaze", 4) == 0)
    return CAM_GAZE;
  if (rest >= 5 && memcmp(q, "world", 5) == 0)
    return CAM_WORLD;
  if (rest >= 10 && memcmp(q, "eye_events", 10) == 0)
    return CAM_EVENTS;
  return CAM_NONE;
}

static void reply(struct sim_conn *c, const char *status, const char *cseq, size_t cseq_len,
                  const char *extra, const char *body)
{
  char head[1024];
  size_t blen = body ? strlen(body) : 0;
  int n = snprintf(head, sizeof head, "RTSP/1.0 %s\r\nCSeq: %.*s\r\nServer: pirec-eyesim\r\n%s", status,
                   (int)cseq_len, cseq, extra ? extra : "");
  if (blen)
    n += snprintf(head + n, sizeof head - (size_t)n,
                  "Content-Type: application/sdp\r\nContent-Length: %zu\r\n", blen);
  n += snprintf(head + n, sizeof head - (size_t)n, "\r\n");
  conn_send(c, head, (size_t)n, body, blen);
}

static void rtsp_request(struct sim_conn *c, const struct pirec_rtsp_item *it)
{
  struct pirec_eyesim *sim = c->sim;
  const char *m = (const char *)it->data;
  const char *sp = memchr(m, ' ', it->len);
  const char *cseq = "0";
  size_t cseq_len = 1;
  if (!pirec_http_header(it->data, it->len, "CSeq", &cseq, &cseq_len)) {
    cseq = "0";
    cseq_len = 1;
  }
  if (!sp) {
    reply(c, "400 Bad Request", cseq, cseq_len, NULL, NULL);
    return;
  }
  size_t ml = (size_t)(sp - m);
  const char *url = sp + 1;
  const char *ue = memchr(url, ' ', it->len - ml - 1);
  size_t ul = ue ? (size_t)(ue - url) : 0;
  char extra[512];
#define IS(name) (ml == strlen(name) && memcmp(m, name, ml) == 0)
  if (IS("OPTIONS")) {
    reply(c, "200 OK", cseq, cseq_len, "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n",
          NULL);
  } else if (IS("DESCRIBE")) {
    enum cam cam = cam_of(url, ul);
    if (cam == CAM_NONE || (cam == CAM_WORLD && !sim->s.world) || (cam == CAM_EVENTS && !sim->s.events)) {
      reply(c, "404 Not Found", cseq, cseq_len, NULL, NULL);
      return;
    }
    c->cam = cam;
    char sdp[1024];
    if (sim->s.bad_sdp)
      snprintf(sdp, sizeof sdp, "v=0\r\ns=broken\r\nm=application 0 RTP/AVP 99\r\na=control:trackID=0\r\n");
    else if (cam == CAM_GAZE)
      snprintf(sdp, sizeof sdp,
               "v=0\r\no=- 1 1 IN IP4 %s\r\ns=gaze\r\nt=0 0\r\nm=application 0 RTP/AVP 99\r\n"
               "a=rtpmap:99 com.pupillabs.gaze1/%d\r\na=control:trackID=0\r\n",
               sim->s.host, RATE);
    else if (cam == CAM_EVENTS)
      snprintf(sdp, sizeof sdp,
               "v=0\r\no=- 1 1 IN IP4 %s\r\ns=eye_events\r\nt=0 0\r\nm=application 0 RTP/AVP 100\r\n"
               "a=rtpmap:100 com.pupillabs.eye_events1/%d\r\na=control:trackID=0\r\n",
               sim->s.host, RATE);
    else
      snprintf(sdp, sizeof sdp,
               "v=0\r\no=- 1 1 IN IP4 %s\r\ns=world\r\nt=0 0\r\nm=video 0 RTP/AVP 96\r\n"
               "a=rtpmap:96 H264/%d\r\na=fmtp:96 packetization-mode=1\r\na=control:trackID=0\r\n",
               sim->s.host, RATE);
    reply(c, "200 OK", cseq, cseq_len, NULL, sdp);
  } else if (IS("SETUP")) {
    const char *tr;
    size_t tl;
    if (c->cam == CAM_NONE)
      c->cam = cam_of(url, ul);
    if (!pirec_http_header(it->data, it->len, "Transport", &tr, &tl) || !memmem(tr, tl, "RTP/AVP/TCP", 11) ||
        !memmem(tr, tl, "interleaved=", 12)) {
      reply(c, "461 Unsupported Transport", cseq, cseq_len, NULL, NULL);
      return;
    }
    if (c->cam == CAM_NONE) {
      reply(c, "404 Not Found", cseq, cseq_len, NULL, NULL);
      return;
    }
    const char *il = memmem(tr, tl, "interleaved=", 12) + 12;
    int a = 0, b = 1;
    if (sscanf(il, "%d-%d", &a, &b) < 1 || a < 0 || a > 254)
      a = 0, b = 1;
    c->rtp_ch = a;
    c->rtcp_ch = b;
    snprintf(c->session, sizeof c->session, "%08X", rnd(sim));
    c->setup = 1;
    snprintf(extra, sizeof extra,
             "Transport: RTP/AVP/TCP;unicast;interleaved=%d-%d;ssrc=%08X\r\nSession: %s;timeout=60\r\n", a, b,
             c->cam == CAM_GAZE    ? sim->gaze_ssrc
             : c->cam == CAM_WORLD ? sim->world_ssrc
                                   : sim->events_ssrc,
             c->session);
    reply(c, "200 OK", cseq, cseq_len, extra, NULL);
  } else if (IS("PLAY")) {
    if (!c->setup) {
      reply(c, "455 Method Not Valid in This State", cseq, cseq_len, NULL, NULL);
      return;
    }
    snprintf(extra, sizeof extra, "Session: %s\r\n", c->session);
    reply(c, "200 OK", cseq, cseq_len, extra, NULL);
    c->playing = 1;
    c->next_sr_ns = pirec_clock_mono_ns() + sim->s.first_sr_ns;
    sim->c.sessions_played++;
  } else if (IS("GET_PARAMETER") || IS("SET_PARAMETER")) {
    reply(c, "200 OK", cseq, cseq_len, NULL, NULL);
  } else if (IS("TEARDOWN")) {
    reply(c, "200 OK", cseq, cseq_len, NULL, NULL);
    c->playing = 0;
    c->close_after_write = 1;
  } else {
    reply(c, "501 Not Implemented", cseq, cseq_len, NULL, NULL);
  }
#undef IS
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct sim_conn *c = container_of((uv_tcp_t *)h, struct sim_conn, tcp);
  size_t avail;
  uint8_t *p = pirec_rtsp_framer_space(&c->framer, &avail);
  *buf = uv_buf_init((char *)p, (unsigned)(avail > 65536 ? 65536 : avail));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct sim_conn *c = container_of((uv_tcp_t *)s, struct sim_conn, tcp);
  if (n < 0) {
    conn_close(c);
    return;
  }
  pirec_rtsp_framer_fill(&c->framer, (size_t)n);
  struct pirec_rtsp_item it;
  int r;
  while (!c->closing && (r = pirec_rtsp_framer_next(&c->framer, &it)) != 0) {
    if (r < 0 || it.kind != PIREC_RTSP_MESSAGE)
      continue; /* garbage and RTCP receiver reports from the client are ignored */
    if (c->http)
      http_request(c, &it);
    else
      rtsp_request(c, &it);
  }
}

static void on_connection(uv_stream_t *srv, int status)
{
  struct pirec_eyesim *sim = srv->data;
  if (status < 0 || sim->closing)
    return;
  struct sim_conn *c = calloc(1, sizeof *c);
  if (!c)
    return;
  c->sim = sim;
  c->http = srv == (uv_stream_t *)&sim->http_srv;
  if (pirec_rtsp_framer_init(&c->framer, 64 * 1024) < 0) {
    free(c);
    return;
  }
  uv_tcp_init(sim->loop, &c->tcp);
  sim->pending++;
  c->next = sim->conns;
  sim->conns = c;
  sim->c.connections++;
  if (uv_accept(srv, (uv_stream_t *)&c->tcp) < 0 || sim->down) {
    conn_close(c); /* the device is "gone": the connection is refused at once */
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- gaze ---- */

static void log_row(struct pirec_sink *sink, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_row(struct pirec_sink *sink, const char *fmt, ...)
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
  g->x = (float)(800.0 + 400.0 * sin(t * 2.0));
  g->y = (float)(600.0 + 300.0 * cos(t * 3.0));
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

static int any_playing(const struct pirec_eyesim *sim, enum cam cam)
{
  for (struct sim_conn *c = sim->conns; c; c = c->next)
    if (c->playing && !c->closing && c->cam == cam)
      return 1;
  return 0;
}

static void send_gaze(struct pirec_eyesim *sim, uint64_t n, int64_t ticks)
{
  struct pirec_gaze_sample g;
  make_sample(sim, n, &g);
  uint16_t seq = (uint16_t)(sim->gaze_seq0 + n);
  uint32_t ts = sim->gaze_ts0 + (uint32_t)ticks;
  const char *fate;
  uint8_t pkt[12 + 128];
  size_t len = 0;
  sim->c.gaze_generated++;
  if (sim->down) {
    fate = "down";
    sim->c.gaze_down++;
  } else if (!any_playing(sim, CAM_GAZE)) {
    fate = "idle";
    sim->c.gaze_idle++;
  } else if (sim->s.loss > 0 && rnd01(sim) < sim->s.loss) {
    fate = "lost";
    sim->c.gaze_lost++;
  } else {
    size_t h = pirec_rtp_write_header(pkt, 1, 99, seq, ts, sim->gaze_ssrc);
    int plen = pirec_gaze_encode(&g, pkt + h, sizeof pkt - h);
    len = h + (size_t)plen;
    fate = "sent";
    if (sim->s.malformed > 0 && rnd01(sim) < sim->s.malformed) {
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
    for (struct sim_conn *c = sim->conns; c; c = c->next)
      if (c->playing && !c->closing && c->cam == CAM_GAZE)
        send_interleaved(c, c->rtp_ch, pkt, len);
  }
  char xs[32], ys[32];
  snprintf(xs, sizeof xs, "%.9g", (double)g.x);
  snprintf(ys, sizeof ys, "%.9g", (double)g.y);
  log_row(sim->gaze_log, "%u,%u,%lld,%s,%s,%s\n", seq, ts, (long long)device_ns(sim, ticks), xs, ys, fate);
}

/* Eye events: one slot every 100 ms of device time cycling fixation onset, fixation, saccade onset,
 * saccade; every 20th slot is a blink instead; a keep-alive every second. */
static void send_event(struct pirec_eyesim *sim, uint64_t n, int64_t ticks, int keepalive)
{
  struct pirec_gaze_event e = {0};
  int64_t now_ns = device_ns(sim, ticks);
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
  const char *fate = "sent";
  sim->c.events_generated++;
  if (sim->down)
    fate = "down";
  else if (!any_playing(sim, CAM_EVENTS))
    fate = "idle";
  else {
    sim->c.events_sent++;
    for (struct sim_conn *c = sim->conns; c; c = c->next)
      if (c->playing && !c->closing && c->cam == CAM_EVENTS)
        send_interleaved(c, c->rtp_ch, pkt, h + (size_t)len);
  }
  log_row(sim->events_log, "%u,%u,%lld,%s,%s\n", seq, ts, (long long)now_ns, pirec_gaze_event_name(e.type),
          fate);
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
  sr.ntp = pirec_rtcp_unix_ns_to_ntp(device_ns(sim, k));
  uint8_t b[28];
  pirec_rtcp_write_sr(b, &sr);
  send_interleaved(c, c->rtcp_ch, b, sizeof b);
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
      conn_close(c);
    }
}

static void on_tick(uv_timer_t *t)
{
  struct pirec_eyesim *sim = container_of(t, struct pirec_eyesim, tick);
  int64_t now = pirec_clock_mono_ns();
  if (sim->s.disconnect_at_ns > 0 && !sim->disconnect_done && now - sim->mono0 >= sim->s.disconnect_at_ns)
    go_down(sim, now);
  if (sim->down && now >= sim->down_until) {
    sim->down = 0;
    pirec_log(PIREC_LOG_INFO, "eyesim: accepting clients again");
  }
  int64_t ticks = ticks_at(sim, now);
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

/* ---- world video ---- */

struct pay_ctx {
  struct pirec_eyesim *sim;
  uint32_t ts;
  size_t annexb; /* the unit's size with every start code 4 bytes long, as a receiver rebuilds it */
};

static int emit_world(const uint8_t *payload, size_t len, int last, void *user)
{
  struct pay_ctx *p = user;
  struct pirec_eyesim *sim = p->sim;
  uint8_t pkt[12 + MTU];
  size_t h = pirec_rtp_write_header(pkt, last, 96, sim->world_seq++, p->ts, sim->world_ssrc);
  memcpy(pkt + h, payload, len);
  int fu = (payload[0] & 0x1F) == 28;
  p->annexb += !fu ? 4 + len : (payload[1] & 0x80) ? 4 + 1 + len - 2 : len - 2;
  for (struct sim_conn *c = sim->conns; c; c = c->next)
    if (c->playing && !c->closing && c->cam == CAM_WORLD)
      send_interleaved(c, c->rtp_ch, pkt, h + len);
  return 0;
}

static void world_frame(struct pirec_eyesim *sim, const uint8_t *au, size_t len)
{
  /* Capture times on the frame grid, as a camera stamps them (ffmpeg -re paces the frames). */
  int64_t ticks = sim->ff_base_ticks + (int64_t)(sim->ff_frames++ * RATE / (uint64_t)sim->s.world_fps);
  uint32_t ts = sim->world_ts0 + (uint32_t)ticks;
  const char *fate = "sent";
  struct pay_ctx p = {sim, ts, 0};
  sim->c.frames_generated++;
  if (sim->down)
    fate = "down";
  else if (!any_playing(sim, CAM_WORLD))
    fate = "idle";
  else {
    if (pirec_h264_pay(au, len, MTU, emit_world, &p) < 0)
      fate = "unpayable";
    else
      sim->c.frames_sent++;
  }
  log_row(sim->world_log, "%llu,%u,%lld,%zu,%s\n", (unsigned long long)(sim->c.frames_generated - 1), ts,
          (long long)device_ns(sim, ticks), p.annexb ? p.annexb : len, fate);
}

/* The position of the next access unit delimiter (00 00 01 09, x264's aud=1) at or after from. */
static size_t find_aud(const uint8_t *b, size_t from, size_t end)
{
  for (size_t i = from; i + 4 <= end; i++)
    if (b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1 && (b[i + 3] & 0x1F) == 9)
      return i > 0 && b[i - 1] == 0 ? i - 1 : i;
  return SIZE_MAX;
}

static void ff_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct pirec_eyesim *sim = container_of((uv_pipe_t *)h, struct pirec_eyesim, ff_out);
  if (sim->au_cap - sim->au_len < 65536) {
    size_t cap = sim->au_cap ? sim->au_cap * 2 : 256 * 1024;
    uint8_t *b = realloc(sim->au, cap);
    if (!b) {
      *buf = uv_buf_init(NULL, 0);
      return;
    }
    sim->au = b;
    sim->au_cap = cap;
  }
  *buf = uv_buf_init((char *)sim->au + sim->au_len, (unsigned)(sim->au_cap - sim->au_len));
}

static void ff_closed(uv_handle_t *h)
{
  struct pirec_eyesim *sim = h->data;
  sim->pending--;
  if (sim->closing && sim->pending == 0 && sim->close_cb)
    finish(sim);
}

static void ff_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct pirec_eyesim *sim = container_of((uv_pipe_t *)s, struct pirec_eyesim, ff_out);
  if (n < 0) {
    uv_read_stop(s);
    if (sim->ff_pipe_open) {
      sim->ff_pipe_open = 0;
      uv_close((uv_handle_t *)s, ff_closed);
    }
    return;
  }
  size_t old = sim->au_len;
  sim->au_len += (size_t)n;
  /* Every complete access unit runs from one delimiter to the next. */
  size_t start = find_aud(sim->au, 0, sim->au_len);
  if (start == SIZE_MAX)
    return;
  size_t from = old > start + 4 ? old - 3 : start + 4;
  for (;;) {
    size_t next = find_aud(sim->au, from, sim->au_len);
    if (next == SIZE_MAX)
      break;
    world_frame(sim, sim->au + start, next - start);
    start = next;
    from = next + 5;
  }
  memmove(sim->au, sim->au + start, sim->au_len - start);
  sim->au_len -= start;
}

static int ff_spawn(struct pirec_eyesim *sim);

static void ff_restart(uv_timer_t *t)
{
  struct pirec_eyesim *sim = container_of(t, struct pirec_eyesim, ff_restart);
  if (!sim->closing && ff_spawn(sim) < 0)
    uv_timer_start(&sim->ff_restart, ff_restart, 1000, 0);
}

static void ff_exit(uv_process_t *p, int64_t status, int sig)
{
  struct pirec_eyesim *sim = container_of(p, struct pirec_eyesim, ff);
  sim->ff_running = 0;
  if (!sim->closing) {
    pirec_log(PIREC_LOG_WARN, "eyesim: encoder '%s' exited (status %lld, signal %d); restarting in 1 s",
              sim->s.ffmpeg, (long long)status, sig);
    uv_timer_start(&sim->ff_restart, ff_restart, 1000, 0);
  }
  uv_close((uv_handle_t *)p, ff_closed);
}

static int ff_spawn(struct pirec_eyesim *sim)
{
  char src[128], gop[16];
  snprintf(src, sizeof src, "testsrc2=size=%dx%d:rate=%d", sim->s.width, sim->s.height, sim->s.world_fps);
  snprintf(gop, sizeof gop, "%d", sim->s.world_fps);
  char *args[] = {sim->s.ffmpeg,
                  "-hide_banner",
                  "-loglevel",
                  "error",
                  "-nostdin",
                  "-re",
                  "-f",
                  "lavfi",
                  "-i",
                  src,
                  "-c:v",
                  "libx264",
                  "-preset",
                  "ultrafast",
                  "-tune",
                  "zerolatency",
                  "-g",
                  gop,
                  "-bf",
                  "0",
                  "-pix_fmt",
                  "yuv420p",
                  "-x264-params",
                  "aud=1:repeat-headers=1",
                  "-flush_packets",
                  "1",
                  "-f",
                  "h264",
                  "pipe:1",
                  NULL};
  uv_stdio_container_t stdio[3];
  uv_pipe_init(sim->loop, &sim->ff_out, 0);
  sim->ff_out.data = sim;
  sim->ff_pipe_open = 1;
  sim->pending++;
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&sim->ff_out;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t o = {0};
  o.file = sim->s.ffmpeg;
  o.args = args;
  o.exit_cb = ff_exit;
  o.stdio = stdio;
  o.stdio_count = 3;
  sim->ff.data = sim;
  int r = uv_spawn(sim->loop, &sim->ff, &o);
  if (r < 0) {
    pirec_log(PIREC_LOG_ERROR, "eyesim: cannot start '%s': %s", sim->s.ffmpeg, uv_strerror(r));
    sim->ff_pipe_open = 0;
    uv_close((uv_handle_t *)&sim->ff_out, ff_closed);
    /* uv_spawn failing still leaves the process handle to close */
    sim->pending++;
    uv_close((uv_handle_t *)&sim->ff, ff_closed);
    return r;
  }
  sim->pending++; /* the process handle */
  sim->ff_running = 1;
  sim->au_len = 0;
  sim->ff_base_ticks = ticks_at(sim, pirec_clock_mono_ns());
  sim->ff_frames = 0;
  uv_read_start((uv_stream_t *)&sim->ff_out, ff_alloc, ff_read);
  return 0;
}

/* ---- lifecycle ---- */

static int listen_on(struct pirec_eyesim *sim, uv_tcp_t *srv, int port, int *bound)
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
      (r = uv_listen((uv_stream_t *)srv, 16, on_connection)) < 0) {
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

static void closed_simple(uv_handle_t *h)
{
  struct pirec_eyesim *sim = h->data;
  sim->pending--;
  if (sim->closing && sim->pending == 0 && sim->close_cb)
    finish(sim);
}

static void sink_closed(struct pirec_sink *sink, const struct pirec_sink_counters *c, void *user)
{
  struct pirec_eyesim *sim = user;
  sim->pending--;
  if (sim->closing && sim->pending == 0 && sim->close_cb)
    finish(sim);
}

static void noop_close_cb(struct pirec_eyesim *sim, void *user)
{
}

int pirec_eyesim_start(uv_loop_t *loop, const struct pirec_eyesim_settings *s, struct pirec_eyesim **out)
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
  struct pirec_eyesim *sim = calloc(1, sizeof *sim);
  if (!sim)
    return -ENOMEM;
  sim->loop = loop;
  sim->s = *s;
  sim->rng = s->seed ? s->seed : 1;
  for (int i = 0; i < 8; i++)
    rnd(sim);
  /* Origins close to the wrap, so 32-bit timestamps and 16-bit sequence numbers wrap early. */
  sim->gaze_ts0 = 0xFFFFFFFFu - 3u * RATE - (rnd(sim) & 0xFFFF);
  sim->world_ts0 = 0xFFFFFFFFu - 5u * RATE - (rnd(sim) & 0xFFFF);
  sim->gaze_seq0 = (uint16_t)(65536 - 300 - (rnd(sim) & 0xFF));
  sim->world_seq = (uint16_t)rnd(sim);
  sim->gaze_ssrc = rnd(sim);
  sim->world_ssrc = rnd(sim);
  sim->events_ssrc = rnd(sim);
  sim->events_ts0 = rnd(sim);
  sim->events_seq = (uint16_t)rnd(sim);
  sim->mono0 = pirec_clock_mono_ns();
  sim->dev0 = pirec_clock_wall_ns();
  int r = 0;
  if (s->gaze_log[0] && (r = pirec_sink_new(loop, s->gaze_log, NULL, NULL, NULL, &sim->gaze_log)) == 0) {
    sim->pending++;
    log_row(sim->gaze_log, "seq,rtp_ts,device_ns,x,y,fate\n");
  }
  if (r == 0 && s->world_log[0] &&
      (r = pirec_sink_new(loop, s->world_log, NULL, NULL, NULL, &sim->world_log)) == 0) {
    sim->pending++;
    log_row(sim->world_log, "frame,rtp_ts,device_ns,bytes,fate\n");
  }
  if (r == 0 && s->events_log[0] &&
      (r = pirec_sink_new(loop, s->events_log, NULL, NULL, NULL, &sim->events_log)) == 0) {
    sim->pending++;
    log_row(sim->events_log, "seq,rtp_ts,device_ns,event,fate\n");
  }
  if (r == 0)
    r = listen_on(sim, &sim->http_srv, s->http_port, &sim->http_port);
  if (r == 0)
    r = listen_on(sim, &sim->rtsp_srv, s->rtsp_port, &sim->rtsp_port);
  uv_timer_init(loop, &sim->tick);
  sim->tick.data = sim;
  sim->pending++;
  uv_timer_init(loop, &sim->ff_restart);
  sim->ff_restart.data = sim;
  sim->pending++;
  if (r == 0 && s->world)
    r = ff_spawn(sim);
  if (r < 0) {
    pirec_eyesim_close(sim, noop_close_cb, NULL);
    return r;
  }
  /* Half the sample period: late ticks catch up, so the rate holds whatever the timer does. */
  unsigned period = (unsigned)(500 / s->gaze_hz);
  uv_timer_start(&sim->tick, on_tick, 0, period ? period : 1);
  *out = sim;
  return 0;
}

void pirec_eyesim_ports(const struct pirec_eyesim *sim, int *http_port, int *rtsp_port)
{
  *http_port = sim->http_port;
  *rtsp_port = sim->rtsp_port;
}

void pirec_eyesim_counters(const struct pirec_eyesim *sim, struct pirec_eyesim_counters *out)
{
  *out = sim->c;
}

void pirec_eyesim_close(struct pirec_eyesim *sim, pirec_eyesim_close_cb cb, void *user)
{
  sim->closing = 1;
  sim->close_cb = cb;
  sim->close_user = user;
  sim->pending++; /* held until every close below has been started */
  uv_close((uv_handle_t *)&sim->tick, closed_simple);
  uv_close((uv_handle_t *)&sim->ff_restart, closed_simple);
  if (sim->http_srv.loop)
    uv_close((uv_handle_t *)&sim->http_srv, closed_simple);
  if (sim->rtsp_srv.loop)
    uv_close((uv_handle_t *)&sim->rtsp_srv, closed_simple);
  for (struct sim_conn *c = sim->conns; c; c = c->next)
    conn_close(c);
  if (sim->ff_running)
    uv_process_kill(&sim->ff, SIGTERM);
  /* The encoder's pipe keeps delivering frames until ffmpeg has exited, and each would be logged:
   * the logs are forgotten as they close, so those late frames log nothing (log_row skips NULL). */
  struct pirec_sink *logs[] = {sim->gaze_log, sim->world_log, sim->events_log};
  sim->gaze_log = sim->world_log = sim->events_log = NULL;
  for (size_t i = 0; i < sizeof logs / sizeof logs[0]; i++)
    if (logs[i])
      pirec_sink_close(logs[i], sink_closed, sim);
  sim->pending--;
  if (sim->pending == 0)
    finish(sim);
}
