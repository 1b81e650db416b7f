/* H.264 Annex B access units muxed into Matroska in-process (libavformat) and written through a
 * pirec_sink, so a recorder sees each frame exactly when it is in the file (the camera, the eye
 * tracker's scene video); and the sealer that writes a closed file's real segment size. */

#include "mkv.h"

#include "h264.h"

#include "pirec/log.h"
#include "pirec/sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

/* The SPS and PPS of an access unit in Annex B form (the track's codec private data): their
 * length in out[0..cap), 0 when it holds neither. */
static size_t parameter_sets(const uint8_t *au, size_t len, uint8_t *out, size_t cap)
{
  static const uint8_t sc[4] = {0, 0, 0, 1};
  size_t pos = 0, n, used = 0;
  const uint8_t *nal;
  while (pirec_h264_next_nal(au, len, &pos, &nal, &n)) {
    int type = nal[0] & 0x1F;
    if ((type != 7 && type != 8) || used + n + 4 > cap)
      continue;
    memcpy(out + used, sc, 4);
    memcpy(out + used + 4, nal, n);
    used += n + 4;
  }
  return used;
}

/* ---- Matroska ---- */

struct pirec_mkv {
  struct pirec_sink *sink;
  AVFormatContext *oc;
  AVIOContext *pb;
  AVPacket *pkt;
  int width, height, fps_num, fps_den; /* 0: from the first SPS / not written */
  int header_done;
  int per_frame; /* each unit's cluster is closed and pushed at once (the default) */
  int error;
  int64_t last_pts;
  uint64_t bytes;
  uint8_t head[256]; /* the file's first bytes: EBML header and the segment's size field */
  size_t head_len;
};

#if LIBAVFORMAT_VERSION_MAJOR >= 61
static int mkv_write(void *opaque, const uint8_t *buf, int size)
#else
static int mkv_write(void *opaque, uint8_t *buf, int size)
#endif
{
  struct pirec_mkv *m = opaque;
  if (m->error)
    return m->error;
  if (m->head_len < sizeof m->head) {
    size_t n = sizeof m->head - m->head_len < (size_t)size ? sizeof m->head - m->head_len : (size_t)size;
    memcpy(m->head + m->head_len, buf, n);
    m->head_len += n;
  }
  int r = pirec_sink_push(m->sink, buf, (size_t)size);
  if (r < 0) {
    /* The file is cut here; later writes are refused so the muxer stops cleanly. */
    m->error = r;
    return r;
  }
  m->bytes += (uint64_t)size;
  return size;
}

int pirec_mkv_new(struct pirec_sink *sink, int width, int height, int fps_num, int fps_den,
                  struct pirec_mkv **out)
{
  struct pirec_mkv *m = calloc(1, sizeof *m);
  if (!m)
    return -ENOMEM;
  m->sink = sink;
  m->width = width > 0 && height > 0 ? width : 0;
  m->height = width > 0 && height > 0 ? height : 0;
  m->fps_num = fps_num > 0 && fps_den > 0 ? fps_num : 0;
  m->fps_den = fps_num > 0 && fps_den > 0 ? fps_den : 0;
  m->last_pts = INT64_MIN;
  m->per_frame = 1;
  m->pkt = av_packet_alloc();
  if (!m->pkt) {
    free(m);
    return -ENOMEM;
  }
  *out = m;
  return 0;
}

/* The picture size from the SPS, through libavcodec's H.264 parser (no decoding). 0, -EINVAL when
 * the unit has no readable SPS, or -ENOMEM. */
static int picture_size(const uint8_t *au, size_t len, int *w, int *h)
{
  AVCodecParserContext *pc = av_parser_init(AV_CODEC_ID_H264);
  AVCodecContext *ctx = avcodec_alloc_context3(NULL);
  uint8_t *copy = av_mallocz(len + AV_INPUT_BUFFER_PADDING_SIZE); /* the parser reads past len */
  int r = -ENOMEM;
  if (pc && ctx && copy) {
    memcpy(copy, au, len);
    pc->flags |= PARSER_FLAG_COMPLETE_FRAMES;
    uint8_t *o;
    int on;
    av_parser_parse2(pc, ctx, &o, &on, copy, (int)len, AV_NOPTS_VALUE, AV_NOPTS_VALUE, 0);
    *w = pc->width > 0 ? pc->width : ctx->width;
    *h = pc->height > 0 ? pc->height : ctx->height;
    r = *w > 0 && *h > 0 ? 0 : -EINVAL;
  }
  av_free(copy);
  avcodec_free_context(&ctx);
  if (pc)
    av_parser_close(pc);
  return r;
}

/* Sets up the muxer from the first access unit and writes the header. -EINVAL when the unit cannot
 * start a file; what was allocated is left for the caller (or pirec_mkv_free) to release. */
static int write_header(struct pirec_mkv *m, const uint8_t *au, size_t len)
{
  enum { AVIO_BUF = 64 * 1024 };
  size_t ps_cap = len + 64, ps_len;
  uint8_t *ps;
  AVDictionary *opts = NULL;
  int r, w = m->width, h = m->height;

  if (w == 0 && (r = picture_size(au, len, &w, &h)) < 0)
    return r;
  ps = av_mallocz(ps_cap + AV_INPUT_BUFFER_PADDING_SIZE);
  if (!ps)
    return -ENOMEM;
  ps_len = parameter_sets(au, len, ps, ps_cap);
  if (ps_len == 0) {
    av_free(ps);
    return -EINVAL; /* no SPS/PPS in the first access unit */
  }
  if ((r = avformat_alloc_output_context2(&m->oc, NULL, "matroska", NULL)) < 0) {
    av_free(ps);
    return r;
  }
  AVStream *st = avformat_new_stream(m->oc, NULL);
  if (!st) {
    av_free(ps);
    return -ENOMEM;
  }
  st->codecpar->codec_type = AVMEDIA_TYPE_VIDEO;
  st->codecpar->codec_id = AV_CODEC_ID_H264;
  st->codecpar->width = w;
  st->codecpar->height = h;
  st->codecpar->extradata = ps;
  st->codecpar->extradata_size = (int)ps_len;
  st->time_base = (AVRational){1, 1000};
  if (m->fps_num > 0)
    st->avg_frame_rate = (AVRational){m->fps_num, m->fps_den};
  uint8_t *iobuf = av_malloc(AVIO_BUF);
  if (!iobuf)
    return -ENOMEM;
  m->pb = avio_alloc_context(iobuf, AVIO_BUF, 1, m, NULL, mkv_write, NULL);
  if (!m->pb) {
    av_free(iobuf);
    return -ENOMEM;
  }
  m->oc->pb = m->pb;
  /* Not seekable: the segment has an unknown size and clusters are final once written, so a file
   * cut by a crash or power loss stays readable up to its last complete cluster. Clusters close
   * at least every second. */
  av_dict_set(&opts, "cluster_time_limit", "1000", 0);
  av_dict_set(&opts, "cluster_size_limit", "2097152", 0);
  r = avformat_write_header(m->oc, &opts);
  av_dict_free(&opts);
  if (r < 0)
    return r;
  m->header_done = 1;
  avio_flush(m->pb);
  return m->error;
}

size_t pirec_mkv_margin(void)
{
  return (2u << 20) + (128u << 10); /* one cluster plus the AVIO buffer */
}

static void drop_muxer(struct pirec_mkv *m)
{
  if (m->pb) {
    av_freep(&m->pb->buffer);
    avio_context_free(&m->pb);
  }
  if (m->oc) {
    m->oc->pb = NULL;
    avformat_free_context(m->oc);
    m->oc = NULL;
  }
}

int pirec_mkv_write(struct pirec_mkv *m, const uint8_t *au, size_t len, int keyframe, int64_t pts_ns)
{
  int r;
  if (m->error)
    return m->error;
  if (!m->header_done && (r = write_header(m, au, len)) < 0) {
    if (r == -EINVAL && m->head_len == 0) {
      /* This unit cannot start a file and nothing reached the sink: drop the half-built muxer so
       * a later unit can start afresh. */
      drop_muxer(m);
    } else {
      m->error = r;
    }
    return r;
  }
  int64_t pts = pts_ns / 1000000; /* Matroska's default 1 ms timestamp scale */
  if (m->last_pts != INT64_MIN && pts <= m->last_pts)
    pts = m->last_pts + 1;
  m->last_pts = pts;
  AVPacket *pkt = m->pkt;
  av_packet_unref(pkt);
  pkt->data = (uint8_t *)au;
  pkt->size = (int)len;
  pkt->pts = pkt->dts = pts;
  pkt->duration = 0;
  pkt->stream_index = 0;
  pkt->flags = keyframe ? AV_PKT_FLAG_KEY : 0;
  r = av_write_frame(m->oc, pkt);
  pkt->data = NULL;
  pkt->size = 0;
  if (r >= 0 && m->per_frame) {
    /* The muxer keeps its open cluster in memory, so a process killed mid-cluster lost up to a
     * second of frames whose rows were already on disk. Closing the cluster after every unit
     * (a flush: av_write_frame with no packet) and emptying the AVIO buffer puts the unit's bytes
     * in the sink before its row is pushed. */
    r = av_write_frame(m->oc, NULL);
    avio_flush(m->pb);
  }
  if (r < 0 && !m->error)
    m->error = r;
  return m->error;
}

void pirec_mkv_set_per_frame(struct pirec_mkv *m, int on)
{
  m->per_frame = on != 0;
}

int pirec_mkv_finish(struct pirec_mkv *m)
{
  if (m->header_done && !m->error) {
    int r = av_write_trailer(m->oc);
    avio_flush(m->pb);
    if (r < 0 && !m->error)
      m->error = r;
  }
  return m->error;
}

/* Reads an EBML variable-length integer; returns its length or 0. */
static size_t ebml_vint(const uint8_t *b, size_t n, uint64_t *value)
{
  if (n == 0 || b[0] == 0)
    return 0;
  size_t len = (size_t)__builtin_clz(b[0]) - 23; /* leading zeros of the byte, plus one */
  if (len > n || len > 8)
    return 0;
  uint64_t v = b[0] & (0xFFu >> len);
  for (size_t i = 1; i < len; i++)
    v = v << 8 | b[i];
  *value = v;
  return len;
}

int pirec_mkv_seal(const struct pirec_mkv *m, int64_t *offset, uint8_t bytes[8])
{
  uint64_t id, size;
  size_t pos = 0, len;
  if (!m->header_done || m->error)
    return -EINVAL;
  /* EBML header: ID 1A45DFA3, its size, its body */
  if (m->head_len < 4 || memcmp(m->head, "\x1a\x45\xdf\xa3", 4) != 0)
    return -EINVAL;
  pos = 4;
  if (!(len = ebml_vint(m->head + pos, m->head_len - pos, &size)))
    return -EINVAL;
  pos += len + size;
  /* Segment: ID 18538067, then an 8-byte size field holding "unknown" */
  if (pos + 12 > m->head_len || memcmp(m->head + pos, "\x18\x53\x80\x67", 4) != 0)
    return -EINVAL;
  pos += 4;
  if (m->head[pos] != 0x01 || !ebml_vint(m->head + pos, 8, &id) || id != 0x00FFFFFFFFFFFFFFull)
    return -EINVAL;
  uint64_t body = m->bytes - (pos + 8);
  bytes[0] = 0x01;
  for (int i = 7; i >= 1; i--, body >>= 8)
    bytes[i] = (uint8_t)(body & 0xFF);
  *offset = (int64_t)pos;
  return 0;
}

/* Sealing a finished file: the muxer wrote the segment's size as "unknown" (the file is streamed
 * and must stay readable if cut), which is also how pirec-remux recognises a file cut by a crash.
 * Once every byte is on disk the real size is written over it, so a complete file says so. One
 * open/pwrite/fdatasync/close chain in the threadpool; after a failed write or sync the file is
 * still closed, and a failure of the close itself is ignored (the bytes were already synced). */
static void seal_step(uv_fs_t *req)
{
  struct pirec_mkv_sealer *s =
      (struct pirec_mkv_sealer *)((char *)req - offsetof(struct pirec_mkv_sealer, req));
  ssize_t res = req->result;
  uv_fs_type type = req->fs_type;
  int r;
  uv_fs_req_cleanup(req);
  switch (type) {
  case UV_FS_OPEN: {
    if (res < 0) {
      s->status = (int)res;
      goto done;
    }
    s->fd = (uv_file)res;
    uv_buf_t b = uv_buf_init((char *)s->bytes, 8);
    if ((r = uv_fs_write(s->loop, req, s->fd, &b, 1, s->offset, seal_step)) == 0)
      return;
    s->status = r;
    break;
  }
  case UV_FS_WRITE:
    if (res != 8) {
      s->status = res < 0 ? (int)res : -EIO; /* a short pwrite of 8 bytes: the field is torn */
      break;
    }
    if ((r = uv_fs_fdatasync(s->loop, req, s->fd, seal_step)) == 0)
      return;
    s->status = r;
    break;
  case UV_FS_FDATASYNC:
    if (res < 0)
      s->status = (int)res;
    break;
  default: /* UV_FS_CLOSE */ goto done;
  }
  if (uv_fs_close(s->loop, req, s->fd, seal_step) == 0)
    return;
done:
  s->cb(s, s->status); /* last: cb may free s */
}

int pirec_mkv_seal_file(uv_loop_t *loop, struct pirec_mkv_sealer *s, const struct pirec_mkv *m,
                        const char *path, uint64_t file_bytes, pirec_mkv_seal_cb cb)
{
  if (file_bytes != m->bytes)
    return -EINVAL;
  int r = pirec_mkv_seal(m, &s->offset, s->bytes);
  if (r < 0)
    return r;
  s->loop = loop;
  s->fd = -1;
  s->status = 0;
  s->cb = cb;
  /* libuv copies path for an asynchronous request, so the caller's string may go right away */
  return uv_fs_open(loop, &s->req, path, O_WRONLY | O_CLOEXEC, 0, seal_step);
}

int pirec_mkv_started(const struct pirec_mkv *m)
{
  return m->header_done;
}

uint64_t pirec_mkv_bytes(const struct pirec_mkv *m)
{
  return m->bytes;
}

void pirec_mkv_free(struct pirec_mkv *m)
{
  if (!m)
    return;
  drop_muxer(m);
  av_packet_free(&m->pkt);
  free(m);
}
