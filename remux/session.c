/* See remux-internal.h: the verdict on a session's state, from its session.json and whether the
 * controller it names is still alive. */
#include "remux-internal.h"

#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char *pirec__remux_session_state_name(enum pirec__remux_session_state s)
{
  switch (s) {
  case PIREC__REMUX_SESSION_FINISHED: return "finished";
  case PIREC__REMUX_SESSION_LIVE: return "live";
  case PIREC__REMUX_SESSION_CRASHED: return "crashed";
  case PIREC__REMUX_SESSION_NONE: break;
  }
  return "";
}

/* This boot's id ("" when the kernel does not say). */
static void boot_id(char *out, size_t cap)
{
  FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
  out[0] = '\0';
  if (!f)
    return;
  if (fgets(out, (int)cap, f))
    out[strcspn(out, "\n")] = '\0';
  fclose(f);
}

static enum pirec__remux_session_state judge(json_t *m, struct pirec__remux_session *out)
{
  char host[256] = "", boot[64];
  json_t *h = json_object_get(m, "host");
  const char *recorded_boot = json_string_value(json_object_get(h, "boot_id"));
  out->pid = (int)json_integer_value(json_object_get(h, "pid"));
  snprintf(out->host, sizeof out->host, "%s", json_string_value(json_object_get(h, "hostname")) ?: "");
  if (json_is_true(json_object_get(m, "final")))
    return PIREC__REMUX_SESSION_FINISHED;
  gethostname(host, sizeof host - 1);
  boot_id(boot, sizeof boot);
  if (strcmp(out->host, host) != 0) {
    snprintf(out->why, sizeof out->why, "session.json never finalised; recorded on host '%s', not this one",
             out->host);
    return PIREC__REMUX_SESSION_CRASHED;
  }
  if (recorded_boot && boot[0] && strcmp(recorded_boot, boot) != 0) {
    snprintf(out->why, sizeof out->why,
             "session.json never finalised; its controller (pid %d) ran before this machine last booted",
             out->pid);
    return PIREC__REMUX_SESSION_CRASHED;
  }
  if (out->pid > 0 && (kill(out->pid, 0) == 0 || errno == EPERM)) {
    snprintf(out->why, sizeof out->why, "pid %d is still recording it", out->pid);
    return PIREC__REMUX_SESSION_LIVE;
  }
  snprintf(out->why, sizeof out->why, "session.json never finalised; its controller (pid %d) is gone",
           out->pid);
  return PIREC__REMUX_SESSION_CRASHED;
}

enum pirec__remux_session_state pirec__remux_session_judge(const char *path, struct pirec__remux_session *out)
{
  char manifest[4200];
  memset(out, 0, sizeof *out);
  snprintf(out->dir, sizeof out->dir, "%s", path);
  for (int up = 0; up < 3; up++) {
    snprintf(manifest, sizeof manifest, "%s/session.json", out->dir);
    json_t *m = json_load_file(manifest, 0, NULL);
    if (m) {
      out->state = judge(m, out);
      json_decref(m);
      return out->state;
    }
    char *slash = strrchr(out->dir, '/');
    if (!slash || slash == out->dir)
      break;
    *slash = '\0';
  }
  out->dir[0] = '\0';
  return PIREC__REMUX_SESSION_NONE;
}
