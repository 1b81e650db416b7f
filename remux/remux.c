/* The remux engine: libavformat stream copy with each packet's pts set from the captured time of
 * its frame. See include/pirec/remux.h for the contract. */
#include "remux-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/mathematics.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if LIBAVFORMAT_VERSION_MAJOR < 59
#error "pirec-remux needs FFmpeg 5.0 or newer (libavformat 59)"
#endif

#define NS_PER_S INT64_C(1000000000)

struct remux {
  const char *in_path;
  struct pirec__remux_join *join; /* a trial in segments read as one input (join.c), else NULL */
  const struct pirec_remux_options *opt;
  struct pirec_remux_result *res;
  struct pirec_remux_timing timing;
  AVFormatContext *ic;
  AVFormatContext *oc;
  int vs;       /* the input's video stream index */
  int raw;      /* an elementary stream: no container timestamps, the parser splits packets */
  int raw_join; /* join is of elementary streams (the concat protocol), not Matroska files */
  int64_t size;
  int64_t limit_packets; /* packets whose data is complete, when the CSV's offsets tell; else -1 */
  int64_t *rank;         /* decode position -> presentation rank, only for streams with B-frames */
  int64_t *pt;           /* output ticks per row (tick_table), without CFR */
  int64_t nrank;
  int64_t frames; /* frames to write, when a pre-pass counted them; else -1 */
  int64_t packets_read;
  AVRational tb; /* output time base */
  pirec_remux_progress_cb progress;
  void *user;
  int64_t cfr_frames; /* the N of the CFR grid */
  int cfr, dry;
  int64_t rows;                        /* complete timing rows */
  int64_t krank;                       /* frames that can be written, when a pre-pass counted them; else -1 */
  int64_t depth;                       /* how far decode order runs ahead of presentation order */
  int64_t written;                     /* frames written (or, dry, that would be) */
  int64_t dts_base;                    /* with B-frames: dts of the first packet written (see plan_dts) */
  int64_t dts_sum;                     /* with B-frames: durations of the packets written so far */
  struct pirec__remux_digest *digests; /* NULL, or per frame (rows): the payload of what is written */
  int have_output;                     /* the .part exists and is removed unless renamed into place */
  char tmp[4200];                      /* the output's .part */
};

int pirec__remux_grow(void *array, size_t n, size_t *cap, size_t elem)
{
  void **a = array;
  if (n < *cap)
    return 0;
  size_t c = *cap ? *cap * 2 : 64;
  void *p = realloc(*a, c * elem);
  if (p == NULL)
    return -ENOMEM;
  *a = p;
  *cap = c;
  return 0;
}
static void seterr(struct pirec_remux_result *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void seterr(struct pirec_remux_result *res, const char *fmt, ...)
{
  va_list ap;

  if (res->error[0] != '\0')
    return; /* the first failure is the one worth reading */
  va_start(ap, fmt);
  vsnprintf(res->error, sizeof res->error, fmt, ap);
  va_end(ap);
}

static const char *averr(int err)
{
  static _Thread_local char buf[AV_ERROR_MAX_STRING_SIZE];
  av_strerror(err, buf, sizeof buf);
  return buf;
}

static int ends_with(const char *s, const char *suffix)
{
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcasecmp(s + a - b, suffix) == 0;
}

/* Length of path without its extension. */
static size_t stem_len(const char *path)
{
  const char *slash = strrchr(path, '/');
  const char *dot = strrchr(path, '.');
  if (dot == NULL || (slash != NULL && dot < slash) || dot == path || dot[-1] == '/')
    return strlen(path);
  return (size_t)(dot - path);
}

int pirec_remux_find_timing(const char *video_path, char *out, size_t cap)
{
  static const char *const suffixes[] = {"_frames.csv", ".pts", "_pts.txt"};
  size_t n = stem_len(video_path);
  struct stat st;

  for (int pass = 0; pass < 2; pass++) {
    /* pass 1: an output named "<stem>_timed.mkv" belongs to "<stem>"'s timing. */
    if (pass == 1) {
      if (n < 6 || strncmp(video_path + n - 6, "_timed", 6) != 0)
        break;
      n -= 6;
    }
    for (size_t i = 0; i < sizeof suffixes / sizeof suffixes[0]; i++) {
      int w = snprintf(out, cap, "%.*s%s", (int)n, video_path, suffixes[i]);
      if (w < 0 || (size_t)w >= cap)
        return -ENAMETOOLONG;
      if (stat(out, &st) == 0 && S_ISREG(st.st_mode))
        return 0;
    }
  }
  return -ENOENT;
}

int pirec_remux_output_path(const char *video_path, enum pirec_remux_format format, char *out, size_t cap)
{
  const char *ext = format == PIREC_REMUX_MKV ? ".mkv" : ".mp4";
  size_t n = stem_len(video_path);
  int w = snprintf(out, cap, "%.*s%s", (int)n, video_path, ext);

  if (w < 0 || (size_t)w >= cap)
    return -ENAMETOOLONG;
  if (strcmp(out, video_path) == 0) {
    w = snprintf(out, cap, "%.*s_timed%s", (int)n, video_path, ext);
    if (w < 0 || (size_t)w >= cap)
      return -ENAMETOOLONG;
  }
  return 0;
}

/* Output ticks of CFR frame i out of n: the grid from the first to the n-th row's time. */
static int64_t cfr_ticks(const struct pirec_remux_timing *t, int64_t i, int64_t n, AVRational tb)
{
  if (n < 2)
    return 0;
  int64_t span = t->t_ns[n - 1] - t->t_ns[0];
  /* i * span / (n - 1) seconds-in-ns, rescaled to tb with one rounding. */
  return av_rescale_rnd(i, span * tb.den, (n - 1) * NS_PER_S * tb.num, AV_ROUND_NEAR_INF);
}

/* The output ticks of the first n rows: each row's time rounded to tb, except that a frame less
 * than one tick after the one before (frames that arrived in one read, stamped 1 ns apart; MKV's
 * 1 ms) goes one tick after it, since two frames cannot share a pts. *moved counts those frames,
 * *max_moved_ns is the largest shift. Heap array; NULL without memory. The writer and the verifier
 * both use it, so a verified file has exactly these ticks. */
static int64_t *tick_table(const struct pirec_remux_timing *t, int64_t n, AVRational tb, int64_t *moved,
                           int64_t *max_moved_ns)
{
  int64_t *pt = malloc((size_t)(n > 0 ? n : 1) * sizeof *pt);
  *moved = *max_moved_ns = 0;
  for (int64_t i = 0; pt && i < n; i++) {
    pt[i] = av_rescale_rnd(t->t_ns[i] - t->t_ns[0], tb.den, NS_PER_S * tb.num, AV_ROUND_NEAR_INF);
    if (i > 0 && pt[i] <= pt[i - 1]) {
      int64_t shift = av_rescale_rnd(pt[i - 1] + 1 - pt[i], NS_PER_S * tb.num, tb.den, AV_ROUND_NEAR_INF);
      pt[i] = pt[i - 1] + 1;
      (*moved)++;
      if (shift > *max_moved_ns)
        *max_moved_ns = shift;
    }
  }
  return pt;
}

static const char *raw_format(const char *path)
{
  if (ends_with(path, ".h264") || ends_with(path, ".264"))
    return "h264";
  if (ends_with(path, ".h265") || ends_with(path, ".hevc"))
    return "hevc";
  if (ends_with(path, ".mjpeg") || ends_with(path, ".mjpg"))
    return "mjpeg";
  return NULL;
}

int pirec__remux_is_raw_name(const char *name)
{
  return raw_format(name) != NULL;
}

int pirec__remux_is_own_output(const char *path)
{
  static const unsigned char ebml[4] = {0x1A, 0x45, 0xDF, 0xA3};
  const size_t app = strlen(PIREC__REMUX_WRITING_APP);
  unsigned char buf[4096];
  FILE *f = fopen(path, "rb");
  size_t n;

  if (f == NULL)
    return 0;
  n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  if (n < 4 || memcmp(buf, ebml, 4) != 0)
    return 0;
  /* WritingApp is element 0x5741 in the Segment's Info, which libavformat writes near the start;
   * its value is short, so its size is a one-byte vint (0x80 | length). */
  for (size_t i = 4; i + 3 + app <= n; i++)
    if (buf[i] == 0x57 && buf[i + 1] == 0x41 && (buf[i + 2] & 0x80) && (size_t)(buf[i + 2] & 0x7F) >= app &&
        memcmp(buf + i + 3, PIREC__REMUX_WRITING_APP, app) == 0)
      return 1;
  return 0;
}

/* name: what tells a raw stream by its extension (the path itself, or the encrypted original's). */
/* list: path is an ffconcat list of Matroska segments (join.c), read by the concat demuxer. */
static int open_input(const char *path, const char *name, int list, AVFormatContext **out, int *vs, int *raw,
                      struct pirec_remux_result *res)
{
  const char *raw_name = raw_format(name);
  const AVInputFormat *ifmt = raw_name ? av_find_input_format(raw_name) : NULL;
  AVFormatContext *ic = NULL;
  AVCodecParameters *par;
  int rc;
  AVDictionary *dict = NULL;

  *raw = raw_name != NULL;
  if (list) {
    ifmt = av_find_input_format("concat");
    av_dict_set(&dict, "safe", "0", 0); /* the list names the segments by absolute path */
  }
  /* Raw demuxers hand the parser 1 KiB at a time by default; bigger reads cost fewer calls. */
  if (*raw)
    av_dict_set_int(&dict, "raw_packet_size", 1 << 16, 0);
  rc = avformat_open_input(&ic, path, ifmt, &dict);
  av_dict_free(&dict);
  if (rc < 0) {
    seterr(res, "cannot read '%s' as video: %s", path, averr(rc));
    return rc;
  }
  rc = avformat_find_stream_info(ic, NULL);
  if (rc < 0) {
    seterr(res, "cannot read '%s' as video: %s", path, averr(rc));
    avformat_close_input(&ic);
    return rc;
  }
  rc = av_find_best_stream(ic, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
  if (rc < 0) {
    seterr(res, "'%s' has no video stream", path);
    avformat_close_input(&ic);
    return AVERROR_INVALIDDATA;
  }
  par = ic->streams[rc]->codecpar;
  if (par->codec_id == AV_CODEC_ID_NONE || par->width <= 0 || par->height <= 0) {
    seterr(res, "'%s' has no readable video (no codec parameters: garbage or empty data?)", path);
    avformat_close_input(&ic);
    return AVERROR_INVALIDDATA;
  }
  *vs = rc;
  *out = ic;
  return 0;
}

/* Reads an EBML variable-length integer. Returns its length, or 0 if invalid. */
static int mkv_truncated(const char *path, int64_t file_size);

/* A crash can have cut only the last segment of a joined trial (the others were closed before the
 * next began). */
static int last_segment_truncated(const struct pirec__remux_join *j)
{
  struct stat st;
  return stat(j->last, &st) == 0 && mkv_truncated(j->last, st.st_size);
}

static int ebml_vint(const unsigned char *p, size_t avail, int keep_marker, uint64_t *value, int *unknown)
{
  int len = 1;
  uint64_t v, all_ones;

  if (avail == 0 || p[0] == 0)
    return 0;
  while (!(p[0] & (0x80 >> (len - 1))))
    len++;
  if ((size_t)len > avail)
    return 0;
  v = keep_marker ? p[0] : (uint64_t)(p[0] & (0xFF >> len));
  for (int i = 1; i < len; i++)
    v = (v << 8) | p[i];
  all_ones = (UINT64_C(1) << (7 * len)) - 1;
  if (unknown)
    *unknown = !keep_marker && v == all_ones;
  *value = v;
  return len;
}

/* A Matroska file whose Segment has an unknown size was never finalized (its writer died), and one
 * whose Segment is larger than the file was cut. Either way its end is not trustworthy. */
static int mkv_truncated(const char *path, int64_t file_size)
{
  unsigned char buf[256];
  FILE *f = fopen(path, "rb");
  size_t n, pos = 0;
  uint64_t id, size;
  int len, unknown = 0;

  if (f == NULL)
    return 0;
  n = fread(buf, 1, sizeof buf, f);
  fclose(f);
  for (int element = 0; element < 2; element++) {
    if ((len = ebml_vint(buf + pos, n - pos, 1, &id, NULL)) == 0)
      return 0;
    pos += (size_t)len;
    if ((len = ebml_vint(buf + pos, n - pos, 0, &size, &unknown)) == 0)
      return 0;
    pos += (size_t)len;
    if (element == 0) {
      if (id != 0x1A45DFA3 || size > n - pos)
        return 0; /* not an EBML file we understand: no opinion */
      pos += size;
    } else {
      if (id != 0x18538067)
        return 0;
      return unknown || (int64_t)(pos + size) > file_size;
    }
  }
  return 0;
}

static int cmp_pts(const void *a, const void *b)
{
  const int64_t *x = a, *y = b;
  return x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : (x[1] < y[1] ? -1 : x[1] > y[1]);
}

static void report(pirec_remux_progress_cb progress, void *user, AVFormatContext *ic, int64_t size);

/* What the pre-pass learns of each packet: [0] its pts, or with a decoder its presentation rank
 * (-1 until the decoder gives the frame back); [1] its decode position. */
struct order {
  int64_t (*pts)[2];
  int64_t n;
  size_t cap;
  int64_t out; /* frames the decoder gave back */
  AVCodecContext *dec;
  AVFrame *frame;
};

/* A decoder for the input's video, run with the pixels discarded to learn presentation order. */
static int open_decoder(struct remux *r, struct order *o)
{
  const AVCodecParameters *par = r->ic->streams[r->vs]->codecpar;
  const AVCodec *codec = avcodec_find_decoder(par->codec_id);
  int rc = 0;
  o->frame = av_frame_alloc();
  o->dec = codec ? avcodec_alloc_context3(codec) : NULL;
  if (codec == NULL || o->frame == NULL || o->dec == NULL ||
      (rc = avcodec_parameters_to_context(o->dec, par)) < 0 ||
      (rc = avcodec_open2(o->dec, codec, NULL)) < 0) {
    seterr(r->res, "cannot order the B-frames of '%s': no usable decoder", r->in_path);
    return rc < 0 ? rc : AVERROR(ENOSYS);
  }
  return 0;
}

static int note_packet(struct remux *r, struct order *o, AVPacket *pkt)
{
  int rc = pirec__remux_grow(&o->pts, (size_t)o->n, &o->cap, sizeof *o->pts);
  if (rc < 0)
    return rc;
  o->pts[o->n][0] = o->dec ? -1 : pkt->pts;
  o->pts[o->n][1] = o->n;
  if (o->dec) {
    pkt->pts = pkt->dts = o->n;
    /* A damaged frame is tolerated here: it gets no rank and is left out. */
    avcodec_send_packet(o->dec, pkt);
  }
  av_packet_unref(pkt);
  o->n++;
  /* The pre-pass reads the whole file too: keep reporting, or a supervisor sees a stall. */
  if ((o->n & 63) == 0)
    report(r->progress, r->user, r->ic, r->size);
  return 0;
}

/* Frames come out of the decoder in presentation order, carrying their packet's position. */
static void receive_ranks(struct order *o)
{
  while (avcodec_receive_frame(o->dec, o->frame) >= 0) {
    int64_t at = o->frame->pts != AV_NOPTS_VALUE ? o->frame->pts : o->frame->best_effort_timestamp;
    if (at >= 0 && at < o->n && o->pts[at][0] < 0)
      o->pts[at][0] = o->out++;
    av_frame_unref(o->frame);
  }
}

static int read_order(struct remux *r, struct order *o, AVPacket *pkt)
{
  for (int eof = 0; !eof;) {
    int rc = av_read_frame(r->ic, pkt);
    if (rc < 0) {
      if (rc != AVERROR_EOF)
        r->res->video_truncated = 1;
      eof = 1;
      if (!o->dec)
        break;
      avcodec_send_packet(o->dec, NULL); /* drain the reorder buffer */
    } else if (pkt->stream_index != r->vs) {
      av_packet_unref(pkt);
      continue;
    } else if ((rc = note_packet(r, o, pkt)) < 0) {
      return rc;
    }
    if (o->dec)
      receive_ranks(o);
  }
  return 0;
}

/* r->rank from what the pre-pass read: the decoder's order, or the packets sorted by pts. */
static int rank_packets(struct remux *r, struct order *o)
{
  int64_t n = o->n;
  r->rank = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
  if (r->rank == NULL)
    return AVERROR(ENOMEM);
  r->nrank = n;
  if (o->dec) {
    for (int64_t i = 0; i < n; i++)
      r->rank[i] = o->pts[i][0];
    return 0;
  }
  for (int64_t i = 0; i < n; i++)
    if (o->pts[i][0] == AV_NOPTS_VALUE) {
      seterr(r->res, "'%s': packet %lld has no pts, cannot order its B-frames", r->in_path, (long long)i);
      return AVERROR_INVALIDDATA;
    }
  qsort(o->pts, (size_t)n, sizeof *o->pts, cmp_pts);
  for (int64_t k = 0; k < n; k++) {
    if (k > 0 && o->pts[k][0] == o->pts[k - 1][0]) {
      seterr(r->res, "'%s': packets %lld and %lld have the same pts %lld", r->in_path,
             (long long)o->pts[k - 1][1], (long long)o->pts[k][1], (long long)o->pts[k][0]);
      return AVERROR_INVALIDDATA;
    }
    r->rank[o->pts[k][1]] = k;
  }
  return 0;
}

/* Ranks packets by presentation order. Containers carry pts: sort by them. Elementary streams do
 * not: run the decoder (pixels discarded) with pts = decode position, so frames come out in
 * presentation order carrying their packet's position. Also counts the packets. */
static int prepass(struct remux *r, int need_rank)
{
  struct order o = {0};
  AVPacket *pkt = av_packet_alloc();
  int rc = pkt ? 0 : AVERROR(ENOMEM);
  if (rc == 0 && need_rank && r->raw)
    rc = open_decoder(r, &o);
  if (rc == 0)
    rc = read_order(r, &o, pkt);
  if (rc == 0) {
    r->packets_read = o.n;
    if (need_rank)
      rc = rank_packets(r, &o);
  }
  free(o.pts);
  av_frame_free(&o.frame);
  avcodec_free_context(&o.dec);
  av_packet_free(&pkt);
  return rc;
}

/* For an elementary stream the CSV's offset and bytes columns say where each frame's data ends, so
 * a frame cut by the crash is known exactly; rows pointing past the end mean the data was cut. */
static void raw_limits(struct remux *r)
{
  const struct pirec_remux_timing *t = &r->timing;
  int64_t end = 0, complete = 0;
  int have_offsets = 0;

  r->limit_packets = -1;
  if (!r->raw || t->bytes == NULL || t->count == 0)
    return;
  for (int64_t i = 0; i < t->count; i++) {
    if (t->bytes[i] < 0)
      return; /* no size for every row: no opinion */
    if (t->offset != NULL && t->offset[i] >= 0)
      have_offsets = 1;
  }
  for (int64_t i = 0; i < t->count; i++) {
    int64_t start = have_offsets ? t->offset[i] : end;
    if (start < 0)
      return;
    end = start + t->bytes[i];
    if (end > r->size)
      break;
    complete = i + 1;
  }
  r->limit_packets = complete;
  if (complete < t->count)
    r->res->video_truncated = 1;
}

/* Output ticks of frame i; rows past the timing's end extrapolate (only CFR asks for them). */
static int64_t P(const struct remux *r, int64_t i)
{
  return r->cfr ? cfr_ticks(&r->timing, i, r->cfr_frames, r->tb) : r->pt[i];
}

static int open_output(struct remux *r, const char *tmp)
{
  const char *fmt = r->opt->format == PIREC_REMUX_MKV ? "matroska" : "mp4";
  AVStream *ist = r->ic->streams[r->vs], *ost;
  AVDictionary *dict = NULL;
  int rc;

  rc = avformat_alloc_output_context2(&r->oc, NULL, fmt, tmp);
  if (rc < 0 || r->oc == NULL) {
    seterr(r->res, "cannot create %s output: %s", fmt, averr(rc));
    return rc < 0 ? rc : AVERROR(ENOMEM);
  }
  ost = avformat_new_stream(r->oc, NULL);
  if (ost == NULL)
    return AVERROR(ENOMEM);
  rc = avcodec_parameters_copy(ost->codecpar, ist->codecpar);
  if (rc < 0)
    return rc;
  ost->codecpar->codec_tag = 0; /* let the muxer choose the tag its container uses */
  ost->time_base = r->tb;
  if (r->opt->flags & PIREC_REMUX_CFR && r->cfr_frames > 1) {
    int num, den;
    av_reduce(&num, &den, (r->cfr_frames - 1) * NS_PER_S,
              r->timing.t_ns[r->cfr_frames - 1] - r->timing.t_ns[0], INT32_MAX);
    ost->avg_frame_rate = ost->r_frame_rate = (AVRational){num, den};
  }
  if (!(r->oc->oformat->flags & AVFMT_NOFILE)) {
    rc = avio_open(&r->oc->pb, tmp, AVIO_FLAG_WRITE);
    if (rc < 0) {
      seterr(r->res, "cannot create '%s': %s", tmp, averr(rc));
      return rc;
    }
  }
  if (r->opt->format == PIREC_REMUX_MP4)
    av_dict_set_int(&dict, "video_track_timescale", r->tb.den, 0);
  else
    /* No CRC-32 element in every cluster (libavformat's default; mkvmerge writes none): computing
     * them was a seventh of an MKV remux's CPU, and the verification pass reads every frame back. */
    av_dict_set_int(&dict, "write_crc32", 0, 0);
  /* Marks the file as ours: a later session scan must not take it for a recording. */
  av_dict_set(&r->oc->metadata, "encoding_tool", PIREC__REMUX_WRITING_APP " " PIREC_VERSION, 0);
  av_dict_set(&r->oc->metadata, "encoder", PIREC__REMUX_WRITING_APP " " PIREC_VERSION, 0);
  rc = avformat_write_header(r->oc, &dict);
  av_dict_free(&dict);
  if (rc < 0) {
    seterr(r->res, "cannot write the header of '%s': %s", tmp, averr(rc));
    return rc;
  }
  if (av_cmp_q(r->oc->streams[0]->time_base, r->tb) != 0) {
    seterr(r->res, "the %s muxer chose time base %d/%d instead of %d/%d", fmt,
           r->oc->streams[0]->time_base.num, r->oc->streams[0]->time_base.den, r->tb.num, r->tb.den);
    return AVERROR(EPROTO);
  }
  return 0;
}

static void close_output(struct remux *r)
{
  if (r->oc == NULL)
    return;
  if (!(r->oc->oformat->flags & AVFMT_NOFILE))
    avio_closep(&r->oc->pb);
  avformat_free_context(r->oc);
  r->oc = NULL;
}

/* An output's packet as verify reads it: its pts and what it holds. */
struct seen {
  int64_t pts;
  struct pirec__remux_digest digest;
};

static int cmp_seen(const void *a, const void *b)
{
  const struct seen *x = a, *y = b;
  return x->pts < y->pts ? -1 : x->pts > y->pts;
}

/* Reads the video packets of an open output into *out (heap) and their count into *n. */
static int read_seen(AVFormatContext *ic, int vs, const char *path, struct seen **out, int64_t *n,
                     struct pirec_remux_result *res)
{
  AVPacket *pkt = av_packet_alloc();
  size_t cap = 0;
  int rc = pkt ? 0 : AVERROR(ENOMEM);
  *n = 0;
  while (rc == 0 && (rc = av_read_frame(ic, pkt)) >= 0) {
    rc = 0;
    if (pkt->stream_index == vs && (rc = pirec__remux_grow(out, (size_t)*n, &cap, sizeof **out)) == 0) {
      (*out)[*n].pts = pkt->pts;
      pirec__remux_digest(ic->streams[vs]->codecpar, pkt->data, pkt->size, &(*out)[(*n)++].digest);
    }
    av_packet_unref(pkt);
  }
  if (rc != AVERROR_EOF && rc < 0)
    seterr(res, "'%s': read error after %lld packets: %s", path, (long long)*n, averr(rc));
  av_packet_free(&pkt);
  return rc == AVERROR_EOF ? 0 : rc;
}

/* Frame i of the output against the input's frame i, where the input was read. */
static int check_payload(const char *path, int64_t i, const struct seen *s,
                         const struct pirec__remux_digest *want, struct pirec_remux_result *res)
{
  if (want == NULL || want[i].size < 0 || (s->digest.size == want[i].size && s->digest.hash == want[i].hash))
    return 0;
  seterr(res,
         "'%s': frame %lld holds other data than the input's frame %lld (%lld payload bytes, hash %016llx; "
         "the input's: %lld bytes, hash %016llx): a different video? remux it again",
         path, (long long)i, (long long)i, (long long)s->digest.size, (unsigned long long)s->digest.hash,
         (long long)want[i].size, (unsigned long long)want[i].hash);
  return AVERROR(EPROTO);
}

/* Reads an output back and compares it with frames 0..expect-1 of the timing, and with want (per
 * frame, may be NULL) the payload of each. */
static int verify_file(const char *path, const struct pirec_remux_timing *timing, int64_t expect,
                       int64_t cfr_frames, int cfr, const struct pirec__remux_digest *want,
                       struct pirec_remux_result *res, int64_t *found)
{
  AVFormatContext *ic = NULL;
  struct seen *pk = NULL;
  int64_t n = 0;
  AVRational tb;
  int vs, raw, rc;

  rc = open_input(path, path, 0, &ic, &vs, &raw, res);
  if (rc < 0)
    return rc;
  tb = ic->streams[vs]->time_base;
  if ((rc = read_seen(ic, vs, path, &pk, &n, res)) < 0)
    goto done;
  *found = n;
  if (expect < 0)
    expect = n; /* verifying an existing file: its packets must match the first n rows */
  if (n != expect || n > timing->count) {
    seterr(res, "'%s' has %lld packets, expected %lld (timing has %lld rows)", path, (long long)n,
           (long long)expect, (long long)timing->count);
    rc = AVERROR(EPROTO);
    goto done;
  }
  for (int64_t i = 0; i < n; i++)
    if (pk[i].pts == AV_NOPTS_VALUE) {
      seterr(res, "'%s': packet %lld has no pts", path, (long long)i);
      rc = AVERROR(EPROTO);
      goto done;
    }
  /* Packets come in decode order; with B-frames the pts sorted are the presentation times. */
  qsort(pk, (size_t)n, sizeof *pk, cmp_seen);
  int64_t moved, max_moved, *pt = cfr ? NULL : tick_table(timing, n, tb, &moved, &max_moved);
  if (!cfr && !pt)
    rc = AVERROR(ENOMEM);
  for (int64_t i = 0; i < n && rc == 0; i++) {
    int64_t want_ticks = cfr ? cfr_ticks(timing, i, cfr_frames, tb) : pt[i];
    if (pk[i].pts - pk[0].pts != want_ticks) {
      seterr(res,
             "'%s': frame %lld has pts - pts0 = %lld, expected %lld in time base %d/%d "
             "(captured %lld ns after frame 0)",
             path, (long long)i, (long long)(pk[i].pts - pk[0].pts), (long long)want_ticks, tb.num, tb.den,
             (long long)(timing->t_ns[i] - timing->t_ns[0]));
      rc = AVERROR(EPROTO);
    } else {
      rc = check_payload(path, i, &pk[i], want, res);
    }
  }
  free(pt);
done:
  free(pk);
  avformat_close_input(&ic);
  return rc;
}

static int write_timestamps(const char *output, const struct remux *r, int64_t frames,
                            struct pirec_remux_result *res)
{
  char path[4200], tmp[4300];
  FILE *f;
  int cfr = (r->opt->flags & PIREC_REMUX_CFR) != 0;

  snprintf(path, sizeof path, "%s.timestamps.txt", output);
  snprintf(tmp, sizeof tmp, "%s.part", path);
  f = fopen(tmp, "w");
  if (f == NULL) {
    seterr(res, "cannot create '%s': %s", tmp, strerror(errno));
    return -errno;
  }
  fputs("# timestamp format v2\n", f);
  for (int64_t i = 0; i < frames; i++) {
    /* Exact captured offsets in ms with ns precision (CFR: the grid, in ns). */
    int64_t ns = cfr ? (frames > 1 ? av_rescale_rnd(i, r->timing.t_ns[frames - 1] - r->timing.t_ns[0],
                                                    frames - 1, AV_ROUND_NEAR_INF)
                                   : 0)
                     : r->timing.t_ns[i] - r->timing.t_ns[0];
    fprintf(f, "%lld.%06lld\n", (long long)(ns / 1000000), (long long)(ns % 1000000));
  }
  if (fclose(f) != 0 || rename(tmp, path) != 0) {
    int e = -errno;
    seterr(res, "cannot write '%s': %s", path, strerror(errno));
    unlink(tmp);
    return e;
  }
  return 0;
}

static int sync_path(const char *path, struct pirec_remux_result *res)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

  if (fd < 0 || fsync(fd) < 0) {
    rc = -errno;
    seterr(res, "cannot sync '%s': %s", path, strerror(errno));
  }
  if (fd >= 0)
    close(fd);
  return rc;
}

static int sync_dir_of(const char *path, struct pirec_remux_result *res)
{
  char dir[4096];
  const char *slash = strrchr(path, '/');

  if (slash == NULL)
    snprintf(dir, sizeof dir, ".");
  else
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path + (slash == path)), path);
  return sync_path(dir, res);
}

static void report(pirec_remux_progress_cb progress, void *user, AVFormatContext *ic, int64_t size)
{
  int64_t pos;
  if (progress == NULL)
    return;
  pos = ic->pb ? avio_tell(ic->pb) : 0;
  progress(pos < size ? pos : size, size, user);
}

static const char *in_name(const struct remux *r)
{
  return r->opt->input_name ? r->opt->input_name : r->in_path;
}

/* The input's size, its timing file and the output's name (and its .part). */
static int find_files(struct remux *r)
{
  struct pirec_remux_result *res = r->res;
  const char *video_path = r->in_path;
  struct stat st;
  int rc;
  if (r->join) {
    st.st_size = r->join->bytes;
  } else if (stat(video_path, &st) < 0) {
    rc = -errno;
    seterr(res, "cannot open '%s': %s", video_path, strerror(errno));
    return rc;
  }
  r->size = res->input_bytes = st.st_size;
  if (st.st_size == 0) {
    seterr(res, "'%s' is empty", video_path);
    return -ENODATA;
  }
  if (r->opt->timing_path)
    snprintf(res->timing_path, sizeof res->timing_path, "%s", r->opt->timing_path);
  else if (r->join)
    snprintf(res->timing_path, sizeof res->timing_path, "%s", r->join->timing);
  else if (pirec_remux_find_timing(video_path, res->timing_path, sizeof res->timing_path) < 0) {
    seterr(res, "no timing file for '%s' (looked for <name>_frames.csv, <name>.pts, <name>_pts.txt)",
           video_path);
    return -ENOENT;
  }
  if (r->opt->output_path)
    snprintf(res->output_path, sizeof res->output_path, "%s", r->opt->output_path);
  else if ((rc = pirec_remux_output_path(video_path, r->opt->format, res->output_path,
                                         sizeof res->output_path)) < 0) {
    seterr(res, "output name for '%s' is too long", video_path);
    return rc;
  }
  if (strcmp(res->output_path, video_path) == 0) {
    seterr(res, "output '%s' would overwrite the input", res->output_path);
    return -EEXIST;
  }
  snprintf(r->tmp, sizeof r->tmp, r->opt->flags & PIREC__REMUX_IN_MEMORY ? "%s" : "%s.part",
           res->output_path);
  return 0;
}

static int load_timing(struct remux *r)
{
  struct pirec_remux_result *res = r->res;
  int rc =
      pirec_remux_timing_load(res->timing_path, r->opt->clock, &r->timing, res->error, sizeof res->error);
  if (rc < 0)
    return rc;
  r->rows = res->timing_rows = r->timing.count;
  res->partial_row = r->timing.partial_row;
  res->clock_used = r->timing.clock_used;
  snprintf(res->clock_note, sizeof res->clock_note, "%s", r->timing.clock_note);
  if (r->rows == 0) {
    seterr(res, "'%s' has no complete frame rows", res->timing_path);
    return -ENODATA;
  }
  return 0;
}

static int64_t complete_packets(const struct remux *r)
{
  return r->limit_packets >= 0 && r->limit_packets < r->packets_read ? r->limit_packets : r->packets_read;
}

/* The frames that can be written are the longest run of presentation ranks 0..k-1 whose packets
 * and rows are all complete; the reorder depth is how far decode order runs ahead within it. */
static int writable_frames(struct remux *r)
{
  int64_t complete = complete_packets(r);
  char *present = calloc((size_t)r->rows, 1);
  if (present == NULL)
    return AVERROR(ENOMEM);
  for (int64_t i = 0; i < complete; i++) {
    int64_t k = r->rank ? r->rank[i] : i;
    if (k >= 0 && k < r->rows)
      present[k] = 1;
  }
  for (r->krank = 0; r->krank < r->rows && present[r->krank]; r->krank++)
    ;
  free(present);
  for (int64_t i = 0, j = 0; r->rank && i < complete; i++)
    if (r->rank[i] >= 0 && r->rank[i] < r->krank) {
      if (j - r->rank[i] > r->depth)
        r->depth = j - r->rank[i];
      j++;
    }
  return 0;
}

/* Streams that reorder (B-frames) and CFR need every packet counted before the first is written:
 * a pre-pass over the input, which is then opened again for the copy. */
static int count_frames(struct remux *r)
{
  int need_rank = r->ic->streams[r->vs]->codecpar->video_delay > 0;
  if (!need_rank && !r->cfr)
    return 0;
  int rc = prepass(r, need_rank);
  if (rc == 0)
    rc = writable_frames(r);
  if (rc < 0)
    return rc;
  avformat_close_input(&r->ic);
  rc = open_input(r->join ? r->join->input : r->in_path, in_name(r), r->join && !r->raw_join, &r->ic, &r->vs,
                  &r->raw, r->res);
  r->cfr_frames = r->krank;
  return rc;
}

/* The output ticks of every row (tick_table); frames moved to keep one tick apart are reported. */
static int plan_ticks(struct remux *r)
{
  if (r->cfr)
    return 0;
  r->pt = tick_table(&r->timing, r->timing.count, r->tb, &r->res->frames_moved, &r->res->max_moved_ns);
  return r->pt ? 0 : AVERROR(ENOMEM);
}

/* The presentation rank of the i-th packet read when it is written, else -1: it has a rank among
 * the writable frames and its data is complete. */
static int64_t frame_of(const struct remux *r, int64_t i)
{
  int64_t k = r->rank ? (i < r->nrank ? r->rank[i] : -1) : i;
  if (k < 0 || k >= (r->krank >= 0 ? r->krank : r->rows) || (r->limit_packets >= 0 && i >= r->limit_packets))
    return -1;
  return k;
}

/* How long frame k is presented: until the next captured frame; the last row's frame, which
 * has no next one, for the mean interval (1/30 s when it is the only one). */
static int64_t duration_of(const struct remux *r, int64_t k)
{
  if (k + 1 < r->rows || r->cfr)
    return P(r, k + 1) - P(r, k);
  if (r->rows < 2)
    return r->tb.den / 30;
  int64_t span = P(r, r->rows - 1) - P(r, 0);
  return (span + (r->rows - 1) / 2) / (r->rows - 1);
}

/* With B-frames, packets are written in decode order and each carries its own frame's duration,
 * so an MP4's sample durations (its dts steps) are the frames' real durations and the track as
 * long as the frames. dts is then the running sum of the durations written before, from a base
 * early enough that no packet is decoded after it is presented. */
static void plan_dts(struct remux *r)
{
  int64_t sum = 0, base = INT64_MAX, complete = complete_packets(r);
  for (int64_t i = 0; i < complete; i++) {
    int64_t k = frame_of(r, i);
    if (k < 0)
      continue;
    if (P(r, k) - sum < base)
      base = P(r, k) - sum;
    sum += duration_of(r, k);
  }
  r->dts_base = base == INT64_MAX ? 0 : base;
  r->dts_sum = 0;
}

/* Gives the i-th packet read, frame k in presentation order, its output timestamps and size. */
static void stamp(struct remux *r, AVPacket *pkt, int64_t i, int64_t k)
{
  int64_t pts = P(r, k), duration = duration_of(r, k);
  int64_t dts = r->rank ? r->dts_base + r->dts_sum : pts;
  /* At EOF the parser flushes whatever follows the last frame boundary it saw; if the cut fell
   * inside the next frame's first NAL units, those bytes ride on this packet. The CSV knows
   * the frame's real size. */
  if (r->limit_packets >= 0 && i == r->limit_packets - 1 && r->timing.bytes[i] > 0 &&
      pkt->size > r->timing.bytes[i])
    av_shrink_packet(pkt, (int)r->timing.bytes[i]);
  pkt->stream_index = 0;
  pkt->pts = pts;
  pkt->dts = dts;
  pkt->duration = duration;
  r->dts_sum += duration;
  pkt->pos = -1;
}

/* The copy: every packet of the video stream read, the writable ones stamped and written. */
static int copy_packets(struct remux *r)
{
  AVPacket *pkt = av_packet_alloc();
  int rc = 0;
  if (pkt == NULL)
    return AVERROR(ENOMEM);
  r->packets_read = 0;
  for (int64_t i = 0;;) {
    if ((rc = av_read_frame(r->ic, pkt)) < 0) {
      if (rc != AVERROR_EOF)
        r->res->video_truncated = 1; /* a demuxer error mid-file: keep what came before */
      rc = 0;
      break;
    }
    if (pkt->stream_index != r->vs) {
      av_packet_unref(pkt);
      continue;
    }
    int64_t k = frame_of(r, i);
    if (k >= 0) {
      stamp(r, pkt, i, k);
      if (r->digests != NULL && k < r->rows)
        pirec__remux_digest(r->ic->streams[r->vs]->codecpar, pkt->data, pkt->size, &r->digests[k]);
      if (!r->dry && (rc = av_write_frame(r->oc, pkt)) < 0) {
        seterr(r->res, "cannot write frame %lld to '%s': %s", (long long)k, r->tmp, averr(rc));
        break;
      }
      r->written++;
    }
    av_packet_unref(pkt);
    r->packets_read = ++i;
    if ((i & 63) == 0)
      report(r->progress, r->user, r->ic, r->size);
  }
  if (rc == 0)
    report(r->progress, r->user, r->ic, r->size);
  av_packet_free(&pkt);
  return rc;
}

/* The result's counts, and whether the frames that pair up may be kept. */
static int tally(struct remux *r)
{
  struct pirec_remux_result *res = r->res;
  const struct pirec_remux_timing *t = &r->timing;
  int64_t written = r->written;
  res->packets = complete_packets(r);
  res->frames = written;
  res->rows_cut = r->rows - written;
  res->packets_cut = res->packets - written;
  if (r->raw && r->limit_packets >= 0 && written > 0 && written <= r->rows) {
    int64_t end = 0;
    for (int64_t i = 0; i < written; i++)
      end = (t->offset && t->offset[i] >= 0 ? t->offset[i] : end) + t->bytes[i];
    res->bytes_cut = r->size - end;
  }
  if (t->count > 0 && written > 0) {
    res->first_ns = t->t_ns[0];
    res->duration_ns = t->t_ns[written - 1] - t->t_ns[0];
    res->before_start = t->before_start < written ? t->before_start : written;
    res->start_ns = t->t_ns[res->before_start < written ? res->before_start : written - 1];
  }
  if (written == 0) {
    seterr(res, "'%s' has no complete frame that pairs with a row of '%s' (%lld packets, %lld rows)",
           r->in_path, res->timing_path, (long long)res->packets, (long long)r->rows);
    return AVERROR_INVALIDDATA;
  }
  if ((res->rows_cut || res->packets_cut) && !res->partial_row && !res->video_truncated &&
      !(r->opt->flags & PIREC_REMUX_ALLOW_CUT)) {
    seterr(res,
           "'%s' has %lld rows but '%s' has %lld packets, and neither looks cut by a crash "
           "(--allow-cut keeps the %lld that pair up)",
           res->timing_path, (long long)r->rows, r->in_path, (long long)res->packets, (long long)written);
    return AVERROR(EPROTO);
  }
  return 0;
}

/* Finishes the .part, reads it back against the timing and renames it into place; with --replace
 * it is on disk before the input is removed. */
static int finish_output(struct remux *r)
{
  struct pirec_remux_result *res = r->res;
  int replace = (r->opt->flags & PIREC_REMUX_REPLACE) != 0;
  int sync = (r->opt->flags & (PIREC_REMUX_REPLACE | PIREC__REMUX_SYNC)) != 0;
  int64_t found = 0;
  int rc = av_write_trailer(r->oc);
  if (rc < 0) {
    seterr(res, "cannot finish '%s': %s", r->tmp, averr(rc));
    return rc;
  }
  close_output(r);
  if ((rc = verify_file(r->tmp, &r->timing, r->written, r->cfr_frames, r->cfr, NULL, res, &found)) < 0)
    return rc;
  if (r->opt->flags & PIREC__REMUX_IN_MEMORY) {
    r->have_output = 0; /* the caller encrypts it (remux/crypt.c) */
    return 0;
  }
  if ((r->opt->flags & PIREC_REMUX_WRITE_TIMESTAMPS) &&
      (rc = write_timestamps(res->output_path, r, r->written, res)) < 0)
    return rc;
  /* The input is about to be deleted: the output must be on disk first, not just in the cache. */
  if (sync && (rc = sync_path(r->tmp, res)) < 0)
    return rc;
  if (rename(r->tmp, res->output_path) < 0) {
    rc = -errno;
    seterr(res, "cannot rename '%s' to '%s': %s", r->tmp, res->output_path, strerror(errno));
    return rc;
  }
  r->have_output = 0;
  if (sync && (rc = sync_dir_of(res->output_path, res)) < 0)
    return rc;
  if (replace && unlink(r->in_path) < 0) {
    rc = -errno;
    seterr(res, "verified '%s' but cannot remove '%s': %s", res->output_path, r->in_path, strerror(errno));
  }
  return rc;
}

/* Asks for the payload digest of each frame written (see verify). */
static int want_digests(struct remux *r)
{
  r->digests = malloc((size_t)r->rows * sizeof *r->digests);
  if (r->digests == NULL)
    return AVERROR(ENOMEM);
  for (int64_t k = 0; k < r->rows; k++)
    r->digests[k].size = -1;
  return 0;
}

/* pirec_remux_file; with digests, also the payload digest of every frame written (heap, one per
 * timing row, size -1 for a row without a frame; the caller frees it). */
/* A missing input whose segments exist is read as their join (join.c). */
static int join_segments(struct remux *r, struct pirec__remux_join *join)
{
  int rc = 0;
  if (!pirec__remux_is_segmented(r->in_path))
    return 0;
  r->raw_join = raw_format(in_name(r)) != NULL;
  if ((rc = pirec__remux_join_open(r->in_path, !r->raw_join, join)) < 0)
    seterr(r->res, "%s", join->error);
  r->join = join;
  return rc;
}

/* Opens the input, notes the signs of a crash and counts its frames. */
static int open_and_count(struct remux *r)
{
  int rc = open_input(r->join ? r->join->input : r->in_path, in_name(r), r->join && !r->raw_join, &r->ic,
                      &r->vs, &r->raw, r->res);
  if (rc < 0)
    return rc;
  if (!r->raw && strcmp(r->ic->iformat->name, "matroska,webm") == 0 && mkv_truncated(r->in_path, r->size))
    r->res->video_truncated = 1;
  if (r->join && !r->raw && last_segment_truncated(r->join))
    r->res->video_truncated = 1;
  raw_limits(r);
  return count_frames(r);
}

static int remux_file(const char *video_path, const struct pirec_remux_options *options,
                      struct pirec_remux_result *res, pirec_remux_progress_cb progress, void *user,
                      struct pirec__remux_digest **digests)
{
  static const struct pirec_remux_options defaults;
  struct remux r;

  memset(res, 0, sizeof *res);
  memset(&r, 0, sizeof r);
  r.opt = options ? options : &defaults;
  r.in_path = video_path;
  r.res = res;
  r.limit_packets = -1;
  r.krank = -1;
  r.progress = progress;
  r.user = user;
  r.cfr = (r.opt->flags & PIREC_REMUX_CFR) != 0;
  r.dry = (r.opt->flags & PIREC_REMUX_DRY_RUN) != 0;
  r.tb = r.opt->format == PIREC_REMUX_MKV ? (AVRational){1, 1000} : (AVRational){1, 90000};

  struct pirec__remux_join join;
  int rc = join_segments(&r, &join);
  if (rc == 0)
    rc = find_files(&r);
  if (rc == 0)
    rc = load_timing(&r);
  if (rc == 0 && digests != NULL)
    rc = want_digests(&r);
  if (rc == 0)
    rc = open_and_count(&r);
  if (rc == 0) {
    res->reorder_depth = (int)r.depth;
    rc = plan_ticks(&r);
  }
  if (rc == 0 && r.rank)
    plan_dts(&r);
  if (rc == 0 && !r.dry) {
    r.have_output = 1;
    rc = open_output(&r, r.tmp);
  }
  if (rc == 0)
    rc = copy_packets(&r);
  if (rc == 0)
    rc = tally(&r);
  if (rc == 0 && !r.dry)
    rc = finish_output(&r);
  close_output(&r);
  if (r.have_output)
    unlink(r.tmp);
  avformat_close_input(&r.ic);
  if (r.join)
    pirec__remux_join_close(r.join);
  free(r.rank);
  free(r.pt);
  pirec_remux_timing_free(&r.timing);
  if (digests != NULL && rc == 0)
    *digests = r.digests;
  else
    free(r.digests);
  return rc;
}

int pirec_remux_file(const char *video_path, const struct pirec_remux_options *options,
                     struct pirec_remux_result *res, pirec_remux_progress_cb progress, void *user)
{
  return remux_file(video_path, options, res, progress, user, NULL);
}

/* The recording an output was made from: "<stem>" (without "_timed") with an elementary-stream
 * extension, else ".mkv", that is neither the output itself nor another of our outputs. */
static int find_input(const char *output, char *out, size_t cap)
{
  static const char *const exts[] = {".h264", ".264", ".mjpeg", ".mjpg", ".hevc", ".h265", ".mkv"};
  size_t n = stem_len(output);
  struct stat st;

  if (n >= 6 && strncmp(output + n - 6, "_timed", 6) == 0)
    n -= 6;
  for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++) {
    int w = snprintf(out, cap, "%.*s%s", (int)n, output, exts[i]);
    if (w < 0 || (size_t)w >= cap)
      return -ENAMETOOLONG;
    if (strcmp(out, output) != 0 && stat(out, &st) == 0 && S_ISREG(st.st_mode) &&
        !pirec__remux_is_own_output(out))
      return 0;
    if (pirec__remux_is_segmented(out)) /* pirec-remux --join's output: its segments, joined */
      return 0;
  }
  return -ENOENT;
}

/* The output holds found frames where expect were due: says why that matters (input is NULL when
 * there is no input video to compare with) and returns AVERROR(EPROTO). */
static int verify_count_mismatch(struct pirec_remux_result *res, const char *output_path, const char *input,
                                 int64_t found, int64_t expect, size_t rows)
{
  if (input != NULL)
    seterr(res,
           "'%s' has %lld frames but should have %lld: '%s' and '%s' hold %lld that pair up "
           "(a cut or stale output; remux it again)",
           output_path, (long long)found, (long long)expect, input, res->timing_path, (long long)expect);
  else
    seterr(res,
           "'%s' has %lld frames but '%s' has %lld complete rows, and without the input video "
           "nothing shows the missing ones had no data",
           output_path, (long long)found, res->timing_path, (long long)rows);
  return AVERROR(EPROTO);
}

/* A verified output's counts and times, from the timing of its found frames. */
static void verify_result_times(struct pirec_remux_result *res, const struct pirec_remux_timing *timing,
                                int64_t found)
{
  res->packets = res->frames = found;
  res->rows_cut = timing->count - found;
  if (found > 0 && found <= (int64_t)timing->count) {
    res->first_ns = timing->t_ns[0];
    res->duration_ns = timing->t_ns[found - 1] - timing->t_ns[0];
    res->before_start = timing->before_start < found ? timing->before_start : found;
    res->start_ns = timing->t_ns[res->before_start < found ? res->before_start : found - 1];
  }
}

int pirec__remux_verify(const char *output_path, const struct pirec_remux_options *options,
                        struct pirec_remux_result *res, pirec_remux_progress_cb progress, void *user)
{
  struct pirec_remux_options defaults, dry;
  struct pirec_remux_timing timing;
  struct pirec_remux_result *in = NULL;
  struct pirec__remux_digest *digests = NULL;
  struct stat st;
  struct pirec__remux_join join;
  int64_t found = 0, expect = -1;
  int rc, cfr;
  char path[sizeof res->output_path], input[sizeof res->output_path];

  /* output_path may point into res (a caller re-verifying res->output_path). */
  snprintf(path, sizeof path, "%s", output_path);
  output_path = path;
  memset(res, 0, sizeof *res);
  memset(&defaults, 0, sizeof defaults);
  if (options == NULL)
    options = &defaults;
  cfr = (options->flags & PIREC_REMUX_CFR) != 0;
  snprintf(res->output_path, sizeof res->output_path, "%s", output_path);
  join.timing_fd = join.list_fd = -1;
  if (options->timing_path)
    snprintf(res->timing_path, sizeof res->timing_path, "%s", options->timing_path);
  else if (pirec_remux_find_timing(output_path, res->timing_path, sizeof res->timing_path) < 0) {
    /* a joined trial's timing is its segments' frames CSVs, joined */
    if (find_input(output_path, input, sizeof input) == 0 && pirec__remux_is_segmented(input) &&
        pirec__remux_join_open(input, !raw_format(input), &join) == 0) {
      snprintf(res->timing_path, sizeof res->timing_path, "%s", join.timing);
    } else {
      seterr(res, "no timing file for '%s' (looked for <name>_frames.csv, <name>.pts, <name>_pts.txt)",
             output_path);
      return -ENOENT;
    }
  }
  if (stat(output_path, &st) == 0 && ends_with(output_path, ".mkv") &&
      mkv_truncated(output_path, st.st_size)) {
    seterr(res, "'%s' is cut or unfinished: its Matroska Segment does not end where the file does",
           output_path);
    pirec__remux_join_close(&join);
    return AVERROR(EPROTO);
  }
  rc = pirec_remux_timing_load(res->timing_path, options->clock, &timing, res->error, sizeof res->error);
  pirec__remux_join_close(&join);
  if (rc < 0)
    return rc;
  res->timing_rows = timing.count;
  res->partial_row = timing.partial_row;
  res->clock_used = timing.clock_used;
  snprintf(res->clock_note, sizeof res->clock_note, "%s", timing.clock_note);

  /* How many frames the output should hold is what a remux would write now: the frames the CSV
   * and the input both hold. A dry run of the input says, crash recovery and cuts included. */
  if (find_input(output_path, input, sizeof input) == 0) {
    in = malloc(sizeof *in);
    if (in == NULL) {
      rc = AVERROR(ENOMEM);
      goto done;
    }
    dry = *options;
    dry.flags = (options->flags & PIREC_REMUX_CFR) | PIREC_REMUX_DRY_RUN | PIREC_REMUX_ALLOW_CUT;
    dry.format = ends_with(output_path, ".mkv") ? PIREC_REMUX_MKV : PIREC_REMUX_MP4;
    dry.timing_path = res->timing_path;
    dry.output_path = NULL;
    rc = remux_file(input, &dry, in, progress, user, &digests);
    if (rc < 0) {
      seterr(res, "cannot check '%s' against its input: %s", output_path, in->error);
      goto done;
    }
    expect = in->frames;
  } else if (!timing.partial_row) {
    expect = timing.count; /* no input to ask, no sign of a crash: every row has its frame */
  }

  /* CFR's grid depends on the frame count, so count first. */
  rc = verify_file(output_path, &timing, -1, -1, 0, cfr ? NULL : digests, res, &found);
  if (cfr && (rc >= 0 || found > 0)) {
    res->error[0] = '\0';
    rc = verify_file(output_path, &timing, found, expect >= 0 ? expect : found, 1, digests, res, &found);
  }
  if (rc >= 0 && expect >= 0 && found != expect)
    rc = verify_count_mismatch(res, output_path, in != NULL ? input : NULL, found, expect, timing.count);
  verify_result_times(res, &timing, found);
done:
  free(in);
  free(digests);
  pirec_remux_timing_free(&timing);
  return rc;
}

int pirec_remux_verify(const char *output_path, const struct pirec_remux_options *options,
                       struct pirec_remux_result *res)
{
  return pirec__remux_verify(output_path, options, res, NULL, NULL);
}
