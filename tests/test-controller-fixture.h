/* A running `pirec record` for the controller tests: the real binary, its real recorders, a real
 * control socket and real files in a temporary directory. Included by test-controller*.c. */
#ifndef PIREC_TEST_CONTROLLER_FIXTURE_H
#define PIREC_TEST_CONTROLLER_FIXTURE_H

#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "test-controller-util.h"

struct ctl {
  char *tmp;
  char sock[256];
  char out[4200];
  char cfg[4200];
  char notify[256];
  int notify_fd;
  int camera;
  struct tu_proc proc;
  int running;
};

/* [session] remux_after for the next ctl_start */
static int fixture_remux_after;

static inline int have_camera(void)
{
  return access(tu_program("pirec-camera"), X_OK) == 0;
}

/* Writes the config and starts `pirec record -c CFG --wait`, then waits for READY=1 (sd_notify) or,
 * in a build without libsystemd, for the socket to accept connections. */
static inline void ctl_start(struct ctl *c, int camera, const char *extra_config)
{
  memset(c, 0, sizeof *c);
  c->tmp = tu_tmpdir("ctl");
  assert_non_null(c->tmp);
  c->camera = camera;
  /* sun_path is short: keep the socket in a short directory of its own. */
  snprintf(c->sock, sizeof c->sock, "%s/c.sock", c->tmp);
  if (strlen(c->sock) > 100)
    fail_msg("temporary directory path too long for a socket");
  snprintf(c->notify, sizeof c->notify, "%s/n.sock", c->tmp);
  snprintf(c->out, sizeof c->out, "%s/out", c->tmp);
  snprintf(c->cfg, sizeof c->cfg, "%s/pirec.conf", c->tmp);
  FILE *f = fopen(c->cfg, "w");
  assert_non_null(f);
  fprintf(f,
          "[session]\noutput_dir = %s\nclocks_interval = 200ms\nremux_after = %s\n"
          "[control]\nsocket = %s\n"
          "[notes]\nenabled = true\nmax_length = 4096\n",
          c->out, fixture_remux_after ? "true" : "false", c->sock);
  if (camera)
    fprintf(f, "[camera.cam0]\nsource = lavfi\nsize = 160x120\nfps = 10\n"
               "preset = ultrafast\n");
  if (extra_config)
    fputs(extra_config, f);
  fclose(f);
  c->notify_fd = tu_notify_open(c->notify);
  assert_true(c->notify_fd >= 0);
  static char env_notify[300];
  snprintf(env_notify, sizeof env_notify, "NOTIFY_SOCKET=%s", c->notify);
  /* A watchdog like the unit's (WatchdogSec=), short so its first ping comes at once. */
  const char *env[] = {env_notify, "WATCHDOG_USEC=200000", NULL};
  const char *argv[] = {tu_program("pirec"), "record", "-c", c->cfg, "--wait", NULL};
  assert_int_equal(tu_proc_start(&c->proc, argv, env), 0);
  c->running = 1;
#ifdef PIREC_TEST_EXPECT_SD_NOTIFY
  /* Built with libsystemd, the Type=notify unit depends on these: READY=1 once the socket is up,
   * then WATCHDOG=1 at half the interval. */
  if (tu_notify_wait(c->notify_fd, "READY=1", 15000) != 0)
    fail_msg("pirec record sent no READY=1 to NOTIFY_SOCKET within 15 s");
  if (tu_notify_wait(c->notify_fd, "WATCHDOG=1", 5000) != 0)
    fail_msg("pirec record sent no WATCHDOG=1 within 5 s with WATCHDOG_USEC=200000");
#else
  if (tu_notify_wait(c->notify_fd, "READY=1", 15000) != 0) {
    int fd = tu_sock_connect(c->sock, 15000);
    if (fd < 0)
      fail_msg("pirec record did not become ready within 15 s");
    close(fd);
  }
#endif
  /* Nobody reads STATUS= updates from here on: close the socket so they are refused at once
   * instead of filling its queue (sd_notify's send blocks on a full queue). */
  close(c->notify_fd);
  c->notify_fd = -1;
  unlink(c->notify);
}

/* One command over a fresh connection; fails the test when there is no reply. */
static inline json_t *ctl_call(struct ctl *c, const char *json_text, int timeout_ms)
{
  json_t *r = tu_sock_call(c->sock, json_text, timeout_ms);
  if (!r)
    fail_msg("no reply to %s within %d ms", json_text, timeout_ms);
  return r;
}

static inline const char *jstr(json_t *o, const char *key)
{
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : "";
}

static inline json_int_t jint(json_t *o, const char *key)
{
  return json_integer_value(json_object_get(o, key));
}

static inline void expect_reply(json_t *r, const char *want)
{
  if (strcmp(jstr(r, "reply"), want) != 0) {
    char *t = json_dumps(r, JSON_COMPACT);
    fail_msg("expected reply '%s', got %s", want, t);
  }
}

/* Waits until `pirec status` shows every recorder running (and, with min_restarts, restarted). */
static inline json_t *ctl_wait_modules(struct ctl *c, int min_restarts, int timeout_ms)
{
  int64_t deadline = tu_now_ms() + timeout_ms;
  for (;;) {
    json_t *st = ctl_call(c, "{\"id\":1,\"cmd\":\"status\"}", 5000);
    json_t *mods = json_object_get(st, "modules");
    int ok = json_object_size(mods) > 0;
    const char *name;
    json_t *m;
    json_object_foreach(mods, name, m)
    {
      if (strcmp(jstr(m, "state"), "running") != 0)
        ok = 0;
      if (strcmp(name, "notes") == 0 && jint(m, "restarts") < min_restarts)
        ok = 0;
    }
    if (ok)
      return st;
    json_decref(st);
    if (tu_now_ms() > deadline)
      fail_msg("recorders not running within %d ms", timeout_ms);
    /* the status poll is the client's only view; 50 ms between looks */
    usleep(50000);
  }
}

/* Starts `pirec record` with notes only, waits for it to be running and starts a session with
 * start_cmd (a JSON start command); its session directory goes to dir. */
static inline void ctl_start_session(struct ctl *c, const char *start_cmd, char *dir, size_t cap)
{
  ctl_start(c, 0, NULL);
  json_decref(ctl_wait_modules(c, 0, 15000));
  json_t *r = ctl_call(c, start_cmd, 30000);
  expect_reply(r, "started");
  snprintf(dir, cap, "%s", jstr(r, "session_dir"));
  json_decref(r);
}

/* SIGTERM, then the exit status must be 0 and the socket gone. */
static inline void ctl_stop_process(struct ctl *c, int expect_status)
{
  kill(c->proc.pid, SIGTERM);
  int status = tu_proc_wait(&c->proc, 30000);
  c->running = 0;
  if (!WIFEXITED(status))
    fail_msg("pirec record did not exit by itself after SIGTERM (status %d)", status);
  assert_int_equal(WEXITSTATUS(status), expect_status);
  struct stat st;
  assert_int_not_equal(lstat(c->sock, &st), 0);
}

static inline void ctl_cleanup(struct ctl *c)
{
  if (c->running) {
    kill(c->proc.pid, SIGKILL);
    tu_proc_wait(&c->proc, 5000);
  }
  if (c->notify_fd >= 0)
    close(c->notify_fd);
  tu_rm_rf(c->tmp);
  free(c->tmp);
}

static inline json_t *load_manifest(const char *dir)
{
  char path[4400];
  snprintf(path, sizeof path, "%s/session.json", dir);
  json_error_t e;
  json_t *j = json_load_file(path, 0, &e);
  if (!j)
    fail_msg("'%s': %s (line %d)", path, e.text, e.line);
  return j;
}

static inline void load_csv_in(const char *dir, const char *name, struct tu_csv *csv)
{
  char path[4400];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  if (tu_csv_load(path, csv) != 0)
    fail_msg("'%s' is missing or not complete CSV", path);
}

/* Counts events.csv rows of one kind. */
static inline int count_events(const struct tu_csv *ev, const char *kind, const char *module)
{
  int ce = tu_csv_col(ev, "event"), cm = tu_csv_col(ev, "module"), n = 0;
  for (size_t r = 1; r < ev->rows; r++)
    if (strcmp(ev->fields[r][ce], kind) == 0 && (!module || strcmp(ev->fields[r][cm], module) == 0))
      n++;
  return n;
}

#endif
