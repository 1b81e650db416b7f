/* pirec-notes: operator notes into notes.csv, standalone or under the pirec controller. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pirec/clock.h"
#include "pirec/config.h"
#include "pirec/container_of.h"
#include "pirec/error.h"
#include "pirec/log.h"
#include "pirec/looplag.h"
#include "pirec/notes.h"
#include "pirec/recorder.h"
#include "pirec/sink.h"
#include "run.h"

struct app {
  uv_loop_t *loop;
  struct pirec_notes *notes;
  struct pirec_recorder *rec;
  struct pirec_recorder_req *quit_req;
  /* standalone */
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tty_t tty;
  } in;
  int in_open;
  int is_tty;
  struct run run; /* SIGINT, SIGTERM */
  /* Counters when the current session began: status reports them per session. */
  struct pirec_notes_counters base;
  char line[65536 + 2];
  size_t line_len;
  int discarding;
  int64_t start_mono;
  int stopping;
  int exit_code;
};

static void usage(FILE *f)
{
  fprintf(f, "usage: pirec-notes DIR            take notes typed on stdin (one per line) into DIR/notes.csv\n"
             "       pirec-notes --protocol [--name NAME] [-c FILE]\n"
             "                                  run under the pirec controller (docs/PROTOCOL.md)\n"
             "       pirec-notes -h|--help|--version\n"
             "options:\n"
             "  -c, --config FILE  read [notes] from a pirec config file\n");
}

/* ---- under the controller ---- */

static void on_opened(struct pirec_notes *notes, int status, void *user)
{
  struct pirec_recorder_req *req = user;
  pirec_recorder_finish(req, status, NULL);
}

static void m_start(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  if (req->new_session)
    pirec_notes_counters(a->notes, &a->base);
  int err = pirec_notes_set_key(a->notes, pirec_recorder_key(rec), req->session_dir);
  if (err == 0)
    err = pirec_notes_open(a->notes, req->session_dir, req->trial, on_opened, req);
  if (err < 0)
    pirec_recorder_finish(req, err, NULL);
}

static void on_closed_stop(struct pirec_notes *notes, int status, void *user)
{
  pirec_recorder_finish(user, status, NULL);
}

static void m_stop(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  if (!req->handover) /* the session ends: its key is wiped (the open file's sink holds its own) */
    pirec_notes_set_key(a->notes, NULL, NULL);
  int err = pirec_notes_close_file(a->notes, on_closed_stop, req);
  if (err < 0)
    pirec_recorder_finish(req, err, NULL);
}

static void m_status(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  struct pirec_notes_counters c;
  pirec_notes_counters(a->notes, &c);
  pirec_recorder_counters_add(req, "notes", c.notes - a->base.notes);
  pirec_recorder_counters_add(req, "drops", c.drops - a->base.drops);
  pirec_recorder_counters_add(req, "bytes_written", c.bytes_written - a->base.bytes_written);
  if (c.error)
    json_object_set_new(req->counters, "error", json_string(pirec_strerror(c.error)));
  pirec_recorder_finish(req, 0, NULL);
}

static void m_note(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  int err = pirec_notes_add(a->notes, req->mono_ns, req->wall_ns, req->text, req->text_len);
  const char *msg = NULL;
  if (err == -ENOTCONN)
    msg = "not recording";
  else if (err == -EMSGSIZE)
    msg = "note too long";
  else if (err == -ENOBUFS)
    msg = "note dropped: notes buffer full";
  pirec_recorder_finish(req, err, msg);
}

static void on_rec_closed(struct pirec_recorder *rec, void *user)
{
  struct app *a = user;
  a->rec = NULL;
}

static void finish_quit(struct app *a, int status)
{
  pirec_recorder_finish(a->quit_req, status, NULL);
  a->quit_req = NULL;
  pirec_recorder_close(a->rec, on_rec_closed);
}

static void on_closed_quit(struct pirec_notes *notes, int status, void *user)
{
  finish_quit(user, status);
}

static void m_quit(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  a->quit_req = req;
  struct pirec_notes_counters c;
  pirec_notes_counters(a->notes, &c);
  if (c.open && pirec_notes_close_file(a->notes, on_closed_quit, a) == 0)
    return;
  finish_quit(a, 0);
}

static int run_protocol(struct app *a, const char *name)
{
  static const struct pirec_recorder_ops ops = {m_start, m_stop, m_status, m_note, m_quit, NULL, NULL};
  int err = run_serve(a->loop, name, &ops, a, "pirec-notes", on_rec_closed, &a->rec);
  pirec_looplag_thread_enter(a->loop);
  uv_run(a->loop, UV_RUN_DEFAULT);
  pirec_looplag_thread_leave();
  return err < 0 ? 1 : 0;
}

/* ---- standalone ---- */

static void print_elapsed(FILE *f, int64_t ns)
{
  int64_t ms = ns / 1000000;
  fprintf(f, "%02lld:%02lld:%02lld.%03lld", (long long)(ms / 3600000), (long long)(ms / 60000 % 60),
          (long long)(ms / 1000 % 60), (long long)(ms % 1000));
}

static void prompt(struct app *a)
{
  if (!a->is_tty)
    return;
  fputc('[', stderr);
  print_elapsed(stderr, pirec_clock_mono_ns() - a->start_mono);
  fputs("] note> ", stderr);
  fflush(stderr);
}

static void on_any_closed(uv_handle_t *h)
{
}

static void on_file_closed(struct pirec_notes *notes, int status, void *user)
{
  struct app *a = user;
  struct pirec_notes_counters c;
  pirec_notes_counters(notes, &c);
  fprintf(stderr, "pirec-notes: %llu notes, %llu dropped, %llu bytes written%s%s\n",
          (unsigned long long)c.notes, (unsigned long long)c.drops, (unsigned long long)c.bytes_written,
          status < 0 ? "; error: " : "", status < 0 ? pirec_strerror(status) : "");
  if (status < 0 || c.drops)
    a->exit_code = 1;
}

static void standalone_stop(struct app *a)
{
  if (a->stopping)
    return;
  a->stopping = 1;
  if (a->is_tty)
    fputc('\n', stderr);
  if (a->in_open) {
    uv_read_stop(&a->in.stream);
    uv_close(&a->in.handle, on_any_closed);
    a->in_open = 0;
  }
  run_unwatch(&a->run);
  if (pirec_notes_close_file(a->notes, on_file_closed, a) < 0)
    a->exit_code = 1;
}

static void on_stop(struct run *run)
{
  standalone_stop(container_of(run, struct app, run));
}

static void take_line(struct app *a, const char *text, size_t len)
{
  int64_t mono = pirec_clock_mono_ns(), wall = pirec_clock_wall_ns();
  if (len && text[len - 1] == '\r')
    len--;
  if (len == 0) {
    prompt(a);
    return;
  }
  int err = pirec_notes_add(a->notes, mono, wall, text, len);
  if (a->is_tty || err < 0) {
    fputs(err < 0 ? "  not saved: " : "  saved at +", stderr);
    if (err < 0)
      fputs(pirec_strerror(err), stderr);
    else
      print_elapsed(stderr, mono - a->start_mono);
    fputc('\n', stderr);
  }
  prompt(a);
}

static void on_alloc(uv_handle_t *h, size_t s, uv_buf_t *b)
{
  static char buf[65536];
  *b = uv_buf_init(buf, sizeof buf);
}

static void on_stdin(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
  struct app *a = s->data;
  if (n < 0) {
    if (a->line_len && !a->discarding)
      take_line(a, a->line, a->line_len);
    a->line_len = 0;
    standalone_stop(a);
    return;
  }
  for (ssize_t i = 0; i < n; i++) {
    char ch = b->base[i];
    if (ch == '\n') {
      if (!a->discarding)
        take_line(a, a->line, a->line_len);
      a->discarding = 0;
      a->line_len = 0;
    } else if (a->discarding) {
      continue;
    } else if (a->line_len >= sizeof a->line - 2) {
      fprintf(stderr, "  not saved: line longer than %zu bytes\n", sizeof a->line - 2);
      a->discarding = 1;
      a->line_len = 0;
    } else {
      a->line[a->line_len++] = ch;
    }
  }
}

static void on_standalone_open(struct pirec_notes *notes, int status, void *user)
{
  struct app *a = user;
  if (status < 0) {
    fprintf(stderr, "pirec-notes: %s\n", pirec_strerror(status));
    a->exit_code = 1;
    run_unwatch(&a->run);
    return;
  }
  int fd = 0;
  a->is_tty = uv_guess_handle(fd) == UV_TTY;
  int err = a->is_tty ? uv_tty_init(a->loop, &a->in.tty, fd, 1) : uv_pipe_init(a->loop, &a->in.pipe, 0);
  if (err == 0 && !a->is_tty)
    err = uv_pipe_open(&a->in.pipe, fd);
  if (err == 0) {
    a->in_open = 1;
    a->in.handle.data = a;
    err = uv_read_start(&a->in.stream, on_alloc, on_stdin);
  }
  if (err < 0) {
    fprintf(stderr, "pirec-notes: cannot read stdin: %s\n", uv_strerror(err));
    a->exit_code = 1;
    standalone_stop(a);
    return;
  }
  if (a->is_tty)
    fprintf(stderr, "pirec-notes: one note per line; Ctrl-D or Ctrl-C ends. Elapsed time is shown.\n");
  prompt(a);
}

static int run_standalone(struct app *a, const char *dir)
{
  if (mkdir(dir, 0755) < 0 && errno != EEXIST) {
    fprintf(stderr, "pirec-notes: cannot create '%s': %s\n", dir, strerror(errno));
    return 1;
  }
  a->start_mono = pirec_clock_mono_ns();
  run_watch(&a->run, a->loop, 0, on_stop);
  /* Standalone notes belong to no trial: trial 0. */
  int err = pirec_notes_open(a->notes, dir, 0, on_standalone_open, a);
  if (err < 0) {
    fprintf(stderr, "pirec-notes: cannot open '%s/notes.csv': %s\n", dir, pirec_strerror(err));
    run_unwatch(&a->run);
    uv_run(a->loop, UV_RUN_DEFAULT);
    return 1;
  }
  pirec_looplag_thread_enter(a->loop);
  uv_run(a->loop, UV_RUN_DEFAULT);
  pirec_looplag_thread_leave();
  return a->exit_code;
}

/* Reads the settings this module uses from the config file; without one the defaults apply. */
static int load_options(const char *config_path, struct pirec_notes_options *no)
{
  pirec_notes_options_default(no);
  if (!config_path)
    return 0;
  struct pirec_config *cfg = NULL;
  struct pirec_config_errors errors = {0};
  int err = pirec_config_load(config_path, &cfg, &errors);
  if (err < 0) {
    for (size_t i = 0; i < errors.count; i++)
      fprintf(stderr, "%s\n", errors.items[i].message);
    pirec_config_errors_free(&errors);
    return err;
  }
  no->max_text = (size_t)pirec_config_get_int(cfg, "notes", "max_length");
  uint64_t ring = pirec_config_get_size(cfg, "storage", "ring_size");
  if (ring > no->ring_bytes)
    no->ring_bytes = (size_t)ring;
  no->fsync_interval_ms =
      pirec_sink_fsync_interval_ms(pirec_config_get_duration(cfg, "storage", "fsync_interval"));
  pirec_config_free(cfg);
  return 0;
}

/* Parses the command line. Returns 0, 1 after --help or --version, or -EINVAL (usage printed). */
static int parse_args(int argc, char **argv, int *protocol, const char **name, const char **config_path)
{
  static const struct option longopts[] = {
      {"protocol", no_argument, NULL, 'p'},     {"name", required_argument, NULL, 'n'},
      {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0}};
  int opt;
  while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
    switch (opt) {
    case 'p': *protocol = 1; break;
    case 'n': *name = optarg; break;
    case 'c': *config_path = optarg; break;
    case 'h': usage(stdout); return 1;
    case 'V': printf("pirec-notes %s\n", PIREC_VERSION); return 1;
    default: usage(stderr); return -EINVAL;
    }
  }
  if (*protocol ? optind != argc : optind != argc - 1) {
    usage(stderr);
    return -EINVAL;
  }
  return 0;
}

int main(int argc, char **argv)
{
  int protocol = 0;
  const char *name = "notes", *config_path = NULL;
  int r = parse_args(argc, argv, &protocol, &name, &config_path);
  if (r != 0)
    return r > 0 ? 0 : 64;
  run_spawner_start("pirec-notes");
  struct pirec_notes_options no;
  if (load_options(config_path, &no) < 0)
    return 65;
  struct app a = {0};
  uv_loop_t loop;
  uv_loop_init(&loop);
  a.loop = &loop;
  int err = pirec_notes_new(&loop, &no, &a.notes);
  if (err < 0) {
    fprintf(stderr, "pirec-notes: %s\n", pirec_strerror(err));
    return 1;
  }
  int rc = protocol ? run_protocol(&a, name) : run_standalone(&a, argv[optind]);
  pirec_notes_free(a.notes);
  return run_exit(&loop, "pirec-notes", &rc);
}
