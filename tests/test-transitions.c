/* Transitions (issue 25): what happens to a note, a GPIO edge or a camera frame that arrives while
 * a session starts, changes trial or stops. The real `pirec record` with its real recorders, the
 * control socket and GPIO lines on FIFOs (the pipe backend); every check reads the session
 * directories back. The rule under test is docs/OPERATIONS.md, "Transitions". */
#include "test-transitions-util.h"

static json_t *reply_of(int fd)
{
  struct tu_sock_buf b = {0};
  json_t *r = tu_sock_read(fd, &b, 60000);
  free(b.data);
  close(fd);
  if (!r)
    fail_msg("no reply within 60 s");
  return r;
}

/* Item 1: `pirec trial` and `pirec note` at the same moment, 40 times (offsets from a fixed
 * seed), with a camera recording too when there is one (its trial's files take longest to
 * close). Every note answered "noted" is in notes.csv exactly once, in the trial whose span holds
 * its time; no note refused is there. */
static void test_notes_meet_trial_changes(void **state)
{
  struct ctl c;
  char dir[4200];
  ctl_start(&c, have_camera(), NULL);
  json_decref(ctl_wait_modules(&c, 0, 30000));
  json_t *started = ctl_call(&c, "{\"id\":1,\"cmd\":\"start\"}", 30000);
  expect_reply(started, "started");
  snprintf(dir, sizeof dir, "%s", jstr(started, "session_dir"));
  json_decref(started);
  unsigned seed = 25;
  enum { ROUNDS = 40 };
  int acked[ROUNDS] = {0};
  int64_t mono[ROUNDS] = {0};
  for (int i = 0; i < ROUNDS; i++) {
    char note[128];
    snprintf(note, sizeof note, "{\"id\":2,\"cmd\":\"note\",\"text\":\"n%d\"}", i);
    int first_note = rand_r(&seed) & 1;
    int ft = -1, fn = -1;
    if (first_note)
      fn = tr_send_async(&c, note);
    else
      ft = tr_send_async(&c, "{\"id\":3,\"cmd\":\"trial\"}");
    usleep((useconds_t)(rand_r(&seed) % 2000));
    if (first_note)
      ft = tr_send_async(&c, "{\"id\":3,\"cmd\":\"trial\"}");
    else
      fn = tr_send_async(&c, note);
    json_t *rn = reply_of(fn), *rt = reply_of(ft);
    expect_reply(rt, "trial");
    acked[i] = strcmp(jstr(rn, "reply"), "noted") == 0;
    mono[i] = jint(rn, "mono_ns");
    json_decref(rn);
    json_decref(rt);
  }
  json_t *r = ctl_call(&c, "{\"id\":4,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  json_decref(r);
  json_t *m = load_manifest(dir);
  struct tu_csv notes;
  load_csv_in(dir, "notes.csv", &notes);
  int ct = tu_csv_col(&notes, "text"), ctr = tu_csv_col(&notes, "trial");
  for (int i = 0; i < ROUNDS; i++) {
    char text[16];
    snprintf(text, sizeof text, "n%d", i);
    int found = 0;
    for (size_t row = 1; row < notes.rows; row++)
      if (strcmp(notes.fields[row][ct], text) == 0) {
        found++;
        assert_int_equal(strtol(notes.fields[row][ctr], NULL, 10), tr_trial_at(m, mono[i]));
      }
    if (found != acked[i])
      fail_msg("note %s: answered %s, %d rows in notes.csv", text, acked[i] ? "noted" : "error", found);
    /* while a session records, every note is taken: the trial change is no reason to refuse one */
    assert_true(acked[i]);
  }
  assert_int_equal(json_array_size(json_object_get(m, "trials")), ROUNDS + 1);
  tu_csv_free(&notes);
  json_decref(m);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

/* Item 3: a stop pressed while a session starts stops it once it has started; a start pressed
 * while one stops starts the next. Both edges are in the session they act on. */
static void test_gpio_stop_during_start(void **state)
{
  char *tmp = tu_tmpdir("tr");
  char go[4200], halt[4200], cfg[9000] = "";
  tr_fifo(tmp, "go", go, sizeof go);
  tr_fifo(tmp, "halt", halt, sizeof halt);
  tr_trigger(cfg, sizeof cfg, "go", go, "rising", "start", "0");
  tr_trigger(cfg, sizeof cfg, "halt", halt, "rising", "stop", "0");
  struct ctl c;
  ctl_start(&c, 0, cfg);
  json_decref(ctl_wait_modules(&c, 0, 15000));
  int gfd = open(go, O_WRONLY | O_NONBLOCK), hfd = open(halt, O_WRONLY | O_NONBLOCK);
  assert_true(gfd >= 0 && hfd >= 0);
  int64_t t0 = tr_mono_ns();
  tr_edge(gfd, 1, 1, t0);
  tr_edge(hfd, 1, 1, t0 + 1000);
  json_t *st = tr_settle(&c, "halt", 1, 30000);
  assert_string_equal(jstr(st, "state"), "idle");
  json_decref(st);
  /* and the other way round: a start pressed while the session stops starts the next one */
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "started");
  json_decref(r);
  t0 = tr_mono_ns();
  tr_edge(hfd, 2, 0, t0);
  tr_edge(hfd, 3, 1, t0 + 1000);
  tr_edge(gfd, 2, 0, t0 + 2000);
  tr_edge(gfd, 3, 1, t0 + 3000);
  st = tr_settle(&c, "go", 3, 30000);
  json_decref(st);
  st = tr_settle(&c, "halt", 3, 30000);
  assert_string_equal(jstr(st, "state"), "recording");
  /* the third session's events.csv is final once it has stopped: with the process */
  close(gfd);
  close(hfd);
  ctl_stop_process(&c, 0);
  char *dirs[TR_MAX_SESSIONS];
  int n = tr_sessions(&c, dirs, TR_MAX_SESSIONS);
  assert_int_equal(n, 3);
  struct tu_csv ev;
  load_csv_in(dirs[0], "events.csv", &ev);
  assert_int_equal(count_events(&ev, "gpio_edge", "gpio.go"), 1);
  assert_int_equal(count_events(&ev, "gpio_edge", "gpio.halt"), 1);
  assert_int_equal(count_events(&ev, "control", NULL), 2); /* start from go, stop from halt */
  tu_csv_free(&ev);
  load_csv_in(dirs[2], "events.csv", &ev);
  assert_int_equal(count_events(&ev, "gpio_edge", "gpio.go"), 1); /* the edge that started it */
  tu_csv_free(&ev);
  tr_check_edges(&c, st, "go", 3);
  tr_check_edges(&c, st, "halt", 3);
  json_decref(st);
  tr_sessions_free(dirs, n);
  ctl_cleanup(&c);
  tu_rm_rf(tmp);
  free(tmp);
}

/* Item 4: markers pressed 0.5 ms apart right after a stop, and a 1000-edge toggle storm: every
 * edge is in exactly one events.csv or counted as outside a session, and every session started by
 * an edge has that edge's row (before its session_start in time). */
static void test_edges_while_stopping(void **state)
{
  char *tmp = tu_tmpdir("tr");
  char pedal[4200], mark[4200], cfg[9000] = "";
  tr_fifo(tmp, "pedal", pedal, sizeof pedal);
  tr_fifo(tmp, "mark", mark, sizeof mark);
  tr_trigger(cfg, sizeof cfg, "pedal", pedal, "both", "toggle", "0");
  tr_trigger(cfg, sizeof cfg, "mark", mark, "rising", "marker", "0");
  struct ctl c;
  ctl_start(&c, 0, cfg);
  json_decref(ctl_wait_modules(&c, 0, 15000));
  int pfd = open(pedal, O_WRONLY | O_NONBLOCK), mfd = open(mark, O_WRONLY | O_NONBLOCK);
  assert_true(pfd >= 0 && mfd >= 0);
  uint64_t pseq = 0, mseq = 0;
  for (int round = 0; round < 3; round++) {
    int64_t t0 = tr_mono_ns();
    pseq++;
    tr_edge(pfd, pseq, (int)(pseq & 1), t0);
    json_decref(tr_settle(&c, "pedal", (json_int_t)pseq, 30000));
    t0 = tr_mono_ns();
    pseq++;
    tr_edge(pfd, pseq, (int)(pseq & 1), t0); /* stop */
    for (int i = 0; i < 20; i++) {
      tr_edge(mfd, ++mseq, 1, t0 + 500000 * (i + 1));
      tr_edge(mfd, ++mseq, 0, t0 + 500000 * (i + 1) + 100000); /* falling: filtered */
    }
    json_decref(tr_settle(&c, "mark", (json_int_t)mseq, 30000));
  }
  /* the storm: 1000 edges, 1 us apart in kernel time, written as fast as the FIFO takes them */
  int64_t t0 = tr_mono_ns();
  for (int i = 0; i < 1000; i++) {
    while (1) {
      struct pirec_gpio_pipe_record rec = {
          .ts_ns = t0 + 1000LL * i, .seqno = pseq + 1, .level = (int)((pseq + 1) & 1), .offset = 1};
      if (write(pfd, &rec, sizeof rec) == (ssize_t)sizeof rec)
        break;
      usleep(1000); /* FIFO full: the controller reads on */
    }
    pseq++;
  }
  json_t *st = tr_settle(&c, "pedal", (json_int_t)pseq, 60000);
  if (strcmp(jstr(st, "state"), "recording") == 0) {
    json_decref(ctl_call(&c, "{\"id\":5,\"cmd\":\"stop\"}", 30000));
    json_decref(st);
    st = tr_settle(&c, NULL, 0, 30000);
  }
  tr_check_edges(&c, st, "pedal", pseq);
  tr_check_edges(&c, st, "mark", mseq);
  char *dirs[TR_MAX_SESSIONS];
  int n = tr_sessions(&c, dirs, TR_MAX_SESSIONS);
  assert_true(n >= 4);
  for (int i = 0; i < n; i++) {
    struct tu_csv ev;
    load_csv_in(dirs[i], "events.csv", &ev);
    int ce = tu_csv_col(&ev, "event"), cm = tu_csv_col(&ev, "mono_ns"), cmod = tu_csv_col(&ev, "module");
    int64_t start = -1, first_edge = -1;
    for (size_t r = 1; r < ev.rows; r++) {
      int64_t t = strtoll(ev.fields[r][cm], NULL, 10);
      if (strcmp(ev.fields[r][ce], "session_start") == 0)
        start = t;
      if (strcmp(ev.fields[r][ce], "gpio_edge") == 0 && strcmp(ev.fields[r][cmod], "gpio.pedal") == 0 &&
          (first_edge < 0 || t < first_edge))
        first_edge = t;
    }
    if (first_edge < 0 || first_edge > start)
      fail_msg("%s: no row for the edge that started the session", dirs[i]);
    tu_csv_free(&ev);
  }
  json_decref(st);
  tr_sessions_free(dirs, n);
  close(pfd);
  close(mfd);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
  tu_rm_rf(tmp);
  free(tmp);
}

/* Item 5: one physical pulse, one row: the sync line's rising levels (read back from its FIFO)
 * are as many as its gpio_pulse rows; and status shows each line's debounced and filtered edges. */
static void test_pulses_and_counts(void **state)
{
  char *tmp = tu_tmpdir("tr");
  char sync[4200], bouncy[4200], cfg[9000] = "";
  tr_fifo(tmp, "sync", sync, sizeof sync);
  tr_fifo(tmp, "bouncy", bouncy, sizeof bouncy);
  snprintf(cfg, sizeof cfg,
           "[gpio.sync]\nchip = pipe:%s\nline = GPIO22\ndirection = output\nrole = sync_pulse\n"
           "pulse_length = 5ms\npulse_interval = 60s\n",
           sync);
  tr_trigger(cfg, sizeof cfg, "bouncy", bouncy, "rising", "marker", "5ms");
  struct ctl c;
  ctl_start(&c, 0, cfg);
  json_decref(ctl_wait_modules(&c, 0, 15000));
  int sfd = open(sync, O_RDONLY | O_NONBLOCK), bfd = open(bouncy, O_WRONLY | O_NONBLOCK);
  assert_true(sfd >= 0 && bfd >= 0);
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "started");
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", jstr(r, "session_dir"));
  json_decref(r);
  for (int i = 0; i < 3; i++) {
    usleep(30000); /* apart from the last pulse (5 ms), so each is its own */
    r = ctl_call(&c, "{\"id\":2,\"cmd\":\"trial\"}", 30000);
    expect_reply(r, "trial");
    json_decref(r);
  }
  /* a press that bounces: 1 ms glitches, then a level held for 20 ms */
  int64_t t0 = tr_mono_ns();
  tr_edge(bfd, 1, 1, t0);
  tr_edge(bfd, 2, 0, t0 + 1000000);
  tr_edge(bfd, 3, 1, t0 + 2000000);
  tr_edge(bfd, 4, 0, t0 + 22000000);
  tr_edge(bfd, 5, 1, t0 + 60000000);
  json_t *st = tr_settle(&c, "bouncy", 5, 30000);
  json_decref(st);
  usleep(100000); /* the debounce timer of the last level */
  r = ctl_call(&c, "{\"id\":3,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  json_decref(r);
  st = tr_status(&c);
  assert_true(tr_line_count(st, "bouncy", "debounced") >= 2);
  assert_true(tr_line_count(st, "bouncy", "filtered") >= 1);
  assert_int_equal(tr_line_count(st, "sync", "pulses_merged"), 1); /* recording start + trial 1 */
  json_decref(st);
  int rising = 0;
  struct pirec_gpio_pipe_record rec;
  while (read(sfd, &rec, sizeof rec) == (ssize_t)sizeof rec)
    rising += rec.level == 1;
  struct tu_csv ev;
  load_csv_in(dir, "events.csv", &ev);
  assert_int_equal(rising, 4);
  assert_int_equal(count_events(&ev, "gpio_pulse", "gpio.sync"), rising);
  tu_csv_free(&ev);
  close(sfd);
  close(bfd);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
  tu_rm_rf(tmp);
  free(tmp);
}

/* Once the recorders run: a session of `trials` trials, pause_us each; its directory into dir. */
static void record_trials(struct ctl *c, int trials, useconds_t pause_us, char *dir, size_t cap)
{
  json_decref(ctl_wait_modules(c, 0, 30000));
  json_t *r = ctl_call(c, "{\"id\":1,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "started");
  snprintf(dir, cap, "%s", jstr(r, "session_dir"));
  json_decref(r);
  for (int i = 1; i < trials; i++) {
    usleep(pause_us);
    r = ctl_call(c, "{\"id\":2,\"cmd\":\"trial\"}", 30000);
    expect_reply(r, "trial");
    json_decref(r);
  }
  usleep(pause_us);
  r = ctl_call(c, "{\"id\":3,\"cmd\":\"stop\"}", 60000);
  expect_reply(r, "stopped");
  json_decref(r);
}

/* Item 2: camera frames run on across trial changes: no frame falls between two trials
 * uncounted, and where none was lost the gap is one frame interval. */
static void test_camera_seamless(void **state)
{
  if (!have_camera()) {
    print_message("SKIP: pirec-camera not built\n");
    skip();
  }
  struct ctl c;
  char dir[4200];
  ctl_start(&c, 1, NULL);
  record_trials(&c, 5, 700000, dir, sizeof dir);
  int rows = 0;
  /* the fixture's camera runs at 10 fps */
  tr_check_rows(dir, "cam0", "_frames.csv", "device_ts_ns", 100000000, &rows, NULL);
  assert_true(rows >= 20);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

/* Issue 25: a trial change while a recorder is restarting is seamless for the others. cam1 is
 * killed and the trial changed while it is down: cam0's rows run on across the change (before,
 * the change waited for cam1 and cam0's frames in between were dropped as between trials,
 * uncounted), and cam1 joins the new trial once it is back. */
static void test_change_while_restarting(void **state)
{
  if (!have_camera()) {
    print_message("SKIP: pirec-camera not built\n");
    skip();
  }
  struct ctl c;
  ctl_start(&c, 1, "[camera.cam1]\nsource = lavfi\nsize = 160x120\nfps = 10\npreset = ultrafast\n");
  json_decref(ctl_wait_modules(&c, 0, 30000));
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "started");
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", jstr(r, "session_dir"));
  json_decref(r);
  usleep(700000);
  for (int round = 0; round < 2; round++) {
    json_t *st = tr_status(&c);
    pid_t pid = (pid_t)jint(json_object_get(json_object_get(st, "modules"), "cam1"), "pid");
    json_decref(st);
    assert_true(pid > 0);
    kill(pid, SIGKILL);
    /* wait until the controller has seen it go */
    for (int64_t until = tu_now_ms() + 10000;;) {
      st = tr_status(&c);
      const char *mstate = jstr(json_object_get(json_object_get(st, "modules"), "cam1"), "state");
      int down = strcmp(mstate, "running") != 0;
      json_decref(st);
      if (down)
        break;
      if (tu_now_ms() > until)
        fail_msg("cam1 still running 10 s after SIGKILL");
      usleep(5000);
    }
    r = ctl_call(&c, "{\"id\":2,\"cmd\":\"trial\"}", 30000);
    expect_reply(r, "trial");
    json_decref(r);
    json_decref(ctl_wait_modules(&c, 0, 30000)); /* cam1 back, in the new trial */
    usleep(700000);
  }
  r = ctl_call(&c, "{\"id\":3,\"cmd\":\"stop\"}", 60000);
  expect_reply(r, "stopped");
  json_decref(r);
  int rows = 0;
  tr_check_rows(dir, "cam0", "_frames.csv", "device_ts_ns", 100000000, &rows, NULL);
  assert_true(rows >= 15);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

/* The first packet of an MKV is a keyframe (ffprobe's packet flags start with K). */
static int starts_with_keyframe(const char path[4300])
{
  char cmd[4600], flags[16] = "";
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error -select_streams v:0 -read_intervals '%%+#1' -show_entries packet=flags "
           "-of csv=p=0 '%s'",
           path);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  if (!fgets(flags, sizeof flags, p))
    flags[0] = 0;
  pclose(p);
  return flags[0] == 'K';
}

/* Clock rows (one per RTCP Sender Report and stream, every second from pirec-eyesim) run on
 * across trial changes: per stream, no gap of two report intervals between the trial's own rows. */
static void check_clock_rows(const char *dir, int trials)
{
  const char *streams[] = {"gaze", "world", "eye_events"};
  for (int k = 0; k < 3; k++) {
    int64_t prev = 0;
    int rows = 0;
    for (int t = 1; t <= trials; t++) {
      char name[64];
      snprintf(name, sizeof name, "eyetracker/t%03d_eye_clock.csv", t);
      struct tu_csv f;
      load_csv_in(dir, name, &f);
      int cm = tu_csv_col(&f, "mono_ns"), cs = tu_csv_col(&f, "stream"), cb = tu_csv_col(&f, "before_start");
      assert_true(cm >= 0 && cs >= 0 && cb >= 0);
      for (size_t r = 1; r < f.rows; r++) {
        if (strcmp(f.fields[r][cs], streams[k]) != 0 || strcmp(f.fields[r][cb], "1") == 0)
          continue;
        int64_t mono = strtoll(f.fields[r][cm], NULL, 10);
        if (prev && mono - prev > 1900000000)
          fail_msg("%s: %s clock row %zu %lld ms after the last: a Sender Report lost at a trial change",
                   name, streams[k], r, (long long)((mono - prev) / 1000000));
        prev = mono;
        rows++;
      }
      tu_csv_free(&f);
    }
    assert_true(rows >= 2);
  }
}

/* Eye events run on across trial changes: keep-alives take sequence numbers but are no rows, so
 * between two consecutive rows of the session (the trials' own rows, in order) exactly
 * dropped_before of the events pirec-eyesim logged (log: seq,rtp_ts,device_ns,event,fate) were
 * not keep-alives that arrived. Returns the rows. */
static int check_event_rows(const char *dir, int trials, const char *log)
{
  struct tu_csv sim;
  tu_csv_load(log, &sim);
  int ss = tu_csv_col(&sim, "seq"), se = tu_csv_col(&sim, "event"), sf = tu_csv_col(&sim, "fate");
  assert_true(ss >= 0 && se >= 0 && sf >= 0);
  size_t j = 1;
  int rows = 0;
  for (int t = 1; t <= trials; t++) {
    char name[64];
    snprintf(name, sizeof name, "eyetracker/t%03d_eye_events.csv", t);
    struct tu_csv f;
    load_csv_in(dir, name, &f);
    int cs = tu_csv_col(&f, "seq"), cd = tu_csv_col(&f, "dropped_before"),
        cb = tu_csv_col(&f, "before_start");
    for (size_t r = 1; r < f.rows; r++) {
      if (strcmp(f.fields[r][cb], "1") == 0)
        continue;
      long seq = strtol(f.fields[r][cs], NULL, 10) % 65536;
      long missing = 0;
      while (j < sim.rows && strtol(sim.fields[j][ss], NULL, 10) % 65536 != seq) {
        if (rows > 0)
          missing += strcmp(sim.fields[j][se], "keepalive") != 0 || strcmp(sim.fields[j][sf], "sent") != 0;
        j++;
      }
      if (j == sim.rows)
        fail_msg("%s row %zu: seq %ld never sent", name, r, seq);
      if (rows > 0 && missing != strtol(f.fields[r][cd], NULL, 10))
        fail_msg("%s row %zu: dropped_before %s, but %ld events were lost before it", name, r,
                 f.fields[r][cd], missing);
      rows++;
      j++;
    }
    tu_csv_free(&f);
  }
  tu_csv_free(&sim);
  return rows;
}

/* Item 2 for the eye tracker: every stream runs on across trial changes. Gaze rows (200 Hz from
 * pirec-eyesim) by the device's clock one sample interval apart; scene frames and eye events with
 * every sample accounted for; clock rows with no report lost; every trial's scene video starts with
 * a keyframe (the GOP before the trial's start, rows marked before_start) so no frame is dropped
 * at a trial's start (issue 24 item 3). */
static void test_eyetracker_seamless(void **state)
{
  if (access(tu_program("pirec-eyesim"), X_OK) != 0 || access(tu_program("pirec-eyetracker"), X_OK) != 0) {
    print_message("SKIP: pirec-eyetracker or pirec-eyesim not built\n");
    skip();
  }
  struct tu_proc sim;
  char log[] = "/tmp/pirec-tr-events-XXXXXX";
  int lfd = mkstemp(log);
  assert_true(lfd >= 0);
  close(lfd);
  const char *argv[] = {tu_program("pirec-eyesim"),
                        "--host",
                        "127.0.0.1",
                        "--gaze-hz",
                        "200",
                        "--fps",
                        "10",
                        "--events-log",
                        log,
                        NULL};
  assert_int_equal(tu_proc_start(&sim, argv, NULL), 0);
  char *line = tu_proc_readline(&sim, 15000);
  int http = 0, rtsp = 0;
  if (!line || sscanf(line, "pirec-eyesim http=%d rtsp=%d", &http, &rtsp) != 2)
    fail_msg("pirec-eyesim did not report its ports: %s", line ? line : "(nothing)");
  free(line);
  char cfg[300];
  snprintf(cfg, sizeof cfg, "[eyetracker]\nenabled = true\naddress = 127.0.0.1:%d\nrtsp_port = %d\n", http,
           rtsp);
  struct ctl c;
  char dir[4200];
  ctl_start(&c, 0, cfg);
  const int trials = 5;
  record_trials(&c, trials, 1500000, dir, sizeof dir);
  int rows = 0;
  int64_t dropped = 0;
  tr_check_rows(dir, "eyetracker", "_gaze.csv", "device_ns", 5000000, &rows, NULL);
  assert_true(rows >= 200);
  /* 10 fps by the device's clock; loopback loses nothing, so no frame is dropped anywhere */
  tr_check_rows(dir, "eyetracker", "_scene_frames.csv", "device_ts_ns", 100000000, &rows, &dropped);
  assert_true(rows >= 40);
  assert_int_equal(dropped, 0);
  check_clock_rows(dir, trials);
  for (int t = 1; t <= trials; t++) {
    char mkv[4300];
    snprintf(mkv, sizeof mkv, "%s/eyetracker/t%03d_scene.mkv", dir, t);
    if (!starts_with_keyframe(mkv))
      fail_msg("'%s' does not start with a keyframe", mkv);
  }
  ctl_stop_process(&c, 0);
  kill(sim.pid, SIGTERM);
  tu_proc_wait(&sim, 10000); /* its log is complete once it has exited */
  assert_true(check_event_rows(dir, trials, log) >= 5);
  unlink(log);
  ctl_cleanup(&c);
}

/* A pirec-eyesim without video that logs the API requests it gets into log. */
static void neon_sim(struct tu_proc *sim, const char *log, int *http, int *rtsp)
{
  const char *argv[] = {tu_program("pirec-eyesim"), "--no-world", "--no-events", "--api-log", log, NULL};
  assert_int_equal(tu_proc_start(sim, argv, NULL), 0);
  char *line = tu_proc_readline(sim, 15000);
  if (!line || sscanf(line, "pirec-eyesim http=%d rtsp=%d", http, rtsp) != 2)
    fail_msg("pirec-eyesim did not report its ports: %s", line ? line : "(nothing)");
  free(line);
}

/* Issue 16: the session drives the eye tracker's device. A note and a marker edge sent during a
 * recording session reach the simulated Neon as events (through the recorder protocol's mark),
 * after its recording started and before it was saved, and the recording's id is in
 * session.json and events.csv. */
static void test_eyetracker_drives_device(void **state)
{
  if (access(tu_program("pirec-eyesim"), X_OK) != 0 || access(tu_program("pirec-eyetracker"), X_OK) != 0) {
    print_message("SKIP: pirec-eyetracker or pirec-eyesim not built\n");
    skip();
  }
  char *tmp = tu_tmpdir("tr");
  char fifo[4200], log[4300], cfg[9000];
  tr_fifo(tmp, "mark", fifo, sizeof fifo);
  snprintf(log, sizeof log, "%s/api.csv", tmp);
  struct tu_proc sim;
  int http, rtsp;
  neon_sim(&sim, log, &http, &rtsp);
  snprintf(cfg, sizeof cfg,
           "[eyetracker]\nenabled = true\naddress = 127.0.0.1:%d\nrtsp_port = %d\ndevice_recording = true\n",
           http, rtsp);
  tr_trigger(cfg, sizeof cfg, "mark", fifo, "rising", "marker", "0");
  struct ctl c;
  ctl_start(&c, 0, cfg);
  json_decref(ctl_wait_modules(&c, 0, 30000));
  int fd = open(fifo, O_WRONLY | O_NONBLOCK);
  assert_true(fd >= 0);
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "started");
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", jstr(r, "session_dir"));
  json_decref(r);
  r = ctl_call(&c, "{\"id\":2,\"cmd\":\"note\",\"text\":\"stimulus on\"}", 5000);
  expect_reply(r, "noted");
  json_decref(r);
  tr_edge(fd, 1, 1, tr_mono_ns());
  json_decref(tr_settle(&c, "mark", 1, 30000));
  r = ctl_call(&c, "{\"id\":3,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  json_decref(r);
  close(fd);
  ctl_stop_process(&c, 0);
  kill(sim.pid, SIGTERM);
  tu_proc_wait(&sim, 10000); /* its log is complete once it has exited */
  /* the device's view, in order */
  struct tu_csv api;
  assert_int_equal(tu_csv_load(log, &api), 0);
  int cp = tu_csv_col(&api, "path"), cn = tu_csv_col(&api, "name"), cc = tu_csv_col(&api, "code");
  int at_start = -1, at_note = -1, at_gpio = -1, at_save = -1;
  for (size_t i = 1; i < api.rows; i++) {
    assert_string_equal(api.fields[i][cc], "200");
    const char *path = api.fields[i][cp], *name = api.fields[i][cn];
    if (strcmp(path, "/api/recording:start") == 0)
      at_start = (int)i;
    else if (strcmp(path, "/api/recording:stop_and_save") == 0)
      at_save = (int)i;
    else if (strcmp(name, "pirec.note stimulus on") == 0)
      at_note = (int)i;
    else if (strncmp(name, "pirec.gpio gpio.mark rising seq 1 ", 34) == 0)
      at_gpio = (int)i;
  }
  if (!(at_start > 0 && at_note > at_start && at_gpio > at_start && at_save > at_note && at_save > at_gpio))
    fail_msg("%s: recording:start at row %d, the note at %d, the edge at %d, stop_and_save at %d", log,
             at_start, at_note, at_gpio, at_save);
  /* pirec's view: the recording's id in session.json and events.csv */
  json_t *m = load_manifest(dir);
  const char *id = json_string_value(json_object_get(
      json_object_get(
          json_object_get(json_object_get(json_object_get(m, "modules"), "eyetracker"), "counters"),
          "device"),
      "recording_id"));
  assert_non_null(id);
  assert_string_equal(id, api.fields[at_start][cn]);
  struct tu_csv ev;
  load_csv_in(dir, "events.csv", &ev);
  assert_int_equal(count_events(&ev, "device_recording", "eyetracker"), 2); /* started, saved */
  tu_csv_free(&ev);
  json_decref(m);
  tu_csv_free(&api);
  ctl_cleanup(&c);
  tu_rm_rf(tmp);
  free(tmp);
}

/* A session abandoned as it starts ([session] required names a line that is not there): the
 * eye tracker cancels the device's recording instead of saving it. */
static void test_eyetracker_abort_cancels(void **state)
{
  if (access(tu_program("pirec-eyesim"), X_OK) != 0 || access(tu_program("pirec-eyetracker"), X_OK) != 0) {
    print_message("SKIP: pirec-eyetracker or pirec-eyesim not built\n");
    skip();
  }
  char *tmp = tu_tmpdir("tr");
  char log[4300], cfg[9000];
  snprintf(log, sizeof log, "%s/api.csv", tmp);
  struct tu_proc sim;
  int http, rtsp;
  neon_sim(&sim, log, &http, &rtsp);
  snprintf(cfg, sizeof cfg,
           "[eyetracker]\nenabled = true\naddress = 127.0.0.1:%d\nrtsp_port = %d\ndevice_recording = true\n",
           http, rtsp);
  struct ctl c;
  ctl_start(&c, 0, cfg);
  /* the fixture writes [session]: the required line goes in by an edit and a reload */
  char cmd[9000];
  snprintf(cmd, sizeof cmd, "'%s' config set '%s' session.required gpio.absent", tu_program("pirec"), c.cfg);
  assert_int_equal(system(cmd), 0);
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"reload\"}", 30000);
  expect_reply(r, "reloaded");
  json_decref(r);
  json_decref(ctl_wait_modules(&c, 0, 30000));
  r = ctl_call(&c, "{\"id\":2,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "error");
  json_decref(r);
  ctl_stop_process(&c, 1); /* the start_failed error */
  kill(sim.pid, SIGTERM);
  tu_proc_wait(&sim, 10000);
  struct tu_csv api;
  assert_int_equal(tu_csv_load(log, &api), 0);
  int cp = tu_csv_col(&api, "path"), cn = tu_csv_col(&api, "name");
  char seen[600] = "";
  for (size_t i = 1; i < api.rows; i++) {
    const char *what = strcmp(api.fields[i][cp], "/api/event") == 0 ? api.fields[i][cn] : api.fields[i][cp];
    snprintf(seen + strlen(seen), sizeof seen - strlen(seen), "%s;", what);
  }
  assert_string_equal(seen, "/api/recording:start;pirec.session_start;pirec.trial 1;pirec.session_abort;"
                            "/api/recording:cancel;");
  tu_csv_free(&api);
  ctl_cleanup(&c);
  tu_rm_rf(tmp);
  free(tmp);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_notes_meet_trial_changes), cmocka_unit_test(test_gpio_stop_during_start),
      cmocka_unit_test(test_edges_while_stopping),     cmocka_unit_test(test_pulses_and_counts),
      cmocka_unit_test(test_camera_seamless),          cmocka_unit_test(test_eyetracker_seamless),
      cmocka_unit_test(test_change_while_restarting),  cmocka_unit_test(test_eyetracker_drives_device),
      cmocka_unit_test(test_eyetracker_abort_cancels),
  };
  if (getenv("PIREC_TEST_FILTER"))
    cmocka_set_test_filter(getenv("PIREC_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
