/* A session's own files: directory, events.csv, clocks.csv and session.json. */
#include "pirec/session.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <libavutil/avutil.h>

#include "pirec/clock.h"
#include "pirec/csv.h"
#include "pirec/error.h"
#include "pirec/fs.h"
#include "pirec/log.h"
#include "pirec/sink.h"
#include "pirec/crypt.h"

#define DETAIL_MAX     4000
#define ROW_CAP        (DETAIL_MAX * 2 + 512)
#define MAX_NAME_TRIES 100

static const char *const event_columns[] = {"trial", "mono_ns", "wall_ns", "event", "module", "detail", NULL};
static const char *const clock_columns[] = {"trial",        "mono_ns",        "wall_ns",
                                            "boot_ns",      "uncertainty_ns", "sync_ok",
                                            "max_error_ns", "est_error_ns",   NULL};

struct pirec_session {
  uv_loop_t *loop;
  char *output_dir;
  char label[PIREC_SESSION_LABEL_MAX + 1];
  int64_t clocks_interval_ns;
  unsigned fsync_interval_ms;

  char *dir;
  char *json_path;
  json_t *m; /* the manifest */
  struct pirec_sink *events;
  struct pirec_sink *clocks;
  uv_timer_t timer; /* the clocks.csv tick; initialised in new, closed last (on_timer_closed frees) */
  char row[ROW_CAP];

  int trial; /* running, 0 between trials */
  int last_trial;
  int64_t start_mono_ns;
  int name_try;
  struct pirec_fs_req fs;
  uv_fs_t mkdir_req;

  /* session.json writes */
  struct pirec_fs_req json_req;
  int json_writing;
  int json_dirty;
  int json_error;

  int started;
  int starting; /* start's cb waits for the first session.json */
  int stopping;
  int closing;
  int stop_files;  /* sinks still closing */
  int final_saved; /* the final manifest has been queued */
  int first_error;
  uint64_t event_rows, event_drops, clock_rows;
  struct pirec_crypt_session crypt; /* [storage] encrypt_to */
  unsigned char encrypt_to[PIREC_CRYPT_PUBLIC_BYTES];
  struct pirec_fs_req key_req;
  int key_writing;
  pirec_session_cb cb;
  void *cb_user;
};

int pirec_session_label_sanitise(const char *label, char *out)
{
  out[0] = '\0';
  if (!label)
    return 0;
  size_t len = strlen(label);
  if (strstr(label, "..") || strchr(label, '/'))
    return -EINVAL;
  if (len > PIREC_SESSION_LABEL_MAX)
    return -ENAMETOOLONG;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)label[i];
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
             c == '_' || c == '-';
    out[i] = ok && !(i == 0 && c == '.') ? (char)c : '_';
  }
  out[len] = '\0';
  return (int)len;
}

static json_t *anchor_json(const char *at, const struct pirec_clock_anchor *a)
{
  return json_pack("{s:s,s:I,s:I,s:I,s:I}", "at", at, "mono_ns", (json_int_t)a->mono_ns, "wall_ns",
                   (json_int_t)a->wall_ns, "boot_ns", (json_int_t)a->boot_ns, "uncertainty_ns",
                   (json_int_t)a->uncertainty_ns);
}

static void utc_string(int64_t wall_ns, char *buf, size_t cap, int compact)
{
  time_t t = (time_t)(wall_ns / 1000000000);
  struct tm tm;
  gmtime_r(&t, &tm);
  /* Not strftime: glibc's runs tzset(), which opens and reads /etc/localtime on the loop thread
   * at every session start (the census, tests/census), for a UTC string that needs no zone. */
  snprintf(buf, cap, compact ? "%04d%02d%02dT%02d%02d%02dZ" : "%04d-%02d-%02dT%02d:%02d:%02dZ",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

int pirec_session_new(uv_loop_t *loop, const struct pirec_session_options *opts, struct pirec_session **out)
{
  *out = NULL;
  if (!opts || !opts->output_dir || !*opts->output_dir)
    return -EINVAL;
  struct pirec_session *s = calloc(1, sizeof(*s));
  if (!s)
    return -ENOMEM;
  s->loop = loop;
  s->output_dir = strdup(opts->output_dir);
  if (opts->label && pirec_session_label_sanitise(opts->label, s->label) < 0) {
    free(s->output_dir);
    free(s);
    return -EINVAL;
  }
  s->clocks_interval_ns = opts->clocks_interval_ns > 0 ? opts->clocks_interval_ns : 10000000000LL;
  /* 0 is "not set" in these options (zeroed structs); UINT_MAX asks for no periodic sync, which
   * the sinks spell PIREC_SINK_FSYNC_NEVER. */
  s->fsync_interval_ms = opts->fsync_interval_ms == UINT_MAX ? PIREC_SINK_FSYNC_NEVER
                         : opts->fsync_interval_ms           ? opts->fsync_interval_ms
                                                             : 1000;

  struct utsname u;
  char host[256] = "";
  gethostname(host, sizeof host - 1);
  if (uname(&u) < 0)
    memset(&u, 0, sizeof u);
  json_t *hostj = json_pack("{s:s,s:s,s:s,s:s,s:i}", "hostname", host, "system", u.sysname, "kernel",
                            u.release, "machine", u.machine, "pid", (int)getpid());
  /* The boot, so pirec-remux can tell a controller gone with a power cut from a process that got
   * its pid after the reboot. */
  char boot[64] = "";
  FILE *bf = fopen("/proc/sys/kernel/random/boot_id", "r");
  if (bf) {
    if (fgets(boot, sizeof boot, bf))
      boot[strcspn(boot, "\n")] = '\0';
    fclose(bf);
  }
  if (boot[0])
    json_object_set_new(hostj, "boot_id", json_string(boot));
  if (opts->host_extra)
    json_object_update(hostj, opts->host_extra);
  /* The library versions that shaped the files: FFmpeg's is libavutil's, the one the recorders and
   * pirec-remux load from the same system. */
  json_t *versions = json_pack("{s:s,s:s,s:s,s:s}", "pirec", PIREC_VERSION, "libuv", uv_version_string(),
                               "jansson", JANSSON_VERSION, "ffmpeg", av_version_info());
  if (versions && opts->versions_extra)
    json_object_update(versions, opts->versions_extra);
  s->m = json_pack("{s:s,s:s,s:b,s:s,s:o,s:o,s:O,s:n,s:n,s:[],s:[],s:{},s:[],s:{s:I,s:I},"
                   "s:{s:I,s:I}}",
                   "format", "pirec-session-1", "state", "starting", "final", 0, "label", s->label,
                   "versions", versions, "host", hostj, "config", opts->config ? opts->config : json_null(),
                   "start", "stop", "clock_anchors", "trials", "modules", "errors", "events", "rows",
                   (json_int_t)0, "dropped", (json_int_t)0, "clocks", "rows", (json_int_t)0, "interval_ns",
                   (json_int_t)s->clocks_interval_ns);
  if (!s->output_dir || !s->m) {
    json_decref(s->m);
    free(s->output_dir);
    free(s);
    return -ENOMEM;
  }
  if (opts->key && opts->encrypt_to) {
    memcpy(s->encrypt_to, opts->encrypt_to, sizeof s->encrypt_to);
    if (pirec_crypt_session_set(&s->crypt, opts->key, "") < 0) {
      json_decref(s->m);
      free(s->output_dir);
      free(s);
      return -ENOMEM;
    }
  }
  uv_timer_init(loop, &s->timer);
  s->timer.data = s;
  *out = s;
  return 0;
}

const char *pirec_session_dir(const struct pirec_session *s)
{
  return s->dir;
}
int pirec_session_trial(const struct pirec_session *s)
{
  return s->trial;
}
int pirec_session_last_trial(const struct pirec_session *s)
{
  return s->last_trial;
}
int pirec_session_takes_rows(const struct pirec_session *s)
{
  return s->events && !s->stopping && !s->final_saved;
}
int64_t pirec_session_start_mono_ns(const struct pirec_session *s)
{
  return s->start_mono_ns;
}
const json_t *pirec_session_manifest(const struct pirec_session *s)
{
  return s->m;
}
size_t pirec_session_error_count(const struct pirec_session *s)
{
  return json_array_size(json_object_get(s->m, "errors"));
}

static void note_error(struct pirec_session *s, int err)
{
  if (err < 0 && !s->first_error)
    s->first_error = err;
}

/* ---- session.json ---- */

static void maybe_finish_stop(struct pirec_session *s);
static void maybe_finish_start(struct pirec_session *s);

static void update_counts(struct pirec_session *s)
{
  json_t *ev = json_object_get(s->m, "events");
  json_object_set_new(ev, "rows", json_integer((json_int_t)s->event_rows));
  json_object_set_new(ev, "dropped", json_integer((json_int_t)s->event_drops));
  json_object_set_new(json_object_get(s->m, "clocks"), "rows", json_integer((json_int_t)s->clock_rows));
}

static void on_json_written(struct pirec_fs_req *req);

static void write_json(struct pirec_session *s)
{
  update_counts(s);
  char *text = json_dumps(s->m, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (!text) {
    note_error(s, -ENOMEM);
    return;
  }
  size_t len = strlen(text);
  text[len] = '\0';
  /* json_dumps leaves no trailing newline; files read better with one. */
  char *withnl = realloc(text, len + 2);
  if (withnl) {
    text = withnl;
    text[len++] = '\n';
  }
  s->json_req.data = s;
  int err = pirec_fs_write_atomic(s->loop, &s->json_req, s->json_path, text, len, 0644, on_json_written);
  free(text);
  if (err < 0) {
    pirec_log(PIREC_LOG_ERROR, "session: cannot write '%s': %s", s->json_path, pirec_strerror(err));
    note_error(s, err);
    return;
  }
  s->json_writing = 1;
}

static void on_json_written(struct pirec_fs_req *req)
{
  struct pirec_session *s = req->data;
  s->json_writing = 0;
  if (req->result < 0) {
    if (s->json_error != req->result)
      pirec_log(PIREC_LOG_ERROR, "session: %s", req->message ? req->message : pirec_strerror(req->result));
    s->json_error = req->result;
    note_error(s, req->result);
  }
  pirec_fs_req_cleanup(req);
  if (s->json_dirty) {
    s->json_dirty = 0;
    write_json(s);
  }
  maybe_finish_start(s);
  maybe_finish_stop(s);
}

void pirec_session_save(struct pirec_session *s)
{
  if (!s->dir)
    return;
  if (s->json_writing) {
    s->json_dirty = 1;
    return;
  }
  write_json(s);
}

/* ---- rows ---- */

int pirec_session_event_at(struct pirec_session *s, int64_t mono_ns, int64_t wall_ns, const char *event,
                           const char *module, const char *detail)
{
  /* Once stop has begun the sinks are closing and take no more rows. */
  if (!s->events || s->stopping || s->final_saved) {
    s->event_drops++;
    return -ENOTCONN;
  }
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, s->row, sizeof s->row);
  pirec_csv_row_lead(&row, s->trial, mono_ns, wall_ns);
  pirec_csv_row_str(&row, event);
  pirec_csv_row_str(&row, module ? module : "");
  size_t dlen = detail ? strlen(detail) : 0;
  pirec_csv_row_text(&row, detail ? detail : "", dlen > DETAIL_MAX ? DETAIL_MAX : dlen);
  pirec_csv_row_end(&row);
  int err = pirec_csv_push(s->events, &row);
  if (err < 0)
    s->event_drops++;
  else
    s->event_rows++;
  return err;
}

int pirec_session_event(struct pirec_session *s, const char *event, const char *module, const char *detail)
{
  return pirec_session_event_at(s, pirec_clock_mono_ns(), pirec_clock_wall_ns(), event, module, detail);
}

static void clock_row(struct pirec_session *s, struct pirec_clock_anchor *a)
{
  pirec_clock_anchor_take(a);
  if (!s->clocks || s->stopping || s->final_saved)
    return;
  char buf[256];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, buf, sizeof buf);
  pirec_csv_row_lead(&row, s->trial, a->mono_ns, a->wall_ns);
  pirec_csv_row_i64(&row, a->boot_ns);
  pirec_csv_row_i64(&row, a->uncertainty_ns);
  /* The kernel's own view of how far wall_ns may be from true time: what lines up recordings of
   * different machines (docs/FLEET.md). Empty when adjtimex cannot be read. */
  struct pirec_clock_sync cs;
  if (pirec_clock_sync_read(&cs) == 0) {
    pirec_csv_row_i64(&row, cs.synchronised);
    pirec_csv_row_i64(&row, cs.max_error_ns);
    pirec_csv_row_i64(&row, cs.est_error_ns);
  } else {
    for (int i = 0; i < 3; i++)
      pirec_csv_row_empty(&row);
  }
  pirec_csv_row_end(&row);
  if (pirec_csv_push(s->clocks, &row) == 0)
    s->clock_rows++;
}

static void on_clock_tick(uv_timer_t *t)
{
  struct pirec_session *s = t->data;
  struct pirec_clock_anchor a;
  clock_row(s, &a);
}

/* ---- start ---- */

static void on_sink_error(struct pirec_sink *sink, int err, void *user)
{
  struct pirec_session *s = user;
  char msg[512];
  snprintf(msg, sizeof msg, "cannot write '%s': %s", pirec_sink_path(sink), pirec_strerror(err));
  pirec_session_error(s, NULL, msg);
  note_error(s, err);
}

static struct pirec_sink *open_csv(struct pirec_session *s, const char *name, const char *const *columns)
{
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", s->dir, name);
  struct pirec_sink_options so;
  pirec_sink_options_default(&so);
  so.ring_bytes = 1024 * 1024;
  so.fsync_interval_ms = s->fsync_interval_ms;
  struct pirec_sink *sink = NULL;
  struct pirec_sink_transform tf;
  int err = pirec_crypt_session_sink(&s->crypt, path, &so, &tf);
  if (err == 0)
    err = pirec_sink_new(s->loop, path, &so, on_sink_error, s, &sink);
  if (err < 0) {
    char msg[4200];
    snprintf(msg, sizeof msg, "cannot create '%s': %s", path, pirec_strerror(err));
    pirec_session_error(s, NULL, msg);
    note_error(s, err);
    return NULL;
  }
  int len = pirec_csv_header(s->row, sizeof s->row, columns);
  if (len > 0)
    pirec_sink_push(sink, s->row, (size_t)len);
  return sink;
}

static void maybe_finish_start(struct pirec_session *s)
{
  if (!s->starting || s->json_writing || s->key_writing)
    return;
  s->starting = 0;
  if (s->cb) {
    pirec_session_cb cb = s->cb;
    s->cb = NULL;
    cb(s, s->json_error, s->cb_user);
  }
}

static int try_mkdir(struct pirec_session *s);

static void on_key_written(struct pirec_fs_req *req)
{
  struct pirec_session *s = req->data;
  s->key_writing = 0;
  if (req->result < 0) {
    pirec_session_error(s, NULL, req->message ? req->message : pirec_strerror(req->result));
    note_error(s, req->result);
    if (!s->json_error)
      s->json_error = req->result; /* the session could never be read: the start fails */
  }
  pirec_fs_req_cleanup(req);
  maybe_finish_start(s);
}

/* [storage] encrypt_to: session.key (the session key sealed to the lab's public key), the
 * manifest's clear "encryption" fields, and the directory the sinks name their files against. */
static void write_key_file(struct pirec_session *s)
{
  unsigned char buf[PIREC_CRYPT_KEY_FILE_BYTES];
  char path[4096], pub[PIREC_CRYPT_KEY_TEXT], id[2 * PIREC_CRYPT_ID_BYTES + 1];
  free(s->crypt.dir);
  s->crypt.dir = strdup(s->dir);
  snprintf(path, sizeof path, "%s/%s", s->dir, PIREC_CRYPT_KEY_FILE);
  pirec_crypt_base64(s->encrypt_to, sizeof s->encrypt_to, pub, sizeof pub);
  for (int i = 0; i < PIREC_CRYPT_ID_BYTES; i++)
    snprintf(id + 2 * i, 3, "%02x", pirec_crypt_key_id(s->crypt.key)[i]);
  json_object_set_new(s->m, "encryption",
                      json_pack("{s:s,s:s,s:s,s:s}", "files", "crypto_secretstream_xchacha20poly1305",
                                "key_file", PIREC_CRYPT_KEY_FILE, "key_id", id, "sealed_to", pub));
  int err = pirec_crypt_key_file(s->crypt.key, s->encrypt_to, buf);
  s->key_req.data = s;
  if (err == 0)
    err = pirec_fs_write_atomic(s->loop, &s->key_req, path, buf, sizeof buf, 0644, on_key_written);
  if (err == 0) {
    s->key_writing = 1;
    return;
  }
  pirec_fs_req_cleanup(&s->key_req);
  pirec_session_error(s, NULL, "cannot write session.key");
  note_error(s, err);
  s->json_error = err;
}

static void on_mkdir(uv_fs_t *req)
{
  struct pirec_session *s = req->data;
  int result = (int)req->result;
  uv_fs_req_cleanup(req);
  if (result == UV_EEXIST && s->name_try < MAX_NAME_TRIES) {
    s->name_try++;
    result = try_mkdir(s);
    if (result == 0)
      return;
  }
  if (result < 0) {
    pirec_log(PIREC_LOG_ERROR, "session: cannot create '%s': %s", s->dir, pirec_strerror(result));
    s->starting = 0;
    pirec_session_cb cb = s->cb;
    s->cb = NULL;
    cb(s, result, s->cb_user);
    return;
  }
  s->started = 1;
  size_t n = strlen(s->dir) + sizeof("/session.json");
  s->json_path = malloc(n);
  snprintf(s->json_path, n, "%s/session.json", s->dir);
  json_object_set_new(s->m, "dir", json_string(s->dir));
  json_object_set_new(s->m, "name", json_string(strrchr(s->dir, '/') + 1));
  json_object_set_new(s->m, "state", json_string("recording"));
  if (s->crypt.key)
    write_key_file(s);
  s->events = open_csv(s, "events.csv", event_columns);
  s->clocks = open_csv(s, "clocks.csv", clock_columns);

  struct pirec_clock_anchor a;
  clock_row(s, &a);
  s->start_mono_ns = a.mono_ns;
  char utc[64];
  utc_string(a.wall_ns, utc, sizeof utc, 0);
  json_t *start = anchor_json("session_start", &a);
  json_object_set_new(start, "utc", json_string(utc));
  json_array_append_new(json_object_get(s->m, "clock_anchors"), anchor_json("session_start", &a));
  json_object_set_new(s->m, "start", start);
  pirec_session_event_at(s, a.mono_ns, a.wall_ns, "session_start", NULL, s->dir);

  uint64_t ms = (uint64_t)(s->clocks_interval_ns / 1000000);
  uv_timer_start(&s->timer, on_clock_tick, ms, ms);
  pirec_session_save(s);
  if (!s->json_writing)
    maybe_finish_start(s);
}

static int try_mkdir(struct pirec_session *s)
{
  char stamp[32];
  utc_string(pirec_clock_wall_ns(), stamp, sizeof stamp, 1);
  free(s->dir);
  char suffix[16] = "";
  if (s->name_try > 0)
    snprintf(suffix, sizeof suffix, "-%d", s->name_try + 1);
  size_t n = strlen(s->output_dir) + strlen(stamp) + strlen(s->label) + sizeof suffix + 4;
  s->dir = malloc(n);
  if (!s->dir)
    return -ENOMEM;
  snprintf(s->dir, n, "%s/%s%s%s%s", s->output_dir, stamp, *s->label ? "_" : "", s->label, suffix);
  s->mkdir_req.data = s;
  return uv_fs_mkdir(s->loop, &s->mkdir_req, s->dir, 0755, on_mkdir);
}

static void on_parent(struct pirec_fs_req *req)
{
  struct pirec_session *s = req->data;
  int result = req->result;
  if (result < 0) {
    pirec_log(PIREC_LOG_ERROR, "session: %s", req->message ? req->message : pirec_strerror(result));
  }
  pirec_fs_req_cleanup(req);
  if (result == 0)
    result = try_mkdir(s);
  if (result < 0) {
    s->starting = 0;
    pirec_session_cb cb = s->cb;
    s->cb = NULL;
    cb(s, result, s->cb_user);
  }
}

int pirec_session_start(struct pirec_session *s, pirec_session_cb cb, void *user)
{
  if (s->started || s->starting)
    return -EALREADY;
  if (!cb)
    return -EINVAL;
  s->cb = cb;
  s->cb_user = user;
  s->fs.data = s;
  int err = pirec_fs_mkdir_p(s->loop, &s->fs, s->output_dir, 0755, on_parent);
  if (err < 0) {
    pirec_fs_req_cleanup(&s->fs);
    s->cb = NULL;
    return err;
  }
  s->starting = 1;
  return 0;
}

/* ---- trials, modules, errors ---- */

int pirec_session_trial_begin(struct pirec_session *s, int trial, const char *label)
{
  if (s->trial)
    return -EBUSY;
  if (trial <= s->last_trial)
    return -EINVAL;
  char clean[PIREC_SESSION_LABEL_MAX + 1];
  if (pirec_session_label_sanitise(label, clean) < 0)
    return -EINVAL;
  s->trial = trial;
  s->last_trial = trial;
  char at[64];
  snprintf(at, sizeof at, "trial_start %d", trial);
  struct pirec_clock_anchor a;
  clock_row(s, &a);
  json_array_append_new(json_object_get(s->m, "clock_anchors"), anchor_json(at, &a));
  json_array_append_new(json_object_get(s->m, "trials"),
                        json_pack("{s:i,s:s,s:I,s:I,s:n,s:n}", "trial", trial, "label", clean,
                                  "start_mono_ns", (json_int_t)a.mono_ns, "start_wall_ns",
                                  (json_int_t)a.wall_ns, "stop_mono_ns", "stop_wall_ns"));
  json_object_set_new(s->m, "trial", json_integer(trial));
  pirec_session_event_at(s, a.mono_ns, a.wall_ns, "trial_start", NULL, clean);
  pirec_session_save(s);
  return 0;
}

int pirec_session_trial_end(struct pirec_session *s)
{
  if (!s->trial)
    return -ENOENT;
  int64_t mono = pirec_clock_mono_ns(), wall = pirec_clock_wall_ns();
  pirec_session_event_at(s, mono, wall, "trial_stop", NULL, NULL);
  json_t *trials = json_object_get(s->m, "trials");
  json_t *t = json_array_get(trials, json_array_size(trials) - 1);
  json_object_set_new(t, "stop_mono_ns", json_integer(mono));
  json_object_set_new(t, "stop_wall_ns", json_integer(wall));
  json_object_set_new(t, "duration_ns",
                      json_integer(mono - json_integer_value(json_object_get(t, "start_mono_ns"))));
  s->trial = 0;
  json_object_set_new(s->m, "trial", json_integer(0));
  pirec_session_save(s);
  return 0;
}

static json_t *module_obj(struct pirec_session *s, const char *module)
{
  json_t *mods = json_object_get(s->m, "modules");
  json_t *m = json_object_get(mods, module);
  if (!m) {
    m = json_pack("{s:[],s:[],s:i}", "crashes", "gaps", "restarts", 0);
    json_object_set_new(mods, module, m);
  }
  return m;
}

void pirec_session_module_set(struct pirec_session *s, const char *module, const char *key, json_t *value)
{
  json_object_set_new(module_obj(s, module), key, value ? value : json_null());
}

void pirec_session_set(struct pirec_session *s, const char *key, json_t *value)
{
  json_object_set_new(s->m, key, value ? value : json_null());
  pirec_session_save(s);
}

int pirec_session_module_crash(struct pirec_session *s, const char *module, int exit_status, int term_signal,
                               int64_t mono_ns)
{
  json_t *m = module_obj(s, module);
  char detail[64];
  if (term_signal)
    snprintf(detail, sizeof detail, "signal %d (%s)", term_signal, strsignal(term_signal));
  else
    snprintf(detail, sizeof detail, "exit %d", exit_status);
  json_array_append_new(json_object_get(m, "crashes"),
                        json_pack("{s:I,s:I,s:i,s:i,s:i,s:s}", "mono_ns", (json_int_t)mono_ns, "wall_ns",
                                  (json_int_t)pirec_clock_wall_ns(), "trial", s->trial, "exit_status",
                                  exit_status, "signal", term_signal, "detail", detail));
  pirec_session_event(s, "module_crash", module, detail);
  pirec_session_save(s);
  return 0;
}

int pirec_session_module_restart(struct pirec_session *s, const char *module, int64_t gap_start_mono_ns)
{
  json_t *m = module_obj(s, module);
  int64_t now = pirec_clock_mono_ns();
  json_int_t restarts = json_integer_value(json_object_get(m, "restarts")) + 1;
  json_object_set_new(m, "restarts", json_integer(restarts));
  json_array_append_new(json_object_get(m, "gaps"),
                        json_pack("{s:i,s:I,s:I,s:I}", "trial", s->trial, "from_mono_ns",
                                  (json_int_t)gap_start_mono_ns, "to_mono_ns", (json_int_t)now, "duration_ns",
                                  (json_int_t)(now - gap_start_mono_ns)));
  char detail[96];
  snprintf(detail, sizeof detail, "gap %lld ns", (long long)(now - gap_start_mono_ns));
  pirec_session_event_at(s, now, pirec_clock_wall_ns(), "module_restart", module, detail);
  pirec_session_save(s);
  return 0;
}

int pirec_session_error(struct pirec_session *s, const char *module, const char *message)
{
  int64_t mono = pirec_clock_mono_ns(), wall = pirec_clock_wall_ns();
  json_t *e = json_pack("{s:I,s:I,s:i,s:s?,s:s}", "mono_ns", (json_int_t)mono, "wall_ns", (json_int_t)wall,
                        "trial", s->trial, "module", module, "message", message);
  if (!e)
    e = json_pack("{s:s}", "message", "error message not UTF-8");
  json_array_append_new(json_object_get(s->m, "errors"), e);
  pirec_session_event_at(s, mono, wall, "error", module, message);
  pirec_session_save(s);
  return 0;
}

/* ---- stop ---- */

/* The timer is the session's last handle: once it is closed, cb, then the memory goes. */
static void on_timer_closed(uv_handle_t *h)
{
  struct pirec_session *s = h->data;
  pirec_session_cb cb = s->cb;
  s->cb = NULL;
  if (cb)
    cb(s, s->first_error, s->cb_user);
  json_decref(s->m);
  pirec_crypt_session_clear(&s->crypt);
  free(s->output_dir);
  free(s->dir);
  free(s->json_path);
  free(s);
}

static void maybe_finish_stop(struct pirec_session *s)
{
  if (!s->stopping || s->stop_files > 0)
    return;
  if (!s->final_saved) {
    s->final_saved = 1;
    struct pirec_clock_anchor a;
    pirec_clock_anchor_take(&a);
    char utc[64];
    utc_string(a.wall_ns, utc, sizeof utc, 0);
    json_t *stop = anchor_json("session_stop", &a);
    json_object_set_new(stop, "utc", json_string(utc));
    json_object_set_new(stop, "duration_ns", json_integer(a.mono_ns - s->start_mono_ns));
    json_object_set_new(s->m, "stop", stop);
    json_array_append_new(json_object_get(s->m, "clock_anchors"), anchor_json("session_stop", &a));
    json_object_set_new(s->m, "state", json_string("stopped"));
    json_object_set_new(s->m, "final", json_true());
    pirec_session_save(s);
  }
  if (s->json_writing || s->json_dirty)
    return;
  s->stopping = 0;
  uv_close((uv_handle_t *)&s->timer, on_timer_closed);
}

static void on_csv_closed(struct pirec_sink *sink, const struct pirec_sink_counters *final, void *user)
{
  struct pirec_session *s = user;
  if (final->error)
    note_error(s, final->error);
  if (sink == s->events)
    s->events = NULL;
  if (sink == s->clocks)
    s->clocks = NULL;
  s->stop_files--;
  maybe_finish_stop(s);
}

/* Ends a started session's files: a running trial, the last rows, the sinks closed and synced,
 * then the final session.json (maybe_finish_stop). */
static void stop_files(struct pirec_session *s)
{
  if (s->trial)
    pirec_session_trial_end(s);
  struct pirec_clock_anchor a;
  clock_row(s, &a);
  pirec_session_event_at(s, a.mono_ns, a.wall_ns, "session_stop", NULL, NULL);
  s->stopping = 1;
  /* Counted before any close starts: a close callback may run only on a later loop turn, but the
   * count must not reach zero early. */
  s->stop_files = (s->events != NULL) + (s->clocks != NULL);
  /* The final counts are known now: nothing is pushed after this point. */
  update_counts(s);
  uv_timer_stop(&s->timer);
  if (s->events)
    pirec_sink_close(s->events, on_csv_closed, s);
  if (s->clocks)
    pirec_sink_close(s->clocks, on_csv_closed, s);
  if (s->stop_files == 0)
    maybe_finish_stop(s);
}

int pirec_session_close(struct pirec_session *s, pirec_session_cb cb, void *user)
{
  if (!s)
    return 0;
  if (s->closing)
    return -EALREADY;
  if (s->starting)
    return -EBUSY;
  s->closing = 1;
  s->cb = cb;
  s->cb_user = user;
  if (s->started)
    stop_files(s);
  else
    uv_close((uv_handle_t *)&s->timer, on_timer_closed);
  return 0;
}
