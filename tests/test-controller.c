/* pirec record with the real recorder binaries: trials, a recorder killed mid-trial, SIGTERM
 * mid-trial, and the pirec CLI clients. */
#include <dirent.h>
#include <fcntl.h>
#include <time.h>

#include "pirec/gpio.h"
#include "test-controller-fixture.h"

static json_t *note(struct ctl *c, const char *text)
{
  json_t *cmd = json_pack("{s:i,s:s,s:s}", "id", 7, "cmd", "note", "text", text);
  char *t = json_dumps(cmd, JSON_COMPACT);
  json_decref(cmd);
  json_t *r = ctl_call(c, t, 5000);
  free(t);
  expect_reply(r, "noted");
  return r;
}

/* "noted" means the recorder has the note; it reaches the file within milliseconds. Only what
 * is in the file when a SIGKILL lands is promised to survive it, so tests that kill the notes
 * recorder first wait for the note's line in SESSION_DIR/notes.csv. */
static void wait_for_note_on_disk(const char *dir, const char *text)
{
  char path[4400], line[512];
  snprintf(path, sizeof path, "%s/notes.csv", dir);
  snprintf(line, sizeof line, "%s\n", text);
  int64_t until = tu_now_ms() + 5000;
  for (;;) {
    char *content = tu_read_file(path, NULL);
    int there = content && strstr(content, line);
    free(content);
    if (there)
      return;
    if (tu_now_ms() > until)
      fail_msg("the note '%s' did not reach '%s' within 5 s", text, path);
    usleep(10000);
  }
}

/* Runs the real `pirec` client and returns its exit status; stdout is captured into out. */
static int run_cli(struct ctl *c, const char *const *args, char *out, size_t cap)
{
  const char *argv[16];
  int n = 0;
  argv[n++] = tu_program("pirec");
  for (; *args; args++)
    argv[n++] = *args;
  argv[n++] = "--socket";
  argv[n++] = c->sock;
  argv[n] = NULL;
  /* The note text must stay last for `pirec note`: options go before it. */
  if (strcmp(argv[1], "note") == 0) {
    const char *text = argv[2];
    for (int i = 2; i < n - 1; i++)
      argv[i] = argv[i + 1];
    argv[n - 1] = text;
  }
  struct tu_proc p;
  assert_int_equal(tu_proc_start(&p, argv, NULL), 0);
  size_t used = 0;
  char *line;
  while ((line = tu_proc_readline(&p, 10000))) {
    used += (size_t)snprintf(out + used, cap - used, "%s\n", line);
    free(line);
    if (used >= cap)
      used = cap - 1;
  }
  int status = tu_proc_wait(&p, 10000);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_three_trials(void **state)
{
  struct ctl c;
  fixture_remux_after = 1; /* with a camera, the session is remuxed once it stops */
  ctl_start(&c, have_camera(), NULL);
  fixture_remux_after = 0;
  json_decref(ctl_wait_modules(&c, 0, 15000));
  json_t *r = ctl_call(&c, "{\"id\":\"s\",\"cmd\":\"start\",\"label\":\"run\"}", 30000);
  expect_reply(r, "started");
  assert_string_equal(jstr(r, "id"), "s");
  assert_int_equal(jint(r, "trial"), 1);
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", jstr(r, "session_dir"));
  assert_non_null(strstr(dir, "_run"));
  json_decref(r);
  /* a second start is refused while recording */
  r = ctl_call(&c, "{\"id\":2,\"cmd\":\"start\"}", 5000);
  expect_reply(r, "error");
  json_decref(r);

  int per_trial[3] = {3, 5, 2};
  char out[8192];
  for (int t = 1; t <= 3; t++) {
    if (t > 1) {
      char cmd[128];
      snprintf(cmd, sizeof cmd, "{\"id\":%d,\"cmd\":\"trial\",\"label\":\"t%d\"}", 10 + t, t);
      r = ctl_call(&c, cmd, 30000);
      expect_reply(r, "trial");
      assert_int_equal(jint(r, "trial"), t);
      json_decref(r);
    }
    for (int i = 0; i < per_trial[t - 1]; i++) {
      char text[64];
      snprintf(text, sizeof text, "trial %d, note %d", t, i);
      if (t == 2 && i == 0) {
        /* through the real CLI */
        const char *args[] = {"note", text, NULL};
        assert_int_equal(run_cli(&c, args, out, sizeof out), 0);
        assert_non_null(strstr(out, "saved"));
      } else {
        json_decref(note(&c, text));
      }
    }
    if (c.camera)
      usleep(1200000); /* let the camera write a second of frames per trial */
  }
  const char *sargs[] = {"status", NULL};
  assert_int_equal(run_cli(&c, sargs, out, sizeof out), 0);
  assert_non_null(strstr(out, "recording: session"));
  assert_non_null(strstr(out, "trial 3"));
  const char *jargs[] = {"status", "--json", NULL};
  assert_int_equal(run_cli(&c, jargs, out, sizeof out), 0);
  json_t *js = json_loads(out, 0, NULL);
  assert_non_null(js);
  assert_string_equal(jstr(js, "state"), "recording");
  json_decref(js);

  r = ctl_call(&c, "{\"id\":99,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  assert_string_equal(jstr(r, "session_dir"), dir);
  assert_int_equal(jint(r, "errors"), 0);
  json_decref(r);
  r = ctl_call(&c, "{\"id\":100,\"cmd\":\"stop\"}", 5000);
  expect_reply(r, "error");
  json_decref(r);

  /* The files agree with each other and with session.json. */
  json_t *m = load_manifest(dir);
  assert_string_equal(jstr(m, "state"), "stopped");
  assert_true(json_is_true(json_object_get(m, "final")));
  assert_int_equal(json_array_size(json_object_get(m, "errors")), 0);
  json_t *trials = json_object_get(m, "trials");
  assert_int_equal(json_array_size(trials), 3);
  assert_string_equal(jstr(json_array_get(trials, 0), "label"), "run");
  assert_string_equal(jstr(json_array_get(trials, 2), "label"), "t3");
  json_t *notes_mod = json_object_get(json_object_get(m, "modules"), "notes");
  assert_int_equal(jint(json_object_get(notes_mod, "counters"), "notes"), 10);
  assert_int_equal(jint(json_object_get(notes_mod, "counters"), "drops"), 0);
  assert_true(json_is_string(json_object_get(json_object_get(m, "config"), "source")));

  struct tu_csv ev, nt, ck;
  load_csv_in(dir, "events.csv", &ev);
  load_csv_in(dir, "notes.csv", &nt);
  load_csv_in(dir, "clocks.csv", &ck);
  assert_int_equal(count_events(&ev, "trial_start", NULL), 3);
  assert_int_equal(count_events(&ev, "trial_stop", NULL), 3);
  assert_int_equal(count_events(&ev, "session_start", NULL), 1);
  assert_int_equal(count_events(&ev, "session_stop", NULL), 1);
  /* no recorder crashed (a sanitizer abort in a child would show up here) */
  assert_int_equal(count_events(&ev, "module_crash", NULL), 0);
  const char *mname;
  json_t *mv;
  json_object_foreach(json_object_get(m, "modules"), mname, mv)
  {
    if (json_array_size(json_object_get(mv, "crashes")) != 0)
      fail_msg("recorder '%s' crashed", mname);
  }
  assert_int_equal(ev.rows - 1, jint(json_object_get(m, "events"), "rows"));
  assert_int_equal(ck.rows - 1, jint(json_object_get(m, "clocks"), "rows"));
  /* trial_start rows carry the same clocks as session.json's trials */
  int ce = tu_csv_col(&ev, "event"), cmono = tu_csv_col(&ev, "mono_ns"), k = 0;
  for (size_t i = 1; i < ev.rows; i++) {
    if (strcmp(ev.fields[i][ce], "trial_start") != 0)
      continue;
    json_t *t = json_array_get(trials, (size_t)k++);
    assert_int_equal(strtoll(ev.fields[i][cmono], NULL, 10), jint(t, "start_mono_ns"));
  }
  /* every note is in the trial it was sent in, and inside that trial's time span */
  assert_int_equal(nt.rows - 1, 10);
  for (size_t i = 1; i < nt.rows; i++) {
    int trial = atoi(nt.fields[i][0]);
    char want[64];
    int idx = (int)i - 1 - (trial > 1 ? per_trial[0] : 0) - (trial > 2 ? per_trial[1] : 0);
    snprintf(want, sizeof want, "trial %d, note %d", trial, idx);
    assert_string_equal(nt.fields[i][3], want);
    json_t *t = json_array_get(trials, (size_t)trial - 1);
    int64_t mono = strtoll(nt.fields[i][1], NULL, 10);
    assert_true(mono >= jint(t, "start_mono_ns") && mono <= jint(t, "stop_mono_ns"));
  }
  if (c.camera) {
    json_t *cam = json_object_get(json_object_get(m, "modules"), "cam0");
    assert_non_null(cam);
    assert_true(jint(json_object_get(cam, "counters"), "frames_written") > 0);
    for (int t = 1; t <= 3; t++) {
      char p[4400];
      snprintf(p, sizeof p, "%s/cam0/t%03d_frames.csv", dir, t);
      struct tu_csv fr;
      if (tu_csv_load(p, &fr) != 0)
        fail_msg("'%s' missing or incomplete", p);
      assert_true(fr.rows > 1);
      tu_csv_free(&fr);
    }
    /* remux_after: pirec-remux runs on the finished session in the background */
    if (access(tu_program("pirec-remux"), X_OK) == 0) {
      char mp4[4400];
      snprintf(mp4, sizeof mp4, "%s/cam0/t003.mp4", dir);
      int64_t until = tu_now_ms() + 30000;
      while (access(mp4, R_OK) != 0 && tu_now_ms() < until)
        usleep(50000);
      if (access(mp4, R_OK) != 0)
        fail_msg("'%s' not written by the remux after the session", mp4);
    }
  }
  tu_csv_free(&ev);
  tu_csv_free(&nt);
  tu_csv_free(&ck);
  json_decref(m);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

static void test_recorder_killed_mid_trial(void **state)
{
  struct ctl c;
  char dir[4200];
  ctl_start_session(&c, "{\"id\":1,\"cmd\":\"start\"}", dir, sizeof dir);
  for (int i = 0; i < 20; i++) {
    char text[32];
    snprintf(text, sizeof text, "before %d", i);
    json_decref(note(&c, text));
  }
  wait_for_note_on_disk(dir, "before 19");
  json_t *st = ctl_wait_modules(&c, 0, 5000);
  int pid = (int)jint(json_object_get(json_object_get(st, "modules"), "notes"), "pid");
  json_decref(st);
  assert_true(pid > 0);
  assert_int_equal(kill(pid, SIGKILL), 0);
  /* notes sent while it is down are kept for the restarted recorder */
  for (int i = 0; i < 20; i++) {
    char text[32];
    snprintf(text, sizeof text, "after %d", i);
    json_decref(note(&c, text));
  }
  st = ctl_wait_modules(&c, 1, 15000);
  json_t *nm = json_object_get(json_object_get(st, "modules"), "notes");
  assert_int_equal(jint(nm, "crashes"), 1);
  assert_int_not_equal(jint(nm, "pid"), pid);
  json_decref(st);
  json_t *r = ctl_call(&c, "{\"id\":2,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  json_decref(r);

  json_t *m = load_manifest(dir);
  assert_true(json_is_true(json_object_get(m, "final")));
  json_t *mod = json_object_get(json_object_get(m, "modules"), "notes");
  json_t *crashes = json_object_get(mod, "crashes");
  assert_int_equal(json_array_size(crashes), 1);
  assert_int_equal(jint(json_array_get(crashes, 0), "signal"), 9);
  assert_int_equal(jint(json_array_get(crashes, 0), "trial"), 1);
  json_t *gaps = json_object_get(mod, "gaps");
  assert_int_equal(json_array_size(gaps), 1);
  assert_true(jint(json_array_get(gaps, 0), "duration_ns") > 0);
  struct tu_csv ev, nt;
  load_csv_in(dir, "events.csv", &ev);
  assert_int_equal(count_events(&ev, "module_crash", "notes"), 1);
  assert_int_equal(count_events(&ev, "module_restart", "notes"), 1);
  /* the session completed: one header, every note exactly once, in order */
  load_csv_in(dir, "notes.csv", &nt);
  assert_int_equal(nt.rows, 41);
  for (int i = 0; i < 40; i++) {
    char want[32];
    snprintf(want, sizeof want, "%s %d", i < 20 ? "before" : "after", i % 20);
    assert_string_equal(nt.fields[i + 1][3], want);
  }
  tu_csv_free(&ev);
  tu_csv_free(&nt);
  json_decref(m);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

/* A note acknowledged while its recorder is restarting, then an immediate stop: the stop waits for
 * the recorder to come back, rejoin the trial and write the note, instead of losing it. (CI saw
 * the same loss when a slow start met an early stop.) */
static void test_note_then_stop_while_restarting(void **state)
{
  struct ctl c;
  char dir[4200];
  ctl_start_session(&c, "{\"id\":1,\"cmd\":\"start\"}", dir, sizeof dir);
  json_decref(note(&c, "first"));
  wait_for_note_on_disk(dir, "first");
  json_t *st = ctl_wait_modules(&c, 0, 5000);
  int pid = (int)jint(json_object_get(json_object_get(st, "modules"), "notes"), "pid");
  json_decref(st);
  assert_int_equal(kill(pid, SIGKILL), 0);
  /* the controller sees the death before it reads the next command only if we let it; give it
   * the time, so the note is queued for the restart rather than written to the dying process */
  for (int i = 0;; i++) {
    st = ctl_call(&c, "{\"id\":3,\"cmd\":\"status\"}", 5000);
    json_t *nm = json_object_get(json_object_get(st, "modules"), "notes");
    int down = jint(nm, "crashes") == 1;
    json_decref(st);
    if (down)
      break;
    if (i > 500)
      fail_msg("the controller did not notice the SIGKILL");
    usleep(2000);
  }
  json_decref(note(&c, "while restarting"));
  json_t *r = ctl_call(&c, "{\"id\":2,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  assert_int_equal(jint(r, "errors"), 0);
  json_decref(r);
  struct tu_csv nt;
  load_csv_in(dir, "notes.csv", &nt);
  assert_int_equal(nt.rows, 3);
  assert_string_equal(nt.fields[1][3], "first");
  assert_string_equal(nt.fields[2][3], "while restarting");
  tu_csv_free(&nt);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

/* A recorder restarted mid-session reads the config the controller accepted, not the file as it
 * is now: here the file is broken (a recorder reading it would exit 65 every time and the
 * controller would give up on it) and the restarted notes recorder keeps recording. */
static void test_restart_uses_config_snapshot(void **state)
{
  struct ctl c;
  char dir[4200];
  ctl_start_session(&c, "{\"id\":1,\"cmd\":\"start\"}", dir, sizeof dir);
  json_decref(note(&c, "before the edit"));
  wait_for_note_on_disk(dir, "before the edit");
  FILE *f = fopen(c.cfg, "w");
  assert_non_null(f);
  fputs("[notes]\nmax_length = many\n", f);
  fclose(f);
  json_t *st = ctl_wait_modules(&c, 0, 5000);
  int pid = (int)jint(json_object_get(json_object_get(st, "modules"), "notes"), "pid");
  json_decref(st);
  assert_true(pid > 0);
  assert_int_equal(kill(pid, SIGKILL), 0);
  st = ctl_wait_modules(&c, 1, 15000);
  json_t *nm = json_object_get(json_object_get(st, "modules"), "notes");
  assert_int_equal(jint(nm, "crashes"), 1);
  assert_int_not_equal(jint(nm, "pid"), pid);
  json_decref(st);
  json_decref(note(&c, "after the restart"));
  json_t *r = ctl_call(&c, "{\"id\":2,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  assert_int_equal(jint(r, "errors"), 0);
  json_decref(r);
  struct tu_csv nt;
  load_csv_in(dir, "notes.csv", &nt);
  assert_int_equal(nt.rows, 3);
  assert_string_equal(nt.fields[2][3], "after the restart");
  tu_csv_free(&nt);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

/* The video of a camera's trial (cam0/t001.<ext>, whatever the codec makes the extension). */
static int find_video(const char *camdir, const char *stem, char *out, size_t cap)
{
  DIR *d = opendir(camdir);
  if (!d)
    return -1;
  int found = -1;
  size_t n = strlen(stem);
  for (struct dirent *e; found < 0 && (e = readdir(d));)
    if (strncmp(e->d_name, stem, n) == 0 && e->d_name[n] == '.' && !strstr(e->d_name, ".csv")) {
      snprintf(out, cap, "%s/%s", camdir, e->d_name);
      found = 0;
    }
  closedir(d);
  return found;
}

/* ffprobe reads every packet of the first video stream without one error message: the number of
 * packets, or -1 (with what ffprobe said on stderr). */
static long probe_packets(const char *path)
{
  char cmd[5000];
  snprintf(cmd, sizeof cmd,
           "ffprobe -v error -count_packets -select_streams v:0 -show_entries "
           "stream=nb_read_packets -of csv=p=0 '%s' 2>&1",
           path);
  FILE *p = popen(cmd, "r");
  if (!p)
    return -1;
  char out[4096];
  size_t len = fread(out, 1, sizeof out - 1, p);
  out[len] = '\0';
  int st = pclose(p);
  char *end = NULL;
  long n = strtol(out, &end, 10);
  if (st != 0 || end == out || (*end && strcmp(end, "\n") != 0)) {
    fprintf(stderr, "ffprobe on '%s' (status %d): %s\n", path, st, out);
    return -1;
  }
  return n;
}

static void test_sigterm_mid_trial(void **state)
{
  struct ctl c;
  ctl_start(&c, have_camera(), NULL);
  json_decref(ctl_wait_modules(&c, 0, 15000));
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"trial\",\"label\":\"x\"}", 30000);
  expect_reply(r, "started"); /* trial with no session starts one */
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", jstr(r, "session_dir"));
  json_decref(r);
  for (int i = 0; i < 50; i++) {
    char text[32];
    snprintf(text, sizeof text, "n%d, \"q\"", i);
    json_decref(note(&c, text));
  }
  if (c.camera)
    usleep(1500000);
  ctl_stop_process(&c, 0);
  json_t *m = load_manifest(dir);
  assert_string_equal(jstr(m, "state"), "stopped");
  assert_true(json_is_true(json_object_get(m, "final")));
  assert_int_equal(json_array_size(json_object_get(m, "trials")), 1);
  assert_true(jint(json_array_get(json_object_get(m, "trials"), 0), "stop_mono_ns") > 0);
  struct tu_csv ev, nt, ck;
  load_csv_in(dir, "events.csv", &ev);
  load_csv_in(dir, "notes.csv", &nt);
  load_csv_in(dir, "clocks.csv", &ck);
  assert_int_equal(nt.rows, 51);
  assert_string_equal(nt.fields[50][3], "n49, \"q\"");
  assert_int_equal(count_events(&ev, "session_stop", NULL), 1);
  assert_int_equal(count_events(&ev, "module_crash", NULL), 0);
  assert_int_equal(
      jint(json_object_get(json_object_get(json_object_get(m, "modules"), "notes"), "counters"), "notes"),
      50);
  if (c.camera) {
    char p[4400];
    snprintf(p, sizeof p, "%s/cam0/t001_frames.csv", dir);
    struct tu_csv fr;
    if (tu_csv_load(p, &fr) != 0)
      fail_msg("'%s' missing or incomplete after SIGTERM", p);
    assert_true(fr.rows > 1);
    /* the video is complete too: every frame in the CSV is a packet ffprobe reads cleanly */
    char camdir[4400], video[4700];
    snprintf(camdir, sizeof camdir, "%s/cam0", dir);
    if (find_video(camdir, "t001", video, sizeof video) != 0)
      fail_msg("no t001 video in '%s'", camdir);
    long packets = probe_packets(video);
    if (packets < 0)
      fail_msg("ffprobe cannot read '%s' after SIGTERM", video);
    assert_int_equal(packets, (long)fr.rows - 1);
    tu_csv_free(&fr);
  }
  tu_csv_free(&ev);
  tu_csv_free(&nt);
  tu_csv_free(&ck);
  json_decref(m);
  ctl_cleanup(&c);
}

/* Every accepted start, trial, reload and stop leaves one `control` row saying who asked. */
static int has_control_row(const struct tu_csv *ev, const char *detail)
{
  int ce = tu_csv_col(ev, "event"), cd = tu_csv_col(ev, "detail"), n = 0;
  for (size_t i = 1; i < ev->rows; i++)
    n += strcmp(ev->fields[i][ce], "control") == 0 && strcmp(ev->fields[i][cd], detail) == 0;
  return n;
}

static void test_control_rows(void **state)
{
  struct ctl c;
  char dir[4200];
  ctl_start_session(&c, "{\"id\":1,\"cmd\":\"start\",\"label\":\"a\"}", dir, sizeof dir);
  char out[4096];
  const char *args[] = {"trial", "--label", "t2", NULL};
  assert_int_equal(run_cli(&c, args, out, sizeof out), 0);
  json_t *r = ctl_call(&c, "{\"id\":2,\"cmd\":\"trial\"}", 30000);
  expect_reply(r, "trial");
  json_decref(r);
  kill(c.proc.pid, SIGHUP);
  /* the reload is asynchronous: stop only once its row is in events.csv */
  char events[4400];
  snprintf(events, sizeof events, "%s/events.csv", dir);
  for (int64_t until = tu_now_ms() + 10000;;) {
    char *text = tu_read_file(events, NULL);
    int there = text && strstr(text, "SIGHUP");
    free(text);
    if (there)
      break;
    if (tu_now_ms() > until)
      fail_msg("the SIGHUP reload did not reach '%s' within 10 s", events);
    usleep(20000);
  }
  kill(c.proc.pid, SIGUSR1);
  for (int i = 0;; i++) {
    json_t *st = ctl_call(&c, "{\"id\":3,\"cmd\":\"status\"}", 5000);
    int idle = strcmp(jstr(st, "state"), "idle") == 0;
    json_decref(st);
    if (idle)
      break;
    if (i > 500)
      fail_msg("SIGUSR1 did not stop the session");
    usleep(20000);
  }
  struct tu_csv ev;
  load_csv_in(dir, "events.csv", &ev);
  assert_int_equal(count_events(&ev, "control", NULL), 5);
  assert_int_equal(has_control_row(&ev, "start source socket label a"), 1);
  assert_int_equal(has_control_row(&ev, "trial source cli label t2"), 1);
  assert_int_equal(has_control_row(&ev, "trial source socket"), 1);
  assert_int_equal(has_control_row(&ev, "reload source signal from SIGHUP unchanged"), 1);
  assert_int_equal(has_control_row(&ev, "stop source signal from SIGUSR1"), 1);
  tu_csv_free(&ev);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

/* A client that half-closes its socket after sending (as `socat` or `nc -N` do at the end of their
 * input) still hears every reply, also those of ops and notes that finish later. */
static void test_half_closed_client(void **state)
{
  struct ctl c;
  char dir[4200];
  ctl_start_session(&c, "{\"id\":1,\"cmd\":\"start\",\"label\":\"half\"}", dir, sizeof dir);
  int fd = tu_sock_connect(c.sock, 5000);
  assert_true(fd >= 0);
  const char *lines = "{\"id\":2,\"cmd\":\"note\",\"text\":\"before the change\"}\n"
                      "{\"id\":3,\"cmd\":\"trial\"}\n"
                      "{\"id\":4,\"cmd\":\"note\",\"text\":\"after the change\"}\n"
                      "{\"id\":5,\"cmd\":\"status\"}\n";
  assert_int_equal(write(fd, lines, strlen(lines)), (ssize_t)strlen(lines));
  assert_int_equal(shutdown(fd, SHUT_WR), 0);
  struct tu_sock_buf b = {0};
  int seen[6] = {0};
  for (int i = 0; i < 4; i++) {
    json_t *r = tu_sock_read(fd, &b, 30000);
    if (!r)
      fail_msg("half-closed client: %d of 4 replies, then the socket closed or went quiet", i);
    json_int_t id = json_integer_value(json_object_get(r, "id"));
    assert_true(id >= 2 && id <= 5);
    seen[id]++;
    const char *want = id == 3 ? "trial" : id == 5 ? "status" : "noted";
    if (strcmp(jstr(r, "reply"), want) != 0)
      fail_msg("reply to id %lld: '%s', want '%s'", (long long)id, jstr(r, "reply"), want);
    json_decref(r);
  }
  for (int id = 2; id <= 5; id++)
    assert_int_equal(seen[id], 1);
  /* then the controller closes its end */
  json_t *more = tu_sock_read(fd, &b, 5000);
  assert_null(more);
  free(b.data);
  close(fd);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

/* SIGHUP with a broken file keeps the old config; a good file is accepted for the next session;
 * SIGUSR1 toggles recording. */
static void test_reload_and_toggle(void **state)
{
  struct ctl c;
  ctl_start(&c, 0, NULL);
  json_decref(ctl_wait_modules(&c, 0, 15000));
  kill(c.proc.pid, SIGUSR1);
  json_t *st = NULL;
  for (int i = 0; i < 200; i++) {
    st = ctl_call(&c, "{\"id\":1,\"cmd\":\"status\"}", 5000);
    if (strcmp(jstr(st, "state"), "recording") == 0)
      break;
    json_decref(st);
    st = NULL;
    usleep(25000);
  }
  assert_non_null(st);
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", jstr(st, "session_dir"));
  json_decref(st);
  /* break the file: the reload is refused and says why */
  FILE *f = fopen(c.cfg, "a");
  fputs("[eyetracker]\nreconnect_min = soon\n", f);
  fclose(f);
  json_t *r = ctl_call(&c, "{\"id\":2,\"cmd\":\"reload\"}", 10000);
  expect_reply(r, "error");
  assert_non_null(strstr(jstr(r, "message"), "reconnect_min"));
  json_decref(r);
  json_decref(note(&c, "still recording"));
  kill(c.proc.pid, SIGUSR1);
  for (int i = 0; i < 200; i++) {
    st = ctl_call(&c, "{\"id\":1,\"cmd\":\"status\"}", 5000);
    int idle = strcmp(jstr(st, "state"), "idle") == 0;
    json_decref(st);
    if (idle)
      break;
    usleep(25000);
  }
  json_t *m = load_manifest(dir);
  assert_true(json_is_true(json_object_get(m, "final")));
  json_decref(m);
  struct tu_csv ev;
  load_csv_in(dir, "events.csv", &ev);
  assert_int_equal(count_events(&ev, "config_reload", NULL), 1);
  tu_csv_free(&ev);

  /* A good file while idle applies at once: the recorders are restarted with it, and the new
   * notes.max_length is in force for the next session. */
  st = ctl_call(&c, "{\"id\":1,\"cmd\":\"status\"}", 5000);
  int old_pid = (int)jint(json_object_get(json_object_get(st, "modules"), "notes"), "pid");
  json_decref(st);
  char *text = tu_read_file(c.cfg, NULL);
  char *bad = strstr(text, "[eyetracker]");
  assert_non_null(bad);
  strcpy(bad, "");
  char *ml = strstr(text, "max_length = 4096");
  assert_non_null(ml);
  memcpy(ml, "max_length = 0100", 17);
  f = fopen(c.cfg, "w");
  fputs(text, f);
  fclose(f);
  free(text);
  r = ctl_call(&c, "{\"id\":3,\"cmd\":\"reload\"}", 10000);
  expect_reply(r, "reloaded");
  assert_string_equal(jstr(r, "applies"), "now");
  assert_true(json_is_true(json_object_get(r, "changed")));
  json_decref(r);
  for (int i = 0;; i++) {
    st = ctl_wait_modules(&c, 0, 15000);
    int pid = (int)jint(json_object_get(json_object_get(st, "modules"), "notes"), "pid");
    json_decref(st);
    if (pid != old_pid)
      break;
    if (i > 300)
      fail_msg("the notes recorder was not restarted after the reload");
    usleep(20000);
  }
  r = ctl_call(&c, "{\"id\":4,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "started");
  json_decref(r);
  char longnote[160];
  memset(longnote, 'n', 150);
  longnote[150] = '\0';
  char cmd[256];
  snprintf(cmd, sizeof cmd, "{\"id\":5,\"cmd\":\"note\",\"text\":\"%s\"}", longnote);
  r = ctl_call(&c, cmd, 5000);
  expect_reply(r, "error");
  assert_non_null(strstr(jstr(r, "message"), "too long"));
  json_decref(r);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

/* GPIO through the pipe backend (a FIFO standing in for the chip): an edge on the trigger starts
 * the session, the LED output follows the recording state, a second edge stops it; the edges are
 * in events.csv with their own timestamps. */
static void write_edge(int fd, uint64_t seq, int level, int64_t ts)
{
  struct pirec_gpio_pipe_record rec = {.ts_ns = ts, .seqno = seq, .level = level, .offset = 17};
  assert_int_equal(write(fd, &rec, sizeof rec), (ssize_t)sizeof rec);
}

static int read_led(int fd, int timeout_ms)
{
  int64_t until = tu_now_ms() + timeout_ms;
  int level = -1;
  while (tu_now_ms() < until) {
    struct pirec_gpio_pipe_record rec;
    ssize_t n = read(fd, &rec, sizeof rec);
    if (n == (ssize_t)sizeof rec) {
      level = rec.level;
      continue; /* keep the latest */
    }
    if (level >= 0)
      return level;
    usleep(10000);
  }
  return level;
}

/* ---- GPIO through the pipe backend: a FIFO per line ---- */

/* Makes TMP/NAME.fifo, the stand-in for one GPIO line, and writes its path to path. */
static void make_line_fifo(const char *tmp, const char *name, char *path, size_t cap)
{
  snprintf(path, cap, "%s/%s.fifo", tmp, name);
  assert_int_equal(mkfifo(path, 0600), 0);
}

/* Appends a [gpio.NAME] input on fifo: no debounce, no rate limit, the given edge and action. */
static void add_trigger(char *cfg, size_t cap, const char *name, const char *fifo, const char *line,
                        const char *edge, const char *action)
{
  size_t n = strlen(cfg);
  snprintf(cfg + n, cap - n,
           "[gpio.%s]\nchip = pipe:%s\nline = %s\ndirection = input\nedge = %s\n"
           "debounce = 0\nmin_interval = 0\naction = %s\n",
           name, fifo, line, edge, action);
}

static void gpio_ctl_start(struct ctl *c, const char *extra)
{
  ctl_start(c, 0, extra);
  json_decref(ctl_wait_modules(c, 0, 15000));
}

/* Stops pirec record (expecting `errors` errors) and removes the test's directory. */
static void gpio_ctl_end(struct ctl *c, char *tmp, int errors)
{
  ctl_stop_process(c, errors);
  ctl_cleanup(c);
  tu_rm_rf(tmp);
  free(tmp);
}

static int64_t mono_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Polls status until the controller is recording; returns that status (the caller frees it). */
static json_t *wait_recording(struct ctl *c, const char *what_failed)
{
  for (int i = 0;; i++) {
    json_t *st = ctl_call(c, "{\"id\":90,\"cmd\":\"status\"}", 5000);
    if (strcmp(jstr(st, "state"), "recording") == 0)
      return st;
    json_decref(st);
    if (i > 300)
      fail_msg("%s", what_failed);
    usleep(20000);
  }
}

static void test_gpio_pipe(void **state)
{
  char *tmp = tu_tmpdir("gpio");
  char trig[4200], led[4200], extra[9000] = "";
  make_line_fifo(tmp, "trigger", trig, sizeof trig);
  make_line_fifo(tmp, "led", led, sizeof led);
  add_trigger(extra, sizeof extra, "pedal", trig, "GPIO17", "rising", "toggle");
  size_t n = strlen(extra);
  snprintf(extra + n, sizeof extra - n,
           "[gpio.lamp]\nchip = pipe:%s\nline = GPIO27\ndirection = output\nrole = led\n", led);
  struct ctl c;
  gpio_ctl_start(&c, extra);
  json_t *st = ctl_call(&c, "{\"id\":1,\"cmd\":\"status\"}", 5000);
  assert_int_equal(json_object_size(json_object_get(st, "gpio")), 2);
  json_decref(st);
  int tfd = open(trig, O_WRONLY | O_NONBLOCK);
  int lfd = open(led, O_RDONLY | O_NONBLOCK);
  assert_true(tfd >= 0 && lfd >= 0);
  int64_t t0 = mono_now_ns();
  write_edge(tfd, 1, 1, t0);
  json_t *r = wait_recording(&c, "the rising edge did not start a session");
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", jstr(r, "session_dir"));
  json_decref(r);
  assert_int_equal(read_led(lfd, 3000), 1);
  write_edge(tfd, 2, 0, t0 + 100000000); /* falling: filtered */
  write_edge(tfd, 3, 1, t0 + 200000000);
  for (int i = 0; i < 200; i++) {
    r = ctl_call(&c, "{\"id\":1,\"cmd\":\"status\"}", 5000);
    int idle = strcmp(jstr(r, "state"), "idle") == 0;
    json_decref(r);
    if (idle)
      break;
    usleep(20000);
  }
  assert_int_equal(read_led(lfd, 3000), 0);
  struct tu_csv ev;
  load_csv_in(dir, "events.csv", &ev);
  assert_int_equal(count_events(&ev, "gpio_edge", "gpio.pedal"), 2);
  int ce = tu_csv_col(&ev, "event"), cm = tu_csv_col(&ev, "mono_ns");
  int64_t first = -1;
  for (size_t i = 1; i < ev.rows; i++)
    if (strcmp(ev.fields[i][ce], "gpio_edge") == 0 && first < 0)
      first = strtoll(ev.fields[i][cm], NULL, 10);
  assert_int_equal(first, t0); /* the kernel's (here: the record's) time, not the time of reading */
  assert_int_equal(has_control_row(&ev, "start source gpio from gpio.pedal"), 1);
  assert_int_equal(has_control_row(&ev, "stop source gpio from gpio.pedal"), 1);
  tu_csv_free(&ev);
  close(tfd);
  close(lfd);
  gpio_ctl_end(&c, tmp, 0);
}

/* A start that fails (the output directory cannot be created) leaves the LED off; once the
 * directory can be made, start turns it on and stop off again. */
static void test_gpio_led_failed_start(void **state)
{
  char *tmp = tu_tmpdir("gpio");
  char led[4200], extra[4400];
  make_line_fifo(tmp, "led", led, sizeof led);
  snprintf(extra, sizeof extra,
           "[gpio.lamp]\nchip = pipe:%s\nline = GPIO27\ndirection = output\nrole = led\n", led);
  struct ctl c;
  gpio_ctl_start(&c, extra);
  int lfd = open(led, O_RDONLY | O_NONBLOCK);
  assert_true(lfd >= 0);
  /* A plain file where the output directory should be: the session cannot start. The test runs
   * as root too, so permissions alone would not do. */
  FILE *f = fopen(c.out, "w");
  assert_non_null(f);
  fclose(f);
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "error");
  json_decref(r);
  assert_int_not_equal(read_led(lfd, 500), 1);
  json_t *st = ctl_call(&c, "{\"id\":2,\"cmd\":\"status\"}", 5000);
  assert_string_equal(jstr(st, "state"), "idle");
  json_decref(st);
  unlink(c.out);
  r = ctl_call(&c, "{\"id\":3,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "started");
  json_decref(r);
  assert_int_equal(read_led(lfd, 3000), 1);
  r = ctl_call(&c, "{\"id\":4,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  json_decref(r);
  assert_int_equal(read_led(lfd, 3000), 0);
  close(lfd);
  gpio_ctl_end(&c, tmp, 1); /* the failed start counts as an error */
}

/* Every sync pulse is in events.csv, once: the recording starts its periodic pulses with trial
 * 1's pulse (one physical pulse on the line, one row, in trial 1). */
static void test_gpio_sync_pulses_in_events(void **state)
{
  char *tmp = tu_tmpdir("gpio");
  char sync[4200], extra[4400];
  make_line_fifo(tmp, "sync", sync, sizeof sync);
  snprintf(extra, sizeof extra,
           "[gpio.sync]\nchip = pipe:%s\nline = GPIO22\ndirection = output\nrole = sync_pulse\n"
           "pulse_length = 1ms\npulse_interval = 60s\n",
           sync);
  struct ctl c;
  gpio_ctl_start(&c, extra);
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "started");
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", jstr(r, "session_dir"));
  json_decref(r);
  r = ctl_call(&c, "{\"id\":2,\"cmd\":\"trial\"}", 30000);
  expect_reply(r, "trial");
  json_decref(r);
  /* A pulse asked for while the line is still high lengthens that pulse instead of making a second
   * one (docs/FORMATS.md): trial 2's pulse merges into trial 1's when the trial change comes within
   * the 1 ms pulse or its end timer runs late on a loaded machine. */
  json_t *st = ctl_call(&c, "{\"id\":3,\"cmd\":\"status\"}", 30000);
  json_int_t merged = json_integer_value(
      json_object_get(json_object_get(json_object_get(st, "gpio"), "sync"), "pulses_merged"));
  json_decref(st);
  r = ctl_call(&c, "{\"id\":4,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  json_decref(r);
  struct tu_csv ev;
  load_csv_in(dir, "events.csv", &ev);
  /* Three pulses are asked for: the recording's start, trial 1's (with which the periodic pulses
   * start; it merges into the start's, microseconds apart) and trial 2's (a row of its own,
   * or merged as above). */
  assert_true(merged >= 0 && merged <= 2);
  assert_int_equal(count_events(&ev, "gpio_pulse", "gpio.sync") + merged, 3);
  int ce = tu_csv_col(&ev, "event"), cd = tu_csv_col(&ev, "detail");
  assert_true(cd >= 0);
  int seen_first = 0;
  for (size_t i = 1; i < ev.rows; i++)
    if (strcmp(ev.fields[i][ce], "gpio_pulse") == 0 && strcmp(ev.fields[i][cd], "pulse 1") == 0) {
      assert_string_equal(ev.fields[i][0], "1"); /* trial 1's start pulse */
      seen_first = 1;
    }
  assert_true(seen_first);
  tu_csv_free(&ev);
  gpio_ctl_end(&c, tmp, 0);
}

/* Edges that arrive while the session their first one starts is being created (markers pressed
 * at once, a bouncing switch) are in that session's events.csv with their kernel timestamps, not
 * only the first: six edges written together give six gpio_edge rows. */
static void test_gpio_edges_while_starting(void **state)
{
  char *tmp = tu_tmpdir("gpio");
  char trig[4200], extra[4400] = "";
  make_line_fifo(tmp, "trigger", trig, sizeof trig);
  add_trigger(extra, sizeof extra, "button", trig, "GPIO17", "both", "start");
  struct ctl c;
  gpio_ctl_start(&c, extra);
  int tfd = open(trig, O_WRONLY);
  assert_true(tfd >= 0);
  int64_t t0 = mono_now_ns();
  for (int i = 0; i < 6; i++)
    write_edge(tfd, (uint64_t)i + 1, (i + 1) & 1, t0 + (int64_t)i * 1000000);
  json_decref(wait_recording(&c, "the edges did not start a session"));
  json_t *r = ctl_call(&c, "{\"id\":2,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", jstr(r, "session_dir"));
  json_decref(r);
  struct tu_csv ev;
  load_csv_in(dir, "events.csv", &ev);
  assert_int_equal(count_events(&ev, "gpio_edge", "gpio.button"), 6);
  assert_int_equal(count_events(&ev, "gpio_edges_lost", NULL), 0);
  int cm = tu_csv_col(&ev, "mono_ns"), ce = tu_csv_col(&ev, "event");
  int seen = 0;
  for (size_t i = 1; i < ev.rows; i++) /* each edge keeps its own kernel timestamp */
    if (strcmp(ev.fields[i][ce], "gpio_edge") == 0)
      assert_int_equal(strtoll(ev.fields[i][cm], NULL, 10), t0 + (int64_t)(seen++) * 1000000);
  tu_csv_free(&ev);
  close(tfd);
  gpio_ctl_end(&c, tmp, 0);
}

/* A 10 kHz storm of 5000 toggle edges: at most one op per line waits (later edges are merged into
 * it and counted), the controller keeps answering, and it ends up settled with a handful of
 * sessions, not one per pair of edges. */
static void test_gpio_edge_storm(void **state)
{
  char *tmp = tu_tmpdir("gpio");
  char trig[4200], extra[4400] = "";
  make_line_fifo(tmp, "trigger", trig, sizeof trig);
  add_trigger(extra, sizeof extra, "pedal", trig, "GPIO17", "both", "toggle");
  struct ctl c;
  gpio_ctl_start(&c, extra);
  int tfd = open(trig, O_WRONLY); /* blocking: the controller holds the FIFO open read-write */
  assert_true(tfd >= 0);
  enum { EDGES = 5000 };
  int64_t t0 = mono_now_ns();
  for (int i = 0; i < EDGES; i++)
    write_edge(tfd, (uint64_t)i + 1, (i + 1) & 1, t0 + (int64_t)i * 100000);
  json_t *st = ctl_call(&c, "{\"id\":1,\"cmd\":\"status\"}", 2000);
  assert_true(jint(st, "ops_queued") <= 2);
  json_decref(st);
  json_t *pedal = NULL;
  for (int i = 0;; i++) {
    st = ctl_call(&c, "{\"id\":2,\"cmd\":\"status\"}", 2000);
    assert_true(jint(st, "ops_queued") <= 2); /* the running op and this line's pending one */
    pedal = json_object_get(json_object_get(st, "gpio"), "pedal");
    if (jint(pedal, "edges") == EDGES && jint(st, "ops_queued") == 0)
      break;
    json_decref(st);
    if (i > 500)
      fail_msg("the controller did not settle after the storm");
    usleep(20000);
  }
  json_int_t merged = jint(pedal, "merged");
  int recording = strcmp(jstr(st, "state"), "recording") == 0;
  json_decref(st);
  assert_true(merged >= EDGES - 100);
  if (recording) {
    json_t *r = ctl_call(&c, "{\"id\":3,\"cmd\":\"stop\"}", 30000);
    expect_reply(r, "stopped");
    json_decref(r);
  }
  /* every op that ran started or stopped a session: far fewer sessions than edges */
  int sessions = 0;
  DIR *d = opendir(c.out);
  if (d) {
    for (struct dirent *e; (e = readdir(d));)
      sessions += e->d_name[0] != '.';
    closedir(d);
  }
  assert_true(sessions >= 1 && (json_int_t)sessions * 2 <= EDGES - merged + 1);
  close(tfd);
  gpio_ctl_end(&c, tmp, 0);
}

/* An accepted reload while idle re-opens the [gpio.*] lines from the new file (an edge on the new
 * line starts a session); a changed [control] is reported as needing a restart. */
static void test_reload_reopens_gpio(void **state)
{
  char *tmp = tu_tmpdir("gpio");
  char fa[4200], fb[4200], extra[9000] = "", foot[4400] = "";
  make_line_fifo(tmp, "a", fa, sizeof fa);
  make_line_fifo(tmp, "b", fb, sizeof fb);
  add_trigger(extra, sizeof extra, "pedal", fa, "GPIO17", "rising", "toggle");
  add_trigger(foot, sizeof foot, "foot", fb, "GPIO5", "rising", "toggle");
  struct ctl c;
  gpio_ctl_start(&c, extra);
  char *text = tu_read_file(c.cfg, NULL);
  assert_non_null(text);
  char *sec = strstr(text, "[gpio.pedal]");
  assert_non_null(sec);
  *sec = '\0';
  FILE *f = fopen(c.cfg, "w");
  assert_non_null(f);
  char *ctl = strstr(text, "[control]\n");
  assert_non_null(ctl);
  ctl += strlen("[control]\n");
  fprintf(f, "%.*ssocket_mode = 0600\n%s", (int)(ctl - text), text, ctl);
  fputs(foot, f);
  fclose(f);
  free(text);
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"reload\"}", 10000);
  expect_reply(r, "reloaded");
  assert_string_equal(jstr(r, "applies"), "now");
  json_t *rn = json_object_get(r, "restart_needed");
  assert_int_equal(json_array_size(rn), 1);
  assert_string_equal(json_string_value(json_array_get(rn, 0)), "control");
  json_decref(r);
  for (int i = 0;; i++) {
    json_t *st = ctl_call(&c, "{\"id\":2,\"cmd\":\"status\"}", 5000);
    json_t *g = json_object_get(st, "gpio");
    int ok = json_object_size(g) == 1 && json_object_get(g, "foot");
    json_decref(st);
    if (ok)
      break;
    if (i > 300)
      fail_msg("[gpio.foot] not opened after the reload");
    usleep(20000);
  }
  int fd = open(fb, O_WRONLY | O_NONBLOCK);
  assert_true(fd >= 0);
  write_edge(fd, 1, 1, mono_now_ns());
  json_decref(wait_recording(&c, "an edge on the reloaded line did not start a session"));
  close(fd);
  r = ctl_call(&c, "{\"id\":4,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  json_decref(r);
  gpio_ctl_end(&c, tmp, 0);
}

/* `pirec record` without a config runs the built-in demo configuration and records at once. */
static void test_builtin_demo(void **state)
{
  char *tmp = tu_tmpdir("demo");
  char sock[4200], out[4200];
  snprintf(sock, sizeof sock, "%s/d.sock", tmp);
  snprintf(out, sizeof out, "%s/sessions", tmp);
  const char *argv[] = {tu_program("pirec"), "record", "--socket", sock, "--output-dir", out, NULL};
  struct tu_proc p;
  assert_int_equal(tu_proc_start(&p, argv, NULL), 0);
  json_t *st = NULL;
  for (int i = 0; i < 500; i++) {
    st = tu_sock_call(sock, "{\"id\":1,\"cmd\":\"status\"}", 2000);
    if (st && strcmp(jstr(st, "state"), "recording") == 0)
      break;
    json_decref(st);
    st = NULL;
    usleep(20000);
  }
  if (!st)
    fail_msg("the demo configuration did not start recording");
  assert_string_equal(jstr(st, "config"), "(built-in demo)");
  assert_non_null(json_object_get(json_object_get(st, "modules"), "notes"));
  char dir[4200];
  snprintf(dir, sizeof dir, "%s", jstr(st, "session_dir"));
  assert_true(strncmp(dir, out, strlen(out)) == 0);
  json_decref(st);
  json_t *r = tu_sock_call(sock, "{\"id\":2,\"cmd\":\"note\",\"text\":\"demo note\"}", 5000);
  assert_non_null(r);
  expect_reply(r, "noted");
  json_decref(r);
  kill(p.pid, SIGTERM);
  int status = tu_proc_wait(&p, 30000);
  assert_true(WIFEXITED(status));
  assert_int_equal(WEXITSTATUS(status), 0);
  json_t *m = load_manifest(dir);
  assert_true(json_is_true(json_object_get(m, "final")));
  assert_string_equal(jstr(json_object_get(m, "config"), "path"), "(built-in demo)");
  json_decref(m);
  struct tu_csv nt;
  load_csv_in(dir, "notes.csv", &nt);
  assert_true(nt.rows >= 2);
  int found = 0;
  for (size_t i = 1; i < nt.rows; i++)
    found |= strcmp(nt.fields[i][3], "demo note") == 0;
  assert_true(found);
  tu_csv_free(&nt);
  tu_rm_rf(tmp);
  free(tmp);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_three_trials),
      cmocka_unit_test(test_recorder_killed_mid_trial),
      cmocka_unit_test(test_restart_uses_config_snapshot),
      cmocka_unit_test(test_note_then_stop_while_restarting),
      cmocka_unit_test(test_sigterm_mid_trial),
      cmocka_unit_test(test_reload_and_toggle),
      cmocka_unit_test(test_control_rows),
      cmocka_unit_test(test_half_closed_client),
      cmocka_unit_test(test_gpio_pipe),
      cmocka_unit_test(test_gpio_led_failed_start),
      cmocka_unit_test(test_gpio_sync_pulses_in_events),
      cmocka_unit_test(test_gpio_edges_while_starting),
      cmocka_unit_test(test_gpio_edge_storm),
      cmocka_unit_test(test_reload_reopens_gpio),
      cmocka_unit_test(test_builtin_demo),
  };
  if (getenv("PIREC_TEST_FILTER"))
    cmocka_set_test_filter(getenv("PIREC_TEST_FILTER"));
  return cmocka_run_group_tests(tests, NULL, NULL);
}
