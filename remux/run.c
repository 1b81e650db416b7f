/* pirec-remux's driver: finds the files, runs each in a supervised child (pirec-remux --one),
 * draws progress, prints the summary. The child side lives here too, so both ends of the line
 * protocol ("progress DONE TOTAL", "result {json}") are in one file. */
#include "remux-internal.h"

#include "pirec/clock.h"
#include "pirec/fs.h"
#include "pirec/job.h"
#include "pirec/container_of.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <jansson.h>
#include <libavutil/log.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

struct item {
  struct run *run;
  char path[4096];
  struct pirec_job *job;
  int64_t size;
  int64_t done; /* bytes, from the child's progress lines */
  int started, ended, ok;
  json_t *result;             /* the child's result object, or one made here when the child gave none */
  int session;                /* index in run.sessions of the session it belongs to, or -1 */
  struct pirec_fs_req unlink; /* --replace: removing the input once the child reported ok */
};

/* A video a session scan passed over, with why. */
struct skipped {
  char path[4096];
  char reason[160];
  int output; /* one of our own outputs (counted, not listed, in the table) */
  int empty;  /* a trial that recorded no frames: "no frames", not a failure */
};

struct run {
  const struct pirec_remux_run_options *o;
  uv_loop_t *loop;
  struct item *items;
  size_t n, cap;
  struct skipped *skipped;
  size_t nskipped, skipped_cap;
  size_t ended;
  FILE *out, *err;
  uv_timer_t bar;
  uv_signal_t sigint, sigterm;
  struct pirec_job_queue *queue;
  int drawn_lines;
  size_t live;                           /* inputs left alone because their session is still recording */
  struct pirec__remux_session *sessions; /* the sessions the inputs belong to, each once */
  size_t nsessions, sessions_cap;
};

/* ---------------------------------------------------------------- child side */

struct child_progress {
  FILE *out;
  int64_t last;
};

static void child_progress(int64_t done, int64_t total, void *user)
{
  struct child_progress *p = user;
  /* At most ~200 lines per file: the parent only needs enough to move a bar (and to see life). */
  if (done - p->last < total / 200 && done != total)
    return;
  p->last = done;
  fprintf(p->out, "progress %" PRId64 " %" PRId64 "\n", done, total);
  fflush(p->out);
}

/* A JSON string of bytes that may not be UTF-8 (a path, a message naming one), escaped so jansson
 * takes it and a reader can tell the bytes; NULL only without memory. */
static json_t *jtext(const char *s)
{
  char *e = pirec__remux_escape(s);
  json_t *j = e ? json_string(e) : NULL;
  free(e);
  return j;
}

static json_t *result_json(const char *input, const struct pirec_remux_result *r, int ok, int verify, int dry)
{
  json_t *j = json_pack(
      "{s:o, s:o, s:o, s:b, s:b, s:b, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:b,"
      " s:s, s:o, s:i, s:I, s:I}",
      "input", jtext(input), "output", jtext(r->output_path), "timing", jtext(r->timing_path), "ok", ok,
      "verify", verify, "dry_run", dry, "error", jtext(r->error), "frames", (json_int_t)r->frames, "rows",
      (json_int_t)r->timing_rows, "packets", (json_int_t)r->packets, "rows_cut", (json_int_t)r->rows_cut,
      "packets_cut", (json_int_t)r->packets_cut, "bytes_cut", (json_int_t)r->bytes_cut, "partial_row",
      r->partial_row, "video_truncated", r->video_truncated, "clock", pirec_remux_clock_name(r->clock_used),
      "clock_note", jtext(r->clock_note), "reorder_depth", r->reorder_depth, "duration_ns",
      (json_int_t)r->duration_ns, "input_bytes", (json_int_t)r->input_bytes);
  /* where the trial starts in the output: frames before it (pre-trigger, the GOP before the
   * start) play first at their own times */
  json_object_set_new(j, "first_ns", json_integer(r->first_ns));
  /* frames put one output tick after the one before (docs/REMUX.md) */
  json_object_set_new(j, "frames_moved", json_integer(r->frames_moved));
  json_object_set_new(j, "max_moved_ns", json_integer(r->max_moved_ns));
  json_object_set_new(j, "before_start", json_integer(r->before_start));
  json_object_set_new(j, "trial_start_offset_ns", json_integer(r->start_ns - r->first_ns));
  return j;
}

/* A test hook: PIREC_REMUX_TEST_FAULT="NAME:hang,NAME2:abort,NAME3:mute" makes the child for a
 * file whose path contains NAME hang or crash before its work, or do its work and exit without
 * a result line (returns 1), so the supervision is tested with a real misbehaving process. */
static int test_fault(const char *path)
{
  const char *spec = getenv("PIREC_REMUX_TEST_FAULT");
  char buf[512], *save = NULL;

  if (spec == NULL || strlen(spec) >= sizeof buf)
    return 0;
  strcpy(buf, spec);
  for (char *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    char *colon = strrchr(tok, ':');
    if (colon == NULL || colon == tok)
      continue;
    *colon = '\0';
    if (strstr(path, tok) == NULL)
      continue;
    if (strcmp(colon + 1, "hang") == 0)
      for (;;)
        pause();
    if (strcmp(colon + 1, "abort") == 0)
      abort();
    if (strcmp(colon + 1, "mute") == 0)
      return 1;
  }
  return 0;
}

int pirec_remux_child(const char *path, const struct pirec_remux_options *options, int verify, FILE *out)
{
  struct pirec_remux_result res;
  struct pirec_remux_options o = *options;
  struct child_progress progress = {out, -1};
  json_t *j;
  char *text;
  int rc, mute;

  /* FFmpeg's own messages go to stderr, which the parent keeps as a tail for failures only. */
  av_log_set_level(AV_LOG_ERROR);
  mute = test_fault(path);
  /* The input goes only once the parent holds an ok result: a result that does not reach it (an
   * unencodable line, a crash while writing it) must leave the input in place. */
  if (o.flags & PIREC_REMUX_REPLACE)
    o.flags = (o.flags & ~(unsigned)PIREC_REMUX_REPLACE) | PIREC__REMUX_SYNC;
  if (verify)
    rc = pirec__remux_verify(path, &o, &res, child_progress, &progress);
  else if (o.key_file)
    rc = pirec__remux_encrypted(path, &o, &res, child_progress, &progress);
  else
    rc = pirec_remux_file(path, &o, &res, child_progress, &progress);
  if (mute)
    return 1;
  j = result_json(path, &res, rc >= 0, verify, (options->flags & PIREC_REMUX_DRY_RUN) != 0 && !verify);
  text = j ? json_dumps(j, JSON_COMPACT) : NULL;
  fprintf(out, "result %s\n", text ? text : "{}");
  fflush(out);
  free(text);
  json_decref(j);
  return rc >= 0 ? 0 : 1;
}

/* ---------------------------------------------------------------- discovery */

static const char *const raw_exts[] = {".h264", ".264", ".mjpeg", ".mjpg", ".hevc", ".h265"};

static int is_mkv(const char *name)
{
  size_t n = strlen(name);
  return n > 4 && strcasecmp(name + n - 4, ".mkv") == 0;
}

static int is_video(const char *name)
{
  return is_mkv(name) || pirec__remux_is_raw_name(name);
}

/* Whether a video found by a scan is one of our outputs, by three signs: the name "_timed.mkv";
 * the WritingApp pirec-remux puts in every MKV it writes (kept when --replace removed the input);
 * an MKV next to an elementary stream of the same stem (tNNN.mkv made from tNNN.h264 by an older
 * pirec-remux that wrote no mark: both would map to the same output). */
static int own_output(const char *path, char *why, size_t cap)
{
  size_t n = strlen(path);
  struct stat st;

  if (!is_mkv(path))
    return 0;
  if (n > 10 && strcmp(path + n - 10, "_timed.mkv") == 0) {
    snprintf(why, cap, "an output of pirec-remux (its name)");
    return 1;
  }
  if (pirec__remux_is_own_output(path)) {
    snprintf(why, cap, "an output of pirec-remux (its WritingApp)");
    return 1;
  }
  for (size_t i = 0; i < sizeof raw_exts / sizeof raw_exts[0]; i++) {
    char raw[4200];
    snprintf(raw, sizeof raw, "%.*s%s", (int)(n - 4), path, raw_exts[i]);
    if (stat(raw, &st) == 0 && S_ISREG(st.st_mode)) {
      const char *base = strrchr(raw, '/');
      snprintf(why, cap, "an output of pirec-remux (made from '%.100s')", base ? base + 1 : raw);
      return 1;
    }
  }
  return 0;
}

/* What --verify looks for in a directory: our outputs. */
static int is_output(const char *path, const char *name)
{
  size_t n = strlen(name);
  char why[160];
  return (n > 4 && strcasecmp(name + n - 4, ".mp4") == 0) || own_output(path, why, sizeof why);
}

static int add_skipped(struct run *r, const char *path, const char *reason, int output)
{
  struct skipped *s;

  if (pirec__remux_grow(&r->skipped, r->nskipped, &r->skipped_cap, sizeof *r->skipped) < 0)
    return -ENOMEM;
  s = &r->skipped[r->nskipped++];
  snprintf(s->path, sizeof s->path, "%s", path);
  snprintf(s->reason, sizeof s->reason, "%s", reason);
  s->output = output;
  s->empty = strncmp(reason, "no frames", 9) == 0;
  return 0;
}

/* A trial that recorded nothing: its recorder left the frames CSV (the header alone) and no
 * video, or (an older recorder) a 0-byte video. Reported as "no frames", which does not fail
 * the run: there is nothing to remux. Returns 1 when path is such a CSV. */
/* Whether a timing file loads and has no complete row (one that does not load is left to fail
 * with its own message). */
static int timing_has_no_rows(const char *path)
{
  struct pirec_remux_timing t;
  char err[256];
  if (pirec_remux_timing_load(path, PIREC_REMUX_CLOCK_AUTO, &t, err, sizeof err) < 0)
    return 0;
  int none = t.count == 0 && !t.partial_row;
  pirec_remux_timing_free(&t);
  return none;
}

/* A 0-byte video whose timing has no rows either: the trial recorded nothing. With rows, the
 * frames were lost, and the file fails with its own reason. */
static int empty_video(const char *path, const struct stat *st)
{
  char timing[4200];
  if (!S_ISREG(st->st_mode) || st->st_size != 0)
    return 0;
  return pirec_remux_find_timing(path, timing, sizeof timing) < 0 || timing_has_no_rows(timing);
}

static int empty_trial_csv(const char *path)
{
  static const char *const exts[] = {".mkv", ".h264", ".264", ".mjpeg", ".mjpg", ".hevc", ".h265"};
  size_t n = strlen(path);
  char video[4200];
  struct stat st;

  if (n <= 11 || strcmp(path + n - 11, "_frames.csv") != 0)
    return 0;
  for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
    snprintf(video, sizeof video, "%.*s%s", (int)(n - 11), path, exts[i]);
    if (stat(video, &st) == 0)
      return 0; /* the video's own entry says what it holds */
  }
  return timing_has_no_rows(path);
}

static int add_item(struct run *r, const char *path)
{
  struct item *it;
  struct stat st;

  if (pirec__remux_grow(&r->items, r->n, &r->cap, sizeof *r->items) < 0)
    return -ENOMEM;
  it = &r->items[r->n++];
  memset(it, 0, sizeof *it);
  it->run = r;
  snprintf(it->path, sizeof it->path, "%s", path);
  it->size = stat(path, &st) == 0 ? st.st_size : 0;
  return 0;
}

/* The segment number of a name "..._sNNN.EXT" (docs/FORMATS.md), else 0. */
static int segment_number(const char *name)
{
  const char *dot = strrchr(name, '.');
  size_t n = dot ? (size_t)(dot - name) : strlen(name);
  if (n < 6 || name[n - 5] != '_' || name[n - 4] != 's')
    return 0;
  int k = 0;
  for (size_t i = n - 3; i < n; i++) {
    if (name[i] < '0' || name[i] > '9')
      return 0;
    k = k * 10 + (name[i] - '0');
  }
  return k;
}

/* --join: segment 1 of a trial (".../tNNN_s001.EXT") adds the trial ("tNNN.EXT"), which the child
 * reads as its segments joined; the later segments are in it. */
static int add_trial(struct run *r, const char *path)
{
  char trial[4096];
  const char *dot = strrchr(path, '.');
  if (segment_number(strrchr(path, '/') ? strrchr(path, '/') + 1 : path) != 1)
    return 0;
  snprintf(trial, sizeof trial, "%.*s%s", (int)(dot - path - 5), path, dot);
  int rc = add_item(r, trial);
  struct stat st;
  char seg[4200];
  for (int k = 1; rc == 0; k++) { /* its size, for the timeout: all of its segments */
    snprintf(seg, sizeof seg, "%.*s_s%03d%s", (int)(dot - path - 5), path, k, dot);
    if (stat(seg, &st) != 0)
      break;
    r->items[r->n - 1].size += st.st_size;
  }
  return rc;
}

/* Session layout: SESSION/cameraN/tNNN.mkv, SESSION/eyetracker/tNNN_scene.mkv; we search a few
 * levels deep so a folder of sessions works too. Names are sorted so runs are reproducible. */
static int scan_dir(struct run *r, const char *dir, int depth)
{
  struct dirent **names = NULL;
  int n = scandir(dir, &names, NULL, alphasort), rc = 0;

  if (n < 0)
    return -errno;
  for (int i = 0; i < n; i++) {
    char path[4096];
    struct stat st;
    if (names[i]->d_name[0] == '.' || rc < 0)
      goto next;
    if (snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name) >= (int)sizeof path)
      goto next;
    if (stat(path, &st) < 0)
      goto next;
    if (S_ISDIR(st.st_mode) && depth < 3) {
      rc = scan_dir(r, path, depth + 1);
    } else if (S_ISREG(st.st_mode) && r->o->verify) {
      if (is_output(path, names[i]->d_name))
        rc = add_item(r, path);
    } else if (S_ISREG(st.st_mode) && empty_trial_csv(path)) {
      rc = add_skipped(r, path, "no frames (the trial recorded none)", 0);
    } else if (S_ISREG(st.st_mode) && is_video(names[i]->d_name) && r->o->join &&
               segment_number(names[i]->d_name) > 0) {
      rc = add_trial(r, path); /* its first segment stands for the trial */
    } else if (S_ISREG(st.st_mode) && is_video(names[i]->d_name)) {
      char why[160], timing[4200];
      /* A stray video (a copy, a test clip) without timing is not this run's business, and our
       * own outputs are not inputs: skip both rather than fail the run on them. */
      if (empty_video(path, &st))
        rc = add_skipped(r, path, "no frames (an empty file)", 0);
      else if (own_output(path, why, sizeof why))
        rc = add_skipped(r, path, why, 1);
      else if (pirec_remux_find_timing(path, timing, sizeof timing) < 0)
        rc = add_skipped(r, path, "no timing file (<name>_frames.csv, <name>.pts or <name>_pts.txt)", 0);
      else
        rc = add_item(r, path);
    }
  next:
    free(names[i]);
  }
  free(names);
  return rc;
}

/* ---------------------------------------------------------------- progress and summary */

static void bar(char *buf, size_t cap, int64_t done, int64_t total, int width)
{
  int fill = total > 0 ? (int)(done * width / total) : 0;
  size_t k = 0;

  if (fill > width)
    fill = width;
  buf[k++] = '[';
  for (int i = 0; i < width && k + 3 < cap; i++)
    buf[k++] = i < fill ? '#' : '.';
  buf[k++] = ']';
  buf[k] = '\0';
}

/* A path for the table and the bars: escaped where it is not UTF-8 (as in the JSON), and at most
 * 40 columns: a long one keeps its last components after ".../" (cut mid-name only when the last
 * component alone is too long). The result lives until the next call. */
static const char *short_name(const char *path)
{
  static char out[4 * 4096 + 8];
  char *e = pirec__remux_escape(path);
  pirec__remux_fit(e ? e : "?", 40, out, sizeof out);
  free(e);
  return out;
}

static void draw(struct run *r, int final)
{
  int64_t done = 0, total = 0;
  int lines = 0;
  char b[64];

  if (!r->o->progress)
    return;
  if (r->drawn_lines > 0)
    fprintf(r->err, "\033[%dA\033[J", r->drawn_lines);
  for (size_t i = 0; i < r->n; i++) {
    struct item *it = &r->items[i];
    total += it->size;
    done += it->ended ? it->size : it->done;
    struct pirec_job_stats st;
    if (it->job == NULL || it->ended)
      continue;
    pirec_job_stats(it->job, &st);
    if (st.state == PIREC_JOB_RUNNING && !final) {
      bar(b, sizeof b, it->done, it->size, 30);
      fputs("  ", r->err);
      pirec__remux_pad(r->err, short_name(it->path), 40);
      fprintf(r->err, " %s %3d%%\n", b, it->size ? (int)(it->done * 100 / it->size) : 0);
      lines++;
    }
  }
  bar(b, sizeof b, done, total, 30);
  fprintf(r->err, "  %-40s %s %3d%%  %zu/%zu files\n", "total", b, total ? (int)(done * 100 / total) : 0,
          r->ended, r->n);
  /* The last frame keeps only the total line, above the summary. */
  r->drawn_lines = final ? 0 : lines + 1;
  fflush(r->err);
}

static void on_bar(uv_timer_t *t)
{
  draw(container_of(t, struct run, bar), 0);
}

static const char *jstr(json_t *o, const char *key)
{
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : "";
}

static int64_t jint(json_t *o, const char *key)
{
  return json_integer_value(json_object_get(o, key));
}

/* What the files of session i show of a crash: sums over its files' results. */
struct session_loss {
  int64_t files, failed, rows_cut, packets_cut, bytes_cut, partial_rows, truncated;
};

static struct session_loss session_loss(const struct run *r, size_t si)
{
  struct session_loss l = {0};
  for (size_t i = 0; i < r->n; i++) {
    json_t *j = r->items[i].result;
    if (r->items[i].session != (int)si)
      continue;
    l.files++;
    l.failed += !r->items[i].ok;
    l.rows_cut += jint(j, "rows_cut");
    l.packets_cut += jint(j, "packets_cut");
    l.bytes_cut += jint(j, "bytes_cut");
    l.partial_rows += json_is_true(json_object_get(j, "partial_row"));
    l.truncated += json_is_true(json_object_get(j, "video_truncated"));
  }
  return l;
}

/* The sessions' verdicts: {dir, state, reason, pid, host, files, failed, rows_cut, packets_cut,
 * bytes_cut, partial_rows, videos_truncated}. */
static json_t *sessions_json(const struct run *r)
{
  json_t *a = json_array();
  for (size_t i = 0; i < r->nsessions; i++) {
    const struct pirec__remux_session *s = &r->sessions[i];
    struct session_loss l = session_loss(r, i);
    json_array_append_new(
        a, json_pack("{s:o, s:s, s:o, s:i, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "dir", jtext(s->dir),
                     "state", pirec__remux_session_state_name(s->state), "reason", jtext(s->why), "pid",
                     s->pid, "host", jtext(s->host), "files", (json_int_t)l.files, "failed",
                     (json_int_t)l.failed, "rows_cut", (json_int_t)l.rows_cut, "packets_cut",
                     (json_int_t)l.packets_cut, "bytes_cut", (json_int_t)l.bytes_cut, "partial_rows",
                     (json_int_t)l.partial_rows, "videos_truncated", (json_int_t)l.truncated));
  }
  return a;
}

/* One line per session under the table: finished, or crashed with why and what its files lost. */
static void sessions_table(const struct run *r)
{
  for (size_t i = 0; i < r->nsessions; i++) {
    const struct pirec__remux_session *s = &r->sessions[i];
    struct session_loss l = session_loss(r, i);
    char *dir = pirec__remux_escape(s->dir);
    if (s->state == PIREC__REMUX_SESSION_CRASHED)
      fprintf(r->out,
              "session '%s': CRASHED (%s): %" PRId64 " of %" PRId64 " files recovered; cut %" PRId64
              " rows without data, %" PRId64 " frames without a row, %" PRId64 " trailing bytes, %" PRId64
              " partial CSV lines; %" PRId64 " videos were cut short\n",
              dir ? dir : "", s->why, l.files - l.failed, l.files, l.rows_cut, l.packets_cut, l.bytes_cut,
              l.partial_rows, l.truncated);
    else
      fprintf(r->out, "session '%s': %s\n", dir ? dir : "", pirec__remux_session_state_name(s->state));
    free(dir);
  }
}

static void summary(struct run *r, int64_t elapsed_ns)
{
  size_t ok = 0;
  int64_t frames = 0;

  for (size_t i = 0; i < r->n; i++) {
    ok += r->items[i].ok;
    frames += jint(r->items[i].result, "frames");
  }
  if (r->o->json) {
    json_t *files = json_array(), *skipped = json_array(), *top;
    char *text;
    for (size_t i = 0; i < r->n; i++)
      json_array_append(files, r->items[i].result);
    for (size_t i = 0; i < r->nskipped; i++)
      json_array_append_new(skipped, json_pack("{s:o, s:s}", "input", jtext(r->skipped[i].path), "reason",
                                               r->skipped[i].reason));
    top = json_pack("{s:o, s:o, s:o, s:I, s:I, s:I, s:f}", "files", files, "skipped", skipped, "sessions",
                    sessions_json(r), "ok", (json_int_t)ok, "failed", (json_int_t)(r->n - ok), "frames",
                    (json_int_t)frames, "elapsed_s", (double)elapsed_ns / 1e9);
    text = top ? json_dumps(top, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) : NULL;
    fprintf(r->out, "%s\n", text ? text : "{}");
    free(text);
    json_decref(top);
    return;
  }
  fprintf(r->out, "%-44s %7s %6s %9s  %s\n", "FILE", "FRAMES", "CUT", "SECONDS", "RESULT");
  for (size_t i = 0; i < r->n; i++) {
    struct item *it = &r->items[i];
    json_t *j = it->result;
    int64_t cut = jint(j, "rows_cut") + jint(j, "packets_cut");
    int64_t dur = jint(j, "duration_ns");
    char what[4200], clock[420] = "";
    /* Auto passing over the camera's clock changes what the times mean: say so on the line. */
    if (jstr(j, "clock_note")[0] != '\0')
      snprintf(clock, sizeof clock, " (clock %s: %s)", jstr(j, "clock"), jstr(j, "clock_note"));
    if (jint(j, "frames_moved") > 0)
      snprintf(clock + strlen(clock), sizeof clock - strlen(clock),
               " (%" PRId64 " frames less than one tick after the one before, moved up to %" PRId64 " us)",
               jint(j, "frames_moved"), (jint(j, "max_moved_ns") + 999) / 1000);
    if (!it->ok)
      snprintf(what, sizeof what, "FAILED: %s", jstr(j, "error"));
    else if (r->o->verify)
      snprintf(what, sizeof what, "verified%s",
               jint(j, "rows_cut") ? " (recovered: holds the first frames)" : "");
    else if (json_is_true(json_object_get(j, "dry_run")))
      snprintf(what, sizeof what, "would write %s", jstr(j, "output"));
    else if (cut || json_is_true(json_object_get(j, "partial_row")) ||
             json_is_true(json_object_get(j, "video_truncated")))
      snprintf(what, sizeof what,
               "ok -> %s (recovered: cut %" PRId64 " rows without data, %" PRId64
               " frames without a row, %" PRId64 " trailing bytes%s)",
               jstr(j, "output"), jint(j, "rows_cut"), jint(j, "packets_cut"), jint(j, "bytes_cut"),
               json_is_true(json_object_get(j, "partial_row")) ? ", a partial CSV line" : "");
    else
      snprintf(what, sizeof what, "ok -> %s", jstr(j, "output"));
    pirec__remux_pad(r->out, short_name(it->path), 44);
    fprintf(r->out, " %7" PRId64 " %6" PRId64 " %5" PRId64 ".%03d  %s%s\n", jint(j, "frames"), cut,
            dur / 1000000000, (int)(dur / 1000000 % 1000), what, it->ok ? clock : "");
  }
  {
    size_t outputs = 0;
    for (size_t i = 0; i < r->nskipped; i++) {
      if (r->skipped[i].output) {
        outputs++;
        continue;
      }
      pirec__remux_pad(r->out, short_name(r->skipped[i].path), 44);
      fprintf(r->out, " %7s %6s %9s  %s%s\n", "-", "-", "-",
              r->skipped[i].empty ? "" : "SKIPPED: ", r->skipped[i].reason);
    }
    if (outputs > 0)
      fprintf(r->out, "skipped %zu output%s of pirec-remux\n", outputs, outputs == 1 ? "" : "s");
  }
  sessions_table(r);
  fprintf(r->out, "%zu of %zu files %s, %" PRId64 " frames, %" PRId64 ".%01d s\n", ok, r->n,
          r->o->verify ? "verified" : "done", frames, elapsed_ns / 1000000000,
          (int)(elapsed_ns / 100000000 % 10));
}

/* ---------------------------------------------------------------- the children */

static void item_fail(struct item *it, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void item_fail(struct item *it, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  json_decref(it->result);
  it->result = json_pack("{s:o, s:s, s:b, s:o, s:I}", "input", jtext(it->path), "output", "", "ok", 0,
                         "error", jtext(msg), "frames", (json_int_t)0);
  it->ok = 0;
}

static void on_line(struct pirec_job *job, int fd, const char *line, size_t len)
{
  struct item *it = pirec_job_user(job);
  long long done, total;

  if (fd != 1)
    return;
  if (sscanf(line, "progress %lld %lld", &done, &total) == 2) {
    it->done = done;
    if (total > 0)
      it->size = total;
  } else if (strncmp(line, "result ", 7) == 0) {
    json_t *j = json_loadb(line + 7, len - 7, 0, NULL);
    if (j != NULL && json_is_object(j)) {
      json_decref(it->result);
      it->result = j;
      it->ok = json_is_true(json_object_get(j, "ok"));
    } else {
      json_decref(j);
    }
  }
}

/* The last non-empty line of a child's stderr, for a crash report. */
static void last_line(const char *tail, size_t len, char *out, size_t cap)
{
  size_t end = len, start;

  while (end > 0 && (tail[end - 1] == '\n' || tail[end - 1] == '\r'))
    end--;
  start = end;
  while (start > 0 && tail[start - 1] != '\n')
    start--;
  snprintf(out, cap, "%.*s", (int)(end - start), tail + start);
}

static void remove_partial(struct item *it)
{
  char out[4096], part[4200];
  const struct pirec_remux_options *o = &it->run->o->remux;

  if (it->run->o->verify || (o->flags & PIREC_REMUX_DRY_RUN))
    return;
  if (o->output_path)
    snprintf(out, sizeof out, "%s", o->output_path);
  else if (pirec_remux_output_path(it->path, o->format, out, sizeof out) < 0)
    return;
  snprintf(part, sizeof part, "%s.part", out);
  unlink(part); /* only ever our temporary name, never an input */
}

/* Closes the progress timer and the signal watchers once every file has ended, so the loop ends. */
static void close_handles(struct run *r)
{
  uv_timer_stop(&r->bar);
  uv_close((uv_handle_t *)&r->bar, NULL);
  uv_close((uv_handle_t *)&r->sigint, NULL);
  uv_close((uv_handle_t *)&r->sigterm, NULL);
}

/* An item is over: its child ended and, with --replace, its input is gone. */
static void item_done(struct item *it)
{
  struct run *r = it->run;
  it->ended = 1;
  r->ended++;
  if (r->ended < r->n)
    draw(r, 0);
  if (r->ended == r->n)
    close_handles(r);
}

static void on_input_removed(struct pirec_fs_req *req)
{
  struct item *it = req->data;
  if (req->result < 0)
    item_fail(it, "the output verified, but %s", req->message ? req->message : strerror(-req->result));
  pirec_fs_req_cleanup(req);
  item_done(it);
}

/* --replace: the child wrote, verified and synced the output but left the input; it is removed
 * here, off the loop, only now that this side holds the child's ok result. Returns 1 when the
 * removal was started (item_done follows from its callback). */
static int remove_input(struct item *it)
{
  const struct pirec_remux_run_options *o = it->run->o;
  if (!(o->remux.flags & PIREC_REMUX_REPLACE) || o->verify || (o->remux.flags & PIREC_REMUX_DRY_RUN))
    return 0;
  it->unlink.data = it;
  int rc = pirec_fs_unlink(it->run->loop, &it->unlink, it->path, on_input_removed);
  if (rc < 0)
    item_fail(it, "cannot remove '%s': %s", it->path, strerror(-rc));
  return rc == 0;
}

static void on_end(struct pirec_job *job, const struct pirec_job_result *res)
{
  struct item *it = pirec_job_user(job);
  struct run *r = it->run;
  char line[512];

  last_line(res->stderr_tail ? res->stderr_tail : "", res->stderr_tail_len, line, sizeof line);
  if (res->reason == PIREC_JOB_END_TIMEOUT_TOTAL || res->reason == PIREC_JOB_END_TIMEOUT_STALL ||
      res->reason == PIREC_JOB_END_TIMEOUT_START)
    item_fail(it, "timed out (%s after %.1f s), child killed", pirec_job_end_str(res->reason),
              (double)(res->end_mono_ns - res->start_mono_ns) / 1e9);
  else if (res->reason == PIREC_JOB_END_STOPPED && !(res->status == 0 && it->ok))
    item_fail(it, "interrupted"); /* a child that had already finished and reported keeps its ok */
  else if (res->reason == PIREC_JOB_END_FAILED && res->error < 0)
    item_fail(it, "cannot start '%s': %s", r->o->self_exe, strerror(-res->error));
  else if (res->term_signal > 0)
    item_fail(it, "child crashed with signal %d (%s)%s%s", res->term_signal, strsignal(res->term_signal),
              line[0] ? ": " : "", line);
  else if (it->result == NULL)
    item_fail(it, "child exited with status %d without a result%s%s", res->status, line[0] ? ": " : "", line);
  if (!it->ok)
    remove_partial(it);
  if (!it->ok || !remove_input(it))
    item_done(it);
}

static void on_signal(uv_signal_t *s, int signum)
{
  struct run *r = s->data;

  /* Stop the children in order; each ends as "interrupted" and its .part is removed. */
  for (size_t i = 0; i < r->n; i++)
    if (r->items[i].job != NULL && !r->items[i].ended)
      pirec_job_stop(r->items[i].job);
}

static int child_argv(const struct pirec_remux_run_options *o, const char *path, const char **argv,
                      size_t cap)
{
  size_t k = 0;
  static const char *const fmts[] = {"mp4", "mkv"};

  argv[k++] = o->self_exe;
  argv[k++] = "--one";
  argv[k++] = "--format";
  argv[k++] = fmts[o->remux.format == PIREC_REMUX_MKV];
  argv[k++] = "--clock";
  argv[k++] = pirec_remux_clock_name(o->remux.clock);
  if (o->remux.flags & PIREC_REMUX_CFR)
    argv[k++] = "--cfr";
  if (o->remux.flags & PIREC_REMUX_WRITE_TIMESTAMPS)
    argv[k++] = "--write-timestamps";
  if (o->remux.flags & PIREC_REMUX_REPLACE)
    argv[k++] = "--replace";
  if (o->remux.flags & PIREC_REMUX_DRY_RUN)
    argv[k++] = "--dry-run";
  if (o->remux.flags & PIREC_REMUX_ALLOW_CUT)
    argv[k++] = "--allow-cut";
  if (o->verify)
    argv[k++] = "--verify";
  if (o->remux.timing_path) {
    argv[k++] = "--timing";
    argv[k++] = o->remux.timing_path;
  }
  if (o->remux.output_path) {
    argv[k++] = "--output";
    argv[k++] = o->remux.output_path;
  }
  if (o->remux.key_file) {
    argv[k++] = "--key";
    argv[k++] = o->remux.key_file;
  }
  argv[k++] = "--";
  argv[k++] = path;
  argv[k] = NULL;
  return k < cap ? 0 : -E2BIG;
}

/* The session path belongs to, judged (finished, live or crashed) and listed once in r->sessions:
 * its index, or -1 (no session.json: a loose file, or out of memory). *st gets its verdict. */
static int session_of(struct run *r, const char *path, struct pirec__remux_session *st)
{
  if (pirec__remux_session_judge(path, st) == PIREC__REMUX_SESSION_NONE)
    return -1;
  for (size_t i = 0; i < r->nsessions; i++)
    if (strcmp(r->sessions[i].dir, st->dir) == 0)
      return (int)i;
  if (pirec__remux_grow(&r->sessions, r->nsessions, &r->sessions_cap, sizeof *r->sessions) < 0)
    return -1;
  r->sessions[r->nsessions] = *st;
  return (int)r->nsessions++;
}

/* The files to remux (or verify): each path given, or what a scan of a directory finds; a live
 * session's are left alone unless o->live. */
static void collect(struct run *r, const char *const *paths, int npaths)
{
  for (int i = 0; i < npaths; i++) {
    struct stat st;
    struct pirec__remux_session sess;
    size_t before = r->n, skipped_before = r->nskipped;
    if (pirec__remux_session_judge(paths[i], &sess) == PIREC__REMUX_SESSION_LIVE && !r->o->live) {
      fprintf(r->err,
              "pirec-remux: '%s' is a live session (pid %d is still recording it): left alone; "
              "--live remuxes what is written so far\n",
              paths[i], sess.pid);
      r->live++;
      continue;
    }
    if (stat(paths[i], &st) == 0 && S_ISDIR(st.st_mode)) {
      int rc = scan_dir(r, paths[i], 0);
      if (rc < 0)
        fprintf(r->err, "pirec-remux: cannot read '%s': %s\n", paths[i], strerror(-rc));
      else if (r->n == before && r->nskipped == skipped_before)
        fprintf(r->err, "pirec-remux: no %s in '%s'\n", r->o->verify ? "outputs" : "videos", paths[i]);
    } else if (!r->o->verify && stat(paths[i], &st) == 0 && empty_video(paths[i], &st)) {
      add_skipped(r, paths[i], "no frames (an empty file)", 0);
    } else {
      add_item(r, paths[i]); /* a missing file fails in its child with a clear message */
    }
    for (size_t k = before; k < r->n; k++)
      r->items[k].session = session_of(r, r->items[k].path, &sess);
  }
}

/* Two inputs with one output (t001.h264 and t001.mjpeg) would race on its .part under -j: the
 * later one fails. Returns 1 when item i did. */
static int refuse_shared_output(struct run *r, size_t i)
{
  const struct pirec_remux_run_options *o = r->o;
  struct item *it = &r->items[i];
  char mine[4096], theirs[4096];
  size_t k = 0;
  if (o->verify || o->remux.output_path != NULL)
    return 0;
  if (pirec_remux_output_path(it->path, o->remux.format, mine, sizeof mine) == 0)
    for (; k < i; k++)
      if (pirec_remux_output_path(r->items[k].path, o->remux.format, theirs, sizeof theirs) == 0 &&
          strcmp(mine, theirs) == 0)
        break;
  if (k == i)
    return 0;
  it->ended = 1;
  r->ended++;
  item_fail(it, "its output '%s' is also the output of '%s'", mine, r->items[k].path);
  return 1;
}

/* Queues the child that remuxes one file; a child that cannot start fails its file at once. */
static void start_item(struct run *r, struct item *it)
{
  const struct pirec_remux_run_options *o = r->o;
  struct pirec_job_options jo;
  const char *argv[32];
  pirec_job_options_init(&jo);
  child_argv(o, it->path, argv, sizeof argv / sizeof argv[0]);
  jo.argv = argv;
  jo.name = it->path;
  jo.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  jo.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  jo.line_max = 1 << 16; /* the result line carries three paths of up to 4 KiB each */
  /* Proportional to the size: slow SD cards read ~10 MB/s; 1 s per 2 MiB leaves room for that. */
  uint64_t timeout_ms =
      o->timeout_s ? (uint64_t)o->timeout_s * 1000 : 30000 + (uint64_t)it->size / (2u << 20) * 1000;
  jo.total_timeout_ms = timeout_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)timeout_ms;
  jo.stall_timeout_ms = o->timeout_s ? jo.total_timeout_ms : 60000;
  jo.stop_term_ms = 500;
  jo.stop_kill_ms = 1000;
  jo.on_end = on_end;
  jo.on_line = on_line;
  jo.user = it;
  int rc = pirec_job_new(r->loop, &jo, &it->job);
  if (rc == 0) {
    it->started = 1;
    rc = pirec_job_queue_add(r->queue, it->job);
  }
  if (rc < 0) {
    it->started = 0;
    it->ended = 1;
    r->ended++;
    item_fail(it, "cannot start '%s': %s", o->self_exe, strerror(-rc));
  }
}

/* Frees the run once the loop has let every handle close. Returns the exit status: 0 when every
 * file is done (even if interrupted after that), else 1. */
static int finish(struct run *r)
{
  size_t ok = 0;
  pirec_job_queue_free(r->queue);
  for (size_t i = 0; i < r->n; i++) {
    ok += r->items[i].ok;
    pirec_job_free(r->items[i].job);
    json_decref(r->items[i].result);
  }
  uv_run(r->loop, UV_RUN_DEFAULT); /* lets the jobs' handles close */
  free(r->items);
  free(r->skipped);
  free(r->sessions);
  return r->n > 0 && ok == r->n ? 0 : 1;
}

int pirec_remux_run(struct uv_loop_s *loop, const char *const *paths, int npaths,
                    const struct pirec_remux_run_options *o, FILE *out, FILE *err)
{
  struct run r;
  int64_t t0 = pirec_clock_mono_ns();

  memset(&r, 0, sizeof r);
  r.o = o;
  r.loop = loop;
  r.out = out;
  r.err = err;
  collect(&r, paths, npaths);
  if (r.n == 0) {
    /* Only skipped videos (strays, outputs of an earlier run): nothing to do is not a failure. */
    if (r.nskipped > 0)
      summary(&r, pirec_clock_mono_ns() - t0);
    int rc = r.nskipped > 0 && !r.live ? 0 : 1;
    finish(&r);
    return rc;
  }
  if (pirec_job_queue_new(loop, o->jobs ? o->jobs : 1, &r.queue) < 0) {
    fprintf(err, "pirec-remux: out of memory\n");
    finish(&r);
    return 1;
  }
  uv_timer_init(loop, &r.bar);
  uv_signal_init(loop, &r.sigint);
  uv_signal_init(loop, &r.sigterm);
  r.sigint.data = r.sigterm.data = &r;
  uv_signal_start(&r.sigint, on_signal, SIGINT);
  uv_signal_start(&r.sigterm, on_signal, SIGTERM);
  if (o->progress)
    uv_timer_start(&r.bar, on_bar, 0, 200);
  for (size_t i = 0; i < r.n; i++)
    if (!refuse_shared_output(&r, i))
      start_item(&r, &r.items[i]);
  if (r.ended == r.n)
    close_handles(&r);
  uv_run(loop, UV_RUN_DEFAULT);
  draw(&r, 1);
  summary(&r, pirec_clock_mono_ns() - t0);
  int rc = finish(&r);
  return r.live ? 1 : rc;
}
