#ifndef PIREC_CONTROLLER_FLEET_H
#define PIREC_CONTROLLER_FLEET_H

/* Fleet membership over MQTT (docs/FLEET.md): the controller's libmosquitto client, driven from its
 * libuv loop, and what the `pirec fleet` client shares with it (settings, topics, commands).
 *
 * Topics, for group G and device D:
 *   pirec/G/command           commands to every device (QoS 1); start and stop are published
 *                             retained, so a device that connects late is told the current state
 *   pirec/G/device/D/status   D's status, retained; the last will sets it to {"online": false}
 *   pirec/G/device/D/events   D's state changes
 *   pirec/G/device/D/ack      D's answer to each command, carrying the command's id
 *
 * Everything here runs on one thread: the controller's loop thread, or the client's main. */

#include <jansson.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "pirec/config.h"

#define PIREC_FLEET_NAME_MAX    64
#define PIREC_FLEET_PAYLOAD_MAX (64 * 1024) /* a longer message is refused unread */
#define PIREC_FLEET_NOTE_MAX    4096
#define PIREC_FLEET_TOPIC_MAX   (2 * PIREC_FLEET_NAME_MAX + 32)

/* [fleet] as one value (docs/CONFIG.md). */
struct pirec_fleet_settings {
  char host[256];
  int port;
  int tls; /* mqtts:// */
  char group[PIREC_FLEET_NAME_MAX + 1];
  char device[PIREC_FLEET_NAME_MAX + 1];
  char username[128]; /* "" when no credentials file */
  char password[256];
  char ca_file[PATH_MAX];
  int keepalive_s;
  uint64_t reconnect_max_ms;
  int64_t lead_ns;            /* the client's start lead */
  int64_t max_clock_error_ns; /* 0: unchecked; else a start on a device whose clock is unsynchronised
                                 or whose estimated error exceeds it warns, or is refused: */
  int refuse_on_clock_error;
};

/* Fills s from cfg. Returns 1 when [fleet] broker is set, 0 when it is empty (no fleet; s is
 * zeroed), or a negative errno with why in err: the credentials file cannot be read or is not one
 * USER:PASSWORD line. Reads that file synchronously (start-up and the client only). */
int pirec_fleet_settings_load(const struct pirec_config *cfg, struct pirec_fleet_settings *s, char *err,
                              size_t cap);

/* "mqtt://HOST[:PORT]" (port 1883) or "mqtts://HOST[:PORT]" (8883); an IPv6 host in brackets.
 * Returns 0, or -EINVAL (then the outputs are unspecified). */
int pirec_fleet_url_parse(const char *url, char *host, size_t cap, int *port, int *tls);

/* 1 when name can be a group or device name: 1..64 of [A-Za-z0-9_.-]. */
int pirec_fleet_name_ok(const char *name);

/* "pirec/GROUP/command" when device is NULL, else "pirec/GROUP/device/DEVICE/LEAF" (device may
 * be "+" for a subscription). */
void pirec_fleet_topic(char *buf, size_t cap, const char *group, const char *device, const char *leaf);

/* Checks a command's shape (docs/FLEET.md): an object with "id" (a name, as above), "cmd" one of
 * start/stop/trial/note, and for start "session" (a name), "start_wall_ns" (integer) and optional
 * "peers" (array of names), for trial an optional "label" string, for note "text" (1..4096
 * bytes). Returns 0, or -EINVAL with what is wrong in err. */
int pirec_fleet_command_check(const json_t *cmd, char *err, size_t cap);

/* The kernel's clock-sync state (pirec_clock_sync_read): {"synchronised": bool, "max_error_ns",
 * "est_error_ns", "status", "source": "adjtimex"}; NULL when adjtimex fails. */
json_t *pirec_fleet_clock_json(void);

/* ---- the controller's connection (fleet.c) ---- */

struct pirec_fleet;

/* A command that passed pirec_fleet_command_check and whose id has not been seen by this process
 * (QoS 1 redelivery and retained copies are dropped here). cmd is borrowed for the call. */
typedef void (*pirec_fleet_command_cb)(struct pirec_fleet *f, const json_t *cmd, void *user);

/* Starts connecting at once (name resolution with uv_getaddrinfo, then a non-blocking connect to
 * the address) and keeps reconnecting with backoff (0.5 s doubling to reconnect_max) until
 * closed. Nothing it does blocks the loop; no failure of the broker reaches the caller except as
 * counters. Returns 0 or -ENOMEM. */
int pirec_fleet_new(uv_loop_t *loop, const struct pirec_fleet_settings *s, pirec_fleet_command_cb cb,
                    void *user, struct pirec_fleet **out);

/* The device's status (stolen): published retained now if connected, and again on every
 * (re)connection. Adds "device", "online": true and "wall_ns". */
void pirec_fleet_set_status(struct pirec_fleet *f, json_t *status);

/* One message (stolen) on the device's events or ack topic; dropped and counted when not
 * connected (nothing is queued for a broker that is away). */
void pirec_fleet_event(struct pirec_fleet *f, json_t *event);
void pirec_fleet_ack(struct pirec_fleet *f, json_t *ack);

/* 1 when another device's last status (retained on the broker) says it records fleet session
 * `session` now, else 0. */
int pirec_fleet_peer_records(const struct pirec_fleet *f, const char *session);

/* {"broker", "connected", "connects", "disconnects", "published", "dropped", "refused",
 * "last_error"} (new reference). */
json_t *pirec_fleet_counters(const struct pirec_fleet *f);

/* Publishes {"online": false} (best effort), disconnects, closes every handle, then cb(user) and
 * frees f, on later loop turns. f NULL: a no-op. */
void pirec_fleet_close(struct pirec_fleet *f, void (*cb)(void *user), void *user);

#endif
