/* Files pirec-web hands out: the page's static files and the sessions under the data directory,
 * never anything outside them (docs/HTTP.md, "Downloads"). */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "web-int.h"

/* Most files a listing names per session, and sessions per listing: a listing stays a reply of
 * reasonable size even over a data directory of years. */
#define MAX_FILES    200
#define MAX_SESSIONS 500

int pirec__web_resolve(const char *root, const char *rel, char *out, size_t cap)
{
  if (!*rel || rel[0] == '/' || strstr(rel, "..") || strchr(rel, '\\'))
    return -EACCES;
  char joined[PATH_MAX], real_root[PATH_MAX], real[PATH_MAX];
  int n = snprintf(joined, sizeof joined, "%s/%s", root, rel);
  if (n < 0 || (size_t)n >= sizeof joined)
    return -ENAMETOOLONG;
  if (!realpath(root, real_root))
    return -errno;
  /* realpath follows every symlink: a link that leads out of the root shows in the result. */
  if (!realpath(joined, real))
    return -errno;
  size_t rl = strlen(real_root);
  if (strncmp(real, real_root, rl) != 0 || real[rl] != '/')
    return -EACCES;
  struct stat st;
  if (stat(real, &st) < 0)
    return -errno;
  if (!S_ISREG(st.st_mode))
    return -EACCES;
  n = snprintf(out, cap, "%s", real);
  return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

const char *pirec__web_mime(const char *path)
{
  static const char *const types[][2] = {
      {".html", "text/html; charset=utf-8"},
      {".js", "text/javascript; charset=utf-8"},
      {".css", "text/css; charset=utf-8"},
      {".json", "application/json"},
      {".csv", "text/csv; charset=utf-8"},
      {".png", "image/png"},
      {".svg", "image/svg+xml"},
      {".jpg", "image/jpeg"},
      {".mp4", "video/mp4"},
      {".mkv", "video/x-matroska"},
      {".txt", "text/plain; charset=utf-8"},
      {".ico", "image/x-icon"},
  };
  const char *dot = strrchr(path, '.');
  for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
    if (strcmp(dot, types[i][0]) == 0)
      return types[i][1];
  return "application/octet-stream";
}

struct list_work {
  uv_work_t req;
  struct pirec_web *web;
  struct http_conn *conn; /* NULL once the client went away */
  char *root;
  json_t *result;
};

static int is_video(const char *name)
{
  const char *dot = strrchr(name, '.');
  return dot && (strcmp(dot, ".mkv") == 0 || strcmp(dot, ".h264") == 0 || strcmp(dot, ".mjpeg") == 0) &&
         !strstr(name, "_timed.mkv");
}

/* The regular files of dir (and of its subdirectories, one level down) into files; their sizes
 * summed into *bytes. Symlinks are neither listed nor followed. */
static void list_files(const char *dir, const char *prefix, int depth, json_t *files, uint64_t *bytes,
                       int *videos, int *outputs)
{
  DIR *d = opendir(dir);
  if (!d)
    return;
  struct dirent *e;
  while ((e = readdir(d)) && json_array_size(files) < MAX_FILES) {
    if (e->d_name[0] == '.')
      continue;
    char path[PATH_MAX], rel[PATH_MAX];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    snprintf(rel, sizeof rel, "%s%s", prefix, e->d_name);
    if (lstat(path, &st) < 0)
      continue;
    if (S_ISDIR(st.st_mode) && depth > 0) {
      char sub[PATH_MAX + 1];
      snprintf(sub, sizeof sub, "%s/", rel);
      list_files(path, sub, depth - 1, files, bytes, videos, outputs);
    } else if (S_ISREG(st.st_mode)) {
      *bytes += (uint64_t)st.st_size;
      *videos += is_video(e->d_name);
      *outputs += strstr(e->d_name, ".mp4") != NULL || strstr(e->d_name, "_timed.mkv") != NULL;
      json_array_append_new(files, json_pack("{s:s,s:I}", "path", rel, "bytes", (json_int_t)st.st_size));
    }
  }
  closedir(d);
}

static json_t *describe_session(const char *root, const char *name)
{
  char dir[PATH_MAX];
  snprintf(dir, sizeof dir, "%s/%s", root, name);
  json_t *files = json_array();
  uint64_t bytes = 0;
  int videos = 0, outputs = 0;
  list_files(dir, "", 1, files, &bytes, &videos, &outputs);
  const char *remux = outputs == 0 ? "none" : outputs >= videos ? "done" : "partial";
  return json_pack("{s:s,s:I,s:s,s:i,s:o}", "name", name, "bytes", (json_int_t)bytes, "remux", remux,
                   "videos", videos, "files", files);
}

static int by_name_desc(const void *a, const void *b)
{
  return -strcmp(*(char *const *)a, *(char *const *)b);
}

/* Threadpool: every session directory, newest first (their names start with the UTC time). */
static void list_work(uv_work_t *req)
{
  struct list_work *lw = container_of(req, struct list_work, req);
  char *names[MAX_SESSIONS];
  size_t n = 0;
  DIR *d = opendir(lw->root);
  struct dirent *e;
  while (d && (e = readdir(d)) && n < MAX_SESSIONS) {
    struct stat st;
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", lw->root, e->d_name);
    if (e->d_name[0] != '.' && lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
      names[n++] = strdup(e->d_name);
  }
  if (d)
    closedir(d);
  qsort(names, n, sizeof names[0], by_name_desc);
  json_t *list = json_array();
  for (size_t i = 0; i < n; i++) {
    if (names[i])
      json_array_append_new(list, describe_session(lw->root, names[i]));
    free(names[i]);
  }
  lw->result = json_pack("{s:s,s:o}", "data_dir", lw->root, "sessions", list);
}

static void list_done(uv_work_t *req, int status)
{
  struct list_work *lw = container_of(req, struct list_work, req);
  if (lw->conn) {
    lw->conn->work = NULL;
    if (lw->result)
      pirec__web_reply_json(lw->conn, 200, lw->result);
    else
      pirec__web_reply_error(lw->conn, 500, "cannot list the sessions");
  }
  json_decref(lw->result);
  free(lw->root);
  free(lw);
}

int pirec__web_list_sessions(struct pirec_web *w, struct http_conn *c)
{
  struct list_work *lw = calloc(1, sizeof *lw);
  if (!lw || !(lw->root = strdup(w->s.data_dir))) {
    free(lw);
    return -ENOMEM;
  }
  lw->web = w;
  lw->conn = c;
  int err = uv_queue_work(w->loop, &lw->req, list_work, list_done);
  if (err < 0) {
    free(lw->root);
    free(lw);
    return err;
  }
  c->work = lw;
  return 0;
}

void pirec__web_list_detach(struct http_conn *c)
{
  if (c->work)
    c->work->conn = NULL;
  c->work = NULL;
}
