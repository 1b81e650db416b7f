#include "pirec/csv.h"

#include "pirec/f32.h"
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

/* "00" "01" ... "99": two digits per step halve the multiply-and-shift chain that dominates
 * formatting nanosecond timestamps (19 digits each). */
static const char digit_pairs[201] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

/* Decimal digits of a value below 10^8 (1 for 0). */
static size_t digits_below_1e8(uint32_t v)
{
  return 1u + (v >= 10) + (v >= 100) + (v >= 1000) + (v >= 10000) + (v >= 100000) + (v >= 1000000) +
         (v >= 10000000);
}

static void put_pair(char *p, uint32_t v)
{
  memcpy(p, digit_pairs + 2 * v, 2);
}

/* Exactly 8 digits, zero-padded: two independent 4-digit halves in 32-bit arithmetic. */
static void put_8_digits(char *p, uint32_t v)
{
  uint32_t hi = v / 10000, lo = v % 10000;
  put_pair(p, hi / 100);
  put_pair(p + 2, hi % 100);
  put_pair(p + 4, lo / 100);
  put_pair(p + 6, lo % 100);
}

/* A 64-bit value is cut into a leading part below 10^8 and up to two 8-digit parts, so one 64-bit
 * division or two do what nineteen dependent ones did, and the rest runs in 32-bit arithmetic. The
 * digits go straight into the row once their count is known: no scratch buffer, no variable-length
 * copy (a library call per field, which was a third of a row's cost). */
static void put_u64(struct pirec_csv_row *row, uint64_t value, int negative)
{
  uint32_t lead, parts[2];
  size_t nparts = 0;
  if (value < 100000000u) {
    lead = (uint32_t)value;
  } else {
    uint64_t high = value / 100000000u;
    uint32_t low = (uint32_t)(value % 100000000u);
    if (high < 100000000u) {
      lead = (uint32_t)high;
      parts[nparts++] = low;
    } else {
      lead = (uint32_t)(high / 100000000u); /* at most 1844 */
      parts[nparts++] = (uint32_t)(high % 100000000u);
      parts[nparts++] = low;
    }
  }
  size_t lead_digits = digits_below_1e8(lead);
  size_t n = (size_t)negative + lead_digits + 8 * nparts;
  char *dst = field_start(row, n);
  if (!dst)
    return;
  if (negative)
    *dst++ = '-';
  char *p = dst + lead_digits;
  while (lead >= 100) {
    p -= 2;
    put_pair(p, lead % 100);
    lead /= 100;
  }
  if (lead >= 10)
    put_pair(p - 2, lead);
  else
    p[-1] = (char)('0' + lead);
  p = dst + lead_digits;
  for (size_t i = 0; i < nparts; i++, p += 8)
    put_8_digits(p, parts[i]);
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

void pirec_csv_row_time(struct pirec_csv_row *row, int64_t ns)
{
  if (ns == PIREC_CSV_NO_TIME)
    pirec_csv_row_empty(row);
  else
    pirec_csv_row_i64(row, ns);
}

void pirec_csv_row_lead(struct pirec_csv_row *row, int64_t trial, int64_t mono_ns, int64_t wall_ns)
{
  pirec_csv_row_i64(row, trial);
  pirec_csv_row_i64(row, mono_ns);
  pirec_csv_row_i64(row, wall_ns);
}

void pirec_csv_row_raw(struct pirec_csv_row *row, const char *text, size_t len)
{
  char *dst = field_start(row, len);
  if (!dst)
    return;
  memcpy(dst, text, len);
  row->len += len;
}

void pirec_csv_row_f32(struct pirec_csv_row *row, float value)
{
  char text[PIREC_F32_MAX];
  pirec_csv_row_raw(row, text, pirec_f32_format(text, value));
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
