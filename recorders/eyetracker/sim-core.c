/* The simulator's base: its clock and random numbers, client connections and their queued
 * writes, and the count of pending closes that ends pirec_eyesim_close. */

#include "sim-int.h"

#include "rtp.h"
#include "rtsp.h"
#include "pirec/container_of.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

uint32_t pirec__sim_rnd(struct pirec_eyesim *sim)
{
  uint32_t x = sim->rng;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  return sim->rng = x;
}

double pirec__sim_rnd01(struct pirec_eyesim *sim)
{
  return pirec__sim_rnd(sim) / 4294967296.0;
}

int64_t pirec__sim_ticks_at(const struct pirec_eyesim *sim, int64_t mono)
{
  __int128 el = (__int128)(mono - sim->mono0) * (1000000 + sim->s.drift_ppm);
  return (int64_t)(el * RATE / ((__int128)1000000 * 1000000000));
}

int64_t pirec__sim_device_ns(const struct pirec_eyesim *sim, int64_t ticks)
{
  return sim->dev0 + pirec_rtp_ticks_to_ns(ticks, RATE);
}

/* Runs the close callback once every handle and sink has closed. */
static void finish(struct pirec_eyesim *sim)
{
  if (sim->close_cb)
    sim->close_cb(sim, sim->close_user);
  pirec_bytebuf_free(&sim->au);
  free(sim);
}

void pirec__sim_release(struct pirec_eyesim *sim)
{
  sim->pending--;
  if (sim->closing && sim->pending == 0)
    finish(sim);
}

void pirec__sim_handle_closed(uv_handle_t *h)
{
  pirec__sim_release(h->data);
}

struct wreq {
  uv_write_t req;
  struct sim_conn *conn;
  size_t len;
  uint8_t data[];
};

static void on_written(uv_write_t *req, int status)
{
  struct wreq *w = container_of(req, struct wreq, req);
  struct sim_conn *c = w->conn;
  c->queued -= w->len;
  free(w);
  if (c->close_after_write && c->queued == 0)
    pirec__sim_conn_close(c);
}

int pirec__sim_send(struct sim_conn *c, const void *pre, size_t pre_len, const void *data, size_t len)
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

int pirec__sim_send_interleaved(struct sim_conn *c, int channel, const uint8_t *pkt, size_t len)
{
  uint8_t h[4] = {'$', (uint8_t)channel, (uint8_t)(len >> 8), (uint8_t)len};
  return pirec__sim_send(c, h, 4, pkt, len);
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
  pirec__sim_release(sim);
}

void pirec__sim_conn_close(struct sim_conn *c)
{
  if (c->closing)
    return;
  c->closing = 1;
  c->playing = 0;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

int pirec__sim_any_playing(const struct pirec_eyesim *sim, enum cam cam)
{
  for (struct sim_conn *c = sim->conns; c; c = c->next)
    if (c->playing && !c->closing && c->cam == cam)
      return 1;
  return 0;
}

const char *pirec__sim_blocked(const struct pirec_eyesim *sim, enum cam cam)
{
  if (sim->down)
    return "down";
  return pirec__sim_any_playing(sim, cam) ? NULL : "idle";
}

void pirec__sim_broadcast(struct pirec_eyesim *sim, enum cam cam, const uint8_t *pkt, size_t len)
{
  for (struct sim_conn *c = sim->conns; c; c = c->next)
    if (c->playing && !c->closing && c->cam == cam)
      pirec__sim_send_interleaved(c, c->rtp_ch, pkt, len);
}
