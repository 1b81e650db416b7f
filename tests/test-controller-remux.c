/* The after-session remux's priority (controller/remux.c): the argv the controller runs is started
 * here as a real process that reports its own nice value and I/O class. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "controller-int.h"

/* Runs argv with stdout into buf; returns the exit status. */
static int run_capture(const char *const *argv, char *buf, size_t cap)
{
  int p[2];
  assert_int_equal(pipe(p), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(p[1], 1);
    close(p[0]);
    close(p[1]);
    execv(argv[0], (char *const *)argv);
    _exit(127);
  }
  close(p[1]);
  size_t used = 0;
  ssize_t n;
  while (used + 1 < cap && (n = read(p[0], buf + used, cap - 1 - used)) > 0)
    used += (size_t)n;
  buf[used] = '\0';
  close(p[0]);
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_remux_runs_at_background_priority(void **state)
{
  (void)state;
  /* field 19 of /proc/PID/stat is the nice value; `ionice -p` names the I/O class */
  const char *probe[] = {"/bin/sh", "-c", "echo $(cut -d' ' -f19 /proc/$$/stat) $(ionice -p $$)", NULL};
  const char *argv[16];
  char out[256];
  int wrapped;

  if (access("/usr/bin/nice", X_OK) != 0 || access("/usr/bin/ionice", X_OK) != 0)
    skip(); /* the controller then runs the remux unchanged (and says so) */
  assert_true(pirec__remux_background_argv(probe, argv, 16, &wrapped) > 3);
  assert_int_equal(wrapped, 1);
  assert_int_equal(run_capture(argv, out, sizeof out), 0);
  /* the test itself may run niced already: the child's nice is at least 10 more than 0 */
  int nice_value = -100;
  char cls[64] = "";
  assert_int_equal(sscanf(out, "%d %63s", &nice_value, cls), 2);
  assert_true(nice_value >= 10);
  assert_string_equal(cls, "idle");
  /* and a plain run of the probe (what the controller did before) is not */
  assert_int_equal(run_capture(probe, out, sizeof out), 0);
  assert_int_equal(sscanf(out, "%d %63s", &nice_value, cls), 2);
  assert_string_not_equal(cls, "idle");
}

static void test_background_argv_too_small(void **state)
{
  (void)state;
  const char *probe[] = {"/bin/true", "a", "b", NULL};
  const char *argv[4];
  int wrapped;
  assert_int_equal(pirec__remux_background_argv(probe, argv, 4, &wrapped), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_remux_runs_at_background_priority),
      cmocka_unit_test(test_background_argv_too_small),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
