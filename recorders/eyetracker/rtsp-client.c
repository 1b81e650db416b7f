/* The RTSP client of each stream: connect, OPTIONS, DESCRIBE, SETUP, PLAY, keep-alives and the
 * watchdog; a failure tears the session down and reconnects with backoff. */

#include "eyetracker-int.h"

#include "http.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"
#include "pirec/error.h"
#include "pirec/log.h"
#include "sdp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdarg.h>
#include <strings.h>

static const char *const state_names[] = {"idle",  "connecting", "OPTIONS", "DESCRIBE",
                                          "SETUP", "PLAY",       "playing", "closing"};

/* With address = auto, this many failed connects in a row (about 7 s at the default backoff) send
 * the eye tracker back to mDNS: the phone may have rejoined the network with a new address. */
#define REDISCOVER_AFTER 3

static void stream_connect(struct stream *st);
static void stream_send(struct stream *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Tears the session down and schedules a reconnect. ev says whether this is worth an event. */
static void stream_fail(struct stream *st, int err, enum pirec_eyetracker_event ev, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Splits rtsp://HOST[:PORT]/... into host and port (default 554). */
static int url_host_port(const char *url, char *host, size_t cap, int *port)
{
  if (strncasecmp(url, "rtsp://", 7) != 0)
    return -EINVAL;
  const char *h = url + 7, *e;
  if (*h == '[') {
    e = strchr(h, ']');
    if (!e)
      return -EINVAL;
    h++;
  } else {
    e = h + strcspn(h, ":/?");
  }
  size_t hl = (size_t)(e - h);
  if (hl == 0 || hl >= cap)
    return -EINVAL;
  memcpy(host, h, hl);
  host[hl] = 0;
  if (*e == ']')
    e++;
  *port = 554;
  if (*e == ':') {
    *port = atoi(e + 1);
    if (*port < 1 || *port > 65535)
      return -EINVAL;
  }
  return 0;
}

static void stream_send(struct stream *st, const char *fmt, ...)
{
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof buf || !st->tcp_open)
    return;
  (void)pirec__et_write((uv_stream_t *)&st->tcp, buf, (size_t)n);
}

static void request(struct stream *st, const char *method, const char *url, const char *extra)
{
  st->cseq++;
  stream_send(st, "%s %s RTSP/1.0\r\nCSeq: %d\r\nUser-Agent: pirec/%s\r\n%s%s%s%s\r\n", method, url, st->cseq,
              PIREC_VERSION, st->session[0] ? "Session: " : "", st->session, st->session[0] ? "\r\n" : "",
              extra ? extra : "");
}

static void set_state(struct stream *st, enum state s)
{
  st->state = s;
  st->state_since = pirec_clock_mono_ns();
}

static void on_retry(uv_timer_t *t)
{
  struct stream *st = container_of(t, struct stream, timer);
  if (!st->et->closing)
    stream_connect(st);
}

void pirec__et_tcp_closed(uv_handle_t *h)
{
  struct stream *st = container_of((uv_tcp_t *)h, struct stream, tcp);
  struct pirec_eyetracker *et = st->et;
  st->tcp_open = 0;
  set_state(st, S_IDLE);
  et->pending--;
  if (et->closing) {
    pirec__et_maybe_closed(et);
    return;
  }
  uv_timer_start(&st->timer, on_retry, (uint64_t)(st->backoff_ns / NS_MS), 0);
  st->backoff_ns *= 2;
  if (st->backoff_ns > et->s.reconnect_max_ns)
    st->backoff_ns = et->s.reconnect_max_ns;
}

static void stream_fail(struct stream *st, int err, enum pirec_eyetracker_event ev, const char *fmt, ...)
{
  struct pirec_eyetracker *et = st->et;
  if (st->state == S_CLOSING || st->state == S_IDLE)
    return;
  char msg[400];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  st->st.last_error = err;
  if (st->state == S_PLAYING) {
    st->st.disconnects++;
    st->st.playing = 0;
    pirec__et_emit(et, PIREC_EYETRACKER_EVENT_DISCONNECTED,
                   "%s stream '%s' lost: %s; reconnecting in %lld ms", st->label, st->url, msg,
                   (long long)(st->backoff_ns / NS_MS));
  } else {
    st->st.connect_failures++;
    if (++st->fails_in_row % REDISCOVER_AFTER == 0)
      et->unreachable(et);
    /* The same failure repeating every backoff is reported once. */
    if (strcmp(msg, st->last_msg) != 0) {
      if (ev == PIREC_EYETRACKER_EVENT_ERROR)
        pirec__et_emit(et, ev, "%s stream '%s': %s (during %s)", st->label, st->url, msg,
                       state_names[st->state]);
      else
        pirec_log(PIREC_LOG_WARN, "%s: cannot reach %s stream '%s': %s; retrying with backoff", et->s.name,
                  st->label, st->url, msg);
      snprintf(st->last_msg, sizeof st->last_msg, "%s", msg);
    }
  }
  st->session[0] = 0;
  uv_timer_stop(&st->timer);
  set_state(st, S_CLOSING);
  pirec__et_close_udp(st);
  if (st->kind == WORLD)
    pirec_h264_depay_reset(&st->depay);
  if (st->had_data)
    st->gap_check = 1;
  uv_close((uv_handle_t *)&st->tcp, pirec__et_tcp_closed);
}

static void send_setup(struct stream *st)
{
  if (!st->use_udp) {
    request(st, "SETUP", st->control, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n");
    return;
  }
  int port = pirec__et_open_udp(st);
  if (port < 0) {
    stream_fail(st, port, PIREC_EYETRACKER_EVENT_ERROR, "cannot bind UDP ports for RTP: %s",
                pirec_strerror(port));
    return;
  }
  char tr[128];
  snprintf(tr, sizeof tr, "Transport: RTP/AVP;unicast;client_port=%d-%d\r\n", port, port + 1);
  request(st, "SETUP", st->control, tr);
}

/* The media of a DESCRIBE answer this stream plays, or NULL. */
static const struct pirec_sdp_media *pick_media(const struct stream *st, const struct pirec_sdp *sdp)
{
  for (size_t i = 0; i < sdp->n_media; i++) {
    const struct pirec_sdp_media *c = &sdp->media[i];
    if (st->kind == GAZE && strcasecmp(c->encoding, "com.pupillabs.gaze1") == 0)
      return c;
    if (st->kind == WORLD && strcasecmp(c->encoding, "H264") == 0)
      return c;
    /* The eye events' encoding name is not documented: take the stream's first non-video media. */
    if (st->kind == EVENTS && strcasecmp(c->media, "video") != 0)
      return c;
  }
  return NULL;
}

/* DESCRIBE answered: take the media's payload type, clock and control URL, then SETUP. */
static void described(struct stream *st, const struct pirec_rtsp_item *it)
{
  struct pirec_sdp sdp;
  if (pirec_sdp_parse(it->body, it->body_len, &sdp) < 0) {
    stream_fail(st, -EBADMSG, PIREC_EYETRACKER_EVENT_ERROR,
                "bad SDP (%zu bytes): no media with a payload type and an rtpmap", it->body_len);
    return;
  }
  const struct pirec_sdp_media *m = pick_media(st, &sdp);
  if (!m) {
    stream_fail(st, -EBADMSG, PIREC_EYETRACKER_EVENT_ERROR, "the SDP has no %s media (%s)",
                st->kind == GAZE    ? "com.pupillabs.gaze1"
                : st->kind == WORLD ? "H264"
                                    : "application",
                sdp.media[0].encoding);
    return;
  }
  char base[PIREC_EYETRACKER_URL_MAX];
  const char *v;
  size_t vl;
  snprintf(base, sizeof base, "%s", st->url);
  if (pirec_http_header(it->data, it->len, "Content-Base", &v, &vl) && vl < sizeof base)
    snprintf(base, sizeof base, "%.*s", (int)vl, v);
  if (pirec_rtsp_control_url(base, m->control, st->control, sizeof st->control) < 0) {
    stream_fail(st, -ENAMETOOLONG, PIREC_EYETRACKER_EVENT_ERROR, "control URL too long");
    return;
  }
  st->pt = m->pt;
  st->clock_rate = m->clock_rate;
  snprintf(st->encoding, sizeof st->encoding, "%s", m->encoding);
  pirec_rtcp_clock_init(&st->clock, m->clock_rate);
  set_state(st, S_SETUP);
  send_setup(st);
}

/* SETUP answered: keep the session ("Session: ID;timeout=N"), then PLAY. */
static void set_up(struct stream *st, const struct pirec_rtsp_item *it)
{
  const char *v;
  size_t vl;
  if (!pirec_http_header(it->data, it->len, "Session", &v, &vl) || vl == 0) {
    stream_fail(st, -EPROTO, PIREC_EYETRACKER_EVENT_ERROR, "SETUP reply without a Session");
    return;
  }
  size_t n = strcspn(v, ";\r\n");
  if (n > vl)
    n = vl;
  if (n >= sizeof st->session)
    n = sizeof st->session - 1;
  memcpy(st->session, v, n);
  st->session[n] = 0;
  /* Keep-alives at half the session timeout so the session never expires. */
  st->keepalive_ns = 20 * NS_S;
  const char *t = memmem(v, vl, "timeout=", 8);
  if (t) {
    long secs = strtol(t + 8, NULL, 10);
    if (secs >= 2 && secs < 40)
      st->keepalive_ns = (int64_t)secs * NS_S / 2;
  }
  set_state(st, S_PLAY);
  request(st, "PLAY", st->url, "Range: npt=0.000-\r\n");
}

/* PLAY answered: the stream is up. */
static void playing(struct stream *st)
{
  set_state(st, S_PLAYING);
  st->fails_in_row = 0;
  st->st.playing = 1;
  st->st.connects++;
  st->last_rx = st->last_keepalive = pirec_clock_mono_ns();
  st->last_msg[0] = 0;
  if (!st->had_data)
    pirec__et_emit(st->et, PIREC_EYETRACKER_EVENT_CONNECTED, "%s stream '%s' playing (%s/%u)", st->label,
                   st->url, st->encoding, st->clock_rate);
}

/* Answers that are not a step forward: a request from the server, keep-alive replies, a refused
 * interleaved SETUP, an error. Returns 1 when the message was handled here. */
static int handle_other(struct stream *st, const struct pirec_rtsp_item *it, int code)
{
  if (code < 0) {
    /* A request from the server (GET_PARAMETER, ANNOUNCE...): answer that it is not supported. */
    const char *v;
    size_t vl;
    if (pirec_http_header(it->data, it->len, "CSeq", &v, &vl))
      stream_send(st, "RTSP/1.0 501 Not Implemented\r\nCSeq: %.*s\r\n\r\n", (int)vl, v);
    return 1;
  }
  if (st->state == S_PLAYING)
    return 1; /* keep-alive replies */
  if (code == 461 && st->state == S_SETUP && !st->use_udp) {
    /* The server will not interleave (VLC's RTSP output, for one): ask for UDP instead. */
    st->use_udp = 1;
    pirec_log(PIREC_LOG_INFO, "%s: '%s' refused RTP over the RTSP connection; using UDP", st->et->s.name,
              st->url);
    send_setup(st);
    return 1;
  }
  if (code != 200) {
    char line[128];
    const char *eol = memchr(it->data, '\r', it->len);
    size_t n = eol ? (size_t)(eol - (const char *)it->data) : 0;
    snprintf(line, sizeof line, "%.*s", (int)(n < 100 ? n : 100), (const char *)it->data);
    stream_fail(st, -EPROTO, PIREC_EYETRACKER_EVENT_ERROR, "the server answered '%s' to %s", line,
                state_names[st->state]);
    return 1;
  }
  return 0;
}

/* One RTSP message from the server: each 200 answer moves the stream one state forward. */
static void handle_response(struct stream *st, const struct pirec_rtsp_item *it)
{
  if (handle_other(st, it, pirec_rtsp_status(it->data, it->len)))
    return;
  switch (st->state) {
  case S_OPTIONS:
    set_state(st, S_DESCRIBE);
    request(st, "DESCRIBE", st->url, "Accept: application/sdp\r\n");
    break;
  case S_DESCRIBE: described(st, it); break;
  case S_SETUP: set_up(st, it); break;
  case S_PLAY: playing(st); break;
  default: break;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  *buf = pirec_rtsp_framer_read_buf(&container_of((uv_tcp_t *)h, struct stream, tcp)->framer);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct stream *st = container_of((uv_tcp_t *)s, struct stream, tcp);
  if (n == 0)
    return;
  /* The arrival stamps come first: everything parsed from these bytes arrived now. */
  st->rx_mono = pirec_clock_mono_ns();
  st->rx_wall = pirec_clock_wall_ns();
  if (n < 0) {
    stream_fail(st, (int)n, PIREC_EYETRACKER_EVENT_DISCONNECTED, "%s",
                n == UV_EOF ? "the server closed the connection" : uv_strerror((int)n));
    return;
  }
  st->last_rx = st->rx_mono;
  pirec_rtsp_framer_fill(&st->framer, (size_t)n);
  struct pirec_rtsp_item it;
  int r;
  while (st->state != S_CLOSING && (r = pirec_rtsp_framer_next(&st->framer, &it)) != 0) {
    if (r < 0) {
      st->st.bad_packets++;
      continue;
    }
    if (it.kind == PIREC_RTSP_MESSAGE)
      handle_response(st, &it);
    else if (st->state != S_PLAYING)
      continue;
    else if (it.channel == 0)
      pirec__et_data_packet(st, it.data, it.len);
    else if (it.channel == 1)
      pirec__et_rtcp_packet(st, it.data, it.len);
  }
}

static void on_watchdog(uv_timer_t *t)
{
  struct stream *st = container_of(t, struct stream, timer);
  struct pirec_eyetracker *et = st->et;
  int64_t now = pirec_clock_mono_ns();
  /* Eye events are sparse (keep-alives fill the pauses at an interval nobody documents), so
   * that stream gets five times the patience. */
  int64_t stall = st->kind == EVENTS ? 5 * et->s.stall_timeout_ns : et->s.stall_timeout_ns;
  if (st->state == S_PLAYING) {
    if (now - st->last_rx > stall) {
      stream_fail(st, -ETIMEDOUT, PIREC_EYETRACKER_EVENT_DISCONNECTED, "no data for %lld ms",
                  (long long)((now - st->last_rx) / NS_MS));
      return;
    }
    if (st->backoff_ns != et->s.reconnect_min_ns && now - st->state_since > 2 * NS_S)
      st->backoff_ns = et->s.reconnect_min_ns; /* a session that held resets the backoff */
    if (now - st->last_keepalive > st->keepalive_ns) {
      st->last_keepalive = now;
      request(st, "OPTIONS", st->url, NULL);
    }
  } else if (st->state != S_IDLE && st->state != S_CLOSING &&
             now - st->state_since > et->s.stall_timeout_ns + NS_S) {
    stream_fail(st, -ETIMEDOUT, PIREC_EYETRACKER_EVENT_DISCONNECTED, "no answer to %s within %lld ms",
                state_names[st->state], (long long)((now - st->state_since) / NS_MS));
  }
}

static void on_connected(uv_connect_t *req, int status)
{
  struct stream *st = container_of(req, struct stream, connect_req);
  if (st->state != S_CONNECTING)
    return;
  if (status < 0) {
    stream_fail(st, status, PIREC_EYETRACKER_EVENT_DISCONNECTED, "%s", uv_strerror(status));
    return;
  }
  uv_tcp_nodelay(&st->tcp, 1);
  int r = uv_read_start((uv_stream_t *)&st->tcp, on_alloc, on_read);
  if (r < 0) {
    stream_fail(st, r, PIREC_EYETRACKER_EVENT_DISCONNECTED, "%s", uv_strerror(r));
    return;
  }
  set_state(st, S_OPTIONS);
  request(st, "OPTIONS", st->url, NULL);
}

static void stream_connect(struct stream *st)
{
  struct pirec_eyetracker *et = st->et;
  char host[PIREC_EYETRACKER_HOST_MAX];
  int port;
  struct sockaddr_storage ss;
  /* A URL not given in the settings follows the device: the one /api/status named for its current
   * address, else the realtime API's usual one on that address. */
  if (!pirec__et_configured_url(et, st->kind)[0] && (!st->url[0] || st->addr_gen != et->addr_gen)) {
    if (et->status_url[st->kind][0])
      snprintf(st->url, sizeof st->url, "%s", et->status_url[st->kind]);
    else
      snprintf(st->url, sizeof st->url, "rtsp://%s%s%s:%d/?camera=%s", strchr(et->s.host, ':') ? "[" : "",
               et->s.host, strchr(et->s.host, ':') ? "]" : "", et->s.rtsp_port, st->label);
    st->addr_gen = et->addr_gen;
  }
  /* A fresh session: new clock, new sequence numbers, empty framer. */
  memset(&st->seq, 0, sizeof st->seq);
  pirec_rtcp_clock_init(&st->clock, st->clock_rate ? st->clock_rate : 90000);
  st->have_ssrc = 0;
  st->have_sr0 = 0;
  pirec_rtsp_framer_reset(&st->framer);
  st->session[0] = 0;
  st->cseq = 0;
  uv_tcp_init(et->loop, &st->tcp);
  st->tcp_open = 1;
  et->pending++;
  set_state(st, S_CONNECTING);
  uv_timer_start(&st->timer, on_watchdog, 250, 250);
  int r = url_host_port(st->url, host, sizeof host, &port);
  if (r == 0)
    r = pirec__et_make_addr(host, port, &ss);
  if (r < 0) {
    stream_fail(st, r, PIREC_EYETRACKER_EVENT_ERROR, "not an rtsp:// URL with an IP address");
    return;
  }
  r = uv_tcp_connect(&st->connect_req, &st->tcp, (struct sockaddr *)&ss, on_connected);
  if (r < 0)
    stream_fail(st, r, PIREC_EYETRACKER_EVENT_DISCONNECTED, "%s", uv_strerror(r));
}

static int enabled(const struct pirec_eyetracker *et, int k)
{
  return k == GAZE ? et->s.gaze : k == WORLD ? et->s.world : et->s.events;
}

void pirec__et_start_streams(struct pirec_eyetracker *et)
{
  for (int k = 0; k < NSTREAMS; k++) {
    struct stream *st = &et->streams[k];
    if (enabled(et, k) && st->state == S_IDLE && !uv_is_active((uv_handle_t *)&st->timer))
      stream_connect(st);
  }
}
