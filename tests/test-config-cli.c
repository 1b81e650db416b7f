/* Tests for `pirec config`, run as a real process: exit codes (0, 64, 65, 66), messages, set on a
 * real file, and that config/pirec.conf.example and docs/CONFIG.md match what the schema generates. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
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

#include "helpers/test-dir.h"

#ifndef PIREC_BIN
#error "PIREC_BIN must name the pirec binary"
#endif

static char test_dir[4096];
static char conf[4200];

static int setup(void **state)
{
  (void)state;
  if (test_dir_make("test-config-cli", test_dir, sizeof(test_dir)) != 0)
    return -1;
  snprintf(conf, sizeof(conf), "%s/pirec.conf", test_dir);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  return test_dir_remove(test_dir);
}

static char *slurp(const char *path)
{
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  assert_non_null(buf);
  size_t n;
  while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len < 2) {
      cap *= 2;
      buf = realloc(buf, cap);
      assert_non_null(buf);
    }
  }
  buf[len] = '\0';
  fclose(f);
  return buf;
}

static void write_file(const char *path, const char *text)
{
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  fputs(text, f);
  assert_int_equal(fclose(f), 0);
}

struct run {
  int status;
  char *out;
  char *err;
};

/* Runs PIREC_BIN with args (NULL-terminated), stdout and stderr captured in files. */
static struct run run(const char *arg, ...)
{
  const char *argv[16] = {PIREC_BIN};
  int argc = 1;
  va_list ap;
  va_start(ap, arg);
  for (const char *a = arg; a && argc < 15; a = va_arg(ap, const char *))
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;
  char out[4300], err[4300];
  snprintf(out, sizeof(out), "%s/stdout", test_dir);
  snprintf(err, sizeof(err), "%s/stderr", test_dir);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int o = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644), e = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
      _exit(127);
    execv(PIREC_BIN, (char *const *)argv);
    _exit(127);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  assert_true(WIFEXITED(status));
  struct run r = {WEXITSTATUS(status), slurp(out), slurp(err)};
  assert_non_null(r.out);
  assert_non_null(r.err);
  return r;
}

static void run_free(struct run *r)
{
  free(r->out);
  free(r->err);
}

static char *source_file(const char *rel)
{
  const char *src = getenv("PIREC_SOURCE_DIR");
  assert_non_null(src);
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s", src, rel);
  char *t = slurp(path);
  if (!t)
    fprintf(stderr, "cannot read '%s': %s\n", path, strerror(errno));
  assert_non_null(t);
  return t;
}

/* The committed example must be exactly what the schema generates: regenerate it with
 * `pirec config defaults > config/pirec.conf.example` after changing the schema. */
static void test_example_matches_defaults(void **state)
{
  (void)state;
  struct run r = run("config", "defaults", NULL);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.err, "");
  char *example = source_file("config/pirec.conf.example");
  if (strcmp(example, r.out) != 0)
    fprintf(stderr, "config/pirec.conf.example differs from `pirec config defaults`; regenerate it\n");
  assert_string_equal(example, r.out);
  free(example);
  /* and it is a valid config */
  write_file(conf, r.out);
  run_free(&r);
  r = run("config", "check", conf, NULL);
  assert_int_equal(r.status, 0);
  run_free(&r);
}

/* docs/CONFIG.md embeds the generated reference verbatim. */
static void test_docs_match_reference(void **state)
{
  (void)state;
  struct run r = run("config", "reference", NULL);
  assert_int_equal(r.status, 0);
  char *doc = source_file("docs/CONFIG.md");
  if (!strstr(doc, r.out))
    fprintf(stderr, "docs/CONFIG.md lacks the output of `pirec config reference`; paste it in\n");
  assert_non_null(strstr(doc, r.out));
  free(doc);
  run_free(&r);
}

static void test_check(void **state)
{
  (void)state;
  write_file(conf, "[camera.front]\nfps = 30\n[gpio.go]\nline = GPIO4\n");
  struct run r = run("config", "check", conf, NULL);
  assert_int_equal(r.status, 0);
  char want[20000];
  snprintf(want, sizeof(want), "%s: ok (1 camera, 1 gpio sections)\n", conf);
  assert_string_equal(r.out, want);
  assert_string_equal(r.err, "");
  run_free(&r);

  write_file(conf, "[camera.front]\nfps = 0\nfsp = 3\n[sesion]\n");
  r = run("config", "check", conf, NULL);
  assert_int_equal(r.status, 65);
  snprintf(want, sizeof(want),
           "%s:2: camera.front.fps = '0': out of range, expected an integer from 1 to 240\n"
           "%s:3: camera.front.fsp = '3': unknown key, did you mean 'fps'?\n"
           "%s:4: [sesion]: unknown section, did you mean '[session]'?\n"
           "%s: invalid\n",
           conf, conf, conf, conf);
  assert_string_equal(r.err, want);
  assert_string_equal(r.out, "");
  run_free(&r);

  char missing[4400];
  snprintf(missing, sizeof(missing), "%s/missing.conf", test_dir);
  r = run("config", "check", missing, NULL);
  assert_int_equal(r.status, 66);
  snprintf(want, sizeof(want), "cannot open '%s': No such file or directory\n", missing);
  assert_string_equal(r.err, want);
  run_free(&r);
}

static void test_get_and_set(void **state)
{
  (void)state;
  const char *original = "# my rig\n[camera.front]\nfps = 30 ; measured\n\n[notes]\nenabled = true\n";
  write_file(conf, original);
  struct run r = run("config", "get", conf, "camera.front.fps", NULL);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.out, "30\n");
  run_free(&r);
  r = run("config", "get", conf, "camera.front.ring_size", NULL);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.out, "0B\n"); /* 0: the camera sizes it, a second of frames */
  run_free(&r);
  r = run("config", "get", conf, "session.clocks_interval", NULL);
  assert_string_equal(r.out, "10s\n");
  run_free(&r);
  r = run("config", "get", conf, "camera.front.fsp", NULL);
  assert_int_equal(r.status, 64);
  assert_string_equal(r.err,
                      "pirec config: camera.front.fsp: unknown key, did you mean 'camera.front.fps'?\n");
  run_free(&r);

  r = run("config", "set", conf, "camera.front.fps", "25", "session.label", "pilot", NULL);
  assert_int_equal(r.status, 0);
  assert_string_equal(r.err, "");
  run_free(&r);
  char *now = slurp(conf);
  assert_string_equal(now, "# my rig\n[camera.front]\nfps = 25 ; measured\n\n[notes]\nenabled = true\n"
                           "\n[session]\nlabel = pilot\n");
  free(now);

  r = run("config", "set", conf, "camera.front.fps", "fast", NULL);
  assert_int_equal(r.status, 65);
  char want[20000];
  snprintf(want, sizeof(want), "%s: camera.front.fps = 'fast': expected an integer from 1 to 240\n", conf);
  assert_string_equal(r.err, want);
  run_free(&r);
  now = slurp(conf);
  assert_non_null(strstr(now, "fps = 25 ; measured\n"));
  free(now);

  /* get on an invalid file reports the problems */
  write_file(conf, "[notes]\nenabled = perhaps\n");
  r = run("config", "get", conf, "notes.enabled", NULL);
  assert_int_equal(r.status, 65);
  assert_string_equal(r.out, "");
  assert_non_null(strstr(r.err, ":2: notes.enabled = 'perhaps': expected true or false"));
  run_free(&r);
}

static void expect_usage(struct run r)
{
  if (r.status != 64)
    fprintf(stderr, "status %d, stderr: %s\n", r.status, r.err);
  assert_int_equal(r.status, 64);
  assert_non_null(strstr(r.err, "usage: pirec"));
  assert_string_equal(r.out, "");
  run_free(&r);
}

static void test_usage(void **state)
{
  (void)state;
  expect_usage(run(NULL));
  expect_usage(run("record-nonsense", NULL));
  expect_usage(run("config", NULL));
  expect_usage(run("config", "frobnicate", NULL));
  expect_usage(run("config", "check", NULL));
  expect_usage(run("config", "check", "a", "b", NULL));
  expect_usage(run("config", "get", "a", NULL));
  expect_usage(run("config", "set", "a", "k", NULL));
  expect_usage(run("config", "set", "a", "k", "v", "k2", NULL));
  expect_usage(run("config", "defaults", "x", NULL));
  struct run r = run("config", "--help", NULL);
  assert_int_equal(r.status, 0);
  assert_non_null(strstr(r.out, "usage: pirec config check FILE"));
  run_free(&r);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_example_matches_defaults, setup, teardown),
      cmocka_unit_test_setup_teardown(test_docs_match_reference, setup, teardown),
      cmocka_unit_test_setup_teardown(test_check, setup, teardown),
      cmocka_unit_test_setup_teardown(test_get_and_set, setup, teardown),
      cmocka_unit_test_setup_teardown(test_usage, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
