/* pirec-notes, the real binary: standalone on a stdin pipe and under the recorder protocol. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "helpers/counters.h"

#include "test-controller-util.h"

static const char *tricky[] = {
    "plain note",
    "commas, and \"double quotes\", too",
    "=SUM(A1:A9)",
    "+1 -1 @user",
    "-starts with minus",
    "'already quoted",
    "UTF-8: caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x9f",
    "  leading and trailing spaces  ",
};

static void check_header(const struct tu_csv *csv)
{
  assert_true(csv->rows >= 1);
  assert_int_equal(csv->nfields[0], 4);
  assert_string_equal(csv->fields[0][0], "trial");
  assert_string_equal(csv->fields[0][1], "mono_ns");
  assert_string_equal(csv->fields[0][2], "wall_ns");
  assert_string_equal(csv->fields[0][3], "text");
}

static void test_standalone(void **state)
{
  char *dir = tu_tmpdir("notes");
  const char *argv[] = {tu_program("pirec-notes"), dir, NULL};
  struct tu_proc p;
  assert_int_equal(tu_proc_start(&p, argv, NULL), 0);
  size_t n = sizeof tricky / sizeof tricky[0];
  for (size_t i = 0; i < n; i++)
    assert_int_equal(tu_proc_writeln(&p, tricky[i]), 0);
  tu_proc_close_stdin(&p);
  int status = tu_proc_wait(&p, 10000);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  char path[4200];
  snprintf(path, sizeof path, "%s/notes.csv", dir);
  struct tu_csv csv;
  assert_int_equal(tu_csv_load(path, &csv), 0);
  check_header(&csv);
  assert_int_equal(csv.rows, n + 1);
  int64_t prev = 0;
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(csv.fields[i + 1][0], "0");
    int64_t mono = strtoll(csv.fields[i + 1][1], NULL, 10);
    assert_true(mono >= prev);
    prev = mono;
    assert_true(strtoll(csv.fields[i + 1][2], NULL, 10) > 1600000000000000000LL);
    assert_string_equal(csv.fields[i + 1][3], tricky[i]);
  }
  tu_csv_free(&csv);
  /* A formula-leading note is stored guarded in the raw bytes. */
  char *raw = tu_read_file(path, NULL);
  assert_non_null(strstr(raw, "'=SUM(A1:A9)"));
  free(raw);
  tu_rm_rf(dir);
  free(dir);
}

static json_t *call(struct tu_proc *p, json_t *cmd, json_int_t id)
{
  json_object_set_new(cmd, "id", json_integer(id));
  char *text = json_dumps(cmd, JSON_COMPACT);
  json_decref(cmd);
  assert_int_equal(tu_proc_writeln(p, text), 0);
  free(text);
  json_t *r = tu_proc_reply(p, id, NULL, 10000);
  assert_non_null(r);
  return r;
}

static const char *reply_of(json_t *r)
{
  return json_string_value(json_object_get(r, "reply"));
}

/* The counter identities after a stop: every note sent in a trial was accepted or dropped, and
 * the file holds a row for each one accepted. */
static void check_counters(struct tu_proc *p, json_int_t id, const char *dir, uint64_t sent)
{
  char path[4200];
  uint64_t rows, unused;
  json_t *r = call(p, json_pack("{s:s}", "cmd", "status"), id);
  json_t *c = json_object_get(r, "counters");
  snprintf(path, sizeof path, "%s/notes.csv", dir);
  assert_int_equal(counters_csv(path, NULL, &rows, &unused), 0);
  counters_check_notes(sent, (uint64_t)json_integer_value(json_object_get(c, "notes")),
                       (uint64_t)json_integer_value(json_object_get(c, "drops")), rows);
  json_decref(r);
}

/* Two trials, notes with newlines in both, pipelined behind start; the file is appended to, not
 * truncated, by the second trial. */
static void test_protocol_trials(void **state)
{
  char *dir = tu_tmpdir("notes");
  const char *argv[] = {tu_program("pirec-notes"), "--protocol", "--name", "notes", NULL};
  struct tu_proc p;
  assert_int_equal(tu_proc_start(&p, argv, NULL), 0);
  json_t *ready = tu_proc_reply(&p, -1, "ready", 10000);
  assert_non_null(ready);
  json_decref(ready);
  enum { PER_TRIAL = 500 };
  json_int_t id = 1;
  for (int trial = 1; trial <= 2; trial++) {
    /* start and the notes go out back to back: the notes must wait for the open file */
    char line[512];
    snprintf(line, sizeof line,
             "{\"id\":%lld,\"cmd\":\"start\",\"session_dir\":\"%s\",\"trial\":%d,\"label\":\"x\"}",
             (long long)id, dir, trial);
    json_int_t start_id = id++;
    assert_int_equal(tu_proc_writeln(&p, line), 0);
    for (int i = 0; i < PER_TRIAL; i++) {
      json_t *cmd = json_pack("{s:I,s:s,s:s+,s:I,s:I}", "id", (json_int_t)id++, "cmd", "note", "text",
                              tricky[i % 8], trial == 2 && i == 7 ? "\nsecond line" : "", "mono_ns",
                              (json_int_t)(trial * 1000000 + i), "wall_ns", (json_int_t)1);
      char *t = json_dumps(cmd, JSON_COMPACT);
      assert_int_equal(tu_proc_writeln(&p, t), 0);
      free(t);
      json_decref(cmd);
    }
    json_t *r = tu_proc_reply(&p, start_id, NULL, 10000);
    assert_string_equal(reply_of(r), "started");
    json_decref(r);
    r = tu_proc_reply(&p, id - 1, NULL, 10000);
    assert_string_equal(reply_of(r), "noted");
    json_decref(r);
    r = call(&p, json_pack("{s:s}", "cmd", "status"), id++);
    assert_string_equal(reply_of(r), "status");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "counters"), "notes")),
                     trial * PER_TRIAL);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "counters"), "drops")), 0);
    json_decref(r);
    r = call(&p, json_pack("{s:s}", "cmd", "stop"), id++);
    assert_string_equal(reply_of(r), "stopped");
    json_decref(r);
    check_counters(&p, id++, dir, (uint64_t)trial * PER_TRIAL);
  }
  /* A note between trials is refused, not lost silently. */
  json_t *r = call(&p, json_pack("{s:s,s:s}", "cmd", "note", "text", "late"), id++);
  assert_string_equal(reply_of(r), "error");
  json_decref(r);
  r = call(&p, json_pack("{s:s}", "cmd", "quit"), id++);
  assert_string_equal(reply_of(r), "bye");
  json_decref(r);
  int status = tu_proc_wait(&p, 10000);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);

  char path[4200];
  snprintf(path, sizeof path, "%s/notes.csv", dir);
  struct tu_csv csv;
  assert_int_equal(tu_csv_load(path, &csv), 0);
  check_header(&csv);
  assert_int_equal(csv.rows, 1 + 2 * PER_TRIAL);
  for (int trial = 1; trial <= 2; trial++) {
    for (int i = 0; i < PER_TRIAL; i++) {
      char **f = csv.fields[1 + (trial - 1) * PER_TRIAL + i];
      assert_int_equal(strtol(f[0], NULL, 10), trial);
      assert_int_equal(strtoll(f[1], NULL, 10), trial * 1000000 + i);
      char want[256];
      snprintf(want, sizeof want, "%s%s", tricky[i % 8], trial == 2 && i == 7 ? "\nsecond line" : "");
      assert_string_equal(f[3], want);
    }
  }
  tu_csv_free(&csv);
  tu_rm_rf(dir);
  free(dir);
}

/* SIGTERM in the middle of a trial: the file is complete and parseable, the exit clean. */
static void test_sigterm_mid_trial(void **state)
{
  char *dir = tu_tmpdir("notes");
  const char *argv[] = {tu_program("pirec-notes"), "--protocol", NULL};
  struct tu_proc p;
  assert_int_equal(tu_proc_start(&p, argv, NULL), 0);
  json_decref(tu_proc_reply(&p, -1, "ready", 10000));
  json_t *r = call(&p, json_pack("{s:s,s:s,s:i}", "cmd", "start", "session_dir", dir, "trial", 3), 1);
  assert_string_equal(reply_of(r), "started");
  json_decref(r);
  for (int i = 0; i < 200; i++) {
    char line[128];
    snprintf(line, sizeof line, "{\"id\":%d,\"cmd\":\"note\",\"text\":\"note %d, before the signal\"}",
             10 + i, i);
    assert_int_equal(tu_proc_writeln(&p, line), 0);
  }
  json_decref(tu_proc_reply(&p, 209, NULL, 10000));
  kill(p.pid, SIGTERM);
  int status = tu_proc_wait(&p, 10000);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  char path[4200];
  snprintf(path, sizeof path, "%s/notes.csv", dir);
  struct tu_csv csv;
  assert_int_equal(tu_csv_load(path, &csv), 0);
  assert_int_equal(csv.rows, 201);
  assert_string_equal(csv.fields[200][3], "note 199, before the signal");
  tu_csv_free(&csv);
  tu_rm_rf(dir);
  free(dir);
}

static void test_bad_usage(void **state)
{
  const char *argv[] = {tu_program("pirec-notes"), NULL};
  struct tu_proc p;
  assert_int_equal(tu_proc_start(&p, argv, NULL), 0);
  int status = tu_proc_wait(&p, 5000);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 64);
  /* An output directory that cannot be created is reported and exits non-zero. */
  const char *argv2[] = {tu_program("pirec-notes"), "/proc/pirec-cannot-exist/x", NULL};
  assert_int_equal(tu_proc_start(&p, argv2, NULL), 0);
  status = tu_proc_wait(&p, 5000);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 1);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_standalone),
      cmocka_unit_test(test_protocol_trials),
      cmocka_unit_test(test_sigterm_mid_trial),
      cmocka_unit_test(test_bad_usage),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
