/* The controller's MQTT client (controller/fleet.h): libmosquitto without its threads or its own
 * select loop. libmosquitto's external-loop interface (mosquitto.h: mosquitto_socket,
 * mosquitto_loop_read/_write/_misc, mosquitto_want_write) is driven from a uv_poll on its socket
 * and one timer. mosquitto_connect_bind_async resolves names with a blocking getaddrinfo, so the
 * name is resolved first with uv_getaddrinfo (threadpool) and the client connects to the numeric
 * address, which makes the connect itself a non-blocking socket connect. */
#include <errno.h>
#include <mosquitto.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleet.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"
#include "pirec/log.h"

#define TICK_MS            1000 /* keepalive pings; an idle fleet member wakes once a second */
#define CONNECT_TIMEOUT_NS (10LL * 1000000000)
#define BACKOFF_FIRST_MS   500
#define SEEN_IDS           128
#define READS_PER_WAKE     16 /* one packet per mosquitto_loop_read; TLS may hold several */
#define MAX_PEERS          64

enum fstate { F_RESOLVING, F_CONNECTING, F_UP, F_WAITING, F_CLOSED };

struct pirec_fleet {
  uv_loop_t *loop;
  struct pirec_fleet_settings s;
  pirec_fleet_command_cb cb;
  void *user;
  enum fstate state;
  struct mosquitto *mosq;
  uv_poll_t *poll; /* one per connection, freed in its close callback */
  uv_timer_t timer;
  uv_getaddrinfo_t gai;
  int gai_busy;
  int lost; /* a callback inside libmosquitto said the connection is over */
  char why[200];
  int64_t connect_deadline;
  uint64_t backoff_ms;
  json_t *status;
  /* The other devices' last statuses: which fleet session each records (a late joiner joins
   * only a session someone still records). */
  struct peer {
    char name[PIREC_FLEET_NAME_MAX + 1];
    char session[PIREC_FLEET_NAME_MAX + 1]; /* "" when it records none */
  } peers[MAX_PEERS];
  int npeers;
  int status_mid; /* the subscription to every status, acknowledged before the commands' */
  char seen[SEEN_IDS][PIREC_FLEET_NAME_MAX + 1];
  unsigned nseen;
  char t_cmd[PIREC_FLEET_TOPIC_MAX], t_status[PIREC_FLEET_TOPIC_MAX], t_statuses[PIREC_FLEET_TOPIC_MAX],
      t_events[PIREC_FLEET_TOPIC_MAX], t_ack[PIREC_FLEET_TOPIC_MAX];
  uint64_t connects, disconnects, published, dropped, refused;
  char last_error[200];
  int closing, open_handles;
  void (*close_cb)(void *user);
  void *close_user;
};

static void lib_init_once(void)
{
  mosquitto_lib_init();
}

static void connect_begin(struct pirec_fleet *f);
static void on_tick(uv_timer_t *t);

/* Publishing never blocks: libmosquitto writes what the non-blocking socket takes and keeps the
 * rest for mosquitto_loop_write, which the poll's WRITABLE interest then drives. */
static void publish(struct pirec_fleet *f, const char *topic, json_t *o, int retain)
{
  char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  if (!text)
    return;
  if (f->state == F_UP && mosquitto_publish(f->mosq, NULL, topic, (int)strlen(text), text, 1, retain) == 0)
    f->published++;
  else
    f->dropped++;
  free(text);
}

static json_t *offline_status(struct pirec_fleet *f)
{
  return json_pack("{s:s,s:b}", "device", f->s.device, "online", 0);
}

static void publish_status(struct pirec_fleet *f)
{
  if (!f->status)
    return;
  json_t *o = json_deep_copy(f->status);
  json_object_set_new(o, "device", json_string(f->s.device));
  json_object_set_new(o, "online", json_true());
  json_object_set_new(o, "wall_ns", json_integer(pirec_clock_wall_ns()));
  publish(f, f->t_status, o, 1);
}

static void update_poll(struct pirec_fleet *f);

static void on_connect(struct mosquitto *mosq, void *obj, int rc)
{
  struct pirec_fleet *f = obj;
  (void)mosq;
  if (rc != 0) {
    snprintf(f->why, sizeof f->why, "the broker refused the connection: %s", mosquitto_connack_string(rc));
    f->lost = 1;
    return;
  }
  f->state = F_UP;
  f->connects++;
  f->backoff_ms = 0;
  pirec_log(PIREC_LOG_INFO, "fleet: connected to %s:%d as '%s' in group '%s'", f->s.host, f->s.port,
            f->s.device, f->s.group);
  /* The peers' retained statuses first: the broker sends them right after this subscription's
   * ack, so they are here before a retained start (subscribed in on_subscribe) asks whether its
   * session still runs. */
  f->npeers = 0;
  if (mosquitto_subscribe(f->mosq, &f->status_mid, f->t_statuses, 1) != MOSQ_ERR_SUCCESS)
    mosquitto_subscribe(f->mosq, NULL, f->t_cmd, 1);
  publish_status(f);
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int n, const int *granted)
{
  struct pirec_fleet *f = obj;
  (void)n, (void)granted;
  if (mid == f->status_mid)
    mosquitto_subscribe(mosq, NULL, f->t_cmd, 1);
}

/* A peer's status (not ours): which fleet session it records now. */
static void on_peer_status(struct pirec_fleet *f, const char *name, const struct mosquitto_message *msg)
{
  int i = 0;
  while (i < f->npeers && strcmp(f->peers[i].name, name) != 0)
    i++;
  if (i == f->npeers) {
    if (f->npeers == MAX_PEERS || !pirec_fleet_name_ok(name))
      return;
    snprintf(f->peers[f->npeers++].name, sizeof f->peers[0].name, "%s", name);
  }
  json_t *st = msg->payloadlen > 0 && msg->payloadlen < PIREC_FLEET_PAYLOAD_MAX
                   ? json_loadb(msg->payload, (size_t)msg->payloadlen, 0, NULL)
                   : NULL;
  const char *sess = json_string_value(json_object_get(st, "fleet_session"));
  const char *state = json_string_value(json_object_get(st, "state"));
  int records = json_is_true(json_object_get(st, "online")) && sess && state &&
                (strcmp(state, "starting") == 0 || strcmp(state, "recording") == 0);
  snprintf(f->peers[i].session, sizeof f->peers[i].session, "%s", records ? sess : "");
  json_decref(st);
}

int pirec_fleet_peer_records(const struct pirec_fleet *f, const char *session)
{
  for (int i = 0; i < f->npeers; i++)
    if (strcmp(f->peers[i].session, session) == 0)
      return 1;
  return 0;
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc)
{
  struct pirec_fleet *f = obj;
  (void)mosq;
  if (!*f->why)
    snprintf(f->why, sizeof f->why, "%s", rc ? mosquitto_strerror(rc) : "disconnected");
  f->lost = 1;
}

static void refuse(struct pirec_fleet *f, const char *why)
{
  f->refused++;
  /* A flood of bad commands must not flood the journal: the counter says how many. */
  if (f->refused <= 10 || f->refused % 1000 == 0)
    pirec_log(PIREC_LOG_WARN, "fleet: refused a command on '%s' (%llu so far): %s", f->t_cmd,
              (unsigned long long)f->refused, why);
}

/* 1 when id was seen before; else it is remembered (the oldest forgotten past SEEN_IDS). */
static int seen_before(struct pirec_fleet *f, const char *id)
{
  unsigned n = f->nseen < SEEN_IDS ? f->nseen : SEEN_IDS;
  for (unsigned i = 0; i < n; i++)
    if (strcmp(f->seen[i], id) == 0)
      return 1;
  snprintf(f->seen[f->nseen % SEEN_IDS], sizeof f->seen[0], "%s", id);
  f->nseen++;
  return 0;
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg)
{
  struct pirec_fleet *f = obj;
  (void)mosq;
  char prefix[PIREC_FLEET_TOPIC_MAX];
  size_t pl = (size_t)snprintf(prefix, sizeof prefix, "pirec/%s/device/", f->s.group),
         tl = strlen(msg->topic);
  if (strncmp(msg->topic, prefix, pl) == 0 && tl > pl + 7 && strcmp(msg->topic + tl - 7, "/status") == 0) {
    char name[PIREC_FLEET_NAME_MAX + 1];
    snprintf(name, sizeof name, "%.*s", (int)(tl - pl - 7), msg->topic + pl);
    if (strcmp(name, f->s.device) != 0)
      on_peer_status(f, name, msg);
    return;
  }
  if (strcmp(msg->topic, f->t_cmd) != 0)
    return;
  if (msg->payloadlen == 0)
    return; /* a retained command cleared */
  char err[200];
  if (msg->payloadlen > PIREC_FLEET_PAYLOAD_MAX) {
    snprintf(err, sizeof err, "%d bytes, more than %d", msg->payloadlen, PIREC_FLEET_PAYLOAD_MAX);
    refuse(f, err);
    return;
  }
  json_error_t je;
  /* jansson refuses invalid UTF-8 and NUL bytes inside strings by default. */
  json_t *cmd = json_loadb(msg->payload, (size_t)msg->payloadlen, JSON_REJECT_DUPLICATES, &je);
  if (!cmd) {
    snprintf(err, sizeof err, "not JSON: %s", je.text);
    refuse(f, err);
    return;
  }
  if (pirec_fleet_command_check(cmd, err, sizeof err) < 0)
    refuse(f, err);
  else if (!seen_before(f, json_string_value(json_object_get(cmd, "id"))))
    f->cb(f, cmd, f->user);
  json_decref(cmd);
}

/* The close's end: the last handle closed and no name lookup outstanding. */
static void free_if_done(struct pirec_fleet *f)
{
  if (!f->closing || f->open_handles > 0 || f->gai_busy)
    return;
  if (f->close_cb)
    f->close_cb(f->close_user);
  json_decref(f->status);
  free(f);
}

static void on_poll_closed(uv_handle_t *h)
{
  struct pirec_fleet *f = h->data;
  free(h);
  f->open_handles--;
  free_if_done(f);
}

/* The connection's end: the poll stops before libmosquitto closes the socket it watches. */
static void teardown(struct pirec_fleet *f)
{
  if (f->poll) {
    uv_poll_stop(f->poll);
    f->poll->data = f;
    uv_close((uv_handle_t *)f->poll, on_poll_closed);
    f->poll = NULL;
  }
  if (f->mosq)
    mosquitto_destroy(f->mosq);
  f->mosq = NULL;
}

static void retry_later(struct pirec_fleet *f, const char *why)
{
  if (f->state == F_UP)
    f->disconnects++;
  /* Said once per outage, not once per attempt. */
  if (f->state == F_UP || !*f->last_error)
    pirec_log(PIREC_LOG_WARN, "fleet: broker %s:%d: %s; recording goes on, reconnecting with backoff",
              f->s.host, f->s.port, why);
  snprintf(f->last_error, sizeof f->last_error, "%s", why);
  teardown(f);
  f->state = F_WAITING;
  f->backoff_ms = f->backoff_ms ? f->backoff_ms * 2 : BACKOFF_FIRST_MS;
  if (f->backoff_ms > f->s.reconnect_max_ms)
    f->backoff_ms = f->s.reconnect_max_ms;
  uv_timer_start(&f->timer, on_tick, f->backoff_ms, TICK_MS);
}

/* After every call into libmosquitto: a lost connection is torn down, else the poll follows what
 * libmosquitto wants to write. */
static void after_call(struct pirec_fleet *f, int rc)
{
  if (f->lost || (rc != MOSQ_ERR_SUCCESS && f->mosq)) {
    char why[200];
    snprintf(why, sizeof why, "%s", *f->why ? f->why : mosquitto_strerror(rc));
    f->lost = 0;
    f->why[0] = '\0';
    retry_later(f, why);
    return;
  }
  update_poll(f);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
  struct pirec_fleet *f = p->data;
  int rc = MOSQ_ERR_SUCCESS;
  if (status < 0) {
    snprintf(f->why, sizeof f->why, "%s", uv_strerror(status));
    f->lost = 1;
  }
  for (int i = 0; i < READS_PER_WAKE && !f->lost && rc == MOSQ_ERR_SUCCESS && (events & UV_READABLE); i++)
    rc = mosquitto_loop_read(f->mosq, 1);
  if (!f->lost && rc == MOSQ_ERR_SUCCESS && (events & UV_WRITABLE))
    rc = mosquitto_loop_write(f->mosq, 1);
  after_call(f, rc);
}

static void update_poll(struct pirec_fleet *f)
{
  if (!f->mosq)
    return;
  int fd = mosquitto_socket(f->mosq);
  if (fd < 0)
    return;
  if (!f->poll) {
    f->poll = malloc(sizeof *f->poll);
    if (!f->poll || uv_poll_init(f->loop, f->poll, fd) < 0) {
      free(f->poll);
      f->poll = NULL;
      return;
    }
    f->poll->data = f;
    f->open_handles++;
  }
  uv_poll_start(f->poll, UV_READABLE | (mosquitto_want_write(f->mosq) ? UV_WRITABLE : 0), on_poll);
}

static void connect_to(struct pirec_fleet *f, const char *ip)
{
  char id[2 * PIREC_FLEET_NAME_MAX + 8];
  snprintf(id, sizeof id, "pirec-%s-%s", f->s.group, f->s.device);
  f->mosq = mosquitto_new(id, true, f);
  if (!f->mosq) {
    retry_later(f, "out of memory");
    return;
  }
  mosquitto_connect_callback_set(f->mosq, on_connect);
  mosquitto_disconnect_callback_set(f->mosq, on_disconnect);
  mosquitto_message_callback_set(f->mosq, on_message);
  mosquitto_subscribe_callback_set(f->mosq, on_subscribe);
  json_t *offline = offline_status(f);
  char *will = json_dumps(offline, JSON_COMPACT);
  json_decref(offline);
  int rc = will ? mosquitto_will_set(f->mosq, f->t_status, (int)strlen(will), will, 1, true) : MOSQ_ERR_NOMEM;
  free(will);
  if (rc == 0 && *f->s.username)
    rc = mosquitto_username_pw_set(f->mosq, f->s.username, f->s.password);
  if (rc == 0 && f->s.tls)
    rc = mosquitto_tls_set(f->mosq, *f->s.ca_file ? f->s.ca_file : NULL,
                           *f->s.ca_file ? NULL : "/etc/ssl/certs", NULL, NULL, NULL);
  if (rc == 0)
    rc = mosquitto_connect_bind_async(f->mosq, ip, f->s.port, f->s.keepalive_s, NULL);
  if (rc != 0) {
    retry_later(f, rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    return;
  }
  f->state = F_CONNECTING;
  f->connect_deadline = pirec_clock_mono_ns() + CONNECT_TIMEOUT_NS;
  update_poll(f);
  uv_timer_start(&f->timer, on_tick, TICK_MS, TICK_MS);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
  struct pirec_fleet *f = container_of(req, struct pirec_fleet, gai);
  f->gai_busy = 0;
  char ip[64] = "";
  if (status == 0 && res)
    uv_ip_name(res->ai_addr, ip, sizeof ip);
  uv_freeaddrinfo(res);
  if (f->closing) {
    free_if_done(f);
    return;
  }
  if (!*ip) {
    char why[300];
    snprintf(why, sizeof why, "cannot resolve '%s': %s", f->s.host,
             status ? uv_strerror(status) : "no address");
    retry_later(f, why);
    return;
  }
  connect_to(f, ip);
}

static void connect_begin(struct pirec_fleet *f)
{
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  char port[16];
  snprintf(port, sizeof port, "%d", f->s.port);
  f->state = F_RESOLVING;
  uv_timer_stop(&f->timer);
  int err = uv_getaddrinfo(f->loop, &f->gai, on_resolved, f->s.host, port, &hints);
  if (err < 0) {
    char why[300];
    snprintf(why, sizeof why, "cannot resolve '%s': %s", f->s.host, uv_strerror(err));
    retry_later(f, why);
    return;
  }
  f->gai_busy = 1;
}

static void on_tick(uv_timer_t *t)
{
  struct pirec_fleet *f = container_of(t, struct pirec_fleet, timer);
  if (f->state == F_WAITING) {
    connect_begin(f);
    return;
  }
  if (!f->mosq)
    return;
  if (f->state == F_CONNECTING && pirec_clock_mono_ns() > f->connect_deadline) {
    retry_later(f, "no answer to CONNECT within 10 s");
    return;
  }
  /* Keepalive pings, and a read in case TLS holds decrypted bytes the socket no longer shows. */
  int rc = mosquitto_loop_misc(f->mosq);
  if (rc == MOSQ_ERR_SUCCESS && f->state == F_UP && f->s.tls)
    rc = mosquitto_loop_read(f->mosq, 1);
  after_call(f, rc == MOSQ_ERR_NO_CONN && f->state == F_CONNECTING ? MOSQ_ERR_SUCCESS : rc);
}

int pirec_fleet_new(uv_loop_t *loop, const struct pirec_fleet_settings *s, pirec_fleet_command_cb cb,
                    void *user, struct pirec_fleet **out)
{
  static uv_once_t once = UV_ONCE_INIT;
  uv_once(&once, lib_init_once);
  struct pirec_fleet *f = calloc(1, sizeof *f);
  if (!f)
    return -ENOMEM;
  f->loop = loop;
  f->s = *s;
  if (f->s.keepalive_s < 5)
    f->s.keepalive_s = 5; /* libmosquitto's minimum */
  if (f->s.reconnect_max_ms < BACKOFF_FIRST_MS)
    f->s.reconnect_max_ms = BACKOFF_FIRST_MS;
  f->cb = cb;
  f->user = user;
  pirec_fleet_topic(f->t_cmd, sizeof f->t_cmd, s->group, NULL, NULL);
  pirec_fleet_topic(f->t_status, sizeof f->t_status, s->group, s->device, "status");
  pirec_fleet_topic(f->t_statuses, sizeof f->t_statuses, s->group, "+", "status");
  pirec_fleet_topic(f->t_events, sizeof f->t_events, s->group, s->device, "events");
  pirec_fleet_topic(f->t_ack, sizeof f->t_ack, s->group, s->device, "ack");
  uv_timer_init(loop, &f->timer);
  f->open_handles = 1;
  connect_begin(f);
  *out = f;
  return 0;
}

void pirec_fleet_set_status(struct pirec_fleet *f, json_t *status)
{
  json_decref(f->status);
  f->status = status;
  publish_status(f);
  update_poll(f);
}

void pirec_fleet_event(struct pirec_fleet *f, json_t *event)
{
  json_object_set_new(event, "device", json_string(f->s.device));
  publish(f, f->t_events, event, 0);
  update_poll(f);
}

void pirec_fleet_ack(struct pirec_fleet *f, json_t *ack)
{
  json_object_set_new(ack, "device", json_string(f->s.device));
  publish(f, f->t_ack, ack, 0);
  update_poll(f);
}

json_t *pirec_fleet_counters(const struct pirec_fleet *f)
{
  char broker[300];
  snprintf(broker, sizeof broker, "%s://%s:%d", f->s.tls ? "mqtts" : "mqtt", f->s.host, f->s.port);
  return json_pack("{s:s,s:s,s:s,s:b,s:I,s:I,s:I,s:I,s:I,s:s}", "broker", broker, "group", f->s.group,
                   "device", f->s.device, "connected", f->state == F_UP, "connects", (json_int_t)f->connects,
                   "disconnects", (json_int_t)f->disconnects, "published", (json_int_t)f->published,
                   "dropped", (json_int_t)f->dropped, "refused", (json_int_t)f->refused, "last_error",
                   f->last_error);
}

static void on_timer_closed(uv_handle_t *h)
{
  struct pirec_fleet *f = container_of((uv_timer_t *)h, struct pirec_fleet, timer);
  f->open_handles--;
  free_if_done(f);
}

void pirec_fleet_close(struct pirec_fleet *f, void (*cb)(void *user), void *user)
{
  if (!f || f->closing)
    return;
  f->closing = 1;
  f->close_cb = cb;
  f->close_user = user;
  if (f->state == F_UP) {
    /* Said before the will would say it, and cleanly: a best-effort write, never a wait. */
    publish(f, f->t_status, offline_status(f), 1);
    mosquitto_disconnect(f->mosq);
    mosquitto_loop_write(f->mosq, 1);
  }
  f->state = F_CLOSED;
  teardown(f);
  if (f->gai_busy)
    uv_cancel((uv_req_t *)&f->gai);
  uv_close((uv_handle_t *)&f->timer, on_timer_closed);
}
