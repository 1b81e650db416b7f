/* The simulated device's control API: POST /api/event and /api/recording:start|stop_and_save|
 * cancel, and the Time Echo server. The wire formats are those of Pupil Labs' realtime API client
 * (pupil-labs/realtime-python-api: device.py for the requests and the {"message","result"}
 * envelope, time_echo.py for the echo: 8 bytes of client ms in, the same 8 plus 8 bytes of device
 * ms out, all uint64 big-endian). Every request is logged to api_log for tests to compare. */

#include "sim-int.h"

#include "be.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"
#include "pirec/csv.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int64_t pirec__sim_device_now(const struct pirec_eyesim *sim, int64_t mono)
{
  return pirec__sim_device_ns(sim, pirec__sim_ticks_at(sim, mono));
}

/* One row of the API log: rx_mono_ns,rx_device_ns,path,name,timestamp_ns,code. */
static void log_request(struct pirec_eyesim *sim, int64_t mono, const char *path, const char *name,
                        const json_t *ts, int code)
{
  if (!sim->api_log)
    return;
  char b[1024];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, b, sizeof b);
  pirec_csv_row_i64(&row, mono);
  pirec_csv_row_i64(&row, pirec__sim_device_now(sim, mono));
  pirec_csv_row_str(&row, path);
  if (name)
    pirec_csv_row_str(&row, name);
  else
    pirec_csv_row_empty(&row);
  if (json_is_integer(ts))
    pirec_csv_row_i64(&row, (int64_t)json_integer_value(ts));
  else
    pirec_csv_row_empty(&row);
  pirec_csv_row_i64(&row, code);
  if (pirec_csv_row_end(&row) >= 0)
    (void)pirec_csv_push(sim->api_log, &row);
}

/* POST /api/event {"name", "timestamp"?}: the device stamps it on arrival when there is none. */
static int on_event(struct pirec_eyesim *sim, int64_t mono, const char *body, size_t len, json_t **result)
{
  json_t *req = json_loadb(body, len, 0, NULL);
  const char *name = json_string_value(json_object_get(req, "name"));
  json_t *ts = json_object_get(req, "timestamp");
  int code = 200;
  if (!name || (ts && !json_is_integer(ts)))
    code = 400;
  else if (sim->events_to_fail > 0) {
    sim->events_to_fail--;
    code = 503;
  }
  log_request(sim, mono, "/api/event", name, ts, code);
  if (code == 200) {
    sim->c.api_events++;
    *result = json_pack("{s:s,s:s?,s:I}", "name", name, "recording_id",
                        sim->recording_id[0] ? sim->recording_id : NULL, "timestamp",
                        ts ? json_integer_value(ts) : (json_int_t)pirec__sim_device_now(sim, mono));
  }
  json_decref(req);
  return code;
}

/* The recording endpoints; *message says why a request failed. */
static int on_recording(struct pirec_eyesim *sim, int64_t mono, const char *what, json_t **result,
                        const char **message)
{
  int code = 200;
  if (strcmp(what, "start") == 0) {
    if (sim->s.refuse_recording[0])
      code = 400, *message = sim->s.refuse_recording;
    else if (sim->recording_id[0])
      code = 400, *message = "Recording already running";
    else {
      snprintf(sim->recording_id, sizeof sim->recording_id, "00000000-0000-4000-8000-%012llx",
               (unsigned long long)++sim->c.recordings_started);
      *result = json_pack("{s:s}", "id", sim->recording_id);
    }
  } else if (!sim->recording_id[0]) {
    code = 400, *message = "Recording not running";
  } else {
    if (strcmp(what, "stop_and_save") == 0)
      sim->c.recordings_saved++;
    else
      sim->c.recordings_cancelled++;
    sim->recording_id[0] = 0;
  }
  char path[64];
  snprintf(path, sizeof path, "/api/recording:%s", what);
  log_request(sim, mono, path,
              code == 200 && *result ? json_string_value(json_object_get(*result, "id")) : NULL, NULL, code);
  return code;
}

int pirec__sim_api_post(struct pirec_eyesim *sim, const char *path, size_t path_len, const char *body,
                        size_t len, char *out, size_t cap)
{
  int64_t mono = pirec_clock_mono_ns();
  json_t *result = NULL;
  const char *message = NULL;
  int code;
  if (path_len == 10 && memcmp(path, "/api/event", 10) == 0)
    code = on_event(sim, mono, body, len, &result);
  else if (path_len > 15 && memcmp(path, "/api/recording:", 15) == 0) {
    char what[32];
    snprintf(what, sizeof what, "%.*s", (int)(path_len - 15), path + 15);
    if (strcmp(what, "start") != 0 && strcmp(what, "stop_and_save") != 0 && strcmp(what, "cancel") != 0)
      return -ENOENT;
    code = on_recording(sim, mono, what, &result, &message);
  } else
    return -ENOENT;
  json_t *reply = json_pack("{s:s,s:o?}", "message",
                            message       ? message
                            : code == 200 ? "Success"
                            : code == 503 ? "Busy"
                                          : "Bad request",
                            "result", result);
  char *text = json_dumps(reply, JSON_COMPACT);
  snprintf(out, cap, "%s", text ? text : "{}");
  free(text);
  json_decref(reply);
  return code;
}

/* ---- Time Echo: one uv_tcp per client, answering each 8-byte request at once ---- */

struct echo_conn {
  uv_tcp_t tcp;
  struct pirec_eyesim *sim;
  struct echo_conn *next;
  uint8_t in[8];
  size_t have;
  uint8_t rd[256];
};

struct echo_write {
  uv_write_t req;
  uint8_t data[16];
};

static void echo_closed(uv_handle_t *h)
{
  struct echo_conn *e = container_of((uv_tcp_t *)h, struct echo_conn, tcp);
  struct pirec_eyesim *sim = e->sim;
  for (struct echo_conn **pp = &sim->echo_conns; *pp; pp = &(*pp)->next)
    if (*pp == e) {
      *pp = e->next;
      break;
    }
  free(e);
  pirec__sim_release(sim);
}

static void echo_written(uv_write_t *req, int status)
{
  free(container_of(req, struct echo_write, req));
}

static void echo_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct echo_conn *e = container_of((uv_tcp_t *)h, struct echo_conn, tcp);
  *buf = uv_buf_init((char *)e->rd, sizeof e->rd);
}

static void echo_answer(struct echo_conn *e)
{
  struct pirec_eyesim *sim = e->sim;
  sim->c.echoes++;
  if (sim->s.echo_silent)
    return; /* fault mode: a peer that never answers */
  struct echo_write *w = malloc(sizeof *w);
  if (!w)
    return;
  memcpy(w->data, e->in, 8);
  int64_t dev_ms = pirec__sim_device_now(sim, pirec_clock_mono_ns()) / 1000000;
  pirec_be_write64(w->data + 8, (uint64_t)dev_ms);
  uv_buf_t b = uv_buf_init((char *)w->data, 16);
  if (uv_write(&w->req, (uv_stream_t *)&e->tcp, &b, 1, echo_written) < 0)
    free(w);
}

static void echo_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct echo_conn *e = container_of((uv_tcp_t *)s, struct echo_conn, tcp);
  if (n < 0 || e->sim->closing) {
    if (!uv_is_closing((uv_handle_t *)&e->tcp))
      uv_close((uv_handle_t *)&e->tcp, echo_closed);
    return;
  }
  for (ssize_t i = 0; i < n; i++) {
    e->in[e->have++] = e->rd[i];
    if (e->have == 8) {
      echo_answer(e);
      e->have = 0;
    }
  }
}

void pirec__sim_on_echo_connection(uv_stream_t *srv, int status)
{
  struct pirec_eyesim *sim = srv->data;
  if (status < 0 || sim->closing)
    return;
  struct echo_conn *e = calloc(1, sizeof *e);
  if (!e)
    return;
  e->sim = sim;
  uv_tcp_init(sim->loop, &e->tcp);
  sim->pending++;
  e->next = sim->echo_conns;
  sim->echo_conns = e;
  if (uv_accept(srv, (uv_stream_t *)&e->tcp) < 0 || sim->down) {
    uv_close((uv_handle_t *)&e->tcp, echo_closed);
    return;
  }
  uv_tcp_nodelay(&e->tcp, 1);
  uv_read_start((uv_stream_t *)&e->tcp, echo_alloc, echo_read);
}

void pirec__sim_close_echoes(struct pirec_eyesim *sim)
{
  for (struct echo_conn *e = sim->echo_conns; e; e = e->next)
    if (!uv_is_closing((uv_handle_t *)&e->tcp))
      uv_close((uv_handle_t *)&e->tcp, echo_closed);
}
