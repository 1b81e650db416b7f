#ifndef PIREC_FS_H
#define PIREC_FS_H

/* Whole-file operations on a libuv loop, each with a synchronous form.
 *
 * Every operation takes a request owned by the caller. With a callback, the work runs in libuv's
 * threadpool and the callback runs on the loop thread; if the call itself returns an error, the
 * callback never runs. With cb == NULL the operation runs synchronously on the calling thread
 * (loop may be NULL) and its result is returned and also stored in req->result.
 *
 * Results are 0 (or a byte count where stated) or a negative errno. On failure req->message holds a
 * line naming the operation and the path, for example
 *   "cannot rename '/data/.session.json.tmp' to '/data/session.json': No space left on device".
 * Call pirec_fs_req_cleanup() after every operation, sync or async, to free data and message.
 */

#include <stddef.h>
#include <sys/types.h>
#include <uv.h>

struct pirec_fs_req;
typedef void (*pirec_fs_cb)(struct pirec_fs_req *req);

struct pirec_fs_req {
  void *data;     /* caller's pointer, untouched */
  int result;     /* 0, bytes, or negative errno */
  char *message;  /* NULL, or the failure message; freed by cleanup */
  char *contents; /* read_file: the file's bytes plus a terminating NUL (not counted); freed by cleanup */
  size_t size;    /* read_file: bytes read */
  /* private */
  uv_work_t work;
  pirec_fs_cb cb;
  int op;
  char *path;
  char *buf;
  size_t len;
  size_t limit;
  int mode;
};

/* Reads a whole file into req->contents/req->size. Fails with -EFBIG if it is larger than max_bytes
 * (checked on the bytes read, so files whose size is not known up front, as in /proc, work too). */
int pirec_fs_read_file(uv_loop_t *loop, struct pirec_fs_req *req, const char *path, size_t max_bytes,
                       pirec_fs_cb cb);

/* Replaces path with data atomically: writes a temporary file in the same directory, fsyncs it,
 * renames it over path and fsyncs the directory. A crash at any point leaves either the old file or
 * the new one (plus, if the crash hit mid-write, a stray hidden temporary ".<name>.<pid>-<n>.tmp" in
 * the same directory; a failure that is reported removes its temporary file). mode 0 means 0644;
 * the umask applies. If only the final directory sync fails, path already holds the new data and
 * the error is still returned. data is copied before the call returns. */
int pirec_fs_write_atomic(uv_loop_t *loop, struct pirec_fs_req *req, const char *path, const void *data,
                          size_t len, mode_t mode, pirec_fs_cb cb);

/* Appends data to path (created with mode 0644 when missing). data is copied. */
int pirec_fs_append(uv_loop_t *loop, struct pirec_fs_req *req, const char *path, const void *data, size_t len,
                    pirec_fs_cb cb);

/* Removes path. A missing file is -ENOENT. */
int pirec_fs_unlink(uv_loop_t *loop, struct pirec_fs_req *req, const char *path, pirec_fs_cb cb);

/* Creates path and any missing parents with mode (0 means 0755; the umask applies); an existing
 * directory, or a symlink to one, is success. A non-directory in the way is -ENOTDIR when it is a
 * parent and -EEXIST when it is path itself; the message names both path and that component. */
int pirec_fs_mkdir_p(uv_loop_t *loop, struct pirec_fs_req *req, const char *path, mode_t mode,
                     pirec_fs_cb cb);

void pirec_fs_req_cleanup(struct pirec_fs_req *req);

#endif
