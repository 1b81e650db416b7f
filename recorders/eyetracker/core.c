/* What every layer of the eye tracker client shares: the event report, socket addresses, writes
 * whose buffer frees itself, and the count of pending closes that finishes pirec_eyetracker_close. */

#include "eyetracker-int.h"

#include "pirec/container_of.h"
#include "pirec/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct wreq {
  uv_write_t req;
  char data[];
};

void pirec__et_vemit(struct pirec_eyetracker *et, enum pirec_eyetracker_event ev, const char *fmt, va_list ap)
{
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  if (et->on_event)
    et->on_event(et, ev, msg, et->user);
  else
    pirec_log(ev == PIREC_EYETRACKER_EVENT_CONNECTED ? PIREC_LOG_INFO : PIREC_LOG_WARN, "%s: %s", et->s.name,
              msg);
}

void pirec__et_emit(struct pirec_eyetracker *et, enum pirec_eyetracker_event ev, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  pirec__et_vemit(et, ev, fmt, ap);
  va_end(ap);
}

int pirec__et_make_addr(const char *host, int port, struct sockaddr_storage *ss)
{
  if (strcmp(host, "localhost") == 0)
    host = "127.0.0.1";
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0)
    return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
    return 0;
  return -EINVAL;
}

static void on_write_done(uv_write_t *req, int status)
{
  free(container_of(req, struct wreq, req));
}

int pirec__et_write(uv_stream_t *s, const char *data, size_t n)
{
  struct wreq *w = malloc(sizeof *w + n);
  if (!w)
    return UV_ENOMEM;
  memcpy(w->data, data, n);
  uv_buf_t b = uv_buf_init(w->data, (unsigned)n);
  int r = uv_write(&w->req, s, &b, 1, on_write_done);
  if (r < 0)
    free(w);
  return r;
}

const char *pirec__et_configured_url(const struct pirec_eyetracker *et, enum kind k)
{
  return k == GAZE ? et->s.gaze_url : k == WORLD ? et->s.world_url : et->s.events_url;
}

void pirec__et_maybe_closed(struct pirec_eyetracker *et)
{
  if (!et->closing || et->pending > 0 || et->stopping)
    return;
  et->pending = -1; /* once */
  for (int k = 0; k < NSTREAMS; k++) {
    pirec_rtsp_framer_free(&et->streams[k].framer);
    pirec_h264_depay_free(&et->streams[k].depay);
  }
  pirec_crypt_session_clear(&et->crypt);
  pirec_backlog_free(et->bl_video);
  pirec_backlog_free(et->bl_rows);
  pirec__et_preview_free(et);
  if (et->close_cb)
    et->close_cb(et, et->close_user);
  free(et);
}
