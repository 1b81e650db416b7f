/* One sample's way into the eye tracker's files: written into the running trial, kept in the
 * backlogs while no trial writes it (a trial change, a pre-trigger buffer, the scene video's
 * current GOP), or counted as idle; and the backlogs' replay into a trial as it starts. */

#include "eyetracker-int.h"

#include "pirec/csv.h"
#include "pirec/error.h"
#include "pirec/gaze.h"
#include "pirec/sink.h"

#include <errno.h>
#include <string.h>

static size_t backlog_size(size_t fixed, size_t min, size_t per_s, int64_t pre_ns, int64_t extra_s)
{
  if (fixed)
    return fixed;
  size_t want = (size_t)((pre_ns + NS_S - 1) / NS_S + extra_s) * per_s;
  return want > min ? want : min;
}

int pirec__et_backlog_new(struct pirec_eyetracker *et)
{
  const struct pirec_eyetracker_settings *s = &et->s;
  if (s->world && pirec_backlog_new(backlog_size(s->backlog_video_bytes, BACKLOG_VIDEO_MIN,
                                                 BACKLOG_VIDEO_PER_S, s->pre_trigger_ns, 2),
                                    &et->bl_video) < 0)
    return -ENOMEM;
  if (pirec_backlog_new(
          backlog_size(s->backlog_rows_bytes, BACKLOG_ROWS_MIN, BACKLOG_ROWS_PER_S, s->pre_trigger_ns, 4),
          &et->bl_rows) < 0) {
    pirec_backlog_free(et->bl_video);
    et->bl_video = NULL;
    return -ENOMEM;
  }
  return 0;
}

int pirec__et_handing_over(const struct pirec_eyetracker *et)
{
  return et->handover && !et->recording;
}

/* Pushes a row of the trial. A row the sink refuses (ring full, sink in error) is a sample lost
 * like any other: it and what it carried pass to the next row that gets in, so dropped_before
 * still accounts for every sample. A row from before the trial's start only counts as one. */
static int put_row(struct stream *st, struct pirec_sink *sink, struct pirec_csv_row *row, int before)
{
  int r = pirec_csv_push(sink, row);
  if (before) {
    if (r == 0)
      st->st.before_start++;
    return r; /* a refused one counts in the sink's drops */
  }
  if (r < 0) {
    st->st.refused++;
    st->pending_drop++;
    return r;
  }
  st->st.dropped += st->pending_drop;
  st->pending_drop = 0;
  st->st.written++;
  return 0;
}

/* A trial's row's dropped_before: a row from before the start carries what was lost among the
 * kept rows; the trial's own rows carry st->pending_drop. */
static uint64_t dropped_of(const struct stream *st, uint64_t kept, int before)
{
  return before ? kept : st->pending_drop;
}

/* A gaze sample (struct gaze_rec) or eye event (struct event_rec) row of the trial. */
static void write_sample(struct stream *st, int64_t mono, const void *rec, int before)
{
  struct pirec_eyetracker *et = st->et;
  struct pirec_sink *sink = st->kind == GAZE ? et->gaze_sink : et->events_sink;
  if (!sink)
    return;
  char buf[1024];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, buf, sizeof buf);
  if (st->kind == GAZE) {
    const struct gaze_rec *r = rec;
    pirec_gaze_csv_row(&row, et->trial, mono, r->wall, r->dev, &r->g, r->rtp_ts, r->seq,
                       dropped_of(st, r->dropped, before), before);
  } else {
    const struct event_rec *e = rec;
    pirec_gaze_event_csv_row(&row, et->trial, mono, e->wall, e->dev, &e->e, e->rtp_ts, e->seq,
                             dropped_of(st, e->dropped, before), before);
  }
  pirec_csv_row_end(&row);
  put_row(st, sink, &row, before);
}

static void write_clock(struct pirec_eyetracker *et, int64_t mono, const struct clock_rec *r, int before)
{
  char b[256];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, b, sizeof b);
  pirec_csv_row_lead(&row, et->trial, mono, r->wall);
  pirec_csv_row_str(&row, et->streams[r->stream].label);
  pirec_csv_row_u64(&row, r->rtp_ts);
  pirec_csv_row_i64(&row, r->dev);
  pirec_csv_row_i64(&row, r->offset);
  pirec_csv_row_i64(&row, r->drift);
  pirec_csv_row_empty(&row); /* rtt_ns: a Sender Report has none */
  pirec_csv_row_u64(&row, before ? 1 : 0);
  pirec_csv_row_end(&row);
  (void)pirec_csv_push(et->clock_sink, &row); /* a refused one counts in the sink's drops */
}

void pirec__et_echo_row(struct pirec_eyetracker *et, int64_t mono, int64_t wall, int64_t offset, int64_t rtt)
{
  if (!et->recording || !et->clock_sink)
    return; /* between trials the estimate is kept in the status only */
  char b[256];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, b, sizeof b);
  pirec_csv_row_lead(&row, et->trial, mono, wall);
  pirec_csv_row_str(&row, "time_echo");
  pirec_csv_row_empty(&row);
  pirec_csv_row_i64(&row, wall + offset);
  pirec_csv_row_i64(&row, offset);
  pirec_csv_row_empty(&row);
  pirec_csv_row_i64(&row, rtt);
  pirec_csv_row_u64(&row, 0);
  pirec_csv_row_end(&row);
  (void)pirec_csv_push(et->clock_sink, &row);
}

/* Presentation time of a scene frame, relative to the trial's first written frame; a jump
 * backwards (a new session with another timestamp origin) continues from arrival times. */
static int64_t scene_pts(struct pirec_eyetracker *et, int64_t mono, const struct scene_rec *r)
{
  if (!et->have_pts0) {
    et->have_pts0 = 1;
    et->pts0_ext = r->ext;
    return 0;
  }
  int64_t pts = pirec_rtp_ticks_to_ns(r->ext - et->pts0_ext, r->clock_rate);
  if (pts <= et->last_pts_ns || pts - et->last_pts_ns > 60 * NS_S) {
    pts = et->last_pts_ns + (mono - et->last_pts_mono);
    et->pts0_ext = r->ext - (pts * (int64_t)r->clock_rate) / NS_S;
  }
  return pts;
}

/* A scene access unit into the trial's MKV; its row waits in the scene gate until the frame is
 * written whole (streams.c counts it then); room for it was checked first. */
static void write_scene(struct stream *st, int64_t mono, const struct scene_rec *r, const uint8_t *au,
                        int before)
{
  struct pirec_eyetracker *et = st->et;
  int64_t pts = scene_pts(et, mono, r);
  int rc = et->scene_gate && pirec_rowgate_room(et->scene_gate) ? 0 : -ENOBUFS;
  if (rc == 0)
    rc = pirec_mkv_write(et->mkv, au, r->len, r->keyframe, pts);
  if (rc < 0) {
    if (!before) {
      st->st.discarded++;
      st->pending_drop++;
    }
    if (rc != -EINVAL && rc != -ENOBUFS && !et->write_error) {
      et->write_error = rc;
      pirec__et_emit(et, PIREC_EYETRACKER_EVENT_WRITE_ERROR, "cannot write the scene video: %s",
                     pirec_strerror(rc));
    }
    return;
  }
  pirec_sink_flush(et->video_sink);
  if (!et->scene_seg_started) {
    et->scene_seg_started = 1;
    et->scene_seg_t0 = mono;
  }
  et->last_pts_ns = pts;
  et->last_pts_mono = mono;
  et->bytes_video += r->len;
  uint64_t dropped = before ? 0 : st->pending_drop;
  char buf_row[PIREC_ROWGATE_ROW_MAX];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, buf_row, sizeof buf_row);
  pirec_csv_row_lead(&row, et->trial, mono, r->wall);
  pirec_csv_row_u64(&row, et->frame_index++);
  pirec_csv_row_u64(&row, r->seq);
  pirec_csv_row_time(&row, r->dev);
  pirec_csv_row_u64(&row, before ? r->dropped : dropped);
  pirec_csv_row_u64(&row, r->len);
  pirec_csv_row_empty(&row);
  pirec_csv_row_u64(&row, before ? 1 : 0);
  int len = pirec_csv_row_end(&row);
  if (len > 0 &&
      pirec_rowgate_hold(et->scene_gate, buf_row, (size_t)len, pirec_mkv_bytes(et->mkv), dropped) == 0) {
    if (before)
      et->scene_before_held++;
    else
      st->pending_drop = 0;
  }
}

/* Keeps a record (rec, then extra) in backlog b. While a trial change keeps samples for the next
 * trial, those are never forgotten to make room (a full backlog then refuses). 1 when kept. */
static int keep(struct pirec_eyetracker *et, struct pirec_backlog *b, uint32_t kind, uint32_t flags,
                int64_t mono, const void *rec, size_t len, const void *extra, size_t extra_len)
{
  int64_t keep_from = pirec__et_handing_over(et) ? et->handover_mono : INT64_MAX;
  uint8_t *p = pirec_backlog_append(b, kind, flags, mono, len + extra_len, keep_from);
  if (!p)
    return 0;
  memcpy(p, rec, len);
  if (extra_len)
    memcpy(p + len, extra, extra_len);
  return 1;
}

/* Idle with a pre-trigger buffer: the samples older than pre_trigger go (checked every 10 ms). */
static void trim_rows(struct pirec_eyetracker *et, int64_t now)
{
  if (now - et->bl_last_trim < 10 * NS_MS)
    return;
  et->bl_last_trim = now;
  pirec_backlog_trim(et->bl_rows, now - et->s.pre_trigger_ns);
}

void pirec__et_sample(struct stream *st, void *rec, size_t len)
{
  struct pirec_eyetracker *et = st->et;
  /* dropped is the first field after wall and dev in both records: set through the kind's type */
  uint64_t *dropped =
      st->kind == GAZE ? &((struct gaze_rec *)rec)->dropped : &((struct event_rec *)rec)->dropped;
  st->st.samples++;
  st->received++;
  if (et->recording) {
    write_sample(st, st->rx_mono, rec, 0);
    return;
  }
  *dropped = st->pending_drop;
  if (pirec__et_handing_over(et)) {
    if (keep(et, et->bl_rows, st->kind, 0, st->rx_mono, rec, len, NULL, 0)) {
      st->pending_drop = 0; /* carried by the kept sample */
    } else {
      st->pending_drop++; /* the next trial's: on its first row */
      st->handover_discarded++;
    }
    return;
  }
  st->st.idle++;
  st->pending_drop = 0; /* losses between trials belong to no file */
  if (et->s.pre_trigger_ns > 0) {
    trim_rows(et, st->rx_mono);
    if (!keep(et, et->bl_rows, st->kind, 0, st->rx_mono, rec, len, NULL, 0))
      st->backlog_missed++;
  }
}

void pirec__et_clock_row(struct stream *st, struct clock_rec *rec)
{
  struct pirec_eyetracker *et = st->et;
  rec->stream = st->kind;
  if (et->recording) {
    write_clock(et, st->rx_mono, rec, 0);
  } else if (pirec__et_handing_over(et) || et->s.pre_trigger_ns > 0) {
    if (!pirec__et_handing_over(et))
      trim_rows(et, st->rx_mono);
    if (!keep(et, et->bl_rows, REC_CLOCK, 0, st->rx_mono, rec, sizeof *rec, NULL, 0))
      st->backlog_missed++;
  }
}

void pirec__et_scene_gap(struct pirec_eyetracker *et)
{
  et->need_key = 1;
  et->bl_need_key = 1;
}

/* The scene's backlog: every access unit from the last keyframe (while idle with a pre-trigger,
 * from the keyframe at or before now - pre_trigger), none after a lost frame until the next
 * keyframe. Returns 1 when kept. */
static int keep_scene(struct stream *st, int64_t mono, const struct scene_rec *rec, const uint8_t *au)
{
  struct pirec_eyetracker *et = st->et;
  int gop_start = rec->keyframe && rec->params; /* a file can start on it */
  if (!et->bl_video || (et->bl_need_key && !gop_start))
    return 0;
  et->bl_need_key = 0;
  int idle = !et->recording && !pirec__et_handing_over(et);
  if (gop_start && (et->recording || (idle && et->s.pre_trigger_ns == 0)))
    pirec_backlog_clear(et->bl_video);
  int kept =
      keep(et, et->bl_video, WORLD, gop_start ? REC_KEYFRAME : 0, mono, rec, sizeof *rec, au, rec->len);
  if (gop_start && idle && et->s.pre_trigger_ns > 0)
    pirec_backlog_trim_to_key(et->bl_video, REC_KEYFRAME, mono - et->s.pre_trigger_ns);
  if (!kept)
    et->bl_need_key = 1; /* what follows would not decode without the unit just lost */
  return kept;
}

void pirec__et_scene_au(struct stream *st, struct scene_rec *rec, const uint8_t *au)
{
  struct pirec_eyetracker *et = st->et;
  st->st.samples++;
  st->received++;
  rec->seq = st->received - 1;
  rec->dropped = st->pending_drop;
  /* Frames parsed from one read share its arrival stamp; the frames CSV's mono_ns strictly
   * increases (pirec-remux --clock mono needs it), so a tie moves on by 1 ns (docs/FORMATS.md). */
  int64_t mono = st->rx_mono > st->au_mono ? st->rx_mono : st->au_mono + 1;
  st->au_mono = mono;
  int kept = keep_scene(st, mono, rec, au);
  if (et->recording) {
    /* The file starts, and resumes after a gap, with a picture that decodes on its own, so every
     * packet in it decodes; the frames skipped meanwhile are counted. */
    if (et->need_key && !(rec->keyframe && (rec->params || pirec_mkv_started(et->mkv)))) {
      st->st.discarded++;
      st->pending_drop++;
      return;
    }
    et->need_key = 0;
    if (rec->keyframe && rec->params)
      (void)pirec__et_scene_segment(et, mono, rec); /* a failure is announced; the file goes on */
    write_scene(st, mono, rec, au, 0);
  } else if (pirec__et_handing_over(et)) {
    if (kept) {
      st->pending_drop = 0;
    } else {
      st->pending_drop++;
      st->handover_discarded++;
    }
  } else {
    st->st.idle++;
    st->pending_drop = 0;
  }
}

/* The rows backlog into the trial: rows before cut (start - pre_trigger) are not wanted. */
static void replay_rows(struct pirec_eyetracker *et, int64_t start, int64_t cut)
{
  uint64_t cursor = 0;
  struct pirec_backlog_rec r;
  while (pirec_backlog_next(et->bl_rows, &cursor, &r)) {
    int before = r.mono_ns < start;
    if (r.mono_ns < cut)
      continue;
    if (r.kind == REC_CLOCK) {
      write_clock(et, r.mono_ns, r.data, before);
      continue;
    }
    struct stream *st = &et->streams[r.kind];
    if (!before) {
      st->st.samples++;
      st->pending_drop += st->kind == GAZE ? ((const struct gaze_rec *)r.data)->dropped
                                           : ((const struct event_rec *)r.data)->dropped;
    }
    write_sample(st, r.mono_ns, r.data, before);
  }
  pirec_backlog_clear(et->bl_rows);
}

/* The scene backlog into the trial, from its first keyframe; the trial's own frames before that
 * keyframe (a trial change that kept no keyframe) are counted as dropped. Returns 1 when a
 * keyframe was written. */
static int replay_scene(struct pirec_eyetracker *et, int64_t start, int64_t cut)
{
  struct stream *st = &et->streams[WORLD];
  int64_t key = pirec_backlog_first_key(et->bl_video, REC_KEYFRAME, cut), index = 0;
  uint64_t cursor = 0;
  struct pirec_backlog_rec r;
  while (pirec_backlog_next(et->bl_video, &cursor, &r)) {
    const struct scene_rec *rec = r.data;
    int before = r.mono_ns < start;
    if (!before)
      st->st.samples++;
    if (key < 0 || index++ < key) {
      if (!before) {
        st->st.discarded++;
        st->pending_drop += rec->dropped + 1;
      }
      continue;
    }
    if (!before)
      st->pending_drop += rec->dropped;
    write_scene(st, r.mono_ns, rec, (const uint8_t *)(rec + 1), before);
  }
  /* What stays is the current GOP, for the next trial change. */
  pirec_backlog_trim_to_key(et->bl_video, REC_KEYFRAME, INT64_MAX);
  return key >= 0;
}

void pirec__et_backlog_replay(struct pirec_eyetracker *et, int64_t start_mono)
{
  int64_t cut = start_mono - et->s.pre_trigger_ns;
  uint64_t later[NSTREAMS];
  /* Losses after the last kept sample belong after the kept rows. */
  for (int k = 0; k < NSTREAMS; k++) {
    later[k] = et->streams[k].pending_drop;
    et->streams[k].pending_drop = 0;
  }
  replay_rows(et, start_mono, cut);
  int keyed = et->bl_video && et->mkv && replay_scene(et, start_mono, cut);
  et->need_key = !keyed || et->bl_need_key;
  for (int k = 0; k < NSTREAMS; k++)
    et->streams[k].pending_drop += later[k];
}
