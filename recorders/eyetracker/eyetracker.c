/* The eye tracker client: Pupil Labs realtime API over HTTP and RTSP with interleaved RTP/RTCP,
 * all on the loop (see include/pirec/eyetracker.h). */

#include "pirec/eyetracker.h"

#include "h264.h"
#include "mkv.h"
#include "pirec/clock.h"
#include "pirec/csv.h"
#include "pirec/error.h"
#include "pirec/gaze.h"
#include "pirec/log.h"
#include "pirec/mdns.h"
#include "h264.h"
#include "http.h"
#include "rtcp.h"
#include "rtp.h"
#include "rtsp.h"
#include "sdp.h"
#include "pirec/ring.h"
#include "pirec/sink.h"
#include "pirec/container_of.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define NS_MS 1000000LL
#define NS_S  1000000000LL

enum kind { GAZE = 0, WORLD = 1, EVENTS = 2, NSTREAMS = 3 };

enum state {
  S_IDLE = 0, /* not started, or waiting for the retry timer */
  S_CONNECTING,
  S_OPTIONS,
  S_DESCRIBE,
  S_SETUP,
  S_PLAY,
  S_PLAYING,
  S_CLOSING, /* the socket is closing; then a retry is scheduled */
};

static const char *const state_names[] = {"idle",  "connecting", "OPTIONS", "DESCRIBE",
                                          "SETUP", "PLAY",       "playing", "closing"};

struct wreq {
  uv_write_t req;
  char data[];
};

struct stream {
  struct pirec_eyetracker *et;
  enum kind kind;
  const char *label;
  enum state state;
  uv_tcp_t tcp;
  int tcp_open;
  /* RTP and RTCP over UDP, for servers that refuse interleaving (461 to the TCP SETUP); sticky. */
  int use_udp;
  int udp_open;
  uv_udp_t udp[2];
  uint8_t udp_buf[65536];
  uv_connect_t connect_req;
  uv_timer_t timer; /* retry delay, or the watchdog while connected */
  struct pirec_rtsp_framer framer;
  int cseq;
  char url[PIREC_EYETRACKER_URL_MAX];     /* the presentation URL (DESCRIBE, PLAY) */
  char control[PIREC_EYETRACKER_URL_MAX]; /* the media's URL (SETUP) */
  char session[128];
  int pt;
  uint32_t clock_rate;
  char encoding[64];
  int64_t state_since;
  int64_t last_rx, last_keepalive;
  int64_t keepalive_ns; /* half the server's session timeout; 20 s when it names none */
  int64_t backoff_ns;
  int fails_in_row;  /* connects that failed since the stream last played */
  unsigned addr_gen; /* the et->addr_gen st->url was made for */
  char last_msg[400];

  /* this session */
  struct pirec_rtcp_clock clock;
  struct pirec_rtp_seq seq;
  int have_ssrc;
  uint32_t ssrc;
  int64_t rx_mono, rx_wall; /* arrival stamps of the bytes being parsed */

  /* across sessions: how to count what a disconnect lost */
  int had_data;
  uint32_t prev_ssrc, prev_ts;
  uint16_t prev_seq;
  int64_t prev_rx_mono;
  int64_t interval_ticks; /* mean timestamp step between consecutive samples/frames */
  int64_t sum_dticks, n_dticks;
  int gap_check; /* the next packet is the first after a reconnect */

  /* clock log */
  int have_sr0;
  int64_t sr0_dev, sr0_mono, last_clock_log;

  /* world */
  struct pirec_h264_depay depay;
  int64_t lost_since_au;
  int have_prev_au;
  int64_t prev_au_ext;

  uint64_t pending_drop; /* samples or frames lost since the last row written */
  struct pirec_eyetracker_stream_status st;
};

struct pirec_eyetracker {
  uv_loop_t *loop;
  struct pirec_eyetracker_settings s;
  pirec_eyetracker_event_cb on_event;
  void *user;
  struct stream streams[NSTREAMS];
  int started;

  /* HTTP status */
  uv_tcp_t http;
  uv_connect_t http_connect;
  uv_timer_t http_timer;
  int http_busy;
  struct pirec_mdns *mdns; /* address = auto: the discovery under way */
  int64_t mdns_backoff_ns;
  int auto_address;  /* address = auto: the host came from mDNS and may be looked up again */
  int found;         /* a lookup has answered: later ones are re-discoveries */
  unsigned addr_gen; /* bumped when the device's address changes; stale URLs are remade */
  uint64_t rediscoveries, address_changes;
  char status_url[NSTREAMS][PIREC_EYETRACKER_URL_MAX]; /* from /api/status for addr_gen, or "" */
  uint64_t status_ok, status_failed;
  char *http_buf;
  size_t http_len, http_cap;

  /* trial */
  int recording;
  int stopping;
  int trial;
  struct pirec_sink *gaze_sink, *frames_sink, *video_sink, *clock_sink, *events_sink;
  struct pirec__mkv *mkv;
  struct pirec_sink *video_closing; /* the scene sink between its close and its close callback */
  struct pirec__mkv_sealer sealer;  /* seals the scene file of a clean trial (h264-mkv.h) */
  int have_pts0;
  int64_t pts0_ext, last_pts_ns, last_pts_mono;
  uint64_t frame_index;
  int need_key; /* after a start, a gap or a damaged unit: write again from the next IDR */
  int sinks_open;
  int stop_err;
  pirec_eyetracker_stopped_cb stop_cb;
  void *stop_user;
  uint64_t sink_drops;
  int write_error;
  uint64_t bytes_video;

  int closing;
  int pending;
  pirec_eyetracker_close_cb close_cb;
  void *close_user;
};

/* ---- settings ---- */

void pirec_eyetracker_settings_default(struct pirec_eyetracker_settings *s)
{
  memset(s, 0, sizeof *s);
  snprintf(s->name, sizeof s->name, "eyetracker");
  snprintf(s->host, sizeof s->host, "auto");
  s->http_port = 8080;
  s->rtsp_port = 8086;
  s->gaze = s->world = s->events = 1;
  s->reconnect_min_ns = 1 * NS_S;
  s->reconnect_max_ns = 30 * NS_S;
  s->stall_timeout_ns = 3 * NS_S;
  s->clock_log_interval_ns = 10 * NS_S;
  s->fsync_interval_ms = 1000;
}

int pirec_eyetracker_settings_set_address(struct pirec_eyetracker_settings *s, const char *address)
{
  if (strcmp(address, "auto") == 0) {
    snprintf(s->host, sizeof s->host, "auto");
    return 0;
  }
  const char *colon = strrchr(address, ':');
  if (!colon || colon == address)
    return -EINVAL;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end || port < 1 || port > 65535)
    return -EINVAL;
  const char *h = address;
  size_t hl = (size_t)(colon - address);
  if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']')
    h++, hl -= 2;
  if (hl == 0 || hl >= sizeof s->host)
    return -EINVAL;
  memcpy(s->host, h, hl);
  s->host[hl] = 0;
  s->http_port = (int)port;
  return 0;
}

/* ---- helpers ---- */

static void emit(struct pirec_eyetracker *et, enum pirec_eyetracker_event ev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void emit(struct pirec_eyetracker *et, enum pirec_eyetracker_event ev, const char *fmt, ...)
{
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (et->on_event)
    et->on_event(et, ev, msg, et->user);
  else
    pirec_log(ev == PIREC_EYETRACKER_EVENT_CONNECTED ? PIREC_LOG_INFO : PIREC_LOG_WARN, "%s: %s", et->s.name,
              msg);
}

/* Fills a sockaddr for host (an IP literal, or "localhost") and port. */
static int make_addr(const char *host, int port, struct sockaddr_storage *ss)
{
  if (strcmp(host, "localhost") == 0)
    host = "127.0.0.1";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
    return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  return -EINVAL;
}

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

static void stream_send(struct stream *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void on_write_done(uv_write_t *req, int status)
{
  free(container_of(req, struct wreq, req));
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
  struct wreq *w = malloc(sizeof *w + (size_t)n);
  if (!w)
    return;
  memcpy(w->data, buf, (size_t)n);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
  if (uv_write(&w->req, (uv_stream_t *)&st->tcp, &b, 1, on_write_done) < 0)
    free(w);
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

/* ---- failure and reconnect ---- */

static void stream_connect(struct stream *st);
static void maybe_finish_close(struct pirec_eyetracker *et);
static void close_udp(struct stream *st);

static void on_retry(uv_timer_t *t)
{
  struct stream *st = container_of(t, struct stream, timer);
  if (!st->et->closing)
    stream_connect(st);
}

static void on_tcp_closed(uv_handle_t *h)
{
  struct stream *st = container_of((uv_tcp_t *)h, struct stream, tcp);
  struct pirec_eyetracker *et = st->et;
  st->tcp_open = 0;
  set_state(st, S_IDLE);
  et->pending--;
  if (et->closing) {
    maybe_finish_close(et);
    return;
  }
  uv_timer_start(&st->timer, on_retry, (uint64_t)(st->backoff_ns / NS_MS), 0);
  st->backoff_ns *= 2;
  if (st->backoff_ns > et->s.reconnect_max_ns)
    st->backoff_ns = et->s.reconnect_max_ns;
}

static void on_udp_closed(uv_handle_t *h)
{
  struct stream *st = h->data;
  st->et->pending--;
  maybe_finish_close(st->et);
}

static void close_udp(struct stream *st)
{
  if (!st->udp_open)
    return;
  st->udp_open = 0;
  for (int i = 0; i < 2; i++)
    uv_close((uv_handle_t *)&st->udp[i], on_udp_closed);
}

/* With address = auto, this many failed connects in a row (about 7 s at the default backoff) send
 * the eye tracker back to mDNS: the phone may have rejoined the network with a new address. */
#define REDISCOVER_AFTER 3
static void rediscover(struct pirec_eyetracker *et);

/* Tears the session down and schedules a reconnect. kind says whether this is worth an event. */
static void stream_fail(struct stream *st, int err, enum pirec_eyetracker_event ev, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
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
    emit(et, PIREC_EYETRACKER_EVENT_DISCONNECTED, "%s stream '%s' lost: %s; reconnecting in %lld ms",
         st->label, st->url, msg, (long long)(st->backoff_ns / NS_MS));
  } else {
    st->st.connect_failures++;
    if (++st->fails_in_row % REDISCOVER_AFTER == 0)
      rediscover(et);
    /* The same failure repeating every backoff is reported once. */
    if (strcmp(msg, st->last_msg) != 0) {
      if (ev == PIREC_EYETRACKER_EVENT_ERROR)
        emit(et, ev, "%s stream '%s': %s (during %s)", st->label, st->url, msg, state_names[st->state]);
      else
        pirec_log(PIREC_LOG_WARN, "%s: cannot reach %s stream '%s': %s; retrying with backoff", et->s.name,
                  st->label, st->url, msg);
      snprintf(st->last_msg, sizeof st->last_msg, "%s", msg);
    }
  }
  st->session[0] = 0;
  uv_timer_stop(&st->timer);
  set_state(st, S_CLOSING);
  close_udp(st);
  if (st->kind == WORLD)
    pirec_h264_depay_reset(&st->depay);
  if (st->had_data)
    st->gap_check = 1;
  uv_close((uv_handle_t *)&st->tcp, on_tcp_closed);
}

/* ---- counting what a reconnect lost ---- */

static int64_t round_div(int64_t a, int64_t b)
{
  return b > 0 ? (a + b / 2) / b : 0;
}

/* First packet after a reconnect: the samples between the last one before and this one. */
static uint64_t reconnect_gap(struct stream *st, const struct pirec_rtp_packet *p)
{
  int64_t missing = 0;
  const char *how;
  if (p->ssrc == st->prev_ssrc) {
    int64_t dts = (int32_t)(p->ts - st->prev_ts);
    int64_t by_ts = st->interval_ticks > 0 ? round_div(dts, st->interval_ticks) - 1 : -1;
    int64_t by_seq = (int16_t)(p->seq - st->prev_seq) - 1;
    /* Sequence numbers are exact for gaze (one packet per sample) unless the gap wrapped 16 bits;
     * video spans several packets per frame, so frames come from timestamps. */
    if (st->kind != WORLD && (by_ts < 0 || by_ts < 30000)) {
      missing = by_seq;
      how = "counted from sequence numbers";
    } else {
      missing = by_ts;
      how = "counted from RTP timestamps";
    }
  } else {
    int64_t interval_ns = pirec_rtp_ticks_to_ns(st->interval_ticks, st->clock_rate);
    missing = interval_ns > 0 ? round_div(st->rx_mono - st->prev_rx_mono, interval_ns) - 1 : 0;
    how = "estimated from the arrival gap (the stream's SSRC changed)";
  }
  if (missing < 0)
    missing = 0;
  st->st.gap_samples += (uint64_t)missing;
  emit(st->et, PIREC_EYETRACKER_EVENT_CONNECTED, "%s stream '%s' back after %lld ms: %lld %s lost, %s",
       st->label, st->url, (long long)((st->rx_mono - st->prev_rx_mono) / NS_MS), (long long)missing,
       st->kind == GAZE    ? "samples"
       : st->kind == WORLD ? "frames"
                           : "packets",
       how);
  return (uint64_t)missing;
}

/* The mean step, not the smallest: frame timestamps jitter, and a short step would make every
 * gap look longer in frames than it was. Steps over 2 s are not steps between neighbours. */
static void note_interval(struct stream *st, int64_t dticks)
{
  if (dticks <= 0 || dticks > 2 * (int64_t)st->clock_rate)
    return;
  st->sum_dticks += dticks;
  st->n_dticks++;
  st->interval_ticks = round_div(st->sum_dticks, st->n_dticks);
}

/* ---- per-trial files ---- */

static void on_sink_error(struct pirec_sink *sink, int err, void *user)
{
  struct pirec_eyetracker *et = user;
  if (!et->write_error)
    et->write_error = err;
  emit(et, PIREC_EYETRACKER_EVENT_WRITE_ERROR, "cannot write '%s': %s", pirec_sink_path(sink),
       pirec_strerror(err));
}

/* Pushes a row whose dropped_before carries st->pending_drop. A row the sink refuses (ring full,
 * sink in error) is a sample lost like any other: it and what it carried pass to the next row that
 * gets in, so the CSV's dropped_before still accounts for every sample. Returns the push result. */
static int push_row(struct stream *st, struct pirec_sink *sink, struct pirec_csv_row *row)
{
  int r = pirec_csv_push(sink, row);
  if (r < 0) {
    st->st.refused++;
    st->pending_drop++;
    return r;
  }
  st->st.dropped += st->pending_drop;
  st->pending_drop = 0;
  st->st.written++;
  return 0;
}

/* Sequence and clock bookkeeping shared by the data streams (gaze, eye events) for a parsed
 * packet of the right payload type: counts it, accounts a reconnect gap and sequence losses as
 * drops, optionally feeds the sample-interval estimate, and extends its RTP timestamp.
 * Returns 0 with *ext set, or -1 for a duplicate or late packet (its slot was already counted). */
static int stream_accept(struct stream *st, const struct pirec_rtp_packet *p, int track_interval,
                         int64_t *ext)
{
  st->st.packets++;
  if (!st->have_ssrc) {
    st->have_ssrc = 1;
    st->ssrc = p->ssrc;
  }
  int after_gap = st->gap_check;
  if (st->gap_check) {
    st->gap_check = 0;
    st->pending_drop += reconnect_gap(st, p);
  }
  int64_t lost = pirec_rtp_seq_update(&st->seq, p->seq);
  if (lost < 0) {
    st->st.bad_packets++;
    return -1;
  }
  st->st.lost += (uint64_t)lost;
  st->pending_drop += (uint64_t)lost;
  if (track_interval && st->had_data && !after_gap && p->ssrc == st->prev_ssrc && lost == 0)
    note_interval(st, (int32_t)(p->ts - st->prev_ts));
  *ext = pirec_rtcp_clock_extend(&st->clock, p->ts);
  st->had_data = 1;
  st->prev_ssrc = p->ssrc;
  st->prev_ts = p->ts;
  st->prev_seq = p->seq;
  st->prev_rx_mono = st->rx_mono;
  return 0;
}

/* ---- gaze ---- */

static void gaze_packet(struct stream *st, const uint8_t *buf, size_t len)
{
  struct pirec_eyetracker *et = st->et;
  struct pirec_rtp_packet p;
  if (pirec_rtp_parse(buf, len, &p) < 0 || p.pt != st->pt) {
    st->st.bad_packets++;
    return; /* its sample shows up as a sequence gap */
  }
  int64_t ext;
  if (stream_accept(st, &p, 1, &ext) < 0)
    return;

  struct pirec_gaze_sample g;
  if (pirec_gaze_decode(p.payload, p.payload_len, &g) < 0) {
    st->st.bad_payloads++;
    st->pending_drop++;
    if (st->st.bad_payloads == 1 || st->st.bad_payloads % 1000 == 0)
      emit(et, PIREC_EYETRACKER_EVENT_ERROR,
           "gaze payload of %zu bytes (expected 9, 17, 65 or 89) from '%s'; %llu so far", p.payload_len,
           st->url, (unsigned long long)st->st.bad_payloads);
    return;
  }
  st->st.samples++;
  if (!et->recording) {
    st->st.idle++;
    st->pending_drop = 0;
    return;
  }
  char buf_row[1024];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, buf_row, sizeof buf_row);
  pirec_gaze_csv_row(&row, et->trial, st->rx_mono, st->rx_wall, pirec_rtcp_clock_device_ns(&st->clock, ext),
                     &g, p.ts, st->seq.ext_max - (1u << 16), st->pending_drop);
  pirec_csv_row_end(&row);
  push_row(st, et->gaze_sink, &row);
}

/* ---- world ---- */

static void on_au(const struct pirec_h264_au *au, void *user)
{
  struct stream *st = user;
  struct pirec_eyetracker *et = st->et;
  int64_t ext = pirec_rtcp_clock_extend(&st->clock, au->rtp_ts);
  if (st->have_prev_au) {
    int64_t d = ext - st->prev_au_ext;
    if (st->lost_since_au > 0) {
      /* Whole frames may have vanished with the lost packets: count them from the timestamps. */
      int64_t missing = st->interval_ticks > 0 ? round_div(d, st->interval_ticks) - 1 : 0;
      if (missing > 0)
        st->pending_drop += (uint64_t)missing;
      et->need_key = 1;
    } else {
      note_interval(st, d);
    }
  }
  st->lost_since_au = 0;
  st->have_prev_au = 1;
  st->prev_au_ext = ext;
  st->st.samples++;
  if (!et->recording) {
    st->st.idle++;
    st->pending_drop = 0;
    return;
  }
  if (au->damaged) {
    st->pending_drop++;
    et->need_key = 1;
    return;
  }
  /* The file starts, and resumes after a gap, with a picture that decodes on its own, so every
   * packet in it decodes; the frames skipped meanwhile are counted. */
  if (et->need_key && !(au->keyframe && (au->has_params || pirec__mkv_started(et->mkv)))) {
    st->pending_drop++;
    return;
  }
  et->need_key = 0;
  /* Presentation times from the RTP clock, relative to the trial's first written frame; a jump
   * backwards (a new session with another timestamp origin) continues from arrival times. */
  int64_t pts;
  if (!et->have_pts0) {
    et->have_pts0 = 1;
    et->pts0_ext = ext;
    pts = 0;
  } else {
    pts = pirec_rtp_ticks_to_ns(ext - et->pts0_ext, st->clock_rate);
    if (pts <= et->last_pts_ns || pts - et->last_pts_ns > 60 * NS_S) {
      pts = et->last_pts_ns + (st->rx_mono - et->last_pts_mono);
      et->pts0_ext = ext - (pts * (int64_t)st->clock_rate) / NS_S;
    }
  }
  int r = pirec__mkv_write(et->mkv, au->data, au->len, au->keyframe, pts);
  if (r < 0) {
    st->pending_drop++;
    if (r != -EINVAL && !et->write_error) {
      et->write_error = r;
      emit(et, PIREC_EYETRACKER_EVENT_WRITE_ERROR, "cannot write the scene video: %s", pirec_strerror(r));
    }
    return;
  }
  et->last_pts_ns = pts;
  et->last_pts_mono = st->rx_mono;
  char buf_row[256];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, buf_row, sizeof buf_row);
  pirec_csv_row_i64(&row, et->trial);
  pirec_csv_row_i64(&row, st->rx_mono);
  pirec_csv_row_i64(&row, st->rx_wall);
  pirec_csv_row_u64(&row, et->frame_index++);
  pirec_csv_row_u64(&row, st->st.samples - 1);
  int64_t dev = pirec_rtcp_clock_device_ns(&st->clock, ext);
  if (dev == INT64_MIN)
    pirec_csv_row_empty(&row);
  else
    pirec_csv_row_i64(&row, dev);
  pirec_csv_row_u64(&row, st->pending_drop);
  pirec_csv_row_u64(&row, au->len);
  pirec_csv_row_empty(&row);
  pirec_csv_row_end(&row);
  et->bytes_video += au->len;
  r = push_row(st, et->frames_sink, &row);
  if (r < 0 && !et->write_error) {
    /* The video has the frame but its row is lost: the MKV and its CSV no longer pair up one to
     * one, which a reader must hear about (the frame counts in the next row's dropped_before). */
    et->write_error = r;
    emit(et, PIREC_EYETRACKER_EVENT_WRITE_ERROR, "'%s' refused the row of scene frame %llu: %s",
         pirec_sink_path(et->frames_sink), (unsigned long long)(et->frame_index - 1), pirec_strerror(r));
  }
}

static void world_packet(struct stream *st, const uint8_t *buf, size_t len)
{
  struct pirec_rtp_packet p;
  if (pirec_rtp_parse(buf, len, &p) < 0 || p.pt != st->pt) {
    st->st.bad_packets++;
    st->lost_since_au++;
    return;
  }
  st->st.packets++;
  if (!st->have_ssrc) {
    st->have_ssrc = 1;
    st->ssrc = p.ssrc;
  }
  if (st->gap_check) {
    st->gap_check = 0;
    /* The first frame after the gap is judged against the last frame before it. */
    uint64_t missing = reconnect_gap(st, &p);
    st->pending_drop += missing;
    st->have_prev_au = 0;
    st->et->need_key = 1;
  }
  int64_t lost = pirec_rtp_seq_update(&st->seq, p.seq);
  if (lost < 0) {
    st->st.bad_packets++;
    return;
  }
  st->st.lost += (uint64_t)lost;
  st->lost_since_au += lost;
  st->had_data = 1;
  st->prev_ssrc = p.ssrc;
  st->prev_ts = p.ts;
  st->prev_seq = p.seq;
  st->prev_rx_mono = st->rx_mono;
  if (pirec_h264_depay_push(&st->depay, &p, lost, on_au, st) < 0)
    st->st.bad_payloads++;
}

/* ---- eye events ---- */

static void events_packet(struct stream *st, const uint8_t *buf, size_t len)
{
  struct pirec_eyetracker *et = st->et;
  struct pirec_rtp_packet p;
  if (pirec_rtp_parse(buf, len, &p) < 0 || p.pt != st->pt) {
    st->st.bad_packets++;
    return;
  }
  int64_t ext;
  if (stream_accept(st, &p, 0, &ext) < 0)
    return;
  struct pirec_gaze_event e;
  if (pirec_gaze_event_decode(p.payload, p.payload_len, &e) < 0) {
    st->st.bad_payloads++;
    st->pending_drop++;
    if (st->st.bad_payloads == 1 || st->st.bad_payloads % 1000 == 0)
      emit(et, PIREC_EYETRACKER_EVENT_ERROR, "eye event of %zu bytes with an unknown type or size from '%s'",
           p.payload_len, st->url);
    return;
  }
  if (e.type == PIREC_GAZE_EVENT_KEEPALIVE)
    return;
  st->st.samples++;
  if (!et->recording) {
    st->st.idle++;
    st->pending_drop = 0;
    return;
  }
  char b[512];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, b, sizeof b);
  pirec_gaze_event_csv_row(&row, et->trial, st->rx_mono, st->rx_wall,
                           pirec_rtcp_clock_device_ns(&st->clock, ext), &e, p.ts,
                           st->seq.ext_max - (1u << 16), st->pending_drop);
  pirec_csv_row_end(&row);
  push_row(st, et->events_sink, &row);
}

static void data_packet(struct stream *st, const uint8_t *buf, size_t len)
{
  if (st->kind == GAZE)
    gaze_packet(st, buf, len);
  else if (st->kind == WORLD)
    world_packet(st, buf, len);
  else
    events_packet(st, buf, len);
}

/* ---- RTCP ---- */

static void rtcp_packet(struct stream *st, const uint8_t *buf, size_t len)
{
  struct pirec_eyetracker *et = st->et;
  struct pirec_rtcp_sr sr;
  int r = pirec_rtcp_parse_sr(buf, len, &sr);
  if (r < 0) {
    st->st.bad_packets++;
    return;
  }
  if (r == 0 || (st->have_ssrc && sr.ssrc != st->ssrc))
    return;
  int64_t dev = pirec_rtcp_ntp_to_unix_ns(sr.ntp);
  pirec_rtcp_clock_sr(&st->clock, sr.rtp_ts, dev);
  st->st.rtcp_sr++;
  st->st.offset_ns = dev - st->rx_wall;
  if (!st->have_sr0) {
    st->have_sr0 = 1;
    st->sr0_dev = dev;
    st->sr0_mono = st->rx_mono;
    st->last_clock_log = st->rx_mono;
    pirec_log(PIREC_LOG_INFO, "%s: %s clock synchronised: device - wall = %lld ns", et->s.name, st->label,
              (long long)st->st.offset_ns);
  } else if (st->rx_mono > st->sr0_mono) {
    int64_t el = st->rx_mono - st->sr0_mono;
    st->st.drift_ppb = (int64_t)((__int128)((dev - st->sr0_dev) - el) * NS_S / el);
  }
  if (st->rx_mono - st->last_clock_log >= et->s.clock_log_interval_ns) {
    st->last_clock_log = st->rx_mono;
    pirec_log(PIREC_LOG_INFO, "%s: %s clock: device - wall = %lld ns, drift %lld ppb", et->s.name, st->label,
              (long long)st->st.offset_ns, (long long)st->st.drift_ppb);
  }
  if (et->recording) {
    char b[256];
    struct pirec_csv_row row;
    pirec_csv_row_begin(&row, b, sizeof b);
    pirec_csv_row_i64(&row, et->trial);
    pirec_csv_row_i64(&row, st->rx_mono);
    pirec_csv_row_i64(&row, st->rx_wall);
    pirec_csv_row_str(&row, st->label);
    pirec_csv_row_u64(&row, sr.rtp_ts);
    pirec_csv_row_i64(&row, dev);
    pirec_csv_row_i64(&row, st->st.offset_ns);
    pirec_csv_row_i64(&row, st->st.drift_ppb);
    pirec_csv_row_end(&row);
    (void)pirec_csv_push(et->clock_sink, &row); /* a refused one counts in the sink's drops */
  }
}

/* ---- RTSP ---- */

static void on_udp_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct stream *st = h->data;
  *buf = uv_buf_init((char *)st->udp_buf, sizeof st->udp_buf);
}

static void on_udp_recv(uv_udp_t *u, ssize_t n, const uv_buf_t *buf, const struct sockaddr *from,
                        unsigned flags)
{
  struct stream *st = u->data;
  if (n <= 0 || st->state != S_PLAYING)
    return;
  st->rx_mono = pirec_clock_mono_ns();
  st->rx_wall = pirec_clock_wall_ns();
  st->last_rx = st->rx_mono;
  if (flags & UV_UDP_PARTIAL) {
    st->st.bad_packets++;
    return;
  }
  const uint8_t *p = (const uint8_t *)buf->base;
  if (u == &st->udp[1])
    rtcp_packet(st, p, (size_t)n);
  else
    data_packet(st, p, (size_t)n);
}

/* Binds two UDP sockets on consecutive ports (RTP even, RTCP odd) on the address family of the
 * RTSP connection. Returns the RTP port or a negative error. */
static int open_udp(struct stream *st)
{
  struct pirec_eyetracker *et = st->et;
  /* Bound to the local address of the RTSP connection: the interface the server sends to. */
  struct sockaddr_storage local;
  int llen = sizeof local;
  int r = uv_tcp_getsockname(&st->tcp, (struct sockaddr *)&local, &llen);
  if (r < 0)
    return r;
  /* One try per connection attempt: a port pair in use fails this attempt, and the retry after
   * the backoff picks another pair. */
  int port = 40000 + 2 * (int)(((uint64_t)pirec_clock_mono_ns() / 1000 + (uint64_t)st->kind) % 10000);
  for (int i = 0; i < 2; i++) {
    uv_udp_init(et->loop, &st->udp[i]);
    st->udp[i].data = st;
    et->pending++;
  }
  st->udp_open = 1;
  for (int i = 0; i < 2; i++) {
    struct sockaddr_storage a = local;
    if (a.ss_family == AF_INET6)
      ((struct sockaddr_in6 *)&a)->sin6_port = htons((uint16_t)(port + i));
    else
      ((struct sockaddr_in *)&a)->sin_port = htons((uint16_t)(port + i));
    if ((r = uv_udp_bind(&st->udp[i], (struct sockaddr *)&a, 0)) < 0 ||
        (r = uv_udp_recv_start(&st->udp[i], on_udp_alloc, on_udp_recv)) < 0)
      return r; /* stream_fail closes the sockets */
  }
  return port;
}

static void send_setup(struct stream *st)
{
  if (!st->use_udp) {
    request(st, "SETUP", st->control, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1\r\n");
    return;
  }
  int port = open_udp(st);
  if (port < 0) {
    stream_fail(st, port, PIREC_EYETRACKER_EVENT_ERROR, "cannot bind UDP ports for RTP: %s",
                pirec_strerror(port));
    return;
  }
  char tr[128];
  snprintf(tr, sizeof tr, "Transport: RTP/AVP;unicast;client_port=%d-%d\r\n", port, port + 1);
  request(st, "SETUP", st->control, tr);
}

static void handle_response(struct stream *st, const struct pirec_rtsp_item *it)
{
  struct pirec_eyetracker *et = st->et;
  int code = pirec_rtsp_status(it->data, it->len);
  const char *v;
  size_t vl;
  if (code < 0) {
    /* A request from the server (GET_PARAMETER, ANNOUNCE...): answer that it is not supported. */
    if (pirec_http_header(it->data, it->len, "CSeq", &v, &vl))
      stream_send(st, "RTSP/1.0 501 Not Implemented\r\nCSeq: %.*s\r\n\r\n", (int)vl, v);
    return;
  }
  if (st->state == S_PLAYING)
    return; /* keep-alive replies */
  if (code == 461 && st->state == S_SETUP && !st->use_udp) {
    /* The server will not interleave (VLC's RTSP output, for one): ask for UDP instead. */
    st->use_udp = 1;
    pirec_log(PIREC_LOG_INFO, "%s: '%s' refused RTP over the RTSP connection; using UDP", et->s.name,
              st->url);
    send_setup(st);
    return;
  }
  if (code != 200) {
    char line[128];
    const char *eol = memchr(it->data, '\r', it->len);
    size_t n = eol ? (size_t)(eol - (const char *)it->data) : 0;
    snprintf(line, sizeof line, "%.*s", (int)(n < 100 ? n : 100), (const char *)it->data);
    stream_fail(st, -EPROTO, PIREC_EYETRACKER_EVENT_ERROR, "the server answered '%s' to %s", line,
                state_names[st->state]);
    return;
  }
  switch (st->state) {
  case S_OPTIONS:
    set_state(st, S_DESCRIBE);
    request(st, "DESCRIBE", st->url, "Accept: application/sdp\r\n");
    break;
  case S_DESCRIBE: {
    struct pirec_sdp sdp;
    if (pirec_sdp_parse(it->body, it->body_len, &sdp) < 0) {
      stream_fail(st, -EBADMSG, PIREC_EYETRACKER_EVENT_ERROR,
                  "bad SDP (%zu bytes): no media with a payload type and an rtpmap", it->body_len);
      return;
    }
    const struct pirec_sdp_media *m = NULL;
    for (size_t i = 0; i < sdp.n_media && !m; i++) {
      const struct pirec_sdp_media *c = &sdp.media[i];
      if (st->kind == GAZE && strcasecmp(c->encoding, "com.pupillabs.gaze1") == 0)
        m = c;
      if (st->kind == WORLD && strcasecmp(c->encoding, "H264") == 0)
        m = c;
      /* The eye events' encoding name is not documented: take the stream's first non-video media. */
      if (st->kind == EVENTS && strcasecmp(c->media, "video") != 0)
        m = c;
    }
    if (!m) {
      stream_fail(st, -EBADMSG, PIREC_EYETRACKER_EVENT_ERROR, "the SDP has no %s media (%s)",
                  st->kind == GAZE    ? "com.pupillabs.gaze1"
                  : st->kind == WORLD ? "H264"
                                      : "application",
                  sdp.media[0].encoding);
      return;
    }
    char base[PIREC_EYETRACKER_URL_MAX];
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
    break;
  }
  case S_SETUP:
    if (!pirec_http_header(it->data, it->len, "Session", &v, &vl) || vl == 0) {
      stream_fail(st, -EPROTO, PIREC_EYETRACKER_EVENT_ERROR, "SETUP reply without a Session");
      return;
    }
    {
      size_t n = strcspn(v, ";\r\n");
      if (n > vl)
        n = vl;
      if (n >= sizeof st->session)
        n = sizeof st->session - 1;
      memcpy(st->session, v, n);
      st->session[n] = 0;
      /* "Session: ID;timeout=N": keep-alives at half the timeout so the session never expires. */
      st->keepalive_ns = 20 * NS_S;
      const char *t = memmem(v, vl, "timeout=", 8);
      if (t) {
        long secs = strtol(t + 8, NULL, 10);
        if (secs >= 2 && secs < 40)
          st->keepalive_ns = (int64_t)secs * NS_S / 2;
      }
    }
    set_state(st, S_PLAY);
    request(st, "PLAY", st->url, "Range: npt=0.000-\r\n");
    break;
  case S_PLAY:
    set_state(st, S_PLAYING);
    st->fails_in_row = 0;
    st->st.playing = 1;
    st->st.connects++;
    st->last_rx = st->last_keepalive = pirec_clock_mono_ns();
    st->last_msg[0] = 0;
    if (!st->had_data)
      emit(et, PIREC_EYETRACKER_EVENT_CONNECTED, "%s stream '%s' playing (%s/%u)", st->label, st->url,
           st->encoding, st->clock_rate);
    break;
  default: break;
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct stream *st = container_of((uv_tcp_t *)h, struct stream, tcp);
  size_t avail;
  uint8_t *p = pirec_rtsp_framer_space(&st->framer, &avail);
  *buf = uv_buf_init((char *)p, (unsigned)(avail > 65536 ? 65536 : avail));
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
      data_packet(st, it.data, it.len);
    else if (it.channel == 1)
      rtcp_packet(st, it.data, it.len);
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

static const char *configured_url(const struct pirec_eyetracker *et, enum kind k)
{
  return k == GAZE ? et->s.gaze_url : k == WORLD ? et->s.world_url : et->s.events_url;
}

static void stream_connect(struct stream *st)
{
  struct pirec_eyetracker *et = st->et;
  char host[PIREC_EYETRACKER_HOST_MAX];
  int port;
  struct sockaddr_storage ss;
  /* A URL not given in the settings follows the device: the one /api/status named for its current
   * address, else the realtime API's usual one on that address. */
  if (!configured_url(et, st->kind)[0] && (!st->url[0] || st->addr_gen != et->addr_gen)) {
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
    r = make_addr(host, port, &ss);
  if (r < 0) {
    stream_fail(st, r, PIREC_EYETRACKER_EVENT_ERROR, "not an rtsp:// URL with an IP address");
    return;
  }
  r = uv_tcp_connect(&st->connect_req, &st->tcp, (struct sockaddr *)&ss, on_connected);
  if (r < 0)
    stream_fail(st, r, PIREC_EYETRACKER_EVENT_DISCONNECTED, "%s", uv_strerror(r));
}

/* ---- HTTP status ---- */

static int enabled(const struct pirec_eyetracker *et, int k)
{
  return k == GAZE ? et->s.gaze : k == WORLD ? et->s.world : et->s.events;
}

static void start_streams(struct pirec_eyetracker *et)
{
  for (int k = 0; k < NSTREAMS; k++) {
    struct stream *st = &et->streams[k];
    if (enabled(et, k) && st->state == S_IDLE && !uv_is_active((uv_handle_t *)&st->timer))
      stream_connect(st);
  }
}

/* Reads the sensor list of a /api/status answer: {"result":[{"model":"Sensor","data":{...}}]}. */
static void parse_status(struct pirec_eyetracker *et, const char *body, size_t len)
{
  json_error_t jerr;
  json_t *root = json_loadb(body, len, 0, &jerr);
  json_t *result = root ? json_object_get(root, "result") : NULL;
  if (!json_is_array(result)) {
    pirec_log(PIREC_LOG_WARN, "%s: status from '%s:%d' is not the realtime API's JSON: %s", et->s.name,
              et->s.host, et->s.http_port, root ? "no result array" : jerr.text);
    json_decref(root);
    return;
  }
  size_t i;
  json_t *item;
  json_array_foreach(result, i, item)
  {
    json_t *data = json_object_get(item, "data");
    const char *model = json_string_value(json_object_get(item, "model"));
    if (!model || !data)
      continue;
    if (strcmp(model, "Phone") == 0) {
      json_t *bat = json_object_get(data, "battery_level");
      pirec_log(PIREC_LOG_INFO, "%s: device '%s' battery %lld%%", et->s.name,
                json_string_value(json_object_get(data, "device_name")) ?: "?",
                json_is_integer(bat) ? (long long)json_integer_value(bat) : -1LL);
    }
    if (strcmp(model, "Sensor") != 0)
      continue;
    const char *sensor = json_string_value(json_object_get(data, "sensor"));
    const char *conn = json_string_value(json_object_get(data, "conn_type"));
    const char *ip = json_string_value(json_object_get(data, "ip"));
    const char *params = json_string_value(json_object_get(data, "params"));
    json_t *port = json_object_get(data, "port");
    if (!sensor || !conn || strcmp(conn, "DIRECT") != 0 || !ip || !json_is_integer(port))
      continue;
    int k = strcmp(sensor, "gaze") == 0         ? GAZE
            : strcmp(sensor, "world") == 0      ? WORLD
            : strcmp(sensor, "eye_events") == 0 ? EVENTS
                                                : -1;
    if (k < 0)
      continue;
    if (configured_url(et, (enum kind)k)[0])
      continue;
    /* Taken by each stream at its next connect: one mid-session keeps the URL it is using. */
    snprintf(et->status_url[k], sizeof et->status_url[k], "rtsp://%s%s%s:%lld/?%s",
             strchr(ip, ':') ? "[" : "", ip, strchr(ip, ':') ? "]" : "", (long long)json_integer_value(port),
             params ? params : "");
  }
  json_decref(root);
}

/* Runs once per status request, after its socket has started closing. */
static void http_done(struct pirec_eyetracker *et, const char *failure)
{
  uint8_t *body = NULL;
  size_t body_len = 0;
  char why[64];
  if (!failure) {
    int code = pirec_http_reply((uint8_t *)et->http_buf, et->http_len, &body, &body_len);
    if (code == -ENODATA)
      failure = "the answer was cut off";
    else if (code < 0)
      failure = "not an HTTP answer";
    else if (code != 200) {
      snprintf(why, sizeof why, "HTTP status %d", code);
      failure = why;
    }
  }
  if (failure) {
    et->status_failed++;
    pirec_log(PIREC_LOG_WARN, "%s: status from 'http://%s:%d/api/status' failed: %s; trying RTSP anyway",
              et->s.name, et->s.host, et->s.http_port, failure);
  } else {
    et->status_ok++;
    parse_status(et, (const char *)body, body_len);
  }
}

static void http_closed(uv_handle_t *h)
{
  struct pirec_eyetracker *et = container_of((uv_tcp_t *)h, struct pirec_eyetracker, http);
  et->pending--;
  free(et->http_buf);
  et->http_buf = NULL;
  et->http_len = et->http_cap = 0;
  et->http_busy = 0;
  if (et->closing)
    maybe_finish_close(et);
  else
    start_streams(et);
}

static void http_finish(struct pirec_eyetracker *et, const char *failure)
{
  if (uv_is_closing((uv_handle_t *)&et->http))
    return;
  uv_timer_stop(&et->http_timer);
  http_done(et, failure);
  uv_close((uv_handle_t *)&et->http, http_closed);
}

static void http_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct pirec_eyetracker *et = container_of((uv_tcp_t *)h, struct pirec_eyetracker, http);
  if (et->http_cap - et->http_len < 4096 && et->http_cap < 256 * 1024) {
    size_t cap = et->http_cap ? et->http_cap * 2 : 16384;
    char *b = realloc(et->http_buf, cap);
    if (b) {
      et->http_buf = b;
      et->http_cap = cap;
    }
  }
  *buf =
      uv_buf_init(et->http_buf ? et->http_buf + et->http_len : NULL, (unsigned)(et->http_cap - et->http_len));
}

static void http_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct pirec_eyetracker *et = container_of((uv_tcp_t *)s, struct pirec_eyetracker, http);
  if (n == UV_EOF)
    http_finish(et, NULL);
  else if (n < 0)
    http_finish(et, uv_strerror((int)n));
  else if ((et->http_len += (size_t)n) >= et->http_cap && et->http_cap >= 256 * 1024)
    http_finish(et, "answer larger than 256 KiB");
}

static void http_connected(uv_connect_t *req, int status)
{
  struct pirec_eyetracker *et = container_of(req, struct pirec_eyetracker, http_connect);
  if (status < 0) {
    http_finish(et, uv_strerror(status));
    return;
  }
  static char get[512];
  int n = snprintf(get, sizeof get,
                   "GET /api/status HTTP/1.1\r\nHost: %s:%d\r\nAccept: application/json\r\n"
                   "Connection: close\r\n\r\n",
                   et->s.host, et->s.http_port);
  struct wreq *w = malloc(sizeof *w + (size_t)n);
  if (!w) {
    http_finish(et, "out of memory");
    return;
  }
  memcpy(w->data, get, (size_t)n);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
  int r = uv_write(&w->req, (uv_stream_t *)&et->http, &b, 1, on_write_done);
  if (r < 0) {
    free(w);
    http_finish(et, uv_strerror(r));
    return;
  }
  r = uv_read_start((uv_stream_t *)&et->http, http_alloc, http_read);
  if (r < 0)
    http_finish(et, uv_strerror(r));
}

static void http_timeout(uv_timer_t *t)
{
  struct pirec_eyetracker *et = container_of(t, struct pirec_eyetracker, http_timer);
  http_finish(et, "no answer within 3 s");
}

/* Asks for /api/status; the streams start when it has finished, whatever the outcome. */
static void fetch_status(struct pirec_eyetracker *et)
{
  struct sockaddr_storage ss;
  if (make_addr(et->s.host, et->s.http_port, &ss) < 0) {
    start_streams(et);
    return;
  }
  uv_tcp_init(et->loop, &et->http);
  et->pending++;
  et->http_busy = 1;
  uv_timer_start(&et->http_timer, http_timeout, 3000, 0);
  int r = uv_tcp_connect(&et->http_connect, &et->http, (struct sockaddr *)&ss, http_connected);
  if (r < 0)
    http_finish(et, uv_strerror(r));
}

/* ---- address = auto: mDNS discovery at connect time ---- */

#define MDNS_KEY "[eyetracker] address = IP:8080 (the Neon Companion app shows the IP under 'Stream')"

static int needs_discovery(const struct pirec_eyetracker_settings *s)
{
  return strcmp(s->host, "auto") == 0 &&
         ((s->gaze && !s->gaze_url[0]) || (s->world && !s->world_url[0]) || (s->events && !s->events_url[0]));
}

static void discover(struct pirec_eyetracker *et);

static void on_discover_retry(uv_timer_t *t)
{
  struct pirec_eyetracker *et = container_of(t, struct pirec_eyetracker, http_timer);
  if (!et->closing)
    discover(et);
}

static void on_mdns_closed(struct pirec_mdns *m, void *user)
{
  (void)m;
  struct pirec_eyetracker *et = user;
  et->pending--;
  maybe_finish_close(et);
}

static void on_discovered(struct pirec_mdns *m, int status, const struct pirec_mdns_result *r,
                          const char *err, void *user)
{
  struct pirec_eyetracker *et = user;
  et->mdns = NULL;
  if (m) {
    et->pending++;
    pirec_mdns_close(m, on_mdns_closed, et);
  }
  int again = et->found;
  if (status == 0) {
    et->found = 1;
    if (again && strcmp(r->host, et->s.host) == 0 && r->port == et->s.http_port)
      return; /* still there: the streams keep retrying it with their backoff */
    if (again) {
      et->address_changes++;
      pirec_log(PIREC_LOG_WARN, "%s: \"%s\" moved from %s:%d to %s:%d (mDNS); reconnecting there", et->s.name,
                r->name, et->s.host, et->s.http_port, r->host, r->port);
    } else {
      pirec_log(PIREC_LOG_INFO, "%s: found \"%s\" by mDNS at %s:%d", et->s.name, r->name, r->host, r->port);
    }
    snprintf(et->s.host, sizeof et->s.host, "%s", r->host);
    et->s.http_port = r->port;
    et->addr_gen++;
    memset(et->status_url, 0, sizeof et->status_url);
    /* Streams waiting out a backoff against the old address go at once once the status is in. */
    for (int k = 0; k < NSTREAMS; k++) {
      struct stream *st = &et->streams[k];
      st->last_msg[0] = 0; /* a failure at the new address is news */
      if (st->state == S_IDLE && uv_is_active((uv_handle_t *)&st->timer)) {
        uv_timer_stop(&st->timer);
        st->backoff_ns = et->s.reconnect_min_ns;
      }
    }
    fetch_status(et);
    return;
  }
  if (again) {
    /* The streams keep retrying the last address; the next run of failures asks again. */
    pirec_log(PIREC_LOG_WARN, "%s: looking for the device again: %s", et->s.name, err);
    return;
  }
  /* The phone may join the network later: keep looking, with the streams' backoff. */
  pirec_log(PIREC_LOG_ERROR, "%s: %s (next try in %lld s)", et->s.name, err,
            (long long)(et->mdns_backoff_ns / NS_S));
  uv_timer_start(&et->http_timer, on_discover_retry, (uint64_t)(et->mdns_backoff_ns / NS_MS), 0);
  et->mdns_backoff_ns *= 2;
  if (et->mdns_backoff_ns > et->s.reconnect_max_ns)
    et->mdns_backoff_ns = et->s.reconnect_max_ns;
}

/* The streams cannot reach the address found: ask mDNS again, one lookup at a time. */
static void rediscover(struct pirec_eyetracker *et)
{
  if (!et->auto_address || !et->found || et->mdns || et->http_busy || et->closing)
    return;
  et->rediscoveries++;
  discover(et);
}

/* The lookup runs on avahi's thread; its answer comes back on the loop (on_discovered). */
static void discover(struct pirec_eyetracker *et)
{
  char err[512];
  int r = pirec_mdns_lookup_new(et->loop, PIREC_MDNS_NEON_TYPE, PIREC_MDNS_NEON_PREFIX, 5000, MDNS_KEY,
                                on_discovered, et, &et->mdns, err, sizeof err);
  if (r < 0)
    on_discovered(NULL, r, NULL, err, et);
}

/* ---- public ---- */

int pirec_eyetracker_new(uv_loop_t *loop, const struct pirec_eyetracker_settings *s,
                         pirec_eyetracker_event_cb on_event, void *user, struct pirec_eyetracker **out)
{
  if (!s->gaze && !s->world && !s->events)
    return -EINVAL;
  if (needs_discovery(s) && !pirec_mdns_available()) {
    pirec_log(PIREC_LOG_ERROR,
              "%s: address 'auto' needs mDNS discovery, which this build does not have (no "
              "libavahi-client at build time); set " MDNS_KEY,
              s->name);
    return -ENOTSUP;
  }
  char mdns_err[512];
  int pr = needs_discovery(s) ? pirec_mdns_probe(MDNS_KEY, mdns_err, sizeof mdns_err) : 0;
  if (pr < 0) {
    /* Said now, at configuration, rather than as a retry loop in the log. */
    pirec_log(PIREC_LOG_ERROR, "%s: address 'auto': %s", s->name, mdns_err);
    return pr;
  }
  struct sockaddr_storage ss;
  if (strcmp(s->host, "auto") != 0 && make_addr(s->host, 1, &ss) < 0) {
    pirec_log(PIREC_LOG_ERROR, "%s: address '%s' is not an IP address (host names are not resolved)", s->name,
              s->host);
    return -EINVAL;
  }
  if (s->http_port < 1 || s->http_port > 65535 || s->rtsp_port < 1 || s->rtsp_port > 65535 ||
      s->reconnect_min_ns <= 0 || s->reconnect_max_ns < s->reconnect_min_ns)
    return -EINVAL;
  struct pirec_eyetracker *et = calloc(1, sizeof *et);
  if (!et)
    return -ENOMEM;
  et->loop = loop;
  et->s = *s;
  et->auto_address = needs_discovery(s);
  if (et->s.stall_timeout_ns <= 0)
    et->s.stall_timeout_ns = 3 * NS_S;
  if (et->s.clock_log_interval_ns <= 0)
    et->s.clock_log_interval_ns = 10 * NS_S;
  et->on_event = on_event;
  et->user = user;
  for (int k = 0; k < NSTREAMS; k++) {
    struct stream *st = &et->streams[k];
    st->et = et;
    st->kind = (enum kind)k;
    st->label = k == GAZE ? "gaze" : k == WORLD ? "world" : "eye_events";
    st->backoff_ns = et->s.reconnect_min_ns;
    st->st.offset_ns = INT64_MIN;
    snprintf(st->url, sizeof st->url, "%s",
             k == GAZE    ? s->gaze_url
             : k == WORLD ? s->world_url
                          : s->events_url);
    if (pirec_rtsp_framer_init(&st->framer, 64 * 1024) < 0 ||
        (k == WORLD && pirec_h264_depay_init(&st->depay, 16u << 20) < 0)) {
      for (int j = 0; j < NSTREAMS; j++) {
        pirec_rtsp_framer_free(&et->streams[j].framer);
        pirec_h264_depay_free(&et->streams[j].depay);
      }
      free(et);
      return -ENOMEM;
    }
    uv_timer_init(loop, &st->timer);
  }
  uv_timer_init(loop, &et->http_timer);
  *out = et;
  return 0;
}

/* Trial sink rings, sized for about 10 s of a Neon's output each (gaze rows ~70 KB/s, scene video up
 * to ~0.8 MB/s): every page of an arena is backed when it is made, so oversizing them costs memory
 * and, when no prepared arena is ready, loop time at trial start. */
#define SCENE_RING_BYTES ((size_t)8 << 20)
#define GAZE_RING_BYTES  ((size_t)1 << 20)
#define SMALL_RING_BYTES ((size_t)256 << 10)

int pirec_eyetracker_start(struct pirec_eyetracker *et)
{
  if (et->started)
    return -EALREADY;
  et->started = 1;
  /* The first trial's arenas are made now on a spare thread rather than on the loop at trial start
   * (later trials reuse the previous one's). */
  size_t trial_rings[5] = {GAZE_RING_BYTES, SMALL_RING_BYTES, SMALL_RING_BYTES}, n = 3;
  if (et->s.events)
    trial_rings[n++] = SMALL_RING_BYTES;
  if (et->s.world)
    trial_rings[n++] = SCENE_RING_BYTES;
  (void)pirec_ring_prepare_detached(trial_rings, n);
  if (needs_discovery(&et->s)) {
    et->mdns_backoff_ns = et->s.reconnect_min_ns;
    discover(et);
  } else if (strcmp(et->s.host, "auto") == 0)
    start_streams(et);
  else
    fetch_status(et);
  return 0;
}

static int open_sink(struct pirec_eyetracker *et, const char *dir, const char *base, const char *suffix,
                     struct pirec_sink **out)
{
  char path[4096];
  int n = snprintf(path, sizeof path, "%s/%s%s", dir, base, suffix);
  if (n < 0 || (size_t)n >= sizeof path)
    return -ENAMETOOLONG;
  struct pirec_sink_options o;
  pirec_sink_options_default(&o);
  o.fsync_interval_ms = et->s.fsync_interval_ms;
  if (strcmp(suffix, "_scene.mkv") == 0)
    o.ring_bytes = SCENE_RING_BYTES;
  else if (strcmp(suffix, "_gaze.csv") == 0)
    o.ring_bytes = GAZE_RING_BYTES;
  else
    o.ring_bytes = SMALL_RING_BYTES;
  if (et->s.sink_ring_bytes)
    o.ring_bytes = et->s.sink_ring_bytes;
  int r = pirec_sink_new(et->loop, path, &o, on_sink_error, et, out);
  if (r < 0)
    pirec_log(PIREC_LOG_ERROR, "%s: cannot create a sink for '%s': %s", et->s.name, path, pirec_strerror(r));
  return r;
}

static int mkdir_p(const char *dir)
{
  char p[4096];
  int n = snprintf(p, sizeof p, "%s", dir);
  if (n < 0 || (size_t)n >= sizeof p)
    return -ENAMETOOLONG;
  for (char *c = p + 1;; c++) {
    if (*c == '/' || *c == 0) {
      char saved = *c;
      *c = 0;
      if (mkdir(p, 0755) < 0 && errno != EEXIST)
        return -errno;
      *c = saved;
      if (!saved)
        break;
    }
  }
  return 0;
}

static void close_trial_sinks(struct pirec_eyetracker *et);

int pirec_eyetracker_trial_start(struct pirec_eyetracker *et, const char *dir, int trial, int part)
{
  if (et->recording || et->stopping)
    return -EBUSY;
  if (et->closing || trial < 1)
    return -EINVAL;
  /* One small blocking call at trial start (not on a capture path): the sinks open
   * asynchronously and need the directory to exist by then. */
  int r = mkdir_p(dir);
  if (r < 0) {
    pirec_log(PIREC_LOG_ERROR, "%s: cannot create '%s': %s", et->s.name, dir, pirec_strerror(r));
    return r;
  }
  char base[32];
  if (part > 0)
    snprintf(base, sizeof base, "t%03d_p%d", trial, part);
  else
    snprintf(base, sizeof base, "t%03d", trial);
  et->write_error = 0;
  if ((r = open_sink(et, dir, base, "_gaze.csv", &et->gaze_sink)) < 0 ||
      (r = open_sink(et, dir, base, "_scene_frames.csv", &et->frames_sink)) < 0 ||
      (r = open_sink(et, dir, base, "_eye_clock.csv", &et->clock_sink)) < 0 ||
      (et->s.world && (r = open_sink(et, dir, base, "_scene.mkv", &et->video_sink)) < 0) ||
      (et->s.world && (r = pirec__mkv_new(et->video_sink, 0, 0, 0, 0, &et->mkv)) < 0) ||
      (et->s.events && (r = open_sink(et, dir, base, "_eye_events.csv", &et->events_sink)) < 0)) {
    et->stop_cb = NULL;
    close_trial_sinks(et);
    return r;
  }
  char hdr[2048];
  int n = pirec_csv_header(hdr, sizeof hdr, pirec_gaze_columns);
  pirec_sink_push(et->gaze_sink, hdr, (size_t)n);
  static const char *const frame_cols[] = {"trial",        "mono_ns",        "wall_ns", "frame",  "seq",
                                           "device_ts_ns", "dropped_before", "bytes",   "offset", NULL};
  n = pirec_csv_header(hdr, sizeof hdr, frame_cols);
  pirec_sink_push(et->frames_sink, hdr, (size_t)n);
  static const char *const clock_cols[] = {"trial",     "mono_ns",   "wall_ns",   "stream", "rtp_ts",
                                           "device_ns", "offset_ns", "drift_ppb", NULL};
  n = pirec_csv_header(hdr, sizeof hdr, clock_cols);
  pirec_sink_push(et->clock_sink, hdr, (size_t)n);
  if (et->events_sink) {
    n = pirec_csv_header(hdr, sizeof hdr, pirec_gaze_event_columns);
    pirec_sink_push(et->events_sink, hdr, (size_t)n);
  }
  et->trial = trial;
  et->recording = 1;
  et->have_pts0 = 0;
  et->need_key = 1;
  et->frame_index = 0;
  et->bytes_video = 0;
  et->sink_drops = 0;
  for (int k = 0; k < NSTREAMS; k++) {
    struct stream *st = &et->streams[k];
    st->pending_drop = 0;
    st->st.written = st->st.dropped = st->st.refused = 0;
  }
  return 0;
}

static void finish_stop(struct pirec_eyetracker *et)
{
  et->stopping = 0;
  pirec__mkv_free(et->mkv);
  et->mkv = NULL;
  pirec_eyetracker_stopped_cb cb = et->stop_cb;
  et->stop_cb = NULL;
  if (cb)
    cb(et, et->stop_err, et->stop_user);
  if (et->closing)
    maybe_finish_close(et);
}

static void on_scene_sealed(struct pirec__mkv_sealer *s, int status)
{
  struct pirec_eyetracker *et = s->data;
  if (status < 0)
    pirec_log(PIREC_LOG_WARN, "%s: cannot seal the scene video: %s", et->s.name, pirec_strerror(status));
  if (--et->sinks_open == 0)
    finish_stop(et);
}

static void on_sink_closed(struct pirec_sink *sink, const struct pirec_sink_counters *c, void *user)
{
  struct pirec_eyetracker *et = user;
  if (c->error && !et->stop_err)
    et->stop_err = c->error;
  et->sink_drops += c->drops;
  if (sink == et->video_closing) {
    et->video_closing = NULL;
    /* A clean scene file gets its real segment size (as the camera's video does), so pirec-remux
     * does not take it for a file cut by a crash. The seal holds the trial's stop like a sink
     * would: stopped is reported once it is on disk. The sink's path is valid during this callback
     * and the seal copies it. A file that cannot be sealed stays valid as it is. */
    et->sealer.data = et;
    if (!c->error && et->mkv &&
        pirec__mkv_seal_file(et->loop, &et->sealer, et->mkv, pirec_sink_path(sink), c->bytes_written,
                             on_scene_sealed) == 0)
      return; /* this sink's count is released by on_scene_sealed */
  }
  if (--et->sinks_open == 0)
    finish_stop(et);
}

static void close_trial_sinks(struct pirec_eyetracker *et)
{
  struct pirec_sink **sinks[5] = {&et->gaze_sink, &et->frames_sink, &et->clock_sink, &et->video_sink,
                                  &et->events_sink};
  et->stopping = 1;
  et->stop_err = et->write_error;
  et->sinks_open = 1; /* held while the closes start */
  et->video_closing = et->video_sink;
  for (int i = 0; i < 5; i++)
    if (*sinks[i]) {
      et->sinks_open++;
      pirec_sink_close(*sinks[i], on_sink_closed, et);
      *sinks[i] = NULL;
    }
  if (--et->sinks_open == 0)
    finish_stop(et);
}

int pirec_eyetracker_trial_stop(struct pirec_eyetracker *et, pirec_eyetracker_stopped_cb cb, void *user)
{
  if (!et->recording)
    return -EINVAL;
  et->recording = 0;
  if (et->mkv) {
    int r = pirec__mkv_finish(et->mkv);
    if (r < 0 && !et->write_error)
      et->write_error = r;
  }
  et->stop_cb = cb;
  et->stop_user = user;
  /* The sinks close asynchronously, so cb never runs inside this call. */
  close_trial_sinks(et);
  return 0;
}

int pirec_eyetracker_recording(const struct pirec_eyetracker *et)
{
  return et->recording;
}

void pirec_eyetracker_hold_sinks(struct pirec_eyetracker *et, int hold)
{
  if (!et->recording)
    return;
  struct pirec_sink *sinks[5] = {et->gaze_sink, et->frames_sink, et->clock_sink, et->video_sink,
                                 et->events_sink};
  for (int i = 0; i < 5; i++)
    if (sinks[i])
      pirec_sink_hold(sinks[i], hold);
}

void pirec_eyetracker_status(const struct pirec_eyetracker *et, struct pirec_eyetracker_status *out)
{
  memset(out, 0, sizeof *out);
  out->gaze = et->streams[GAZE].st;
  out->world = et->streams[WORLD].st;
  out->events = et->streams[EVENTS].st;
  out->status_ok = et->status_ok;
  out->status_failed = et->status_failed;
  out->rediscoveries = et->rediscoveries;
  out->address_changes = et->address_changes;
  snprintf(out->host, sizeof out->host, "%s", et->s.host);
  out->bytes_video = et->bytes_video;
  out->sink_drops = et->sink_drops;
  out->write_error = et->write_error;
}

static void on_handle_closed(uv_handle_t *h)
{
  struct pirec_eyetracker *et = h->data;
  et->pending--;
  maybe_finish_close(et);
}

static void maybe_finish_close(struct pirec_eyetracker *et)
{
  if (!et->closing || et->pending > 0 || et->stopping)
    return;
  et->pending = -1; /* once */
  for (int k = 0; k < NSTREAMS; k++) {
    pirec_rtsp_framer_free(&et->streams[k].framer);
    pirec_h264_depay_free(&et->streams[k].depay);
  }
  if (et->close_cb)
    et->close_cb(et, et->close_user);
  free(et);
}

static void stop_for_close(struct pirec_eyetracker *et, int err, void *user)
{
}

void pirec_eyetracker_close(struct pirec_eyetracker *et, pirec_eyetracker_close_cb cb, void *user)
{
  et->closing = 1;
  et->close_cb = cb;
  et->close_user = user;
  et->pending++; /* held while the closes start */
  if (et->recording)
    pirec_eyetracker_trial_stop(et, stop_for_close, NULL);
  for (int k = 0; k < NSTREAMS; k++) {
    struct stream *st = &et->streams[k];
    st->timer.data = et;
    et->pending++;
    uv_close((uv_handle_t *)&st->timer, on_handle_closed);
    if (st->tcp_open && !uv_is_closing((uv_handle_t *)&st->tcp)) {
      st->state = S_CLOSING;
      uv_close((uv_handle_t *)&st->tcp, on_tcp_closed);
      close_udp(st);
    }
  }
  et->http_timer.data = et;
  et->pending++;
  uv_close((uv_handle_t *)&et->http_timer, on_handle_closed);
  if (et->http_busy && !uv_is_closing((uv_handle_t *)&et->http))
    uv_close((uv_handle_t *)&et->http, http_closed);
  if (et->mdns) {
    et->pending++;
    pirec_mdns_close(et->mdns, on_mdns_closed, et);
    et->mdns = NULL;
  }
  et->pending--;
  maybe_finish_close(et);
}
