/* H.264 access units: NAL units, the byte-stream splitter, RTP depayloading and payloading
 * (see h264.h). */

#include "h264.h"

#include "be.h"
#include "pirec/bytebuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- NAL units ---- */

int pirec_h264_next_nal(const uint8_t *b, size_t len, size_t *pos, const uint8_t **nal, size_t *n)
{
  size_t i = *pos;
  while (i + 3 <= len && !(b[i] == 0 && b[i + 1] == 0 && b[i + 2] == 1))
    i++;
  if (i + 3 > len)
    return 0;
  size_t start = i + 3, j = start;
  while (j + 3 <= len && !(b[j] == 0 && b[j + 1] == 0 && (b[j + 2] == 1 || b[j + 2] == 0)))
    j++;
  size_t stop = j + 3 <= len ? j : len;
  while (stop > start && b[stop - 1] == 0 && stop < len)
    stop--;
  *pos = stop;
  if (stop <= start)
    return pirec_h264_next_nal(b, len, pos, nal, n);
  *nal = b + start;
  *n = stop - start;
  return 1;
}

int pirec_h264_is_keyframe(const uint8_t *au, size_t len)
{
  size_t pos = 0, n;
  const uint8_t *nal;
  while (pirec_h264_next_nal(au, len, &pos, &nal, &n))
    if ((nal[0] & 0x1F) == 5)
      return 1;
  return 0;
}

/* ---- access units of a byte stream ---- */

/* An access unit larger than this is not video pirec records; the splitter refuses to grow past it. */
#define AU_MAX ((size_t)64 << 20)

int pirec_h264_splitter_init(struct pirec_h264_splitter *au, size_t cap)
{
  memset(au, 0, sizeof *au);
  return pirec_bytebuf_init(&au->buf, cap, cap > AU_MAX ? cap : AU_MAX);
}

void pirec_h264_splitter_free(struct pirec_h264_splitter *au)
{
  if (!au)
    return;
  pirec_bytebuf_free(&au->buf);
  memset(au, 0, sizeof *au);
}

void pirec_h264_splitter_reset(struct pirec_h264_splitter *au)
{
  pirec_bytebuf_reset(&au->buf);
  au->scan = 0;
  au->have_start = 0;
}

uint8_t *pirec_h264_splitter_space(struct pirec_h264_splitter *au, size_t want)
{
  size_t avail;
  return pirec_bytebuf_space(&au->buf, want, &avail);
}

void pirec_h264_splitter_fill(struct pirec_h264_splitter *au, size_t n)
{
  pirec_bytebuf_fill(&au->buf, n);
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

int pirec_h264_splitter_next(struct pirec_h264_splitter *au, const uint8_t **data, size_t *len)
{
  const uint8_t *d = pirec_bytebuf_data(&au->buf);
  size_t n = pirec_bytebuf_len(&au->buf);
  if (!au->have_start) {
    size_t p = find_aud(d, 0, n);
    if (p == SIZE_MAX) {
      /* keep the last 3 bytes: a start code may straddle reads */
      if (n > 3)
        pirec_bytebuf_consume(&au->buf, n - 3);
      return 0;
    }
    pirec_bytebuf_consume(&au->buf, p);
    d += p;
    n -= p;
    au->scan = 4;
    au->have_start = 1;
  }
  size_t next = find_aud(d, au->scan, n);
  if (next == SIZE_MAX) {
    au->scan = n > 7 ? n - 3 : 4;
    return 0;
  }
  *data = d;
  *len = next;
  pirec_bytebuf_consume(&au->buf, next);
  au->scan = 4;
  return 1;
}

int pirec_h264_splitter_last(struct pirec_h264_splitter *au, const uint8_t **data, size_t *len)
{
  size_t n = pirec_bytebuf_len(&au->buf);
  if (!au->have_start || n <= 4)
    return 0;
  *data = pirec_bytebuf_data(&au->buf);
  *len = n;
  pirec_bytebuf_consume(&au->buf, n);
  au->have_start = 0;
  return 1;
}

/* ---- H.264 depayloading ---- */

int pirec_h264_depay_init(struct pirec_h264_depay *d, size_t max_au)
{
  memset(d, 0, sizeof *d);
  size_t max = max_au ? max_au : 8u << 20;
  return pirec_bytebuf_init(&d->au, max < 256 * 1024 ? max : 256 * 1024, max);
}

void pirec_h264_depay_free(struct pirec_h264_depay *d)
{
  if (d)
    pirec_bytebuf_free(&d->au);
}

void pirec_h264_depay_reset(struct pirec_h264_depay *d)
{
  pirec_bytebuf_reset(&d->au);
  d->have_ts = 0;
  d->in_fu = 0;
  d->damaged = d->keyframe = d->sps = d->pps = 0;
}

/* Adds bytes to the access unit; one that outgrows max_au (or memory) is damaged. */
static int append(struct pirec_h264_depay *d, const uint8_t *p, size_t n)
{
  int r = pirec_bytebuf_append(&d->au, p, n);
  if (r < 0)
    d->damaged = 1;
  return r;
}

static void note_nal_type(struct pirec_h264_depay *d, int type)
{
  if (type == 5)
    d->keyframe = 1;
  else if (type == 7)
    d->sps = 1;
  else if (type == 8)
    d->pps = 1;
}

static int start_nal(struct pirec_h264_depay *d, const uint8_t *nal, size_t n)
{
  static const uint8_t sc[4] = {0, 0, 0, 1};
  int r = append(d, sc, 4);
  if (r == 0)
    r = append(d, nal, n);
  note_nal_type(d, nal[0] & 0x1F);
  return r;
}

static void emit_au(struct pirec_h264_depay *d, int complete, pirec_h264_au_cb cb, void *user)
{
  size_t len = pirec_bytebuf_len(&d->au);
  if (len > 0 || d->damaged) {
    struct pirec_h264_au au = {
        pirec_bytebuf_data(&d->au),         len,     d->ts, d->keyframe, d->sps && d->pps,
        d->damaged || d->in_fu || len == 0, complete};
    cb(&au, user);
  }
  pirec_bytebuf_reset(&d->au);
  d->in_fu = 0;
  d->damaged = d->keyframe = d->sps = d->pps = 0;
}

/* STAP-A: NAL units, each after its 16-bit size. 0 or -EBADMSG (the units before the fault stay). */
static int stap_a(struct pirec_h264_depay *d, const uint8_t *p, size_t n)
{
  if (n < 3)
    return -EBADMSG;
  for (size_t off = 1; off < n;) {
    if (off + 2 > n)
      return -EBADMSG;
    size_t sz = pirec_be_read16(p + off);
    off += 2;
    if (sz == 0 || off + sz > n)
      return -EBADMSG;
    start_nal(d, p + off, sz);
    off += sz;
  }
  return 0;
}

/* FU-A: indicator, header (S E R type), fragment. 0 or -EBADMSG. */
static int fu_a(struct pirec_h264_depay *d, const uint8_t *p, size_t n)
{
  if (n < 3)
    return -EBADMSG;
  int s = p[1] & 0x80, e = p[1] & 0x40, ret = 0;
  if (s) {
    if (d->in_fu)
      ret = -EBADMSG; /* the previous fragment lost its end */
    uint8_t hdr = (uint8_t)((p[0] & 0xE0) | (p[1] & 0x1F));
    static const uint8_t sc[4] = {0, 0, 0, 1};
    append(d, sc, 4);
    append(d, &hdr, 1);
    note_nal_type(d, hdr & 0x1F);
    append(d, p + 2, n - 2);
    d->in_fu = !e;
    return ret;
  }
  if (!d->in_fu)
    return -EBADMSG; /* a continuation without its start */
  append(d, p + 2, n - 2);
  if (e)
    d->in_fu = 0;
  return 0;
}

/* Adds one RTP payload to the access unit. 0 or -EBADMSG. */
static int payload(struct pirec_h264_depay *d, const uint8_t *p, size_t n)
{
  if (n < 1 || (p[0] & 0x80))
    return -EBADMSG; /* empty, or the forbidden bit set */
  int type = p[0] & 0x1F, ret = 0;
  if (type >= 1 && type <= 23) {
    if (d->in_fu)
      ret = -EBADMSG;
    d->in_fu = 0;
    start_nal(d, p, n);
    return ret;
  }
  if (type == 24)
    return stap_a(d, p, n);
  if (type == 28)
    return fu_a(d, p, n);
  return -EBADMSG; /* STAP-B, MTAP, FU-B: not in packetization modes 0 and 1 */
}

int pirec_h264_depay_push(struct pirec_h264_depay *d, const struct pirec_rtp_packet *pkt, int64_t lost_before,
                          pirec_h264_au_cb cb, void *user)
{
  if (d->have_ts && pkt->ts != d->ts) {
    /* The previous access unit never saw its marker bit: close it; a loss may have cut its tail. */
    if (lost_before > 0)
      d->damaged = 1;
    emit_au(d, 0, cb, user);
  }
  if (lost_before > 0)
    d->damaged = 1; /* the loss may have taken this access unit's head */
  d->ts = pkt->ts;
  d->have_ts = 1;
  int ret = payload(d, pkt->payload, pkt->payload_len);
  if (ret < 0) {
    d->malformed++;
    d->damaged = 1;
  }
  if (pkt->marker) {
    emit_au(d, 1, cb, user);
    d->have_ts = 0;
  }
  return ret;
}

/* ---- H.264 payloading ---- */

int pirec_h264_pay(const uint8_t *au, size_t len, size_t mtu, pirec_h264_emit_cb emit, void *user)
{
  uint8_t frag[2048];
  if (mtu < 16 || mtu > sizeof frag)
    return -EINVAL;
  /* Collect the NAL units first so the last payload can be marked. */
  size_t pos = 0, count = 0;
  const uint8_t *nal;
  size_t n;
  while (pirec_h264_next_nal(au, len, &pos, &nal, &n))
    count++;
  if (count == 0)
    return -EINVAL;
  int sent = 0;
  size_t idx = 0;
  pos = 0;
  while (pirec_h264_next_nal(au, len, &pos, &nal, &n)) {
    int last_nal = ++idx == count;
    if (n <= mtu) {
      int r = emit(nal, n, last_nal, user);
      if (r < 0)
        return r;
      sent++;
      continue;
    }
    size_t off = 1;
    while (off < n) {
      size_t chunk = n - off < mtu - 2 ? n - off : mtu - 2;
      frag[0] = (uint8_t)((nal[0] & 0xE0) | 28);
      frag[1] = (uint8_t)((off == 1 ? 0x80 : 0) | (off + chunk == n ? 0x40 : 0) | (nal[0] & 0x1F));
      memcpy(frag + 2, nal + off, chunk);
      off += chunk;
      int r = emit(frag, chunk + 2, last_nal && off == n, user);
      if (r < 0)
        return r;
      sent++;
    }
  }
  return sent;
}
