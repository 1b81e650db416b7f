/* RTP, RTCP, RTSP framing, SDP and H.264 payloading (see include/pirec/rtp.h). */

#include "rtp.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static uint16_t rd16(const uint8_t *p)
{
  return (uint16_t)(p[0] << 8 | p[1]);
}
static uint32_t rd32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static void wr16(uint8_t *p, uint16_t v)
{
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static void wr32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

/* ---- RTP ---- */

int pirec_rtp_parse(const uint8_t *buf, size_t len, struct pirec_rtp_packet *out)
{
  if (len < 12 || (buf[0] >> 6) != 2)
    return -EBADMSG;
  /* Payload types 72..76 with the marker bit are RTCP SR/RR/SDES/BYE/APP (RFC 5761). */
  if (buf[1] >= 200 && buf[1] <= 204)
    return -EBADMSG;
  size_t off = 12 + 4u * (buf[0] & 0x0F);
  if (off > len)
    return -EBADMSG;
  if (buf[0] & 0x10) {
    if (off + 4 > len)
      return -EBADMSG;
    off += 4 + 4u * rd16(buf + off + 2);
    if (off > len)
      return -EBADMSG;
  }
  size_t end = len;
  if (buf[0] & 0x20) {
    uint8_t pad = buf[len - 1];
    if (pad == 0 || pad > end - off)
      return -EBADMSG;
    end -= pad;
  }
  out->marker = buf[1] >> 7;
  out->pt = buf[1] & 0x7F;
  out->seq = rd16(buf + 2);
  out->ts = rd32(buf + 4);
  out->ssrc = rd32(buf + 8);
  out->payload = buf + off;
  out->payload_len = end - off;
  return 0;
}

size_t pirec_rtp_write_header(uint8_t *out, int marker, int pt, uint16_t seq, uint32_t ts, uint32_t ssrc)
{
  out[0] = 0x80;
  out[1] = (uint8_t)((marker ? 0x80 : 0) | (pt & 0x7F));
  wr16(out + 2, seq);
  wr32(out + 4, ts);
  wr32(out + 8, ssrc);
  return 12;
}

/* ---- RTCP ---- */

int pirec_rtcp_parse_sr(const uint8_t *buf, size_t len, struct pirec_rtcp_sr *out)
{
  int found = 0;
  if (len < 4)
    return -EBADMSG;
  while (len > 0) {
    if (len < 4 || (buf[0] >> 6) != 2 || buf[1] < 192 || buf[1] > 223)
      return -EBADMSG;
    size_t plen = 4 + 4u * rd16(buf + 2);
    if (plen > len)
      return -EBADMSG;
    if (buf[1] == 200 && !found) {
      if (plen < 28)
        return -EBADMSG;
      out->ssrc = rd32(buf + 4);
      out->ntp = (uint64_t)rd32(buf + 8) << 32 | rd32(buf + 12);
      out->rtp_ts = rd32(buf + 16);
      out->packets = rd32(buf + 20);
      out->octets = rd32(buf + 24);
      found = 1;
    }
    buf += plen;
    len -= plen;
  }
  return found;
}

size_t pirec_rtcp_write_sr(uint8_t *out, const struct pirec_rtcp_sr *sr)
{
  out[0] = 0x80; /* version 2, no report blocks */
  out[1] = 200;
  wr16(out + 2, 6); /* length in 32-bit words minus one */
  wr32(out + 4, sr->ssrc);
  wr32(out + 8, (uint32_t)(sr->ntp >> 32));
  wr32(out + 12, (uint32_t)sr->ntp);
  wr32(out + 16, sr->rtp_ts);
  wr32(out + 20, sr->packets);
  wr32(out + 24, sr->octets);
  return 28;
}

/* Seconds from 1900-01-01 (NTP era 0) to 1970-01-01. */
#define NTP_UNIX_OFFSET 2208988800LL
#define NS_PER_S        1000000000LL

int64_t pirec_ntp_to_unix_ns(uint64_t ntp)
{
  int64_t sec = (int64_t)(ntp >> 32) - NTP_UNIX_OFFSET;
  uint64_t frac = ntp & 0xFFFFFFFFu;
  /* One NTP fraction unit is 0.23 ns, so rounding to the nearest ns inverts unix_ns_to_ntp. */
  int64_t ns = (int64_t)((frac * (uint64_t)NS_PER_S + (1ull << 31)) >> 32);
  return sec * NS_PER_S + ns;
}

uint64_t pirec_unix_ns_to_ntp(int64_t unix_ns)
{
  int64_t sec = unix_ns / NS_PER_S, ns = unix_ns % NS_PER_S;
  if (ns < 0) {
    ns += NS_PER_S;
    sec--;
  }
  uint64_t frac = (((uint64_t)ns << 32) + (uint64_t)NS_PER_S / 2) / (uint64_t)NS_PER_S;
  if (frac > 0xFFFFFFFFu)
    frac = 0xFFFFFFFFu;
  return (uint64_t)(sec + NTP_UNIX_OFFSET) << 32 | frac;
}

/* ---- clock mapping ---- */

void pirec_rtp_clock_init(struct pirec_rtp_clock *c, uint32_t rate)
{
  memset(c, 0, sizeof *c);
  c->rate = rate ? rate : 90000;
}

static int64_t unwrap(int64_t ref, uint32_t ts)
{
  return ref + (int32_t)(ts - (uint32_t)ref);
}

int64_t pirec_rtp_clock_extend(struct pirec_rtp_clock *c, uint32_t ts)
{
  /* Start in the middle of the 64-bit range so unwrapping backwards never goes negative. */
  int64_t ext = c->have_ts ? unwrap(c->ext_last, ts) : ((int64_t)1 << 32) + ts;
  if (!c->have_ts || ext > c->ext_last)
    c->ext_last = ext;
  c->have_ts = 1;
  return ext;
}

void pirec_rtp_clock_sr(struct pirec_rtp_clock *c, uint32_t rtp_ts, int64_t unix_ns)
{
  if (!c->have_ts) {
    c->ext_last = ((int64_t)1 << 32) + rtp_ts;
    c->have_ts = 1;
  }
  c->sr_ext = unwrap(c->ext_last, rtp_ts);
  c->sr_ns = unix_ns;
  c->have_sr = 1;
  c->sr_count++;
}

int64_t pirec_rtp_ticks_to_ns(int64_t ticks, uint32_t rate)
{
  __int128 n = (__int128)ticks * NS_PER_S;
  __int128 q = n / rate;
  if (n % rate != 0 && n < 0)
    q--;
  return (int64_t)q;
}

int64_t pirec_rtp_clock_device_ns(const struct pirec_rtp_clock *c, int64_t ext_ts)
{
  if (!c->have_sr)
    return INT64_MIN;
  return c->sr_ns + pirec_rtp_ticks_to_ns(ext_ts - c->sr_ext, c->rate);
}

/* ---- sequence numbers ---- */

int64_t pirec_rtp_seq_update(struct pirec_rtp_seq *s, uint16_t seq)
{
  s->received++;
  if (!s->started) {
    s->started = 1;
    s->ext_max = (1u << 16) + seq;
    return 0;
  }
  int16_t d = (int16_t)(seq - (uint16_t)s->ext_max);
  if (d <= 0) {
    s->late++;
    return -1;
  }
  s->ext_max += (uint64_t)d;
  s->lost += (uint64_t)(d - 1);
  return d - 1;
}

/* ---- RTSP framing ---- */

enum { READ_CHUNK = 64 * 1024 + 4 };

int pirec_rtsp_framer_init(struct pirec_rtsp_framer *f, size_t max_message)
{
  memset(f, 0, sizeof *f);
  f->max_message = max_message ? max_message : 64 * 1024;
  f->cap = f->max_message + 2 * READ_CHUNK;
  f->buf = malloc(f->cap);
  return f->buf ? 0 : -ENOMEM;
}

void pirec_rtsp_framer_free(struct pirec_rtsp_framer *f)
{
  free(f->buf);
  f->buf = NULL;
}

uint8_t *pirec_rtsp_framer_space(struct pirec_rtsp_framer *f, size_t *avail)
{
  if (f->start > 0 && f->cap - f->end < READ_CHUNK) {
    memmove(f->buf, f->buf + f->start, f->end - f->start);
    f->end -= f->start;
    f->start = 0;
  }
  *avail = f->cap - f->end;
  return f->buf + f->end;
}

void pirec_rtsp_framer_fill(struct pirec_rtsp_framer *f, size_t n)
{
  f->end += n;
}

static const uint8_t *find_blank_line(const uint8_t *p, size_t len)
{
  for (size_t i = 0; i + 4 <= len; i++)
    if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
      return p + i + 4;
  return NULL;
}

/* The Content-Length of a header block (RTSP and HTTP alike): 1 and *out when present and a
 * plain decimal number, 0 when absent, -EBADMSG when malformed. */
static int content_length(const uint8_t *msg, size_t hlen, unsigned long long *out)
{
  const char *v;
  size_t vl;
  char tmp[24];
  char *endp;
  if (!pirec_rtsp_header(msg, hlen, "Content-Length", &v, &vl))
    return 0;
  if (vl == 0 || vl >= sizeof tmp || !isdigit((unsigned char)v[0]))
    return -EBADMSG;
  memcpy(tmp, v, vl);
  tmp[vl] = 0;
  *out = strtoull(tmp, &endp, 10);
  return *endp ? -EBADMSG : 1;
}

/* The three-digit code at msg[9] of a status line whose first 9 bytes were checked, or -EBADMSG. */
static int status_code(const uint8_t *msg)
{
  int code = 0;
  for (int i = 9; i < 12; i++) {
    if (!isdigit(msg[i]))
      return -EBADMSG;
    code = code * 10 + (msg[i] - '0');
  }
  return code;
}

/* 1 when p starts a message ("RTSP/1.0 ..." or a request such as "GET_PARAMETER rtsp://..."),
 * 0 when it cannot, -1 when more bytes are needed to tell. */
static int starts_message(const uint8_t *p, size_t n)
{
  static const char rtsp[] = "RTSP/";
  size_t i;
  for (i = 0; i < n && i < 5; i++)
    if (p[i] != (uint8_t)rtsp[i])
      break;
  if (i == 5)
    return 1;
  if (i == n)
    return -1;
  for (i = 0; i < n && i < 24; i++) {
    if (p[i] == ' ')
      return i > 0;
    if (!isupper(p[i]) && p[i] != '_')
      return 0;
  }
  return i == n ? -1 : 0;
}

int pirec_rtsp_framer_next(struct pirec_rtsp_framer *f, struct pirec_rtsp_item *item)
{
  const uint8_t *p = f->buf + f->start;
  size_t n = f->end - f->start;
  if (n == 0)
    return 0;
  if (p[0] == '$') {
    if (n < 4)
      return 0;
    size_t plen = rd16(p + 2);
    if (n < 4 + plen)
      return 0;
    item->kind = PIREC_RTSP_INTERLEAVED;
    item->channel = p[1];
    item->data = p + 4;
    item->len = plen;
    item->body = NULL;
    item->body_len = 0;
    f->start += 4 + plen;
    return 1;
  }
  int sm = starts_message(p, n);
  if (sm < 0)
    return 0;
  if (sm == 0) {
    /* Skip to the next byte that could start an item. */
    size_t i = 1;
    while (i < n && p[i] != '$' && !isupper(p[i]))
      i++;
    f->start += i;
    f->skipped += i;
    return -EBADMSG;
  }
  size_t look = n < f->max_message ? n : f->max_message;
  const uint8_t *body = find_blank_line(p, look);
  if (!body) {
    if (n >= f->max_message) {
      f->start += 1;
      f->skipped += 1;
      return -EMSGSIZE;
    }
    return 0;
  }
  size_t hlen = (size_t)(body - p);
  size_t clen = 0;
  unsigned long long c = 0;
  int has_length = content_length(p, hlen, &c);
  if (has_length < 0 || c > f->max_message) {
    f->start += hlen;
    f->skipped += hlen;
    return has_length < 0 ? -EBADMSG : -EMSGSIZE;
  }
  clen = (size_t)c;
  if (n < hlen + clen)
    return 0;
  item->kind = PIREC_RTSP_MESSAGE;
  item->channel = -1;
  item->data = p;
  item->len = hlen;
  item->body = (const char *)body;
  item->body_len = clen;
  f->start += hlen + clen;
  return 1;
}

int pirec_rtsp_header(const uint8_t *msg, size_t len, const char *name, const char **value, size_t *value_len)
{
  size_t nl = strlen(name);
  const char *s = (const char *)msg, *end = s + len;
  /* Skip the start line. */
  const char *line = memchr(s, '\n', len);
  while (line && line + 1 < end) {
    line++;
    const char *eol = memchr(line, '\n', (size_t)(end - line));
    if (!eol)
      eol = end;
    if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
      const char *v = line + nl + 1, *ve = eol;
      while (v < ve && (*v == ' ' || *v == '\t'))
        v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
      *value = v;
      *value_len = (size_t)(ve - v);
      return 1;
    }
    line = eol < end ? eol : NULL;
  }
  return 0;
}

int pirec_rtsp_status(const uint8_t *msg, size_t len)
{
  if (len < 12 || memcmp(msg, "RTSP/1.0 ", 9) != 0)
    return -EBADMSG;
  return status_code(msg);
}

/* ---- HTTP replies ---- */

/* Reads the hexadecimal size at the start of a chunk line ("1a3;ext=1\r\n"): -ENODATA when the
 * line has no end yet, -EBADMSG when it does not start with a size. */
static long long chunk_size(const uint8_t *p, size_t n, size_t *line_len)
{
  const uint8_t *eol = NULL;
  for (size_t i = 0; i + 1 < n; i++)
    if (p[i] == '\r' && p[i + 1] == '\n') {
      eol = p + i;
      break;
    }
  if (!eol)
    return -ENODATA;
  long long size = 0;
  size_t digits = 0;
  for (const uint8_t *q = p; q < eol && isxdigit(*q); q++, digits++) {
    if (digits == 15)
      return -EBADMSG; /* a size this large is nonsense for anything we fetch */
    size = size * 16 + (isdigit(*q) ? *q - '0' : (tolower(*q) - 'a' + 10));
  }
  if (digits == 0)
    return -EBADMSG;
  *line_len = (size_t)(eol - p) + 2;
  return size;
}

/* Rewrites a chunked body in place into its plain bytes. Returns the plain length, -EBADMSG for
 * a malformed chunk line, -ENODATA when the connection ended before the last (zero) chunk. */
static long long dechunk(uint8_t *body, size_t len)
{
  size_t in = 0, out = 0;
  for (;;) {
    size_t line_len;
    long long size = chunk_size(body + in, len - in, &line_len);
    if (size < 0)
      return size;
    in += line_len;
    if (size == 0)
      return (long long)out; /* trailers after the last chunk are ignored */
    if ((unsigned long long)size + 2 > len - in)
      return -ENODATA;
    memmove(body + out, body + in, (size_t)size);
    in += (size_t)size;
    out += (size_t)size;
    if (body[in] != '\r' || body[in + 1] != '\n')
      return -EBADMSG;
    in += 2;
  }
}

int pirec_http_reply(uint8_t *msg, size_t len, uint8_t **body, size_t *body_len)
{
  if (len < 12 || memcmp(msg, "HTTP/1.", 7) != 0 || msg[8] != ' ')
    return -EBADMSG;
  int code = status_code(msg);
  if (code < 0)
    return code;
  uint8_t *start = (uint8_t *)find_blank_line(msg, len);
  if (!start)
    return -ENODATA;
  size_t hlen = (size_t)(start - msg), avail = len - hlen;
  const char *v;
  size_t vl;
  if (pirec_rtsp_header(msg, hlen, "Transfer-Encoding", &v, &vl)) {
    /* chunked is the only coding a server may use on its own; anything else we cannot read */
    if (vl < 7 || strncasecmp(v + vl - 7, "chunked", 7) != 0)
      return -EBADMSG;
    long long plain = dechunk(start, avail);
    if (plain < 0)
      return (int)plain;
    avail = (size_t)plain;
  } else {
    unsigned long long declared;
    int has_length = content_length(msg, hlen, &declared);
    if (has_length < 0)
      return has_length;
    if (has_length && declared > avail)
      return -ENODATA;
    if (has_length)
      avail = (size_t)declared;
  }
  *body = start;
  *body_len = avail;
  return code;
}

/* ---- SDP ---- */

static void copy_trim(char *dst, size_t cap, const char *s, size_t n)
{
  while (n > 0 && (s[n - 1] == '\r' || s[n - 1] == ' '))
    n--;
  if (n >= cap)
    n = cap - 1;
  memcpy(dst, s, n);
  dst[n] = 0;
}

int pirec_sdp_parse(const char *text, size_t len, struct pirec_sdp *out)
{
  memset(out, 0, sizeof *out);
  const char *p = text, *end = text + len;
  int have_v = 0, skipping = 0;
  struct pirec_sdp_media *m = NULL;
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol)
      eol = end;
    size_t n = (size_t)(eol - p);
    if (n > 0 && p[n - 1] == '\r')
      n--;
    if (n >= 2 && p[1] == '=') {
      char key = p[0];
      const char *v = p + 2;
      size_t vn = n - 2;
      if (key == 'v') {
        have_v = vn == 1 && v[0] == '0';
      } else if (key == 'm') {
        skipping = out->n_media >= PIREC_SDP_MAX_MEDIA;
        if (!skipping) {
          m = &out->media[out->n_media++];
          char line[256];
          copy_trim(line, sizeof line, v, vn);
          char media[16], proto[32];
          int port, pt;
          if (sscanf(line, "%15s %d %31s %d", media, &port, proto, &pt) != 4 || pt < 0 || pt > 127)
            return -EBADMSG;
          snprintf(m->media, sizeof m->media, "%s", media);
          m->pt = pt;
          /* Static payload types need no rtpmap; those pirec meets are dynamic. */
          m->clock_rate = 0;
        }
      } else if (key == 'a' && m && !skipping) {
        char line[512];
        copy_trim(line, sizeof line, v, vn);
        int pt;
        char enc[64];
        unsigned rate;
        if (strncmp(line, "rtpmap:", 7) == 0) {
          if (sscanf(line + 7, "%d %63[^/]/%u", &pt, enc, &rate) == 3 && pt == m->pt) {
            snprintf(m->encoding, sizeof m->encoding, "%s", enc);
            m->clock_rate = rate;
          }
        } else if (strncmp(line, "control:", 8) == 0) {
          snprintf(m->control, sizeof m->control, "%s", line + 8);
        } else if (strncmp(line, "fmtp:", 5) == 0) {
          char *sp = strchr(line + 5, ' ');
          if (sp && atoi(line + 5) == m->pt)
            snprintf(m->fmtp, sizeof m->fmtp, "%s", sp + 1);
        }
      }
    }
    p = eol + 1;
  }
  if (!have_v || out->n_media == 0)
    return -EBADMSG;
  for (size_t i = 0; i < out->n_media; i++)
    if (out->media[i].clock_rate == 0 || !out->media[i].encoding[0])
      return -EBADMSG;
  return 0;
}

int pirec_rtsp_control_url(const char *base, const char *control, char *out, size_t cap)
{
  int n;
  if (strncasecmp(control, "rtsp://", 7) == 0)
    n = snprintf(out, cap, "%s", control);
  else if (!control[0] || strcmp(control, "*") == 0)
    n = snprintf(out, cap, "%s", base);
  else {
    size_t bl = strlen(base);
    int slash = bl > 0 && base[bl - 1] == '/';
    n = snprintf(out, cap, "%s%s%s", base, slash ? "" : "/", control);
  }
  return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
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
        size_t sz = rd16(p + off);
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

/* Finds the next NAL unit of an Annex B buffer at or after *pos; returns 1, its start and length. */
static int next_nal(const uint8_t *b, size_t len, size_t *pos, const uint8_t **nal, size_t *n)
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
    return next_nal(b, len, pos, nal, n);
  *nal = b + start;
  *n = stop - start;
  return 1;
}

int pirec_h264_pay(const uint8_t *au, size_t len, size_t mtu, pirec_h264_emit_cb emit, void *user)
{
  uint8_t frag[2048];
  if (mtu < 16 || mtu > sizeof frag)
    return -EINVAL;
  /* Collect the NAL units first so the last payload can be marked. */
  size_t pos = 0, count = 0;
  const uint8_t *nal;
  size_t n;
  while (next_nal(au, len, &pos, &nal, &n))
    count++;
  if (count == 0)
    return -EINVAL;
  int sent = 0;
  size_t idx = 0;
  pos = 0;
  while (next_nal(au, len, &pos, &nal, &n)) {
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
