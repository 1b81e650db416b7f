/* HTTP/1.x message heads (shared with RTSP) and whole replies (see http.h). */

#include "http.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- message heads ---- */

const uint8_t *pirec_http_head_end(const uint8_t *p, size_t len)
{
  for (size_t i = 0; i + 4 <= len; i++)
    if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
      return p + i + 4;
  return NULL;
}

int pirec_http_header(const uint8_t *msg, size_t len, const char *name, const char **value, size_t *value_len)
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

int pirec_http_content_length(const uint8_t *msg, size_t hlen, unsigned long long *out)
{
  const char *v;
  size_t vl;
  char tmp[24];
  char *endp;
  if (!pirec_http_header(msg, hlen, "Content-Length", &v, &vl))
    return 0;
  if (vl == 0 || vl >= sizeof tmp || !isdigit((unsigned char)v[0]))
    return -EBADMSG;
  memcpy(tmp, v, vl);
  tmp[vl] = 0;
  *out = strtoull(tmp, &endp, 10);
  return *endp ? -EBADMSG : 1;
}

int pirec_http_status_code(const uint8_t *msg)
{
  int code = 0;
  for (int i = 9; i < 12; i++) {
    if (!isdigit(msg[i]))
      return -EBADMSG;
    code = code * 10 + (msg[i] - '0');
  }
  return code;
}

/* ---- whole replies ---- */

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
  int code = pirec_http_status_code(msg);
  if (code < 0)
    return code;
  uint8_t *start = (uint8_t *)pirec_http_head_end(msg, len);
  if (!start)
    return -ENODATA;
  size_t hlen = (size_t)(start - msg), avail = len - hlen;
  const char *v;
  size_t vl;
  if (pirec_http_header(msg, hlen, "Transfer-Encoding", &v, &vl)) {
    /* chunked is the only coding a server may use on its own; anything else we cannot read */
    if (vl < 7 || strncasecmp(v + vl - 7, "chunked", 7) != 0)
      return -EBADMSG;
    long long plain = dechunk(start, avail);
    if (plain < 0)
      return (int)plain;
    avail = (size_t)plain;
  } else {
    unsigned long long declared;
    int has_length = pirec_http_content_length(msg, hlen, &declared);
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
