/* Tests for config/'s asynchronous API on a real libuv loop and real files: load, reload (unchanged,
 * changed, invalid), save and set, their error paths, and the loop-thread budget: every step the
 * loop thread runs for a 1 MB file stays under 1 ms. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "pirec/config.h"

#include "helpers/test-dir.h"

#define BUDGET_NS UINT64_C(1000000)

/* The budget is the loop thread's CPU time: on a loaded machine wall time also counts whatever the
 * scheduler ran instead of the loop thread (reported, not asserted). */
static uint64_t cpu_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static char test_dir[4096];
static char conf[4200];

static int setup(void **state)
{
  (void)state;
  if (test_dir_make("test-config-async", test_dir, sizeof(test_dir)) != 0)
    return -1;
  snprintf(conf, sizeof(conf), "%s/pirec.conf", test_dir);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  return test_dir_remove(test_dir);
}

static void write_file(const char *path, const char *text, size_t len)
{
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

/* About 1 MB: many camera sections, each with comments, as a big shared rig file might be. */
static char *big_config(size_t *len, size_t *cameras)
{
  size_t cap = 1200 * 1024, n = 0, i = 0;
  char *t = malloc(cap);
  assert_non_null(t);
  while (n < 1024 * 1024) {
    n += (size_t)snprintf(t + n, cap - n,
                          "# camera %zu of the rig: a comment long enough to look like real notes\n"
                          "; mounted on the left arm, looking at the participant's hands from above\n"
                          "[camera.cam%zu]\n"
                          "source = lavfi ; synthetic\n"
                          "fps = %zu\n"
                          "size = 320x240\n"
                          "preset = ultrafast\n"
                          "\n",
                          i, i, 1 + i % 60);
    i++;
  }
  *len = n;
  *cameras = i;
  return t;
}

struct result {
  int calls;
  int result;
  bool changed;
  uint64_t loop_max_ns;
  uint64_t loop_max_wall_ns;
  uint64_t cleanup_ns;
  size_t error_count;
  char first_error[1024];
  struct pirec_config *config; /* taken from the request */
};

static void on_done(struct pirec_config_req *req)
{
  struct result *r = req->data;
  r->calls++;
  r->result = req->result;
  r->changed = req->changed;
  r->loop_max_ns = req->loop_max_ns;
  r->loop_max_wall_ns = req->loop_max_wall_ns;
  r->error_count = req->errors.count;
  if (req->errors.count)
    snprintf(r->first_error, sizeof(r->first_error), "%s", req->errors.items[0].message);
  r->config = req->config; /* take the reference */
  req->config = NULL;
  uint64_t t = cpu_ns();
  pirec_config_req_cleanup(req);
  r->cleanup_ns = cpu_ns() - t;
}

static void noop_work(uv_work_t *work)
{
  (void)work;
}

static void test_load_1mb_within_budget(void **state)
{
  (void)state;
  size_t len, cameras;
  char *text = big_config(&len, &cameras);
  write_file(conf, text, len);

  /* For scale: what parsing would cost the loop if it ran there. */
  uint64_t t = uv_hrtime();
  struct pirec_config *sync_cfg;
  assert_int_equal(pirec_config_parse(text, len, conf, &sync_cfg, NULL), 0);
  uint64_t sync_ns = uv_hrtime() - t;
  t = uv_hrtime();
  pirec_config_free(sync_cfg);
  uint64_t free_ns = uv_hrtime() - t;

  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  /* libuv starts its threadpool threads on the first queued work (a one-time cost of milliseconds
   * that a recorder pays at start-up, not per config call); start it here so it is not counted. */
  uv_work_t warm;
  assert_int_equal(uv_queue_work(&loop, &warm, noop_work, NULL), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  struct result res = {0};
  struct pirec_config_req req = {.data = &res};
  t = cpu_ns();
  assert_int_equal(pirec_config_load_async(&loop, &req, conf, on_done), 0);
  uint64_t start_ns = cpu_ns() - t;
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(res.calls, 1);
  assert_int_equal(res.result, 0);
  assert_int_equal(res.error_count, 0);
  assert_non_null(res.config);
  assert_int_equal(pirec_config_instance_count(res.config, "camera"), cameras);
  assert_int_equal(pirec_config_get_int(res.config, "camera.cam61", "fps"), 2);
  size_t src_len;
  pirec_config_source(res.config, &src_len);
  assert_int_equal(src_len, len);

  fprintf(stderr,
          "{\"file_bytes\": %zu, \"cameras\": %zu, \"sync_parse_ns\": %llu, \"free_ns\": %llu, "
          "\"start_cpu_ns\": %llu, \"loop_step_max_cpu_ns\": %llu, \"loop_step_max_wall_ns\": %llu, "
          "\"cleanup_cpu_ns\": %llu}\n",
          len, cameras, (unsigned long long)sync_ns, (unsigned long long)free_ns,
          (unsigned long long)start_ns, (unsigned long long)res.loop_max_ns,
          (unsigned long long)res.loop_max_wall_ns, (unsigned long long)res.cleanup_ns);
  assert_true(start_ns < BUDGET_NS);
  assert_true(res.loop_max_ns < BUDGET_NS);
  assert_true(res.loop_max_ns > 0);
  assert_true(res.cleanup_ns < BUDGET_NS);

  struct pirec_config *old = res.config;

  /* set_async on the same 1 MB file: edit and validation happen in the threadpool */
  struct pirec_config_assignment a = {"camera.cam3.fps", "59"};
  t = cpu_ns();
  assert_int_equal(pirec_config_set_async(&loop, &req, conf, &a, 1, on_done), 0);
  start_ns = cpu_ns() - t;
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(res.calls, 2);
  assert_int_equal(res.result, 0);
  assert_true(start_ns < BUDGET_NS);
  assert_true(res.loop_max_ns < BUDGET_NS);

  /* reload: the new file is read off the loop, the old value stays valid and unchanged */
  assert_int_equal(pirec_config_reload_async(&loop, &req, old, on_done), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(res.calls, 3);
  assert_int_equal(res.result, 0);
  assert_true(res.changed);
  assert_true(res.loop_max_ns < BUDGET_NS);
  assert_int_equal(pirec_config_get_int(res.config, "camera.cam3", "fps"), 59);
  assert_int_equal(pirec_config_get_int(old, "camera.cam3", "fps"), 4);
  struct pirec_config *newer = res.config;

  /* save_async of the whole 1 MB value */
  char saved[4400];
  snprintf(saved, sizeof(saved), "%s/saved.conf", test_dir);
  t = cpu_ns();
  assert_int_equal(pirec_config_save_async(&loop, &req, newer, saved, on_done), 0);
  start_ns = cpu_ns() - t;
  pirec_config_free(newer); /* the request holds its own reference */
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(res.calls, 4);
  assert_int_equal(res.result, 0);
  assert_null(res.config);
  assert_true(start_ns < BUDGET_NS);
  assert_true(res.loop_max_ns < BUDGET_NS);
  struct pirec_config *back;
  assert_int_equal(pirec_config_load(saved, &back, NULL), 0);
  assert_int_equal(pirec_config_get_int(back, "camera.cam3", "fps"), 59);
  assert_int_equal(pirec_config_instance_count(back, "camera"), cameras);
  pirec_config_free(back);

  pirec_config_free(old);
  free(text);
  assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_reload_cases(void **state)
{
  (void)state;
  const char *v1 = "[session]\nlabel = one\n";
  write_file(conf, v1, strlen(v1));
  struct pirec_config *current;
  assert_int_equal(pirec_config_load(conf, &current, NULL), 0);

  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct result res = {0};
  struct pirec_config_req req = {.data = &res};

  /* unchanged bytes: changed is false and the same value comes back */
  assert_int_equal(pirec_config_reload_async(&loop, &req, current, on_done), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(res.result, 0);
  assert_false(res.changed);
  assert_ptr_equal(res.config, current);
  pirec_config_free(res.config);

  /* an invalid file: the errors, no config, the current value untouched */
  const char *bad = "[session]\nlabel = two words\nclocks_interval = soon\n";
  write_file(conf, bad, strlen(bad));
  assert_int_equal(pirec_config_reload_async(&loop, &req, current, on_done), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(res.calls, 2);
  assert_int_equal(res.result, -EINVAL);
  assert_int_equal(res.error_count, 2);
  assert_null(res.config);
  char want[4400];
  snprintf(
      want, sizeof(want),
      "%s:2: session.label = 'two words': expected letters, digits, '-' and '_' only (it becomes part of a "
      "directory name)",
      conf);
  assert_string_equal(res.first_error, want);
  assert_string_equal(pirec_config_get_string(current, "session", "label"), "one");

  /* a missing file */
  assert_int_equal(unlink(conf), 0);
  assert_int_equal(pirec_config_load_async(&loop, &req, conf, on_done), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(res.calls, 3);
  assert_int_equal(res.result, -ENOENT);
  assert_int_equal(res.error_count, 1);
  snprintf(want, sizeof(want), "cannot open '%s': No such file or directory", conf);
  assert_string_equal(res.first_error, want);

  /* invalid set: the callback reports the errors, the file is not created */
  struct pirec_config_assignment a = {"session.lable", "x"};
  assert_int_equal(pirec_config_set_async(&loop, &req, conf, &a, 1, on_done), 0);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(res.calls, 4);
  assert_int_equal(res.result, -EINVAL);
  snprintf(want, sizeof(want), "%s: session.lable = 'x': unknown key, did you mean 'session.label'?", conf);
  assert_string_equal(res.first_error, want);
  assert_int_equal(access(conf, F_OK), -1);

  /* calls that fail to start never call back */
  assert_int_equal(pirec_config_load_async(&loop, &req, conf, NULL), -EINVAL);
  assert_int_equal(pirec_config_reload_async(&loop, &req, NULL, on_done), -EINVAL);
  assert_int_equal(pirec_config_save_async(&loop, &req, NULL, conf, on_done), -EINVAL);
  struct pirec_config_assignment nullv = {"session.label", NULL};
  assert_int_equal(pirec_config_set_async(&loop, &req, conf, &nullv, 1, on_done), -EINVAL);
  assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
  assert_int_equal(res.calls, 4);

  pirec_config_free(current);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_load_1mb_within_budget, setup, teardown),
      cmocka_unit_test_setup_teardown(test_reload_cases, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
