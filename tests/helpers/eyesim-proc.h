#ifndef PIREC_TEST_EYESIM_PROC_H
#define PIREC_TEST_EYESIM_PROC_H

/* A real pirec-eyesim process for the eye tracker tests ($PIREC_BUILD_DIR/apps/pirec-eyesim): its
 * ports read from the line it prints. Header-only (static functions) so each test binary gets its
 * own copy without another library; cmocka.h must be included first. */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct sim_proc {
  uv_process_t proc;
  uv_pipe_t out;
  char buf[512];
  size_t len;
  int http, rtsp, echo;
  int exited, handles;
  int64_t status;
  int term_sig;
};

static inline void sim_closed(uv_handle_t *h)
{
  struct sim_proc *s = h->data;
  s->handles--;
}

static inline void sim_exit(uv_process_t *p, int64_t status, int sig)
{
  struct sim_proc *s = p->data;
  s->exited = 1;
  s->status = status;
  s->term_sig = sig;
  uv_close((uv_handle_t *)p, sim_closed);
}

static inline void sim_alloc(uv_handle_t *h, size_t sz, uv_buf_t *b)
{
  struct sim_proc *s = h->data;
  *b = uv_buf_init(s->buf + s->len, (unsigned)(sizeof s->buf - 1 - s->len));
}

static inline void sim_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
  struct sim_proc *s = st->data;
  if (n < 0) {
    uv_close((uv_handle_t *)st, sim_closed);
    return;
  }
  s->len += (size_t)n;
  s->buf[s->len] = 0;
  const char *p = strstr(s->buf, "pirec-eyesim http=");
  if (p && strchr(p, '\n'))
    sscanf(p, "pirec-eyesim http=%d rtsp=%d echo=%d", &s->http, &s->rtsp, &s->echo);
  if (s->len >= sizeof s->buf - 1)
    s->len = 0;
}

/* Starts the simulator without waiting for its ports (callable from a loop callback). */
static inline void sim_start(uv_loop_t *loop, struct sim_proc *s, const char *const *extra)
{
  const char *bd = getenv("PIREC_BUILD_DIR");
  assert_non_null(bd);
  static char prog[1024];
  snprintf(prog, sizeof prog, "%s/apps/pirec-eyesim", bd);
  const char *args[48] = {prog};
  int n = 1;
  for (int i = 0; extra[i]; i++)
    args[n++] = extra[i];
  args[n] = NULL;
  memset(s, 0, sizeof *s);
  uv_pipe_init(loop, &s->out, 0);
  s->out.data = s;
  s->proc.data = s;
  uv_stdio_container_t stdio[3] = {
      {.flags = UV_IGNORE},
      {.flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE, .data.stream = (uv_stream_t *)&s->out},
      {.flags = UV_INHERIT_FD, .data.fd = 2}};
  uv_process_options_t o = {
      .file = prog, .args = (char **)args, .exit_cb = sim_exit, .stdio = stdio, .stdio_count = 3};
  s->handles = 2;
  int r = uv_spawn(loop, &s->proc, &o);
  if (r < 0)
    fail_msg("cannot start '%s': %s", prog, uv_strerror(r));
  uv_read_start((uv_stream_t *)&s->out, sim_alloc, sim_read);
}

static inline void sim_spawn(uv_loop_t *loop, struct sim_proc *s, const char *const *extra)
{
  sim_start(loop, s, extra);
  int64_t deadline = (int64_t)uv_hrtime() + 10 * 1000000000LL;
  while (!s->http && !s->exited && (int64_t)uv_hrtime() < deadline)
    uv_run(loop, UV_RUN_ONCE);
  if (!s->http)
    fail_msg("pirec-eyesim printed no ports");
}

#endif
