/* A trial recorded in segments (tNNN_s001.h264, tNNN_s002.h264, ... each with its _frames.csv,
 * docs/FORMATS.md) read as one input: pirec-remux --join names it by the trial's own name
 * (tNNN.h264, which does not exist) and gets one output timed from the trial's first frame.
 *
 * The segments' bytes are read through libavformat, never copied: elementary streams with the
 * concat protocol ("concat:a|b|c", a byte stream; each segment starts with its parameter sets and
 * a keyframe, so the joined stream decodes), Matroska files with the concat demuxer and an ffconcat
 * list (https://ffmpeg.org/ffmpeg-formats.html#concat-1). The frames CSVs are joined into an
 * anonymous memory file: one header, the rows in order, the offset column moved by the sizes of
 * the segments before (the byte position in the joined stream). Only the last segment can have
 * been cut by a crash; its partial last line stays as it is, so crash recovery sees it. */
#include "remux-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* "<stem>_sNNN<ext>" of path "<stem><ext>", k from 1. */
static int segment_path(const char *path, int k, const char *suffix, char *out, size_t cap)
{
  const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
  size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - path) : strlen(path);
  int w = snprintf(out, cap, "%.*s_s%03d%s", (int)stem, path, k, suffix ? suffix : path + stem);
  return w < 0 || (size_t)w >= cap ? -ENAMETOOLONG : 0;
}

int pirec__remux_is_segmented(const char *path)
{
  char seg[4200];
  struct stat st;
  return stat(path, &st) != 0 && segment_path(path, 1, NULL, seg, sizeof seg) == 0 && stat(seg, &st) == 0 &&
         S_ISREG(st.st_mode);
}

static int fail(struct pirec__remux_join *j, int rc, const char *fmt, const char *a)
{
  snprintf(j->error, sizeof j->error, fmt, a, strerror(-rc));
  pirec__remux_join_close(j);
  return rc;
}

/* Index of column name in a CSV header line, or -1. */
static int column_of(const char *header, const char *name)
{
  size_t n = strlen(name);
  int col = 0;
  for (const char *p = header;; col++) {
    size_t len = strcspn(p, ",\r\n");
    if (len == n && strncmp(p, name, n) == 0)
      return col;
    if (p[len] != ',')
      return -1;
    p += len + 1;
  }
}

/* One data line (with its newline, if any) to f, its offset field moved by base. */
static void put_row(FILE *f, const char *line, int offset_col, int64_t base)
{
  const char *p = line;
  for (int col = 0; offset_col >= 0 && col < offset_col; col++) {
    const char *comma = strchr(p, ',');
    if (!comma)
      break;
    p = comma + 1;
  }
  if (offset_col < 0 || p == line || *p < '0' || *p > '9') {
    fputs(line, f);
    return;
  }
  char *end;
  long long off = strtoll(p, &end, 10);
  fprintf(f, "%.*s%" PRId64 "%s", (int)(p - line), line, (int64_t)off + base, end);
}

/* Appends segment k's frames CSV to out (its header only for k 1). */
static int add_rows(FILE *out, const char *csv, int k, int64_t base)
{
  FILE *in = fopen(csv, "r");
  char *line = NULL;
  size_t cap = 0;
  int offset_col = -1;
  if (!in)
    return -errno;
  for (int first = 1; getline(&line, &cap, in) > 0; first = 0) {
    if (first) {
      offset_col = column_of(line, "offset");
      if (k == 1)
        fputs(line, out);
      continue;
    }
    put_row(out, line, offset_col, base);
  }
  free(line);
  fclose(in);
  return 0;
}

/* The input libavformat opens: the concat protocol's URL, or the ffconcat list (Matroska). */
static int add_input(struct pirec__remux_join *j, FILE *list, const char *seg, int k)
{
  if (list) {
    char *real = realpath(seg, NULL);
    if (!real)
      return -errno;
    fputs("file '", list);
    for (const char *c = real; *c; c++) /* a quote inside a quoted name: close, escape, reopen */
      if (*c == '\'')
        fputs("'\\''", list);
      else
        fputc(*c, list);
    fputs("'\n", list);
    free(real);
    return 0;
  }
  if (strchr(seg, '|'))
    return -EINVAL; /* the concat protocol's separator */
  size_t used = strlen(j->input);
  int w = snprintf(j->input + used, sizeof j->input - used, "%s%s", k == 1 ? "concat:" : "|", seg);
  return w < 0 || (size_t)w >= sizeof j->input - used ? -ENAMETOOLONG : 0;
}

static FILE *memfile(int *fd)
{
  *fd = memfd_create("pirec-remux-join", MFD_CLOEXEC);
  if (*fd < 0)
    return NULL;
  int dup_fd = dup(*fd);
  FILE *f = dup_fd >= 0 ? fdopen(dup_fd, "w") : NULL;
  if (!f && dup_fd >= 0)
    close(dup_fd);
  return f;
}

int pirec__remux_join_open(const char *path, int mkv, struct pirec__remux_join *j)
{
  FILE *rows, *list = NULL;
  int rc = 0;
  memset(j, 0, sizeof *j);
  j->timing_fd = j->list_fd = -1;
  if (!(rows = memfile(&j->timing_fd)) || (mkv && !(list = memfile(&j->list_fd)))) {
    if (rows)
      fclose(rows);
    return fail(j, -errno, "cannot join the segments of '%s': %s", path);
  }
  if (list)
    fputs("ffconcat version 1.0\n", list);
  for (int k = 1;; k++) {
    char seg[4200], csv[4200];
    struct stat st;
    if ((rc = segment_path(path, k, NULL, seg, sizeof seg)) < 0 ||
        (rc = segment_path(path, k, "_frames.csv", csv, sizeof csv)) < 0)
      break;
    if (stat(seg, &st) != 0)
      break;
    if ((rc = add_input(j, list, seg, k)) < 0 || (rc = add_rows(rows, csv, k, j->bytes)) < 0) {
      snprintf(j->last, sizeof j->last, "%s", rc == -ENOENT ? csv : seg);
      break;
    }
    j->bytes += st.st_size;
    j->count = k;
    snprintf(j->last, sizeof j->last, "%s", seg);
  }
  if (fclose(rows) != 0 && rc == 0)
    rc = -EIO;
  if (list && fclose(list) != 0 && rc == 0)
    rc = -EIO;
  if (rc < 0)
    return fail(j, rc, "cannot join the segment '%s': %s", j->last);
  if (j->count == 0)
    return fail(j, -ENOENT, "'%s' has no segments: %s", path);
  snprintf(j->timing, sizeof j->timing, "/proc/self/fd/%d", j->timing_fd);
  if (list)
    snprintf(j->input, sizeof j->input, "/proc/self/fd/%d", j->list_fd);
  return 0;
}

void pirec__remux_join_close(struct pirec__remux_join *j)
{
  if (j->timing_fd >= 0)
    close(j->timing_fd);
  if (j->list_fd >= 0)
    close(j->list_fd);
  j->timing_fd = j->list_fd = -1;
}
