/* `pirec fleet status|start|stop|trial|note`: one MQTT client that talks to every pirec of a
 * group through the broker (docs/FLEET.md). A command-line client may block: it uses
 * libmosquitto's own blocking connect and mosquitto_loop. */
#include <errno.h>
#include <getopt.h>
#include <mosquitto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "fleet.h"
#include "pirec/clock.h"
#include "pirec/controller.h"

#define EX_USAGE       64
#define EX_UNAVAILABLE 69
#define MAX_DEVICES    256
#define GATHER_MS      500 /* retained statuses arrive right after the subscription's ack */

struct device {
  char name[PIREC_FLEET_NAME_MAX + 1];
  json_t *status; /* the last retained status */
  json_t *ack;    /* the answer to our command, NULL until it comes */
};

struct cli {
  struct pirec_fleet_settings s;
  const char *verb;
  int json;
  double timeout_s;
  const char *label, *session, *text;
  double lead_s; /* --lead, or -1: [fleet] start_lead */
  char id[PIREC_FLEET_NAME_MAX + 1];
  struct device dev[MAX_DEVICES];
  int ndev;
  int subacks;
  char t_status[PIREC_FLEET_TOPIC_MAX], t_ack[PIREC_FLEET_TOPIC_MAX];
};

static void usage(FILE *f)
{
  fprintf(f, "usage: pirec fleet status                 every device of the group and what it does\n"
             "       pirec fleet start [--label L] [--session ID] [--lead SECONDS]\n"
             "                                          one session on every online device, all at once\n"
             "       pirec fleet stop                   stop it everywhere\n"
             "       pirec fleet trial [--label L]      next trial everywhere\n"
             "       pirec fleet note TEXT...           the same note on every device\n"
             "options: -c FILE ([fleet] broker, group, credentials_file, ca_file), --broker URL,\n"
             "         --group G, --timeout SECONDS (answers; default 10), --json\n"
             "exit status: 0 every device answered ok, 1 a device refused or did not answer,\n"
             "             64 usage, 69 the broker cannot be reached\n");
}

static struct device *device_get(struct cli *c, const char *name)
{
  for (int i = 0; i < c->ndev; i++)
    if (strcmp(c->dev[i].name, name) == 0)
      return &c->dev[i];
  if (c->ndev == MAX_DEVICES || !pirec_fleet_name_ok(name))
    return NULL;
  struct device *d = &c->dev[c->ndev++];
  snprintf(d->name, sizeof d->name, "%s", name);
  return d;
}

/* pirec/G/device/D/LEAF -> D, when topic is under prefix "pirec/G/device/". */
static int topic_device(const char *topic, const char *group, const char *leaf, char *out, size_t cap)
{
  char prefix[PIREC_FLEET_TOPIC_MAX];
  snprintf(prefix, sizeof prefix, "pirec/%s/device/", group);
  size_t pl = strlen(prefix), tl = strlen(topic), ll = strlen(leaf);
  if (strncmp(topic, prefix, pl) != 0 || tl < pl + ll + 2 || strcmp(topic + tl - ll, leaf) != 0 ||
      topic[tl - ll - 1] != '/' || tl - ll - 1 - pl >= cap)
    return 0;
  memcpy(out, topic + pl, tl - ll - 1 - pl);
  out[tl - ll - 1 - pl] = '\0';
  return 1;
}

static void on_message(struct mosquitto *m, void *obj, const struct mosquitto_message *msg)
{
  struct cli *c = obj;
  (void)m;
  char name[PIREC_FLEET_NAME_MAX + 1];
  json_t *o = msg->payloadlen > 0 ? json_loadb(msg->payload, (size_t)msg->payloadlen, 0, NULL) : NULL;
  struct device *d = NULL;
  if (o && topic_device(msg->topic, c->s.group, "status", name, sizeof name) && (d = device_get(c, name))) {
    json_decref(d->status);
    d->status = json_incref(o);
  } else if (o && topic_device(msg->topic, c->s.group, "ack", name, sizeof name) &&
             (d = device_get(c, name)) &&
             strcmp(json_string_value(json_object_get(o, "id")) ?: "", c->id) == 0 && !d->ack) {
    d->ack = json_incref(o);
  }
  json_decref(o);
}

static void on_subscribe(struct mosquitto *m, void *obj, int mid, int n, const int *qos)
{
  (void)m, (void)mid, (void)n, (void)qos;
  ((struct cli *)obj)->subacks++;
}

static int online(const struct device *d)
{
  return d->status && json_is_true(json_object_get(d->status, "online"));
}

/* Runs the client's network until done(c) or ms pass. Returns 0, or -1 when the broker went. */
static int run_for(struct mosquitto *m, struct cli *c, int64_t ms, int (*done)(struct cli *c))
{
  int64_t until = pirec_clock_mono_ns() + ms * 1000000;
  while (pirec_clock_mono_ns() < until && !(done && done(c))) {
    int rc = mosquitto_loop(m, 50, 1);
    if (rc != MOSQ_ERR_SUCCESS) {
      fprintf(stderr, "pirec fleet: broker %s:%d: %s\n", c->s.host, c->s.port, mosquitto_strerror(rc));
      return -1;
    }
  }
  return 0;
}

static int subscribed(struct cli *c)
{
  return c->subacks >= 2;
}

static int all_answered(struct cli *c)
{
  for (int i = 0; i < c->ndev; i++)
    if (online(&c->dev[i]) && !c->dev[i].ack)
      return 0;
  return 1;
}

static void random_hex(char *out, size_t nbytes)
{
  unsigned char b[16] = {0};
  if (nbytes > sizeof b)
    nbytes = sizeof b;
  if (getrandom(b, nbytes, 0) != (ssize_t)nbytes) /* not fatal: the time part keeps ids apart */
    memset(b, (int)(getpid() & 0xff), nbytes);
  for (size_t i = 0; i < nbytes; i++)
    sprintf(out + 2 * i, "%02x", b[i]);
}

/* The command for c->verb, to the devices online now. */
static json_t *build_command(struct cli *c)
{
  json_t *cmd = json_pack("{s:s,s:s}", "id", c->id, "cmd", c->verb);
  if (strcmp(c->verb, "start") == 0) {
    char session[PIREC_FLEET_NAME_MAX + 1], hex[9];
    if (c->session) {
      snprintf(session, sizeof session, "%s", c->session);
    } else {
      time_t now = time(NULL);
      struct tm tm;
      gmtime_r(&now, &tm);
      random_hex(hex, 2);
      strftime(session, sizeof session, "fleet-%Y%m%dT%H%M%SZ", &tm);
      snprintf(session + strlen(session), sizeof session - strlen(session), "-%s", hex);
    }
    json_t *peers = json_array();
    for (int i = 0; i < c->ndev; i++)
      if (online(&c->dev[i]))
        json_array_append_new(peers, json_string(c->dev[i].name));
    json_object_set_new(cmd, "session", json_string(session));
    json_object_set_new(cmd, "peers", peers);
    json_object_set_new(cmd, "start_wall_ns", json_integer(pirec_clock_wall_ns() + c->s.lead_ns));
  }
  if (c->label)
    json_object_set_new(cmd, "label", json_string(c->label));
  if (c->text)
    json_object_set_new(cmd, "text", json_string(c->text));
  return cmd;
}

static void print_status(struct cli *c)
{
  for (int i = 0; i < c->ndev; i++) {
    json_t *s = c->dev[i].status;
    const char *fs = json_string_value(json_object_get(s, "fleet_session"));
    const char *dir = json_string_value(json_object_get(s, "session_dir"));
    printf("%-20s %-8s %-10s%s%s%s%s\n", c->dev[i].name, online(&c->dev[i]) ? "online" : "offline",
           online(&c->dev[i]) ? json_string_value(json_object_get(s, "state")) ?: "?" : "-",
           fs ? " fleet " : "", fs ? fs : "", dir ? " " : "", dir ? dir : "");
  }
}

/* One line per device that was online: what it answered. Returns the exit status. */
static int print_acks(struct cli *c, json_t *cmd)
{
  int bad = 0;
  json_t *all = json_object();
  for (int i = 0; i < c->ndev; i++) {
    struct device *d = &c->dev[i];
    if (!online(d))
      continue;
    const char *r = d->ack ? json_string_value(json_object_get(d->ack, "reply")) : NULL;
    int ok = r && strcmp(r, "error") != 0;
    bad += !ok;
    json_object_set(all, d->name, d->ack ? d->ack : json_null());
    if (c->json)
      continue;
    const char *msg = json_string_value(json_object_get(d->ack, "message"));
    const char *dir = json_string_value(json_object_get(d->ack, "session_dir"));
    if (!d->ack)
      printf("%s: no answer within %.0f s\n", d->name, c->timeout_s);
    else
      printf("%s: %s%s%s\n", d->name, r ? r : "?", msg || dir ? " " : "", msg ? msg : dir ? dir : "");
  }
  if (c->json) {
    json_t *o = json_pack("{s:O,s:O}", "command", cmd, "devices", all);
    char *text = json_dumps(o, JSON_INDENT(2));
    printf("%s\n", text);
    free(text);
    json_decref(o);
  } else if (strcmp(c->verb, "start") == 0) {
    printf("fleet session %s\n", json_string_value(json_object_get(cmd, "session")));
  }
  json_decref(all);
  return bad ? 1 : 0;
}

static int count_online(const struct cli *c)
{
  int n = 0;
  for (int i = 0; i < c->ndev; i++)
    n += online(&c->dev[i]);
  return n;
}

static int command(struct mosquitto *m, struct cli *c)
{
  if (count_online(c) == 0) {
    fprintf(stderr, "pirec fleet: no device of group '%s' is online\n", c->s.group);
    return 1;
  }
  char hex[17];
  random_hex(hex, 8);
  snprintf(c->id, sizeof c->id, "%s-%s", c->verb, hex);
  json_t *cmd = build_command(c);
  char *text = json_dumps(cmd, JSON_COMPACT);
  char topic[PIREC_FLEET_TOPIC_MAX];
  pirec_fleet_topic(topic, sizeof topic, c->s.group, NULL, NULL);
  /* Start and stop stay on the broker, so a device that comes later learns what runs. */
  int retain = strcmp(c->verb, "start") == 0 || strcmp(c->verb, "stop") == 0;
  int rc = mosquitto_publish(m, NULL, topic, (int)strlen(text), text, 1, retain);
  free(text);
  int64_t wait_ms =
      (int64_t)(c->timeout_s * 1000) + (retain && c->verb[2] == 'a' ? c->s.lead_ns / 1000000 : 0);
  if (rc != MOSQ_ERR_SUCCESS || run_for(m, c, wait_ms, all_answered) < 0) {
    if (rc != MOSQ_ERR_SUCCESS)
      fprintf(stderr, "pirec fleet: cannot publish: %s\n", mosquitto_strerror(rc));
    json_decref(cmd);
    return EX_UNAVAILABLE;
  }
  rc = print_acks(c, cmd);
  json_decref(cmd);
  return rc;
}

static int session_with(struct cli *c)
{
  struct mosquitto *m = mosquitto_new(NULL, true, c);
  if (!m)
    return 1;
  mosquitto_message_callback_set(m, on_message);
  mosquitto_subscribe_callback_set(m, on_subscribe);
  if (*c->s.username)
    mosquitto_username_pw_set(m, c->s.username, c->s.password);
  if (c->s.tls)
    mosquitto_tls_set(m, *c->s.ca_file ? c->s.ca_file : NULL, *c->s.ca_file ? NULL : "/etc/ssl/certs", NULL,
                      NULL, NULL);
  int rc = mosquitto_connect(m, c->s.host, c->s.port, 30);
  if (rc != MOSQ_ERR_SUCCESS) {
    fprintf(stderr, "pirec fleet: cannot connect to %s:%d: %s\n", c->s.host, c->s.port,
            rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    mosquitto_destroy(m);
    return EX_UNAVAILABLE;
  }
  pirec_fleet_topic(c->t_status, sizeof c->t_status, c->s.group, "+", "status");
  pirec_fleet_topic(c->t_ack, sizeof c->t_ack, c->s.group, "+", "ack");
  mosquitto_subscribe(m, NULL, c->t_status, 1);
  mosquitto_subscribe(m, NULL, c->t_ack, 1);
  int ex = run_for(m, c, (int64_t)(c->timeout_s * 1000), subscribed) < 0 || run_for(m, c, GATHER_MS, NULL) < 0
               ? EX_UNAVAILABLE
               : 0;
  if (ex == 0 && strcmp(c->verb, "status") == 0) {
    print_status(c);
    ex = c->ndev ? 0 : 1;
    if (!c->ndev)
      fprintf(stderr, "pirec fleet: no device of group '%s' has reported\n", c->s.group);
  } else if (ex == 0) {
    ex = command(m, c);
  }
  mosquitto_disconnect(m);
  mosquitto_destroy(m);
  return ex;
}

/* [fleet] from -c FILE, then --broker and --group over it. */
static int settings(struct cli *c, const char *config, const char *broker, const char *group)
{
  struct pirec_config *cfg = NULL;
  struct pirec_config_errors errors = {0};
  int err = config ? pirec_config_load(config, &cfg, &errors) : pirec_config_new_defaults(&cfg);
  for (size_t i = 0; i < errors.count; i++)
    fprintf(stderr, "%s\n", errors.items[i].message);
  pirec_config_errors_free(&errors);
  char msg[600] = "";
  int r = err < 0 ? err : pirec_fleet_settings_load(cfg, &c->s, msg, sizeof msg);
  if (r >= 0) {
    c->s.lead_ns = pirec_config_get_duration(cfg, "fleet", "start_lead");
    snprintf(c->s.group, sizeof c->s.group, "%s",
             group ? group : pirec_config_get_string(cfg, "fleet", "group"));
  }
  pirec_config_free(cfg);
  if (r < 0 && *msg)
    fprintf(stderr, "pirec fleet: %s\n", msg);
  if (r >= 0 && broker &&
      pirec_fleet_url_parse(broker, c->s.host, sizeof c->s.host, &c->s.port, &c->s.tls) < 0) {
    fprintf(stderr, "pirec fleet: --broker '%s': expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]\n",
            broker);
    return -EINVAL;
  }
  if (r >= 0 && !broker && r == 0) {
    fprintf(stderr, "pirec fleet: no broker: give --broker URL or -c FILE with [fleet] broker\n");
    return -EINVAL;
  }
  if (r >= 0 && !pirec_fleet_name_ok(c->s.group)) {
    fprintf(stderr, "pirec fleet: group '%s': expected 1..64 of A-Z a-z 0-9 _ . -\n", c->s.group);
    return -EINVAL;
  }
  return r < 0 ? r : 0;
}

static char *join_args(int argc, char **argv)
{
  size_t n = 1;
  for (int i = 0; i < argc; i++)
    n += strlen(argv[i]) + 1;
  char *s = calloc(1, n);
  for (int i = 0; s && i < argc; i++) {
    if (i)
      strcat(s, " ");
    strcat(s, argv[i]);
  }
  return s;
}

static int parse_args(struct cli *c, int argc, char **argv, const char **config, const char **broker,
                      const char **group)
{
  static const struct option longopts[] = {
      {"config", required_argument, NULL, 'c'},  {"broker", required_argument, NULL, 'b'},
      {"group", required_argument, NULL, 'g'},   {"label", required_argument, NULL, 'l'},
      {"session", required_argument, NULL, 'S'}, {"lead", required_argument, NULL, 'L'},
      {"timeout", required_argument, NULL, 't'}, {"json", no_argument, NULL, 'j'},
      {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
  int opt;
  while ((opt = getopt_long(argc, argv, "+c:l:h", longopts, NULL)) != -1) {
    switch (opt) {
    case 'c': *config = optarg; break;
    case 'b': *broker = optarg; break;
    case 'g': *group = optarg; break;
    case 'l': c->label = optarg; break;
    case 'S': c->session = optarg; break;
    case 'L': c->lead_s = atof(optarg); break;
    case 't': c->timeout_s = atof(optarg); break;
    case 'j': c->json = 1; break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return EX_USAGE;
    }
  }
  return -1;
}

int pirec_controller_fleet_main(int argc, char **argv)
{
  static struct cli c; /* MAX_DEVICES entries: not on the stack */
  memset(&c, 0, sizeof c);
  c.timeout_s = 10;
  c.lead_s = -1;
  const char *config = NULL, *broker = NULL, *group = NULL;
  optind = 1;
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? EX_USAGE : 0;
  }
  c.verb = argv[1];
  if (strcmp(c.verb, "status") && strcmp(c.verb, "start") && strcmp(c.verb, "stop") &&
      strcmp(c.verb, "trial") && strcmp(c.verb, "note")) {
    fprintf(stderr, "pirec fleet: unknown command '%s'\n", c.verb);
    usage(stderr);
    return EX_USAGE;
  }
  int r = parse_args(&c, argc - 1, argv + 1, &config, &broker, &group);
  if (r >= 0)
    return r;
  if (settings(&c, config, broker, group) < 0)
    return EX_USAGE;
  if (c.lead_s >= 0)
    c.s.lead_ns = (int64_t)(c.lead_s * 1e9);
  int extra = argc - 1 - optind;
  char *text = NULL;
  if (strcmp(c.verb, "note") == 0) {
    text = extra > 0 ? join_args(extra, argv + 1 + optind) : NULL;
    if (!text || !*text || strlen(text) > PIREC_FLEET_NOTE_MAX) {
      fprintf(stderr, "pirec fleet note: give the note's text (1..%d bytes)\n", PIREC_FLEET_NOTE_MAX);
      free(text);
      return EX_USAGE;
    }
    c.text = text;
  } else if (extra > 0) {
    usage(stderr);
    return EX_USAGE;
  }
  if (c.session && !pirec_fleet_name_ok(c.session)) {
    fprintf(stderr, "pirec fleet: --session '%s': expected 1..64 of A-Z a-z 0-9 _ . -\n", c.session);
    free(text);
    return EX_USAGE;
  }
  mosquitto_lib_init();
  int ex = session_with(&c);
  mosquitto_lib_cleanup();
  for (int i = 0; i < c.ndev; i++) {
    json_decref(c.dev[i].status);
    json_decref(c.dev[i].ack);
  }
  free(text);
  return ex;
}
