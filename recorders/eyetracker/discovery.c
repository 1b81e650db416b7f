/* address = auto: the device found by mDNS at connect time, and again when its streams cannot
 * reach it. */

#include "eyetracker-int.h"

#include "pirec/container_of.h"
#include "pirec/log.h"
#include "pirec/mdns.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pirec__et_needs_discovery(const struct pirec_eyetracker_settings *s)
{
  return strcmp(s->host, "auto") == 0 &&
         ((s->gaze && !s->gaze_url[0]) || (s->world && !s->world_url[0]) || (s->events && !s->events_url[0]));
}

static void on_discover_retry(uv_timer_t *t)
{
  struct pirec_eyetracker *et = container_of(t, struct pirec_eyetracker, http_timer);
  if (!et->closing)
    pirec__et_discover(et);
}

void pirec__et_mdns_closed(struct pirec_mdns *m, void *user)
{
  (void)m;
  struct pirec_eyetracker *et = user;
  et->pending--;
  pirec__et_maybe_closed(et);
}

static void on_discovered(struct pirec_mdns *m, int status, const struct pirec_mdns_result *r,
                          const char *err, void *user)
{
  struct pirec_eyetracker *et = user;
  et->mdns = NULL;
  if (m) {
    et->pending++;
    pirec_mdns_close(m, pirec__et_mdns_closed, et);
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
    pirec__et_fetch_status(et);
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
void pirec__et_rediscover(struct pirec_eyetracker *et)
{
  if (!et->auto_address || !et->found || et->mdns || et->http_busy || et->closing)
    return;
  et->rediscoveries++;
  pirec__et_discover(et);
}

/* The lookup runs on avahi's thread; its answer comes back on the loop (on_discovered). */
void pirec__et_discover(struct pirec_eyetracker *et)
{
  char err[512];
  int r = pirec_mdns_lookup_new(et->loop, PIREC_MDNS_NEON_TYPE, PIREC_MDNS_NEON_PREFIX, 5000, MDNS_KEY,
                                on_discovered, et, &et->mdns, err, sizeof err);
  if (r < 0)
    on_discovered(NULL, r, NULL, err, et);
}
