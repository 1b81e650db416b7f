/* RTP and RTCP over UDP, for servers that refuse to interleave them on the RTSP connection. */

#include "eyetracker-int.h"

#include "pirec/clock.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    pirec__et_rtcp_packet(st, p, (size_t)n);
  else
    pirec__et_data_packet(st, p, (size_t)n);
}

/* Binds two UDP sockets on consecutive ports (RTP even, RTCP odd) on the address family of the
 * RTSP connection. Returns the RTP port or a negative error. */
int pirec__et_open_udp(struct stream *st)
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

static void on_udp_closed(uv_handle_t *h)
{
  struct stream *st = h->data;
  st->et->pending--;
  pirec__et_maybe_closed(st->et);
}

void pirec__et_close_udp(struct stream *st)
{
  if (!st->udp_open)
    return;
  st->udp_open = 0;
  for (int i = 0; i < 2; i++)
    uv_close((uv_handle_t *)&st->udp[i], on_udp_closed);
}
