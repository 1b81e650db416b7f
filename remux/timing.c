/* Loading a video's timing: a pirec frames CSV (parsed by libcsv) or a v2 pts file. */
#include "remux-internal.h"

#include <csv.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELDS 32
#define FIELD_CAP  64

enum column { COL_MONO, COL_WALL, COL_DEVICE, COL_BYTES, COL_OFFSET, COL_BEFORE, COL_COUNT };
static const char *const column_names[COL_COUNT] = {"mono_ns", "wall_ns", "device_ts_ns",
                                                    "bytes",   "offset",  "before_start"};

struct loader {
  const char *path;
  int64_t line;      /* line of the row being assembled (header is line 1) */
  int fields;        /* fields seen in the current row */
  int header_fields; /* fields in the header */
  int col[COL_COUNT];
  char value[MAX_FIELDS][FIELD_CAP];
  int too_long[MAX_FIELDS];
  int header_done;
  int failed;
  char *err;
  size_t cap;
  /* Parsed rows. device is -1 where empty (timestamps are never negative on Linux clocks). */
  int64_t *mono, *wall, *device, *bytes, *offset, *lines;
  int64_t count, alloc;
  int64_t missing_device; /* rows without a device timestamp */
  int64_t before_start;   /* leading rows marked before_start = 1 */
  int64_t first_missing_line;
};

static void fail(struct loader *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void fail(struct loader *l, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (l->failed)
    return;
  l->failed = 1;
  n = snprintf(l->err, l->cap, "%s:%lld: ", l->path, (long long)l->line);
  if (n < 0 || (size_t)n >= l->cap)
    return;
  va_start(ap, fmt);
  vsnprintf(l->err + n, l->cap - (size_t)n, fmt, ap);
  va_end(ap);
}

static void on_field(void *data, size_t len, void *ctx)
{
  struct loader *l = ctx;
  int i = l->fields++;

  if (l->failed || i >= MAX_FIELDS)
    return;
  l->too_long[i] = len >= FIELD_CAP;
  if (len >= FIELD_CAP)
    len = FIELD_CAP - 1;
  memcpy(l->value[i], data ? data : "", len);
  l->value[i][len] = '\0';
}

/* Parses a non-negative decimal integer that fills the whole field. */
static int parse_i64(const char *s, int64_t *out)
{
  char *end;
  long long v;

  if (*s == '\0' || *s == '-' || *s == '+' || *s == ' ')
    return -EINVAL;
  errno = 0;
  v = strtoll(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return -EINVAL;
  *out = v;
  return 0;
}

static int grow(struct loader *l)
{
  int64_t n = l->alloc ? l->alloc * 2 : 1024;
  int64_t **arrays[] = {&l->mono, &l->wall, &l->device, &l->bytes, &l->offset, &l->lines};

  for (size_t k = 0; k < sizeof arrays / sizeof arrays[0]; k++) {
    int64_t *p = realloc(*arrays[k], (size_t)n * sizeof(int64_t));
    if (p == NULL)
      return -ENOMEM;
    *arrays[k] = p;
  }
  l->alloc = n;
  return 0;
}

static void take_header(struct loader *l)
{
  for (int c = 0; c < COL_COUNT; c++)
    l->col[c] = -1;
  for (int i = 0; i < l->fields && i < MAX_FIELDS; i++)
    for (int c = 0; c < COL_COUNT; c++)
      if (strcmp(l->value[i], column_names[c]) == 0)
        l->col[c] = i;
  l->header_fields = l->fields;
  l->header_done = 1;
  if (l->col[COL_MONO] < 0)
    fail(l, "header '%s%s' has no 'mono_ns' column (is this a frames CSV?)", l->value[0],
         l->fields > 1 ? ",..." : "");
}

/* Reads column c of the current row into *out; empty gives -1 when allow_empty. */
static int field(struct loader *l, int c, int allow_empty, int64_t *out)
{
  int i = l->col[c];

  *out = -1;
  if (i < 0)
    return 0;
  if (l->value[i][0] == '\0') {
    if (allow_empty)
      return 0;
    fail(l, "%s is empty", column_names[c]);
    return -EINVAL;
  }
  if (l->too_long[i] || parse_i64(l->value[i], out) < 0) {
    fail(l, "%s '%s%s' is not a non-negative integer", column_names[c], l->value[i],
         l->too_long[i] ? "..." : "");
    return -EINVAL;
  }
  return 0;
}

static void on_row(int term, void *ctx)
{
  struct loader *l = ctx;
  int64_t i;

  (void)term;
  if (l->failed)
    goto next;
  if (!l->header_done) {
    take_header(l);
    goto next;
  }
  if (l->fields == 1 && l->value[0][0] == '\0')
    goto next; /* a blank line */
  if (l->fields != l->header_fields) {
    fail(l, "row has %d fields, the header has %d", l->fields, l->header_fields);
    goto next;
  }
  if (l->count == l->alloc && grow(l) < 0) {
    fail(l, "out of memory");
    goto next;
  }
  i = l->count;
  int64_t before;
  if (field(l, COL_MONO, 0, &l->mono[i]) < 0 || field(l, COL_WALL, 0, &l->wall[i]) < 0 ||
      field(l, COL_DEVICE, 1, &l->device[i]) < 0 || field(l, COL_BYTES, 1, &l->bytes[i]) < 0 ||
      field(l, COL_OFFSET, 1, &l->offset[i]) < 0 || field(l, COL_BEFORE, 1, &before) < 0)
    goto next;
  /* Rows from before the trial's start (docs/FORMATS.md) lead the file: placed by their own
   * timestamps like every row, and counted so a reader knows where the trial begins. */
  if (before == 1 && l->before_start < i) {
    fail(l, "before_start 1 after the trial's own rows");
    goto next;
  }
  if (before == 1)
    l->before_start++;
  if (l->device[i] < 0 && l->missing_device++ == 0)
    l->first_missing_line = l->line;
  l->lines[i] = l->line;
  l->count++;
next:
  l->fields = 0;
}

/* Reads a whole (small) file. Returns its length or a negative error. */
static int64_t slurp(const char *path, char **out)
{
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  size_t len = 0, cap = 0, n;

  if (f == NULL)
    return -errno;
  for (;;) {
    if (cap - len < 65536) {
      char *p = realloc(buf, cap + 65536 + 1);
      if (p == NULL) {
        free(buf);
        fclose(f);
        return -ENOMEM;
      }
      buf = p;
      cap += 65536;
    }
    n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0)
      break;
  }
  if (ferror(f)) {
    int e = -EIO;
    free(buf);
    fclose(f);
    return e;
  }
  fclose(f);
  buf[len] = '\0';
  *out = buf;
  return (int64_t)len;
}

/* "33.366" milliseconds -> 33366000 ns, without floating point. */
static int parse_ms(const char *s, const char *end, int64_t *out)
{
  int64_t whole = 0, frac = 0, scale = 1000000;
  const char *p = s;
  int digits = 0;

  while (p < end && *p >= '0' && *p <= '9') {
    if (whole > INT64_MAX / 10 / 1000000)
      return -ERANGE;
    whole = whole * 10 + (*p++ - '0');
    digits++;
  }
  if (p < end && *p == '.') {
    p++;
    while (p < end && *p >= '0' && *p <= '9') {
      if (scale > 1) {
        scale /= 10;
        frac += (*p - '0') * scale;
      }
      p++;
      digits++;
    }
  }
  if (digits == 0 || p != end)
    return -EINVAL;
  *out = whole * 1000000 + frac;
  return 0;
}

static int is_blank(char c)
{
  return c == ' ' || c == '\t' || c == '\r';
}

/* One value per line; line 1 is the format header. Editors add what the format does not have:
 * blank lines, '#' comments and spaces around the value are skipped, not taken for values. */
static int load_pts(struct loader *l, char *buf, int64_t len, enum pirec_remux_clock clock)
{
  char *p = buf, *end = buf + len;

  if (clock == PIREC_REMUX_CLOCK_MONO || clock == PIREC_REMUX_CLOCK_WALL) {
    fail(l, "a pts file has only the camera's clock; use --clock device or auto");
    return -EINVAL;
  }
  for (l->line = 1; p < end; l->line++) {
    char *nl = memchr(p, '\n', (size_t)(end - p));
    char *start = p, *stop;
    if (nl == NULL)
      break; /* a partial last line: the writer was killed mid-line */
    p = nl + 1;
    stop = nl;
    while (stop > start && is_blank(stop[-1]))
      stop--;
    while (start < stop && is_blank(*start))
      start++;
    if (l->line == 1 || start == stop || *start == '#')
      continue;
    if (l->count == l->alloc && grow(l) < 0) {
      fail(l, "out of memory");
      return -ENOMEM;
    }
    if (parse_ms(start, stop, &l->device[l->count]) < 0) {
      *stop = '\0';
      fail(l, "'%.40s' is not a time in milliseconds", start);
      return -EINVAL;
    }
    l->mono[l->count] = l->wall[l->count] = -1;
    l->bytes[l->count] = l->offset[l->count] = -1;
    l->lines[l->count++] = l->line;
  }
  return 0;
}

/* Reads the file into *buf and returns how many bytes hold complete lines, or a negative errno
 * with err set. Sets timing->partial_row when a line was cut. */
static int64_t read_lines(const char *path, char **buf, struct pirec_remux_timing *timing, char *err,
                          size_t cap)
{
  int64_t len = slurp(path, buf);
  if (len < 0) {
    snprintf(err, cap, "cannot read '%s': %s", path, strerror((int)-len));
    return len;
  }
  /* After a power loss, ext4 can leave the last blocks of a file as zeros: treat them as unwritten. */
  while (len > 0 && (*buf)[len - 1] == '\0')
    len--;
  if (len == 0) {
    snprintf(err, cap, "'%s' is empty (no header)", path);
    free(*buf);
    *buf = NULL;
    return -ENODATA;
  }
  /* Only complete lines count: whatever follows the last newline was cut by a crash. */
  int64_t used = len;
  while (used > 0 && (*buf)[used - 1] != '\n')
    used--;
  timing->partial_row = used < len;
  return used;
}

/* Length of the CSV record at buf[0..len): up to and with the first newline outside a quoted
 * field (RFC 4180: a quote opens only at the start of a field, "" inside is a quote). Sets *lines
 * to the physical lines it spans and *open when it ends inside quotes. */
static int64_t record_len(const char *buf, int64_t len, int64_t *lines, int *open)
{
  int quoted = 0, field_start = 1;
  int64_t i = 0;

  *lines = 0;
  while (i < len && is_blank(buf[i]))
    i++;
  if (i < len && buf[i] == '#') {
    /* A comment: its quotes are text, it ends at its line's end. */
    const char *nl = memchr(buf + i, '\n', (size_t)(len - i));
    *lines = nl != NULL;
    return nl ? nl - buf + 1 : len;
  }
  for (; i < len; i++) {
    char c = buf[i];
    if (c == '\n')
      ++*lines;
    if (quoted) {
      if (c == '"' && i + 1 < len && buf[i + 1] == '"')
        i++;
      else if (c == '"')
        quoted = 0;
      continue;
    }
    if (c == '\n')
      return i + 1;
    if (c == '"' && field_start)
      quoted = 1;
    field_start = c == ',' || (field_start && (c == ' ' || c == '\t'));
  }
  *open = quoted;
  return len;
}

/* Whether a record holds nothing (a blank line) or is a '#' comment: an editor's additions. */
static int skipped_record(const char *rec, int64_t n)
{
  int64_t i = 0;
  while (i < n && (is_blank(rec[i]) || rec[i] == '\n'))
    i++;
  return i == n || rec[i] == '#';
}

/* Parses a frames CSV with libcsv into l, one record at a time so every row knows the physical
 * line it starts on, also when a quoted field holds line breaks. Returns 0, -EINVAL (l->err says
 * why) or -ENOMEM. */
static int load_csv(struct loader *l, char *buf, int64_t used)
{
  struct csv_parser parser;
  if (csv_init(&parser, 0) != 0) {
    snprintf(l->err, l->cap, "out of memory");
    return -ENOMEM;
  }
  for (int64_t at = 0, lines = 0; at < used && !l->failed; l->line += lines) {
    int open = 0;
    int64_t n = record_len(buf + at, used - at, &lines, &open);
    if (open) {
      fail(l, "a quoted field is not closed before the end of the file");
    } else if (!skipped_record(buf + at, n)) {
      if (csv_parse(&parser, buf + at, (size_t)n, on_field, on_row, l) != (size_t)n && !l->failed)
        fail(l, "%s", csv_strerror(csv_error(&parser)));
      csv_fini(&parser, on_field, on_row, l);
    }
    at += n;
  }
  csv_free(&parser);
  if (!l->header_done && !l->failed)
    fail(l, "no complete header line");
  return l->failed ? -EINVAL : 0;
}

/* --clock auto: the device clock when every row has it and it only moves forward, else mono_ns. */
static enum pirec_remux_clock auto_clock(const struct loader *l, struct pirec_remux_timing *timing)
{
  if (l->col[COL_DEVICE] < 0 || l->missing_device != 0 || l->count == 0)
    return PIREC_REMUX_CLOCK_MONO;
  /* A camera's own clock restarts with the camera (a restarted rpicam-vid, a reconnected
   * stream); mono_ns is the recorder's clock and stays continuous across that, so auto falls
   * back to it rather than failing. The reason is kept for the summary. */
  for (int64_t i = 1; i < l->count; i++)
    if (l->device[i] <= l->device[i - 1]) {
      snprintf(timing->clock_note, sizeof timing->clock_note,
               "device_ts_ns %lld on line %lld is not after %lld", (long long)l->device[i],
               (long long)l->lines[i], (long long)l->device[i - 1]);
      return PIREC_REMUX_CLOCK_MONO;
    }
  return PIREC_REMUX_CLOCK_DEVICE;
}

/* Sets timing->clock_used for a CSV; an asked-for clock the file cannot give fails (when rc is 0). */
static int choose_clock(const struct loader *l, enum pirec_remux_clock clock,
                        struct pirec_remux_timing *timing, int rc)
{
  switch (clock) {
  case PIREC_REMUX_CLOCK_AUTO: timing->clock_used = auto_clock(l, timing); return rc;
  case PIREC_REMUX_CLOCK_DEVICE:
    timing->clock_used = clock;
    if (rc == 0 && l->col[COL_DEVICE] < 0) {
      snprintf(l->err, l->cap, "%s: no 'device_ts_ns' column for --clock device", l->path);
      return -EINVAL;
    }
    if (rc == 0 && l->missing_device > 0) {
      snprintf(l->err, l->cap, "%s:%lld: device_ts_ns is empty (%lld rows have none); use --clock mono",
               l->path, (long long)l->first_missing_line, (long long)l->missing_device);
      return -EINVAL;
    }
    return rc;
  case PIREC_REMUX_CLOCK_WALL:
    timing->clock_used = clock;
    if (rc == 0 && l->col[COL_WALL] < 0) {
      snprintf(l->err, l->cap, "%s: no 'wall_ns' column for --clock wall", l->path);
      return -EINVAL;
    }
    return rc;
  default: timing->clock_used = PIREC_REMUX_CLOCK_MONO; return rc;
  }
}

/* The chosen clock's timestamps must strictly increase. */
static int check_increasing(const struct loader *l, const int64_t *chosen, const char *name,
                            enum pirec_remux_clock asked, const struct pirec_remux_timing *timing)
{
  for (int64_t i = 1; i < l->count; i++)
    if (chosen[i] <= chosen[i - 1]) {
      snprintf(l->err, l->cap, "%s:%lld: %s %lld is not after %lld on line %lld%s", l->path,
               (long long)l->lines[i], name, (long long)chosen[i], (long long)chosen[i - 1],
               (long long)l->lines[i - 1],
               timing->clock_used == PIREC_REMUX_CLOCK_WALL ? " (the wall clock steps; try --clock mono)"
               : timing->clock_used == PIREC_REMUX_CLOCK_DEVICE && asked == PIREC_REMUX_CLOCK_DEVICE
                   ? " (the camera's clock restarted? --clock auto or mono uses mono_ns)"
                   : "");
      return -EINVAL;
    }
  return 0;
}

int pirec_remux_timing_load(const char *path, enum pirec_remux_clock clock, struct pirec_remux_timing *timing,
                            char *err, size_t cap)
{
  struct loader l;
  char *buf = NULL;
  int64_t *chosen;
  const char *chosen_name;
  int rc;

  memset(timing, 0, sizeof *timing);
  memset(&l, 0, sizeof l);
  l.path = path;
  l.line = 1;
  l.err = err;
  l.cap = cap;
  if (cap > 0)
    err[0] = '\0';

  int64_t used = read_lines(path, &buf, timing, err, cap);
  if (used < 0)
    return (int)used;
  /* A UTF-8 byte order mark, as some editors and spreadsheets write, is not part of the text. */
  char *text = buf;
  if (used >= 3 && memcmp(buf, "\xEF\xBB\xBF", 3) == 0) {
    text += 3;
    used -= 3;
  }
  if (strncmp(text, "# timecode format v2", 20) == 0 || strncmp(text, "# timestamp format v2", 21) == 0) {
    rc = load_pts(&l, text, used, clock);
    timing->clock_used = PIREC_REMUX_CLOCK_DEVICE;
    chosen = l.device;
    chosen_name = "pts";
  } else {
    rc = choose_clock(&l, clock, timing, load_csv(&l, text, used));
    chosen = timing->clock_used == PIREC_REMUX_CLOCK_DEVICE ? l.device
             : timing->clock_used == PIREC_REMUX_CLOCK_WALL ? l.wall
                                                            : l.mono;
    chosen_name = timing->clock_used == PIREC_REMUX_CLOCK_DEVICE ? "device_ts_ns"
                  : timing->clock_used == PIREC_REMUX_CLOCK_WALL ? "wall_ns"
                                                                 : "mono_ns";
  }
  if (rc == 0)
    rc = check_increasing(&l, chosen, chosen_name, clock, timing);
  free(buf);
  int64_t *columns[] = {l.mono, l.wall, l.device};
  for (size_t i = 0; i < sizeof columns / sizeof columns[0]; i++)
    if (rc < 0 || columns[i] != chosen)
      free(columns[i]);
  if (rc < 0) {
    free(l.bytes);
    free(l.offset);
    free(l.lines);
    memset(timing, 0, sizeof *timing);
    return rc;
  }
  timing->t_ns = chosen;
  timing->line = l.lines;
  timing->bytes = l.bytes;
  timing->offset = l.offset;
  timing->count = l.count;
  timing->before_start = l.before_start;
  return 0;
}

void pirec_remux_timing_free(struct pirec_remux_timing *timing)
{
  if (timing == NULL)
    return;
  free(timing->t_ns);
  free(timing->bytes);
  free(timing->offset);
  free(timing->line);
  memset(timing, 0, sizeof *timing);
}

const char *pirec_remux_clock_name(enum pirec_remux_clock clock)
{
  switch (clock) {
  case PIREC_REMUX_CLOCK_DEVICE: return "device";
  case PIREC_REMUX_CLOCK_MONO: return "mono";
  case PIREC_REMUX_CLOCK_WALL: return "wall";
  default: return "auto";
  }
}
