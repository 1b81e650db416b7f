/* pirec-eyetracker: gaze and scene video from a Pupil Labs Neon, standalone or under the pirec
 * controller (docs/PROTOCOL.md, docs/EYETRACKER.md). */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pirec/clock.h"
#include "pirec/config.h"
#include "pirec/container_of.h"
#include "pirec/error.h"
#include "pirec/eyetracker.h"
#include "pirec/log.h"
#include "pirec/recorder.h"
#include "pirec/sink.h"
#include "run.h"

/* Driving the device under the controller ([eyetracker] device_*; docs/EYETRACKER.md). */
enum { KIND_SESSION = 1, KIND_TRIAL = 2, KIND_NOTE = 4, KIND_GPIO = 8 };
enum rec_state { REC_NONE = 0, REC_STARTING, REC_RUNNING, REC_SAVING };
struct device {
  int events;      /* device_events */
  unsigned kinds;  /* device_event_kinds */
  char prefix[40]; /* device_event_prefix */
  int recording;   /* device_recording */
  int block;       /* if_device_refuses = block */
  enum rec_state rec;
  char rec_id[128];                     /* the session's device recording, "" when none */
  struct pirec_recorder_req *start_req; /* a start waiting for recording:start's answer */
  int64_t start_wall;
  int stop_parked, stop_err; /* the trial stopped while recording:stop_and_save was out */
};

struct app {
  uv_loop_t loop;
  struct device dev;
  struct pirec_eyetracker *et;
  struct pirec_recorder *rec;
  struct pirec_recorder_req *pending; /* a start/stop/quit waiting for the files */
  struct run run;                     /* standalone: SIGINT, SIGTERM, --duration */
  int exit_code;
  int json;
  /* The device's lifetime counters when the current session began: status reports per session. */
  struct pirec_eyetracker_status base;
};

static void usage(FILE *f)
{
  fprintf(f, "usage: pirec-eyetracker --address HOST:PORT --out DIR [options]   record one trial\n"
             "       pirec-eyetracker --protocol [--name NAME] [-c FILE]         under the controller\n"
             "options:\n"
             "  --address HOST:PORT   the device's HTTP API (IP address; default port 8080)\n"
             "  --rtsp-port N         RTSP port (default 8086)\n"
             "  --gaze-url URL, --world-url URL   RTSP URLs instead of the status/port defaults\n"
             "  --events-url URL      the eye_events stream's URL\n"
             "  --no-gaze, --no-world, --no-events   streams to leave out\n"
             "  --trial N             trial number for the file names (default 1)\n"
             "  --duration S          stop after S seconds (default: until SIGINT/SIGTERM)\n"
             "  --reconnect-min MS, --reconnect-max MS   backoff (default 1000, 30000)\n"
             "  --json                print the final counters as JSON on stdout\n"
             "  -c, --config FILE     read [eyetracker] from a pirec config file\n"
             "  -h, --help            this text;  --version   the version\n");
}

static const char *event_name(enum pirec_eyetracker_event ev)
{
  switch (ev) {
  case PIREC_EYETRACKER_EVENT_CONNECTED: return "eyetracker_connected";
  case PIREC_EYETRACKER_EVENT_DISCONNECTED: return "eyetracker_disconnected";
  case PIREC_EYETRACKER_EVENT_ERROR: return "eyetracker_error";
  case PIREC_EYETRACKER_EVENT_WRITE_ERROR: return "write_error";
  case PIREC_EYETRACKER_EVENT_SEGMENT: return "segment";
  }
  return "eyetracker_event";
}

static void on_event(struct pirec_eyetracker *et, enum pirec_eyetracker_event ev, const char *msg, void *user)
{
  struct app *a = user;
  pirec_log(ev == PIREC_EYETRACKER_EVENT_CONNECTED || ev == PIREC_EYETRACKER_EVENT_SEGMENT ? PIREC_LOG_INFO
                                                                                           : PIREC_LOG_WARN,
            "eyetracker: %s", msg);
  if (a->rec)
    pirec_recorder_event(a->rec, event_name(ev), json_pack("{s:s}", "message", msg));
  /* A trial that started while the device was away records from now on (docs/PROTOCOL.md). */
  if (a->rec && ev == PIREC_EYETRACKER_EVENT_CONNECTED && pirec_eyetracker_recording(et))
    pirec_recorder_event(a->rec, "device_ready", json_pack("{s:s}", "message", msg));
}

/* Why no sample can arrive now, or NULL while a stream plays. */
static const char *device_absent(struct pirec_eyetracker *et, char *buf, size_t cap)
{
  struct pirec_eyetracker_status s;
  pirec_eyetracker_status(et, &s);
  if (s.gaze.playing || s.world.playing || s.events.playing)
    return NULL;
  int err = s.gaze.last_error ? s.gaze.last_error : s.world.last_error;
  snprintf(buf, cap, "waiting for the eye tracker at '%.200s': %s", s.host,
           err ? pirec_strerror(err) : "not connected yet");
  return buf;
}

static json_t *stream_json(const struct pirec_eyetracker_stream_status *s)
{
  json_t *o = json_object();
  json_object_set_new(o, "playing", json_boolean(s->playing));
#define U(f) json_object_set_new(o, #f, json_integer((json_int_t)s->f))
  U(connects);
  U(disconnects);
  U(connect_failures);
  U(packets);
  U(rtcp_sr);
  U(bad_packets);
  U(bad_payloads);
  U(lost);
  U(gap_samples);
  U(samples);
  U(written);
  U(discarded);
  U(dropped_after);
  U(refused);
  U(dropped);
  U(idle);
  U(before_start);
#undef U
  if (s->offset_ns != INT64_MIN)
    json_object_set_new(o, "offset_ns", json_integer(s->offset_ns));
  json_object_set_new(o, "drift_ppb", json_integer(s->drift_ppb));
  return o;
}

/* A stream's lifetime counters as counted since base (written, refused, dropped are per trial). */
static void stream_since(struct pirec_eyetracker_stream_status *s,
                         const struct pirec_eyetracker_stream_status *b)
{
  uint64_t *now[] = {
      &s->connects,     &s->disconnects, &s->connect_failures, &s->packets, &s->rtcp_sr, &s->bad_packets,
      &s->bad_payloads, &s->lost,        &s->gap_samples,      &s->samples, &s->idle};
  const uint64_t then[] = {
      b->connects,     b->disconnects, b->connect_failures, b->packets, b->rtcp_sr, b->bad_packets,
      b->bad_payloads, b->lost,        b->gap_samples,      b->samples, b->idle};
  for (size_t i = 0; i < sizeof then / sizeof then[0]; i++)
    *now[i] = *now[i] >= then[i] ? *now[i] - then[i] : 0;
}

static json_t *status_json(struct pirec_eyetracker *et, const struct pirec_eyetracker_status *base,
                           const struct device *dev)
{
  struct pirec_eyetracker_status s;
  pirec_eyetracker_status(et, &s);
  if (base) {
    stream_since(&s.gaze, &base->gaze);
    stream_since(&s.world, &base->world);
    stream_since(&s.events, &base->events);
    s.status_ok -= s.status_ok >= base->status_ok ? base->status_ok : s.status_ok;
    s.status_failed -= s.status_failed >= base->status_failed ? base->status_failed : s.status_failed;
  }
  json_t *o = json_pack("{s:o,s:o,s:o,s:I,s:I,s:I,s:I,s:s?}", "gaze", stream_json(&s.gaze), "world",
                        stream_json(&s.world), "eye_events", stream_json(&s.events), "status_ok",
                        (json_int_t)s.status_ok, "status_failed", (json_int_t)s.status_failed, "bytes_video",
                        (json_int_t)s.bytes_video, "sink_drops", (json_int_t)s.sink_drops, "write_error",
                        s.write_error ? pirec_strerror(s.write_error) : NULL);
  json_object_set_new(
      o, "device",
      json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:s?}", "events_sent", (json_int_t)s.events_sent, "events_failed",
                (json_int_t)s.events_failed, "events_dropped", (json_int_t)s.events_dropped, "events_retried",
                (json_int_t)s.events_retried, "echo_estimates", (json_int_t)s.echo_estimates, "echo_failures",
                (json_int_t)s.echo_failures, "recording_id", dev && dev->rec_id[0] ? dev->rec_id : NULL));
  if (s.echo_offset_ns != INT64_MIN)
    json_object_update_new(json_object_get(o, "device"),
                           json_pack("{s:I,s:I,s:I}", "echo_offset_ns", (json_int_t)s.echo_offset_ns,
                                     "echo_rtt_ns", (json_int_t)s.echo_rtt_ns, "echo_uncertainty_ns",
                                     (json_int_t)s.echo_uncertainty_ns));
  json_object_set_new(o, "backlog",
                      json_pack("{s:I,s:I,s:I,s:I}", "bytes", (json_int_t)s.backlog_bytes, "used",
                                (json_int_t)s.backlog_used, "high_water", (json_int_t)s.backlog_high_water,
                                "missed", (json_int_t)s.backlog_missed));
  return o;
}

/* ---- under the controller ---- */

/* Sends "<prefix><what>" to the device when events of kind are on (never waits: queued). */
static void device_event(struct app *a, unsigned kind, int64_t wall, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void device_event(struct app *a, unsigned kind, int64_t wall, const char *fmt, ...)
{
  if (!a->dev.events || !(a->dev.kinds & kind))
    return;
  char name[PIREC_EYETRACKER_EVENT_MAX + 64];
  int n = snprintf(name, sizeof name, "%s", a->dev.prefix);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(name + n, sizeof name - (size_t)n, fmt, ap);
  va_end(ap);
  if (pirec_eyetracker_send_event(a->et, name, wall) == -ENOBUFS)
    pirec_log(PIREC_LOG_WARN, "eyetracker: device event '%s' not sent: 64 requests already queued", name);
}

/* A device recording's change as an events.csv row (module_event) through the controller. */
static void recording_row(struct app *a, const char *state, const char *message)
{
  if (a->rec)
    pirec_recorder_event(a->rec, "device_recording",
                         json_pack("{s:s,s:s*,s:s*}", "state", state, "id",
                                   a->dev.rec_id[0] ? a->dev.rec_id : NULL, "message", message));
}

static void on_stopped(struct pirec_eyetracker *et, int err, void *user);

/* The device's recording is over (saved or cancelled): a stop waiting for it is answered. */
static void recording_closed(struct app *a)
{
  a->dev.rec = REC_NONE;
  if (a->dev.stop_parked) {
    a->dev.stop_parked = 0;
    on_stopped(a->et, a->dev.stop_err, a);
  }
}

static void on_rec_cancelled(struct pirec_eyetracker *et, int err, const char *result, void *user)
{
  struct app *a = user;
  recording_row(a, err == 0 ? "cancelled" : "cancel_failed", err == 0 ? NULL : result);
  recording_closed(a);
}

static void start_trial(struct app *a, struct pirec_recorder_req *req, int64_t wall)
{
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/%s", req->session_dir, pirec_recorder_name(a->rec));
  int r = pirec_eyetracker_set_key(a->et, pirec_recorder_key(a->rec), req->session_dir);
  if (r == 0)
    r = pirec_eyetracker_trial_start(a->et, dir, req->trial, req->part);
  if (r == 0 && req->new_session) {
    pirec_eyetracker_status(a->et, &a->base);
    pirec_eyetracker_time_echo(a->et);
    device_event(a, KIND_SESSION, wall, "session_start");
  }
  if (r == 0 && req->part == 0)
    device_event(a, KIND_TRIAL, wall, "trial %d%s%s", req->trial, req->label[0] ? " " : "", req->label);
  if (r < 0 && a->dev.rec == REC_RUNNING && req->new_session) {
    /* the session's start failed here: the device's recording of it is dropped */
    a->dev.rec = REC_SAVING;
    if (pirec_eyetracker_recording_cmd(a->et, PIREC_EYETRACKER_REC_CANCEL, on_rec_cancelled, a) < 0)
      a->dev.rec = REC_NONE;
  }
  char why[512];
  if (r == 0 && device_absent(a->et, why, sizeof why))
    pirec_recorder_start_waiting(req, why);
  pirec_recorder_finish(req, r, NULL);
}

static void on_rec_started(struct pirec_eyetracker *et, int err, const char *result, void *user)
{
  struct app *a = user;
  struct pirec_recorder_req *req = a->dev.start_req;
  a->dev.start_req = NULL;
  if (err == 0) {
    a->dev.rec = REC_RUNNING;
    snprintf(a->dev.rec_id, sizeof a->dev.rec_id, "%s", result);
    recording_row(a, "started", NULL);
    start_trial(a, req, a->dev.start_wall);
    return;
  }
  a->dev.rec = REC_NONE;
  char msg[512];
  snprintf(msg, sizeof msg, "the eye tracker did not start its own recording (%s): %s", result,
           a->dev.block ? "the eye tracker does not record this session (if_device_refuses = block)"
                        : "pirec records without it (if_device_refuses = continue)");
  pirec_log(PIREC_LOG_WARN, "eyetracker: %s", msg);
  recording_row(a, "refused", msg);
  if (a->dev.block)
    pirec_recorder_finish(req, -EPERM, msg);
  else
    start_trial(a, req, a->dev.start_wall);
}

static void m_start(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  int64_t wall = pirec_clock_wall_ns();
  if (req->new_session) {
    a->dev.rec_id[0] = 0;
    a->dev.rec = REC_NONE;
  }
  if (req->new_session && a->dev.recording) {
    /* The trial starts once the device answered (at most api_timeout, 3 s): a refusal can then
     * still refuse the start. Samples meanwhile are idle, or kept with pre_trigger. */
    a->dev.rec = REC_STARTING;
    a->dev.start_req = req;
    a->dev.start_wall = wall;
    if (pirec_eyetracker_recording_cmd(a->et, PIREC_EYETRACKER_REC_START, on_rec_started, a) < 0)
      on_rec_started(a->et, -ENOBUFS, "too many requests queued", a);
    return;
  }
  start_trial(a, req, wall);
}

static void on_rec_saved(struct pirec_eyetracker *et, int err, const char *result, void *user)
{
  struct app *a = user;
  recording_row(a, err == 0 ? "saved" : "save_failed", err == 0 ? NULL : result);
  if (err < 0)
    pirec_log(PIREC_LOG_WARN, "eyetracker: the device did not save its recording '%s': %s", a->dev.rec_id,
              result);
  recording_closed(a);
}

/* The session ends (a stop without a next trial, or quit): its events and the device's save (its
 * cancel when the session is abandoned) go out before the trial's files close; the stop is
 * answered once both are done. */
static void session_end(struct app *a, int abort_)
{
  device_event(a, KIND_SESSION, pirec_clock_wall_ns(), abort_ ? "session_abort" : "session_stop");
  pirec_eyetracker_time_echo(a->et);
  if (a->dev.rec != REC_RUNNING)
    return;
  a->dev.rec = REC_SAVING;
  int r = abort_ ? pirec_eyetracker_recording_cmd(a->et, PIREC_EYETRACKER_REC_CANCEL, on_rec_cancelled, a)
                 : pirec_eyetracker_recording_cmd(a->et, PIREC_EYETRACKER_REC_STOP_AND_SAVE, on_rec_saved, a);
  if (r < 0)
    a->dev.rec = REC_RUNNING;
}

static void m_mark(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  unsigned kind = strcmp(req->kind, "note") == 0 ? KIND_NOTE : strcmp(req->kind, "gpio") == 0 ? KIND_GPIO : 0;
  if (kind)
    device_event(a, kind, req->wall_ns, "%s %.*s", req->kind, (int)req->text_len, req->text);
  pirec_recorder_finish(req, 0, NULL);
}

static void on_stopped(struct pirec_eyetracker *et, int err, void *user)
{
  struct app *a = user;
  if (a->dev.rec == REC_SAVING) {
    a->dev.stop_parked = 1; /* answered once the device saved (on_rec_saved) */
    a->dev.stop_err = err;
    return;
  }
  struct pirec_recorder_req *req = a->pending;
  a->pending = NULL;
  if (req && req->cmd == PIREC_RECORDER_QUIT) {
    pirec_recorder_finish(req, err, NULL);
    pirec_eyetracker_close(a->et, NULL, NULL);
    a->et = NULL;
    pirec_recorder_close(a->rec, NULL);
    a->rec = NULL;
  } else if (req) {
    pirec_recorder_finish(req, err, NULL);
  }
}

static void m_stop(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  a->pending = req;
  if (!req->handover) { /* the session ends: its key is wiped (the trial's sinks hold their own) */
    pirec_eyetracker_set_key(a->et, NULL, NULL);
    session_end(a, req->abort);
  }
  if (req->handover && pirec_eyetracker_recording(a->et))
    pirec_eyetracker_hand_over(a->et);
  int r = pirec_eyetracker_trial_stop(a->et, on_stopped, a);
  if (r < 0) {
    a->pending = NULL;
    pirec_recorder_finish(req, r, NULL);
  }
}

static void m_status(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  json_t *s = status_json(a->et, &a->base, &a->dev);
  json_object_update(req->counters, s);
  json_decref(s);
  pirec_recorder_finish(req, 0, NULL);
}

static void m_quit(struct pirec_recorder *rec, struct pirec_recorder_req *req)
{
  struct app *a = pirec_recorder_user(rec);
  if (a->pending) {
    /* a stop is finishing: its callback answers it; quit then closes without a trial */
    pirec_recorder_finish(a->pending, 0, NULL);
    a->pending = NULL;
  }
  a->pending = req;
  if (pirec_eyetracker_recording(a->et))
    session_end(a, 0);
  if (pirec_eyetracker_trial_stop(a->et, on_stopped, a) < 0)
    on_stopped(a->et, 0, a);
}

static int run_protocol(struct app *a, const char *name)
{
  static const struct pirec_recorder_ops ops = {m_start, m_stop, m_status, NULL, m_quit, NULL, m_mark};
  if (run_serve(&a->loop, name, &ops, a, "pirec-eyetracker", NULL, &a->rec) < 0) {
    pirec_eyetracker_close(a->et, NULL, NULL);
    return 1;
  }
  return 0;
}

/* ---- standalone ---- */

static void on_standalone_stopped(struct pirec_eyetracker *et, int err, void *user)
{
  struct app *a = user;
  if (err < 0) {
    fprintf(stderr, "pirec-eyetracker: %s\n", pirec_strerror(err));
    a->exit_code = 1;
  }
  json_t *s = status_json(et, NULL, NULL);
  if (a->json) {
    char *text = json_dumps(s, JSON_COMPACT);
    if (text)
      printf("%s\n", text);
    free(text);
  } else {
    struct pirec_eyetracker_status st;
    pirec_eyetracker_status(et, &st);
    fprintf(stderr,
            "pirec-eyetracker: gaze %" PRIu64 " rows (%" PRIu64 " dropped), scene %" PRIu64
            " frames (%" PRIu64 " dropped), %" PRIu64 " eye events, %" PRIu64 " reconnects\n",
            st.gaze.written, st.gaze.dropped, st.world.written, st.world.dropped, st.events.written,
            st.gaze.disconnects + st.world.disconnects + st.events.disconnects);
  }
  json_decref(s);
  pirec_eyetracker_close(et, NULL, NULL);
  a->et = NULL;
}

static void on_stop(struct run *run)
{
  struct app *a = container_of(run, struct app, run);
  run_unwatch(run);
  if (pirec_eyetracker_trial_stop(a->et, on_standalone_stopped, a) < 0)
    on_standalone_stopped(a->et, 0, a);
}

/* What the command line asks for beyond the module's settings. */
struct cli {
  const char *out, *name, *config, *address;
  int protocol, trial;
  double duration;
  struct device dev;
};

/* Parses the options into s, c and a->json. Returns 0, 1 after --help or --version, or -EINVAL. */
static int parse_args(int argc, char **argv, struct pirec_eyetracker_settings *s, struct cli *c,
                      struct app *a)
{
  enum {
    O_ADDR = 256,
    O_RTSP,
    O_GURL,
    O_WURL,
    O_NOGAZE,
    O_NOWORLD,
    O_TRIAL,
    O_DUR,
    O_RMIN,
    O_RMAX,
    O_JSON,
    O_PROTO,
    O_NAME,
    O_OUT,
    O_EURL,
    O_NOEVENTS
  };
  static const struct option opts[] = {
      {"address", 1, 0, O_ADDR},       {"rtsp-port", 1, 0, O_RTSP},
      {"gaze-url", 1, 0, O_GURL},      {"world-url", 1, 0, O_WURL},
      {"no-gaze", 0, 0, O_NOGAZE},     {"no-world", 0, 0, O_NOWORLD},
      {"trial", 1, 0, O_TRIAL},        {"duration", 1, 0, O_DUR},
      {"reconnect-min", 1, 0, O_RMIN}, {"reconnect-max", 1, 0, O_RMAX},
      {"json", 0, 0, O_JSON},          {"protocol", 0, 0, O_PROTO},
      {"name", 1, 0, O_NAME},          {"out", 1, 0, O_OUT},
      {"config", 1, 0, 'c'},           {"events-url", 1, 0, O_EURL},
      {"no-events", 0, 0, O_NOEVENTS}, {"help", 0, 0, 'h'},
      {"version", 0, 0, 'V'},          {0, 0, 0, 0},
  };
  int opt;
  while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
    switch (opt) {
    case O_ADDR: c->address = optarg; break;
    case O_RTSP: s->rtsp_port = atoi(optarg); break;
    case O_GURL: snprintf(s->gaze_url, sizeof s->gaze_url, "%s", optarg); break;
    case O_WURL: snprintf(s->world_url, sizeof s->world_url, "%s", optarg); break;
    case O_NOGAZE: s->gaze = 0; break;
    case O_NOWORLD: s->world = 0; break;
    case O_EURL: snprintf(s->events_url, sizeof s->events_url, "%s", optarg); break;
    case O_NOEVENTS: s->events = 0; break;
    case O_TRIAL: c->trial = atoi(optarg); break;
    case O_DUR: c->duration = atof(optarg); break;
    case O_RMIN: s->reconnect_min_ns = (int64_t)atoi(optarg) * 1000000; break;
    case O_RMAX: s->reconnect_max_ns = (int64_t)atoi(optarg) * 1000000; break;
    case O_JSON: a->json = 1; break;
    case O_PROTO: c->protocol = 1; break;
    case O_NAME: c->name = optarg; break;
    case O_OUT: c->out = optarg; break;
    case 'c': c->config = optarg; break;
    case 'h': usage(stdout); return 1;
    case 'V': printf("pirec-eyetracker %s\n", PIREC_VERSION); return 1;
    default: usage(stderr); return -EINVAL;
    }
  }
  if (optind != argc || (!c->protocol && !c->out)) {
    usage(stderr);
    return -EINVAL;
  }
  return 0;
}

/* [eyetracker] and [storage] from the config file into s; an --address given wins over the file's. */
/* [eyetracker] device_*: what is sent to the device (the kinds list is checked by the schema). */
static void device_from_config(const struct pirec_config *cfg, struct device *d)
{
  d->events = pirec_config_get_bool(cfg, "eyetracker", "device_events");
  d->recording = pirec_config_get_bool(cfg, "eyetracker", "device_recording");
  d->block = strcmp(pirec_config_get_string(cfg, "eyetracker", "if_device_refuses"), "block") == 0;
  snprintf(d->prefix, sizeof d->prefix, "%s",
           pirec_config_get_string(cfg, "eyetracker", "device_event_prefix"));
  const char *k = pirec_config_get_string(cfg, "eyetracker", "device_event_kinds");
  d->kinds = (strstr(k, "session") ? KIND_SESSION : 0) | (strstr(k, "trial") ? KIND_TRIAL : 0) |
             (strstr(k, "note") ? KIND_NOTE : 0) | (strstr(k, "gpio") ? KIND_GPIO : 0);
}

static int settings_from_config(struct pirec_eyetracker_settings *s, struct cli *c)
{
  struct pirec_config *cfg = NULL;
  struct pirec_config_errors errs = {0};
  int r = pirec_config_load(c->config, &cfg, &errs);
  if (r < 0) {
    fprintf(stderr, "pirec-eyetracker: cannot load '%s': %s\n", c->config, pirec_strerror(r));
    for (size_t i = 0; i < errs.count; i++)
      fprintf(stderr, "%s\n", errs.items[i].message);
    pirec_config_errors_free(&errs);
    return r;
  }
  const char *address = c->address ? c->address : pirec_config_get_string(cfg, "eyetracker", "address");
  if (pirec_config_is_set(cfg, "eyetracker", "rtsp_port"))
    s->rtsp_port = (int)pirec_config_get_int(cfg, "eyetracker", "rtsp_port");
  s->reconnect_min_ns = pirec_config_get_duration(cfg, "eyetracker", "reconnect_min");
  s->reconnect_max_ns = pirec_config_get_duration(cfg, "eyetracker", "reconnect_max");
  s->pre_trigger_ns = pirec_config_get_duration(cfg, "eyetracker", "pre_trigger");
  s->segment_ns = pirec_config_get_duration(cfg, "eyetracker", "segment");
  s->segment_bytes = pirec_config_get_size(cfg, "eyetracker", "segment_size");
  s->time_echo_interval_ns = pirec_config_get_duration(cfg, "eyetracker", "time_echo_interval");
  device_from_config(cfg, &c->dev);
  s->fsync_interval_ms =
      pirec_sink_fsync_interval_ms(pirec_config_get_duration(cfg, "storage", "fsync_interval"));
  r = address && pirec_eyetracker_settings_set_address(s, address) < 0 ? -EINVAL : 0;
  if (r < 0)
    fprintf(stderr, "pirec-eyetracker: eyetracker.address = '%s': expected HOST:PORT\n", address);
  c->address = NULL;
  pirec_config_free(cfg);
  return r;
}

/* Makes and starts the eye tracker, then records standalone or serves the controller until done. */
static int record_or_serve(struct app *a, const struct pirec_eyetracker_settings *s, const struct cli *c)
{
  uv_loop_init(&a->loop);
  int r = pirec_eyetracker_new(&a->loop, s, on_event, a, &a->et);
  if (r < 0) {
    fprintf(stderr, "pirec-eyetracker: %s\n", pirec_strerror(r));
    uv_loop_close(&a->loop);
    return 1;
  }
  pirec_eyetracker_start(a->et);
  if (c->protocol) {
    a->exit_code = run_protocol(a, c->name);
    return run_exit(&a->loop, "pirec-eyetracker", &a->exit_code);
  }
  r = pirec_eyetracker_trial_start(a->et, c->out, c->trial, 0);
  if (r < 0) {
    fprintf(stderr, "pirec-eyetracker: cannot start recording into '%s': %s\n", c->out, pirec_strerror(r));
    pirec_eyetracker_close(a->et, NULL, NULL);
    uv_run(&a->loop, UV_RUN_DEFAULT);
    uv_loop_close(&a->loop);
    return 1;
  }
  run_watch(&a->run, &a->loop, c->duration, on_stop);
  return run_exit(&a->loop, "pirec-eyetracker", &a->exit_code);
}

int main(int argc, char **argv)
{
  struct pirec_eyetracker_settings s;
  /* the schema's defaults, for a run without -c */
  struct cli c = {
      .name = "eyetracker",
      .trial = 1,
      .dev = {.events = 1, .kinds = KIND_SESSION | KIND_TRIAL | KIND_NOTE | KIND_GPIO, .prefix = "pirec."}};
  struct app a = {0};
  pirec_eyetracker_settings_default(&s);
  int r = parse_args(argc, argv, &s, &c, &a);
  if (r != 0)
    return r > 0 ? 0 : 2;
  run_spawner_start("pirec-eyetracker");
  if (c.config && settings_from_config(&s, &c) < 0)
    return 2;
  if (c.address && pirec_eyetracker_settings_set_address(&s, c.address) < 0) {
    fprintf(stderr, "pirec-eyetracker: --address '%s': expected HOST:PORT or auto\n", c.address);
    return 2;
  }
  snprintf(s.name, sizeof s.name, "%s", c.name);
  a.dev = c.dev;
  return record_or_serve(&a, &s, &c);
}
