/* Shared by the transition tests (test-transitions.c, test-transitions-race.c): a running
 * `pirec record` (test-controller-fixture.h) with GPIO lines on FIFOs (the pipe backend), and
 * the checks every transition must pass, read back from the session directories it wrote. */
#ifndef PIREC_TEST_TRANSITIONS_UTIL_H
#define PIREC_TEST_TRANSITIONS_UTIL_H

#include <dirent.h>
#include <fcntl.h>
#include <time.h>

#include "pirec/gpio.h"
#include "test-controller-fixture.h"

#define TR_MAX_SESSIONS 256

static inline int64_t tr_mono_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* TMP/NAME.fifo, one GPIO line of the pipe backend. */
static inline void tr_fifo(const char *tmp, const char *name, char *path, size_t cap)
{
  snprintf(path, cap, "%s/%s.fifo", tmp, name);
  assert_int_equal(mkfifo(path, 0600), 0);
}

/* A [gpio.NAME] input on fifo, no rate limit. */
static inline void tr_trigger(char *cfg, size_t cap, const char *name, const char *fifo, const char *edge,
                              const char *action, const char *debounce)
{
  size_t n = strlen(cfg);
  snprintf(cfg + n, cap - n,
           "[gpio.%s]\nchip = pipe:%s\nline = GPIO%d\ndirection = input\nedge = %s\n"
           "debounce = %s\nmin_interval = 0\naction = %s\n",
           name, fifo, (int)(n % 20) + 5, edge, debounce, action);
}

/* One edge record: the line is at `level` after it, at time ts (CLOCK_MONOTONIC). */
static inline void tr_edge(int fd, uint64_t seq, int level, int64_t ts)
{
  struct pirec_gpio_pipe_record rec = {.ts_ns = ts, .seqno = seq, .level = level, .offset = 1};
  assert_int_equal(write(fd, &rec, sizeof rec), (ssize_t)sizeof rec);
}

/* A connection with one command sent and its reply not read yet. */
static inline int tr_send_async(struct ctl *c, const char *json_text)
{
  int fd = tu_sock_connect(c->sock, 10000);
  assert_true(fd >= 0);
  json_error_t e;
  json_t *cmd = json_loads(json_text, 0, &e);
  assert_non_null(cmd);
  assert_int_equal(tu_sock_send(fd, cmd), 0);
  json_decref(cmd);
  return fd;
}

static inline json_t *tr_status(struct ctl *c)
{
  return ctl_call(c, "{\"id\":900,\"cmd\":\"status\"}", 10000);
}

static inline json_int_t tr_line_count(json_t *st, const char *line, const char *key)
{
  json_t *l = json_object_get(json_object_get(st, "gpio"), line);
  if (!l || !json_object_get(l, key))
    fail_msg("status has no gpio.%s.%s", line, key);
  return json_integer_value(json_object_get(l, key));
}

/* Waits until the controller has read `edges` edges of `line` (NULL: no line to wait for), runs no
 * op and is idle or recording; returns that status. */
static inline json_t *tr_settle(struct ctl *c, const char *line, json_int_t edges, int timeout_ms)
{
  int64_t until = tu_now_ms() + timeout_ms;
  for (;;) {
    json_t *st = tr_status(c);
    const char *s = jstr(st, "state");
    int calm = jint(st, "ops_queued") == 0 && (strcmp(s, "idle") == 0 || strcmp(s, "recording") == 0);
    if (calm && (!line || tr_line_count(st, line, "edges") >= edges))
      return st;
    json_decref(st);
    if (tu_now_ms() > until)
      fail_msg("the controller did not settle within %d ms", timeout_ms);
    usleep(20000);
  }
}

static int tr_cmp(const void *a, const void *b)
{
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The session directories under c->out, oldest first (names start with the UTC time; a suffix
 * -N orders sessions of the same second). Returns how many; each path malloc'd. */
static inline int tr_sessions(struct ctl *c, char **dirs, int max)
{
  DIR *d = opendir(c->out);
  int n = 0;
  if (!d)
    return 0;
  struct dirent *e;
  while ((e = readdir(d)) && n < max) {
    if (e->d_name[0] == '.')
      continue;
    size_t len = strlen(c->out) + strlen(e->d_name) + 2;
    dirs[n] = malloc(len);
    snprintf(dirs[n++], len, "%s/%s", c->out, e->d_name);
  }
  closedir(d);
  qsort(dirs, (size_t)n, sizeof *dirs, tr_cmp);
  /* same second: "T_x" sorts before "T_x-2" but "-10" before "-2"; order by start time instead */
  for (int i = 1; i < n; i++)
    for (int k = i; k > 0; k--) {
      json_t *a = load_manifest(dirs[k - 1]), *b = load_manifest(dirs[k]);
      json_int_t ta = jint(json_object_get(a, "start"), "mono_ns"),
                 tb = jint(json_object_get(b, "start"), "mono_ns");
      json_decref(a);
      json_decref(b);
      if (ta <= tb)
        break;
      char *t = dirs[k];
      dirs[k] = dirs[k - 1];
      dirs[k - 1] = t;
    }
  return n;
}

static inline void tr_sessions_free(char **dirs, int n)
{
  for (int i = 0; i < n; i++)
    free(dirs[i]);
}

/* A `gpio_edge` row's "seq N" of line `module` (gpio.NAME) in one session's events.csv: marks
 * seen[N] (fails on a second sighting anywhere). Returns the rows of that line; *not_kept adds the
 * line's `gpio_edges_lost` counts (edges beyond what a starting session keeps). */
static inline int tr_mark_edges(const char *dir, const char *module, unsigned char *seen, size_t nseen,
                                long long *not_kept)
{
  struct tu_csv ev;
  load_csv_in(dir, "events.csv", &ev);
  int ce = tu_csv_col(&ev, "event"), cm = tu_csv_col(&ev, "module"), cd = tu_csv_col(&ev, "detail"), rows = 0;
  for (size_t r = 1; r < ev.rows; r++) {
    if (strcmp(ev.fields[r][ce], "gpio_edges_lost") == 0 && strcmp(ev.fields[r][cm], module) == 0)
      *not_kept += strtoll(ev.fields[r][cd], NULL, 10);
    if (strcmp(ev.fields[r][ce], "gpio_edge") != 0 || strcmp(ev.fields[r][cm], module) != 0)
      continue;
    const char *p = strstr(ev.fields[r][cd], " seq ");
    assert_non_null(p);
    unsigned long long seq = strtoull(p + 5, NULL, 10);
    if (seq >= nseen)
      fail_msg("%s/events.csv: %s edge seq %llu was never sent", dir, module, seq);
    if (seen[seq])
      fail_msg("%s/events.csv: %s edge seq %llu is in more than one row", dir, module, seq);
    seen[seq] = 1;
    rows++;
  }
  tu_csv_free(&ev);
  return rows;
}

/* Every edge of `line` the controller delivered is in exactly one events.csv, or counted in
 * status as having come while no session was there (outside_session). */
static inline void tr_check_edges(struct ctl *c, json_t *st, const char *line, uint64_t sent)
{
  char module[80];
  snprintf(module, sizeof module, "gpio.%s", line);
  unsigned char *seen = calloc(sent + 1, 1);
  char *dirs[TR_MAX_SESSIONS];
  int n = tr_sessions(c, dirs, TR_MAX_SESSIONS), rows = 0;
  long long not_kept = 0;
  for (int i = 0; i < n; i++)
    rows += tr_mark_edges(dirs[i], module, seen, sent + 1, &not_kept);
  json_int_t events = tr_line_count(st, line, "events"), outside = tr_line_count(st, line, "outside_session");
  if (rows + not_kept + outside != events)
    fail_msg("%s: %lld events delivered, %d rows in %d sessions' events.csv + %lld counted as not kept + "
             "%lld outside a session",
             line, (long long)events, rows, n, not_kept, (long long)outside);
  tr_sessions_free(dirs, n);
  free(seen);
}

/* The trial whose span holds mono in session.json (trials begin where the last one ended). */
static inline int tr_trial_at(json_t *manifest, int64_t mono)
{
  json_t *trials = json_object_get(manifest, "trials"), *t;
  size_t i;
  int found = 0;
  json_array_foreach(trials, i, t)
  {
    if (jint(t, "start_mono_ns") <= mono)
      found = (int)jint(t, "trial");
  }
  return found;
}

/* A recorder's rows run on across trial changes: for each session, the rows of its trials in
 * order (files SUBDIR/tNNN<suffix>), every row's seq is the last one's + 1 + its dropped_before
 * (nothing lost uncounted), and, with period_ns > 0, where nothing was lost the gap in time_col
 * (the device's time when it has one, else mono_ns) is one sample interval: less than twice the
 * nominal period. So rows + the sum of dropped_before after the first row = the samples captured
 * from the session's first row to its last (*dropped_out: that sum). Rows marked before_start
 * (docs/FORMATS.md) must come first in their file and are not counted: they repeat the last
 * trial's or come from between trials. */
static inline void tr_check_rows(const char *dir, const char *sub, const char *suffix, const char *time_col,
                                 int64_t period_ns, int *rows_out, int64_t *dropped_out)
{
  json_t *m = load_manifest(dir);
  size_t ntrials = json_array_size(json_object_get(m, "trials"));
  json_decref(m);
  int64_t prev_seq = -1, prev_mono = 0, first_seq = -1, dropped_sum = 0;
  int rows = 0;
  for (size_t t = 1; t <= ntrials; t++) {
    char name[256];
    snprintf(name, sizeof name, "%s/t%03zu%s", sub, t, suffix);
    struct tu_csv f;
    load_csv_in(dir, name, &f);
    int cs = tu_csv_col(&f, "seq"), cd = tu_csv_col(&f, "dropped_before"), cm = tu_csv_col(&f, time_col);
    int ct = tu_csv_col(&f, "trial"), cb = tu_csv_col(&f, "before_start");
    assert_true(cs >= 0 && cd >= 0 && cm >= 0 && ct >= 0);
    int own = 0;
    for (size_t r = 1; r < f.rows; r++) {
      int64_t seq = strtoll(f.fields[r][cs], NULL, 10), dropped = strtoll(f.fields[r][cd], NULL, 10);
      int64_t mono = strtoll(f.fields[r][cm], NULL, 10);
      assert_int_equal(strtol(f.fields[r][ct], NULL, 10), (long)t);
      /* Rows from before the trial's start (the scene's GOP up to it, a pre-trigger buffer) come
       * first and repeat what the previous trial has or what came between trials. */
      if (cb >= 0 && strcmp(f.fields[r][cb], "1") == 0) {
        if (own)
          fail_msg("%s/%s row %zu: before_start after the trial's own rows", dir, name, r);
        continue;
      }
      own = 1;
      if (prev_seq >= 0) {
        if (seq != prev_seq + 1 + dropped)
          fail_msg("%s/%s row %zu: seq %lld after %lld with dropped_before %lld: frames lost uncounted", dir,
                   name, r, (long long)seq, (long long)prev_seq, (long long)dropped);
        /* an empty time (no device clock yet) is not judged */
        if (period_ns > 0 && dropped == 0 && mono && prev_mono && mono - prev_mono >= 2 * period_ns)
          fail_msg("%s/%s row %zu: %lld ns after the last row with nothing dropped", dir, name, r,
                   (long long)(mono - prev_mono));
      }
      if (first_seq < 0)
        first_seq = seq;
      else
        dropped_sum += dropped;
      prev_seq = seq;
      prev_mono = mono;
      rows++;
    }
    tu_csv_free(&f);
  }
  if (rows && rows + dropped_sum != prev_seq - first_seq + 1)
    fail_msg("%s %s: %d rows + %lld dropped_before != %lld samples captured", dir, sub, rows,
             (long long)dropped_sum, (long long)(prev_seq - first_seq + 1));
  if (rows_out)
    *rows_out = rows;
  if (dropped_out)
    *dropped_out = dropped_sum;
}

#endif
