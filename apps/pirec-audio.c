/* pirec-audio: an ALSA capture device into timestamped WAV blocks, standalone or under the pirec
 * controller. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pirec/audio.h"
#include "pirec/config.h"
#include "pirec/container_of.h"
#include "pirec/error.h"
#include "pirec/recorder.h"
#include "pirec/sink.h"
#include "run.h"

struct cli {
  const char *device, *format, *out_dir, *config_file, *name;
  long rate, channels, period_ms;
  int trial;
  double duration_s;
  int protocol;
};

struct app {
  uv_loop_t *loop;
  struct pirec_audio *audio;
  struct pirec_recorder *rec;
  struct pirec_recorder_req *quit_req;
  struct pirec_audio_counters base; /* when the current session began: status counts per session */
  char dir[4096];
  const char *name;
  struct run run;
  int exit_code;
};

static void usage(FILE *f)
{
  fprintf(f, "usage: pirec-audio [options] --out DIR     record until SIGINT/SIGTERM (or --duration)\n"
             "       pirec-audio --protocol --name NAME [-c FILE]   under the pirec controller\n"
             "options:\n"
             "  -D, --device PCM  ALSA capture device (default \"default\"; e.g. hw:1,0, plughw:CARD=Mic)\n"
             "  --rate N          frames per second (default 48000)\n"
             "  --channels N      channels (default 1)\n"
             "  --format F        sample format: s16 (default), s32 or f32\n"
             "  --period-ms N     block length in milliseconds (default 20)\n"
             "  --name NAME       the instance's name, [audio.NAME] in the config (default audio0)\n"
             "  --trial N         trial number for the file names (default 1)\n"
             "  --duration S      stop after S seconds\n"
             "  -c, --config FILE read [audio.NAME] from a pirec config file\n"
             "  -h, --help        this text;  --version   the version\n");
}

static long parse_long(const char *text, long min, long max)
{
  char *end;
  long v = strtol(text, &end, 10);
  return (*end || end == text || v < min || v > max) ? -1 : v;
}

/* Returns 0, 1 after --help or --version, or -EINVAL (bad option; the caller prints the usage). */
static int parse_args(int argc, char **argv, struct cli *c)
{
  static const struct option longopts[] = {
      {"device", required_argument, NULL, 'D'},    {"rate", required_argument, NULL, 'r'},
      {"channels", required_argument, NULL, 'C'},  {"format", required_argument, NULL, 'f'},
      {"period-ms", required_argument, NULL, 'P'}, {"name", required_argument, NULL, 'n'},
      {"trial", required_argument, NULL, 't'},     {"duration", required_argument, NULL, 'd'},
      {"out", required_argument, NULL, 'o'},       {"protocol", no_argument, NULL, 'p'},
      {"config", required_argument, NULL, 'c'},    {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},         {NULL, 0, NULL, 0}};
  int opt;
  while ((opt = getopt_long(argc, argv, "D:c:h", longopts, NULL)) != -1) {
    switch (opt) {
    case 'D': c->device = optarg; break;
    case 'r': c->rate = parse_long(optarg, 1000, 768000); break;
    case 'C': c->channels = parse_long(optarg, 1, 32); break;
    case 'f': c->format = optarg; break;
    case 'P': c->period_ms = parse_long(optarg, 1, 1000); break;
    case 'n': c->name = optarg; break;
    case 't': c->trial = (int)parse_long(optarg, 1, 999999); break;
    case 'd': c->duration_s = atof(optarg); break;
    case 'o': c->out_dir = optarg; break;
    case 'p': c->protocol = 1; break;
    case 'c': c->config_file = optarg; break;
    case 'h': usage(stdout); return 1;
    case 'V': printf("pirec-audio %s\n", PIREC_VERSION); return 1;
    default: return -EINVAL;
    }
  }
  if (c->rate < 0 || c->channels < 0 || c->period_ms < 0 || c->trial < 1)
    return -EINVAL;
  if (optind < argc || (!c->protocol && !c->out_dir))
    return -EINVAL;
  return 0;
}

/* [audio.NAME] onto opts (docs/AUDIO.md); the device string lives in *cfg until it is freed. */
static int options_from_config(struct pirec_audio_options *o, const char *file, const char *name,
                               struct pirec_config **cfg)
{
  struct pirec_config_errors errors = {0};
  int r = pirec_config_load(file, cfg, &errors);
  if (r < 0) {
    for (size_t i = 0; i < errors.count; i++)
      fprintf(stderr, "pirec-audio: %s\n", errors.items[i].message);
    pirec_config_errors_free(&errors);
    return r;
  }
  char sec[128];
  snprintf(sec, sizeof sec, "audio.%s", name);
  o->device = pirec_config_get_string(*cfg, sec, "device");
  o->rate = (unsigned)pirec_config_get_int(*cfg, sec, "rate");
  o->channels = (unsigned)pirec_config_get_int(*cfg, sec, "channels");
  pirec_audio_format_parse(pirec_config_get_string(*cfg, sec, "format"), &o->format);
  o->period_us = (unsigned)(pirec_config_get_duration(*cfg, sec, "period") / 1000);
  o->ring_bytes = (size_t)pirec_config_get_size(*cfg, sec, "ring_size");
  o->fsync_interval_ms =
      pirec_sink_fsync_interval_ms(pirec_config_get_duration(*cfg, "storage", "fsync_interval"));
  return 0;
}

/* The config file's [audio.NAME], with the command line winning. */
static int options(const struct cli *c, struct pirec_audio_options *o, struct pirec_config **cfg)
{
  pirec_audio_options_default(o);
  if (c->config_file && options_from_config(o, c->config_file, c->name, cfg) < 0)
    return -EINVAL;
  if (c->device)
    o->device = c->device;
  if (c->rate)
    o->rate = (unsigned)c->rate;
  if (c->channels)
    o->channels = (unsigned)c->channels;
  if (c->period_ms)
    o->period_us = (unsigned)c->period_ms * 1000;
  if (c->format && pirec_audio_format_parse(c->format, &o->format) < 0) {
    fprintf(stderr, "pirec-audio: --format '%s': s16, s32 or f32\n", c->format);
    return -EINVAL;
  }
  return 0;
}

/* ---- under the controller ---- */

/* A device gone or a disk full mid-trial: events.csv and session.json's errors get it (standalone:
 * stderr, and the exit status says so). */
static void on_audio_error(struct pirec_audio *audio, int err, const char *message, void *user)
{
  struct app *a = user;
  if (a->rec) {
    pirec_recorder_event(a->rec, "error", json_pack("{s:s}", "message", message));
  } else {
    fprintf(stderr, "pirec-audio: %s\n", message);
    a->exit_code = 1;
  }
}

static void m_start(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  if (req->new_session)
    pirec_audio_counters(a->audio, &a->base);
  snprintf(a->dir, sizeof a->dir, "%s/%s", req->session_dir, a->name);
  int err = pirec_audio_set_key(a->audio, pirec_recorder_key(rec), req->session_dir);
  if (err == 0)
    err = pirec_audio_open(a->audio, a->dir, req->trial, req->part);
  pirec_recorder_finish(
      req, err, err < 0 && *pirec_audio_last_error(a->audio) ? pirec_audio_last_error(a->audio) : NULL);
}

static void on_closed_stop(struct pirec_audio *audio, int status, void *user)
{
  pirec_recorder_finish(user, status, NULL);
}

static void m_stop(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  if (!req->handover)
    pirec_audio_set_key(a->audio, NULL, NULL);
  int err = pirec_audio_close_file(a->audio, on_closed_stop, req);
  if (err < 0)
    pirec_recorder_finish(req, err, NULL);
}

static void m_status(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  struct pirec_audio_counters c;
  pirec_audio_counters(a->audio, &c);
  pirec_recorder_counters_add(req, "blocks", c.blocks - a->base.blocks);
  pirec_recorder_counters_add(req, "frames", c.frames - a->base.frames);
  pirec_recorder_counters_add(req, "frames_dropped", c.frames_dropped - a->base.frames_dropped);
  pirec_recorder_counters_add(req, "xruns", c.xruns - a->base.xruns);
  pirec_recorder_counters_add(req, "rows_dropped", c.rows_dropped - a->base.rows_dropped);
  pirec_recorder_counters_add(req, "bytes_written", c.bytes_written - a->base.bytes_written);
  if (c.drift_known) /* the current or last trial's; session.json keeps the last one polled */
    json_object_set_new(req->counters, "clock_drift_ppb", json_integer(c.clock_drift_ppb));
  if (c.error)
    json_object_set_new(req->counters, "error", json_string(pirec_strerror(c.error)));
  pirec_recorder_finish(req, 0, NULL);
}

/* The trial's files are closed (or none was open): answer the quit and let the loop run out. */
static void answer_quit(struct pirec_audio *audio, int status, void *user)
{
  struct app *a = user;
  pirec_recorder_finish(a->quit_req, status, NULL);
  a->quit_req = NULL;
  pirec_recorder_close(a->rec, NULL);
  a->rec = NULL;
}

static void m_quit(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  a->quit_req = req;
  if (pirec_audio_close_file(a->audio, answer_quit, a) < 0)
    answer_quit(a->audio, 0, a);
}

static int run_protocol(struct app *a)
{
  static const struct pirec_recorder_ops ops = {
      .start = m_start, .stop = m_stop, .status = m_status, .quit = m_quit};
  return run_serve(a->loop, a->name, &ops, a, "pirec-audio", NULL, &a->rec) < 0 ? 1 : 0;
}

/* ---- standalone ---- */

static void on_standalone_closed(struct pirec_audio *audio, int status, void *user)
{
  struct app *a = user;
  struct pirec_audio_counters c;
  pirec_audio_counters(audio, &c);
  char drift[64] = "";
  if (c.drift_known)
    snprintf(drift, sizeof drift, ", card clock %+lld ppb", (long long)c.clock_drift_ppb);
  fprintf(stderr, "pirec-audio: %llu blocks, %llu frames, %llu frames dropped, %llu xruns%s%s%s\n",
          (unsigned long long)c.blocks, (unsigned long long)c.frames, (unsigned long long)c.frames_dropped,
          (unsigned long long)c.xruns, drift, status < 0 ? "; error: " : "",
          status < 0 ? pirec_strerror(status) : "");
  if (status < 0)
    a->exit_code = 1;
}

static void on_stop(struct run *run)
{
  struct app *a = container_of(run, struct app, run);
  run_unwatch(run);
  if (pirec_audio_close_file(a->audio, on_standalone_closed, a) < 0)
    a->exit_code = 1;
}

static int run_standalone(struct app *a, const struct cli *c)
{
  int err = pirec_audio_open(a->audio, c->out_dir, c->trial, 0);
  if (err < 0) {
    fprintf(stderr, "pirec-audio: %s\n", pirec_audio_last_error(a->audio));
    return 1;
  }
  run_watch(&a->run, a->loop, c->duration_s, on_stop);
  return 0;
}

int main(int argc, char **argv)
{
  struct cli c = {.trial = 1, .name = "audio0"};
  int r = parse_args(argc, argv, &c);
  if (r != 0) {
    if (r < 0)
      usage(stderr);
    return r > 0 ? 0 : 64;
  }
  run_spawner_start("pirec-audio");
  struct pirec_audio_options o;
  struct pirec_config *cfg = NULL;
  if (options(&c, &o, &cfg) < 0)
    return 65;
  struct app a = {.name = c.name};
  uv_loop_t loop;
  uv_loop_init(&loop);
  a.loop = &loop;
  int err = pirec_audio_new(&loop, &o, &a.audio);
  pirec_config_free(cfg);
  if (err < 0) {
    fprintf(stderr, "pirec-audio: invalid settings: %s\n", pirec_strerror(err));
    uv_loop_close(&loop);
    return 64;
  }
  pirec_audio_on_error(a.audio, on_audio_error, &a);
  a.exit_code = c.protocol ? run_protocol(&a) : run_standalone(&a, &c);
  int rc = run_exit(&loop, "pirec-audio", &a.exit_code);
  pirec_audio_free(a.audio);
  return rc;
}
