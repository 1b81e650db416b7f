#include "pirec/fs.h"

#include "pirec/error.h"
#include "pirec/container_of.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum fs_op { OP_READ = 1, OP_WRITE_ATOMIC, OP_APPEND, OP_UNLINK, OP_MKDIR_P };

/* Temporary names must be unique across threads of this process (the pid covers other processes),
 * so two concurrent atomic writes to the same path never share a temporary file. */
static atomic_uint_fast64_t temp_counter;

/* Records the failure in req and returns err. The message is formatted on the thread that ran the
 * operation; pirec_strerror's buffer is thread-local, so this is safe in the threadpool. */
__attribute__((format(printf, 3, 4))) static int fail(struct pirec_fs_req *req, int err, const char *fmt, ...)
{
  char line[PATH_MAX * 2 + 256];
  va_list ap;
  int n;

  va_start(ap, fmt);
  n = vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  if (n >= 0 && (size_t)n < sizeof line - 2)
    snprintf(line + n, sizeof line - (size_t)n, ": %s", pirec_strerror(err));
  free(req->message);
  req->message = strdup(line); /* NULL on out of memory: the result still says what happened */
  req->result = err;
  return err;
}

static int write_all(int fd, const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

static int do_read(struct pirec_fs_req *req)
{
  struct stat st;
  size_t cap, size = 0;
  char *data;
  int fd, err = 0;

  fd = open(req->path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return fail(req, -errno, "cannot open '%s'", req->path);
  if (fstat(fd, &st) < 0) {
    err = fail(req, -errno, "cannot stat '%s'", req->path);
    close(fd);
    return err;
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return fail(req, -EISDIR, "cannot read '%s'", req->path);
  }
  if (st.st_size > 0 && (uint64_t)st.st_size > req->limit) {
    close(fd);
    return fail(req, -EFBIG, "cannot read '%s' (%lld bytes, limit %zu)", req->path, (long long)st.st_size,
                req->limit);
  }
  /* st_size is only a hint: /proc and /sys files report 0 and a file may grow while we read, so read
   * until end of file and enforce the limit on what actually arrives. */
  cap = (st.st_size > 0 ? (size_t)st.st_size : 4096) + 1;
  data = malloc(cap);
  if (!data) {
    close(fd);
    return fail(req, -ENOMEM, "cannot read '%s'", req->path);
  }
  for (;;) {
    ssize_t n;
    if (size + 1 == cap) {
      size_t next = cap * 2;
      char *grown;
      if (size > req->limit) {
        err = fail(req, -EFBIG, "cannot read '%s' (more than the limit of %zu bytes)", req->path, req->limit);
        break;
      }
      grown = realloc(data, next);
      if (!grown) {
        err = fail(req, -ENOMEM, "cannot read '%s'", req->path);
        break;
      }
      data = grown;
      cap = next;
    }
    n = read(fd, data + size, cap - 1 - size);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      err = fail(req, -errno, "cannot read '%s'", req->path);
      break;
    }
    if (n == 0)
      break;
    size += (size_t)n;
    if (size > req->limit) {
      err = fail(req, -EFBIG, "cannot read '%s' (more than the limit of %zu bytes)", req->path, req->limit);
      break;
    }
  }
  close(fd);
  if (err < 0) {
    free(data);
    return err;
  }
  data[size] = '\0';
  req->contents = data;
  req->size = size;
  return 0;
}

/* Splits path into its directory ("." when there is none) for the temporary file and the
 * directory sync. */
static void dir_of(const char *path, char *dir, size_t cap)
{
  const char *slash = strrchr(path, '/');
  size_t n;

  if (!slash) {
    snprintf(dir, cap, ".");
    return;
  }
  n = (size_t)(slash - path);
  if (n == 0)
    n = 1; /* "/file": the directory is "/" */
  if (n >= cap)
    n = cap - 1;
  memcpy(dir, path, n);
  dir[n] = '\0';
}

static int do_write_atomic(struct pirec_fs_req *req)
{
  char dir[PATH_MAX], tmp[PATH_MAX];
  const char *base = strrchr(req->path, '/');
  size_t dlen;
  int fd = -1, dfd, err;

  base = base ? base + 1 : req->path;
  if (*base == '\0')
    return fail(req, -EISDIR, "cannot write '%s'", req->path);
  dir_of(req->path, dir, sizeof dir);
  dlen = (size_t)(base - req->path);

  /* A hidden name in the same directory, so rename() stays within one file system. The base name
   * is shortened so the temporary name fits NAME_MAX even for long targets. */
  for (int attempt = 0; attempt < 16; attempt++) {
    uint64_t serial = atomic_fetch_add(&temp_counter, 1);
    int n = snprintf(tmp, sizeof tmp, "%.*s.%.200s.%ld-%llu.tmp", (int)dlen, req->path, base, (long)getpid(),
                     (unsigned long long)serial);
    if (n < 0 || (size_t)n >= sizeof tmp)
      return fail(req, -ENAMETOOLONG, "cannot write '%s'", req->path);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, req->mode);
    if (fd >= 0 || errno != EEXIST)
      break;
  }
  if (fd < 0)
    return fail(req, -errno, "cannot create temporary file '%s' for '%s'", tmp, req->path);

  err = write_all(fd, req->buf, req->len);
  if (err < 0) {
    fail(req, err, "cannot write temporary file '%s' for '%s'", tmp, req->path);
    goto fail_open;
  }
  if (fsync(fd) < 0) {
    err = fail(req, -errno, "cannot sync temporary file '%s' for '%s'", tmp, req->path);
    goto fail_open;
  }
  /* close() can report a deferred write error (NFS); the data is not safe if it does. */
  if (close(fd) < 0) {
    fd = -1;
    err = fail(req, -errno, "cannot close temporary file '%s' for '%s'", tmp, req->path);
    goto fail_closed;
  }
  fd = -1;
  if (rename(tmp, req->path) < 0) {
    err = fail(req, -errno, "cannot rename '%s' to '%s'", tmp, req->path);
    goto fail_closed;
  }
  /* Without this the rename itself may not survive a power loss, and the old file comes back. */
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return fail(req, -errno, "cannot open directory '%s' to sync '%s'", dir, req->path);
  if (fsync(dfd) < 0) {
    err = fail(req, -errno, "cannot sync directory '%s' after replacing '%s'", dir, req->path);
    close(dfd);
    return err;
  }
  close(dfd);
  return 0;

fail_open:
  close(fd);
fail_closed:
  unlink(tmp);
  return err;
}

static int do_append(struct pirec_fs_req *req)
{
  int fd, err;

  fd = open(req->path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return fail(req, -errno, "cannot open '%s' for appending", req->path);
  err = write_all(fd, req->buf, req->len);
  if (err < 0) {
    close(fd);
    return fail(req, err, "cannot append to '%s'", req->path);
  }
  if (close(fd) < 0)
    return fail(req, -errno, "cannot close '%s' after appending", req->path);
  return 0;
}

static int do_unlink(struct pirec_fs_req *req)
{
  if (unlink(req->path) < 0)
    return fail(req, -errno, "cannot remove '%s'", req->path);
  return 0;
}

/* Creates one component; an existing directory counts as success. */
static int mkdir_one(struct pirec_fs_req *req, char *prefix, int last)
{
  struct stat st;
  int err;

  if (mkdir(prefix, (mode_t)req->mode) == 0)
    return 0;
  err = -errno;
  if (err != -EEXIST)
    return fail(req, err, "cannot create directory '%s' (at '%s')", req->path, prefix);
  /* EEXIST also covers a file or a dangling link in the way; stat follows links so a link to a
   * directory is accepted, as mkdir -p does. */
  if (stat(prefix, &st) == 0 && S_ISDIR(st.st_mode))
    return 0;
  err = last ? -EEXIST : -ENOTDIR;
  return fail(req, err, "cannot create directory '%s' ('%s' exists and is not a directory)", req->path,
              prefix);
}

static int do_mkdir_p(struct pirec_fs_req *req)
{
  char *p, *copy = strdup(req->path); /* cut at each '/' in turn; req->path stays whole for messages */
  size_t len;
  int err = 0;

  if (!copy)
    return fail(req, -ENOMEM, "cannot create directory '%s'", req->path);
  len = strlen(copy);
  while (len > 1 && copy[len - 1] == '/')
    copy[--len] = '\0';
  p = copy;
  while (*p == '/')
    p++;
  for (;;) {
    char *slash = strchr(p, '/');
    if (!slash)
      break;
    *slash = '\0';
    err = mkdir_one(req, copy, 0);
    *slash = '/';
    if (err < 0)
      break;
    p = slash + 1;
    while (*p == '/')
      p++;
  }
  if (err == 0)
    err = mkdir_one(req, copy, 1);
  free(copy);
  return err;
}

static int run(struct pirec_fs_req *req)
{
  int err;

  switch (req->op) {
  case OP_READ: err = do_read(req); break;
  case OP_WRITE_ATOMIC: err = do_write_atomic(req); break;
  case OP_APPEND: err = do_append(req); break;
  case OP_UNLINK: err = do_unlink(req); break;
  case OP_MKDIR_P: err = do_mkdir_p(req); break;
  default: err = -EINVAL;
  }
  /* The data copy is no longer needed; free it now rather than at cleanup. */
  free(req->buf);
  req->buf = NULL;
  req->result = err;
  return err;
}

static void work_cb(uv_work_t *work)
{
  run(container_of(work, struct pirec_fs_req, work));
}

static void after_work_cb(uv_work_t *work, int status)
{
  struct pirec_fs_req *req = container_of(work, struct pirec_fs_req, work);

  if (status == UV_ECANCELED) {
    free(req->buf);
    req->buf = NULL;
    fail(req, UV_ECANCELED, "cannot complete operation on '%s'", req->path);
  }
  req->cb(req);
}

/* The one front end: copies what the engine needs, then runs it here (cb == NULL) or in the
 * threadpool. */
static int submit(uv_loop_t *loop, struct pirec_fs_req *req, int op, const char *path, const void *data,
                  size_t len, size_t limit, int mode, pirec_fs_cb cb)
{
  int err;

  if (!req)
    return -EINVAL;
  req->result = 0;
  req->message = NULL;
  req->contents = NULL;
  req->size = 0;
  req->cb = cb;
  req->op = op;
  req->path = NULL;
  req->buf = NULL;
  req->len = len;
  req->limit = limit;
  req->mode = mode;
  if (!path || !*path || (cb && !loop) || (len > 0 && !data))
    return fail(req, -EINVAL, "cannot operate on '%s'", path ? path : "(null)");
  req->path = strdup(path);
  if (!req->path)
    return fail(req, -ENOMEM, "cannot operate on '%s'", path);
  if (len > 0) {
    req->buf = malloc(len);
    if (!req->buf)
      return fail(req, -ENOMEM, "cannot copy %zu bytes for '%s'", len, path);
    memcpy(req->buf, data, len);
  }
  if (!cb)
    return run(req);
  err = uv_queue_work(loop, &req->work, work_cb, after_work_cb);
  if (err < 0)
    return fail(req, err, "cannot queue operation on '%s'", path);
  return 0;
}

int pirec_fs_read_file(uv_loop_t *loop, struct pirec_fs_req *req, const char *path, size_t max_bytes,
                       pirec_fs_cb cb)
{
  return submit(loop, req, OP_READ, path, NULL, 0, max_bytes, 0, cb);
}

int pirec_fs_write_atomic(uv_loop_t *loop, struct pirec_fs_req *req, const char *path, const void *data,
                          size_t len, mode_t mode, pirec_fs_cb cb)
{
  return submit(loop, req, OP_WRITE_ATOMIC, path, data, len, 0, mode ? (int)mode : 0644, cb);
}

int pirec_fs_append(uv_loop_t *loop, struct pirec_fs_req *req, const char *path, const void *data, size_t len,
                    pirec_fs_cb cb)
{
  return submit(loop, req, OP_APPEND, path, data, len, 0, 0644, cb);
}

int pirec_fs_unlink(uv_loop_t *loop, struct pirec_fs_req *req, const char *path, pirec_fs_cb cb)
{
  return submit(loop, req, OP_UNLINK, path, NULL, 0, 0, 0, cb);
}

int pirec_fs_mkdir_p(uv_loop_t *loop, struct pirec_fs_req *req, const char *path, mode_t mode, pirec_fs_cb cb)
{
  return submit(loop, req, OP_MKDIR_P, path, NULL, 0, 0, mode ? (int)mode : 0755, cb);
}

void pirec_fs_req_cleanup(struct pirec_fs_req *req)
{
  if (!req)
    return;
  free(req->message);
  free(req->contents);
  free(req->path);
  free(req->buf);
  req->message = NULL;
  req->contents = NULL;
  req->path = NULL;
  req->buf = NULL;
  req->size = 0;
}
