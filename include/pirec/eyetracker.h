#ifndef PIREC_EYETRACKER_H
#define PIREC_EYETRACKER_H

/* The eye tracker: gaze samples and scene video from a Pupil Labs Neon or Invisible over its
 * realtime API. Its simulator, for tests and demos, is pirec/eyesim.h.
 *
 * Client (struct pirec_eyetracker). Everything runs on one libuv loop, no thread of its own:
 *   - GET /api/status over HTTP once per connection attempt (logged; its sensor list, when present,
 *     names the RTSP URLs; otherwise rtsp://HOST:RTSP_PORT/?camera=gaze|world are used);
 *   - one RTSP session per stream (gaze, world, eye_events), RTP and RTCP interleaved on the RTSP TCP
 *     connection (no UDP ports); OPTIONS keep-alives every 20 s;
 *   - every RTP packet is stamped with CLOCK_MONOTONIC and CLOCK_REALTIME in the read callback
 *     that received it (before anything else is done with it), and with the device's absolute time
 *     from its RTP timestamp and the latest RTCP Sender Report (empty before the first report);
 *   - a lost connection, a read error, an error reply, a bad SDP or 3 s without data tears the
 *     stream down and reconnects after reconnect_min, doubling up to reconnect_max. Samples lost in
 *     between are counted (from RTP sequence numbers when the SSRC survives the reconnect, else
 *     estimated from the arrival gap) and appear in dropped_before and as events.
 *
 * Per trial, in the directory given to trial_start (tNNN becomes tNNN_pP when part > 0):
 *   tNNN_gaze.csv          one row per gaze sample (columns: pirec_gaze_columns in gaze.h)
 *   tNNN_scene.mkv         the world camera's H.264 access units, stream-copied (never decoded)
 *   tNNN_scene_frames.csv  trial,mono_ns,wall_ns,frame,seq,device_ts_ns,dropped_before,bytes,offset
 *                          one row per packet in tNNN_scene.mkv, in order (offset is empty)
 *   tNNN_eye_events.csv   one row per eye event (fixation, saccade, their onsets, blink; columns:
 *                          pirec_gaze_event_columns in gaze.h); keep-alives are not rows
 *   tNNN_eye_clock.csv     trial,mono_ns,wall_ns,stream,rtp_ts,device_ns,offset_ns,drift_ppb: one
 *                          row per RTCP Sender Report; offset_ns = device_ns - wall_ns at arrival,
 *                          drift_ppb = the device clock's rate against CLOCK_MONOTONIC since the
 *                          connection's first report (parts per billion)
 * Every CSV ends with before_start: 1 for rows received before the trial's start (written first,
 * with their own times), 0 for the trial's own. The scene file must start decodable, with an
 * access unit holding SPS, PPS and an IDR slice: the client keeps the current GOP (and, with
 * pre_trigger_ns, the last seconds of every stream) in preallocated backlogs, and a trial's files
 * begin with them. Access units damaged by loss or malformed packets are dropped and counted,
 * never written half; after such a gap the video resumes at the next IDR.
 *
 * Errors are negative errno values; messages name the URL, the reply or the value that was wrong.
 * Threads: every function on the loop thread. Counters: pirec_eyetracker_status().
 */

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* ---- client ---- */

#define PIREC_EYETRACKER_HOST_MAX 256
#define PIREC_EYETRACKER_URL_MAX  512

struct pirec_eyetracker_settings {
  char name[64];                           /* "eyetracker": log lines and events */
  char host[PIREC_EYETRACKER_HOST_MAX];    /* an IPv4/IPv6 literal or a name; "auto": see below */
  int http_port;                           /* 8080 */
  int rtsp_port;                           /* 8086 */
  char gaze_url[PIREC_EYETRACKER_URL_MAX]; /* "" (default): from the status or the port */
  char world_url[PIREC_EYETRACKER_URL_MAX];
  char events_url[PIREC_EYETRACKER_URL_MAX];
  int gaze, world, events;                    /* streams to record; all 1 by default (events: Neon's
                                             eye_events stream; a device without it is retried
                                             with backoff and reported once) */
  int64_t reconnect_min_ns, reconnect_max_ns; /* 1 s, 30 s */
  int64_t stall_timeout_ns;                   /* no packet for this long means gone; 3 s */
  int64_t clock_log_interval_ns;              /* offset and drift logged this often; 10 s */
  unsigned fsync_interval_ms;                 /* file sinks; 1000; PIREC_SINK_FSYNC_NEVER (0): only
                                             when a file is closed */
  size_t sink_ring_bytes;                     /* 0 (default): each trial sink's ring sized for its file;
                                             else every one this size (tests: a small ring makes
                                             rows refused) */
  int64_t pre_trigger_ns;     /* 0 (default): while no trial runs, keep this much of every stream
                                   (the scene from the keyframe at or before it) and write it first
                                   into the next trial, rows marked before_start (docs/FORMATS.md) */
  size_t backlog_video_bytes; /* 0 (default): sized from pre_trigger_ns (eyetracker-int.h) */
  size_t backlog_rows_bytes;  /* 0 (default): likewise, for gaze, eye events and clock rows */
  /* Scene video segments (docs/FORMATS.md): the trial's scene video and its frames CSV are split
   * into tNNN_scene_sMMM.mkv with tNNN_scene_sMMM_frames.csv (MMM from 001) once segment_ns of
   * video (from the file's first frame) or segment_bytes are reached, at the next keyframe with
   * parameter sets; the rows go on across the files. Gaze, eye events and clock rows stay one file
   * per trial. 0 and 0 (default): one scene file per trial, tNNN_scene.mkv. */
  int64_t segment_ns;
  uint64_t segment_bytes;
  /* Driving the device (docs/EYETRACKER.md, "Driving the device"): */
  int time_echo;                 /* 1 (default): estimate the clock offset with the Time Echo
                                     protocol when /api/status names its port */
  int64_t time_echo_interval_ns; /* a new estimate this often; 10 s (0: the default) */
  int64_t api_timeout_ns;        /* one POST or echo burst may take this long; 3 s */
  int event_attempts;            /* tries per event before it counts as failed; 3 */
};

/* Fills s with the defaults above (host "auto"). */
void pirec_eyetracker_settings_default(struct pirec_eyetracker_settings *s);

/* Parses "HOST:PORT" (the config's eyetracker.address; "[v6]:PORT" accepted) into host and
 * http_port, or "auto". Returns 0 or -EINVAL. */
int pirec_eyetracker_settings_set_address(struct pirec_eyetracker_settings *s, const char *address);

struct pirec_eyetracker;

enum pirec_eyetracker_event {
  PIREC_EYETRACKER_EVENT_CONNECTED = 1, /* a stream is playing (message says which, and the gap) */
  PIREC_EYETRACKER_EVENT_DISCONNECTED,  /* a stream was lost; reconnecting with backoff */
  PIREC_EYETRACKER_EVENT_ERROR,         /* a protocol or data error (bad SDP, error reply, ...) */
  PIREC_EYETRACKER_EVENT_WRITE_ERROR,   /* a file sink failed; the trial keeps what it has */
  PIREC_EYETRACKER_EVENT_SEGMENT,       /* a new scene segment's files begin (message names them) */
};

/* Runs on the loop thread; message (lowercase, subject quoted) is valid during the call. */
typedef void (*pirec_eyetracker_event_cb)(struct pirec_eyetracker *et, enum pirec_eyetracker_event event,
                                          const char *message, void *user);
typedef void (*pirec_eyetracker_stopped_cb)(struct pirec_eyetracker *et, int err, void *user);
typedef void (*pirec_eyetracker_close_cb)(struct pirec_eyetracker *et, void *user);

/* Creates a client (nothing runs yet; nothing is allocated on failure); s is copied. on_event may
 * be NULL (events are then logged).
 * Returns 0 and *out, -EINVAL (no stream enabled, bad port), -ENOTSUP (host "auto": mDNS
 * discovery is not built in; the message logged says to set eyetracker.address), -ENOMEM. */
int pirec_eyetracker_new(uv_loop_t *loop, const struct pirec_eyetracker_settings *s,
                         pirec_eyetracker_event_cb on_event, void *user, struct pirec_eyetracker **out);

/* Starts connecting. Samples that arrive outside a trial are counted (idle) and discarded.
 * Connection failures are not errors here: they are retried. Returns 0 or -EALREADY. */
int pirec_eyetracker_start(struct pirec_eyetracker *et);

/* Starts writing trial `trial` into dir (created if missing). Returns 0, -EBUSY (a trial runs or
 * is stopping), or the error creating the sinks (then no trial runs). */
int pirec_eyetracker_trial_start(struct pirec_eyetracker *et, const char *dir, int trial, int part);

/* Encrypts the files of the trials started from now on under key (copied; NULL: clear files), the
 * files named by their path inside session_dir (docs/PRIVACY.md). Returns 0 or -ENOMEM. */
struct pirec_crypt_key;
int pirec_eyetracker_set_key(struct pirec_eyetracker *et, const struct pirec_crypt_key *key,
                             const char *session_dir);

/* Finishes the trial: the Matroska trailer is written, every file synced and closed, then cb runs
 * (never inside this call) with 0 or the first write error. Returns 0 or -EINVAL (no trial). */
int pirec_eyetracker_trial_stop(struct pirec_eyetracker *et, pirec_eyetracker_stopped_cb cb, void *user);

/* The next trial_start follows the trial_stop that comes next (a trial change): every sample
 * received from now until it (gaze, eye events, clock reports, scene frames) is kept in the
 * backlogs and written first into the next trial's files as its own rows, so every stream runs on
 * without a gap; the next trial's scene video begins at the keyframe before now (rows marked
 * before_start). Samples a full backlog cannot keep are counted as dropped before the next trial's
 * first rows. Call before trial_stop. */
void pirec_eyetracker_hand_over(struct pirec_eyetracker *et);

/* ---- driving the device (POST /api/event, /api/recording:*, Time Echo) ----
 *
 * Requests go out one at a time, in the order made, each on its own HTTP connection, from the
 * loop and never waited for: the calls below only queue (at most PIREC_EYETRACKER_API_QUEUE
 * requests). Nothing here touches the trial's files or delays a sample. */

#define PIREC_EYETRACKER_API_QUEUE 64
#define PIREC_EYETRACKER_EVENT_MAX 200 /* bytes of an event name; longer ones are cut */

/* Queues an event named name (cut to PIREC_EYETRACKER_EVENT_MAX bytes at a UTF-8 boundary) that
 * happened at host time wall_ns (CLOCK_REALTIME); its timestamp on the device's clock is wall_ns
 * plus the current offset estimate (pirec_eyetracker_device_offset). A failed POST (no answer
 * within api_timeout, a refused connection, a reply other than 200) is retried after 0.5 s, 1 s,
 * ... up to event_attempts tries, then counted in events_failed. Returns 0 or -ENOBUFS (queue
 * full: counted in events_dropped). */
int pirec_eyetracker_send_event(struct pirec_eyetracker *et, const char *name, int64_t wall_ns);

enum pirec_eyetracker_recording_cmd {
  PIREC_EYETRACKER_REC_START = 1, /* POST /api/recording:start: result is the recording's id */
  PIREC_EYETRACKER_REC_STOP_AND_SAVE,
  PIREC_EYETRACKER_REC_CANCEL,
};
/* Runs on the loop thread once the device answered (err 0; result: the id for START, "" else) or
 * refused (err -EPERM; result: the device's message) or could not be reached (err the libuv error,
 * -ETIMEDOUT, -EBADMSG, -ECANCELED at close; result says why). result lives during the call. */
typedef void (*pirec_eyetracker_recording_cb)(struct pirec_eyetracker *et, int err, const char *result,
                                              void *user);
/* Queues a recording command (tried once: a refusal is an answer, not a fault); cb (may be NULL)
 * runs exactly once, never inside this call, unless this returns an error: -ENOBUFS. */
int pirec_eyetracker_recording_cmd(struct pirec_eyetracker *et, enum pirec_eyetracker_recording_cmd cmd,
                                   pirec_eyetracker_recording_cb cb, void *user);

/* Starts a Time Echo estimate now (session start and stop) unless one is under way or the device
 * named no echo port; the periodic ones run on their own. */
void pirec_eyetracker_time_echo(struct pirec_eyetracker *et);

/* The offset (device clock - host CLOCK_REALTIME) events are converted with, and where it comes
 * from: "time_echo" (the last estimate), "rtcp" (the gaze stream's last Sender Report, which
 * includes the network delay), or "none" (0: the clocks are taken as synchronised). */
int64_t pirec_eyetracker_device_offset(const struct pirec_eyetracker *et, const char **method);

int pirec_eyetracker_recording(const struct pirec_eyetracker *et);

struct pirec_eyetracker_stream_status {
  int playing;               /* 1 while the RTSP session streams */
  uint64_t connects;         /* sessions that reached PLAY */
  uint64_t disconnects;      /* sessions lost */
  uint64_t connect_failures; /* attempts that failed before PLAY */
  uint64_t packets;          /* RTP packets received */
  uint64_t rtcp_sr;          /* Sender Reports received */
  uint64_t bad_packets;      /* RTP/RTCP that did not parse, wrong payload type */
  uint64_t bad_payloads;     /* gaze of a wrong size, malformed H.264 fragments, unknown events */
  uint64_t lost;             /* RTP packets missing by sequence number */
  uint64_t gap_samples;      /* samples/frames lost while disconnected (counted or estimated) */
  /* From here to idle the counts start at 0 with each trial and cover it and the time after its
   * stop until the next start. They add up exactly:
   *   samples = written + refused + discarded + idle
   *   rows in the trial's file = written, the sum of their dropped_before = dropped, and
   *   written + dropped + dropped_after = the samples the device sent in the trial (counting those
   *   lost on the way). */
  uint64_t samples;       /* gaze samples, access units or eye events received */
  uint64_t written;       /* rows written in the current/last trial */
  uint64_t refused;       /* rows the file sink refused (ring full, sink failed); each is
                                  counted in the next written row's dropped_before like a lost
                                  sample (scene frames: also a WRITE_ERROR event, since the frame
                                  is in the MKV without its row) */
  uint64_t discarded;     /* received in the trial but not written: scene frames damaged by
                                  loss, before the next keyframe, or the MKV refused (each also
                                  counts in the next row's dropped_before) */
  uint64_t dropped;       /* samples/frames counted in dropped_before this trial */
  uint64_t dropped_after; /* lost after the trial's last row, counted at its stop: no row
                                  follows to carry them in dropped_before */
  uint64_t idle;          /* received outside a trial (after its stop, before the next) */
  uint64_t before_start;  /* rows in the trial's file from before its start (before_start = 1):
                                  the scene's GOP up to the start, the pre-trigger buffer; not in
                                  samples or written (they were counted where they arrived) */
  int64_t offset_ns;      /* last device_ns - wall_ns at arrival; INT64_MIN before a report */
  int64_t drift_ppb;      /* device clock rate against CLOCK_MONOTONIC */
  int last_error;         /* the error that ended the last session or attempt, or 0 */
};

struct pirec_eyetracker_status {
  struct pirec_eyetracker_stream_status gaze, world, events;
  uint64_t status_ok, status_failed; /* HTTP /api/status requests */
  /* address = auto: lookups after the first (made when every 3rd connect in a row fails), and how
   * many of them found the device at a new address */
  uint64_t rediscoveries, address_changes;
  char host[PIREC_EYETRACKER_HOST_MAX]; /* the address in use ("auto" until discovery answers) */
  uint64_t bytes_video;
  uint64_t sink_drops; /* pushes the trial's sinks refused, added as each sink closes */
  int write_error;
  /* The backlogs (pre-trigger, the scene's current GOP, trial changes): bytes preallocated, held
   * now, the most held, and idle samples a full backlog could not keep (pre-trigger too long for
   * its memory). */
  uint64_t backlog_bytes, backlog_used, backlog_high_water, backlog_missed;
  /* Events sent to the device: answered 200, given up after event_attempts tries, refused for a
   * full queue, tries repeated; sent + failed + dropped + queued = events asked for. */
  uint64_t events_sent, events_failed, events_dropped, events_retried, events_queued;
  /* Time Echo: estimates made, bursts that failed, and the last estimate (offset_ns device - host,
   * INT64_MIN before the first; rtt_ns the best round trip of its burst; uncertainty_ns half the
   * width of the interval the offset was pinned to). */
  uint64_t echo_estimates, echo_failures;
  int64_t echo_offset_ns, echo_rtt_ns;
  int64_t echo_uncertainty_ns; /* the true offset lies within echo_offset_ns +- this */
  int echo_port;               /* from /api/status; 0: none named */
};

void pirec_eyetracker_status(const struct pirec_eyetracker *et, struct pirec_eyetracker_status *out);

/* Stops a running trial as trial_stop does (its files are complete when cb runs), closes every
 * connection and handle, calls cb (may be NULL; never inside this call), then frees et. Call
 * once; et is dead afterwards. NULL is a no-op. */
void pirec_eyetracker_close(struct pirec_eyetracker *et, pirec_eyetracker_close_cb cb, void *user);

#endif
