/* Paths for people and for JSON: Linux paths are bytes, JSON strings and terminals are UTF-8. */
#include "remux-internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Length of the valid UTF-8 sequence at p (1 to 4), or 0 when the bytes there are not one: a stray
 * continuation byte, a cut sequence, an overlong form, a surrogate or a code point past U+10FFFF. */
static int utf8_seq(const unsigned char *p, uint32_t *cp)
{
  int n = p[0] < 0x80                    ? 1
          : p[0] >= 0xC2 && p[0] <= 0xDF ? 2
          : p[0] >= 0xE0 && p[0] <= 0xEF ? 3
          : p[0] >= 0xF0 && p[0] <= 0xF4 ? 4
                                         : 0;
  uint32_t c = n == 1 ? p[0] : n == 2 ? p[0] & 0x1F : n == 3 ? p[0] & 0x0F : p[0] & 0x07;

  for (int i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80)
      return 0; /* also stops at the terminating NUL */
    c = c << 6 | (p[i] & 0x3F);
  }
  if ((n == 3 && (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF))) || (n == 4 && (c < 0x10000 || c > 0x10FFFF)))
    return 0;
  *cp = c;
  return n;
}

char *pirec__remux_escape(const char *s)
{
  const unsigned char *p = (const unsigned char *)s;
  size_t n = strlen(s), k = 0;
  char *out = malloc(n * 4 + 1); /* every byte at most "\xNN" */

  if (out == NULL)
    return NULL;
  while (*p) {
    uint32_t cp;
    int len = utf8_seq(p, &cp);
    if (len == 0) {
      k += (size_t)sprintf(out + k, "\\x%02X", *p++);
    } else if (*p == '\\') {
      out[k++] = '\\';
      out[k++] = *p++;
    } else {
      memcpy(out + k, p, (size_t)len);
      k += (size_t)len;
      p += len;
    }
  }
  out[k] = '\0';
  return out;
}

/* Code point ranges that take no column (combining marks, zero-width characters, variation
 * selectors) and two columns (East Asian wide and emoji blocks), as wcwidth says in a UTF-8
 * locale for the ranges paths use. */
static const uint32_t zero_width[][2] = {{0x300, 0x36F}, {0x200B, 0x200F}, {0xFE00, 0xFE0F}};
static const uint32_t double_width[][2] = {{0x1100, 0x115F},   {0x2E80, 0x303E},  {0x3040, 0xA4CF},
                                           {0xAC00, 0xD7A3},   {0xF900, 0xFAFF},  {0xFE30, 0xFE4F},
                                           {0xFF00, 0xFF60},   {0xFFE0, 0xFFE6},  {0x1F300, 0x1F64F},
                                           {0x1F900, 0x1F9FF}, {0x20000, 0x3FFFD}};

static int in_ranges(uint32_t c, const uint32_t (*r)[2], size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (c >= r[i][0] && c <= r[i][1])
      return 1;
  return 0;
}

/* Columns a code point takes on a terminal. */
static int cp_width(uint32_t c)
{
  if (in_ranges(c, zero_width, sizeof zero_width / sizeof zero_width[0]))
    return 0;
  return in_ranges(c, double_width, sizeof double_width / sizeof double_width[0]) ? 2 : 1;
}

int pirec__remux_width(const char *s)
{
  const unsigned char *p = (const unsigned char *)s;
  int w = 0;
  while (*p) {
    uint32_t cp = '?';
    int len = utf8_seq(p, &cp);
    w += len ? cp_width(cp) : 1;
    p += len ? len : 1;
  }
  return w;
}

void pirec__remux_fit(const char *s, int width, char *out, size_t cap)
{
  const unsigned char *p = (const unsigned char *)s;
  const char *cut = s + strlen(s);
  int w = pirec__remux_width(s);

  if (w <= width || width < 4) {
    snprintf(out, cap, "%s", s);
    return;
  }
  /* Drop whole characters from the front until what is left fits after "...". */
  while (*p && w > width - 3) {
    uint32_t cp = '?';
    int len = utf8_seq(p, &cp);
    w -= len ? cp_width(cp) : 1;
    p += len ? len : 1;
  }
  cut = (const char *)p;
  /* Prefer whole components: start at the next '/' when there is one. */
  const char *slash = strchr(cut, '/');
  snprintf(out, cap, "...%s", slash ? slash : cut);
}

void pirec__remux_pad(FILE *f, const char *s, int width)
{
  fputs(s, f);
  for (int w = pirec__remux_width(s); w < width; w++)
    fputc(' ', f);
}
