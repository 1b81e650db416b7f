#ifndef PIREC_TESTS_COUNTERS_H
#define PIREC_TESTS_COUNTERS_H

/* The counter identities the recorders' docs state, checked at the end of every recorder test so
 * that an off-by-one anywhere fails the suite. Each check fails the running cmocka test with every
 * term of the identity that does not hold. */

#include <stddef.h>
#include <stdint.h>

struct pirec_eyetracker_stream_status;
struct pirec_camera_status;

/* One term of an identity: its name (the expression) and value. */
struct counter_term {
  const char *name;
  uint64_t value;
};
#define COUNTER_TERM(x) \
  {                     \
#x, (uint64_t)(x)   \
  }

/* Fails unless the left terms add up to exactly the right terms. what names the identity. */
void counters_identity(const char *what, const struct counter_term *lhs, size_t nl,
                       const struct counter_term *rhs, size_t nr);

/* Data rows of a CSV file (parsed with libcsv, so quoted fields may hold commas and line breaks)
 * and the sum of column (NULL: none). A missing file gives 0 rows and returns -1, else 0. */
int counters_csv(const char *path, const char *column, uint64_t *rows, uint64_t *sum);

/* An eye tracker stream at a trial's stop (docs/EYETRACKER.md, include/pirec/eyetracker.h):
 *   samples = written + refused + discarded + idle;
 *   rows of csv_path = written; the sum of its dropped_before = dropped.
 * csv_path NULL: the stream had no file (left out); then written, refused, discarded and dropped
 * must be 0. label names the stream in messages. */
void counters_check_eyetracker_stream(const char *label, const struct pirec_eyetracker_stream_status *s,
                                      const char *csv_path);

/* The camera at the stop of its first trial (docs/CAMERA.md): rows of csv_path = frames_written,
 * and exactly
 *   rows + sum of dropped_before + dropped_after + frames_idle = frames_seen + device_gaps
 * (every frame the source delivered up to the last one the loop took is a row, counted lost in a
 * row's dropped_before or in dropped_after, or idle; the device's own gaps have no seq). */
void counters_check_camera(const struct pirec_camera_status *s, const char *csv_path);

/* The notes recorder after its files closed: rows of the notes files = notes accepted, and every
 * note sent was accepted or dropped (sent = notes + drops). */
void counters_check_notes(uint64_t sent, uint64_t notes, uint64_t drops, uint64_t rows);

#endif
