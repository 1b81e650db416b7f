/* pirec-remux on each finished session ([session] remux_after), as supervised children in a job
 * queue ([remux] jobs at once), at background priority. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "controller-int.h"
#include "pirec/error.h"
#include "pirec/log.h"

static void remux_line(struct pirec_job *job, int fd, const char *line, size_t len)
{
  pirec_log(PIREC_LOG_INFO, "%s: %s", pirec_job_name(job), line);
}

static void remux_end(struct pirec_job *job, const struct pirec_job_result *r)
{
  struct remux_run *run = pirec_job_user(job);
  struct pirec_controller *c = run->c;
  if (r->reason == PIREC_JOB_END_EXITED && r->status == 0) {
    pirec_log(PIREC_LOG_INFO, "remux of '%s' done", run->dir);
  } else {
    char how[128];
    pirec_log(PIREC_LOG_WARN, "remux of '%s' failed (%s); run pirec-remux on it by hand", run->dir,
              pirec_job_result_str(r, how, sizeof how));
  }
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
  char program[PATH_MAX];
  if (pirec__find_program(c, "pirec-remux", program, sizeof program) < 0) {
    pirec_log(PIREC_LOG_WARN, "[session] remux_after is set but pirec-remux was not found");
    return;
  }
  if (!c->remux_queue && pirec_job_queue_new(c->loop, (unsigned)pirec_config_get_int(c->cfg, "remux", "jobs"),
                                             &c->remux_queue) < 0)
    return;
  struct remux_run *run = calloc(1, sizeof(*run));
  if (!run)
    return;
  run->c = c;
  run->dir = strdup(dir);
  const char *argv[] = {program,
                        "--format",
                        pirec_config_get_string(c->cfg, "remux", "format"),
                        "--clock",
                        pirec_config_get_string(c->cfg, "remux", "clock"),
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
  int err = pirec_job_new(c->loop, &o, &run->job);
  if (err == 0)
    err = pirec_job_queue_add(c->remux_queue, run->job);
  if (err < 0) {
    pirec_log(PIREC_LOG_WARN, "cannot start pirec-remux on '%s': %s", dir, pirec_strerror(err));
    pirec_job_free(run->job);
    free(run->dir);
    free(run);
    return;
  }
  run->next = c->remuxes;
  c->remuxes = run;
}
