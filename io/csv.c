#include "pirec/csv.h"

#include "pirec/sink.h"

#include <csv.h>
#include <errno.h>
#include <limits.h>
#include <string.h>

void pirec_csv_row_begin(struct pirec_csv_row *row, char *buf, size_t cap)
{
  row->buf = buf;
  row->cap = cap;
  row->len = 0;
  row->fields = 0;
  row->overflow = 0;
}

/* Reserves room for one more field: the separator (if any) plus need bytes. On overflow the row is
 * marked and nothing is written, so the buffer never holds a half field past what fits. */
static char *field_start(struct pirec_csv_row *row, size_t need)
{
  size_t sep = row->fields > 0 ? 1 : 0;

  if (row->overflow)
    return NULL;
  if (row->cap - row->len < sep + need) {
    row->overflow = 1;
    return NULL;
  }
  if (sep)
    row->buf[row->len++] = ',';
  row->fields++;
  return row->buf + row->len;
}

/* Digits are produced backwards into a small buffer, then copied; 20 digits hold UINT64_MAX. */
/* "00" "01" ... "99": two digits per step halve the multiply-and-shift chain that dominates
 * formatting nanosecond timestamps (19 digits each). */
static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

static void put_u64(struct pirec_csv_row *row, uint64_t value, int negative)
{
  char digits[21];
  char *end = digits + sizeof digits, *p = end;
  char *dst;
  size_t n;

  while (value >= 100) {
    unsigned pair = (unsigned)(value % 100);
    value /= 100;
    p -= 2;
    memcpy(p, digit_pairs + 2 * pair, 2);
  }
  if (value >= 10) {
    p -= 2;
    memcpy(p, digit_pairs + 2 * value, 2);
  } else {
    *--p = (char)('0' + value);
  }
  if (negative)
    *--p = '-';
  n = (size_t)(end - p);
  dst = field_start(row, n);
  if (!dst)
    return;
  memcpy(dst, p, n);
  row->len += n;
}

void pirec_csv_row_i64(struct pirec_csv_row *row, int64_t value)
{
  /* Negating in unsigned arithmetic keeps INT64_MIN defined: its magnitude does not fit int64_t. */
  if (value < 0)
    put_u64(row, 0 - (uint64_t)value, 1);
  else
    put_u64(row, (uint64_t)value, 0);
}

void pirec_csv_row_u64(struct pirec_csv_row *row, uint64_t value)
{
  put_u64(row, value, 0);
}

void pirec_csv_row_empty(struct pirec_csv_row *row)
{
  field_start(row, 0);
}

void pirec_csv_row_raw(struct pirec_csv_row *row, const char *text, size_t len)
{
  char *dst = field_start(row, len);
  if (!dst)
    return;
  memcpy(dst, text, len);
  row->len += len;
}

static int is_guarded_start(unsigned char c)
{
  return c == '=' || c == '+' || c == '-' || c == '@' || c == '\t' || c == '\r' || c == '\'';
}

/* libcsv's parser (and many others) trims unquoted leading and trailing blanks, so those need
 * quotes as much as separators and line breaks do. */
static int needs_quotes(const unsigned char *s, size_t len)
{
  if (len == 0)
    return 0;
  if (s[0] == ' ' || s[0] == '\t' || s[len - 1] == ' ' || s[len - 1] == '\t')
    return 1;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = s[i];
    if (c == ',' || c == '"' || c == '\n' || c == '\r')
      return 1;
  }
  return 0;
}

void pirec_csv_row_text(struct pirec_csv_row *row, const char *text, size_t len)
{
  const unsigned char *s = (const unsigned char *)text;
  int guard = len > 0 && is_guarded_start(s[0]);
  size_t room, sep, out;
  char *dst;

  if (!needs_quotes(s, len)) {
    dst = field_start(row, len + (size_t)guard);
    if (!dst)
      return;
    if (guard)
      *dst++ = '\'';
    memcpy(dst, text, len);
    row->len += len + (size_t)guard;
    return;
  }
  if (row->overflow)
    return;
  sep = row->fields > 0 ? 1 : 0;
  if (row->cap - row->len < sep + (size_t)guard) {
    row->overflow = 1;
    return;
  }
  /* libcsv writes the opening quote, the text with quotes doubled and the closing quote, and never
   * more than the room it is given; its return value is the size it needed. With the guard, it
   * writes one byte further on and its opening quote is replaced by the guard quote. */
  room = row->cap - row->len - sep - (size_t)guard;
  dst = row->buf + row->len + sep + (size_t)guard;
  out = csv_write(dst, room, text, len);
  if (out > room) {
    row->overflow = 1;
    return;
  }
  if (sep)
    row->buf[row->len] = ',';
  if (guard) {
    dst[-1] = '"';
    dst[0] = '\'';
  }
  row->fields++;
  row->len += sep + (size_t)guard + out;
}

void pirec_csv_row_str(struct pirec_csv_row *row, const char *text)
{
  pirec_csv_row_text(row, text, strlen(text));
}

int pirec_csv_row_end(struct pirec_csv_row *row)
{
  if (!row->overflow && row->cap - row->len >= 1)
    row->buf[row->len++] = '\n';
  else
    row->overflow = 1;
  if (row->overflow || row->len > INT_MAX)
    return -ENOSPC;
  return (int)row->len;
}

int pirec_csv_header(char *buf, size_t cap, const char *const *columns)
{
  struct pirec_csv_row row;

  pirec_csv_row_begin(&row, buf, cap);
  for (; *columns; columns++)
    pirec_csv_row_str(&row, *columns);
  return pirec_csv_row_end(&row);
}

int pirec_csv_push(struct pirec_sink *sink, const struct pirec_csv_row *row)
{
  if (row->overflow) {
    pirec_sink_count_drop(sink);
    return -ENOSPC;
  }
  return pirec_sink_push(sink, row->buf, row->len);
}

size_t pirec_csv_guard_len(const char *field, size_t len)
{
  /* Every stored text that starts with a single quote got it from the guard (a text starting with
   * one is itself guarded), and integers never start with one. */
  return len >= 1 && field[0] == '\'' ? 1 : 0;
}
