/* RTSP framing over TCP with interleaved RTP, and control URLs (see rtsp.h). */

#include "rtsp.h"

#include "be.h"
#include "http.h"
#include "pirec/bytebuf.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- RTSP framing ---- */

enum { READ_CHUNK = 64 * 1024 + 4 };

int pirec_rtsp_framer_init(struct pirec_rtsp_framer *f, size_t max_message)
{
  memset(f, 0, sizeof *f);
  f->max_message = max_message ? max_message : 64 * 1024;
  /* A partial item left after a read is smaller than max_message or one interleaved packet, so
   * this fixed size always has room for the next read after compaction. */
  size_t cap = f->max_message + 2 * READ_CHUNK;
  return pirec_bytebuf_init(&f->buf, cap, cap);
}

void pirec_rtsp_framer_free(struct pirec_rtsp_framer *f)
{
  if (f)
    pirec_bytebuf_free(&f->buf);
}

void pirec_rtsp_framer_reset(struct pirec_rtsp_framer *f)
{
  pirec_bytebuf_reset(&f->buf);
}

uint8_t *pirec_rtsp_framer_space(struct pirec_rtsp_framer *f, size_t *avail)
{
  uint8_t *p = pirec_bytebuf_space(&f->buf, READ_CHUNK, avail);
  /* One read at a time: parsing between reads keeps the partial item, and so the buffer, small. */
  if (*avail > READ_CHUNK)
    *avail = READ_CHUNK;
  return p;
}

uv_buf_t pirec_rtsp_framer_read_buf(struct pirec_rtsp_framer *f)
{
  size_t avail;
  uint8_t *p = pirec_rtsp_framer_space(f, &avail);
  return uv_buf_init((char *)p, (unsigned)avail);
}

void pirec_rtsp_framer_fill(struct pirec_rtsp_framer *f, size_t n)
{
  pirec_bytebuf_fill(&f->buf, n);
}

/* Drops n bytes that are not an item. */
static void skip(struct pirec_rtsp_framer *f, size_t n)
{
  pirec_bytebuf_consume(&f->buf, n);
  f->skipped += n;
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
  const uint8_t *p = pirec_bytebuf_data(&f->buf);
  size_t n = pirec_bytebuf_len(&f->buf);
  if (n == 0)
    return 0;
  if (p[0] == '$') {
    if (n < 4)
      return 0;
    size_t plen = pirec_be_read16(p + 2);
    if (n < 4 + plen)
      return 0;
    item->kind = PIREC_RTSP_INTERLEAVED;
    item->channel = p[1];
    item->data = p + 4;
    item->len = plen;
    item->body = NULL;
    item->body_len = 0;
    pirec_bytebuf_consume(&f->buf, 4 + plen);
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
    skip(f, i);
    return -EBADMSG;
  }
  size_t look = n < f->max_message ? n : f->max_message;
  const uint8_t *body = pirec_http_head_end(p, look);
  if (!body) {
    if (n >= f->max_message) {
      skip(f, 1);
      return -EMSGSIZE;
    }
    return 0;
  }
  size_t hlen = (size_t)(body - p);
  size_t clen = 0;
  unsigned long long c = 0;
  int has_length = pirec_http_content_length(p, hlen, &c);
  if (has_length < 0 || c > f->max_message) {
    skip(f, hlen);
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
  pirec_bytebuf_consume(&f->buf, hlen + clen);
  return 1;
}

int pirec_rtsp_status(const uint8_t *msg, size_t len)
{
  if (len < 12 || memcmp(msg, "RTSP/1.0 ", 9) != 0)
    return -EBADMSG;
  return pirec_http_status_code(msg);
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
