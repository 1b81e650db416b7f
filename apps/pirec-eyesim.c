/* pirec-eyesim: a simulated Pupil Labs Neon on loopback for tests and `make demo`. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pirec/container_of.h"
#include "pirec/error.h"
#include "pirec/eyesim.h"
#include "pirec/log.h"
#include "run.h"

static void usage(FILE *f)
{
  fprintf(f, "usage: pirec-eyesim [options]\n"
             "  --host ADDR            127.0.0.1 (default) or ::1; nothing else is accepted\n"
             "  --http-port N          HTTP API port (default 0: any free port)\n"
             "  --rtsp-port N          RTSP port (default 0: any free port)\n"
             "  --gaze-hz N            gaze rate, a divisor of 90000 (default 200)\n"
             "  --gaze-size N          payload layout: 9, 17, 65 or 89 bytes (default 89)\n"
             "  --fps N, --size WxH    world video (default 30, 320x240); --no-world to disable\n"
             "  --no-events            no eye_events stream\n"
             "  --ffmpeg PATH          encoder program (default ffmpeg)\n"
             "  --loss P, --malformed P  fault probabilities per gaze sample (0..1)\n"
             "  --bad-sdp              DESCRIBE answers an SDP without rtpmap\n"
             "  --chunked-status       /api/status answers with Transfer-Encoding: chunked\n"
             "  --disconnect-at S --disconnect-for S   drop every client at S seconds, refuse for S\n"
             "  --drift-ppm N          the device clock runs N ppm fast\n"
             "  --sr-interval MS, --first-sr MS        RTCP Sender Report timing (1000, 500)\n"
             "  --seed N, --gaze-log FILE, --world-log FILE, --events-log FILE, --duration S\n"
             "  --api-log FILE         every POST /api/event and /api/recording:* as a CSV row\n"
             "  --refuse-recording MSG /api/recording:start is refused with MSG\n"
             "  --fail-events N        the first N POST /api/event are answered 503\n"
             "  --clock-offset MS      the device clock runs MS (may be negative, fractional) ahead\n"
             "  --echo-port N          Time Echo port (default 0: any free port); --no-time-echo\n"
             "  --echo-silent          the Time Echo server never answers\n"
             "Prints \"pirec-eyesim http=PORT rtsp=PORT echo=PORT\" on stdout once listening; runs until\n"
             "SIGINT/SIGTERM or --duration.  -h, --help: this text;  --version: the version.\n");
}

struct app {
  uv_loop_t loop;
  struct pirec_eyesim *sim;
  struct run run; /* SIGINT, SIGTERM, --duration */
};

static void on_sim_closed(struct pirec_eyesim *sim, void *user)
{
}

static void on_stop(struct run *run)
{
  struct app *a = container_of(run, struct app, run);
  struct pirec_eyesim_counters c;
  pirec_eyesim_counters(a->sim, &c);
  fprintf(stderr,
          "pirec-eyesim: gaze generated %llu sent %llu lost %llu malformed %llu down %llu idle %llu; "
          "frames generated %llu sent %llu; events generated %llu sent %llu; sessions %llu\n",
          (unsigned long long)c.gaze_generated, (unsigned long long)c.gaze_sent,
          (unsigned long long)c.gaze_lost, (unsigned long long)c.gaze_malformed,
          (unsigned long long)c.gaze_down, (unsigned long long)c.gaze_idle,
          (unsigned long long)c.frames_generated, (unsigned long long)c.frames_sent,
          (unsigned long long)c.events_generated, (unsigned long long)c.events_sent,
          (unsigned long long)c.sessions_played);
  pirec_eyesim_close(a->sim, on_sim_closed, NULL);
  a->sim = NULL;
  run_unwatch(run);
}

static int64_t seconds_ns(const char *v)
{
  char *end;
  double d = strtod(v, &end);
  if (*end || d < 0 || d > 86400) {
    fprintf(stderr, "pirec-eyesim: '%s': expected seconds from 0 to 86400\n", v);
    exit(2);
  }
  return (int64_t)(d * 1e9);
}

/* The long options (no short ones but -h). */
enum {
  O_HOST = 256,
  O_HTTP,
  O_RTSP,
  O_HZ,
  O_GSIZE,
  O_FPS,
  O_SIZE,
  O_NOWORLD,
  O_FFMPEG,
  O_LOSS,
  O_MAL,
  O_BADSDP,
  O_CHUNKED,
  O_DAT,
  O_DFOR,
  O_DRIFT,
  O_SRI,
  O_SR1,
  O_SEED,
  O_GLOG,
  O_WLOG,
  O_DUR,
  O_NOEVENTS,
  O_ELOG,
  O_ALOG,
  O_REFUSE,
  O_FAILEV,
  O_OFFSET,
  O_ECHOPORT,
  O_NOECHO,
  O_SILENT
};

static const struct option eyesim_opts[] = {{"host", 1, 0, O_HOST},
                                            {"http-port", 1, 0, O_HTTP},
                                            {"rtsp-port", 1, 0, O_RTSP},
                                            {"gaze-hz", 1, 0, O_HZ},
                                            {"gaze-size", 1, 0, O_GSIZE},
                                            {"fps", 1, 0, O_FPS},
                                            {"size", 1, 0, O_SIZE},
                                            {"no-world", 0, 0, O_NOWORLD},
                                            {"ffmpeg", 1, 0, O_FFMPEG},
                                            {"loss", 1, 0, O_LOSS},
                                            {"malformed", 1, 0, O_MAL},
                                            {"bad-sdp", 0, 0, O_BADSDP},
                                            {"chunked-status", 0, 0, O_CHUNKED},
                                            {"disconnect-at", 1, 0, O_DAT},
                                            {"disconnect-for", 1, 0, O_DFOR},
                                            {"drift-ppm", 1, 0, O_DRIFT},
                                            {"sr-interval", 1, 0, O_SRI},
                                            {"first-sr", 1, 0, O_SR1},
                                            {"seed", 1, 0, O_SEED},
                                            {"gaze-log", 1, 0, O_GLOG},
                                            {"world-log", 1, 0, O_WLOG},
                                            {"duration", 1, 0, O_DUR},
                                            {"no-events", 0, 0, O_NOEVENTS},
                                            {"events-log", 1, 0, O_ELOG},
                                            {"api-log", 1, 0, O_ALOG},
                                            {"refuse-recording", 1, 0, O_REFUSE},
                                            {"fail-events", 1, 0, O_FAILEV},
                                            {"clock-offset", 1, 0, O_OFFSET},
                                            {"echo-port", 1, 0, O_ECHOPORT},
                                            {"no-time-echo", 0, 0, O_NOECHO},
                                            {"echo-silent", 0, 0, O_SILENT},
                                            {"help", 0, 0, 'h'},
                                            {"version", 0, 0, 'V'},
                                            {0, 0, 0, 0}};

/* The device's streams and formats: 1 when c is not one of them, else 0 or -EINVAL (said why). */
static int stream_option(int c, struct pirec_eyesim_settings *s)
{
  switch (c) {
  case O_HOST: snprintf(s->host, sizeof s->host, "%s", optarg); return 0;
  case O_HTTP: s->http_port = atoi(optarg); return 0;
  case O_RTSP: s->rtsp_port = atoi(optarg); return 0;
  case O_HZ: s->gaze_hz = atoi(optarg); return 0;
  case O_GSIZE: s->gaze_size = atoi(optarg); return 0;
  case O_FPS: s->world_fps = atoi(optarg); return 0;
  case O_SIZE:
    if (sscanf(optarg, "%dx%d", &s->width, &s->height) != 2) {
      fprintf(stderr, "pirec-eyesim: --size '%s': expected WxH\n", optarg);
      return -EINVAL;
    }
    return 0;
  case O_NOWORLD: s->world = 0; return 0;
  case O_NOEVENTS: s->events = 0; return 0;
  case O_FFMPEG: snprintf(s->ffmpeg, sizeof s->ffmpeg, "%s", optarg); return 0;
  case O_DRIFT: s->drift_ppm = atoi(optarg); return 0;
  case O_SRI: s->sr_interval_ns = (int64_t)atoi(optarg) * 1000000; return 0;
  case O_SR1: s->first_sr_ns = (int64_t)atoi(optarg) * 1000000; return 0;
  case O_OFFSET: s->clock_offset_ns = (int64_t)(atof(optarg) * 1e6); return 0;
  case O_ECHOPORT: s->echo_port = atoi(optarg); return 0;
  case O_NOECHO: s->no_time_echo = 1; return 0;
  default: return 1;
  }
}

/* Faults to inject and logs to keep: 1 when c is not one of them, else 0. */
static int fault_option(int c, struct pirec_eyesim_settings *s)
{
  switch (c) {
  case O_LOSS: s->loss = atof(optarg); return 0;
  case O_MAL: s->malformed = atof(optarg); return 0;
  case O_BADSDP: s->bad_sdp = 1; return 0;
  case O_CHUNKED: s->chunked_status = 1; return 0;
  case O_DAT: s->disconnect_at_ns = seconds_ns(optarg); return 0;
  case O_DFOR: s->disconnect_for_ns = seconds_ns(optarg); return 0;
  case O_SEED: s->seed = (uint32_t)strtoul(optarg, NULL, 10); return 0;
  case O_GLOG: snprintf(s->gaze_log, sizeof s->gaze_log, "%s", optarg); return 0;
  case O_WLOG: snprintf(s->world_log, sizeof s->world_log, "%s", optarg); return 0;
  case O_ELOG: snprintf(s->events_log, sizeof s->events_log, "%s", optarg); return 0;
  case O_ALOG: snprintf(s->api_log, sizeof s->api_log, "%s", optarg); return 0;
  case O_REFUSE: snprintf(s->refuse_recording, sizeof s->refuse_recording, "%s", optarg); return 0;
  case O_FAILEV: s->fail_events = atoi(optarg); return 0;
  case O_SILENT: s->echo_silent = 1; return 0;
  default: return 1;
  }
}

/* Parses the options into s and *duration. Returns 0, 1 after --help or --version, or -EINVAL (said why). */
static int parse_args(int argc, char **argv, struct pirec_eyesim_settings *s, double *duration)
{
  int c;
  while ((c = getopt_long(argc, argv, "h", eyesim_opts, NULL)) != -1) {
    int r = stream_option(c, s);
    if (r == 1)
      r = fault_option(c, s);
    if (r < 0)
      return r;
    if (r == 0)
      continue;
    switch (c) {
    case O_DUR: *duration = atof(optarg); break;
    case 'h': usage(stdout); return 1;
    case 'V': printf("pirec-eyesim %s\n", PIREC_VERSION); return 1;
    default: usage(stderr); return -EINVAL;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return -EINVAL;
  }
  return 0;
}

int main(int argc, char **argv)
{
  struct pirec_eyesim_settings s;
  double duration = 0;
  pirec_eyesim_settings_default(&s);
  int r = parse_args(argc, argv, &s, &duration);
  if (r != 0)
    return r > 0 ? 0 : 2;
  struct app a = {0};
  uv_loop_init(&a.loop);
  r = pirec_eyesim_new(&a.loop, &s, &a.sim);
  if (r < 0) {
    fprintf(stderr, "pirec-eyesim: cannot start: %s\n", pirec_strerror(r));
    uv_run(&a.loop, UV_RUN_DEFAULT);
    uv_loop_close(&a.loop);
    return 1;
  }
  int hp, rp;
  pirec_eyesim_ports(a.sim, &hp, &rp);
  printf("pirec-eyesim http=%d rtsp=%d echo=%d\n", hp, rp, pirec_eyesim_echo_port(a.sim));
  fflush(stdout);
  run_watch(&a.run, &a.loop, duration, on_stop);
  static const int ok = 0;
  return run_exit(&a.loop, "pirec-eyesim", &ok);
}
