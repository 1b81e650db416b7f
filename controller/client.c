/* `pirec record` (the controller's entry point) and the control-socket clients
 * `pirec status|start|stop|trial|note|reload`. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "controller-int.h"
#include "pirec/controller.h"
#include "pirec/error.h"
#include "pirec/jsonl.h"
#include "pirec/looplag.h"
#include "pirec/spawner.h"

#define EX_USAGE       64
#define EX_UNAVAILABLE 69

/* ---- pirec record ---- */

static void record_usage(FILE *f)
{
  fprintf(f, "usage: pirec record [-c FILE] [--label L] [--wait] [--socket PATH] [--output-dir DIR]\n"
             "  -c, --config FILE   configuration (default: the built-in demo configuration)\n"
             "  -l, --label L       label of the first session's directory\n"
             "  -w, --wait          start idle; record on `pirec start`, SIGUSR1 or a GPIO trigger\n"
             "      --socket PATH   control socket (default: see docs/PROTOCOL.md)\n"
             "      --output-dir D  write sessions under D instead of [session] output_dir\n"
             "      --recorder-dir D  where pirec-notes, pirec-camera, ... are\n"
             "Runs until SIGINT or SIGTERM (every file finalised). SIGUSR1 toggles recording, SIGHUP\n"
             "reloads the config (applies from the next session).\n");
}

/* Start-up problems go to stderr, as a person at the terminal (or journald) expects. */
static void report_stderr(const char *line, void *user)
{
  fprintf(stderr, "%s\n", line);
}

int pirec_controller_record_main(int argc, char **argv)
{
  static const struct option longopts[] = {{"config", required_argument, NULL, 'c'},
                                           {"label", required_argument, NULL, 'l'},
                                           {"wait", no_argument, NULL, 'w'},
                                           {"socket", required_argument, NULL, 's'},
                                           {"output-dir", required_argument, NULL, 'o'},
                                           {"recorder-dir", required_argument, NULL, 'r'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  struct pirec_controller_options o;
  pirec_controller_options_default(&o);
  o.report = report_stderr;
  /* events.csv or session.json past RLIMIT_FSIZE: an EFBIG write error for the session, not death. */
  signal(SIGXFSZ, SIG_IGN);
  int opt, err;
  optind = 1;
  while ((opt = getopt_long(argc, argv, "c:l:wh", longopts, NULL)) != -1) {
    switch (opt) {
    case 'c': o.config_path = optarg; break;
    case 'l': o.label = optarg; break;
    case 'w': o.wait = 1; break;
    case 's': o.socket_path = optarg; break;
    case 'o': o.output_dir = optarg; break;
    case 'r': o.recorder_dir = optarg; break;
    case 'h': record_usage(stdout); return 0;
    default: record_usage(stderr); return EX_USAGE;
    }
  }
  if (optind != argc) {
    record_usage(stderr);
    return EX_USAGE;
  }
  if (o.socket_path && strlen(o.socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
    fprintf(stderr, "pirec: socket path '%s' is too long\n", o.socket_path);
    return EX_USAGE;
  }
  /* Before the loop and any recorder child: every child is then made by the small spawn helper
   * instead of a fork of this process from its loop (pirec/spawner.h). */
  if ((err = pirec_spawner_start()) < 0)
    fprintf(stderr, "pirec: cannot start the spawn helper (children are forked from the loop): %s\n",
            pirec_strerror(err));
  uv_loop_t loop;
  uv_loop_init(&loop);
  struct pirec_controller *c = NULL;
  err = pirec_controller_new(&loop, &o, &c);
  if (err < 0) {
    if (err != -EINVAL)
      fprintf(stderr, "pirec: %s\n", pirec_strerror(err));
    uv_loop_close(&loop);
    return err == -EINVAL ? 65 : 1;
  }
  err = pirec_controller_start(c);
  int rc = err == -EADDRINUSE ? EX_UNAVAILABLE : 1;
  if (err == 0) {
    pirec_looplag_thread_enter(&loop);
    uv_run(&loop, UV_RUN_DEFAULT); /* until SIGINT/SIGTERM have stopped everything */
    pirec_looplag_thread_leave();
    rc = pirec_controller_exit_status(c);
  }
  pirec_controller_close(c, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0)
    fprintf(stderr, "pirec: handles left open at exit\n");
  return rc;
}

/* ---- clients ---- */

/* `pirec start` and `pirec trial`: recording, but without every module (said on stderr). */
#define EXIT_PARTIAL 3

static void control_usage(FILE *f)
{
  fprintf(f, "usage: pirec status [--json]            what the recorder is doing\n"
             "       pirec start [--label L]          start a session (trial 1)\n"
             "       pirec stop                       stop the session; every file final\n"
             "       pirec trial [--label L]          next trial (starts a session if none)\n"
             "       pirec note TEXT...               add a note, timestamped on arrival\n"
             "       pirec reload                     reload the config (applies from the next session)\n"
             "options: --json (print the reply as JSON), --socket PATH, -c FILE, --timeout SECONDS\n"
             "exit status: 0 done, 1 refused or failed (a start without room: free space, needed, rate),\n"
             "             3 recording without some modules or with low space (said why)\n");
}

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_to(const char *path)
{
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

/* The longest reply line read; a status reply of every module fits many times over. */
#define REPLY_MAX_LINE (16u * 1024 * 1024)

static int send_all(int fd, const char *line, size_t len, char *err, size_t errlen)
{
  for (size_t off = 0; off < len;) {
    ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      snprintf(err, errlen, "cannot send the command: %s", strerror(errno));
      return -1;
    }
    off += (size_t)n;
  }
  return 0;
}

/* Reads until the first complete line of r is there, or deadline_ms passes. Returns 1, or 0 with
 * err filled. */
static int read_line(int fd, struct pirec_jsonl_reader *r, int64_t deadline_ms, int timeout_ms,
                     const char **line, size_t *len, char *err, size_t errlen)
{
  for (;;) {
    int got = pirec_jsonl_reader_next(r, line, len);
    if (got != 0) {
      if (got < 0)
        snprintf(err, errlen, "unreadable reply: longer than %u bytes", REPLY_MAX_LINE);
      return got > 0;
    }
    int64_t left = deadline_ms - now_ms();
    if (left <= 0) {
      snprintf(err, errlen, "no reply within %d ms", timeout_ms);
      return 0;
    }
    struct pollfd p = {fd, POLLIN, 0};
    if (poll(&p, 1, (int)left) <= 0)
      continue;
    size_t avail = 0;
    char *space = pirec_jsonl_reader_space(r, &avail);
    ssize_t n = space ? recv(fd, space, avail, 0) : -1;
    if (n <= 0) {
      snprintf(err, errlen, "the controller closed the connection");
      return 0;
    }
    pirec_jsonl_reader_fill(r, (size_t)n);
  }
}

/* Sends one line and reads one reply line, both within timeout_ms. */
static json_t *round_trip(int fd, const char *line, size_t len, int timeout_ms, char *err, size_t errlen)
{
  int64_t deadline = now_ms() + timeout_ms;
  if (send_all(fd, line, len, err, errlen) < 0)
    return NULL;
  struct pirec_jsonl_reader r;
  pirec_jsonl_reader_init(&r, REPLY_MAX_LINE);
  const char *reply;
  size_t rlen;
  json_t *j = NULL;
  if (read_line(fd, &r, deadline, timeout_ms, &reply, &rlen, err, errlen)) {
    json_error_t e;
    j = pirec_jsonl_parse(reply, rlen, 0, &e);
    if (!j)
      snprintf(err, errlen, "unreadable reply: %s", e.text);
  }
  pirec_jsonl_reader_free(&r);
  return j;
}

static const char *str(json_t *o, const char *key)
{
  const char *s = json_string_value(json_object_get(o, key));
  return s ? s : "";
}

/* ", worst stall 12.3 ms in 'start' (4 stalls)" when the loop had one (io/looplag). */
static void print_worst_stall(json_t *lag)
{
  json_t *w = json_object_get(lag, "worst_stall");
  if (json_is_object(w))
    printf(", worst stall %.1f ms in '%s' (%lld stalls)",
           json_integer_value(json_object_get(w, "busy_ns")) / 1e6, str(w, "op"),
           (long long)json_integer_value(json_object_get(lag, "stalls")));
}

static double mib(json_t *o, const char *key)
{
  return (double)json_integer_value(json_object_get(o, key)) / (1024.0 * 1024.0);
}

/* "storage: 1234.5 MiB free of 29000.0 MiB on '/data', 0.512 MiB/s (measured): 40 min left
 * above the 64.0 MiB reserve" (the controller's disk budget, controller/disk.c). */
static void print_storage(json_t *st)
{
  if (!json_is_object(st))
    return;
  if (!json_is_integer(json_object_get(st, "free_bytes"))) {
    printf("storage: free space on '%s' not known yet%s%s\n", str(st, "path"),
           json_is_string(json_object_get(st, "error")) ? ": " : "", str(st, "error"));
  } else {
    long long left_s = (long long)(json_integer_value(json_object_get(st, "time_left_ns")) / 1000000000);
    char left[64];
    if (left_s >= 3600)
      snprintf(left, sizeof left, "%lld h %02lld min", left_s / 3600, left_s % 3600 / 60);
    else
      snprintf(left, sizeof left, "%lld min %02lld s", left_s / 60, left_s % 60);
    printf(
        "storage: %.1f MiB free of %.1f MiB on '%s', %.3f MiB/s (%s): %s left above the %.1f MiB reserve\n",
        mib(st, "free_bytes"), mib(st, "total_bytes"), str(st, "path"), mib(st, "rate_bytes_per_s"),
        str(st, "rate_source"), left, mib(st, "reserve_bytes"));
  }
  if (json_is_string(json_object_get(st, "last_low_space")))
    printf("  %s%s\n", json_is_true(json_object_get(st, "low_space")) ? "ALARM (LED blinking): " : "last: ",
           str(st, "last_low_space"));
}

static void print_status(json_t *r)
{
  const char *state = str(r, "state");
  json_int_t trial = json_integer_value(json_object_get(r, "trial"));
  if (json_is_string(json_object_get(r, "session_dir"))) {
    printf("%s: session %s, trial %lld (%.1f s in trial, %.1f s in session)\n", state, str(r, "session_dir"),
           (long long)trial, json_integer_value(json_object_get(r, "trial_elapsed_ns")) / 1e9,
           json_integer_value(json_object_get(r, "elapsed_ns")) / 1e9);
  } else {
    printf("%s: no session\n", state);
  }
  printf("notes: %lld; config: %s%s\n", (long long)json_integer_value(json_object_get(r, "notes")),
         str(r, "config"), json_is_true(json_object_get(r, "reload_pending")) ? " (reload pending)" : "");
  const char *name;
  json_t *m;
  json_object_foreach(json_object_get(r, "modules"), name, m)
  {
    printf("  %-12s %-9s pid %-7lld crashes %lld", name, str(m, "state"),
           (long long)json_integer_value(json_object_get(m, "pid")),
           (long long)json_integer_value(json_object_get(m, "crashes")));
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(m, "counters"), k, v)
    {
      if (json_is_integer(v))
        printf(" %s=%lld", k, (long long)json_integer_value(v));
      else if (json_is_string(v))
        printf(" %s='%s'", k, json_string_value(v));
    }
    if (json_is_string(json_object_get(m, "last_error")))
      printf(" (last: %s)", str(m, "last_error"));
    print_worst_stall(json_object_get(m, "looplag"));
    printf("\n");
    if (json_is_string(json_object_get(m, "not_recording")))
      printf("  %-12s NOT RECORDING: %s\n", "", str(m, "not_recording"));
  }
  print_storage(json_object_get(r, "storage"));
  json_t *lag = json_object_get(r, "looplag");
  if (lag) {
    printf("loop lag: max %.2f ms, p99 %.2f ms, %lld episodes",
           json_integer_value(json_object_get(lag, "max_ns")) / 1e6,
           json_integer_value(json_object_get(lag, "p99_ns")) / 1e6,
           (long long)json_integer_value(json_object_get(lag, "episodes")));
    print_worst_stall(lag);
    printf("\n");
  }
}

static void print_stopped(json_t *r)
{
  printf("stopped %s (%lld errors)\n", str(r, "session_dir"),
         (long long)json_integer_value(json_object_get(r, "errors")));
  const char *name;
  json_t *m;
  json_object_foreach(json_object_get(r, "modules"), name, m)
  {
    printf("  %-12s crashes %lld", name, (long long)json_integer_value(json_object_get(m, "crashes")));
    const char *k;
    json_t *v;
    json_object_foreach(json_object_get(m, "counters"), k, v)
    {
      if (json_is_integer(v))
        printf(" %s=%lld", k, (long long)json_integer_value(v));
    }
    printf("\n");
  }
}

/* The modules a started trial goes on without, on stderr. Returns 1 when there are any. */
static int warn_not_recording(const char *cmd, json_t *r)
{
  const char *name;
  json_t *why;
  json_object_foreach(json_object_get(r, "not_recording"), name, why)
  {
    fprintf(stderr, "pirec %s: warning: '%s' is not recording: %s\n", cmd, name, json_string_value(why));
  }
  int partial = json_object_size(json_object_get(r, "not_recording")) > 0;
  if (json_is_string(json_object_get(r, "low_space"))) {
    fprintf(stderr, "pirec %s: warning: %s\n", cmd, str(r, "low_space"));
    partial = 1;
  }
  return partial;
}

/* The reply for a person (or as JSON with --json). Returns the exit status: 1 for an error reply,
 * EXIT_PARTIAL for a session or trial started with some modules not recording. */
static int print_reply(const char *cmd, json_t *r, int json_out)
{
  const char *reply = str(r, "reply");
  int rc = strcmp(reply, "error") == 0 ? 1 : 0;
  int partial = !rc && warn_not_recording(cmd, r);
  if (json_out) {
    char *t = json_dumps(r, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", t);
    free(t);
  } else if (rc) {
    fprintf(stderr, "pirec %s: %s\n", cmd, str(r, "message"));
  } else if (strcmp(reply, "status") == 0) {
    print_status(r);
  } else if (strcmp(reply, "started") == 0 || strcmp(reply, "trial") == 0) {
    printf("recording %s, trial %lld\n", str(r, "session_dir"),
           (long long)json_integer_value(json_object_get(r, "trial")));
  } else if (strcmp(reply, "stopped") == 0) {
    print_stopped(r);
  } else if (strcmp(reply, "noted") == 0) {
    printf("note %lld saved\n", (long long)json_integer_value(json_object_get(r, "seq")));
  } else if (strcmp(reply, "reloaded") == 0) {
    printf("config reloaded (%s); applies %s\n",
           json_is_true(json_object_get(r, "changed")) ? "changed" : "unchanged",
           strcmp(str(r, "applies"), "now") == 0 ? "now" : "from the next session");
  } else {
    printf("%s\n", reply);
  }
  return partial ? EXIT_PARTIAL : rc;
}

struct control_args {
  const char *cmd;
  int json_out;
  const char *socket_path, *config_path, *label;
  int timeout_ms;
  int first_arg; /* optind after the options: the note's words */
};

/* Where a note's options end and its text begins: after the leading words that are this client's
 * options (with their values), or after "--". Everything from there on is the text, even a word
 * that looks like an option. */
static int note_options_end(int argc, char **argv)
{
  static const char *const flags[] = {"--json", "-h", "--help", NULL};
  static const char *const with_value[] = {"--socket", "--config", "-c", "--timeout", NULL};
  int i = 1;
  while (i < argc) {
    const char *w = argv[i];
    int known = 0;
    if (strcmp(w, "--") == 0)
      return i + 1;
    for (int k = 0; flags[k] && !known; k++)
      known = strcmp(w, flags[k]) == 0;
    if (known) {
      i++;
      continue;
    }
    for (int k = 0; with_value[k] && !known; k++) {
      size_t n = strlen(with_value[k]);
      if (strcmp(w, with_value[k]) == 0)
        known = 2;
      else if (strncmp(w, with_value[k], n) == 0 && w[n] == '=')
        known = 1;
    }
    if (!known)
      return i;
    i += known;
  }
  return argc < i ? argc : i;
}

/* Returns -1 to go on, or the exit status (help, usage error). */
static int parse_control_args(int argc, char **argv, struct control_args *a)
{
  static const struct option longopts[] = {{"json", no_argument, NULL, 'j'},
                                           {"socket", required_argument, NULL, 's'},
                                           {"config", required_argument, NULL, 'c'},
                                           {"label", required_argument, NULL, 'l'},
                                           {"timeout", required_argument, NULL, 't'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  memset(a, 0, sizeof *a);
  a->cmd = argv[0];
  a->timeout_ms = strcmp(a->cmd, "status") == 0 || strcmp(a->cmd, "note") == 0 ? 5000 : 60000;
  int opt;
  optind = 1;
  /* A note's text may begin with '-' ("-3 dB, left"): only the options before it are parsed, and
   * "+" stops getopt at the first word that is not one. */
  int nopt = strcmp(a->cmd, "note") == 0 ? note_options_end(argc, argv) : argc;
  while ((opt = getopt_long(nopt, argv, "+c:l:h", longopts, NULL)) != -1) {
    switch (opt) {
    case 'j': a->json_out = 1; break;
    case 's': a->socket_path = optarg; break;
    case 'c': a->config_path = optarg; break;
    case 'l': a->label = optarg; break;
    case 't': a->timeout_ms = (int)(atof(optarg) * 1000); break;
    case 'h': control_usage(stdout); return 0;
    default: control_usage(stderr); return EX_USAGE;
    }
  }
  a->first_arg = optind;
  int is_note = strcmp(a->cmd, "note") == 0;
  if (is_note ? optind >= argc : optind != argc) {
    control_usage(stderr);
    return EX_USAGE;
  }
  return -1;
}

/* The note's words joined by spaces, as a JSON string; NULL when not UTF-8. */
static json_t *note_text(int argc, char **argv, int first)
{
  size_t len = 0;
  for (int i = first; i < argc; i++)
    len += strlen(argv[i]) + 1;
  char *text = calloc(1, len + 1);
  if (!text)
    return NULL;
  for (int i = first; i < argc; i++) {
    if (i > first)
      strcat(text, " ");
    strcat(text, argv[i]);
  }
  json_t *t = json_string(text);
  free(text);
  return t;
}

/* The command as one line (malloc'd, *len bytes). NULL when the note is not UTF-8. */
static char *request_line(const struct control_args *a, int argc, char **argv, size_t *len)
{
  /* "source" tells the controller's events.csv control row that a person used the CLI. */
  json_t *req = json_pack("{s:i,s:s,s:s}", "id", 1, "cmd", a->cmd, "source", "cli");
  if (strcmp(a->cmd, "note") == 0) {
    json_t *t = note_text(argc, argv, a->first_arg);
    if (!t) {
      json_decref(req);
      return NULL;
    }
    json_object_set_new(req, "text", t);
  }
  if (a->label)
    json_object_set_new(req, "label", json_string(a->label));
  char *line = pirec_jsonl_encode(req, 0, len);
  json_decref(req);
  return line;
}

/* The given socket, or the first candidate that answers; tried lists what was tried. */
static int connect_controller(const struct control_args *a, char *tried, size_t cap)
{
  if (a->socket_path) {
    int fd = connect_to(a->socket_path);
    snprintf(tried, cap, "'%s': %s", a->socket_path, fd < 0 ? strerror(-fd) : "");
    return fd;
  }
  char paths[5][108];
  int n = pirec__control_socket_candidates(a->config_path, paths, 5);
  int fd = -1;
  for (int i = 0; i < n && fd < 0; i++) {
    fd = connect_to(paths[i]);
    size_t used = strlen(tried);
    snprintf(tried + used, cap - used, "%s'%s'", i ? ", " : "", paths[i]);
  }
  return fd;
}

int pirec_controller_client_main(int argc, char **argv)
{
  struct control_args a;
  int rc = parse_control_args(argc, argv, &a);
  if (rc >= 0)
    return rc;
  size_t len = 0;
  char *line = request_line(&a, argc, argv, &len);
  if (!line) {
    fprintf(stderr, "pirec: the note is not valid UTF-8\n");
    return EX_USAGE;
  }
  char tried[1024] = "";
  int fd = connect_controller(&a, tried, sizeof tried);
  if (fd < 0) {
    fprintf(stderr, "pirec: no pirec controller is running (tried %s)\n", tried);
    free(line);
    return EX_UNAVAILABLE;
  }
  char err[300];
  json_t *r = round_trip(fd, line, len, a.timeout_ms, err, sizeof err);
  close(fd);
  free(line);
  if (!r) {
    fprintf(stderr, "pirec %s: %s\n", a.cmd, err);
    return 1;
  }
  rc = print_reply(a.cmd, r, a.json_out);
  json_decref(r);
  return rc;
}
