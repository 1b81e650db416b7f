/* Where things are: the control socket's candidate paths, the recorder executables, and the
 * config snapshot the recorders are spawned with. The lowest layer of controller/. */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "controller-int.h"
#include "pirec/container_of.h"

void pirec_controller_options_default(struct pirec_controller_options *o)
{
  memset(o, 0, sizeof(*o));
  o->handle_signals = 1;
  o->ready_timeout_ms = 10000;
  o->stop_timeout_ms = 10000;
}

static int path_join(char *buf, size_t cap, const char *a, const char *b)
{
  int n = snprintf(buf, cap, "%s/%s", a, b);
  return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int pirec__control_socket_candidates(const char *config_path, char paths[][108], int max)
{
  int n = 0;
  if (config_path && n < max) {
    struct pirec_config *cfg = NULL;
    if (pirec_config_load(config_path, &cfg, NULL) == 0) {
      if (*pirec_config_get_string(cfg, "control", "socket")) /* empty: the defaults below */
        snprintf(paths[n++], 108, "%s", pirec_config_get_string(cfg, "control", "socket"));
      pirec_config_free(cfg);
    }
  }
  const char *rt = getenv("RUNTIME_DIRECTORY");
  if (rt && *rt && n < max) {
    /* systemd joins several RuntimeDirectory= entries with ':'; ours is the first. */
    char first[PATH_MAX];
    snprintf(first, sizeof first, "%s", rt);
    char *colon = strchr(first, ':');
    if (colon)
      *colon = '\0';
    if (path_join(paths[n], 108, first, "control.sock") == 0)
      n++;
  }
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  if (xdg && *xdg && n < max) {
    if (path_join(paths[n], 108, xdg, "pirec/control.sock") == 0)
      n++;
  }
  if (n < max)
    snprintf(paths[n++], 108, "/run/pirec/control.sock");
  if (n < max)
    snprintf(paths[n++], 108, "/tmp/pirec-%u/control.sock", (unsigned)getuid());
  return n;
}

int pirec_controller_socket_default(const char *config_path, char *buf, size_t cap)
{
  char paths[5][108];
  int n = pirec__control_socket_candidates(config_path, paths, 5);
  /* /run/pirec is systemd's (RuntimeDirectory=pirec) or root's; anyone else gets /tmp/pirec-UID
   * when there is no runtime directory. */
  const char *pick = paths[n - 1];
  for (int i = 0; i < n; i++) {
    if (strcmp(paths[i], "/run/pirec/control.sock") == 0 && geteuid() != 0)
      continue;
    pick = paths[i];
    break;
  }
  int len = snprintf(buf, cap, "%s", pick);
  return len < 0 || (size_t)len >= cap ? -ENAMETOOLONG : 0;
}

int pirec__find_program(struct pirec_controller *c, const char *name, char *out, size_t cap)
{
  char dir[PATH_MAX];
  if (c->recorder_dir) {
    snprintf(dir, sizeof dir, "%s", c->recorder_dir);
  } else {
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (n < 0)
      n = 0;
    dir[n] = '\0';
    char *slash = strrchr(dir, '/');
    if (slash)
      *slash = '\0';
  }
  if (path_join(out, cap, dir, name) == 0 && access(out, X_OK) == 0)
    return 0;
  if (c->recorder_dir)
    return -ENOENT;
  /* Installed layout: every binary in one bin directory, found through PATH. */
  const char *path = getenv("PATH");
  if (!path)
    return -ENOENT;
  char copy[4096];
  snprintf(copy, sizeof copy, "%s", path);
  for (char *save = NULL, *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
    if (path_join(out, cap, d, name) == 0 && access(out, X_OK) == 0)
      return 0;
  }
  return -ENOENT;
}

void pirec__report(struct pirec_controller *c, const char *fmt, ...)
{
  if (!c->opts.report)
    return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  c->opts.report(line, c->opts.report_user);
}

int pirec__mkdir_parents(const char *path, mode_t mode)
{
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *p = buf + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(buf, mode) < 0 && errno != EEXIST)
      return -errno;
    *p = '/';
  }
  return 0;
}

/* Writes cfg's exact source text to c->snapshot_path (created on first use next to the control
 * socket, a directory only this controller's user can write), by rename so a recorder starting at
 * that moment reads the old text or the new one, never a mix. Recorders are spawned with this
 * file, not the user's: the file a user edits between start-up and a crash-restart must not reach
 * a recorder that the controller has not checked. Returns 0 or -errno. */
int pirec__snapshot_write(struct pirec_controller *c, const struct pirec_config *cfg)
{
  if (!*c->snapshot_path) {
    char dir[sizeof c->socket_path];
    snprintf(dir, sizeof dir, "%s", c->socket_path);
    char *slash = strrchr(dir, '/');
    if (slash)
      *slash = '\0';
    snprintf(c->snapshot_path, sizeof c->snapshot_path, "%s/config-%d.ini", *dir ? dir : ".", (int)getpid());
    int err = pirec__mkdir_parents(c->snapshot_path, 0700);
    if (err < 0) {
      *c->snapshot_path = '\0';
      return err;
    }
  }
  char tmp[PATH_MAX + 8];
  snprintf(tmp, sizeof tmp, "%s.tmp", c->snapshot_path);
  size_t len = 0;
  const char *src = pirec_config_source(cfg, &len);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  int err = 0;
  for (size_t off = 0; off < len && !err;) {
    ssize_t n = write(fd, src + off, len - off);
    if (n < 0 && errno != EINTR)
      err = -errno;
    if (n > 0)
      off += (size_t)n;
  }
  if (close(fd) < 0 && !err)
    err = -errno;
  if (!err && rename(tmp, c->snapshot_path) < 0)
    err = -errno;
  if (err)
    unlink(tmp);
  return err;
}

static void on_snapshot_written(struct pirec_fs_req *req)
{
  struct pirec_controller *c = container_of(req, struct pirec_controller, snapshot_req);
  void (*done)(struct pirec_controller *, int) = c->snapshot_done;
  int err = req->result;

  pirec_fs_req_cleanup(req);
  c->snapshot_busy = 0;
  done(c, err);
}

int pirec__snapshot_write_async(struct pirec_controller *c, const struct pirec_config *cfg,
                                void (*done)(struct pirec_controller *c, int err))
{
  size_t len = 0;
  const char *src = pirec_config_source(cfg, &len);

  if (c->snapshot_busy)
    return -EBUSY;
  if (!*c->snapshot_path)
    return -ENOENT; /* written once at start-up, before the loop runs */
  /* A new name per reload, config-PID-N.ini: the file a recorder may be reading now is never
   * touched. */
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s", c->snapshot_path);
  char *slash = strrchr(dir, '/');
  if (slash)
    *slash = '\0';
  int n = snprintf(c->snapshot_next, sizeof c->snapshot_next, "%s/config-%d-%u.ini", slash ? dir : ".",
                   (int)getpid(), ++c->snapshot_gen);
  if (n < 0 || (size_t)n >= sizeof c->snapshot_next)
    return -ENAMETOOLONG;
  c->snapshot_done = done;
  int err =
      pirec_fs_write_atomic(c->loop, &c->snapshot_req, c->snapshot_next, src, len, 0600, on_snapshot_written);
  if (err < 0) {
    pirec_fs_req_cleanup(&c->snapshot_req);
    return err;
  }
  c->snapshot_busy = 1;
  return 0;
}

static void on_unlinked(struct pirec_fs_req *req)
{
  pirec_fs_req_cleanup(req);
  free(req);
}

void pirec__unlink_later(struct pirec_controller *c, const char *path)
{
  struct pirec_fs_req *req = calloc(1, sizeof *req);
  if (req && pirec_fs_unlink(c->loop, req, path, on_unlinked) == 0)
    return;
  if (req)
    pirec_fs_req_cleanup(req);
  free(req);
}

void pirec__snapshot_adopt(struct pirec_controller *c)
{
  char old[PATH_MAX];

  snprintf(old, sizeof old, "%s", c->snapshot_path);
  snprintf(c->snapshot_path, sizeof c->snapshot_path, "%s", c->snapshot_next);
  *c->snapshot_next = '\0';
  pirec__unlink_later(c, old);
}

void pirec__snapshot_discard(struct pirec_controller *c)
{
  if (*c->snapshot_next)
    pirec__unlink_later(c, c->snapshot_next);
  *c->snapshot_next = '\0';
}
