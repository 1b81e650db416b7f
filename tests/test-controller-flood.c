/* The control socket under load and abuse: 10,000 notes as fast as the socket takes them while
 * another client's status must keep answering (within 100 ms, or a fifth of the flood's length on a
 * machine slow enough to stretch the flood: a status that waited for the backlog would take all of
 * it); malformed input, a 1 MB line, an
 * over-long line, a client that never reads, a hostile label. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>

#include "test-controller-fixture.h"

#define NOTES 10000

static void set_nonblock(int fd)
{
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void test_note_flood_status_latency(void **state)
{
  struct ctl c;
  char dir[4200];
  ctl_start_session(&c, "{\"id\":1,\"cmd\":\"start\",\"label\":\"flood\"}", dir, sizeof dir);

  /* All notes in one buffer; the writer pushes as much as the socket takes each time it is
   * writable, while the replies are read back. */
  size_t cap = (size_t)NOTES * 80, len = 0;
  char *all = malloc(cap);
  for (int i = 0; i < NOTES; i++)
    len += (size_t)snprintf(all + len, cap - len,
                            "{\"id\":%d,\"cmd\":\"note\",\"text\":\"flood %05d, \\\"x\\\"\"}\n", i, i);
  int a = tu_sock_connect(c.sock, 5000);
  int b = tu_sock_connect(c.sock, 5000);
  assert_true(a >= 0 && b >= 0);
  /* Baseline: status round trips with nothing else going on, for the comparison printed below. */
  struct tu_sock_buf bbuf = {0};
  int64_t idle_worst = 0, idle_sum = 0;
  for (int i = 0; i < 50; i++) {
    const char *q = "{\"id\":\"st\",\"cmd\":\"status\"}\n";
    int64_t t0 = now_ns();
    assert_int_equal(send(b, q, strlen(q), MSG_NOSIGNAL), (ssize_t)strlen(q));
    json_t *j = tu_sock_read(b, &bbuf, 1000);
    assert_non_null(j);
    json_decref(j);
    int64_t lat = now_ns() - t0;
    idle_sum += lat;
    if (lat > idle_worst)
      idle_worst = lat;
  }
  set_nonblock(a);
  struct tu_sock_buf abuf = {0};
  int64_t flood_start = now_ns(), status_sum = 0;
  size_t off = 0;
  int noted = 0, status_n = 0, status_pending = 0;
  int64_t status_sent = 0, worst = 0, next_status = now_ns();
  int64_t deadline = tu_now_ms() + 60000;
  while (noted < NOTES) {
    if (tu_now_ms() > deadline)
      fail_msg("only %d of %d notes acknowledged in 60 s", noted, NOTES);
    if (!status_pending && now_ns() >= next_status) {
      const char *q = "{\"id\":\"st\",\"cmd\":\"status\"}\n";
      assert_int_equal(send(b, q, strlen(q), MSG_NOSIGNAL), (ssize_t)strlen(q));
      status_sent = now_ns();
      status_pending = 1;
    }
    struct pollfd p[2] = {{a, (short)(POLLIN | (off < len ? POLLOUT : 0)), 0}, {b, POLLIN, 0}};
    poll(p, 2, 20);
    if (p[0].revents & POLLOUT) {
      ssize_t n = send(a, all + off, len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0)
        off += (size_t)n;
    }
    if (p[0].revents & POLLIN) {
      json_t *j;
      tu_sock_fill(a, &abuf);
      while ((j = tu_sock_next(&abuf))) {
        if (strcmp(jstr(j, "reply"), "noted") != 0) {
          char *t = json_dumps(j, JSON_COMPACT);
          fail_msg("note refused: %s", t);
        }
        assert_int_equal(jint(j, "id"), noted);
        noted++;
        json_decref(j);
      }
    }
    if (p[1].revents & POLLIN) {
      json_t *j = tu_sock_read(b, &bbuf, 1000);
      assert_non_null(j);
      expect_reply(j, "status");
      json_decref(j);
      int64_t lat = now_ns() - status_sent;
      if (lat > worst)
        worst = lat;
      status_sum += lat;
      status_pending = 0;
      status_n++;
      next_status = now_ns() + 10000000; /* every 10 ms */
    }
  }
  close(a);
  close(b);
  free(all);
  free(abuf.data);
  free(bbuf.data);
  double secs = (now_ns() - flood_start) / 1e9;
  print_message("{\"notes\":%d,\"seconds\":%.3f,\"notes_per_s\":%.0f,"
                "\"status_idle_mean_ms\":%.3f,\"status_idle_max_ms\":%.3f,"
                "\"status_flood_calls\":%d,\"status_flood_mean_ms\":%.3f,\"status_flood_max_ms\":%.3f,"
                "\"flood_over_idle_mean\":%.2f}\n",
                NOTES, secs, NOTES / secs, idle_sum / 50 / 1e6, idle_worst / 1e6, status_n,
                status_n ? status_sum / status_n / 1e6 : 0.0, worst / 1e6,
                status_n ? (double)(status_sum / status_n) / (double)(idle_sum / 50) : 0.0);
  assert_true(status_n >= 3);
  /* The promise is that a flood does not starve other clients, not a latency on a loaded machine
   * (an ASan build beside other jobs measured 81 ms): a status that queued behind the notes would
   * wait for most of the flood. */
  int64_t limit = (now_ns() - flood_start) / 5;
  if (limit < 100000000)
    limit = 100000000;
  if (worst >= limit)
    fail_msg("status took %.1f ms during a %.1f s flood (limit %.1f ms)", worst / 1e6, secs, limit / 1e6);

  json_t *r = ctl_call(&c, "{\"id\":2,\"cmd\":\"stop\"}", 60000);
  expect_reply(r, "stopped");
  json_decref(r);
  struct tu_csv nt;
  load_csv_in(dir, "notes.csv", &nt);
  assert_int_equal(nt.rows, NOTES + 1);
  for (int i = 0; i < NOTES; i++) {
    char want[64];
    snprintf(want, sizeof want, "flood %05d, \"x\"", i);
    if (strcmp(nt.fields[i + 1][3], want) != 0)
      fail_msg("row %d: '%s', expected '%s'", i + 1, nt.fields[i + 1][3], want);
  }
  tu_csv_free(&nt);
  json_t *m = load_manifest(dir);
  json_t *cnt = json_object_get(json_object_get(json_object_get(m, "modules"), "notes"), "counters");
  assert_int_equal(jint(cnt, "notes"), NOTES);
  assert_int_equal(jint(cnt, "drops"), 0);
  json_decref(m);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

static json_t *roundtrip(int fd, struct tu_sock_buf *b, const char *line)
{
  assert_int_equal(send(fd, line, strlen(line), MSG_NOSIGNAL), (ssize_t)strlen(line));
  json_t *j = tu_sock_read(fd, b, 5000);
  if (!j)
    fail_msg("no reply to %.80s", line);
  return j;
}

static void expect_error(json_t *j, const char *substring)
{
  expect_reply(j, "error");
  if (!strstr(jstr(j, "message"), substring))
    fail_msg("error '%s' does not mention '%s'", jstr(j, "message"), substring);
  json_decref(j);
}

static void test_bad_input(void **state)
{
  struct ctl c;
  ctl_start(&c, 0, NULL);
  json_decref(ctl_wait_modules(&c, 0, 15000));
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"start\",\"label\":\"../../etc\"}", 5000);
  expect_error(r, "invalid label");
  r = ctl_call(&c, "{\"id\":1,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "started");
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", jstr(r, "session_dir"));
  json_decref(r);

  /* A client that connects and never reads (nor writes) holds nobody up. */
  int idle = tu_sock_connect(c.sock, 5000);
  /* A client that floods commands without reading its replies is disconnected. */
  int hog = tu_sock_connect(c.sock, 5000);
  set_nonblock(hog);
  int fd = tu_sock_connect(c.sock, 5000);
  struct tu_sock_buf b = {0};
  expect_error(roundtrip(fd, &b, "{\"id\":1,\"cmd\":\"start\",\"trial\":\n"), "malformed JSON");
  expect_error(roundtrip(fd, &b, "[1,2]\n"), "expected a JSON object");
  expect_error(roundtrip(fd, &b, "{\"id\":3,\"cmd\":\"format-disk\"}\n"), "unknown command");
  expect_error(roundtrip(fd, &b, "{\"id\":4}\n"), "missing field 'cmd'");
  expect_error(roundtrip(fd, &b, "{\"id\":5,\"cmd\":\"note\"}\n"), "missing field 'text'");
  expect_error(roundtrip(fd, &b, "{\"id\":6,\"cmd\":\"trial\",\"label\":\"a/b\"}\n"), "invalid label");
  expect_error(roundtrip(fd, &b, "{\"id\":7,\"cmd\":\"trial\",\"label\":\"../../etc\"}\n"), "invalid label");
  /* a 1 MB line: a note far over notes.max_length */
  size_t big = 1024 * 1024;
  char *line = malloc(big + 64);
  int n = snprintf(line, 64, "{\"id\":8,\"cmd\":\"note\",\"text\":\"");
  memset(line + n, 'y', big);
  strcpy(line + n + big, "\"}\n");
  json_t *j = roundtrip(fd, &b, line);
  expect_error(j, "note too long");

  /* flood the hog while it never reads */
  const char *q = "{\"id\":0,\"cmd\":\"status\"}\n";
  size_t ql = strlen(q);
  int64_t until = tu_now_ms() + 20000;
  int hog_gone = 0;
  while (!hog_gone && tu_now_ms() < until) {
    ssize_t s = send(hog, q, ql, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (s < 0 && (errno == EPIPE || errno == ECONNRESET))
      hog_gone = 1;
    if (s < 0 && errno == EAGAIN) {
      /* meanwhile everybody else is still served promptly */
      int64_t t0 = tu_now_ms();
      json_t *st = roundtrip(fd, &b, "{\"id\":\"s\",\"cmd\":\"status\"}\n");
      expect_reply(st, "status");
      hog_gone = jint(st, "clients_dropped") > 0;
      json_decref(st);
      assert_true(tu_now_ms() - t0 < 1000);
    }
  }
  assert_true(hog_gone);
  close(hog);

  /* an over-long line (over 2 MiB without a newline) is refused and the client disconnected */
  int big_fd = tu_sock_connect(c.sock, 5000);
  size_t huge = 3u * 1024 * 1024;
  char *h = malloc(huge);
  memset(h, 'z', huge);
  size_t sent = 0;
  set_nonblock(big_fd);
  until = tu_now_ms() + 10000;
  while (sent < huge && tu_now_ms() < until) {
    ssize_t s = send(big_fd, h + sent, huge - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (s > 0)
      sent += (size_t)s;
    else if (errno != EAGAIN)
      break;
    else
      poll(&(struct pollfd){big_fd, POLLOUT, 0}, 1, 50);
  }
  free(h);
  struct tu_sock_buf hb = {0};
  json_t *he = tu_sock_read(big_fd, &hb, 5000);
  assert_non_null(he);
  expect_error(he, "line too long");
  free(hb.data);
  close(big_fd);

  /* the recording went on: notes still land, and the session stops cleanly */
  expect_reply(j = roundtrip(fd, &b, "{\"id\":9,\"cmd\":\"note\",\"text\":\"after the abuse\"}\n"), "noted");
  json_decref(j);
  j = roundtrip(fd, &b, "{\"id\":10,\"cmd\":\"stop\"}\n");
  expect_reply(j, "stopped");
  json_decref(j);
  free(b.data);
  free(line);
  close(fd);
  close(idle);
  struct tu_csv nt;
  load_csv_in(dir, "notes.csv", &nt);
  assert_int_equal(nt.rows, 2);
  assert_string_equal(nt.fields[1][3], "after the abuse");
  tu_csv_free(&nt);
  /* The command line refuses the same label, and a second controller on the same socket. */
  const char *bad_label[] = {tu_program("pirec"), "record", "-c", c.cfg, "--label", "../../etc", NULL};
  struct tu_proc p2;
  assert_int_equal(tu_proc_start(&p2, bad_label, NULL), 0);
  int st2 = tu_proc_wait(&p2, 10000);
  assert_true(WIFEXITED(st2));
  assert_int_equal(WEXITSTATUS(st2), 65);
  const char *second[] = {tu_program("pirec"), "record", "-c", c.cfg, "--wait", NULL};
  assert_int_equal(tu_proc_start(&p2, second, NULL), 0);
  st2 = tu_proc_wait(&p2, 10000);
  assert_true(WIFEXITED(st2));
  assert_int_equal(WEXITSTATUS(st2), 69);
  /* the first one is unharmed */
  json_t *alive = ctl_call(&c, "{\"id\":1,\"cmd\":\"status\"}", 5000);
  expect_reply(alive, "status");
  json_decref(alive);

  /* no directory escaped the output directory */
  char esc[4400];
  snprintf(esc, sizeof esc, "%s/../etc", c.out);
  struct stat st;
  assert_int_not_equal(stat(esc, &st), 0);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_note_flood_status_latency),
      cmocka_unit_test(test_bad_input),
  };
  if (getenv("PIREC_TEST_FILTER"))
    cmocka_set_test_filter(getenv("PIREC_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
