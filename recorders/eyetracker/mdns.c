/* mDNS discovery through the avahi daemon; see include/pirec/mdns.h.
 *
 * avahi's threaded poll runs the whole D-Bus conversation on its own thread, connecting to the daemon
 * and creating the browser included (both are blocking D-Bus calls, up to D-Bus's 25 s timeout with a
 * hung daemon), so the libuv loop never waits: the avahi thread stores the answer under a mutex and
 * wakes the loop with uv_async_send(); the timeout is a uv_timer on the loop. Without avahi at build time the same API
 * fails with -ENOTSUP and the message that tells the user what to configure. */
#include "pirec/mdns.h"
#include "pirec/container_of.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void put_err(char *err, size_t errlen, const char *fmt, ...)
{
  if (!err || errlen == 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

#ifndef PIREC_HAVE_AVAHI

int pirec_mdns_available(void)
{
  return 0;
}

int pirec_mdns_lookup_new(uv_loop_t *loop, const char *type, const char *prefix, int timeout_ms,
                          const char *config_key, pirec_mdns_cb cb, void *user, struct pirec_mdns **out,
                          char *err, size_t errlen)
{
  (void)loop, (void)timeout_ms, (void)cb, (void)user, (void)out;
  put_err(err, errlen,
          "mDNS discovery of %s \"%s...\" needs avahi's client library, which this build does not "
          "have (configure found no pkg-config avahi-client); set %s",
          type ? type : "?", prefix ? prefix : "", config_key ? config_key : "the address");
  return -ENOTSUP;
}

int pirec_mdns_probe(const char *config_key, char *err, size_t errlen)
{
  return pirec_mdns_lookup_new(NULL, PIREC_MDNS_NEON_TYPE, PIREC_MDNS_NEON_PREFIX, 1, config_key, NULL, NULL,
                               NULL, err, errlen);
}

void pirec_mdns_close(struct pirec_mdns *m, pirec_mdns_close_cb cb, void *user)
{
  if (!m)
    return;
  /* No handle can exist in this build; still honour the contract. */
  if (cb)
    cb(m, user);
}

#else

#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-common/error.h>
#include <avahi-common/simple-watch.h>
#include <avahi-common/thread-watch.h>
#include <pthread.h>

struct pirec_mdns {
  uv_loop_t *loop;
  uv_async_t async;
  uv_timer_t timer;
  pirec_mdns_cb cb;
  void *user;
  pirec_mdns_close_cb close_cb;
  void *close_user;
  int handles_open;
  int reported; /* loop thread only: the callback ran, or close was called */
  int timeout_ms;
  char type[64];
  char prefix[128];
  char key[128];

  AvahiThreadedPoll *poll;
  AvahiClient *client;
  AvahiServiceBrowser *browser;

  /* Written by the avahi thread, read by the loop, under mu. */
  pthread_mutex_t mu;
  int done;
  int status;
  struct pirec_mdns_result res;
  char err[512];
};

/* avahi thread. */
static void finish(struct pirec_mdns *m, int status, const struct pirec_mdns_result *r, const char *fmt, ...)
{
  pthread_mutex_lock(&m->mu);
  if (!m->done) {
    m->done = 1;
    m->status = status;
    if (r)
      m->res = *r;
    if (fmt) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(m->err, sizeof m->err, fmt, ap);
      va_end(ap);
    }
  }
  pthread_mutex_unlock(&m->mu);
  uv_async_send(&m->async);
}

static void on_resolved(AvahiServiceResolver *r, AvahiIfIndex iface, AvahiProtocol proto,
                        AvahiResolverEvent ev, const char *name, const char *type, const char *domain,
                        const char *host_name, const AvahiAddress *a, uint16_t port, AvahiStringList *txt,
                        AvahiLookupResultFlags flags, void *user)
{
  (void)iface, (void)proto, (void)type, (void)domain, (void)host_name, (void)txt, (void)flags;
  struct pirec_mdns *m = user;
  if (ev == AVAHI_RESOLVER_FOUND && a && a->proto == AVAHI_PROTO_INET) {
    struct pirec_mdns_result res;
    memset(&res, 0, sizeof res);
    avahi_address_snprint(res.host, sizeof res.host, a);
    res.port = port;
    snprintf(res.name, sizeof res.name, "%s", name);
    finish(m, 0, &res, NULL);
  }
  /* A failed resolve (the service vanished) is not fatal: another instance may still answer
   * before the timeout. */
  avahi_service_resolver_free(r);
}

static void on_browse(AvahiServiceBrowser *b, AvahiIfIndex iface, AvahiProtocol proto, AvahiBrowserEvent ev,
                      const char *name, const char *type, const char *domain, AvahiLookupResultFlags flags,
                      void *user)
{
  (void)flags;
  struct pirec_mdns *m = user;
  if (ev == AVAHI_BROWSER_FAILURE) {
    int e = avahi_client_errno(avahi_service_browser_get_client(b));
    finish(m, -EIO, NULL, "mDNS browse for %s failed: %s; set %s", m->type, avahi_strerror(e), m->key);
    return;
  }
  if (ev != AVAHI_BROWSER_NEW || !name || strncmp(name, m->prefix, strlen(m->prefix)) != 0)
    return;
  if (!avahi_service_resolver_new(m->client, iface, proto, name, type, domain, AVAHI_PROTO_INET, 0,
                                  on_resolved, m)) {
    int e = avahi_client_errno(m->client);
    finish(m, -EIO, NULL, "mDNS resolve of \"%s\" failed: %s; set %s", name, avahi_strerror(e), m->key);
  }
}

static void on_client(AvahiClient *c, AvahiClientState state, void *user)
{
  struct pirec_mdns *m = user;
  if (state == AVAHI_CLIENT_FAILURE)
    finish(m, -ENOTSUP, NULL,
           "mDNS discovery lost the avahi daemon (%s); start it (systemctl start avahi-daemon) "
           "or set %s",
           avahi_strerror(avahi_client_errno(c)), m->key);
}

/* avahi thread, first thing after it starts: connects to the daemon and starts browsing. Without
 * AVAHI_CLIENT_NO_FAIL the connect fails at once when the daemon is not running, which is exactly
 * the case the user must be told about. */
static void connect_and_browse(AvahiTimeout *t, void *user)
{
  (void)t;
  struct pirec_mdns *m = user;
  int aerr = 0;
  m->client = avahi_client_new(avahi_threaded_poll_get(m->poll), 0, on_client, m, &aerr);
  if (!m->client) {
    finish(m, aerr == AVAHI_ERR_NO_DAEMON ? -ENOTSUP : -EIO, NULL,
           "mDNS discovery of %s \"%s...\" needs the avahi daemon, which %s (avahi: %s); start it "
           "(systemctl start avahi-daemon) or set %s",
           m->type, m->prefix, aerr == AVAHI_ERR_NO_DAEMON ? "is not running" : "failed",
           avahi_strerror(aerr), m->key);
    return;
  }
  m->browser =
      avahi_service_browser_new(m->client, AVAHI_IF_UNSPEC, AVAHI_PROTO_INET, m->type, NULL, 0, on_browse, m);
  if (!m->browser)
    finish(m, -EIO, NULL, "mDNS browse for %s failed: %s; set %s", m->type,
           avahi_strerror(avahi_client_errno(m->client)), m->key);
}

/* loop thread */
static void on_async(uv_async_t *h)
{
  struct pirec_mdns *m = container_of(h, struct pirec_mdns, async);
  pthread_mutex_lock(&m->mu);
  int done = m->done, status = m->status;
  struct pirec_mdns_result res = m->res;
  char err[sizeof m->err];
  memcpy(err, m->err, sizeof err);
  pthread_mutex_unlock(&m->mu);
  if (!done || m->reported)
    return;
  m->reported = 1;
  uv_timer_stop(&m->timer);
  m->cb(m, status, status == 0 ? &res : NULL, status == 0 ? NULL : err, m->user);
}

static void on_timeout(uv_timer_t *t)
{
  struct pirec_mdns *m = container_of(t, struct pirec_mdns, timer);
  if (m->reported)
    return;
  /* An answer that arrived just now still wins: the async callback has not run yet. */
  pthread_mutex_lock(&m->mu);
  int done = m->done;
  pthread_mutex_unlock(&m->mu);
  if (done) {
    on_async(&m->async);
    return;
  }
  m->reported = 1;
  char err[512];
  snprintf(err, sizeof err,
           "no mDNS answer for %s \"%s...\" within %d ms (is the device on this network and "
           "announcing?); set %s",
           m->type, m->prefix, m->timeout_ms, m->key);
  m->cb(m, -ETIMEDOUT, NULL, err, m->user);
}

static void on_handle_closed(uv_handle_t *h)
{
  struct pirec_mdns *m = h->data;
  if (--m->handles_open > 0)
    return;
  pthread_mutex_destroy(&m->mu);
  if (m->close_cb)
    m->close_cb(m, m->close_user);
  free(m);
}

/* Stops avahi's thread and frees its objects; the loop's handles stay. */
static void stop_avahi(struct pirec_mdns *m)
{
  if (m->poll)
    avahi_threaded_poll_stop(m->poll); /* joins; harmless when it never started */
  if (m->client)
    avahi_client_free(m->client); /* frees the browser and resolvers too */
  if (m->poll)
    avahi_threaded_poll_free(m->poll);
  m->client = NULL;
  m->browser = NULL;
  m->poll = NULL;
}

int pirec_mdns_available(void)
{
  return 1;
}

static void probe_client(AvahiClient *c, AvahiClientState state, void *user)
{
  (void)c, (void)state, (void)user;
}

int pirec_mdns_probe(const char *config_key, char *err, size_t errlen)
{
  AvahiSimplePoll *sp = avahi_simple_poll_new();
  if (!sp) {
    put_err(err, errlen, "mDNS discovery: out of memory");
    return -ENOMEM;
  }
  int aerr = 0;
  AvahiClient *c = avahi_client_new(avahi_simple_poll_get(sp), 0, probe_client, NULL, &aerr);
  if (c)
    avahi_client_free(c);
  avahi_simple_poll_free(sp);
  if (c)
    return 0;
  put_err(err, errlen,
          "mDNS discovery needs the avahi daemon, which %s (avahi: %s); start it (systemctl start "
          "avahi-daemon) or set %s",
          aerr == AVAHI_ERR_NO_DAEMON ? "is not running" : "failed", avahi_strerror(aerr),
          config_key ? config_key : "the address");
  return aerr == AVAHI_ERR_NO_DAEMON ? -ENOTSUP : -EIO;
}

int pirec_mdns_lookup_new(uv_loop_t *loop, const char *type, const char *prefix, int timeout_ms,
                          const char *config_key, pirec_mdns_cb cb, void *user, struct pirec_mdns **out,
                          char *err, size_t errlen)
{
  if (!loop || !type || !prefix || !cb || !out || timeout_ms <= 0) {
    put_err(err, errlen, "pirec_mdns_lookup_new: invalid argument");
    return -EINVAL;
  }
  struct pirec_mdns *m = calloc(1, sizeof *m);
  if (!m) {
    put_err(err, errlen, "mDNS discovery: out of memory");
    return -ENOMEM;
  }
  m->loop = loop;
  m->cb = cb;
  m->user = user;
  m->timeout_ms = timeout_ms;
  snprintf(m->type, sizeof m->type, "%s", type);
  snprintf(m->prefix, sizeof m->prefix, "%s", prefix);
  snprintf(m->key, sizeof m->key, "%s", config_key ? config_key : "the address");
  pthread_mutex_init(&m->mu, NULL);
  int r = uv_async_init(loop, &m->async, on_async);
  if (r < 0) {
    pthread_mutex_destroy(&m->mu);
    free(m);
    put_err(err, errlen, "mDNS discovery: uv_async_init: %s", uv_strerror(r));
    return r;
  }
  uv_timer_init(loop, &m->timer);
  m->async.data = m->timer.data = m;
  m->handles_open = 2;

  int ret = 0;
  m->poll = avahi_threaded_poll_new();
  if (!m->poll) {
    ret = -ENOMEM;
    put_err(err, errlen, "mDNS discovery: avahi_threaded_poll_new failed; set %s", m->key);
    goto fail;
  }
  /* A timeout already due runs connect_and_browse on avahi's thread as soon as it starts. */
  const AvahiPoll *api = avahi_threaded_poll_get(m->poll);
  struct timeval due = {0, 0};
  if (!api->timeout_new(api, &due, connect_and_browse, m)) {
    ret = -ENOMEM;
    put_err(err, errlen, "mDNS discovery: out of memory; set %s", m->key);
    goto fail;
  }
  if (avahi_threaded_poll_start(m->poll) < 0) {
    ret = -EIO;
    put_err(err, errlen, "mDNS discovery: could not start avahi's thread; set %s", m->key);
    goto fail;
  }
  uv_timer_start(&m->timer, on_timeout, (uint64_t)timeout_ms, 0);
  *out = m;
  return 0;
fail:
  stop_avahi(m);
  m->reported = 1;
  uv_close((uv_handle_t *)&m->async, on_handle_closed);
  uv_close((uv_handle_t *)&m->timer, on_handle_closed);
  return ret;
}

void pirec_mdns_close(struct pirec_mdns *m, pirec_mdns_close_cb cb, void *user)
{
  if (!m)
    return;
  m->reported = 1;
  m->close_cb = cb;
  m->close_user = user;
  /* The avahi thread must be gone before the async handle closes: it may still send to it. */
  stop_avahi(m);
  uv_close((uv_handle_t *)&m->async, on_handle_closed);
  uv_close((uv_handle_t *)&m->timer, on_handle_closed);
}

#endif
