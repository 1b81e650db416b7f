/* The simulated world camera: an ffmpeg child encodes a lavfi test source to H.264, whose access
 * units are stamped on the frame grid and sent as RTP (RFC 6184). */

#include "sim-int.h"

#include "h264.h"
#include "rtp.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"
#include "pirec/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>

struct pay_ctx {
  struct pirec_eyesim *sim;
  uint32_t ts;
  size_t annexb; /* the unit's size with every start code 4 bytes long, as a receiver rebuilds it */
};

static int emit_world(const uint8_t *payload, size_t len, int last, void *user)
{
  struct pay_ctx *p = user;
  struct pirec_eyesim *sim = p->sim;
  uint8_t pkt[12 + MTU];
  size_t h = pirec_rtp_write_header(pkt, last, 96, sim->world_seq++, p->ts, sim->world_ssrc);
  memcpy(pkt + h, payload, len);
  int fu = (payload[0] & 0x1F) == 28;
  p->annexb += !fu ? 4 + len : (payload[1] & 0x80) ? 4 + 1 + len - 2 : len - 2;
  pirec__sim_broadcast(sim, CAM_WORLD, pkt, h + len);
  return 0;
}

static void world_frame(struct pirec_eyesim *sim, const uint8_t *au, size_t len)
{
  /* Capture times on the frame grid, as a camera stamps them (ffmpeg -re paces the frames). */
  int64_t ticks = sim->ff_base_ticks + (int64_t)(sim->ff_frames++ * RATE / (uint64_t)sim->s.world_fps);
  uint32_t ts = sim->world_ts0 + (uint32_t)ticks;
  struct pay_ctx p = {sim, ts, 0};
  sim->c.frames_generated++;
  const char *fate = pirec__sim_blocked(sim, CAM_WORLD);
  if (!fate && pirec_h264_pay(au, len, MTU, emit_world, &p) < 0) {
    fate = "unpayable";
  } else if (!fate) {
    fate = "sent";
    sim->c.frames_sent++;
  }
  pirec__sim_log_row(sim->world_log, "%llu,%u,%lld,%zu,%s\n",
                     (unsigned long long)(sim->c.frames_generated - 1), ts,
                     (long long)pirec__sim_device_ns(sim, ticks), p.annexb ? p.annexb : len, fate);
}

/* The position of the next access unit delimiter (00 00 01 09, x264's aud=1) at or after from. */
static size_t find_aud(const uint8_t *b, size_t from, size_t end)
{
  for (size_t i = from; i + 4 <= end; i++)
    if (b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1 && (b[i + 3] & 0x1F) == 9)
      return i > 0 && b[i - 1] == 0 ? i - 1 : i;
  return SIZE_MAX;
}

static void ff_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct pirec_eyesim *sim = container_of((uv_pipe_t *)h, struct pirec_eyesim, ff_out);
  size_t avail;
  uint8_t *p = pirec_bytebuf_space(&sim->au, 65536, &avail);
  *buf = uv_buf_init((char *)p, (unsigned)avail); /* NULL, 0 out of memory: the read fails with ENOBUFS */
}

static void ff_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct pirec_eyesim *sim = container_of((uv_pipe_t *)s, struct pirec_eyesim, ff_out);
  if (n < 0) {
    uv_read_stop(s);
    if (sim->ff_pipe_open) {
      sim->ff_pipe_open = 0;
      uv_close((uv_handle_t *)s, pirec__sim_handle_closed);
    }
    return;
  }
  size_t old = pirec_bytebuf_len(&sim->au);
  pirec_bytebuf_fill(&sim->au, (size_t)n);
  const uint8_t *d = pirec_bytebuf_data(&sim->au);
  size_t len = pirec_bytebuf_len(&sim->au);
  /* Every complete access unit runs from one delimiter to the next. */
  size_t start = find_aud(d, 0, len);
  if (start == SIZE_MAX)
    return;
  size_t from = old > start + 4 ? old - 3 : start + 4;
  for (;;) {
    size_t next = find_aud(d, from, len);
    if (next == SIZE_MAX)
      break;
    world_frame(sim, d + start, next - start);
    start = next;
    from = next + 5;
  }
  pirec_bytebuf_consume(&sim->au, start);
}

static void ff_restart(uv_timer_t *t)
{
  struct pirec_eyesim *sim = container_of(t, struct pirec_eyesim, ff_restart);
  if (!sim->closing && pirec__sim_ff_spawn(sim) < 0)
    uv_timer_start(&sim->ff_restart, ff_restart, 1000, 0);
}

static void ff_exit(uv_process_t *p, int64_t status, int sig)
{
  struct pirec_eyesim *sim = container_of(p, struct pirec_eyesim, ff);
  sim->ff_running = 0;
  if (!sim->closing) {
    pirec_log(PIREC_LOG_WARN, "eyesim: encoder '%s' exited (status %lld, signal %d); restarting in 1 s",
              sim->s.ffmpeg, (long long)status, sig);
    uv_timer_start(&sim->ff_restart, ff_restart, 1000, 0);
  }
  uv_close((uv_handle_t *)p, pirec__sim_handle_closed);
}

int pirec__sim_ff_spawn(struct pirec_eyesim *sim)
{
  char src[128], gop[16];
  snprintf(src, sizeof src, "testsrc2=size=%dx%d:rate=%d", sim->s.width, sim->s.height, sim->s.world_fps);
  snprintf(gop, sizeof gop, "%d", sim->s.world_fps);
  char *args[] = {sim->s.ffmpeg,
                  "-hide_banner",
                  "-loglevel",
                  "error",
                  "-nostdin",
                  "-re",
                  "-f",
                  "lavfi",
                  "-i",
                  src,
                  "-c:v",
                  "libx264",
                  "-preset",
                  "ultrafast",
                  "-tune",
                  "zerolatency",
                  "-g",
                  gop,
                  "-bf",
                  "0",
                  "-pix_fmt",
                  "yuv420p",
                  "-x264-params",
                  "aud=1:repeat-headers=1",
                  "-flush_packets",
                  "1",
                  "-f",
                  "h264",
                  "pipe:1",
                  NULL};
  uv_stdio_container_t stdio[3];
  uv_pipe_init(sim->loop, &sim->ff_out, 0);
  sim->ff_out.data = sim;
  sim->ff_pipe_open = 1;
  sim->pending++;
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
  stdio[1].data.stream = (uv_stream_t *)&sim->ff_out;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t o = {0};
  o.file = sim->s.ffmpeg;
  o.args = args;
  o.exit_cb = ff_exit;
  o.stdio = stdio;
  o.stdio_count = 3;
  sim->ff.data = sim;
  int r = uv_spawn(sim->loop, &sim->ff, &o);
  if (r < 0) {
    pirec_log(PIREC_LOG_ERROR, "eyesim: cannot start '%s': %s", sim->s.ffmpeg, uv_strerror(r));
    sim->ff_pipe_open = 0;
    uv_close((uv_handle_t *)&sim->ff_out, pirec__sim_handle_closed);
    /* uv_spawn failing still leaves the process handle to close */
    sim->pending++;
    uv_close((uv_handle_t *)&sim->ff, pirec__sim_handle_closed);
    return r;
  }
  sim->pending++; /* the process handle */
  sim->ff_running = 1;
  pirec_bytebuf_reset(&sim->au);
  sim->ff_base_ticks = pirec__sim_ticks_at(sim, pirec_clock_mono_ns());
  sim->ff_frames = 0;
  uv_read_start((uv_stream_t *)&sim->ff_out, ff_alloc, ff_read);
  return 0;
}
