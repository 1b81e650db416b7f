/* See counters.h. */
#include "counters.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <csv.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pirec/camera.h"
#include "pirec/eyetracker.h"

static size_t terms(char *buf, size_t cap, const struct counter_term *t, size_t n, uint64_t *sum)
{
  size_t k = 0;
  *sum = 0;
  for (size_t i = 0; i < n; i++) {
    *sum += t[i].value;
    int w = snprintf(buf + k, cap - k, "%s%s %" PRIu64, i ? " + " : "", t[i].name, t[i].value);
    if (w > 0 && (size_t)w < cap - k)
      k += (size_t)w;
  }
  return k;
}

void counters_identity(const char *what, const struct counter_term *lhs, size_t nl,
                       const struct counter_term *rhs, size_t nr)
{
  char l[1024], r[1024];
  uint64_t a, b;
  terms(l, sizeof l, lhs, nl, &a);
  terms(r, sizeof r, rhs, nr, &b);
  if (a != b)
    fail_msg("%s: counters do not add up: %s = %" PRIu64 ", but %s = %" PRIu64, what, l, a, r, b);
}

struct csv_count {
  const char *column;
  int col, field, row;
  uint64_t rows, sum;
};

static void on_field(void *data, size_t len, void *user)
{
  struct csv_count *c = user;
  char v[32];
  if (c->row == 0 && c->column && len == strlen(c->column) && memcmp(data, c->column, len) == 0)
    c->col = c->field;
  if (c->row > 0 && c->field == c->col) {
    snprintf(v, sizeof v, "%.*s", (int)(len < sizeof v ? len : sizeof v - 1), (const char *)data);
    c->sum += strtoull(v, NULL, 10);
  }
  c->field++;
}

static void on_row(int term, void *user)
{
  struct csv_count *c = user;
  (void)term;
  if (c->row++ > 0)
    c->rows++;
  c->field = 0;
}

int counters_csv(const char *path, const char *column, uint64_t *rows, uint64_t *sum)
{
  struct csv_count c = {.column = column, .col = -1};
  struct csv_parser p;
  char buf[65536];
  size_t n;
  FILE *f = fopen(path, "rb");
  *rows = *sum = 0;
  if (f == NULL)
    return -1;
  assert_int_equal(csv_init(&p, 0), 0);
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    assert_int_equal(csv_parse(&p, buf, n, on_field, on_row, &c), n);
  csv_fini(&p, on_field, on_row, &c);
  csv_free(&p);
  fclose(f);
  if (column && c.row > 0 && c.col < 0)
    fail_msg("'%s' has no column '%s'", path, column);
  *rows = c.rows;
  *sum = c.sum;
  return 0;
}

void counters_check_eyetracker_stream(const char *label, const struct pirec_eyetracker_stream_status *s,
                                      const char *csv_path)
{
  char what[256];
  uint64_t rows = 0, dropped_before = 0;
  snprintf(what, sizeof what, "eye tracker %s stream", label);
  const struct counter_term received[] = {COUNTER_TERM(s->samples)};
  const struct counter_term fates[] = {COUNTER_TERM(s->written), COUNTER_TERM(s->refused),
                                       COUNTER_TERM(s->discarded), COUNTER_TERM(s->idle)};
  counters_identity(what, received, 1, fates, 4);
  if (csv_path != NULL && counters_csv(csv_path, "dropped_before", &rows, &dropped_before) < 0)
    fail_msg("%s: no file '%s'", what, csv_path);
  const struct counter_term file_rows[] = {COUNTER_TERM(rows)}, written[] = {COUNTER_TERM(s->written)};
  counters_identity(what, file_rows, 1, written, 1);
  const struct counter_term file_drops[] = {COUNTER_TERM(dropped_before)},
                            dropped[] = {COUNTER_TERM(s->dropped)};
  counters_identity(what, file_drops, 1, dropped, 1);
}

void counters_check_camera(const struct pirec_camera_status *s, const char *csv_path)
{
  uint64_t rows = 0, dropped_before = 0;
  if (counters_csv(csv_path, "dropped_before", &rows, &dropped_before) < 0)
    fail_msg("camera: no file '%s'", csv_path);
  const struct counter_term file_rows[] = {COUNTER_TERM(rows)}, written[] = {COUNTER_TERM(s->frames_written)};
  counters_identity("camera", file_rows, 1, written, 1);
  /* Every frame the loop took (and every frame lost before it) is a row, counted in a row's
   * dropped_before or in dropped_after, or idle; the device's own gaps have no seq. */
  const struct counter_term fates[] = {COUNTER_TERM(rows), COUNTER_TERM(dropped_before),
                                       COUNTER_TERM(s->dropped_after), COUNTER_TERM(s->frames_idle)};
  const struct counter_term delivered[] = {COUNTER_TERM(s->frames_seen), COUNTER_TERM(s->device_gaps)};
  counters_identity("camera", fates, 4, delivered, 2);
  const struct counter_term after[] = {COUNTER_TERM(s->dropped_after)},
                            after_total[] = {COUNTER_TERM(s->dropped_after_total)};
  counters_identity("camera (first trial)", after, 1, after_total, 1);
}

void counters_check_notes(uint64_t sent, uint64_t notes, uint64_t drops, uint64_t rows)
{
  const struct counter_term file_rows[] = {COUNTER_TERM(rows)}, accepted[] = {COUNTER_TERM(notes)};
  counters_identity("notes", file_rows, 1, accepted, 1);
  const struct counter_term all[] = {COUNTER_TERM(sent)},
                            fates[] = {COUNTER_TERM(notes), COUNTER_TERM(drops)};
  counters_identity("notes", all, 1, fates, 2);
}
