/* What the fleet's controller side and its client share: [fleet] settings, broker URLs, topic
 * names, the shape of a command, the kernel's clock-sync state (controller/fleet.h). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleet.h"
#include "pirec/clock.h"

int pirec_fleet_name_ok(const char *name)
{
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > PIREC_FLEET_NAME_MAX)
    return 0;
  return strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

int pirec_fleet_url_parse(const char *url, char *host, size_t cap, int *port, int *tls)
{
  const char *p;
  if (strncmp(url, "mqtt://", 7) == 0) {
    *tls = 0, *port = 1883, p = url + 7;
  } else if (strncmp(url, "mqtts://", 8) == 0) {
    *tls = 1, *port = 8883, p = url + 8;
  } else {
    return -EINVAL;
  }
  const char *end = p[0] == '[' ? strchr(p, ']') : NULL;
  const char *h = end ? p + 1 : p;
  const char *colon = strchr(end ? end : p, ':');
  size_t hlen = end ? (size_t)(end - h) : colon ? (size_t)(colon - p) : strlen(p);
  if (end && end[1] && end[1] != ':')
    return -EINVAL;
  if (hlen == 0 || hlen >= cap || memchr(h, '/', hlen) || memchr(h, '@', hlen))
    return -EINVAL;
  memcpy(host, h, hlen);
  host[hlen] = '\0';
  if (colon) {
    char *e;
    long v = strtol(colon + 1, &e, 10);
    if (*e || e == colon + 1 || v < 1 || v > 65535)
      return -EINVAL;
    *port = (int)v;
  }
  return 0;
}

void pirec_fleet_topic(char *buf, size_t cap, const char *group, const char *device, const char *leaf)
{
  if (device)
    snprintf(buf, cap, "pirec/%s/device/%s/%s", group, device, leaf);
  else
    snprintf(buf, cap, "pirec/%s/command", group);
}

/* USER:PASSWORD on the first line (the password may hold ':'). */
static int read_credentials(const char *path, struct pirec_fleet_settings *s, char *err, size_t cap)
{
  FILE *f = fopen(path, "r");
  if (!f) {
    int e = errno;
    snprintf(err, cap, "cannot read the fleet credentials file '%s': %s", path, strerror(e));
    return -e;
  }
  char line[512];
  int ok = fgets(line, sizeof line, f) != NULL;
  fclose(f);
  line[ok ? strcspn(line, "\r\n") : 0] = '\0';
  char *colon = strchr(line, ':');
  if (!ok || !colon || colon == line || strlen(line) - 1 >= sizeof s->password ||
      (size_t)(colon - line) >= sizeof s->username) {
    snprintf(err, cap, "%s:1: expected one line USER:PASSWORD", path);
    return -EINVAL;
  }
  *colon = '\0';
  /* Both fit: their lengths were checked above. */
  snprintf(s->username, sizeof s->username, "%.*s", (int)sizeof s->username - 1, line);
  snprintf(s->password, sizeof s->password, "%.*s", (int)sizeof s->password - 1, colon + 1);
  return 0;
}

int pirec_fleet_settings_load(const struct pirec_config *cfg, struct pirec_fleet_settings *s, char *err,
                              size_t cap)
{
  memset(s, 0, sizeof *s);
  const char *url = pirec_config_get_string(cfg, "fleet", "broker");
  if (!url || !*url)
    return 0;
  if (pirec_fleet_url_parse(url, s->host, sizeof s->host, &s->port, &s->tls) < 0) {
    snprintf(err, cap, "[fleet] broker '%s': expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]", url);
    return -EINVAL;
  }
  snprintf(s->group, sizeof s->group, "%s", pirec_config_get_string(cfg, "fleet", "group"));
  snprintf(s->device, sizeof s->device, "%s", pirec_config_get_string(cfg, "fleet", "device"));
  if (!*s->device) {
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    host[strspn(host, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")] = '\0';
    host[PIREC_FLEET_NAME_MAX] = '\0'; /* a longer host name is cut to a device name's length */
    snprintf(s->device, sizeof s->device, "%.*s", PIREC_FLEET_NAME_MAX, *host ? host : "pirec");
  }
  snprintf(s->ca_file, sizeof s->ca_file, "%s", pirec_config_get_string(cfg, "fleet", "ca_file"));
  s->keepalive_s = (int)(pirec_config_get_duration(cfg, "fleet", "keepalive") / 1000000000);
  s->reconnect_max_ms = (uint64_t)(pirec_config_get_duration(cfg, "fleet", "reconnect_max") / 1000000);
  s->lead_ns = pirec_config_get_duration(cfg, "fleet", "start_lead");
  s->max_clock_error_ns = pirec_config_get_duration(cfg, "fleet", "max_clock_error");
  s->refuse_on_clock_error = strcmp(pirec_config_get_string(cfg, "fleet", "if_clock_error"), "refuse") == 0;
  const char *cred = pirec_config_get_string(cfg, "fleet", "credentials_file");
  if (cred && *cred) {
    int e = read_credentials(cred, s, err, cap);
    if (e < 0)
      return e;
  }
  return 1;
}

static int check_start(const json_t *cmd, char *err, size_t cap)
{
  const json_t *sess = json_object_get(cmd, "session");
  const json_t *at = json_object_get(cmd, "start_wall_ns");
  const json_t *peers = json_object_get(cmd, "peers");
  if (!json_is_string(sess) || !pirec_fleet_name_ok(json_string_value(sess))) {
    snprintf(err, cap, "start: \"session\" must be 1..64 of A-Z a-z 0-9 _ . -");
    return -EINVAL;
  }
  if (!json_is_integer(at) || json_integer_value(at) <= 0) {
    snprintf(err, cap, "start: \"start_wall_ns\" must be a positive integer (Unix ns)");
    return -EINVAL;
  }
  if (peers && (!json_is_array(peers) || json_array_size(peers) > 256)) {
    snprintf(err, cap, "start: \"peers\" must be an array of at most 256 device names");
    return -EINVAL;
  }
  size_t i;
  const json_t *p;
  json_array_foreach(peers, i, p) if (!json_is_string(p) || !pirec_fleet_name_ok(json_string_value(p)))
  {
    snprintf(err, cap, "start: \"peers\"[%zu] is not a device name", i);
    return -EINVAL;
  }
  return 0;
}

int pirec_fleet_command_check(const json_t *cmd, char *err, size_t cap)
{
  if (!json_is_object(cmd)) {
    snprintf(err, cap, "a command must be a JSON object");
    return -EINVAL;
  }
  const json_t *id = json_object_get(cmd, "id");
  const char *verb = json_string_value(json_object_get(cmd, "cmd"));
  if (!json_is_string(id) || !pirec_fleet_name_ok(json_string_value(id))) {
    snprintf(err, cap, "\"id\" must be 1..64 of A-Z a-z 0-9 _ . -");
    return -EINVAL;
  }
  if (!verb ||
      (strcmp(verb, "start") && strcmp(verb, "stop") && strcmp(verb, "trial") && strcmp(verb, "note"))) {
    snprintf(err, cap, "\"cmd\" must be start, stop, trial or note");
    return -EINVAL;
  }
  if (strcmp(verb, "start") == 0)
    return check_start(cmd, err, cap);
  const json_t *label = json_object_get(cmd, "label");
  if (strcmp(verb, "trial") == 0 && label && (!json_is_string(label) || json_string_length(label) > 64)) {
    snprintf(err, cap, "trial: \"label\" must be a string of at most 64 bytes");
    return -EINVAL;
  }
  const json_t *text = json_object_get(cmd, "text");
  if (strcmp(verb, "note") == 0 && (!json_is_string(text) || json_string_length(text) == 0 ||
                                    json_string_length(text) > PIREC_FLEET_NOTE_MAX)) {
    snprintf(err, cap, "note: \"text\" must be a string of 1..%d bytes", PIREC_FLEET_NOTE_MAX);
    return -EINVAL;
  }
  return 0;
}

json_t *pirec_fleet_clock_json(void)
{
  struct pirec_clock_sync cs;
  if (pirec_clock_sync_read(&cs) < 0)
    return NULL;
  return json_pack("{s:b,s:I,s:I,s:i,s:s}", "synchronised", cs.synchronised, "max_error_ns",
                   (json_int_t)cs.max_error_ns, "est_error_ns", (json_int_t)cs.est_error_ns, "status",
                   cs.status, "source", "adjtimex");
}
