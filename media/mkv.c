/* H.264 Annex B access units muxed into Matroska in-process (libavformat) and written through a
 * pirec_sink, so a recorder sees each frame exactly when it is in the file (the camera, the eye
 * tracker's scene video); and the camera's splitter of an encoder's byte stream into access units. */

#include "mkv.h"

#include "pirec/log.h"
#include "pirec/sink.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>

/* ---- access units ---- */

int pirec__au_init(struct pirec__au *au, size_t cap)
{
  memset(au, 0, sizeof *au);
  au->buf = malloc(cap);
  au->cap = au->buf ? cap : 0;
  return au->buf ? 0 : -ENOMEM;
}

void pirec__au_free(struct pirec__au *au)
{
  free(au->buf);
  memset(au, 0, sizeof *au);
}

void pirec__au_reset(struct pirec__au *au)
{
  au->len = au->start = au->scan = 0;
  au->have_start = 0;
}

uint8_t *pirec__au_space(struct pirec__au *au, size_t want)
{
  if (au->start > 0) {
    memmove(au->buf, au->buf + au->start, au->len - au->start);
    au->len -= au->start;
    au->scan = au->scan > au->start ? au->scan - au->start : 0;
    au->start = 0;
  }
  if (au->cap - au->len < want) {
    size_t cap = au->cap * 2;
    while (cap - au->len < want)
      cap *= 2;
    uint8_t *b = realloc(au->buf, cap);
    if (!b)
      return NULL;
    au->buf = b;
    au->cap = cap;
  }
  return au->buf + au->len;
}

void pirec__au_fill(struct pirec__au *au, size_t n)
{
  au->len += n;
}

/* An access unit delimiter: start code 00 00 01 then NAL header 0x09 (nal_unit_type 9). */
static size_t find_aud(const uint8_t *b, size_t from, size_t end)
{
  for (size_t i = from; i + 4 <= end; i++) {
    if (b[i + 2] > 1) {
      i += 2;
      continue;
    }
    if (b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1 && (b[i + 3] & 0x1F) == 9)
      return i;
  }
  return SIZE_MAX;
}

int pirec__au_next(struct pirec__au *au, const uint8_t **data, size_t *len)
{
  if (!au->have_start) {
    size_t p = find_aud(au->buf, au->start, au->len);
    if (p == SIZE_MAX) {
      /* keep the last 3 bytes: a start code may straddle reads */
      if (au->len - au->start > 3)
        au->start = au->len - 3;
      return 0;
    }
    au->start = p;
    au->scan = p + 4;
    au->have_start = 1;
  }
  size_t next = find_aud(au->buf, au->scan, au->len);
  if (next == SIZE_MAX) {
    au->scan = au->len > au->start + 7 ? au->len - 3 : au->start + 4;
    return 0;
  }
  *data = au->buf + au->start;
  *len = next - au->start;
  au->start = next;
  au->scan = next + 4;
  return 1;
}

int pirec__au_last(struct pirec__au *au, const uint8_t **data, size_t *len)
{
  if (!au->have_start || au->len <= au->start + 4)
    return 0;
  *data = au->buf + au->start;
  *len = au->len - au->start;
  au->start = au->len;
  au->have_start = 0;
  return 1;
}

/* Calls fn for each NAL unit of an Annex B buffer (start codes stripped). */
static void for_each_nal(const uint8_t *b, size_t len, void (*fn)(const uint8_t *nal, size_t n, void *arg),
                         void *arg)
{
  size_t i = 0, start = SIZE_MAX;
  while (i + 3 <= len) {
    if (b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1) {
      if (start != SIZE_MAX) {
        size_t end = i;
        while (end > start && b[end - 1] == 0)
          end--;
        fn(b + start, end - start, arg);
      }
      i += 3;
      start = i;
      continue;
    }
    i++;
  }
  if (start != SIZE_MAX && start < len)
    fn(b + start, len - start, arg);
}

static void is_idr_fn(const uint8_t *nal, size_t n, void *arg)
{
  if (n > 0 && (nal[0] & 0x1F) == 5)
    *(int *)arg = 1;
}

int pirec__h264_is_keyframe(const uint8_t *au, size_t len)
{
  int key = 0;
  for_each_nal(au, len, is_idr_fn, &key);
  return key;
}

struct ps_collect {
  uint8_t *out;
  size_t len, cap;
};

static void ps_fn(const uint8_t *nal, size_t n, void *arg)
{
  struct ps_collect *c = arg;
  int type = n > 0 ? nal[0] & 0x1F : 0;
  if ((type != 7 && type != 8) || c->len + n + 4 > c->cap)
    return;
  static const uint8_t sc[4] = {0, 0, 0, 1};
  memcpy(c->out + c->len, sc, 4);
  memcpy(c->out + c->len + 4, nal, n);
  c->len += n + 4;
}

/* ---- Matroska ---- */

struct pirec__mkv {
  struct pirec_sink *sink;
  AVFormatContext *oc;
  AVIOContext *pb;
  AVPacket *pkt;
  int width, height, fps_num, fps_den; /* 0: from the first SPS / not written */
  int header_done;
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
  struct pirec__mkv *m = opaque;
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

int pirec__mkv_new(struct pirec_sink *sink, int width, int height, int fps_num, int fps_den,
                   struct pirec__mkv **out)
{
  struct pirec__mkv *m = calloc(1, sizeof *m);
  if (!m)
    return -ENOMEM;
  m->sink = sink;
  m->width = width > 0 && height > 0 ? width : 0;
  m->height = width > 0 && height > 0 ? height : 0;
  m->fps_num = fps_num > 0 && fps_den > 0 ? fps_num : 0;
  m->fps_den = fps_num > 0 && fps_den > 0 ? fps_den : 0;
  m->last_pts = INT64_MIN;
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
 * start a file; what was allocated is left for the caller (or pirec__mkv_free) to release. */
static int write_header(struct pirec__mkv *m, const uint8_t *au, size_t len)
{
  enum { AVIO_BUF = 64 * 1024 };
  struct ps_collect ps = {.cap = len + 64};
  AVDictionary *opts = NULL;
  int r, w = m->width, h = m->height;

  if (w == 0 && (r = picture_size(au, len, &w, &h)) < 0)
    return r;
  ps.out = av_mallocz(ps.cap + AV_INPUT_BUFFER_PADDING_SIZE);
  if (!ps.out)
    return -ENOMEM;
  for_each_nal(au, len, ps_fn, &ps);
  if (ps.len == 0) {
    av_free(ps.out);
    return -EINVAL; /* no SPS/PPS in the first access unit */
  }
  if ((r = avformat_alloc_output_context2(&m->oc, NULL, "matroska", NULL)) < 0) {
    av_free(ps.out);
    return r;
  }
  AVStream *st = avformat_new_stream(m->oc, NULL);
  if (!st) {
    av_free(ps.out);
    return -ENOMEM;
  }
  st->codecpar->codec_type = AVMEDIA_TYPE_VIDEO;
  st->codecpar->codec_id = AV_CODEC_ID_H264;
  st->codecpar->width = w;
  st->codecpar->height = h;
  st->codecpar->extradata = ps.out;
  st->codecpar->extradata_size = (int)ps.len;
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

size_t pirec__mkv_margin(void)
{
  return (2u << 20) + (128u << 10); /* one cluster plus the AVIO buffer */
}

static void drop_muxer(struct pirec__mkv *m)
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

int pirec__mkv_write(struct pirec__mkv *m, const uint8_t *au, size_t len, int keyframe, int64_t pts_ns)
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
  if (r < 0 && !m->error)
    m->error = r;
  return m->error;
}

int pirec__mkv_finish(struct pirec__mkv *m)
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

int pirec__mkv_seal(const struct pirec__mkv *m, int64_t *offset, uint8_t bytes[8])
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
  struct pirec__mkv_sealer *s =
      (struct pirec__mkv_sealer *)((char *)req - offsetof(struct pirec__mkv_sealer, req));
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

int pirec__mkv_seal_file(uv_loop_t *loop, struct pirec__mkv_sealer *s, const struct pirec__mkv *m,
                         const char *path, uint64_t file_bytes, pirec__mkv_seal_cb cb)
{
  if (file_bytes != m->bytes)
    return -EINVAL;
  int r = pirec__mkv_seal(m, &s->offset, s->bytes);
  if (r < 0)
    return r;
  s->loop = loop;
  s->fd = -1;
  s->status = 0;
  s->cb = cb;
  /* libuv copies path for an asynchronous request, so the caller's string may go right away */
  return uv_fs_open(loop, &s->req, path, O_WRONLY | O_CLOEXEC, 0, seal_step);
}

int pirec__mkv_started(const struct pirec__mkv *m)
{
  return m->header_done;
}

uint64_t pirec__mkv_bytes(const struct pirec__mkv *m)
{
  return m->bytes;
}

void pirec__mkv_free(struct pirec__mkv *m)
{
  if (!m)
    return;
  drop_muxer(m);
  av_packet_free(&m->pkt);
  free(m);
}
