/* The note taker's file: notes.csv rows through a sink. */
#include "pirec/notes.h"
#include "pirec/crypt.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pirec/csv.h"
#include "pirec/log.h"
#include "pirec/sink.h"

#define DEFAULT_RING     (8u * 1024 * 1024)
#define DEFAULT_MAX_TEXT 65536u

static const char *const columns[] = {"trial", "mono_ns", "wall_ns", "text", NULL};

struct pirec_notes {
  uv_loop_t *loop;
  struct pirec_notes_options opts;
  char *row; /* one formatted row: quoting at most doubles the text */
  size_t row_cap;

  struct pirec_sink *sink;
  int opening;
  int closing;
  int trial;
  char *path;
  uv_fs_t stat_req;
  pirec_notes_cb cb;
  void *cb_user;

  uint64_t notes;
  uint64_t drops;
  uint64_t closed_bytes; /* bytes written to files already closed */
  int error;
  struct pirec_crypt_session crypt;
};

void pirec_notes_options_default(struct pirec_notes_options *opts)
{
  opts->ring_bytes = DEFAULT_RING;
  opts->max_text = DEFAULT_MAX_TEXT;
  opts->fsync_interval_ms = 1000;
}

int pirec_notes_new(uv_loop_t *loop, const struct pirec_notes_options *opts, struct pirec_notes **out)
{
  *out = NULL;
  struct pirec_notes *n = calloc(1, sizeof(*n));
  if (!n)
    return -ENOMEM;
  pirec_notes_options_default(&n->opts);
  if (opts) {
    if (opts->ring_bytes)
      n->opts.ring_bytes = opts->ring_bytes;
    if (opts->max_text)
      n->opts.max_text = opts->max_text;
    /* 0 is PIREC_SINK_FSYNC_NEVER here, not "the default". */
    n->opts.fsync_interval_ms = opts->fsync_interval_ms;
  }
  if (n->opts.max_text * 2 + 128 > n->opts.ring_bytes / 2) {
    free(n);
    return -EINVAL;
  }
  n->loop = loop;
  n->row_cap = n->opts.max_text * 2 + 128;
  n->row = malloc(n->row_cap);
  if (!n->row) {
    free(n);
    return -ENOMEM;
  }
  *out = n;
  return 0;
}

static void on_sink_error(struct pirec_sink *sink, int err, void *user)
{
  struct pirec_notes *n = user;
  n->error = err;
  pirec_log(PIREC_LOG_ERROR, "notes: cannot write '%s': %s", pirec_sink_path(sink), uv_strerror(err));
}

static void on_stat(uv_fs_t *req)
{
  struct pirec_notes *n = req->data;
  int result = (int)req->result;
  int need_header = result == UV_ENOENT || (result == 0 && req->statbuf.st_size == 0);
  uv_fs_req_cleanup(req);
  n->opening = 0;
  pirec_notes_cb cb = n->cb;
  n->cb = NULL;
  if (result < 0 && result != UV_ENOENT) {
    pirec_log(PIREC_LOG_ERROR, "notes: cannot stat '%s': %s", n->path, uv_strerror(result));
    free(n->path);
    n->path = NULL;
    cb(n, result, n->cb_user);
    return;
  }
  struct pirec_sink_options so;
  pirec_sink_options_default(&so);
  so.ring_bytes = n->opts.ring_bytes;
  so.fsync_interval_ms = n->opts.fsync_interval_ms;
  /* One session-wide file that trials and restarted recorders append to. */
  so.open_flags = O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC;
  so.max_writes_in_flight = 1;
  so.mkdir_mode = 0755; /* a missing directory is made in the threadpool, never on the loop */
  struct pirec_sink_transform tf;
  int err = pirec_crypt_session_sink(&n->crypt, n->path, &so, &tf);
  if (err == 0)
    err = pirec_sink_new(n->loop, n->path, &so, on_sink_error, n, &n->sink);
  if (err < 0) {
    pirec_log(PIREC_LOG_ERROR, "notes: cannot create a sink for '%s': %s", n->path, uv_strerror(err));
    free(n->path);
    n->path = NULL;
    cb(n, err, n->cb_user);
    return;
  }
  n->error = 0;
  if (need_header) {
    int len = pirec_csv_header(n->row, n->row_cap, columns);
    if (len > 0)
      pirec_sink_push(n->sink, n->row, (size_t)len);
  }
  cb(n, 0, n->cb_user);
}

int pirec_notes_open(struct pirec_notes *n, const char *dir, int trial, pirec_notes_cb cb, void *user)
{
  if (n->sink || n->opening || n->closing)
    return -EBUSY;
  if (!dir || !cb)
    return -EINVAL;
  size_t len = strlen(dir) + sizeof("/notes.csv");
  n->path = malloc(len);
  if (!n->path)
    return -ENOMEM;
  snprintf(n->path, len, "%s/notes.csv", dir);
  n->trial = trial;
  n->cb = cb;
  n->cb_user = user;
  n->stat_req.data = n;
  int err = uv_fs_stat(n->loop, &n->stat_req, n->path, on_stat);
  if (err < 0) {
    free(n->path);
    n->path = NULL;
    return err;
  }
  n->opening = 1;
  return 0;
}

int pirec_notes_add(struct pirec_notes *n, int64_t mono_ns, int64_t wall_ns, const char *text, size_t len)
{
  if (!n->sink || n->closing)
    return -ENOTCONN;
  if (len > n->opts.max_text) {
    n->drops++;
    pirec_sink_count_drop(n->sink);
    return -EMSGSIZE;
  }
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, n->row, n->row_cap);
  pirec_csv_row_lead(&row, n->trial, mono_ns, wall_ns);
  pirec_csv_row_text(&row, text, len);
  int end = pirec_csv_row_end(&row);
  int err = end < 0 ? end : pirec_csv_push(n->sink, &row);
  if (err < 0) {
    n->drops++;
    return err;
  }
  n->notes++;
  /* Notes come at human rates: hand each to the kernel at once rather than on the next drain
   * tick, so a crash of this process loses as little as possible. A write already in flight
   * makes this a no-op and the rows batch into the next one. */
  pirec_sink_flush(n->sink);
  return 0;
}

static void on_sink_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  struct pirec_notes *n = user;
  n->closed_bytes += final->bytes_written;
  n->sink = NULL;
  n->closing = 0;
  free(n->path);
  n->path = NULL;
  pirec_notes_cb cb = n->cb;
  n->cb = NULL;
  if (cb)
    cb(n, final->error, n->cb_user);
}

int pirec_notes_close_file(struct pirec_notes *n, pirec_notes_cb cb, void *user)
{
  if (!n->sink || n->closing)
    return -ENOTCONN;
  n->closing = 1;
  n->cb = cb;
  n->cb_user = user;
  pirec_sink_close(n->sink, on_sink_closed, n);
  return 0;
}

void pirec_notes_counters(const struct pirec_notes *n, struct pirec_notes_counters *out)
{
  memset(out, 0, sizeof(*out));
  out->notes = n->notes;
  out->drops = n->drops;
  out->bytes_written = n->closed_bytes;
  out->error = n->error;
  out->open = n->sink != NULL;
  if (n->sink) {
    struct pirec_sink_counters sc;
    pirec_sink_counters(n->sink, &sc);
    out->bytes_written += sc.bytes_written;
    if (sc.error)
      out->error = sc.error;
  }
}

void pirec_notes_free(struct pirec_notes *n)
{
  if (!n)
    return;
  free(n->row);
  free(n->path);
  pirec_crypt_session_clear(&n->crypt);
  free(n);
}

int pirec_notes_set_key(struct pirec_notes *n, const struct pirec_crypt_key *key, const char *session_dir)
{
  return pirec_crypt_session_set(&n->crypt, key, session_dir);
}
