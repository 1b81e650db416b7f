#ifndef PIREC_EYETRACKER_INT_H
#define PIREC_EYETRACKER_INT_H

/* Internal to recorders/eyetracker: the client's state shared by its files, and the calls between
 * them. Everything runs on the loop thread. The files form layers; each calls only those above it
 * in this list (see CMakeLists.txt):
 *   core.c        the event report, socket addresses, writes, the close count
 *   rows.c        one sample's row into the trial's files, or into the backlog while no trial
 *                 writes it (trial change, pre-trigger, the scene's current GOP), and the replay
 *   trial.c       per-trial files: sinks, headers, the scene video's seal
 *   streams.c     RTP payloads of the gaze, world and eye-event streams, RTCP, loss accounting
 *   udp.c         RTP and RTCP over UDP for servers that refuse interleaving
 *   rtsp-client.c the RTSP state machine, failure and reconnect of each stream
 *   echo.c        the Time Echo protocol: offset estimates, their rows in the clock file
 *   api.c         POSTs to the device (events, recording control): queue, retries
 *   status.c      the device HTTP API (/api/status)
 *   discovery.c   address = auto: mDNS glue
 *   eyetracker.c  settings and the public API (include/pirec/eyetracker.h)
 */

#include "pirec/backlog.h"
#include "pirec/bytebuf.h"
#include "pirec/eyetracker.h"
#include "pirec/crypt.h"
#include "pirec/fs.h"
#include "pirec/gaze.h"
#include "pirec/rowgate.h"

#include "h264.h"
#include "mkv.h"
#include "rtcp.h"
#include "rtp.h"
#include "rtsp.h"

#include <stdarg.h>
#include <stdint.h>
#include <uv.h>

#define NS_MS 1000000LL
#define NS_S  1000000000LL

enum kind { GAZE = 0, WORLD = 1, EVENTS = 2, NSTREAMS = 3 };
/* Backlog record kinds: the streams' samples, and a stream's RTCP Sender Report (clock row). */
enum { REC_CLOCK = NSTREAMS };
#define REC_KEYFRAME 1u /* backlog flag: a scene access unit that starts a GOP */

/* What a row needs beyond its arrival time (mono_ns is the backlog's stamp or st->rx_mono). */
struct gaze_rec {
  int64_t wall, dev;
  struct pirec_gaze_sample g;
  uint32_t rtp_ts;
  uint64_t seq, dropped;
};
struct event_rec {
  int64_t wall, dev;
  struct pirec_gaze_event e;
  uint32_t rtp_ts;
  uint64_t seq, dropped;
};
struct clock_rec {
  int64_t wall, dev, offset, drift;
  uint32_t rtp_ts;
  int stream; /* enum kind */
};
/* followed in the backlog by len bytes of the access unit */
struct scene_rec {
  int64_t wall, dev, ext; /* ext: the extended RTP timestamp (presentation times) */
  uint64_t seq, dropped;
  uint32_t clock_rate;
  int keyframe, params; /* an IDR picture; SPS and PPS come with it */
  size_t len;
};

enum state {
  S_IDLE = 0, /* not started, or waiting for the retry timer */
  S_CONNECTING,
  S_OPTIONS,
  S_DESCRIBE,
  S_SETUP,
  S_PLAY,
  S_PLAYING,
  S_CLOSING, /* the socket is closing; then a retry is scheduled */
};

struct stream {
  struct pirec_eyetracker *et;
  enum kind kind;
  const char *label;
  enum state state;
  uv_tcp_t tcp;
  int tcp_open;
  /* RTP and RTCP over UDP, for servers that refuse interleaving (461 to the TCP SETUP); sticky. */
  int use_udp;
  int udp_open;
  uv_udp_t udp[2];
  uint8_t udp_buf[65536];
  uv_connect_t connect_req;
  uv_timer_t timer; /* retry delay, or the watchdog while connected */
  struct pirec_rtsp_framer framer;
  int cseq;
  char url[PIREC_EYETRACKER_URL_MAX];     /* the presentation URL (DESCRIBE, PLAY) */
  char control[PIREC_EYETRACKER_URL_MAX]; /* the media's URL (SETUP) */
  char session[128];
  int pt;
  uint32_t clock_rate;
  char encoding[64];
  int64_t state_since;
  int64_t last_rx, last_keepalive;
  int64_t keepalive_ns; /* half the server's session timeout; 20 s when it names none */
  int64_t backoff_ns;
  int fails_in_row;  /* connects that failed since the stream last played */
  unsigned addr_gen; /* the et->addr_gen st->url was made for */
  char last_msg[400];

  /* this session */
  struct pirec_rtcp_clock clock;
  struct pirec_rtp_seq seq;
  int have_ssrc;
  uint32_t ssrc;
  int64_t rx_mono, rx_wall; /* arrival stamps of the bytes being parsed */

  /* across sessions: how to count what a disconnect lost */
  int had_data;
  uint32_t prev_ssrc, prev_ts;
  uint16_t prev_seq;
  int64_t prev_rx_mono;
  int64_t au_mono;        /* the last scene frame's arrival stamp, as written (see pirec__et_scene_au) */
  int64_t interval_ticks; /* mean timestamp step between consecutive samples/frames */
  int64_t sum_dticks, n_dticks;
  int gap_check; /* the next packet is the first after a reconnect */

  /* clock log */
  int have_sr0;
  int64_t sr0_dev, sr0_mono, last_clock_log;

  /* world */
  struct pirec_h264_depay depay;
  int64_t lost_since_au;
  int have_prev_au;
  int64_t prev_au_ext;

  uint64_t pending_drop;       /* samples or frames lost since the last row written */
  uint64_t handover_discarded; /* received during a trial change and not kept: the next trial's */
  uint64_t backlog_missed;     /* idle samples the backlog could not take (pre-trigger too small) */
  uint64_t received;           /* samples received in this process's life (status counts restart per trial) */
  struct pirec_eyetracker_stream_status st;
};

/* Time Echo exchanges per estimate (echo.c): ECHO_ROUNDS, more (up to ECHO_MAX_ROUNDS) while the
 * offset is not yet pinned to ECHO_GOOD_NS either side (a loaded host stretches round trips). */
#define ECHO_ROUNDS     32
#define ECHO_MAX_ROUNDS 96
#define ECHO_GOOD_NS    (NS_MS / 2)

/* One queued POST (api.c). */
struct api_req {
  char path[40];
  char *body; /* JSON, malloc'ed */
  int attempts, max_attempts;
  int is_event;
  int64_t not_before; /* CLOCK_MONOTONIC: a retry waits until then */
  pirec_eyetracker_recording_cb cb;
  void *user;
};

struct pirec_eyetracker {
  uv_loop_t *loop;
  struct pirec_crypt_session crypt; /* the trial files' encryption */
  struct pirec_eyetracker_settings s;
  pirec_eyetracker_event_cb on_event;
  void *user;
  struct stream streams[NSTREAMS];
  int started;
  /* Called when a stream failed REDISCOVER_AFTER connects in a row: the address may be stale.
   * Set by the client to the discovery's pirec__et_rediscover, so the RTSP layer need not call
   * up into the discovery layer. */
  void (*unreachable)(struct pirec_eyetracker *et);

  /* HTTP status */
  uv_tcp_t http;
  uv_connect_t http_connect;
  uv_timer_t http_timer;
  int http_busy;
  struct pirec_mdns *mdns; /* address = auto: the discovery under way */
  int64_t mdns_backoff_ns;
  int auto_address;  /* address = auto: the host came from mDNS and may be looked up again */
  int found;         /* a lookup has answered: later ones are re-discoveries */
  unsigned addr_gen; /* bumped when the device's address changes; stale URLs are remade */
  uint64_t rediscoveries, address_changes;
  char status_url[NSTREAMS][PIREC_EYETRACKER_URL_MAX]; /* from /api/status for addr_gen, or "" */
  uint64_t status_ok, status_failed;
  char *http_buf;
  size_t http_len, http_cap;

  /* POSTs (api.c): a ring of queued requests, the head one in flight while api_busy */
  struct api_req api_q[PIREC_EYETRACKER_API_QUEUE];
  size_t api_head, api_n;
  uv_tcp_t api_tcp;
  uv_connect_t api_connect;
  uv_timer_t api_timer; /* the request's timeout, or a retry's delay */
  int api_busy;
  char api_failure[160]; /* why the request in flight failed, "" while it has not */
  struct pirec_bytebuf api_in;
  uint64_t events_sent, events_failed, events_dropped, events_retried;

  /* Time Echo (echo.c) */
  int echo_port;
  uv_tcp_t echo_tcp;
  uv_connect_t echo_connect;
  uv_timer_t echo_timer; /* the burst's timeout, or the wait for the next burst */
  int echo_busy, echo_round;
  uint8_t echo_in[16];
  size_t echo_have;
  int64_t echo_t1_wall, echo_t1_mono;
  uint64_t echo_t1_ms;
  int64_t echo_off[ECHO_MAX_ROUNDS], echo_rtt[ECHO_MAX_ROUNDS], echo_lo[ECHO_MAX_ROUNDS],
      echo_hi[ECHO_MAX_ROUNDS];
  int echo_pacing; /* echo_timer waits before the next round, not for an answer */
  char echo_failure[160];
  uint64_t echo_estimates, echo_failures;
  int64_t echo_offset_ns, echo_rtt_ns, echo_uncertainty_ns;

  /* trial */
  int recording;
  int stopping;
  int trial;
  /* A trial change (pirec_eyetracker_hand_over): between the stop and the next start, every
   * sample is kept in the backlogs for the next trial, which starts at handover_mono. */
  int handover;
  int64_t handover_mono;
  /* The backlogs (rows.c): the scene video's access units from the current GOP on (from the
   * keyframe at or before now - pre_trigger while idle), and, while idle with a pre-trigger or
   * during a trial change, the other streams' samples. Made by pirec_eyetracker_new. */
  struct pirec_backlog *bl_video, *bl_rows;
  int bl_need_key;            /* the scene lost a frame: the backlog waits for the next keyframe */
  int64_t bl_last_trim;       /* the rows backlog is trimmed at most every 10 ms */
  int64_t trial_start_mono;   /* the instant the running trial started (before_start is older) */
  uint64_t scene_before_held; /* scene rows from before the start waiting in the scene gate */
  struct pirec_sink *gaze_sink, *frames_sink, *video_sink, *clock_sink, *events_sink;
  struct pirec_mkv *mkv;
  struct pirec_sink *video_closing; /* the scene sink between its close and its close callback */
  struct pirec_rowgate *scene_gate; /* scene frame rows waiting for their frames' writes */
  struct pirec_mkv_sealer sealer;   /* seals the scene file of a clean trial (mkv.h) */
  /* Scene segments (trial.c): the current file's number (0: segments off), where its first frame
   * was captured, and the previous file's set while it closes, the trial going on in the next. */
  int scene_segment;
  int scene_seg_started;
  int64_t scene_seg_t0;
  char trial_dir[4096];
  char trial_base[32];
  struct scene_old {
    struct pirec_sink *video, *frames;
    struct pirec_mkv *mkv;
    struct pirec_rowgate *gate;
    struct pirec_mkv_sealer sealer;
    char path[4200]; /* the video's, for the seal */
    int open;        /* closes and the seal outstanding; 0: no set is closing */
  } scene_old;
  int stop_waits_old;              /* the trial's stop is done once the previous segment's files are */
  struct pirec_fs_req empty_video; /* removes the scene file of a trial that got no frame */
  int have_pts0;
  int64_t pts0_ext, last_pts_ns, last_pts_mono;
  uint64_t frame_index;
  int need_key; /* after a start, a gap or a damaged unit: write again from the next IDR */
  int sinks_open;
  int stop_err;
  pirec_eyetracker_stopped_cb stop_cb;
  void *stop_user;
  uint64_t sink_drops;
  int write_error;
  uint64_t bytes_video;

  int closing;
  int pending;
  pirec_eyetracker_close_cb close_cb;
  void *close_user;
};

/* Trial sink rings, sized for about 10 s of a Neon's output each (gaze rows ~70 KB/s, scene video up
 * to ~0.8 MB/s): every page of an arena is backed when it is made, so oversizing them costs memory
 * and, when no prepared arena is ready, loop time at trial start. */
#define SCENE_RING_BYTES ((size_t)8 << 20)
/* Scene frame rows waiting for their frames' writes (~130 bytes each): 2000 frames behind a stall. */
#define SCENE_GATE_BYTES ((size_t)256 << 10)
#define GAZE_RING_BYTES  ((size_t)1 << 20)
#define SMALL_RING_BYTES ((size_t)256 << 10)
/* Backlog sizes (pirec_eyetracker_settings.pre_trigger_ns = N s): the scene video at up to
 * 1 MiB/s for N s plus two GOPs (at least 4 MiB); other samples (~200 B each, 200 Hz of gaze plus
 * eye events and clock reports) at 64 KiB/s for N s plus 4 s (a trial change takes milliseconds). */
#define BACKLOG_VIDEO_PER_S ((size_t)1 << 20)
#define BACKLOG_VIDEO_MIN   ((size_t)4 << 20)
#define BACKLOG_ROWS_PER_S  ((size_t)64 << 10)
#define BACKLOG_ROWS_MIN    ((size_t)256 << 10)

#define MDNS_KEY            "[eyetracker] address = IP:8080 (the Neon Companion app shows the IP under 'Stream')"

/* ---- trial.c: test hook (tests include this header) ---- */

/* Test hook: while held, the trial's file sinks write nothing (see pirec_sink_hold), so once their
 * rings are full rows are refused. Releasing resumes writing. Applies to the running trial only;
 * no-op without one. */
void pirec_eyetracker_hold_sinks(struct pirec_eyetracker *et, int hold);

/* ---- rows.c ---- */

/* 1 while a trial change keeps samples for the next trial (no trial records meanwhile). */
int pirec__et_handing_over(const struct pirec_eyetracker *et);
/* Makes the backlogs for et->s (pirec_eyetracker_new). 0 or -ENOMEM. */
int pirec__et_backlog_new(struct pirec_eyetracker *et);
/* One decoded sample of st (GAZE: struct gaze_rec, EVENTS: struct event_rec), received at
 * st->rx_mono, its dropped field not yet set: counted, then written into the trial's file, kept
 * in the backlog, or only counted as idle. st->pending_drop goes with it. */
void pirec__et_sample(struct stream *st, void *rec, size_t len);
/* A Sender Report's clock row of st: written, kept, or nothing outside a trial. */
void pirec__et_clock_row(struct stream *st, struct clock_rec *rec);
/* A complete, undamaged scene access unit: written, kept, or counted. */
void pirec__et_scene_au(struct stream *st, struct scene_rec *rec, const uint8_t *au);
/* The scene lost frames: what follows waits for a keyframe, in the file and in the backlog. */
void pirec__et_scene_gap(struct pirec_eyetracker *et);
/* At a trial start (sinks open, counters reset): the backlog's rows go first into the trial's
 * files, those older than start_mono marked before_start; what a trial change kept is the
 * trial's own. */
void pirec__et_backlog_replay(struct pirec_eyetracker *et, int64_t start_mono);

/* streams.c: the scene frames' rows wait in et->scene_gate until their frames are written whole in
 * the scene MKV (a row never precedes its frame on disk; a frame whose write failed gets no row).
 * _open: the gate for a trial with a scene sink. _settle: the scene sink closed (video is it,
 * inside its close callback): the rows of the frames in the file go to the frames CSV, the others
 * count as discarded and in the scene stream's dropped_after. _free: at the trial's end. */
int pirec__et_scene_gate_open(struct pirec_eyetracker *et);
void pirec__et_scene_settle(struct pirec_eyetracker *et, struct pirec_sink *video);
/* The same for the previous segment's files (et->scene_old) once its video is closed: its rows go
 * to its frames CSV; what was lost after its last row goes on the trial's next row. */
void pirec__et_scene_settle_old(struct pirec_eyetracker *et, struct pirec_sink *video);
/* trial.c: a scene frame rec (a keyframe with parameter sets, received at mono) is about to be
 * written: when the current segment is long (by the stream's own clock, whose frame intervals do
 * not jitter as arrivals do) or large enough, the next segment's files take it.
 * Returns 0, or a negative errno when the next files cannot be opened (the current ones go on). */
int pirec__et_scene_segment(struct pirec_eyetracker *et, int64_t mono, const struct scene_rec *rec);
void pirec__et_scene_gate_free(struct pirec_eyetracker *et);

/* ---- core.c ---- */

/* Reports an event to the user's callback, or logs it when there is none. */
void pirec__et_emit(struct pirec_eyetracker *et, enum pirec_eyetracker_event ev, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pirec__et_vemit(struct pirec_eyetracker *et, enum pirec_eyetracker_event ev, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Fills a sockaddr for host (an IP literal, or "localhost") and port. 0 or -EINVAL. */
int pirec__et_make_addr(const char *host, int port, struct sockaddr_storage *ss);
/* Writes a copy of data[0..n) to s; the copy is freed when the write is done. 0 or a libuv error. */
int pirec__et_write(uv_stream_t *s, const char *data, size_t n);
/* The stream's URL from the settings, "" when it follows the device. */
const char *pirec__et_configured_url(const struct pirec_eyetracker *et, enum kind k);
/* Finishes pirec_eyetracker_close once nothing is pending: frees et. */
void pirec__et_maybe_closed(struct pirec_eyetracker *et);

/* ---- streams.c ---- */

/* One RTP packet of the stream's data channel, or one RTCP packet, received at st->rx_mono. */
void pirec__et_data_packet(struct stream *st, const uint8_t *buf, size_t len);
void pirec__et_rtcp_packet(struct stream *st, const uint8_t *buf, size_t len);

/* ---- udp.c ---- */

/* Binds two UDP sockets on consecutive ports (RTP even, RTCP odd) on the address family of the
 * RTSP connection. Returns the RTP port or a negative error (the caller fails the stream, which
 * closes what was opened). */
int pirec__et_open_udp(struct stream *st);
/* Closes the stream's UDP sockets, if open. */
void pirec__et_close_udp(struct stream *st);

/* ---- rtsp-client.c ---- */

/* Connects every enabled stream that is idle and not waiting out a backoff. */
void pirec__et_start_streams(struct pirec_eyetracker *et);
/* The close callback of a stream's TCP handle: schedules the reconnect unless et is closing. */
void pirec__et_tcp_closed(uv_handle_t *h);

/* rows.c: a Time Echo estimate's row in the running trial's clock file (nothing outside one). */
void pirec__et_echo_row(struct pirec_eyetracker *et, int64_t mono, int64_t wall, int64_t offset, int64_t rtt);

/* ---- echo.c ---- */

/* Initialises the echo's handles (pirec_eyetracker_new) and closes them (close; counts pending). */
void pirec__et_echo_init(struct pirec_eyetracker *et);
void pirec__et_echo_close(struct pirec_eyetracker *et);
/* /api/status named the echo port: a first estimate now, then every time_echo_interval. */
void pirec__et_echo_port(struct pirec_eyetracker *et, int port);

/* ---- api.c ---- */

void pirec__et_api_init(struct pirec_eyetracker *et);
/* Closes the connection in flight, answers every queued command with -ECANCELED (counts pending). */
void pirec__et_api_close(struct pirec_eyetracker *et);

/* ---- status.c ---- */

/* Asks for /api/status; the streams start when it has finished, whatever the outcome. */
void pirec__et_fetch_status(struct pirec_eyetracker *et);
/* The close callback of the status connection. */
void pirec__et_http_closed(uv_handle_t *h);

/* ---- discovery.c ---- */

int pirec__et_needs_discovery(const struct pirec_eyetracker_settings *s);
void pirec__et_discover(struct pirec_eyetracker *et);
void pirec__et_rediscover(struct pirec_eyetracker *et);
void pirec__et_mdns_closed(struct pirec_mdns *m, void *user);

#endif
