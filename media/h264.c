/* H.264 access units: NAL units, the byte-stream splitter, RTP depayloading and payloading
 * (see h264.h). */

#include "h264.h"

#include "be.h"

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

int pirec__h264_is_keyframe(const uint8_t *au, size_t len)
{
  size_t pos = 0, n;
  const uint8_t *nal;
  while (pirec_h264_next_nal(au, len, &pos, &nal, &n))
    if ((nal[0] & 0x1F) == 5)
      return 1;
  return 0;
}

/* ---- access units of a byte stream ---- */

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

/* ---- H.264 depayloading ---- */

int pirec_h264_depay_init(struct pirec_h264_depay *d, size_t max_au)
{
  memset(d, 0, sizeof *d);
  d->max_au = max_au ? max_au : 8u << 20;
  d->cap = 256 * 1024;
  if (d->cap > d->max_au)
    d->cap = d->max_au;
  d->buf = malloc(d->cap);
  return d->buf ? 0 : -ENOMEM;
}

void pirec_h264_depay_free(struct pirec_h264_depay *d)
{
  free(d->buf);
  d->buf = NULL;
}

void pirec_h264_depay_reset(struct pirec_h264_depay *d)
{
  d->len = 0;
  d->have_ts = 0;
  d->in_fu = 0;
  d->damaged = d->keyframe = d->sps = d->pps = 0;
}

static int append(struct pirec_h264_depay *d, const uint8_t *p, size_t n)
{
  if (d->len + n > d->max_au) {
    d->damaged = 1;
    return -EMSGSIZE;
  }
  if (d->len + n > d->cap) {
    size_t cap = d->cap * 2;
    while (cap < d->len + n)
      cap *= 2;
    if (cap > d->max_au)
      cap = d->max_au;
    uint8_t *b = realloc(d->buf, cap);
    if (!b) {
      d->damaged = 1;
      return -ENOMEM;
    }
    d->buf = b;
    d->cap = cap;
  }
  memcpy(d->buf + d->len, p, n);
  d->len += n;
  return 0;
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
  if (d->len > 0 || d->damaged) {
    struct pirec_h264_au au = {d->buf,      d->len,           d->ts,
                               d->keyframe, d->sps && d->pps, d->damaged || d->in_fu || d->len == 0,
                               complete};
    cb(&au, user);
  }
  d->len = 0;
  d->in_fu = 0;
  d->damaged = d->keyframe = d->sps = d->pps = 0;
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

  const uint8_t *p = pkt->payload;
  size_t n = pkt->payload_len;
  int ret = 0;
  if (n < 1 || (p[0] & 0x80)) {
    ret = -EBADMSG; /* empty, or the forbidden bit set */
  } else {
    int type = p[0] & 0x1F;
    if (type >= 1 && type <= 23) {
      if (d->in_fu)
        ret = -EBADMSG;
      d->in_fu = 0;
      start_nal(d, p, n);
    } else if (type == 24) { /* STAP-A: 16-bit sizes, NAL units */
      size_t off = 1;
      if (n < 3)
        ret = -EBADMSG;
      while (ret == 0 && off < n) {
        if (off + 2 > n) {
          ret = -EBADMSG;
          break;
        }
        size_t sz = pirec_be_read16(p + off);
        off += 2;
        if (sz == 0 || off + sz > n) {
          ret = -EBADMSG;
          break;
        }
        start_nal(d, p + off, sz);
        off += sz;
      }
    } else if (type == 28) { /* FU-A: indicator, header (S E R type), fragment */
      if (n < 3) {
        ret = -EBADMSG;
      } else {
        int s = p[1] & 0x80, e = p[1] & 0x40;
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
        } else if (!d->in_fu) {
          ret = -EBADMSG; /* a continuation without its start */
        } else {
          append(d, p + 2, n - 2);
          if (e)
            d->in_fu = 0;
        }
      }
    } else {
      ret = -EBADMSG; /* STAP-B, MTAP, FU-B: not in packetization modes 0 and 1 */
    }
  }
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

