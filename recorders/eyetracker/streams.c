/* The streams' payloads: gaze samples, scene video access units and eye events into the trial's
 * files, RTCP Sender Reports into the device clock, and the count of what losses and reconnects
 * took. */

#include "eyetracker-int.h"

#include "pirec/csv.h"
#include "pirec/error.h"
#include "pirec/gaze.h"
#include "pirec/log.h"
#include "pirec/sink.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int64_t round_div(int64_t a, int64_t b)
{
  return b > 0 ? (a + b / 2) / b : 0;
}

/* Whether n, a count of missing samples from packet numbers, fits a gap that the arrival clock
 * counts as by_rx: never negative, and within half a second plus a tenth of the gap of by_rx
 * (arrival jitter and the reconnect's own time). A device that restarted numbers its packets from
 * its own origin again, so its difference goes backwards or lands anywhere in the 16 or 32 bits.
 * Without a known rate (by_rx < 0) only the sign is checked. */
static int plausible(int64_t n, int64_t by_rx, int64_t slack)
{
  if (n < 0)
    return 0;
  return by_rx < 0 || (n >= by_rx - slack && n <= by_rx + slack);
}

/* First packet after a reconnect: the samples between the last one before and this one. Sequence
 * numbers are exact (gaze and eye events: one packet per sample) when they fit the arrival gap;
 * else the RTP timestamps when those fit it (video spans several packets per frame, so frames
 * always come from timestamps); else the arrival gap itself. */
static uint64_t reconnect_gap(struct stream *st, const struct pirec_rtp_packet *p)
{
  int64_t gap_ns = st->rx_mono - st->prev_rx_mono;
  int64_t interval_ns = pirec_rtp_ticks_to_ns(st->interval_ticks, st->clock_rate);
  int64_t by_rx = interval_ns > 0 ? round_div(gap_ns, interval_ns) - 1 : -1;
  int64_t slack = interval_ns > 0 ? (NS_S / 2 + gap_ns / 10) / interval_ns : 0;
  int64_t missing = 0;
  const char *how;
  if (p->ssrc == st->prev_ssrc) {
    int64_t dts = (int32_t)(p->ts - st->prev_ts);
    int64_t by_ts = st->interval_ticks > 0 ? round_div(dts, st->interval_ticks) - 1 : -1;
    /* Unsigned with a known rate, so that a 16-bit wrap in a long gap is no fit either. */
    int64_t by_seq =
        (by_rx >= 0 ? (int64_t)(uint16_t)(p->seq - st->prev_seq) : (int16_t)(p->seq - st->prev_seq)) - 1;
    if (st->kind != WORLD && plausible(by_seq, by_rx, slack)) {
      missing = by_seq;
      how = "counted from sequence numbers";
    } else if (by_ts >= 0 && plausible(by_ts, by_rx, slack)) {
      missing = by_ts;
      how = st->kind == WORLD ? "counted from RTP timestamps"
                              : "counted from RTP timestamps (the sequence numbers did not fit the gap)";
    } else if (by_rx >= 0) {
      missing = by_rx;
      how = "estimated from the arrival gap (sequence numbers and RTP timestamps went back or did not fit "
            "it: the device restarted)";
    } else {
      how = "not countable (the device restarted and the stream has no known rate)";
    }
  } else {
    missing = by_rx;
    how = "estimated from the arrival gap (the stream's SSRC changed)";
  }
  if (missing < 0)
    missing = 0;
  st->st.gap_samples += (uint64_t)missing;
  pirec__et_emit(st->et, PIREC_EYETRACKER_EVENT_CONNECTED,
                 "%s stream '%s' back after %lld ms: %lld %s lost, %s", st->label, st->url,
                 (long long)(gap_ns / NS_MS), (long long)missing,
                 st->kind == GAZE    ? "samples"
                 : st->kind == WORLD ? "frames"
                                     : "packets",
                 how);
  return (uint64_t)missing;
}

/* A packet of a known stream with another SSRC and no reconnect in between: the device restarted
 * under the same session. Starts the stream's numbering and clock afresh and has the packet
 * judged as the first after a reconnect. */
static void check_ssrc(struct stream *st, const struct pirec_rtp_packet *p)
{
  if (!st->have_ssrc) {
    st->have_ssrc = 1;
    st->ssrc = p->ssrc;
    return;
  }
  if (p->ssrc == st->ssrc)
    return;
  st->ssrc = p->ssrc;
  memset(&st->seq, 0, sizeof st->seq);
  pirec_rtcp_clock_init(&st->clock, st->clock_rate ? st->clock_rate : 90000);
  st->have_sr0 = 0;
  if (st->had_data)
    st->gap_check = 1;
}

/* The mean step, not the smallest: frame timestamps jitter, and a short step would make every
 * gap look longer in frames than it was. Steps over 2 s are not steps between neighbours. */
static void note_interval(struct stream *st, int64_t dticks)
{
  if (dticks <= 0 || dticks > 2 * (int64_t)st->clock_rate)
    return;
  st->sum_dticks += dticks;
  st->n_dticks++;
  st->interval_ticks = round_div(st->sum_dticks, st->n_dticks);
}

/* Sequence and clock bookkeeping shared by the data streams (gaze, eye events) for a parsed
 * packet of the right payload type: counts it, accounts a reconnect gap and sequence losses as
 * drops, optionally feeds the sample-interval estimate, and extends its RTP timestamp.
 * Returns 0 with *ext set, or -1 for a duplicate or late packet (its slot was already counted). */
static int stream_accept(struct stream *st, const struct pirec_rtp_packet *p, int64_t *ext)
{
  st->st.packets++;
  check_ssrc(st, p);
  int after_gap = st->gap_check;
  if (st->gap_check) {
    st->gap_check = 0;
    st->pending_drop += reconnect_gap(st, p);
  }
  int64_t lost = pirec_rtp_seq_update(&st->seq, p->seq);
  if (lost < 0) {
    st->st.bad_packets++;
    return -1;
  }
  st->st.lost += (uint64_t)lost;
  st->pending_drop += (uint64_t)lost;
  if (st->had_data && !after_gap && p->ssrc == st->prev_ssrc && lost == 0)
    note_interval(st, (int32_t)(p->ts - st->prev_ts));
  *ext = pirec_rtcp_clock_extend(&st->clock, p->ts);
  st->had_data = 1;
  st->prev_ssrc = p->ssrc;
  st->prev_ts = p->ts;
  st->prev_seq = p->seq;
  st->prev_rx_mono = st->rx_mono;
  return 0;
}

/* Parses a data packet and does stream_accept's bookkeeping. Returns 0 with *p and *ext, or -1
 * when the packet is not one of this stream's (its sample shows up as a sequence gap) or late. */
static int data_rtp(struct stream *st, const uint8_t *buf, size_t len, struct pirec_rtp_packet *p,
                    int64_t *ext)
{
  if (pirec_rtp_parse(buf, len, p) < 0 || p->pt != st->pt) {
    st->st.bad_packets++;
    return -1;
  }
  return stream_accept(st, p, ext);
}

/* A payload that does not decode is a lost sample. The first, then every thousandth, is reported
 * (fmt and its arguments; a count among them must add this one). */
static void bad_payload(struct stream *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void bad_payload(struct stream *st, const char *fmt, ...)
{
  st->st.bad_payloads++;
  st->pending_drop++;
  if (st->st.bad_payloads != 1 && st->st.bad_payloads % 1000 != 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  pirec__et_vemit(st->et, PIREC_EYETRACKER_EVENT_ERROR, fmt, ap);
  va_end(ap);
}

/* Counts a decoded sample. Returns 1 when it goes into the trial's files, 0 between trials (then
 * what was lost before it belongs to no file). */
static int count_sample(struct stream *st)
{
  st->st.samples++;
  st->received++;
  if (st->et->recording)
    return 1;
  if (pirec__et_handing_over(st->et)) {
    st->pending_drop++; /* the next trial's: on its first row */
    st->handover_discarded++;
    return 0;
  }
  st->st.idle++;
  st->pending_drop = 0;
  return 0;
}

/* A gaze sample, after data_rtp. */
static void gaze_packet(struct stream *st, const struct pirec_rtp_packet *p, int64_t ext)
{
  struct gaze_rec r;
  if (pirec_gaze_decode(p->payload, p->payload_len, &r.g) < 0) {
    bad_payload(st, "gaze payload of %zu bytes (expected 9, 17, 65 or 89) from '%s'; %llu so far",
                p->payload_len, st->url, (unsigned long long)st->st.bad_payloads + 1);
    return;
  }
  r.wall = st->rx_wall;
  r.dev = pirec_rtcp_clock_device_ns(&st->clock, ext);
  r.rtp_ts = p->ts;
  r.seq = st->seq.ext_max - (1u << 16);
  pirec__et_sample(st, &r, sizeof r);
}

static void on_au(const struct pirec_h264_au *au, void *user)
{
  struct stream *st = user;
  struct pirec_eyetracker *et = st->et;
  int64_t ext = pirec_rtcp_clock_extend(&st->clock, au->rtp_ts);
  if (st->have_prev_au) {
    int64_t d = ext - st->prev_au_ext;
    if (st->lost_since_au > 0) {
      /* Whole frames may have vanished with the lost packets: count them from the timestamps. */
      int64_t missing = st->interval_ticks > 0 ? round_div(d, st->interval_ticks) - 1 : 0;
      if (missing > 0)
        st->pending_drop += (uint64_t)missing;
      pirec__et_scene_gap(et);
    } else {
      note_interval(st, d);
    }
  }
  st->lost_since_au = 0;
  st->have_prev_au = 1;
  st->prev_au_ext = ext;
  if (au->damaged) {
    pirec__et_scene_gap(et);
    if (count_sample(st)) {
      st->st.discarded++;
      st->pending_drop++;
    }
    return;
  }
  struct scene_rec r = {.wall = st->rx_wall,
                        .dev = pirec_rtcp_clock_device_ns(&st->clock, ext),
                        .ext = ext,
                        .clock_rate = st->clock_rate,
                        .keyframe = au->keyframe,
                        .params = au->has_params,
                        .len = au->len};
  pirec__et_scene_au(st, &r, au->data);
}

/* Rows handed to the frames CSV count as written (with what they carry); a row the CSV refused is
 * a lost sample like any other (it and what it carried go on the next row). */
static void scene_rows_released(struct pirec_eyetracker *et, const struct pirec_rowgate_result *res)
{
  struct stream *st = &et->streams[WORLD];
  /* The rows from before the trial's start are held first, so they are released first. */
  uint64_t before = et->scene_before_held < res->rows ? et->scene_before_held : res->rows;
  et->scene_before_held -= before;
  st->st.before_start += before;
  st->st.written += res->rows - before;
  st->st.dropped += res->dropped;
  st->st.refused += res->refused;
  st->pending_drop += res->refused + res->refused_dropped;
  if (res->error < 0 && !et->write_error) {
    /* The video has the frame but its row is lost: the MKV and its CSV no longer pair up one to
     * one, which a reader must hear about. */
    et->write_error = res->error;
    pirec__et_emit(et, PIREC_EYETRACKER_EVENT_WRITE_ERROR, "'%s' refused a row of the scene frames: %s",
                   pirec_sink_path(et->frames_sink), pirec_strerror(res->error));
  }
}

/* The scene sink wrote more: the rows of the frames now whole in the file follow them. */
static void scene_written(struct pirec_sink *sink, uint64_t whole_end, void *user)
{
  struct pirec_eyetracker *et = user;
  struct pirec_rowgate_result res;
  if (!et->scene_gate || !et->frames_sink || (sink != et->video_sink && sink != et->video_closing))
    return;
  pirec_rowgate_release(et->scene_gate, whole_end, et->frames_sink, &res);
  scene_rows_released(et, &res);
}

int pirec__et_scene_gate_open(struct pirec_eyetracker *et)
{
  int r = pirec_rowgate_new(SCENE_GATE_BYTES, &et->scene_gate);
  if (r == 0)
    pirec_sink_on_written(et->video_sink, scene_written);
  return r;
}

void pirec__et_scene_settle(struct pirec_eyetracker *et, struct pirec_sink *video)
{
  struct stream *st = &et->streams[WORLD];
  struct pirec_rowgate_result res;
  uint64_t unwritten = 0, carried = 0;
  if (!et->scene_gate)
    return;
  pirec_rowgate_release(et->scene_gate, pirec_sink_whole_end(video), et->frames_sink, &res);
  scene_rows_released(et, &res);
  /* Frames whose writes failed: refused by the MKV's file, after the last row. */
  pirec_rowgate_discard(et->scene_gate, &unwritten, &carried);
  st->st.discarded += unwritten;
  st->st.dropped_after += unwritten + carried + st->pending_drop;
  st->pending_drop = 0;
}

void pirec__et_scene_settle_old(struct pirec_eyetracker *et, struct pirec_sink *video)
{
  struct scene_old *o = &et->scene_old;
  struct stream *st = &et->streams[WORLD];
  struct pirec_rowgate_result res;
  uint64_t unwritten = 0, carried = 0;
  pirec_rowgate_release(o->gate, pirec_sink_whole_end(video), o->frames, &res);
  scene_rows_released(et, &res);
  /* Frames whose writes failed have no row: lost, carried by the trial's next row. */
  pirec_rowgate_discard(o->gate, &unwritten, &carried);
  st->st.discarded += unwritten;
  st->pending_drop += unwritten + carried;
}

void pirec__et_scene_gate_free(struct pirec_eyetracker *et)
{
  pirec_rowgate_free(et->scene_gate);
  et->scene_gate = NULL;
}

static void world_packet(struct stream *st, const uint8_t *buf, size_t len)
{
  struct pirec_rtp_packet p;
  if (pirec_rtp_parse(buf, len, &p) < 0 || p.pt != st->pt) {
    st->st.bad_packets++;
    st->lost_since_au++;
    return;
  }
  st->st.packets++;
  check_ssrc(st, &p);
  if (st->gap_check) {
    st->gap_check = 0;
    /* The first frame after the gap is judged against the last frame before it. */
    uint64_t missing = reconnect_gap(st, &p);
    st->pending_drop += missing;
    st->have_prev_au = 0;
    pirec__et_scene_gap(st->et);
  }
  int64_t lost = pirec_rtp_seq_update(&st->seq, p.seq);
  if (lost < 0) {
    st->st.bad_packets++;
    return;
  }
  st->st.lost += (uint64_t)lost;
  st->lost_since_au += lost;
  st->had_data = 1;
  st->prev_ssrc = p.ssrc;
  st->prev_ts = p.ts;
  st->prev_seq = p.seq;
  st->prev_rx_mono = st->rx_mono;
  if (pirec_h264_depay_push(&st->depay, &p, lost, on_au, st) < 0)
    st->st.bad_payloads++;
}

/* An eye event, after data_rtp. */
static void events_packet(struct stream *st, const struct pirec_rtp_packet *p, int64_t ext)
{
  struct event_rec r;
  if (pirec_gaze_event_decode(p->payload, p->payload_len, &r.e) < 0) {
    bad_payload(st, "eye event of %zu bytes with an unknown type or size from '%s'", p->payload_len, st->url);
    return;
  }
  if (r.e.type == PIREC_GAZE_EVENT_KEEPALIVE)
    return;
  r.wall = st->rx_wall;
  r.dev = pirec_rtcp_clock_device_ns(&st->clock, ext);
  r.rtp_ts = p->ts;
  r.seq = st->seq.ext_max - (1u << 16);
  pirec__et_sample(st, &r, sizeof r);
}

void pirec__et_data_packet(struct stream *st, const uint8_t *buf, size_t len)
{
  if (st->kind == WORLD) {
    world_packet(st, buf, len);
    return;
  }
  /* Both feed the sample-interval estimate: gaze comes at a fixed rate, eye events (with their
   * keep-alives) at a mean one, which is all a gap that sequence numbers cannot count needs. */
  struct pirec_rtp_packet p;
  int64_t ext;
  if (data_rtp(st, buf, len, &p, &ext) < 0)
    return;
  if (st->kind == GAZE)
    gaze_packet(st, &p, ext);
  else
    events_packet(st, &p, ext);
}

void pirec__et_rtcp_packet(struct stream *st, const uint8_t *buf, size_t len)
{
  struct pirec_eyetracker *et = st->et;
  struct pirec_rtcp_sr sr;
  int r = pirec_rtcp_parse_sr(buf, len, &sr);
  if (r < 0) {
    st->st.bad_packets++;
    return;
  }
  if (r == 0 || (st->have_ssrc && sr.ssrc != st->ssrc))
    return;
  int64_t dev = pirec_rtcp_ntp_to_unix_ns(sr.ntp);
  pirec_rtcp_clock_sr(&st->clock, sr.rtp_ts, dev);
  st->st.rtcp_sr++;
  st->st.offset_ns = dev - st->rx_wall;
  if (!st->have_sr0) {
    st->have_sr0 = 1;
    st->sr0_dev = dev;
    st->sr0_mono = st->rx_mono;
    st->last_clock_log = st->rx_mono;
    pirec_log(PIREC_LOG_INFO, "%s: %s clock synchronised: device - wall = %lld ns", et->s.name, st->label,
              (long long)st->st.offset_ns);
  } else if (st->rx_mono > st->sr0_mono) {
    int64_t el = st->rx_mono - st->sr0_mono;
    st->st.drift_ppb = (int64_t)((__int128)((dev - st->sr0_dev) - el) * NS_S / el);
  }
  if (st->rx_mono - st->last_clock_log >= et->s.clock_log_interval_ns) {
    st->last_clock_log = st->rx_mono;
    pirec_log(PIREC_LOG_INFO, "%s: %s clock: device - wall = %lld ns, drift %lld ppb", et->s.name, st->label,
              (long long)st->st.offset_ns, (long long)st->st.drift_ppb);
  }
  struct clock_rec c = {.wall = st->rx_wall,
                        .dev = dev,
                        .offset = st->st.offset_ns,
                        .drift = st->st.drift_ppb,
                        .rtp_ts = sr.rtp_ts};
  pirec__et_clock_row(st, &c);
}
