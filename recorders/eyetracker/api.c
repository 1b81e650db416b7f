/* POSTs to the device: events (POST /api/event) and recording control (/api/recording:start,
 * :stop_and_save, :cancel), as Pupil Labs' client sends them (pupil-labs/realtime-python-api,
 * device.py: a JSON body, a {"message", "result"} envelope in reply, a status other than 200 a
 * refusal whose "message" says why). One request at a time, each on its own connection with
 * "Connection: close", so a slow or absent device only ever holds this queue, never the loop. */

#include "eyetracker-int.h"

#include "http.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define API_REPLY_MAX ((size_t)64 << 10)

static void kick(struct pirec_eyetracker *et);

static struct api_req *head(struct pirec_eyetracker *et)
{
  return et->api_n ? &et->api_q[et->api_head] : NULL;
}

static void pop(struct pirec_eyetracker *et)
{
  struct api_req *q = head(et);
  free(q->body);
  memset(q, 0, sizeof *q);
  et->api_head = (et->api_head + 1) % PIREC_EYETRACKER_API_QUEUE;
  et->api_n--;
}

/* The request at the head is done: answered (code 200), refused, or failed (failure set). */
static void settle(struct pirec_eyetracker *et, int code, const char *body, size_t len, const char *failure)
{
  struct api_req *q = head(et);
  json_t *root = body ? json_loadb(body, len, 0, NULL) : NULL;
  const char *message = json_string_value(json_object_get(root, "message"));
  char why[256];
  int err = 0;
  if (failure)
    err = -EIO, snprintf(why, sizeof why, "%s", failure);
  else if (code != 200)
    err = -EPERM, snprintf(why, sizeof why, "HTTP %d: %s", code, message ? message : "(no message)");
  else
    snprintf(why, sizeof why, "%s",
             json_string_value(json_object_get(json_object_get(root, "result"), "id")) ?: "");
  json_decref(root);
  q->attempts++;
  if (err < 0 && q->is_event && q->attempts < q->max_attempts) {
    et->events_retried++;
    q->not_before = pirec_clock_mono_ns() + (NS_S / 2 << (q->attempts - 1));
    return;
  }
  if (q->is_event) {
    if (err < 0) {
      et->events_failed++;
      pirec__et_emit(et, PIREC_EYETRACKER_EVENT_ERROR,
                     "%s: event to 'http://%s:%d%s' not delivered after %d tries: %s", et->s.name, et->s.host,
                     et->s.http_port, q->path, q->attempts, why);
    } else
      et->events_sent++;
  }
  pirec_eyetracker_recording_cb cb = q->cb;
  void *user = q->user;
  pop(et);
  if (cb)
    cb(et, err, why, user);
}

static void closed(uv_handle_t *h)
{
  struct pirec_eyetracker *et = container_of((uv_tcp_t *)h, struct pirec_eyetracker, api_tcp);
  et->pending--;
  et->api_busy = 0;
  if (!et->closing) {
    uint8_t *body = NULL;
    size_t len = 0;
    int code = 0;
    const char *failure = et->api_failure[0] ? et->api_failure : NULL;
    if (!failure) {
      code = pirec_http_reply(pirec_bytebuf_data(&et->api_in) ? (uint8_t *)pirec_bytebuf_data(&et->api_in)
                                                              : (uint8_t *)"",
                              pirec_bytebuf_len(&et->api_in), &body, &len);
      if (code < 0)
        failure = code == -ENODATA ? "the answer was cut off" : "not an HTTP answer";
    }
    settle(et, code, (const char *)body, len, failure);
  }
  pirec_bytebuf_reset(&et->api_in);
  if (et->closing)
    pirec__et_maybe_closed(et);
  else
    kick(et);
}

static void finish(struct pirec_eyetracker *et, const char *failure)
{
  if (uv_is_closing((uv_handle_t *)&et->api_tcp))
    return;
  uv_timer_stop(&et->api_timer);
  if (failure && !et->api_failure[0])
    snprintf(et->api_failure, sizeof et->api_failure, "%s", failure);
  uv_close((uv_handle_t *)&et->api_tcp, closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct pirec_eyetracker *et = container_of((uv_tcp_t *)h, struct pirec_eyetracker, api_tcp);
  size_t avail = 0;
  uint8_t *p = pirec_bytebuf_space(&et->api_in, 4096, &avail);
  *buf = uv_buf_init((char *)p, p ? (unsigned)avail : 0);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct pirec_eyetracker *et = container_of((uv_tcp_t *)s, struct pirec_eyetracker, api_tcp);
  if (n == UV_EOF)
    finish(et, NULL);
  else if (n == UV_ENOBUFS)
    finish(et, "answer larger than 64 KiB");
  else if (n < 0)
    finish(et, uv_strerror((int)n));
  else
    pirec_bytebuf_fill(&et->api_in, (size_t)n);
}

static void on_connected(uv_connect_t *req, int status)
{
  struct pirec_eyetracker *et = container_of(req, struct pirec_eyetracker, api_connect);
  if (status < 0) {
    finish(et, uv_strerror(status));
    return;
  }
  struct api_req *q = head(et);
  size_t blen = strlen(q->body);
  char *msg = malloc(blen + 512);
  if (!msg) {
    finish(et, "out of memory");
    return;
  }
  int n = snprintf(msg, 512,
                   "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
                   q->path, et->s.host, et->s.http_port, blen);
  memcpy(msg + n, q->body, blen);
  int r = pirec__et_write((uv_stream_t *)&et->api_tcp, msg, (size_t)n + blen);
  free(msg);
  if (r == 0)
    r = uv_read_start((uv_stream_t *)&et->api_tcp, on_alloc, on_read);
  if (r < 0)
    finish(et, uv_strerror(r));
}

static void on_timer(uv_timer_t *t)
{
  struct pirec_eyetracker *et = container_of(t, struct pirec_eyetracker, api_timer);
  if (et->api_busy)
    finish(et, "no answer in time");
  else
    kick(et);
}

/* Sends the head request unless one is in flight or it waits out a retry delay. */
static void kick(struct pirec_eyetracker *et)
{
  struct api_req *q = head(et);
  if (et->api_busy || !q || et->closing)
    return;
  int64_t wait = q->not_before - pirec_clock_mono_ns();
  if (wait > 0) {
    uv_timer_start(&et->api_timer, on_timer, (uint64_t)(wait / NS_MS) + 1, 0);
    return;
  }
  struct sockaddr_storage ss;
  et->api_failure[0] = 0;
  uv_tcp_init(et->loop, &et->api_tcp);
  et->pending++;
  et->api_busy = 1;
  uv_timer_start(&et->api_timer, on_timer, (uint64_t)(et->s.api_timeout_ns / NS_MS), 0);
  int r = pirec__et_make_addr(et->s.host, et->s.http_port, &ss);
  if (r == 0)
    r = uv_tcp_connect(&et->api_connect, &et->api_tcp, (struct sockaddr *)&ss, on_connected);
  if (r < 0)
    finish(et, r == -EINVAL ? "the device's address is not known yet" : uv_strerror(r));
}

/* Appends a request; takes body. 0 or -ENOBUFS (body freed). */
static int enqueue(struct pirec_eyetracker *et, const char *path, char *body, int is_event,
                   pirec_eyetracker_recording_cb cb, void *user)
{
  if (et->api_n == PIREC_EYETRACKER_API_QUEUE || et->closing || !body) {
    free(body);
    return et->closing ? -ECANCELED : body ? -ENOBUFS : -ENOMEM;
  }
  struct api_req *q = &et->api_q[(et->api_head + et->api_n) % PIREC_EYETRACKER_API_QUEUE];
  memset(q, 0, sizeof *q);
  snprintf(q->path, sizeof q->path, "%s", path);
  q->body = body;
  q->is_event = is_event;
  q->max_attempts = is_event ? et->s.event_attempts : 1;
  q->cb = cb;
  q->user = user;
  et->api_n++;
  kick(et);
  return 0;
}

/* The byte count of name's first max bytes, not splitting a UTF-8 sequence. */
static size_t utf8_cut(const char *name, size_t max)
{
  size_t n = strlen(name);
  if (n <= max)
    return n;
  while (max > 0 && ((unsigned char)name[max] & 0xC0) == 0x80)
    max--;
  return max;
}

int pirec_eyetracker_send_event(struct pirec_eyetracker *et, const char *name, int64_t wall_ns)
{
  const char *method;
  int64_t ts = wall_ns + pirec_eyetracker_device_offset(et, &method);
  json_t *o = json_pack("{s:s%,s:I}", "name", name, utf8_cut(name, PIREC_EYETRACKER_EVENT_MAX), "timestamp",
                        (json_int_t)ts);
  char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  int r = enqueue(et, "/api/event", body, 1, NULL, NULL);
  if (r == -ENOBUFS)
    et->events_dropped++;
  return r;
}

int pirec_eyetracker_recording_cmd(struct pirec_eyetracker *et, enum pirec_eyetracker_recording_cmd cmd,
                                   pirec_eyetracker_recording_cb cb, void *user)
{
  const char *path = cmd == PIREC_EYETRACKER_REC_START           ? "/api/recording:start"
                     : cmd == PIREC_EYETRACKER_REC_STOP_AND_SAVE ? "/api/recording:stop_and_save"
                                                                 : "/api/recording:cancel";
  return enqueue(et, path, strdup("{}"), 0, cb, user);
}

int64_t pirec_eyetracker_device_offset(const struct pirec_eyetracker *et, const char **method)
{
  if (et->echo_estimates) {
    *method = "time_echo";
    return et->echo_offset_ns;
  }
  if (et->streams[GAZE].st.offset_ns != INT64_MIN) {
    *method = "rtcp";
    return et->streams[GAZE].st.offset_ns;
  }
  *method = "none";
  return 0;
}

void pirec__et_api_init(struct pirec_eyetracker *et)
{
  uv_timer_init(et->loop, &et->api_timer);
  pirec_bytebuf_init(&et->api_in, 0, API_REPLY_MAX);
}

static void timer_closed(uv_handle_t *h)
{
  struct pirec_eyetracker *et = container_of((uv_timer_t *)h, struct pirec_eyetracker, api_timer);
  pirec_bytebuf_free(&et->api_in);
  et->pending--;
  pirec__et_maybe_closed(et);
}

void pirec__et_api_close(struct pirec_eyetracker *et)
{
  et->pending++;
  uv_close((uv_handle_t *)&et->api_timer, timer_closed);
  if (et->api_busy && !uv_is_closing((uv_handle_t *)&et->api_tcp))
    uv_close((uv_handle_t *)&et->api_tcp, closed);
  while (et->api_n) {
    struct api_req *q = head(et);
    pirec_eyetracker_recording_cb cb = q->cb;
    void *user = q->user;
    if (q->is_event)
      et->events_failed++;
    pop(et);
    if (cb)
      cb(et, -ECANCELED, "the eye tracker client is closing", user);
  }
}
