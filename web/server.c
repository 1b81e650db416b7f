/* pirec-web's libwebsockets context on the caller's libuv loop, and its lifecycle (pirec/web.h). */
#include <arpa/inet.h>
#include <sodium.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pirec/log.h"
#include "web-int.h"

/* Connections libwebsockets takes at once: the WebSocket clients and as many HTTP requests; more
 * wait in the listen backlog. */
#define HTTP_CONNS 64

void pirec_web_settings_default(struct pirec_web_settings *s)
{
  memset(s, 0, sizeof *s);
  s->listen = "127.0.0.1";
  s->port = 8380;
  s->max_clients = 32;
  s->max_body = 64 * 1024;
}

static const struct lws_protocols protocols[] = {
    {"http", pirec__web_http_cb, sizeof(struct http_conn), 0, 0, NULL, 0},
    {"pirec", pirec__web_ws_cb, sizeof(struct ws_conn), 4096, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static int loopback(const char *addr)
{
  return strcmp(addr, "127.0.0.1") == 0 || strcmp(addr, "::1") == 0 || strcmp(addr, "localhost") == 0;
}

static char *dup_or_null(const char *s)
{
  return s && *s ? strdup(s) : NULL;
}

static void free_settings(struct pirec_web_settings *s)
{
  free((char *)s->listen);
  free((char *)s->static_dir);
  free((char *)s->data_dir);
  free((char *)s->socket_path);
  free((char *)s->token);
  free((char *)s->password_hash);
  free((char *)s->tls_cert);
  free((char *)s->tls_key);
}

static void maybe_free(struct pirec_web *w)
{
  if (!w->closing || w->handles > 0 || w->ctx)
    return;
  free_settings(&w->s);
  pirec__web_push_free(w);
  free(w);
}

static void on_closed(uv_handle_t *h)
{
  struct pirec_web *w = h->data;
  w->handles--;
  maybe_free(w);
}

static void on_ctl_state(int connected, void *user)
{
  struct pirec_web *w = user;
  if (w->clients)
    pirec__web_push_controller(w, connected);
}

/* libwebsockets' log lines go through pirec's log (the library itself never prints). */
static void lws_log_line(int level, const char *line)
{
  int n = (int)strcspn(line, "\n");
  pirec_log(level & LLL_ERR ? PIREC_LOG_ERROR : PIREC_LOG_WARN, "libwebsockets: %.*s", n, line);
}

static int make_context(struct pirec_web *w)
{
  struct lws_context_creation_info info;
  void *loops[1] = {w->loop};
  memset(&info, 0, sizeof info);
  info.port = w->s.port;
  info.iface = w->s.listen;
  info.protocols = protocols;
  info.options = LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_VALIDATE_UTF8;
  if (strchr(w->s.listen, ':') == NULL)
    info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
  info.foreign_loops = loops;
  info.user = w;
  info.pcontext = &w->ctx;
  info.fd_limit_per_thread = (unsigned)(w->s.max_clients + HTTP_CONNS + 16);
  info.max_http_header_data = 4096;
  info.timeout_secs = 30;
  info.ka_time = 0;
  if (w->s.tls_cert) {
    info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
    info.ssl_cert_filepath = w->s.tls_cert;
    info.ssl_private_key_filepath = w->s.tls_key;
    /* HTTP/1.1 only: over HTTP/2 (which browsers and curl pick by ALPN when offered) libwebsockets
     * 4.1 does not hand custom headers to the guard, so every POST's X-Pirec would be missing
     * (found by tests/web/test_api.py's curl over TLS); WebSocket is HTTP/1.1's upgrade as well. */
    info.alpn = "http/1.1";
  }
  lws_set_log_level(w->s.quiet ? LLL_ERR : LLL_ERR | LLL_WARN, lws_log_line);
  w->ctx = lws_create_context(&info);
  if (!w->ctx)
    return -EIO; /* the port is taken, or the libuv plugin is missing: lws's log said which */
  struct lws_vhost *vh = lws_get_vhost_by_name(w->ctx, "default");
  w->port = vh ? lws_get_vhost_listen_port(vh) : w->s.port;
  return 0;
}

int pirec_web_new(uv_loop_t *loop, const struct pirec_web_settings *s, struct pirec_web **out)
{
  if ((!s->token || !*s->token) && !loopback(s->listen))
    return -EINVAL; /* the LAN without a token: anyone on it could stop a recording */
  if ((s->tls_cert && *s->tls_cert) != (s->tls_key && *s->tls_key))
    return -EINVAL;
  if (s->password_hash && *s->password_hash && !pirec__web_password_hash_ok(s->password_hash))
    return -EINVAL;
  if (sodium_init() < 0)
    return -ENOMEM; /* its random numbers make the login sessions */
  struct pirec_web *w = calloc(1, sizeof *w);
  if (!w)
    return -ENOMEM;
  w->loop = loop;
  w->s = *s;
  w->s.listen = strdup(s->listen);
  w->s.static_dir = strdup(s->static_dir);
  w->s.data_dir = strdup(s->data_dir);
  w->s.socket_path = strdup(s->socket_path);
  w->s.token = dup_or_null(s->token);
  w->s.password_hash = dup_or_null(s->password_hash);
  w->s.tls_cert = dup_or_null(s->tls_cert);
  w->s.tls_key = dup_or_null(s->tls_key);
  int err = 0;
  if (!w->s.listen || !w->s.static_dir || !w->s.data_dir || !w->s.socket_path)
    err = -ENOMEM;
  if (!err)
    err = make_context(w);
  if (!err)
    err = pirec_webctl_new(loop, w->s.socket_path, on_ctl_state, w, &w->ctl);
  if (err) {
    w->closing = 1;
    if (w->ctx) {
      lws_context_destroy(w->ctx);
      uv_run(loop, UV_RUN_NOWAIT); /* lets its handles close; then the last stage */
      lws_context_destroy(w->ctx);
      w->ctx = NULL;
    }
    maybe_free(w);
    return err;
  }
  uv_timer_init(loop, &w->poll);
  uv_timer_init(loop, &w->preview_timer);
  w->poll.data = w->preview_timer.data = w;
  w->handles = 2;
  *out = w;
  return 0;
}

int pirec_web_port(const struct pirec_web *w)
{
  return w->port;
}

void pirec_web_close(struct pirec_web *w)
{
  if (!w || w->closing)
    return;
  w->closing = 1;
  pirec_webctl_close(w->ctl);
  w->ctl = NULL;
  w->clients = NULL;
  /* With a foreign loop this starts the close of every connection and libwebsockets handle; the
   * loop runs until they are closed, then pirec_web_free finishes the context (libwebsockets 4.1,
   * lib/core/context.c: lws_context_destroy's three stages). */
  lws_context_destroy(w->ctx);
  uv_close((uv_handle_t *)&w->poll, on_closed);
  uv_close((uv_handle_t *)&w->preview_timer, on_closed);
}

void pirec_web_free(struct pirec_web *w)
{
  if (!w)
    return;
  pirec_web_close(w);
  if (w->ctx)
    lws_context_destroy(w->ctx); /* the last stage: frees the context, clears w->ctx */
  w->ctx = NULL;
  maybe_free(w);
}
