#ifndef PIREC_ROWGATE_H
#define PIREC_ROWGATE_H

/* Rows that describe data in another file, held back until that data is in its file.
 *
 * A frames-CSV row says "this frame is packet i of the video". Pushed at once, the row could reach
 * its file while the frame still waited in the video sink's ring, so a disk that fills (or a
 * process killed) in between left a row without its frame. A gate keeps each row, with the end
 * offset of its frame in the video file, until the video sink's pirec_sink_whole_end() reaches
 * that offset; the frames whose write failed never get their rows, and the gate says how many
 * they were (and the drops their rows would have carried), so a recorder counts them.
 *
 * Loop thread only (the thread that pushes the frames and owns both sinks). _new/_free. */

#include <stddef.h>
#include <stdint.h>

struct pirec_sink;
struct pirec_rowgate;

/* The longest row a gate holds. */
#define PIREC_ROWGATE_ROW_MAX 256

/* A gate holding up to about capacity_bytes of rows (each row's bytes plus 32). Returns 0 and
 * *out, -EINVAL (capacity below two rows), -ENOMEM. */
int pirec_rowgate_new(size_t capacity_bytes, struct pirec_rowgate **out);
/* NULL is a no-op. Rows still held are dropped without a word: discard them first. */
void pirec_rowgate_free(struct pirec_rowgate *g);

/* 1 when a row of PIREC_ROWGATE_ROW_MAX bytes can be held now. Check it before the frame goes into
 * its sink: a frame whose row could not be held would have no row. */
int pirec_rowgate_room(const struct pirec_rowgate *g);

/* Holds row (len bytes, copied) until the data's whole end reaches end. dropped is what the row's
 * dropped_before carries, handed back by discard. Rows must come in the order of their data
 * (end never decreasing). Returns 0, -EMSGSIZE (len over the maximum), -ENOBUFS (full). */
int pirec_rowgate_hold(struct pirec_rowgate *g, const char *row, size_t len, uint64_t end, uint64_t dropped);

/* What a release did. */
struct pirec_rowgate_result {
  uint64_t rows;            /* rows the CSV sink took */
  uint64_t dropped;         /* the sum of what they carried */
  uint64_t refused;         /* rows the CSV sink refused (they are gone) */
  uint64_t refused_dropped; /* the sum of what those carried */
  int error;                /* the first refusal's error, 0 when none */
};

/* Pushes into csv, oldest first, every held row whose end <= whole_end (the data sink's
 * pirec_sink_whole_end()), and says what happened in *out. */
void pirec_rowgate_release(struct pirec_rowgate *g, uint64_t whole_end, struct pirec_sink *csv,
                           struct pirec_rowgate_result *out);

/* Drops every row still held (their data never reached its file): *rows is how many they were and
 * *dropped the sum of what they carried. Either pointer may be NULL. */
void pirec_rowgate_discard(struct pirec_rowgate *g, uint64_t *rows, uint64_t *dropped);

/* Rows held now. */
size_t pirec_rowgate_held(const struct pirec_rowgate *g);

#endif
