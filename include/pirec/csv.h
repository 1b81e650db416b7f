#ifndef PIREC_CSV_H
#define PIREC_CSV_H

/* CSV rows built in caller memory, then pushed into a sink's ring (never written to a FILE*).
 *
 * Format: fields separated by ',', rows ended by '\n'. Integers and floats are formatted without
 * printf.
 * Text fields are quoted with libcsv when they need it (comma, quote, CR, LF, leading or trailing
 * space or TAB); UTF-8 passes through unchanged; an empty text is an empty field. A text field that
 * begins with '=', '+', '-', '@', TAB, CR or a single quote is stored with one extra leading single
 * quote (inside the double quotes when it is quoted), so spreadsheets do not evaluate it; readers
 * recover the original by removing one leading quote from a text field that has one. docs/FORMATS.md
 * describes the format for readers.
 *
 * A row builder never allocates. If the row outgrows its buffer, later appends are ignored and
 * pirec_csv_row_end() returns -ENOSPC. Builders are used by one thread at a time.
 */

#include <stddef.h>
#include <stdint.h>

struct pirec_sink;

struct pirec_csv_row {
  char *buf;
  size_t cap;
  size_t len;
  int fields;
  int overflow;
};

/* Starts a row in buf[0..cap). */
void pirec_csv_row_begin(struct pirec_csv_row *row, char *buf, size_t cap);
void pirec_csv_row_i64(struct pirec_csv_row *row, int64_t value);
void pirec_csv_row_u64(struct pirec_csv_row *row, uint64_t value);
/* An empty field (for example a device timestamp the source does not have). */
void pirec_csv_row_empty(struct pirec_csv_row *row);
/* A text field of len bytes (may contain NUL-free UTF-8, commas, quotes, newlines). */
void pirec_csv_row_text(struct pirec_csv_row *row, const char *text, size_t len);
/* A NUL-terminated text field. */
void pirec_csv_row_str(struct pirec_csv_row *row, const char *text);
/* A field written exactly as given, unquoted; for callers that formatted a number themselves. */
void pirec_csv_row_raw(struct pirec_csv_row *row, const char *text, size_t len);
/* A binary32 value in its shortest text that reads back to the same float (pirec/f32.h). */
void pirec_csv_row_f32(struct pirec_csv_row *row, float value);
/* The time of an optional clock (a device timestamp the source may not have): PIREC_CSV_NO_TIME
 * writes an empty field, any other value the number. */
#define PIREC_CSV_NO_TIME INT64_MIN
void pirec_csv_row_time(struct pirec_csv_row *row, int64_t ns);
/* The leading columns every data row of a session starts with, in this order (docs/FORMATS.md):
 * trial, mono_ns, wall_ns. Every module writes them through this one call. */
void pirec_csv_row_lead(struct pirec_csv_row *row, int64_t trial, int64_t mono_ns, int64_t wall_ns);
/* Ends the row with '\n'. Returns its length in bytes, or -ENOSPC if it did not fit. */
int pirec_csv_row_end(struct pirec_csv_row *row);

/* Builds a header row from NULL-terminated column names into buf. Returns its length or -ENOSPC. */
int pirec_csv_header(char *buf, size_t cap, const char *const *columns);

/* Pushes a finished row (after pirec_csv_row_end) into the sink (a copy; one push per row), from the
 * sink's producer thread. Returns what pirec_sink_push returns, or -ENOSPC if the row overflowed
 * (then counted as a drop with pirec_sink_count_drop). */
int pirec_csv_push(struct pirec_sink *sink, const struct pirec_csv_row *row);

/* Reverses the formula guard for a parsed field: returns how many leading bytes to skip (0 or 1). */
size_t pirec_csv_guard_len(const char *field, size_t len);

#endif
