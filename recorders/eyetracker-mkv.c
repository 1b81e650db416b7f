/* The scene video's container: H.264 access units as received, muxed into Matroska with
 * libavformat through a custom AVIO that pushes into a pirec_sink (see eyetracker-int.h). */

#include "eyetracker-int.h"

#include "pirec/sink.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

struct pirec__et_mkv {
  struct pirec_sink *sink;
  AVFormatContext *oc;
  AVIOContext *pb;
  AVPacket *pkt;
  int started;
  int error;
  int64_t last_ms;
  uint64_t bytes;
};

#if LIBAVFORMAT_VERSION_MAJOR >= 61
static int on_write(void *opaque, const uint8_t *buf, int size)
#else
static int on_write(void *opaque, uint8_t *buf, int size)
#endif
{
  struct pirec__et_mkv *m = opaque;
  if (m->error)
    return m->error;
  int r = pirec_sink_push(m->sink, buf, (size_t)size);
  if (r < 0) {
    m->error = r; /* the file ends at the last complete push; later writes are refused */
    return r;
  }
  m->bytes += (uint64_t)size;
  return size;
}

int pirec__et_mkv_new(struct pirec_sink *sink, struct pirec__et_mkv **out)
{
  struct pirec__et_mkv *m = calloc(1, sizeof *m);
  if (!m)
    return -ENOMEM;
  m->sink = sink;
  m->last_ms = INT64_MIN;
  m->pkt = av_packet_alloc();
  if (!m->pkt) {
    free(m);
    return -ENOMEM;
  }
  *out = m;
  return 0;
}

/* Copies the SPS and PPS NAL units of an Annex B access unit, with 4-byte start codes. */
static size_t param_sets(const uint8_t *b, size_t len, uint8_t *out)
{
  size_t n = 0, i = 0;
  while (i + 3 < len) {
    if (!(b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1)) {
      i++;
      continue;
    }
    size_t s = i + 3, e = s;
    while (e + 3 <= len && !(b[e] == 0 && b[e + 1] == 0 && (b[e + 2] == 1 || b[e + 2] == 0)))
      e++;
    if (e + 3 > len)
      e = len;
    int type = b[s] & 0x1F;
    if (type == 7 || type == 8) {
      static const uint8_t sc[4] = {0, 0, 0, 1};
      memcpy(out + n, sc, 4);
      memcpy(out + n + 4, b + s, e - s);
      n += 4 + (e - s);
    }
    i = e;
  }
  return n;
}

/* The picture size from the SPS, through libavcodec's H.264 parser (no decoding). */
static int picture_size(const uint8_t *au, size_t len, int *w, int *h)
{
  AVCodecParserContext *pc = av_parser_init(AV_CODEC_ID_H264);
  AVCodecContext *ctx = avcodec_alloc_context3(NULL);
  uint8_t *copy = av_mallocz(len + AV_INPUT_BUFFER_PADDING_SIZE);
  int r = AVERROR(ENOMEM);
  if (pc && ctx && copy) {
    memcpy(copy, au, len);
    pc->flags |= PARSER_FLAG_COMPLETE_FRAMES;
    uint8_t *o;
    int on;
    av_parser_parse2(pc, ctx, &o, &on, copy, (int)len, AV_NOPTS_VALUE, AV_NOPTS_VALUE, 0);
    *w = pc->width > 0 ? pc->width : ctx->width;
    *h = pc->height > 0 ? pc->height : ctx->height;
    r = *w > 0 && *h > 0 ? 0 : AVERROR_INVALIDDATA;
  }
  av_free(copy);
  avcodec_free_context(&ctx);
  if (pc)
    av_parser_close(pc);
  return r;
}

static int start(struct pirec__et_mkv *m, const uint8_t *au, size_t len)
{
  enum { AVIO_BUF = 64 * 1024 };
  int w, h, r;
  if ((r = picture_size(au, len, &w, &h)) < 0)
    return -EINVAL;
  uint8_t *extra = av_mallocz(len + 64 + AV_INPUT_BUFFER_PADDING_SIZE);
  if (!extra)
    return -ENOMEM;
  size_t xn = param_sets(au, len, extra);
  if (xn == 0) {
    av_free(extra);
    return -EINVAL;
  }
  if ((r = avformat_alloc_output_context2(&m->oc, NULL, "matroska", NULL)) < 0) {
    av_free(extra);
    return r;
  }
  AVStream *st = avformat_new_stream(m->oc, NULL);
  if (!st) {
    av_free(extra);
    return -ENOMEM;
  }
  st->codecpar->codec_type = AVMEDIA_TYPE_VIDEO;
  st->codecpar->codec_id = AV_CODEC_ID_H264;
  st->codecpar->width = w;
  st->codecpar->height = h;
  st->codecpar->extradata = extra;
  st->codecpar->extradata_size = (int)xn;
  st->time_base = (AVRational){1, 1000};
  uint8_t *iobuf = av_malloc(AVIO_BUF);
  if (!iobuf)
    return -ENOMEM;
  m->pb = avio_alloc_context(iobuf, AVIO_BUF, 1, m, NULL, on_write, NULL);
  if (!m->pb) {
    av_free(iobuf);
    return -ENOMEM;
  }
  m->oc->pb = m->pb;
  AVDictionary *opts = NULL;
  av_dict_set(&opts, "cluster_time_limit", "1000", 0);
  av_dict_set(&opts, "cluster_size_limit", "2097152", 0);
  r = avformat_write_header(m->oc, &opts);
  av_dict_free(&opts);
  if (r < 0)
    return r;
  m->started = 1;
  return 0;
}

int pirec__et_mkv_write(struct pirec__et_mkv *m, const uint8_t *au, size_t len, int keyframe,
                        int64_t pts_ns)
{
  int r;
  if (m->error)
    return m->error;
  if (!m->started && (r = start(m, au, len)) < 0) {
    if (r != -EINVAL)
      m->error = r;
    return r;
  }
  int64_t ms = pts_ns / 1000000;
  if (m->last_ms != INT64_MIN && ms <= m->last_ms)
    ms = m->last_ms + 1;
  m->last_ms = ms;
  AVPacket *pkt = m->pkt;
  av_packet_unref(pkt);
  pkt->data = (uint8_t *)au;
  pkt->size = (int)len;
  pkt->pts = pkt->dts = ms;
  pkt->stream_index = 0;
  pkt->flags = keyframe ? AV_PKT_FLAG_KEY : 0;
  r = av_write_frame(m->oc, pkt);
  pkt->data = NULL;
  pkt->size = 0;
  if (r < 0 && !m->error)
    m->error = r;
  return m->error;
}

int pirec__et_mkv_started(const struct pirec__et_mkv *m)
{
  return m->started;
}

int pirec__et_mkv_finish(struct pirec__et_mkv *m)
{
  if (m->started && !m->error) {
    int r = av_write_trailer(m->oc);
    avio_flush(m->pb);
    if (r < 0 && !m->error)
      m->error = r;
  }
  return m->error;
}

uint64_t pirec__et_mkv_bytes(const struct pirec__et_mkv *m)
{
  return m->bytes;
}

void pirec__et_mkv_free(struct pirec__et_mkv *m)
{
  if (!m)
    return;
  if (m->pb) {
    av_freep(&m->pb->buffer);
    avio_context_free(&m->pb);
  }
  if (m->oc) {
    m->oc->pb = NULL;
    avformat_free_context(m->oc);
  }
  av_packet_free(&m->pkt);
  free(m);
}
