/* Recorder protocol library over real pipes on a real libuv loop: the test plays the controller on
 * one end, a small module built on pirec_recorder on the other. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "pirec/recorder.h"

#define MAX_REPLIES 64

struct ctx {
  uv_loop_t loop;
  int cmd_fds[2];
  int rep_fds[2];
  uv_pipe_t cmd_w; /* test writes commands */
  uv_pipe_t rep_r; /* test reads replies */
  uv_timer_t timeout;
  uv_timer_t later; /* answers a stop asynchronously */
  struct pirec_recorder *rec;
  char *acc;
  size_t acc_len;
  json_t *replies[MAX_REPLIES];
  int nreplies;
  int want;
  int timed_out;
  /* module side */
  int starts, stops, statuses, notes, quits;
  char last_note[256];
  size_t last_note_len;
  char last_dir[256];
  int last_trial, last_part;
  struct pirec_recorder_req *pending_stop;
  int stop_fails; /* the next stop reports a write error, as a module whose disk filled */
  int closed;
};

static struct ctx *g;

/* ---- module ---- */
static void m_start(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct ctx *c = pirec_recorder_user(rec);
  c->starts++;
  snprintf(c->last_dir, sizeof c->last_dir, "%s", req->session_dir);
  c->last_trial = req->trial;
  c->last_part = req->part;
  if (strcmp(req->session_dir, "/nonexistent") == 0) {
    pirec_recorder_finish(req, -ENOENT, "cannot open '/nonexistent/notes.csv': No such file");
    return;
  }
  pirec_recorder_finish(req, 0, NULL);
}

static void answer_stop(uv_timer_t *t)
{
  struct ctx *c = t->data;
  int fail = c->stop_fails;
  c->stop_fails = 0;
  pirec_recorder_finish(c->pending_stop, fail ? -ENOSPC : 0,
                        fail ? "the trial's files are incomplete" : NULL);
  c->pending_stop = NULL;
}

static void m_stop(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct ctx *c = pirec_recorder_user(rec);
  c->stops++;
  c->pending_stop = req; /* answered 20 ms later, as a module closing its sinks would */
  uv_timer_start(&c->later, answer_stop, 20, 0);
}

static void m_status(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct ctx *c = pirec_recorder_user(rec);
  c->statuses++;
  pirec_recorder_counters_add(req, "notes", (uint64_t)c->notes);
  pirec_recorder_finish(req, 0, NULL);
}

static void m_note(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct ctx *c = pirec_recorder_user(rec);
  c->notes++;
  assert_true(req->text_len < sizeof c->last_note);
  memcpy(c->last_note, req->text, req->text_len);
  c->last_note_len = req->text_len;
  assert_true(req->mono_ns > 0);
  pirec_recorder_finish(req, 0, NULL);
}

static void on_rec_closed(struct pirec_recorder *rec, void *user)
{
  struct ctx *c = user;
  c->closed = 1;
  c->rec = NULL;
}

static void m_quit(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct ctx *c = pirec_recorder_user(rec);
  c->quits++;
  pirec_recorder_finish(req, 0, NULL);
  pirec_recorder_close(rec, on_rec_closed);
}

/* A picture of three bytes ("pir"): base64 "cGly". */
static void m_preview(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  assert_int_equal(req->max_width, 320);
  pirec_recorder_preview_done(req, 0, (const uint8_t *)"pir", 3, 320, 240, 77);
}

static const struct pirec_recorder_ops ops = {m_start, m_stop, m_status, m_note, m_quit, m_preview, NULL};

/* ---- controller side ---- */
static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
  static char buf[65536];
  *b = uv_buf_init(buf, sizeof buf);
}

static void on_reply(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
  struct ctx *c = s->data;
  if (n < 0) {
    uv_read_stop(s);
    uv_stop(&c->loop);
    return;
  }
  c->acc = realloc(c->acc, c->acc_len + (size_t)n);
  memcpy(c->acc + c->acc_len, b->base, (size_t)n);
  c->acc_len += (size_t)n;
  char *nl;
  while ((nl = memchr(c->acc, '\n', c->acc_len))) {
    size_t len = (size_t)(nl - c->acc);
    json_error_t e;
    json_t *j = json_loadb(c->acc, len, 0, &e);
    assert_non_null(j);
    assert_true(c->nreplies < MAX_REPLIES);
    c->replies[c->nreplies++] = j;
    memmove(c->acc, nl + 1, c->acc_len - len - 1);
    c->acc_len -= len + 1;
  }
  if (c->nreplies >= c->want)
    uv_stop(&c->loop);
}

static void on_timeout(uv_timer_t *t)
{
  struct ctx *c = t->data;
  c->timed_out = 1;
  uv_stop(&c->loop);
}

static void on_written(uv_write_t *w, int status)
{
  free(w->data);
  free(w);
}

static void send_raw(struct ctx *c, const char *data, size_t len)
{
  uv_write_t *w = malloc(sizeof *w);
  char *copy = malloc(len);
  memcpy(copy, data, len);
  w->data = copy;
  uv_buf_t b = uv_buf_init(copy, (unsigned)len);
  assert_int_equal(uv_write(w, (uv_stream_t *)&c->cmd_w, &b, 1, on_written), 0);
}

static void send_line(struct ctx *c, const char *line)
{
  send_raw(c, line, strlen(line));
  send_raw(c, "\n", 1);
}

/* Runs the loop until `total` replies have arrived (at most 5 s). */
static void wait_replies(struct ctx *c, int total)
{
  c->want = total;
  uv_timer_start(&c->timeout, on_timeout, 5000, 0);
  if (c->nreplies < total)
    uv_run(&c->loop, UV_RUN_DEFAULT);
  uv_timer_stop(&c->timeout);
  assert_false(c->timed_out);
  assert_true(c->nreplies >= total);
}

static const char *rs(json_t *j, const char *key)
{
  json_t *v = json_object_get(j, key);
  return json_is_string(v) ? json_string_value(v) : "";
}

static json_int_t ri(json_t *j, const char *key)
{
  return json_integer_value(json_object_get(j, key));
}

static int setup(void **state)
{
  struct ctx *c = calloc(1, sizeof *c);
  g = c;
  assert_int_equal(uv_loop_init(&c->loop), 0);
  assert_int_equal(pipe2(c->cmd_fds, O_CLOEXEC), 0);
  assert_int_equal(pipe2(c->rep_fds, O_CLOEXEC), 0);
  uv_pipe_init(&c->loop, &c->cmd_w, 0);
  uv_pipe_open(&c->cmd_w, c->cmd_fds[1]);
  uv_pipe_init(&c->loop, &c->rep_r, 0);
  uv_pipe_open(&c->rep_r, c->rep_fds[0]);
  c->rep_r.data = c;
  uv_timer_init(&c->loop, &c->timeout);
  c->timeout.data = c;
  uv_timer_init(&c->loop, &c->later);
  c->later.data = c;
  struct pirec_recorder_options o;
  pirec_recorder_options_default(&o);
  o.in_fd = c->cmd_fds[0];
  o.out_fd = c->rep_fds[1];
  o.handle_signals = 0;
  assert_int_equal(pirec_recorder_new(&c->loop, "notes", &ops, c, &o, &c->rec), 0);
  assert_int_equal(pirec_recorder_start(c->rec), 0);
  uv_read_start((uv_stream_t *)&c->rep_r, on_alloc, on_reply);
  wait_replies(c, 1);
  assert_string_equal(rs(c->replies[0], "reply"), "ready");
  assert_string_equal(rs(c->replies[0], "module"), "notes");
  assert_int_equal(json_array_size(json_object_get(c->replies[0], "commands")), 6); /* with preview */
  *state = c;
  return 0;
}

static void close_cb(uv_handle_t *h)
{
}

static int teardown(void **state)
{
  struct ctx *c = *state;
  if (c->rec) {
    /* End of stdin makes the module quit and close. */
    uv_close((uv_handle_t *)&c->cmd_w, close_cb);
    uv_timer_start(&c->timeout, on_timeout, 5000, 0);
    while (c->rec && !c->timed_out)
      uv_run(&c->loop, UV_RUN_ONCE);
    assert_false(c->timed_out);
  } else if (!uv_is_closing((uv_handle_t *)&c->cmd_w)) {
    uv_close((uv_handle_t *)&c->cmd_w, close_cb);
  }
  uv_close((uv_handle_t *)&c->rep_r, close_cb);
  uv_close((uv_handle_t *)&c->timeout, close_cb);
  uv_close((uv_handle_t *)&c->later, close_cb);
  uv_run(&c->loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&c->loop), 0);
  for (int i = 0; i < c->nreplies; i++)
    json_decref(c->replies[i]);
  free(c->acc);
  free(c);
  return 0;
}

static void test_session_flow(void **state)
{
  struct ctx *c = *state;
  send_line(c, "{\"id\":1,\"cmd\":\"start\",\"session_dir\":\"/tmp/s\",\"trial\":2,\"label\":\"pilot\"}");
  send_line(c,
            "{\"id\":\"n-1\",\"cmd\":\"note\",\"text\":\"a, \\\"quoted\\\"\\nline \xc3\xa9\",\"mono_ns\":5}");
  send_line(c, "{\"id\":3,\"cmd\":\"status\"}");
  send_line(c, "{\"id\":4,\"cmd\":\"stop\"}");
  send_line(c, "{\"id\":5,\"cmd\":\"status\"}");
  wait_replies(c, 6);
  json_t **r = c->replies;
  assert_int_equal(ri(r[1], "id"), 1);
  assert_string_equal(rs(r[1], "reply"), "started");
  assert_int_equal(ri(r[1], "trial"), 2);
  assert_string_equal(c->last_dir, "/tmp/s");
  assert_int_equal(c->last_part, 0);
  assert_string_equal(rs(r[2], "id"), "n-1");
  assert_string_equal(rs(r[2], "reply"), "noted");
  assert_int_equal(c->last_note_len, strlen("a, \"quoted\"\nline \xc3\xa9"));
  assert_memory_equal(c->last_note, "a, \"quoted\"\nline \xc3\xa9", c->last_note_len);
  assert_string_equal(rs(r[3], "reply"), "status");
  assert_string_equal(rs(r[3], "state"), "recording");
  assert_int_equal(ri(json_object_get(r[3], "counters"), "notes"), 1);
  /* The stop is answered 20 ms late, so the second status overtakes it: ids tell them apart. */
  assert_int_equal(ri(r[4], "id"), 5);
  assert_string_equal(rs(r[4], "reply"), "status");
  assert_string_equal(rs(r[4], "state"), "recording");
  assert_int_equal(ri(r[5], "id"), 4);
  assert_string_equal(rs(r[5], "reply"), "stopped");
  assert_false(pirec_recorder_recording(c->rec));
  assert_int_equal(pirec_recorder_trial(c->rec), 2);
  send_line(c, "{\"id\":6,\"cmd\":\"quit\"}");
  wait_replies(c, 7);
  assert_string_equal(rs(c->replies[6], "reply"), "bye");
  uv_timer_start(&c->timeout, on_timeout, 5000, 0);
  while (!c->closed && !c->timed_out)
    uv_run(&c->loop, UV_RUN_ONCE);
  assert_true(c->closed);
  assert_int_equal(c->quits, 1);
}

static void on_pause_done(uv_timer_t *t)
{
  *(int *)t->data = 1;
}

/* Runs the loop (the recorder's too) for ms milliseconds. */
static void run_for(struct ctx *c, uint64_t ms)
{
  uv_timer_t t;
  int done = 0;
  uv_timer_init(&c->loop, &t);
  t.data = &done;
  uv_timer_start(&t, on_pause_done, ms, 0);
  while (!done)
    uv_run(&c->loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&c->loop, UV_RUN_NOWAIT);
}

static json_int_t lag_ticks(json_t *status)
{
  return ri(json_object_get(status, "looplag"), "ticks");
}

/* An idle recorder's loop wakes only for commands: no loop-lag ticks before the trial, ticks
 * while it records, none after it. */
static void test_looplag_ticks_only_while_recording(void **state)
{
  struct ctx *c = *state;
  run_for(c, 150);
  send_line(c, "{\"id\":1,\"cmd\":\"status\"}");
  wait_replies(c, 2);
  assert_int_equal(lag_ticks(c->replies[1]), 0);
  send_line(c, "{\"id\":2,\"cmd\":\"start\",\"session_dir\":\"/tmp/s\",\"trial\":1}");
  wait_replies(c, 3);
  int n = 3;
  json_int_t ticks = 0;
  for (int i = 0; i < 100 && ticks == 0; i++) { /* ticks every 10 ms: wait for the first, up to 5 s */
    run_for(c, 50);
    send_line(c, "{\"id\":3,\"cmd\":\"status\"}");
    wait_replies(c, ++n);
    ticks = lag_ticks(c->replies[n - 1]);
  }
  assert_true(ticks > 0);
  send_line(c, "{\"id\":4,\"cmd\":\"stop\"}");
  wait_replies(c, ++n);
  assert_string_equal(rs(c->replies[n - 1], "reply"), "stopped");
  send_line(c, "{\"id\":5,\"cmd\":\"status\"}");
  wait_replies(c, ++n);
  json_int_t after_stop = lag_ticks(c->replies[n - 1]);
  run_for(c, 150);
  send_line(c, "{\"id\":6,\"cmd\":\"status\"}");
  wait_replies(c, ++n);
  assert_int_equal(lag_ticks(c->replies[n - 1]), after_stop);
}

/* A preview is answered at once, also while a stop waits for its files (it does not queue behind
 * it as a note would), with the picture as base64. */
static void test_preview(void **state)
{
  struct ctx *c = *state;
  send_line(c, "{\"id\":1,\"cmd\":\"start\",\"session_dir\":\"/tmp/s\",\"trial\":1}");
  send_line(c, "{\"id\":2,\"cmd\":\"stop\"}");
  send_line(c, "{\"id\":3,\"cmd\":\"preview\",\"max_width\":320}");
  send_line(c, "{\"id\":4,\"cmd\":\"preview\",\"max_width\":8}");
  wait_replies(c, 5);
  json_t **r = c->replies;
  assert_int_equal(ri(r[2], "id"), 3); /* before the stop's reply, 20 ms later */
  assert_string_equal(rs(r[2], "reply"), "preview");
  assert_string_equal(rs(r[2], "jpeg"), "cGly");
  assert_string_equal(rs(r[2], "type"), "image/jpeg");
  assert_int_equal(ri(r[2], "width"), 320);
  assert_int_equal(ri(r[2], "mono_ns"), 77);
  assert_int_equal(ri(r[3], "id"), 4);
  assert_string_equal(rs(r[3], "reply"), "error");
  assert_non_null(strstr(rs(r[3], "message"), "max_width"));
  assert_string_equal(rs(r[4], "reply"), "stopped");
}

static void test_bad_input(void **state)
{
  struct ctx *c = *state;
  const char *lines[] = {
      "{\"id\":1,\"cmd\":\"start\",\"trial\":1",                 /* malformed */
      "[1,2,3]",                                                 /* not an object */
      "{\"id\":3}",                                              /* no cmd */
      "{\"id\":4,\"cmd\":\"explode\"}",                          /* unknown */
      "{\"id\":5,\"cmd\":\"start\",\"session_dir\":\"/tmp/s\"}", /* no trial */
      "{\"id\":6,\"cmd\":\"start\",\"session_dir\":\"/tmp/s\",\"trial\":0}",
      "{\"id\":7,\"cmd\":\"start\",\"session_dir\":\"/tmp/s\",\"trial\":1,\"label\":\"../../etc\"}",
      "{\"id\":8,\"cmd\":\"stop\"}", /* not recording */
      "{\"id\":9,\"cmd\":\"note\"}", /* no text */
      "{\"id\":10,\"cmd\":\"start\",\"session_dir\":\"/nonexistent\",\"trial\":1}",
      "{\"id\":[1],\"cmd\":\"status\"}",
  };
  const char *expect[] = {"malformed JSON",
                          "expected a JSON object",
                          "missing field 'cmd'",
                          "unknown command \"explode\"",
                          "missing field 'trial'",
                          "'trial' must be an integer >= 1",
                          "invalid label",
                          "not recording",
                          "missing field 'text'",
                          "cannot open '/nonexistent/notes.csv'",
                          "'id' must be a string or an integer"};
  size_t n = sizeof lines / sizeof lines[0];
  for (size_t i = 0; i < n; i++)
    send_line(c, lines[i]);
  send_line(c, "{\"id\":99,\"cmd\":\"status\"}");
  wait_replies(c, 1 + (int)n + 1);
  for (size_t i = 0; i < n; i++) {
    json_t *r = c->replies[1 + i];
    assert_string_equal(rs(r, "reply"), "error");
    if (!strstr(rs(r, "message"), expect[i]))
      fail_msg("reply %zu: '%s' lacks '%s'", i, rs(r, "message"), expect[i]);
  }
  assert_int_equal(ri(c->replies[1 + 3], "id"), 4);
  assert_true(json_is_null(json_object_get(c->replies[1], "id")));
  assert_int_equal(c->starts, 1); /* only the /nonexistent one reached the module */
  assert_int_equal(c->stops, 0);
  assert_int_equal(c->notes, 0);
  json_t *st = c->replies[1 + n];
  assert_int_equal(ri(st, "id"), 99);
  assert_string_equal(rs(st, "state"), "idle");
  struct pirec_recorder_counters k;
  pirec_recorder_counters(c->rec, &k);
  assert_int_equal(k.bad_lines, 10);
}

static void test_long_line(void **state)
{
  struct ctx *c = *state;
  size_t big = 3u * 1024 * 1024;
  char *line = malloc(big + 1);
  memset(line, 'x', big);
  memcpy(line, "{\"id\":1,\"cmd\":\"note\",\"text\":\"", 29);
  line[big] = '\n';
  send_raw(c, line, big + 1);
  free(line);
  send_line(c, "{\"id\":2,\"cmd\":\"status\"}");
  wait_replies(c, 3);
  assert_string_equal(rs(c->replies[1], "reply"), "error");
  assert_non_null(strstr(rs(c->replies[1], "message"), "line too long"));
  assert_int_equal(ri(c->replies[2], "id"), 2);
  assert_string_equal(rs(c->replies[2], "reply"), "status");
  assert_int_equal(c->notes, 0);
}

static void test_double_start_and_eof_quit(void **state)
{
  struct ctx *c = *state;
  send_line(c, "{\"id\":1,\"cmd\":\"start\",\"session_dir\":\"/tmp/s\",\"trial\":1,\"part\":2}");
  send_line(c, "{\"id\":2,\"cmd\":\"start\",\"session_dir\":\"/tmp/s\",\"trial\":2}");
  wait_replies(c, 3);
  assert_string_equal(rs(c->replies[1], "reply"), "started");
  assert_int_equal(c->last_part, 2);
  assert_non_null(strstr(rs(c->replies[2], "message"), "already recording trial 1"));
  /* teardown closes stdin: quit must arrive without an id and the recorder close */
}

/* Issue 23: a stop that reports an error (the disk filled during the trial) still ends the trial,
 * so the next session's start is taken instead of "already recording trial 1". */
static void test_failed_stop_leaves_idle(void **state)
{
  struct ctx *c = *state;
  c->stop_fails = 1;
  send_line(c, "{\"id\":1,\"cmd\":\"start\",\"session_dir\":\"/tmp/s\",\"trial\":1}");
  send_line(c, "{\"id\":2,\"cmd\":\"stop\"}");
  send_line(c, "{\"id\":3,\"cmd\":\"status\"}");
  wait_replies(c, 4);
  json_t *stop = ri(c->replies[2], "id") == 2 ? c->replies[2] : c->replies[3];
  assert_string_equal(rs(stop, "reply"), "error");
  assert_non_null(strstr(rs(stop, "message"), "incomplete"));
  assert_false(pirec_recorder_recording(c->rec));
  send_line(c, "{\"id\":4,\"cmd\":\"start\",\"session_dir\":\"/tmp/s2\",\"trial\":1}");
  send_line(c, "{\"id\":5,\"cmd\":\"status\"}");
  wait_replies(c, 6);
  assert_int_equal(ri(c->replies[4], "id"), 4);
  assert_string_equal(rs(c->replies[4], "reply"), "started");
  assert_string_equal(rs(c->replies[5], "state"), "recording");
  assert_int_equal(c->starts, 2);
}

static void test_new_rejects(void **state)
{
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct pirec_recorder *rec = (void *)1;
  struct pirec_recorder_ops bad = {m_start, NULL, NULL, NULL, m_quit, NULL, NULL};
  assert_int_equal(pirec_recorder_new(&loop, "x", &bad, NULL, NULL, &rec), -EINVAL);
  assert_null(rec);
  assert_int_equal(pirec_recorder_new(&loop, "", &ops, NULL, NULL, &rec), -EINVAL);
  /* Closing a recorder that never started frees it. */
  int closed = 0;
  assert_int_equal(pirec_recorder_new(&loop, "x", &ops, &closed, NULL, &rec), 0);
  pirec_recorder_close(rec, (pirec_recorder_close_cb)(void (*)(void))NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_session_flow, setup, teardown),
      cmocka_unit_test_setup_teardown(test_looplag_ticks_only_while_recording, setup, teardown),
      cmocka_unit_test_setup_teardown(test_preview, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_input, setup, teardown),
      cmocka_unit_test_setup_teardown(test_long_line, setup, teardown),
      cmocka_unit_test_setup_teardown(test_double_start_and_eof_quit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failed_stop_leaves_idle, setup, teardown),
      cmocka_unit_test(test_new_rejects),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
