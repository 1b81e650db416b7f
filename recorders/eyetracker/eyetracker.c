/* The eye tracker client: Pupil Labs realtime API over HTTP and RTSP with interleaved RTP/RTCP,
 * all on the loop (see include/pirec/eyetracker.h). This file holds the settings and the public
 * lifecycle; eyetracker-int.h lists the layers below it. */

#include "eyetracker-int.h"

#include "pirec/log.h"
#include "pirec/mdns.h"
#include "pirec/ring.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
  s->time_echo = 1;
  s->time_echo_interval_ns = 10 * NS_S;
  s->api_timeout_ns = 3 * NS_S;
  s->event_attempts = 3;
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

/* Refuses settings the client cannot run with, saying why where the user can act on it. */
static int check_settings(const struct pirec_eyetracker_settings *s)
{
  if (!s->gaze && !s->world && !s->events)
    return -EINVAL;
  if (pirec__et_needs_discovery(s) && !pirec_mdns_available()) {
    pirec_log(PIREC_LOG_ERROR,
              "%s: address 'auto' needs mDNS discovery, which this build does not have (no "
              "libavahi-client at build time); set " MDNS_KEY,
              s->name);
    return -ENOTSUP;
  }
  char mdns_err[512];
  int pr = pirec__et_needs_discovery(s) ? pirec_mdns_probe(MDNS_KEY, mdns_err, sizeof mdns_err) : 0;
  if (pr < 0) {
    /* Said now, at configuration, rather than as a retry loop in the log. */
    pirec_log(PIREC_LOG_ERROR, "%s: address 'auto': %s", s->name, mdns_err);
    return pr;
  }
  struct sockaddr_storage ss;
  if (strcmp(s->host, "auto") != 0 && pirec__et_make_addr(s->host, 1, &ss) < 0) {
    pirec_log(PIREC_LOG_ERROR, "%s: address '%s' is not an IP address (host names are not resolved)", s->name,
              s->host);
    return -EINVAL;
  }
  if (s->http_port < 1 || s->http_port > 65535 || s->rtsp_port < 1 || s->rtsp_port > 65535 ||
      s->reconnect_min_ns <= 0 || s->reconnect_max_ns < s->reconnect_min_ns)
    return -EINVAL;
  return 0;
}

/* The settings part of stream k and its parse buffers (no loop handles). 0 or -ENOMEM. */
static int stream_init(struct pirec_eyetracker *et, enum kind k)
{
  struct stream *st = &et->streams[k];
  st->et = et;
  st->kind = k;
  st->label = k == GAZE ? "gaze" : k == WORLD ? "world" : "eye_events";
  st->backoff_ns = et->s.reconnect_min_ns;
  st->st.offset_ns = INT64_MIN;
  snprintf(st->url, sizeof st->url, "%s", pirec__et_configured_url(et, k));
  if (pirec_rtsp_framer_init(&st->framer, 64 * 1024) < 0 ||
      (k == WORLD && pirec_h264_depay_init(&st->depay, 16u << 20) < 0))
    return -ENOMEM;
  return 0;
}

int pirec_eyetracker_new(uv_loop_t *loop, const struct pirec_eyetracker_settings *s,
                         pirec_eyetracker_event_cb on_event, void *user, struct pirec_eyetracker **out)
{
  int r = check_settings(s);
  if (r < 0)
    return r;
  struct pirec_eyetracker *et = calloc(1, sizeof *et);
  if (!et)
    return -ENOMEM;
  et->loop = loop;
  et->s = *s;
  et->auto_address = pirec__et_needs_discovery(s);
  if (et->s.stall_timeout_ns <= 0)
    et->s.stall_timeout_ns = 3 * NS_S;
  if (et->s.clock_log_interval_ns <= 0)
    et->s.clock_log_interval_ns = 10 * NS_S;
  et->on_event = on_event;
  et->user = user;
  if (et->s.pre_trigger_ns < 0)
    et->s.pre_trigger_ns = 0;
  if (et->s.time_echo_interval_ns <= 0)
    et->s.time_echo_interval_ns = 10 * NS_S;
  if (et->s.api_timeout_ns <= 0)
    et->s.api_timeout_ns = 3 * NS_S;
  if (et->s.event_attempts <= 0)
    et->s.event_attempts = 3;
  for (int k = 0; k < NSTREAMS; k++)
    if (stream_init(et, (enum kind)k) < 0 || (k == NSTREAMS - 1 && pirec__et_backlog_new(et) < 0)) {
      for (int j = 0; j < NSTREAMS; j++) {
        pirec_rtsp_framer_free(&et->streams[j].framer);
        pirec_h264_depay_free(&et->streams[j].depay);
      }
      free(et);
      return -ENOMEM;
    }
  /* The timers only once nothing can fail: an initialised handle must be closed, not freed. */
  for (int k = 0; k < NSTREAMS; k++)
    uv_timer_init(loop, &et->streams[k].timer);
  uv_timer_init(loop, &et->http_timer);
  pirec__et_api_init(et);
  pirec__et_echo_init(et);
  et->unreachable = pirec__et_rediscover;
  *out = et;
  return 0;
}

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
  if (pirec__et_needs_discovery(&et->s)) {
    et->mdns_backoff_ns = et->s.reconnect_min_ns;
    pirec__et_discover(et);
  } else if (strcmp(et->s.host, "auto") == 0)
    pirec__et_start_streams(et);
  else
    pirec__et_fetch_status(et);
  return 0;
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
  struct pirec_backlog_stats bs[2] = {{0}};
  if (et->bl_video)
    pirec_backlog_stats(et->bl_video, &bs[0]);
  pirec_backlog_stats(et->bl_rows, &bs[1]);
  out->backlog_bytes = bs[0].capacity + bs[1].capacity;
  out->backlog_used = bs[0].used + bs[1].used;
  out->backlog_high_water = bs[0].high_water + bs[1].high_water;
  out->backlog_missed = 0;
  for (int k = 0; k < NSTREAMS; k++)
    out->backlog_missed += et->streams[k].backlog_missed;
  out->events_sent = et->events_sent;
  out->events_failed = et->events_failed;
  out->events_dropped = et->events_dropped;
  out->events_retried = et->events_retried;
  for (size_t i = 0; i < et->api_n; i++)
    out->events_queued += et->api_q[(et->api_head + i) % PIREC_EYETRACKER_API_QUEUE].is_event;
  out->echo_estimates = et->echo_estimates;
  out->echo_failures = et->echo_failures;
  out->echo_offset_ns = et->echo_offset_ns;
  out->echo_rtt_ns = et->echo_rtt_ns;
  out->echo_uncertainty_ns = et->echo_uncertainty_ns;
  out->echo_port = et->echo_port;
}

static void on_handle_closed(uv_handle_t *h)
{
  struct pirec_eyetracker *et = h->data;
  et->pending--;
  pirec__et_maybe_closed(et);
}

static void stop_for_close(struct pirec_eyetracker *et, int err, void *user)
{
}

void pirec_eyetracker_close(struct pirec_eyetracker *et, pirec_eyetracker_close_cb cb, void *user)
{
  if (!et)
    return;
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
      uv_close((uv_handle_t *)&st->tcp, pirec__et_tcp_closed);
      pirec__et_close_udp(st);
    }
  }
  et->http_timer.data = et;
  et->pending++;
  uv_close((uv_handle_t *)&et->http_timer, on_handle_closed);
  if (et->http_busy && !uv_is_closing((uv_handle_t *)&et->http))
    uv_close((uv_handle_t *)&et->http, pirec__et_http_closed);
  pirec__et_api_close(et);
  pirec__et_echo_close(et);
  if (et->mdns) {
    et->pending++;
    pirec_mdns_close(et->mdns, pirec__et_mdns_closed, et);
    et->mdns = NULL;
  }
  et->pending--;
  pirec__et_maybe_closed(et);
}
