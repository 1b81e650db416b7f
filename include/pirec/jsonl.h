#ifndef PIREC_JSONL_H
#define PIREC_JSONL_H

/* JSON lines, as both ends of the controller protocol speak them (docs/PROTOCOL.md): one JSON
 * object per line, '\n' ends a line, a line has at most a fixed number of bytes (2 MiB by default)
 * without its '\n'. The recorder side (recorders/protocol.c), the controller's control socket and
 * its recorder children (controller/) and the `pirec status|...` client all frame, parse and write
 * lines here, so the limits and the error texts are the same at every end.
 *
 * Reading: a reader is a plain value embedded in its owner (_init, then _free; _free takes a
 * zeroed or freed reader as a no-op). The owner reads into pirec_jsonl_reader_space(), reports the
 * bytes with pirec_jsonl_reader_fill(), then takes lines with pirec_jsonl_reader_next() for as
 * long as it wants: lines not taken stay buffered, so a reader under flow control can stop
 * between lines. A line longer than the limit is reported once and skipped up to its '\n'. One
 * thread at a time; the reader never prints and never blocks. */

#include <jansson.h>
#include <stddef.h>

#include "pirec/bytebuf.h"

/* The longest line either end accepts unless told otherwise, '\n' not counted. */
#define PIREC_JSONL_MAX_LINE (2u * 1024 * 1024)
/* What one read asks room for. */
#define PIREC_JSONL_READ_CHUNK 65536u

struct pirec_jsonl_reader {
  struct pirec_bytebuf buf;
  size_t max_line;
  size_t scanned; /* bytes of the partial line already searched for '\n' */
  int discarding; /* inside an over-long line: drop bytes up to its '\n' */
};

/* max_line: the longest accepted line without its '\n' (0: PIREC_JSONL_MAX_LINE). Nothing is
 * allocated until the first read. Returns 0 or -EINVAL. */
int pirec_jsonl_reader_init(struct pirec_jsonl_reader *r, size_t max_line);
void pirec_jsonl_reader_free(struct pirec_jsonl_reader *r);

/* Room for the next read: at least PIREC_JSONL_READ_CHUNK bytes (*avail says how many). NULL when
 * memory runs out (the bytes already buffered stay). Valid until the next call on r. */
char *pirec_jsonl_reader_space(struct pirec_jsonl_reader *r, size_t *avail);
/* n bytes of that room were filled. */
void pirec_jsonl_reader_fill(struct pirec_jsonl_reader *r, size_t n);

/* The next complete line: returns 1 and sets *line / *len (without the '\n'; not NUL-terminated;
 * may contain NUL bytes; valid until the next _space or _fill), 0 when no complete line is
 * buffered, or -EMSGSIZE once for a line over max_line (complete, or a partial one already over
 * it): its bytes are dropped up to and including its '\n', and the caller may go on reading. */
int pirec_jsonl_reader_next(struct pirec_jsonl_reader *r, const char **line, size_t *len);
/* Forgets every buffered byte (keeps the allocation). */
void pirec_jsonl_reader_reset(struct pirec_jsonl_reader *r);

/* The error text for a line over max_line: "line too long (over N bytes)". */
void pirec_jsonl_too_long(size_t max_line, char *err, size_t errlen);

/* Parses one line as a JSON value, after dropping trailing CR, space and TAB (so CRLF lines read
 * like LF lines). flags go to jansson's json_loadb. Returns a new reference, or NULL with error
 * filled (error may be NULL). */
json_t *pirec_jsonl_parse(const char *line, size_t len, size_t flags, json_error_t *error);
/* Parses a command line as a JSON object (duplicate keys refused). Returns 1 and a new reference
 * in *out; 0 for a blank line (a keep-alive; *out NULL); -EINVAL with the error text in err:
 * "malformed JSON at column N: ..." or "malformed command: expected a JSON object". */
int pirec_jsonl_parse_object(const char *line, size_t len, json_t **out, char *err, size_t errlen);

/* The error text for a command nobody knows: "unknown command \"CMD\" (expected EXPECTED)", the
 * name quoted as a JSON string and cut at 200 bytes. */
void pirec_jsonl_unknown_command(const char *cmd, const char *expected, char *err, size_t errlen);

/* obj as one line: compact JSON (plus jansson `flags`, e.g. JSON_ENSURE_ASCII; never an indent),
 * '\n', then a NUL not counted in *len. Returns a malloc'd string the caller frees, or NULL when
 * obj cannot be encoded or memory runs out. obj is borrowed. */
char *pirec_jsonl_encode(const json_t *obj, size_t flags, size_t *len);

#endif
