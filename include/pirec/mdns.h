/* mDNS discovery of the Pupil Labs Neon's realtime API (issue 9).
 *
 * The Neon Companion app announces an HTTP service (`_http._tcp`) whose instance name begins with
 * "PI monitor". pirec_mdns_lookup_new() browses for it through the avahi daemon (libavahi-client,
 * IPv4 only) on avahi's own thread and reports the first resolved instance back on the libuv loop,
 * so the loop never blocks on the network. It is meant for connect time only.
 *
 * Build: optional. Without pkg-config `avahi-client` at configure time, pirec_mdns_available()
 * returns 0 and pirec_mdns_lookup_new() fails with -ENOTSUP and the same clear message.
 * Threads: every function must be called on the loop's thread; the callback runs there too.
 */
#ifndef PIREC_MDNS_H
#define PIREC_MDNS_H

#include <stddef.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The instance-name prefix the Neon Companion app uses. */
#define PIREC_MDNS_NEON_PREFIX "PI monitor"
/* The service type it announces. */
#define PIREC_MDNS_NEON_TYPE "_http._tcp"

struct pirec_mdns_result {
  char host[64];  /* numeric IPv4 address, e.g. "192.168.1.23" */
  int port;       /* the service's port (the realtime API's HTTP port, normally 8080) */
  char name[256]; /* the instance name, e.g. "PI monitor:Neon:1234" */
};

struct pirec_mdns;

/* Called once per lookup on the loop's thread, unless pirec_mdns_close() came first.
 * status 0: r holds the first instance found. status < 0 (negative errno: -ENOTSUP when avahi is
 * unavailable or its daemon is not running, -ETIMEDOUT when nothing answered in time, -EIO other
 * avahi failures): r is NULL and err is a one-line message for the log that says what to configure
 * instead. Neither pointer outlives the call. The handle must still be closed. */
typedef void (*pirec_mdns_cb)(struct pirec_mdns *m, int status, const struct pirec_mdns_result *r,
                              const char *err, void *user);
typedef void (*pirec_mdns_close_cb)(struct pirec_mdns *m, void *user);

/* 1 when this build has avahi's client library, else 0. */
int pirec_mdns_available(void);

/* Checks now that discovery can work: avahi is in this build and its daemon answers on the system
 * bus (one local D-Bus round trip, milliseconds; call it at configuration time, not on a capture
 * path). Returns 0, or -ENOTSUP (no avahi in this build, or AVAHI_ERR_NO_DAEMON) / -EIO with the
 * clear message naming config_key in err. */
int pirec_mdns_probe(const char *config_key, char *err, size_t errlen);

/* Starts browsing for a service of type `type` whose instance name begins with `prefix` (both
 * copied). Gives up after timeout_ms (> 0). config_key names the setting a user should set instead
 * (e.g. "[eyetracker] address = IP:8080"); it is quoted in every failure message (copied).
 * Never waits for the daemon: connecting and browsing happen on avahi's thread, so a daemon that is
 * not running (-ENOTSUP) or fails (-EIO) is reported through the callback, like a timeout. Use
 * pirec_mdns_probe() to learn that synchronously at configuration time.
 * Returns 0 and *out (the caller owns it until pirec_mdns_close), or a negative errno with *out
 * untouched and a message written to err (errlen bytes, may be 0): -ENOTSUP (no avahi in this
 * build), -ENOMEM, -EINVAL, -EIO (avahi's thread could not start). The callback never runs when
 * this fails. */
int pirec_mdns_lookup_new(uv_loop_t *loop, const char *type, const char *prefix, int timeout_ms,
                          const char *config_key, pirec_mdns_cb cb, void *user, struct pirec_mdns **out,
                          char *err, size_t errlen);

/* Stops the lookup (joins avahi's thread, which takes milliseconds), then frees the handle after
 * its libuv handles have closed; cb (may be NULL) runs then, on the loop. The lookup's callback
 * does not run after this call. NULL is a no-op. */
void pirec_mdns_close(struct pirec_mdns *m, pirec_mdns_close_cb cb, void *user);

#ifdef __cplusplus
}
#endif

#endif
