/* The transition race suite (issue 25, `ctest -L transitions`): `pirec record` with notes, a
 * camera and the eye tracker (against pirec-eyesim) where they are built, GPIO lines on FIFOs and
 * the control socket together. Notes, trial changes, starts, stops, markers, toggles and trial
 * edges are fired at random offsets (fixed seeds, bounded counts) around every transition; after
 * each run:
 *   - every note answered "noted" is in notes.csv exactly once (and one refused is nowhere);
 *   - every edge the controller delivered is in exactly one events.csv, or counted (not kept by a
 *     starting session, or outside any session);
 *   - per recorder and session, rows + the dropped_before across its trials = samples captured
 *     from its first row to its last, every seq accounted for.
 * PIREC_TRANSITIONS_SEEDS=N runs N seeds (default 6). */
#include "test-transitions-util.h"

enum { ACTIONS = 36, MAX_NOTES = ACTIONS, MAX_FDS = 2 * ACTIONS };

struct race {
  struct ctl c;
  char *tmp;
  int fd[3]; /* pedal (toggle, both edges), mark (marker), next (trial) */
  uint64_t seq[3];
  int level[3];
  int pending[MAX_FDS]; /* connections whose reply is not read yet */
  int is_note[MAX_FDS];
  int note_no[MAX_FDS];
  int npending;
  int nnotes;
  int acked[MAX_NOTES];
  struct tu_proc sim;
  int have_sim;
};

static const char *const line_names[3] = {"pedal", "mark", "next"};

static void race_send(struct race *r, const char *json_text, int note_no)
{
  r->pending[r->npending] = tr_send_async(&r->c, json_text);
  r->is_note[r->npending] = note_no >= 0;
  r->note_no[r->npending++] = note_no;
}

static void race_edge(struct race *r, int line)
{
  /* pedal watches both edges: every change toggles; the others act on rising edges */
  r->level[line] = !r->level[line];
  r->seq[line]++;
  tr_edge(r->fd[line], r->seq[line], r->level[line], tr_mono_ns());
}

static void race_collect(struct race *r)
{
  for (int i = 0; i < r->npending; i++) {
    struct tu_sock_buf b = {0};
    json_t *rep = tu_sock_read(r->pending[i], &b, 120000);
    free(b.data);
    close(r->pending[i]);
    if (!rep)
      fail_msg("a command got no reply within 120 s");
    if (r->is_note[i])
      r->acked[r->note_no[i]] = strcmp(jstr(rep, "reply"), "noted") == 0;
    json_decref(rep);
  }
  r->npending = 0;
}

/* pirec-eyesim on localhost; its ports into the config. 0 when it is not built. */
static int race_sim(struct race *r, char *cfg, size_t cap)
{
  if (access(tu_program("pirec-eyesim"), X_OK) != 0 || access(tu_program("pirec-eyetracker"), X_OK) != 0)
    return 0;
  const char *argv[] = {
      tu_program("pirec-eyesim"), "--host", "127.0.0.1", "--gaze-hz", "200", "--fps", "10", NULL};
  assert_int_equal(tu_proc_start(&r->sim, argv, NULL), 0);
  char *line = tu_proc_readline(&r->sim, 15000);
  int http = 0, rtsp = 0;
  if (!line || sscanf(line, "pirec-eyesim http=%d rtsp=%d", &http, &rtsp) != 2)
    fail_msg("pirec-eyesim did not report its ports: %s", line ? line : "(nothing)");
  free(line);
  size_t n = strlen(cfg);
  snprintf(cfg + n, cap - n, "[eyetracker]\nenabled = true\naddress = 127.0.0.1:%d\nrtsp_port = %d\n", http,
           rtsp);
  return 1;
}

static void race_start(struct race *r)
{
  memset(r, 0, sizeof *r);
  r->tmp = tu_tmpdir("race");
  char fifo[3][4200], cfg[16000] = "";
  static const char *const edges[3] = {"both", "rising", "rising"};
  static const char *const actions[3] = {"toggle", "marker", "trial"};
  for (int i = 0; i < 3; i++) {
    tr_fifo(r->tmp, line_names[i], fifo[i], sizeof fifo[i]);
    tr_trigger(cfg, sizeof cfg, line_names[i], fifo[i], edges[i], actions[i], "0");
  }
  r->have_sim = race_sim(r, cfg, sizeof cfg);
  ctl_start(&r->c, have_camera(), cfg);
  json_decref(ctl_wait_modules(&r->c, 0, 30000));
  for (int i = 0; i < 3; i++) {
    r->fd[i] = open(fifo[i], O_WRONLY | O_NONBLOCK);
    assert_true(r->fd[i] >= 0);
  }
}

/* One random action; the counts are bounded by ACTIONS. */
static void race_act(struct race *r, unsigned *seed)
{
  char cmd[128];
  switch (rand_r(seed) % 8) {
  case 0:
  case 1:
    if (r->nnotes < MAX_NOTES) {
      snprintf(cmd, sizeof cmd, "{\"id\":1,\"cmd\":\"note\",\"text\":\"race %d\"}", r->nnotes);
      race_send(r, cmd, r->nnotes++);
    }
    break;
  case 2: race_send(r, "{\"id\":2,\"cmd\":\"trial\"}", -1); break;
  case 3: race_send(r, "{\"id\":3,\"cmd\":\"start\"}", -1); break;
  case 4: race_send(r, "{\"id\":4,\"cmd\":\"stop\"}", -1); break;
  case 5: race_edge(r, 0); break;
  case 6:
    for (int k = rand_r(seed) % 4; k >= 0; k--) {
      race_edge(r, 1); /* press */
      race_edge(r, 1); /* release (filtered) */
    }
    break;
  default:
    race_edge(r, 2);
    race_edge(r, 2);
    break;
  }
}

static void race_check_notes(struct race *r, char **dirs, int n)
{
  int *found = calloc((size_t)r->nnotes + 1, sizeof *found);
  for (int d = 0; d < n; d++) {
    char path[4400];
    snprintf(path, sizeof path, "%s/notes.csv", dirs[d]);
    if (access(path, F_OK) != 0)
      continue;
    struct tu_csv notes;
    load_csv_in(dirs[d], "notes.csv", &notes);
    int ct = tu_csv_col(&notes, "text");
    for (size_t row = 1; row < notes.rows; row++) {
      int no = -1;
      if (sscanf(notes.fields[row][ct], "race %d", &no) == 1 && no >= 0 && no < r->nnotes)
        found[no]++;
    }
    tu_csv_free(&notes);
  }
  for (int i = 0; i < r->nnotes; i++)
    if (found[i] != r->acked[i])
      fail_msg("note 'race %d': answered %s, in notes.csv %d times", i, r->acked[i] ? "noted" : "error",
               found[i]);
  free(found);
}

static void race_run(const unsigned first_seed)
{
  unsigned seed = first_seed;
  struct race *r = calloc(1, sizeof *r);
  race_start(r);
  for (int i = 0; i < ACTIONS; i++) {
    race_act(r, &seed);
    usleep((useconds_t)(rand_r(&seed) % 40000));
    if (i % 9 == 8) { /* let sessions record between bursts, so trials have rows to check */
      race_collect(r);
      json_decref(tr_settle(&r->c, NULL, 0, 120000));
      usleep(500000);
    }
  }
  race_collect(r);
  json_t *st = tr_settle(&r->c, NULL, 0, 120000);
  for (int i = 0; i < 3; i++) {
    json_decref(st);
    st = tr_settle(&r->c, line_names[i], (json_int_t)r->seq[i], 120000);
  }
  if (strcmp(jstr(st, "state"), "recording") == 0) {
    json_decref(ctl_call(&r->c, "{\"id\":9,\"cmd\":\"stop\"}", 60000));
    json_decref(st);
    st = tr_settle(&r->c, NULL, 0, 120000);
  }
  for (int i = 0; i < 3; i++)
    tr_check_edges(&r->c, st, line_names[i], r->seq[i]);
  json_decref(st);
  char *dirs[TR_MAX_SESSIONS];
  int n = tr_sessions(&r->c, dirs, TR_MAX_SESSIONS);
  race_check_notes(r, dirs, n);
  int cam_rows = 0, gaze_rows = 0;
  for (int d = 0; d < n; d++) {
    int rows = 0;
    if (have_camera()) {
      tr_check_rows(dirs[d], "cam0", "_frames.csv", "device_ts_ns", 100000000, &rows, NULL);
      cam_rows += rows;
    }
    if (r->have_sim) {
      /* gaze at 200 Hz: arrival times jitter on a loaded machine; the device's clock does not */
      tr_check_rows(dirs[d], "eyetracker", "_gaze.csv", "device_ns", 0, &rows, NULL);
      gaze_rows += rows;
      tr_check_rows(dirs[d], "eyetracker", "_scene_frames.csv", "device_ts_ns", 0, NULL, NULL);
    }
  }
  print_message("seed %u: %d sessions, %d notes, edges %llu/%llu/%llu, %d camera rows, %d gaze rows\n",
                first_seed, n, r->nnotes, (unsigned long long)r->seq[0], (unsigned long long)r->seq[1],
                (unsigned long long)r->seq[2], cam_rows, gaze_rows);
  tr_sessions_free(dirs, n);
  for (int i = 0; i < 3; i++)
    close(r->fd[i]);
  ctl_stop_process(&r->c, 0);
  ctl_cleanup(&r->c);
  if (r->have_sim) {
    kill(r->sim.pid, SIGTERM);
    tu_proc_wait(&r->sim, 10000);
  }
  tu_rm_rf(r->tmp);
  free(r->tmp);
  free(r);
}

static void test_race(void **state)
{
  int seeds = getenv("PIREC_TRANSITIONS_SEEDS") ? atoi(getenv("PIREC_TRANSITIONS_SEEDS")) : 6;
  for (int s = 0; s < seeds; s++)
    race_run(2500u + (unsigned)s);
}

int main(void)
{
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_race)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
