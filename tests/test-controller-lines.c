/* The controller reading its recorders' stdout: a protocol line over io/jsonl's limit is dropped
 * with jsonl's error text, and the line after it (here the recorder's "ready") is read as usual.
 * A real `pirec record` runs a stand-in pirec-notes: a python3 script that prints a 3 MiB line and
 * then execs the real pirec-notes. */
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

static void write_file(const char *path, const char *text, mode_t mode)
{
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fputs(text, f);
  fclose(f);
  assert_int_equal(chmod(path, mode), 0);
}

/* Reads the controller's merged output until a line containing `want`; 1 when seen. */
static int wait_output(struct tu_proc *p, const char *want, int timeout_ms)
{
  int64_t end = tu_now_ms() + timeout_ms;
  while (tu_now_ms() < end) {
    char *line = tu_proc_readline(p, 1000);
    if (!line)
      continue;
    int hit = strstr(line, want) != NULL;
    free(line);
    if (hit)
      return 1;
  }
  return 0;
}

static void test_overlong_recorder_line(void **state)
{
  (void)state;
  char *tmp = tu_tmpdir("lines");
  assert_non_null(tmp);
  char bin[4200], fake[4300], cfg[4200], out[4200], sock[256], script[8600];
  snprintf(bin, sizeof bin, "%s/bin", tmp);
  assert_int_equal(mkdir(bin, 0755), 0);
  snprintf(fake, sizeof fake, "%s/pirec-notes", bin);
  snprintf(script, sizeof script,
           "#!/usr/bin/env python3\n"
           "import os, sys\n"
           "sys.stdout.write('x' * (3 << 20) + '\\n')\n"
           "sys.stdout.flush()\n"
           "os.execv('%s', ['pirec-notes'] + sys.argv[1:])\n",
           tu_program("pirec-notes"));
  write_file(fake, script, 0755);
  snprintf(out, sizeof out, "%s/out", tmp);
  snprintf(sock, sizeof sock, "%s/c.sock", tmp);
  snprintf(cfg, sizeof cfg, "%s/pirec.conf", tmp);
  char conf[9000];
  snprintf(conf, sizeof conf, "[session]\noutput_dir = %s\n[control]\nsocket = %s\n[notes]\nenabled = true\n",
           out, sock);
  write_file(cfg, conf, 0644);

  /* stderr (the log) onto the stdout pipe the test reads */
  char cmd[9000];
  snprintf(cmd, sizeof cmd, "exec '%s' record -c '%s' --wait --recorder-dir '%s' 2>&1", tu_program("pirec"),
           cfg, bin);
  const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  struct tu_proc p;
  assert_int_equal(tu_proc_start(&p, argv, NULL), 0);
  if (!wait_output(&p, "line too long (over 2097152 bytes)", 30000))
    fail_msg("no 'line too long' report for the 3 MiB recorder line");

  /* the recorder's next line, "ready", was read: a session records notes */
  json_t *r = NULL;
  for (int i = 0; i < 300 && !r; i++) {
    r = tu_sock_call(sock, "{\"id\":1,\"cmd\":\"start\"}", 2000);
    if (!r)
      usleep(20000);
  }
  assert_non_null(r);
  json_decref(r);
  int noted = 0;
  for (int i = 0; i < 300 && !noted; i++) {
    r = tu_sock_call(sock, "{\"id\":2,\"cmd\":\"note\",\"text\":\"after the long line\"}", 2000);
    noted = r && json_is_string(json_object_get(r, "reply")) &&
            strcmp(json_string_value(json_object_get(r, "reply")), "noted") == 0;
    json_decref(r);
    if (!noted)
      usleep(20000);
  }
  assert_true(noted);
  r = tu_sock_call(sock, "{\"id\":3,\"cmd\":\"stop\"}", 10000);
  assert_non_null(r);
  json_decref(r);
  kill(p.pid, SIGTERM);
  int status = tu_proc_wait(&p, 30000);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  tu_rm_rf(tmp);
  free(tmp);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_overlong_recorder_line),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
