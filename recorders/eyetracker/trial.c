/* Per-trial files of the eye tracker: the sinks of a trial, their headers, and the scene video
 * sealed once its file is closed. */

#include "eyetracker-int.h"

#include "pirec/clock.h"
#include "pirec/csv.h"
#include "pirec/error.h"
#include "pirec/fs.h"
#include "pirec/gaze.h"
#include "pirec/log.h"
#include "pirec/sink.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void close_trial_sinks(struct pirec_eyetracker *et);

static void on_sink_error(struct pirec_sink *sink, int err, void *user)
{
  struct pirec_eyetracker *et = user;
  if (!et->write_error)
    et->write_error = err;
  pirec__et_emit(et, PIREC_EYETRACKER_EVENT_WRITE_ERROR, "cannot write '%s': %s", pirec_sink_path(sink),
                 pirec_strerror(err));
}

static int open_sink(struct pirec_eyetracker *et, const char *dir, const char *base, const char *suffix,
                     struct pirec_sink **out)
{
  char path[4096];
  int n = snprintf(path, sizeof path, "%s/%s%s", dir, base, suffix);
  if (n < 0 || (size_t)n >= sizeof path)
    return -ENAMETOOLONG;
  struct pirec_sink_options o;
  pirec_sink_options_default(&o);
  o.fsync_interval_ms = et->s.fsync_interval_ms;
  /* Rows in batches of 100 ms (20 gaze rows per write at 200 Hz, not one threadpool hand-off per
   * 1-2 rows: docs/PERFORMANCE.md, Eye tracker); the scene video is flushed per frame anyway. */
  o.drain_interval_ms = 100;
  /* The trial's directory is made by the opens, in the threadpool: never a mkdir on the loop. */
  o.mkdir_mode = 0755;
  size_t sl = strlen(suffix);
  if (sl > 4 && strcmp(suffix + sl - 4, ".mkv") == 0) /* the scene video, or a segment of it */
    o.ring_bytes = SCENE_RING_BYTES;
  else if (strcmp(suffix, "_gaze.csv") == 0)
    o.ring_bytes = GAZE_RING_BYTES;
  else
    o.ring_bytes = SMALL_RING_BYTES;
  if (et->s.sink_ring_bytes)
    o.ring_bytes = et->s.sink_ring_bytes;
  struct pirec_sink_transform tf;
  int r = pirec_crypt_session_sink(&et->crypt, path, &o, &tf);
  if (r == 0)
    r = pirec_sink_new(et->loop, path, &o, on_sink_error, et, out);
  if (r < 0)
    pirec_log(PIREC_LOG_ERROR, "%s: cannot create a sink for '%s': %s", et->s.name, path, pirec_strerror(r));
  return r;
}

/* Samples received during a trial change that the backlog could not keep are this trial's:
 * counted as received and discarded (they are in dropped_before already). */
static void handover_end(struct pirec_eyetracker *et)
{
  for (int k = 0; k < NSTREAMS; k++) {
    struct stream *s = &et->streams[k];
    s->st.samples += s->handover_discarded;
    s->st.discarded += s->handover_discarded;
    s->handover_discarded = 0;
  }
  et->handover = 0;
}

int pirec_eyetracker_set_key(struct pirec_eyetracker *et, const struct pirec_crypt_key *key,
                             const char *session_dir)
{
  return pirec_crypt_session_set(&et->crypt, key, session_dir);
}

/* The scene's file names after the trial's base: segment 0 (segments off) _scene.mkv, else
 * _scene_sNNN.mkv; each with its _frames.csv. */
static void scene_names(int segment, char *frames, char *video, size_t cap)
{
  char seg[16] = "";
  if (segment > 0)
    snprintf(seg, sizeof seg, "_s%03d", segment);
  snprintf(frames, cap, "_scene%s_frames.csv", seg);
  snprintf(video, cap, "_scene%s.mkv", seg);
}

static void push_frames_header(struct pirec_sink *frames)
{
  static const char *const frame_cols[] = {
      "trial",          "mono_ns", "wall_ns", "frame",        "seq", "device_ts_ns",
      "dropped_before", "bytes",   "offset",  "before_start", NULL};
  char hdr[512];
  int n = pirec_csv_header(hdr, sizeof hdr, frame_cols);
  if (n > 0)
    pirec_sink_push(frames, hdr, (size_t)n);
}

/* ---- scene segments ---- */

static void finish_stop(struct pirec_eyetracker *et);

static void old_part_done(struct pirec_eyetracker *et)
{
  struct scene_old *o = &et->scene_old;
  if (--o->open > 0)
    return;
  pirec_mkv_free(o->mkv);
  pirec_rowgate_free(o->gate);
  o->mkv = NULL;
  o->gate = NULL;
  if (et->stop_waits_old) {
    et->stop_waits_old = 0;
    finish_stop(et);
  }
}

static void old_sealed(struct pirec_mkv_sealer *s, int status)
{
  struct pirec_eyetracker *et = s->data;
  if (status < 0)
    pirec_log(PIREC_LOG_WARN, "%s: cannot seal '%s': %s", et->s.name, et->scene_old.path,
              pirec_strerror(status));
  old_part_done(et);
}

static void old_closed(struct pirec_sink *sink, const struct pirec_sink_counters *c, void *user)
{
  struct pirec_eyetracker *et = user;
  struct scene_old *o = &et->scene_old;
  if (c->error && !et->write_error)
    et->write_error = c->error;
  et->sink_drops += c->drops;
  if (sink == o->video) {
    /* The rows of the frames in it go to its CSV, which closes after it; the file is sealed. */
    pirec__et_scene_settle_old(et, sink);
    o->video = NULL;
    o->open++;
    pirec_sink_close(o->frames, old_closed, et);
    o->sealer.data = et;
    o->open++;
    if (c->error ||
        pirec_mkv_seal_file(et->loop, &o->sealer, o->mkv, o->path, c->bytes_written, old_sealed) < 0)
      o->open--;
  } else {
    o->frames = NULL;
  }
  old_part_done(et);
}

/* How long the current segment runs up to rec: by its RTP timestamps (relative to the file's
 * first frame, as its pts), or by arrival when they are implausible (a new stream origin). */
static int64_t segment_span(const struct pirec_eyetracker *et, int64_t mono, const struct scene_rec *rec)
{
  int64_t by_arrival = mono - et->scene_seg_t0, by_rtp = -1;
  if (et->have_pts0 && rec->clock_rate)
    by_rtp = pirec_rtp_ticks_to_ns(rec->ext - et->pts0_ext, rec->clock_rate);
  return by_rtp > 0 && llabs(by_rtp - by_arrival) < NS_S ? by_rtp : by_arrival;
}

int pirec__et_scene_segment(struct pirec_eyetracker *et, int64_t mono, const struct scene_rec *rec)
{
  struct scene_old *o = &et->scene_old;
  int64_t bytes = et->mkv ? (int64_t)pirec_mkv_bytes(et->mkv) : 0;
  if (!et->scene_segment || !et->scene_seg_started || o->open || !et->video_sink ||
      !((et->s.segment_ns > 0 && segment_span(et, mono, rec) >= et->s.segment_ns) ||
        (et->s.segment_bytes > 0 && (uint64_t)bytes >= et->s.segment_bytes)))
    return 0;
  char frames_name[40], video_name[40];
  struct pirec_sink *video = NULL, *frames = NULL;
  struct pirec_mkv *mkv = NULL;
  scene_names(et->scene_segment + 1, frames_name, video_name, sizeof frames_name);
  int r = open_sink(et, et->trial_dir, et->trial_base, frames_name, &frames);
  if (r == 0 && (r = open_sink(et, et->trial_dir, et->trial_base, video_name, &video)) == 0)
    r = pirec_mkv_new(video, 0, 0, 0, 0, &mkv);
  if (r < 0) {
    pirec_sink_close(video, NULL, NULL);
    pirec_sink_close(frames, NULL, NULL);
    pirec__et_emit(et, PIREC_EYETRACKER_EVENT_WRITE_ERROR, "cannot start scene segment %d: %s",
                   et->scene_segment + 1, pirec_strerror(r));
    et->scene_segment = 0; /* no more tries: the trial goes on in the current files */
    return r;
  }
  /* The current files close in the background; the frame at hand is the next file's first. */
  o->video = et->video_sink;
  o->frames = et->frames_sink;
  o->mkv = et->mkv;
  o->gate = et->scene_gate;
  snprintf(o->path, sizeof o->path, "%s", pirec_sink_path(o->video));
  if ((r = pirec_mkv_finish(o->mkv)) < 0 && !et->write_error)
    et->write_error = r;
  et->video_sink = video;
  et->frames_sink = frames;
  et->mkv = mkv;
  et->scene_gate = NULL;
  if ((r = pirec__et_scene_gate_open(et)) < 0 && !et->write_error)
    et->write_error = r;
  push_frames_header(frames);
  et->have_pts0 = 0; /* each file's time 0 is its first frame */
  et->scene_seg_started = 0;
  et->scene_segment++;
  o->open = 1;
  pirec_sink_close(o->video, old_closed, et);
  pirec__et_emit(et, PIREC_EYETRACKER_EVENT_SEGMENT, "trial %d scene segment %d from frame %llu: '%s'",
                 et->trial, et->scene_segment, (unsigned long long)et->frame_index, pirec_sink_path(video));
  return 0;
}

int pirec_eyetracker_trial_start(struct pirec_eyetracker *et, const char *dir, int trial, int part)
{
  if (et->recording || et->stopping)
    return -EBUSY;
  if (et->closing || trial < 1)
    return -EINVAL;
  int r;
  char base[32];
  if (part > 0)
    snprintf(base, sizeof base, "t%03d_p%d", trial, part);
  else
    snprintf(base, sizeof base, "t%03d", trial);
  et->write_error = 0;
  int segments = et->s.segment_ns > 0 || et->s.segment_bytes > 0;
  char frames_name[40], video_name[40];
  scene_names(segments, frames_name, video_name, sizeof frames_name);
  if (strlen(dir) >= sizeof et->trial_dir)
    return -ENAMETOOLONG;
  snprintf(et->trial_dir, sizeof et->trial_dir, "%s", dir);
  snprintf(et->trial_base, sizeof et->trial_base, "%s", base);
  et->scene_segment = segments;
  et->scene_seg_started = 0;
  if ((r = open_sink(et, dir, base, "_gaze.csv", &et->gaze_sink)) < 0 ||
      (r = open_sink(et, dir, base, frames_name, &et->frames_sink)) < 0 ||
      (r = open_sink(et, dir, base, "_eye_clock.csv", &et->clock_sink)) < 0 ||
      (et->s.world && (r = open_sink(et, dir, base, video_name, &et->video_sink)) < 0) ||
      (et->s.world && (r = pirec_mkv_new(et->video_sink, 0, 0, 0, 0, &et->mkv)) < 0) ||
      (et->s.world && (r = pirec__et_scene_gate_open(et)) < 0) ||
      (et->s.events && (r = open_sink(et, dir, base, "_eye_events.csv", &et->events_sink)) < 0)) {
    et->stop_cb = NULL;
    close_trial_sinks(et);
    if (et->handover) {
      /* No trial takes what the change kept: those samples were received between trials. */
      pirec_backlog_clear(et->bl_rows);
      et->handover = 0;
    }
    return r;
  }
  char hdr[2048];
  int n = pirec_csv_header(hdr, sizeof hdr, pirec_gaze_columns);
  pirec_sink_push(et->gaze_sink, hdr, (size_t)n);
  push_frames_header(et->frames_sink);
  static const char *const clock_cols[] = {"trial",  "mono_ns",      "wall_ns",   "stream",
                                           "rtp_ts", "device_ns",    "offset_ns", "drift_ppb",
                                           "rtt_ns", "before_start", NULL};
  n = pirec_csv_header(hdr, sizeof hdr, clock_cols);
  pirec_sink_push(et->clock_sink, hdr, (size_t)n);
  if (et->events_sink) {
    n = pirec_csv_header(hdr, sizeof hdr, pirec_gaze_event_columns);
    pirec_sink_push(et->events_sink, hdr, (size_t)n);
  }
  et->have_pts0 = 0;
  et->frame_index = et->bytes_video = et->sink_drops = 0;
  for (int k = 0; k < NSTREAMS; k++) {
    struct stream *st = &et->streams[k];
    if (!et->handover)
      st->pending_drop = 0; /* else: lost during the hand-over, carried onto this trial's first row */
    st->st.samples = st->st.written = st->st.refused = st->st.discarded = st->st.idle = 0;
    st->st.dropped = st->st.dropped_after = st->st.before_start = 0;
  }
  /* A trial change's trial starts at the change; another at this call. */
  et->trial_start_mono = et->handover ? et->handover_mono : pirec_clock_mono_ns();
  handover_end(et);
  et->trial = trial;
  et->recording = 1;
  et->scene_before_held = 0;
  pirec__et_backlog_replay(et, et->trial_start_mono);
  return 0;
}

void pirec_eyetracker_hand_over(struct pirec_eyetracker *et)
{
  if (et->handover || !et->recording)
    return;
  et->handover = 1;
  et->handover_mono = pirec_clock_mono_ns();
}

static void finish_stop(struct pirec_eyetracker *et)
{
  if (et->scene_old.open) { /* the previous segment's files are not closed yet */
    et->stop_waits_old = 1;
    return;
  }
  et->stopping = 0;
  pirec_mkv_free(et->mkv);
  et->mkv = NULL;
  pirec__et_scene_gate_free(et);
  pirec_eyetracker_stopped_cb cb = et->stop_cb;
  et->stop_cb = NULL;
  if (cb)
    cb(et, et->stop_err, et->stop_user);
  if (et->closing)
    pirec__et_maybe_closed(et);
}

static void on_scene_sealed(struct pirec_mkv_sealer *s, int status)
{
  struct pirec_eyetracker *et = s->data;
  if (status < 0)
    pirec_log(PIREC_LOG_WARN, "%s: cannot seal the scene video: %s", et->s.name, pirec_strerror(status));
  if (--et->sinks_open == 0)
    finish_stop(et);
}

static void on_empty_video_removed(struct pirec_fs_req *req)
{
  struct pirec_eyetracker *et = req->data;
  if (req->result < 0)
    pirec_log(PIREC_LOG_WARN, "%s: %s", et->s.name, req->message ? req->message : "");
  pirec_fs_req_cleanup(req);
  if (--et->sinks_open == 0)
    finish_stop(et);
}

static void on_sink_closed(struct pirec_sink *sink, const struct pirec_sink_counters *c, void *user)
{
  struct pirec_eyetracker *et = user;
  if (c->error && !et->stop_err)
    et->stop_err = c->error;
  et->sink_drops += c->drops;
  if (sink == et->video_closing && et->frames_sink) {
    /* The frames CSV closes after the scene video, once the rows of the frames in it are in. */
    pirec__et_scene_settle(et, sink);
    et->sinks_open++;
    pirec_sink_close(et->frames_sink, on_sink_closed, et);
    et->frames_sink = NULL;
  }
  if (sink == et->video_closing && c->bytes_written == 0 && !c->error) {
    /* The scene never played in this trial (a bad SDP, no device): a 0-byte .mkv no reader opens
     * is removed; the frames CSV (the header alone) says the trial recorded no frames. */
    et->video_closing = NULL;
    et->empty_video.data = et;
    if (pirec_fs_unlink(et->loop, &et->empty_video, pirec_sink_path(sink), on_empty_video_removed) == 0)
      return; /* this sink's count is released by on_empty_video_removed */
  } else if (sink == et->video_closing) {
    et->video_closing = NULL;
    /* A clean scene file gets its real segment size (as the camera's video does), so pirec-remux
     * does not take it for a file cut by a crash. The seal holds the trial's stop like a sink
     * would: stopped is reported once it is on disk. The sink's path is valid during this callback
     * and the seal copies it. A file that cannot be sealed stays valid as it is. */
    et->sealer.data = et;
    if (!c->error && et->mkv &&
        pirec_mkv_seal_file(et->loop, &et->sealer, et->mkv, pirec_sink_path(sink), c->bytes_written,
                            on_scene_sealed) == 0)
      return; /* this sink's count is released by on_scene_sealed */
  }
  if (--et->sinks_open == 0)
    finish_stop(et);
}

static void close_trial_sinks(struct pirec_eyetracker *et)
{
  struct pirec_sink **sinks[5] = {&et->gaze_sink, &et->frames_sink, &et->clock_sink, &et->video_sink,
                                  &et->events_sink};
  et->stopping = 1;
  et->stop_err = et->write_error;
  et->sinks_open = 1; /* held while the closes start */
  et->video_closing = et->video_sink;
  for (int i = 0; i < 5; i++)
    if (*sinks[i] && !(sinks[i] == &et->frames_sink && et->video_sink)) {
      et->sinks_open++;
      pirec_sink_close(*sinks[i], on_sink_closed, et);
      *sinks[i] = NULL;
    }
  if (--et->sinks_open == 0)
    finish_stop(et);
}

int pirec_eyetracker_trial_stop(struct pirec_eyetracker *et, pirec_eyetracker_stopped_cb cb, void *user)
{
  if (!et->recording)
    return -EINVAL;
  et->recording = 0;
  /* Losses after the last row have no row to carry them: count them now, so written + dropped +
   * dropped_after still equals what the device sent in the trial. */
  for (int k = 0; k < NSTREAMS; k++) {
    struct stream *st = &et->streams[k];
    st->st.dropped_after = st->pending_drop;
    st->pending_drop = 0;
  }
  if (et->mkv) {
    int r = pirec_mkv_finish(et->mkv);
    if (r < 0 && !et->write_error)
      et->write_error = r;
  }
  et->stop_cb = cb;
  et->stop_user = user;
  /* The sinks close asynchronously, so cb never runs inside this call. */
  close_trial_sinks(et);
  return 0;
}

int pirec_eyetracker_recording(const struct pirec_eyetracker *et)
{
  return et->recording;
}

void pirec_eyetracker_hold_sinks(struct pirec_eyetracker *et, int hold)
{
  if (!et->recording)
    return;
  struct pirec_sink *sinks[5] = {et->gaze_sink, et->frames_sink, et->clock_sink, et->video_sink,
                                 et->events_sink};
  for (int i = 0; i < 5; i++)
    if (sinks[i])
      pirec_sink_hold(sinks[i], hold);
}
