/* pirec-remux on each finished session ([session] remux_after), as supervised children in a job
 * queue ([remux] jobs at once), at background priority. */
#include <limits.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "controller-int.h"
#include "pirec/error.h"
#include "pirec/log.h"

/* pirec-remux's --progress-lines move the run's progress; its other lines go to the log, and the
 * last file that FAILED in its summary (else its last line on stderr) is kept to say why it failed. */
static void remux_line(struct pirec_job *job, int fd, const char *line, size_t len)
{
  struct remux_run *run = pirec_job_user(job);
  long long done, total;
  if (fd == 2 && sscanf(line, "progress %lld %lld", &done, &total) == 2) {
    run->done = done;
    run->total = total;
    return;
  }
  const char *failed = fd == 1 ? strstr(line, "FAILED: ") : NULL; /* a file's row in its summary */
  if (failed)
    snprintf(run->last_failed, sizeof run->last_failed, "%s", failed);
  else if (len)
    snprintf(fd == 2 ? run->last_err : run->last_out, sizeof run->last_err, "%s", line);
  pirec_log(PIREC_LOG_INFO, "%s: %s", pirec_job_name(job), line);
}

/* Keeps an ended run's verdict for the status reply, the oldest of REMUX_RECENT overwritten. */
static void remember(struct pirec_controller *c, const struct remux_run *run, int ok, const char *how)
{
  struct remux_recent *e = &c->remux_recent[c->remux_recent_n++ % REMUX_RECENT];
  snprintf(e->dir, sizeof e->dir, "%s", run->dir);
  e->ok = ok;
  e->asked = run->asked;
  e->total = run->total;
  if (ok)
    snprintf(e->message, sizeof e->message, "%s", run->last_out[0] ? run->last_out : "done");
  else
    snprintf(e->message, sizeof e->message, "%s%s%s", how,
             run->last_failed[0] || run->last_err[0] ? ": " : "",
             run->last_failed[0] ? run->last_failed : run->last_err);
}

static void remux_end(struct pirec_job *job, const struct pirec_job_result *r)
{
  struct remux_run *run = pirec_job_user(job);
  struct pirec_controller *c = run->c;
  char how[128];
  int ok = r->reason == PIREC_JOB_END_EXITED && r->status == 0;
  pirec_job_result_str(r, how, sizeof how);
  if (ok)
    pirec_log(PIREC_LOG_INFO, "remux of '%s' done", run->dir);
  else
    pirec_log(PIREC_LOG_WARN, "remux of '%s' failed (%s); run pirec-remux on it by hand", run->dir, how);
  remember(c, run, ok, how);
  for (struct remux_run **pp = &c->remuxes; *pp; pp = &(*pp)->next)
    if (*pp == run) {
      *pp = run->next;
      break;
    }
  pirec_job_free(job);
  free(run->dir);
  free(run);
  c->hooks.settle(c);
}

/* The after-session remux runs while the next session may already record, on a Pi with one slow SD
 * card: like the systemd remux unit (Nice=10, IOSchedulingClass=idle), it gets nice 10 and the idle
 * I/O class, so capture, encoders and sinks win every contention. nice(1) and ionice(1) (coreutils
 * and util-linux, both essential) set them and exec pirec-remux in place: the same pid and process
 * group for the job, the priorities in force before its first instruction and inherited by the
 * children it forks (a priority set from here after the spawn would race them). Without either
 * program the remux runs at normal priority, said once. */
static const char *const background_prefix[] = {
    "/usr/bin/nice", "-n", "10", "/usr/bin/ionice", "-c", "3", "-t"};
#define BACKGROUND_PREFIX_N (sizeof background_prefix / sizeof background_prefix[0])

size_t pirec__remux_background_argv(const char *const *argv, const char **out, size_t cap, int *wrapped)
{
  size_t n = 0, k = 0;
  int wrap = access(background_prefix[0], X_OK) == 0 && access(background_prefix[3], X_OK) == 0;

  *wrapped = wrap;
  while (argv[k])
    k++;
  if (k + BACKGROUND_PREFIX_N + 1 > cap)
    return 0;
  for (size_t i = 0; wrap && i < BACKGROUND_PREFIX_N; i++)
    out[n++] = background_prefix[i];
  for (size_t i = 0; i <= k; i++)
    out[n++] = argv[i];
  return n - 1;
}

/* Starts pirec-remux on dir as a supervised child in the remux queue. Returns 0, or -1 with why in
 * err (then nothing runs). */
static int remux_start(struct pirec_controller *c, const char *dir, int asked, char *err, size_t errlen)
{
  char program[PATH_MAX];
  if (pirec__find_program(c, "pirec-remux", program, sizeof program) < 0) {
    snprintf(err, errlen, "pirec-remux was not found");
    return -1;
  }
  if (!c->remux_queue && pirec_job_queue_new(c->loop, (unsigned)pirec_config_get_int(c->cfg, "remux", "jobs"),
                                             &c->remux_queue) < 0) {
    snprintf(err, errlen, "cannot make the remux queue");
    return -1;
  }
  struct remux_run *run = calloc(1, sizeof(*run));
  if (!run || !(run->dir = strdup(dir))) {
    free(run);
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  run->c = c;
  run->asked = asked;
  const char *argv[] = {program,
                        "--format",
                        pirec_config_get_string(c->cfg, "remux", "format"),
                        "--clock",
                        pirec_config_get_string(c->cfg, "remux", "clock"),
                        "--progress-lines",
                        dir,
                        NULL};
  const char *bg[16];
  int wrapped;
  pirec__remux_background_argv(argv, bg, sizeof bg / sizeof bg[0], &wrapped);
  if (!wrapped && !c->remux_priority_warned++)
    pirec_log(PIREC_LOG_WARN, "%s or %s not found: pirec-remux after a session runs at normal priority",
              background_prefix[0], background_prefix[3]);
  struct pirec_job_options o;
  pirec_job_options_init(&o);
  o.argv = bg;
  o.name = "remux";
  o.stdio[1].kind = PIREC_JOB_STDIO_PIPE;
  o.stdio[2].kind = PIREC_JOB_STDIO_PIPE;
  o.on_line = remux_line;
  o.on_end = remux_end;
  o.user = run;
  int e = pirec_job_new(c->loop, &o, &run->job);
  if (e == 0)
    e = pirec_job_queue_add(c->remux_queue, run->job);
  if (e < 0) {
    snprintf(err, errlen, "cannot start pirec-remux: %s", pirec_strerror(e));
    pirec_job_free(run->job);
    free(run->dir);
    free(run);
    return -1;
  }
  run->next = c->remuxes;
  c->remuxes = run;
  return 0;
}

/* Runs pirec-remux on a finished session as a supervised child (at most [remux] jobs at once); the
 * controller does not wait for it, and a failure leaves the session as it is. */
void pirec__remux_session(struct pirec_controller *c, const char *dir)
{
  if (c->shutting_down || !pirec_config_get_bool(c->cfg, "session", "remux_after"))
    return;
  const char *to = pirec_config_get_string(c->cfg, "storage", "encrypt_to");
  if (to && *to) {
    /* Its key is gone with the session, and remuxed files would have to be encrypted again: the
     * lab machine remuxes it with its secret key (docs/PRIVACY.md). */
    pirec_log(PIREC_LOG_INFO,
              "session '%s' is encrypted: remux it on the lab machine with "
              "pirec-remux --key",
              dir);
    return;
  }
  char err[200];
  if (remux_start(c, dir, 0, err, sizeof err) < 0)
    pirec_log(PIREC_LOG_WARN, "[session] remux_after: cannot remux '%s': %s", dir, err);
}

/* The control socket's `remux` (docs/PROTOCOL.md): a finished session of the output directory, by its
 * directory name. */
int pirec__remux_command(struct pirec_controller *c, const char *name, char *dir, size_t dircap, char *err,
                         size_t errlen)
{
  if (c->shutting_down) {
    snprintf(err, errlen, "shutting down");
    return -1;
  }
  if (!*name || *name == '.' || strchr(name, '/') || strlen(name) > 200) {
    snprintf(err, errlen,
             "'session' must be the name of a session directory (no '/', not starting with '.')");
    return -1;
  }
  snprintf(dir, dircap, "%s/%s", pirec__output_dir(c), name);
  const char *live = c->session ? pirec_session_dir(c->session) : NULL;
  if (live && strcmp(live, dir) == 0) {
    snprintf(err, errlen, "session '%s' is still recording: stop it first", name);
    return -1;
  }
  for (struct remux_run *r = c->remuxes; r; r = r->next)
    if (strcmp(r->dir, dir) == 0) {
      snprintf(err, errlen, "session '%s' is already being remuxed", name);
      return -1;
    }
  return remux_start(c, dir, 1, err, errlen);
}

/* The status reply's "remux": the runs in the queue, then the last few that ended. */
json_t *pirec__remux_status(struct pirec_controller *c)
{
  json_t *a = json_array();
  for (struct remux_run *r = c->remuxes; r; r = r->next) {
    struct pirec_job_stats st;
    pirec_job_stats(r->job, &st);
    const char *base = strrchr(r->dir, '/');
    json_array_append_new(
        a, json_pack("{s:s,s:s,s:s,s:I,s:I,s:b}", "session", base ? base + 1 : r->dir, "session_dir", r->dir,
                     "state", st.state == PIREC_JOB_RUNNING ? "running" : "queued", "done_bytes",
                     (json_int_t)r->done, "total_bytes", (json_int_t)r->total, "asked", r->asked));
  }
  for (size_t k = 0; k < REMUX_RECENT; k++) {
    struct remux_recent *e = &c->remux_recent[(c->remux_recent_n + k) % REMUX_RECENT];
    if (!e->dir[0])
      continue;
    const char *base = strrchr(e->dir, '/');
    json_array_append_new(a, json_pack("{s:s,s:s,s:s,s:I,s:I,s:s,s:b}", "session", base ? base + 1 : e->dir,
                                       "session_dir", e->dir, "state", e->ok ? "done" : "failed",
                                       "done_bytes", (json_int_t)e->total, "total_bytes",
                                       (json_int_t)e->total, "message", e->message, "asked", e->asked));
  }
  return a;
}
