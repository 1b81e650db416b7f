/* Tests for config/'s file operations on real files: load and save, pirec_config_set keeping every
 * other byte, refusing invalid results, and two processes setting keys concurrently under the lock
 * while a third keeps reading. */
#include <errno.h>
#include <fcntl.h>
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

#include "pirec/config.h"

#include "helpers/test-dir.h"

static char test_dir[4096];
static char conf[4200];

/* A fresh directory on the build tree's disk, so fsync and rename behave as in real use. */
static int setup(void **state)
{
  (void)state;
  if (test_dir_make("test-config", test_dir, sizeof(test_dir)) != 0)
    return -1;
  snprintf(conf, sizeof(conf), "%s/pirec.conf", test_dir);
  umask(022);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  return test_dir_remove(test_dir);
}

static void write_file(const char *path, const char *text)
{
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
  assert_int_equal(fclose(f), 0);
}

static char *read_file(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *buf = malloc(1 << 20);
  assert_non_null(buf);
  size_t n = fread(buf, 1, (1 << 20) - 1, f);
  buf[n] = '\0';
  fclose(f);
  if (len)
    *len = n;
  return buf;
}

static const char sample[] = "# rig 2\n"
                             "[session]\n"
                             "output_dir = /data/sessions   ; USB disk\n"
                             "\n"
                             "[camera.front]\n"
                             "source = v4l2 ; the USB one\n"
                             "fps = 30\n"
                             "\t# trailing comment with a tab\n"
                             "[notes]\n"
                             "enabled = true";

/* set leaves every byte outside the value identical, on disk */
static void test_set_round_trip(void **state)
{
  (void)state;
  write_file(conf, sample);
  chmod(conf, 0600);
  struct pirec_config_assignment a = {"camera.front.fps", "12"};
  struct pirec_config_errors e = {0};
  assert_int_equal(pirec_config_set(conf, &a, 1, &e), 0);
  assert_int_equal(e.count, 0);
  size_t len;
  char *got = read_file(conf, &len);
  const char *at = strstr(sample, "fps = 30") + strlen("fps = ");
  size_t pre = (size_t)(at - sample);
  assert_int_equal(len, strlen(sample));
  assert_memory_equal(got, sample, pre);
  assert_memory_equal(got + pre, "12", 2);
  assert_memory_equal(got + pre + 2, sample + pre + 2, strlen(sample) - pre - 2);
  free(got);
  struct stat st;
  assert_int_equal(stat(conf, &st), 0);
  assert_int_equal(st.st_mode & 07777, 0600); /* permissions survive the atomic replace */

  /* setting it back restores the original bytes exactly */
  a.value = "30";
  assert_int_equal(pirec_config_set(conf, &a, 1, &e), 0);
  got = read_file(conf, &len);
  assert_int_equal(len, strlen(sample));
  assert_memory_equal(got, sample, len);
  free(got);

  /* a new key into its section and a new section at the end; the rest stays */
  struct pirec_config_assignment two[] = {{"camera.front.crf", "18"}, {"remux.format", "mkv"}};
  assert_int_equal(pirec_config_set(conf, two, 2, &e), 0);
  got = read_file(conf, &len);
  char want[2048];
  const char *after = strstr(sample, "fps = 30\n") + strlen("fps = 30\n");
  snprintf(want, sizeof(want), "%.*scrf = 18\n%s\n\n[remux]\nformat = mkv\n", (int)(after - sample), sample,
           after);
  assert_string_equal(got, want);
  free(got);
  /* and the file loads with the new values */
  struct pirec_config *cfg;
  assert_int_equal(pirec_config_load(conf, &cfg, &e), 0);
  assert_int_equal(pirec_config_get_int(cfg, "camera.front", "crf"), 18);
  assert_string_equal(pirec_config_get_string(cfg, "remux", "format"), "mkv");
  assert_string_equal(pirec_config_path(cfg), conf);
  pirec_config_free(cfg);
}

static void test_set_refuses(void **state)
{
  (void)state;
  write_file(conf, sample);
  struct pirec_config_errors e = {0};
  struct pirec_config_assignment bad = {"camera.front.fps", "fast"};
  assert_int_equal(pirec_config_set(conf, &bad, 1, &e), -EINVAL);
  assert_int_equal(e.count, 1);
  char want[4400];
  snprintf(want, sizeof(want), "%s: camera.front.fps = 'fast': expected an integer from 1 to 240", conf);
  assert_string_equal(e.items[0].message, want);
  pirec_config_errors_free(&e);
  char *got = read_file(conf, NULL);
  assert_string_equal(got, sample);
  free(got);

  /* a value that is fine alone but makes the file invalid: nothing is written */
  struct pirec_config_assignment url = {"camera.front.source", "url"};
  assert_int_equal(pirec_config_set(conf, &url, 1, &e), -EINVAL);
  assert_int_equal(e.count, 1);
  snprintf(want, sizeof(want), "%s:5: camera.front.url: missing, expected a stream URL because source = url",
           conf);
  assert_string_equal(e.items[0].message, want);
  pirec_config_errors_free(&e);
  got = read_file(conf, NULL);
  assert_string_equal(got, sample);
  free(got);
  /* setting both in one call is fine */
  struct pirec_config_assignment both[] = {{"camera.front.source", "url"},
                                           {"camera.front.url", "rtsp://h:554/s"}};
  assert_int_equal(pirec_config_set(conf, both, 2, &e), 0);
  assert_int_equal(e.count, 0);

  /* a directory that does not exist */
  char missing[4400];
  snprintf(missing, sizeof(missing), "%s/no/such/dir/pirec.conf", test_dir);
  struct pirec_config_assignment ok = {"session.label", "x"};
  assert_int_equal(pirec_config_set(missing, &ok, 1, &e), -ENOENT);
  assert_int_equal(e.count, 1);
  snprintf(want, sizeof(want), "cannot lock directory '%s/no/such/dir': No such file or directory", test_dir);
  assert_string_equal(e.items[0].message, want);
  pirec_config_errors_free(&e);
}

static void test_set_creates_file(void **state)
{
  (void)state;
  struct pirec_config_assignment a[] = {{"camera.c0.fps", "10"}, {"camera.c0.size", "320x240"}};
  assert_int_equal(pirec_config_set(conf, a, 2, NULL), 0);
  char *got = read_file(conf, NULL);
  assert_string_equal(got, "[camera.c0]\nfps = 10\nsize = 320x240\n");
  free(got);
  struct stat st;
  assert_int_equal(stat(conf, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0644);
}

/* Editing through a symlink changes the file it points at and keeps the link. */
static void test_set_through_symlink(void **state)
{
  (void)state;
  char real[4400];
  snprintf(real, sizeof(real), "%s/real.conf", test_dir);
  write_file(real, "[notes]\nenabled = true\n");
  assert_int_equal(symlink("real.conf", conf), 0);
  struct pirec_config_assignment a = {"notes.enabled", "false"};
  struct pirec_config_errors e = {0};
  assert_int_equal(pirec_config_set(conf, &a, 1, &e), 0);
  struct stat st;
  assert_int_equal(lstat(conf, &st), 0);
  assert_true(S_ISLNK(st.st_mode));
  char *got = read_file(real, NULL);
  assert_string_equal(got, "[notes]\nenabled = false\n");
  free(got);
  struct pirec_config *cfg;
  assert_int_equal(pirec_config_load(conf, &cfg, NULL), 0);
  assert_int_equal(pirec_config_save(cfg, conf), 0);
  assert_int_equal(lstat(conf, &st), 0);
  assert_true(S_ISLNK(st.st_mode));
  pirec_config_free(cfg);
}

static void test_load_and_save(void **state)
{
  (void)state;
  struct pirec_config *cfg;
  struct pirec_config_errors e = {0};
  assert_int_equal(pirec_config_load(conf, &cfg, &e), -ENOENT);
  assert_null(cfg);
  assert_int_equal(e.count, 1);
  assert_int_equal(e.items[0].line, 0);
  char want[4400];
  snprintf(want, sizeof(want), "cannot open '%s': No such file or directory", conf);
  assert_string_equal(e.items[0].message, want);
  pirec_config_errors_free(&e);

  write_file(conf, "[camera.x]\nfps = 7\n[gpio.in]\nline = 5\nedge = both\n");
  assert_int_equal(pirec_config_load(conf, &cfg, &e), 0);
  char saved[4400];
  snprintf(saved, sizeof(saved), "%s/saved.conf", test_dir);
  assert_int_equal(pirec_config_save(cfg, saved), 0);
  struct pirec_config *again;
  assert_int_equal(pirec_config_load(saved, &again, &e), 0);
  char *a = pirec_config_format(cfg), *b = pirec_config_format(again);
  assert_string_equal(a, b);
  char *disk = read_file(saved, NULL);
  assert_string_equal(disk, a);
  assert_string_equal(pirec_config_get_string(again, "gpio.in", "edge"), "both");
  free(a);
  free(b);
  free(disk);
  pirec_config_free(cfg);
  pirec_config_free(again);

  /* a file over the limit */
  int fd = open(conf, O_WRONLY | O_TRUNC);
  assert_true(fd >= 0);
  assert_int_equal(ftruncate(fd, 17 << 20), 0);
  close(fd);
  assert_int_equal(pirec_config_load(conf, &cfg, &e), -EFBIG);
  assert_int_equal(e.count, 1);
  pirec_config_errors_free(&e);
}

/* Two processes set different keys many times while a third reads. Each writer first checks that
 * its own previous value is still in the file: a lost update (the other writer replacing the file
 * with a copy read before our write) would show up there. The reader checks that every version it
 * sees is complete and valid. */
#define ITERATIONS 150

static int writer(const char *key, const char *prefix)
{
  char value[64], expect[64];
  for (int i = 0; i < ITERATIONS; i++) {
    struct pirec_config *cfg;
    struct pirec_config_errors e = {0};
    if (pirec_config_load(conf, &cfg, &e) != 0) {
      fprintf(stderr, "writer %s: load failed: %s\n", prefix, e.count ? e.items[0].message : "?");
      return 1;
    }
    char *now;
    pirec_config_get_text(cfg, key, &now);
    snprintf(expect, sizeof(expect), "%s%d", prefix, i - 1);
    if (i > 0 && strcmp(now, expect) != 0) {
      fprintf(stderr, "writer %s: lost update: %s = '%s', expected '%s'\n", prefix, key, now, expect);
      return 1;
    }
    free(now);
    pirec_config_free(cfg);
    snprintf(value, sizeof(value), "%s%d", prefix, i);
    struct pirec_config_assignment a = {key, value};
    if (pirec_config_set(conf, &a, 1, &e) != 0) {
      fprintf(stderr, "writer %s: set failed: %s\n", prefix, e.count ? e.items[0].message : "?");
      return 1;
    }
  }
  return 0;
}

static void test_concurrent_set(void **state)
{
  (void)state;
  write_file(conf, "# two writers\n[session]\nlabel = start ; the label\n\n[camera.a]\nlavfi = start\n"
                   "# end\n");
  pid_t a = fork();
  assert_true(a >= 0);
  if (a == 0)
    _exit(writer("session.label", "a"));
  pid_t b = fork();
  assert_true(b >= 0);
  if (b == 0)
    _exit(writer("camera.a.lavfi", "b"));

  int reads = 0, done = 0, status;
  while (done < 2) {
    pid_t p = waitpid(-1, &status, WNOHANG);
    if (p > 0) {
      assert_true(WIFEXITED(status));
      assert_int_equal(WEXITSTATUS(status), 0);
      done++;
      continue;
    }
    struct pirec_config *cfg;
    struct pirec_config_errors e = {0};
    int r = pirec_config_load(conf, &cfg, &e);
    if (r != 0)
      fprintf(stderr, "reader: %s\n", e.count ? e.items[0].message : "?");
    assert_int_equal(r, 0);
    size_t len;
    const char *src = pirec_config_source(cfg, &len);
    assert_non_null(strstr(src, "# two writers\n[session]\nlabel = "));
    assert_non_null(strstr(src, " ; the label\n\n[camera.a]\nlavfi = "));
    assert_int_equal(src[len - 1], '\n');
    assert_non_null(strstr(src, "\n# end\n"));
    pirec_config_free(cfg);
    reads++;
  }
  char *got = read_file(conf, NULL);
  char want[256];
  snprintf(want, sizeof(want),
           "# two writers\n[session]\nlabel = a%d ; the label\n\n[camera.a]\nlavfi = b%d\n# end\n",
           ITERATIONS - 1, ITERATIONS - 1);
  assert_string_equal(got, want);
  free(got);
  assert_true(reads > 0);
  fprintf(stderr, "reader saw %d complete versions during %d sets\n", reads, 2 * ITERATIONS);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_set_round_trip, setup, teardown),
      cmocka_unit_test_setup_teardown(test_set_refuses, setup, teardown),
      cmocka_unit_test_setup_teardown(test_set_creates_file, setup, teardown),
      cmocka_unit_test_setup_teardown(test_set_through_symlink, setup, teardown),
      cmocka_unit_test_setup_teardown(test_load_and_save, setup, teardown),
      cmocka_unit_test_setup_teardown(test_concurrent_set, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
