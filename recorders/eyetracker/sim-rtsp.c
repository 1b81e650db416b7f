/* The simulated device's servers: GET /api/status over HTTP, and RTSP sessions (OPTIONS,
 * DESCRIBE, SETUP, PLAY, TEARDOWN) whose RTP goes interleaved on the connection. */

#include "sim-int.h"

#include "http.h"
#include "rtsp.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
             "\"OK\",\"memory\":1000000000,\"memory_state\":\"OK\",\"time_echo_port\":%d}},"
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
             sim->s.host, sim->http_port, sim->echo_port, sim->s.host, sim->rtsp_port,
             sim->s.world ? "true" : "false", sim->s.host, sim->rtsp_port, sim->s.events ? "true" : "false",
             sim->s.host, sim->rtsp_port);
  } else if (it->len > 5 && memcmp(it->data, "POST ", 5) == 0) {
    const char *path = (const char *)it->data + 5, *end = memchr(path, ' ', it->len - 5);
    int code =
        end ? pirec__sim_api_post(sim, path, (size_t)(end - path), it->body, it->body_len, body, sizeof body)
            : -ENOENT;
    status = code == 200   ? "200 OK"
             : code == 400 ? "400 Bad Request"
             : code == 503 ? "503 Service Unavailable"
                           : "404 Not Found";
    if (code < 0)
      snprintf(body, sizeof body, "{\"message\":\"not found\"}");
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
    pirec__sim_send(c, head, (size_t)n, coded, used);
  } else {
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n",
                     status, strlen(body));
    pirec__sim_send(c, head, (size_t)n, body, strlen(body));
  }
  c->close_after_write = 1;
}

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
  pirec__sim_send(c, head, (size_t)n, body, blen);
}

/* One RTSP request as the handlers see it. */
struct request {
  struct sim_conn *c;
  const struct pirec_rtsp_item *it;
  const char *cseq;
  size_t cseq_len;
  const char *url;
  size_t url_len;
};

static void answer(const struct request *q, const char *status, const char *extra, const char *body)
{
  reply(q->c, status, q->cseq, q->cseq_len, extra, body);
}

static void on_options(const struct request *q)
{
  answer(q, "200 OK", "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n", NULL);
}

static void on_describe(const struct request *q)
{
  struct sim_conn *c = q->c;
  struct pirec_eyesim *sim = c->sim;
  enum cam cam = cam_of(q->url, q->url_len);
  if (cam == CAM_NONE || (cam == CAM_WORLD && !sim->s.world) || (cam == CAM_EVENTS && !sim->s.events)) {
    answer(q, "404 Not Found", NULL, NULL);
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
  answer(q, "200 OK", NULL, sdp);
}

static void on_setup(const struct request *q)
{
  struct sim_conn *c = q->c;
  struct pirec_eyesim *sim = c->sim;
  const char *tr;
  size_t tl;
  if (c->cam == CAM_NONE)
    c->cam = cam_of(q->url, q->url_len);
  if (!pirec_http_header(q->it->data, q->it->len, "Transport", &tr, &tl) ||
      !memmem(tr, tl, "RTP/AVP/TCP", 11) || !memmem(tr, tl, "interleaved=", 12)) {
    answer(q, "461 Unsupported Transport", NULL, NULL);
    return;
  }
  if (c->cam == CAM_NONE) {
    answer(q, "404 Not Found", NULL, NULL);
    return;
  }
  const char *il = memmem(tr, tl, "interleaved=", 12) + 12;
  int a = 0, b = 1;
  if (sscanf(il, "%d-%d", &a, &b) < 1 || a < 0 || a > 254)
    a = 0, b = 1;
  c->rtp_ch = a;
  c->rtcp_ch = b;
  snprintf(c->session, sizeof c->session, "%08X", pirec__sim_rnd(sim));
  c->setup = 1;
  char extra[512];
  snprintf(extra, sizeof extra,
           "Transport: RTP/AVP/TCP;unicast;interleaved=%d-%d;ssrc=%08X\r\nSession: %s;timeout=60\r\n", a, b,
           c->cam == CAM_GAZE    ? sim->gaze_ssrc
           : c->cam == CAM_WORLD ? sim->world_ssrc
                                 : sim->events_ssrc,
           c->session);
  answer(q, "200 OK", extra, NULL);
}

static void on_play(const struct request *q)
{
  struct sim_conn *c = q->c;
  if (!c->setup) {
    answer(q, "455 Method Not Valid in This State", NULL, NULL);
    return;
  }
  char extra[512];
  snprintf(extra, sizeof extra, "Session: %s\r\n", c->session);
  answer(q, "200 OK", extra, NULL);
  c->playing = 1;
  c->next_sr_ns = pirec_clock_mono_ns() + c->sim->s.first_sr_ns;
  c->sim->c.sessions_played++;
}

static void on_parameter(const struct request *q)
{
  answer(q, "200 OK", NULL, NULL);
}

static void on_teardown(const struct request *q)
{
  answer(q, "200 OK", NULL, NULL);
  q->c->playing = 0;
  q->c->close_after_write = 1;
}

static const struct {
  const char *method;
  void (*handle)(const struct request *q);
} methods[] = {
    {"OPTIONS", on_options},   {"DESCRIBE", on_describe},       {"SETUP", on_setup},
    {"PLAY", on_play},         {"GET_PARAMETER", on_parameter}, {"SET_PARAMETER", on_parameter},
    {"TEARDOWN", on_teardown},
};

static void rtsp_request(struct sim_conn *c, const struct pirec_rtsp_item *it)
{
  struct request q = {c, it, "0", 1, NULL, 0};
  const char *m = (const char *)it->data;
  const char *sp = memchr(m, ' ', it->len);
  if (!pirec_http_header(it->data, it->len, "CSeq", &q.cseq, &q.cseq_len)) {
    q.cseq = "0";
    q.cseq_len = 1;
  }
  if (!sp) {
    answer(&q, "400 Bad Request", NULL, NULL);
    return;
  }
  size_t ml = (size_t)(sp - m);
  q.url = sp + 1;
  const char *ue = memchr(q.url, ' ', it->len - ml - 1);
  q.url_len = ue ? (size_t)(ue - q.url) : 0;
  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
    if (ml == strlen(methods[i].method) && memcmp(m, methods[i].method, ml) == 0) {
      methods[i].handle(&q);
      return;
    }
  answer(&q, "501 Not Implemented", NULL, NULL);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  *buf = pirec_rtsp_framer_read_buf(&container_of((uv_tcp_t *)h, struct sim_conn, tcp)->framer);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct sim_conn *c = container_of((uv_tcp_t *)s, struct sim_conn, tcp);
  if (n < 0) {
    pirec__sim_conn_close(c);
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

void pirec__sim_on_connection(uv_stream_t *srv, int status)
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
    pirec__sim_conn_close(c); /* the device is "gone": the connection is refused at once */
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}
