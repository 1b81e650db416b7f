#ifndef PIREC_EYESIM_H
#define PIREC_EYESIM_H

/* A simulator of the Pupil Labs Neon's realtime API on loopback, for tests and demos: GET
 * /api/status over HTTP, RTSP sessions streaming gaze (com.pupillabs.gaze1), eye events and world
 * video (H.264 from an ffmpeg child encoding a lavfi source), RTP and RTCP interleaved on the RTSP
 * connection, with fault modes. The client it stands in front of is pirec/eyetracker.h. */

#include <stdint.h>
#include <uv.h>

struct pirec_eyesim_settings {
  char host[64]; /* bind address: only "127.0.0.1" or "::1" are accepted */
  int http_port; /* 0: any free port (pirec_eyesim_ports tells which) */
  int rtsp_port;
  int gaze_hz;               /* 200; must divide 90000 */
  int gaze_size;             /* payload layout: 9, 17, 65 or 89 */
  int world;                 /* serve world video (needs ffmpeg); 1 */
  int events;                /* serve eye events (a fixation cycle every 100 ms, a blink every 2 s); 1 */
  int world_fps;             /* 30 */
  int width, height;         /* 320x240 */
  char ffmpeg[256];          /* "ffmpeg" */
  double loss;               /* probability a gaze sample is not sent */
  double malformed;          /* probability a gaze sample is sent broken (truncated, wrong size, bad RTP) */
  int bad_sdp;               /* DESCRIBE answers an SDP without rtpmap */
  int chunked_status;        /* /api/status answers with Transfer-Encoding: chunked */
  int64_t disconnect_at_ns;  /* > 0: after this long since start, drop every connection ... */
  int64_t disconnect_for_ns; /* ... and refuse new ones for this long */
  int64_t sr_interval_ns;    /* RTCP Sender Report period; 1 s */
  int64_t first_sr_ns;       /* first report this long after PLAY; 500 ms */
  int drift_ppm;             /* the device clock runs this much fast against CLOCK_MONOTONIC */
  uint32_t seed;
  char gaze_log[512];   /* "" or a CSV: seq,rtp_ts,device_ns,x,y,fate (sent|lost|malformed|down|idle) */
  char world_log[512];  /* "" or a CSV: frame,rtp_ts,device_ns,bytes,fate */
  char events_log[512]; /* "" or a CSV: seq,rtp_ts,device_ns,event,fate */
  /* The control API (docs/EYETRACKER.md, "Driving the device"): */
  char api_log[512];          /* "" or a CSV of every POST: rx_mono_ns,rx_device_ns,path,name,
                                 timestamp_ns,code (rx_mono_ns: this host's CLOCK_MONOTONIC) */
  char refuse_recording[200]; /* "": recording:start succeeds; else it is refused with this message */
  int fail_events;            /* the first N POST /api/event are answered 503 (retry tests) */
  int64_t clock_offset_ns;    /* the device clock's offset from this host's CLOCK_REALTIME at start */
  int echo_port;              /* Time Echo TCP port (0: any free one; announced in /api/status) */
  int no_time_echo;           /* no echo server: /api/status announces time_echo_port 0 */
  int echo_silent;            /* the echo server reads requests and never answers */
};

void pirec_eyesim_settings_default(struct pirec_eyesim_settings *s);

struct pirec_eyesim;

/* Creates the simulator, binds both listeners and spawns the video encoder (a restart follows 1 s
 * after it dies). Loop thread only, like every function below. Returns 0 and *out, -EINVAL (not a
 * loopback address, bad rate or size), or the bind/spawn error (then nothing is left running). */
int pirec_eyesim_new(uv_loop_t *loop, const struct pirec_eyesim_settings *s, struct pirec_eyesim **out);
void pirec_eyesim_ports(const struct pirec_eyesim *sim, int *http_port, int *rtsp_port);
/* The Time Echo port, 0 without one. */
int pirec_eyesim_echo_port(const struct pirec_eyesim *sim);

struct pirec_eyesim_counters {
  uint64_t gaze_generated, gaze_sent, gaze_lost, gaze_malformed, gaze_down, gaze_idle;
  uint64_t frames_generated, frames_sent;
  uint64_t events_generated, events_sent;
  uint64_t connections, sessions_played, disconnects_forced, http_requests;
  uint64_t api_events, recordings_started, recordings_saved, recordings_cancelled, echoes;
};
void pirec_eyesim_counters(const struct pirec_eyesim *sim, struct pirec_eyesim_counters *out);

/* Closes every connection, stops the encoder (SIGTERM), flushes the logs, calls cb (never inside
 * this call), then frees sim. NULL is a no-op. */
typedef void (*pirec_eyesim_close_cb)(struct pirec_eyesim *sim, void *user);
void pirec_eyesim_close(struct pirec_eyesim *sim, pirec_eyesim_close_cb cb, void *user);

#endif
