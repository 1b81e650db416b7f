/* The disk budget without root (controller/disk.c): a start that [storage] reserve alone cannot fit
 * is refused with its numbers, makes no session directory, shows in the status (JSON and text) and
 * makes `pirec start` exit 1; the status carries free space and time left. The watchdog's stop and
 * a warned start need a disk that fills: tests/faults/test_disk_budget.py (root, a tmpfs). */
#include <sys/statvfs.h>

#include "test-controller-fixture.h"

/* Runs `pirec ARGS... --socket SOCK` with stdout and stderr into out; the exit status. */
static int cli(struct ctl *c, const char *cmd, int json, char *out, size_t cap)
{
  char line[5000];
  snprintf(line, sizeof line, "'%s' %s --socket '%s' %s 2>&1", tu_program("pirec"), cmd, c->sock,
           json ? "--json" : "");
  FILE *p = popen(line, "r");
  assert_non_null(p);
  size_t n = fread(out, 1, cap - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_refused_start(void **state)
{
  (void)state;
  struct ctl c;
  /* 1000 GiB kept free: no test machine's /tmp has that (checked below). */
  ctl_start(&c, 0, "[storage]\nreserve = 1000GiB\nmin_free_time = 1h\nspace_check_interval = 100ms\n");
  struct statvfs sv;
  assert_int_equal(statvfs(c.tmp, &sv), 0);
  if ((double)sv.f_bavail * sv.f_frsize > 900.0 * (1 << 30)) {
    ctl_stop_process(&c, 0);
    ctl_cleanup(&c);
    skip();
  }
  json_decref(ctl_wait_modules(&c, 0, 15000));
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "error");
  json_int_t free_b = jint(r, "free_bytes"), need = jint(r, "needed_bytes"),
             rate = jint(r, "rate_bytes_per_s");
  assert_true(free_b > 0 && need > free_b && rate > 0);
  /* one hour at the rate plus the reserve, as the message says */
  assert_true(need >= (json_int_t)1000 * (1 << 30) + 3600 * rate - 3600);
  const char *msg = jstr(r, "message");
  assert_non_null(strstr(msg, "MiB free"));
  assert_non_null(strstr(msg, "MiB needed"));
  assert_non_null(strstr(msg, "3600 s of recording"));
  assert_non_null(strstr(msg, "reserve"));
  json_decref(r);
  struct stat st;
  assert_int_not_equal(stat(c.out, &st), 0); /* no session directory, not even output_dir */

  char out[16384];
  assert_int_equal(cli(&c, "start", 0, out, sizeof out), 1);
  assert_non_null(strstr(out, "not enough free space"));
  assert_int_equal(cli(&c, "status", 0, out, sizeof out), 0);
  assert_non_null(strstr(out, "storage: "));
  assert_non_null(strstr(out, "ALARM (LED blinking): start refused"));
  assert_int_equal(cli(&c, "status", 1, out, sizeof out), 0);
  json_error_t e;
  json_t *s = json_loads(out, 0, &e);
  assert_non_null(s);
  json_t *sto = json_object_get(s, "storage");
  assert_true(json_is_true(json_object_get(sto, "low_space")));
  assert_true(jint(sto, "free_bytes") > 0 && jint(sto, "total_bytes") >= jint(sto, "free_bytes"));
  assert_int_equal(jint(sto, "time_left_ns"), 0); /* nothing above the reserve */
  assert_string_equal(jstr(sto, "rate_source"), "configured");
  assert_true(jint(json_object_get(json_object_get(s, "modules"), "notes"), "rate_bytes_per_s") > 0);
  json_decref(s);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

int main(void)
{
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_refused_start)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
