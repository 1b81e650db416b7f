/* The device's HTTP API: GET /api/status for the battery and the streams' RTSP URLs. */

#include "eyetracker-int.h"

#include "http.h"
#include "pirec/container_of.h"
#include "pirec/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>

static void http_finish(struct pirec_eyetracker *et, const char *failure);

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
      json_t *bat = json_object_get(data, "battery_level"), *echo = json_object_get(data, "time_echo_port");
      if (echo &&
          (!json_is_integer(echo) || json_integer_value(echo) < 0 || json_integer_value(echo) > 65535))
        pirec_log(PIREC_LOG_WARN, "%s: status from '%s:%d': Phone.time_echo_port is not a port number",
                  et->s.name, et->s.host, et->s.http_port);
      else if (echo)
        pirec__et_echo_port(et, (int)json_integer_value(echo));
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
    if (pirec__et_configured_url(et, (enum kind)k)[0])
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

void pirec__et_http_closed(uv_handle_t *h)
{
  struct pirec_eyetracker *et = container_of((uv_tcp_t *)h, struct pirec_eyetracker, http);
  et->pending--;
  free(et->http_buf);
  et->http_buf = NULL;
  et->http_len = et->http_cap = 0;
  et->http_busy = 0;
  if (et->closing)
    pirec__et_maybe_closed(et);
  else
    pirec__et_start_streams(et);
}

static void http_finish(struct pirec_eyetracker *et, const char *failure)
{
  if (uv_is_closing((uv_handle_t *)&et->http))
    return;
  uv_timer_stop(&et->http_timer);
  http_done(et, failure);
  uv_close((uv_handle_t *)&et->http, pirec__et_http_closed);
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
  int r = pirec__et_write((uv_stream_t *)&et->http, get, (size_t)n);
  if (r < 0) {
    http_finish(et, r == UV_ENOMEM ? "out of memory" : uv_strerror(r));
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
void pirec__et_fetch_status(struct pirec_eyetracker *et)
{
  struct sockaddr_storage ss;
  if (pirec__et_make_addr(et->s.host, et->s.http_port, &ss) < 0) {
    pirec__et_start_streams(et);
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
