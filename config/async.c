/* Asynchronous load, reload, save and set. The loop thread only hands work on: files are read
 * through io/fs in the threadpool, and parsing, formatting and editing run in the threadpool too,
 * so the loop's cost per step is a few allocations whatever the file's size. */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "pirec/error.h"
#include "pirec/container_of.h"

enum { OP_LOAD = 1, OP_RELOAD, OP_SAVE, OP_SET };

/* A step's cost is measured as the loop thread's CPU time (what the step takes from the loop) and
 * as wall time (which also counts time the scheduler gave to other threads meanwhile). */
struct stamp {
  uint64_t wall, cpu;
};

static uint64_t thread_cpu_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct stamp now(void)
{
  struct stamp s = {uv_hrtime(), thread_cpu_ns()};
  return s;
}

static void account(struct pirec_config_req *req, struct stamp start)
{
  uint64_t cpu = thread_cpu_ns() - start.cpu, wall = uv_hrtime() - start.wall;
  req->loop_ns += cpu;
  if (cpu > req->loop_max_ns)
    req->loop_max_ns = cpu;
  if (wall > req->loop_max_wall_ns)
    req->loop_max_wall_ns = wall;
}

static void start_req(uv_loop_t *loop, struct pirec_config_req *req, int op, pirec_config_cb cb)
{
  void *data = req->data;
  memset(req, 0, sizeof(*req));
  req->data = data;
  req->loop = loop;
  req->op = op;
  req->cb = cb;
}

static void free_private(struct pirec_config_req *req)
{
  pirec_fs_req_cleanup(&req->fs);
  free(req->path);
  req->path = NULL;
  free(req->text);
  req->text = NULL;
  pirec_config_free(req->current);
  req->current = NULL;
  if (req->assignments) {
    for (size_t i = 0; i < req->assignment_count; i++) {
      free((char *)req->assignments[i].key);
      free((char *)req->assignments[i].value);
    }
    free(req->assignments);
    req->assignments = NULL;
  }
}

static void finish(struct pirec_config_req *req, struct stamp start)
{
  account(req, start);
  req->cb(req);
}

static void parse_work(uv_work_t *work)
{
  struct pirec_config_req *req = container_of(work, struct pirec_config_req, work);
  char *text = req->text;
  size_t len = req->text_len;
  req->text = NULL;
  req->changed = true;
  if (req->current) {
    size_t old_len;
    const char *old = pirec_config_source(req->current, &old_len);
    if (old_len == len && memcmp(old, text, len) == 0) {
      req->changed = false;
      req->config = pirec_config_ref(req->current);
      req->result = 0;
      free(text);
      return;
    }
  }
  req->result = pirec__config_parse_owned(text, len, req->path, &req->config, &req->errors);
}

static void after_work(uv_work_t *work, int status)
{
  struct stamp start = now();
  struct pirec_config_req *req = container_of(work, struct pirec_config_req, work);
  if (status == UV_ECANCELED)
    req->result = UV_ECANCELED;
  finish(req, start);
}

static void on_read(struct pirec_fs_req *fs)
{
  struct stamp start = now();
  struct pirec_config_req *req = fs->data;
  if (fs->result < 0) {
    char msg[1200];
    if (fs->message)
      snprintf(msg, sizeof(msg), "%s", fs->message);
    else
      snprintf(msg, sizeof(msg), "cannot read '%s': %s", req->path, pirec_strerror(fs->result));
    req->result = fs->result;
    pirec__config_errors_add(&req->errors, 0, NULL, msg);
    finish(req, start);
    return;
  }
  /* Take the bytes; parsing them is threadpool work. */
  req->text = fs->contents;
  req->text_len = fs->size;
  fs->contents = NULL;
  pirec_fs_req_cleanup(fs);
  int r = uv_queue_work(req->loop, &req->work, parse_work, after_work);
  if (r < 0) {
    req->result = r;
    finish(req, start);
    return;
  }
  account(req, start);
}

static int load(uv_loop_t *loop, struct pirec_config_req *req, const char *path, struct pirec_config *current,
                pirec_config_cb cb)
{
  if (!loop || !req || !path || !cb)
    return -EINVAL;
  struct stamp start = now();
  start_req(loop, req, current ? OP_RELOAD : OP_LOAD, cb);
  req->path = strdup(path);
  if (!req->path)
    return -ENOMEM;
  req->fs.data = req;
  int r = pirec_fs_read_file(loop, &req->fs, path, PIREC__CONFIG_MAX_FILE, on_read);
  if (r < 0) {
    free_private(req);
    return r;
  }
  if (current)
    req->current = pirec_config_ref(current);
  account(req, start);
  return 0;
}

int pirec_config_load_async(uv_loop_t *loop, struct pirec_config_req *req, const char *path,
                            pirec_config_cb cb)
{
  return load(loop, req, path, NULL, cb);
}

int pirec_config_reload_async(uv_loop_t *loop, struct pirec_config_req *req, struct pirec_config *current,
                              pirec_config_cb cb)
{
  if (!current)
    return -EINVAL;
  return load(loop, req, pirec_config_path(current), current, cb);
}

/* Queues work for req; on failure frees what the request holds and returns the error (cb never runs). */
static int queue(uv_loop_t *loop, struct pirec_config_req *req, uv_work_cb work, struct stamp start)
{
  int r = uv_queue_work(loop, &req->work, work, after_work);
  if (r < 0) {
    free_private(req);
    return r;
  }
  account(req, start);
  return 0;
}

static void save_work(uv_work_t *work)
{
  struct pirec_config_req *req = container_of(work, struct pirec_config_req, work);
  req->result = pirec__config_save_locked(req->current, req->path, &req->errors);
}

int pirec_config_save_async(uv_loop_t *loop, struct pirec_config_req *req, const struct pirec_config *cfg,
                            const char *path, pirec_config_cb cb)
{
  if (!loop || !req || !cfg || !path || !cb)
    return -EINVAL;
  struct stamp start = now();
  start_req(loop, req, OP_SAVE, cb);
  req->path = strdup(path);
  if (!req->path)
    return -ENOMEM;
  /* The value is immutable; a reference (not a copy) keeps it alive for the worker. */
  req->current = pirec_config_ref((struct pirec_config *)cfg);
  return queue(loop, req, save_work, start);
}

static void set_work(uv_work_t *work)
{
  struct pirec_config_req *req = container_of(work, struct pirec_config_req, work);
  req->result = pirec_config_set(req->path, req->assignments, req->assignment_count, &req->errors);
}

int pirec_config_set_async(uv_loop_t *loop, struct pirec_config_req *req, const char *path,
                           const struct pirec_config_assignment *assignments, size_t count,
                           pirec_config_cb cb)
{
  if (!loop || !req || !path || !cb || (count && !assignments))
    return -EINVAL;
  struct stamp start = now();
  start_req(loop, req, OP_SET, cb);
  req->path = strdup(path);
  req->assignments = calloc(count ? count : 1, sizeof(*req->assignments));
  if (!req->path || !req->assignments) {
    free_private(req);
    return -ENOMEM;
  }
  req->assignment_count = count;
  for (size_t i = 0; i < count; i++) {
    if (!assignments[i].key || !assignments[i].value) {
      free_private(req);
      return -EINVAL;
    }
    req->assignments[i].key = strdup(assignments[i].key);
    req->assignments[i].value = strdup(assignments[i].value);
    if (!req->assignments[i].key || !req->assignments[i].value) {
      free_private(req);
      return -ENOMEM;
    }
  }
  return queue(loop, req, set_work, start);
}

void pirec_config_req_cleanup(struct pirec_config_req *req)
{
  if (!req)
    return;
  free_private(req);
  pirec_config_errors_free(&req->errors);
  pirec_config_free(req->config);
  req->config = NULL;
}
