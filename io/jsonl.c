#include "pirec/jsonl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int pirec_jsonl_reader_init(struct pirec_jsonl_reader *r, size_t max_line)
{
  memset(r, 0, sizeof *r);
  r->max_line = max_line ? max_line : PIREC_JSONL_MAX_LINE;
  /* Whole lines are taken before the next read, so the buffer holds at most one partial line
   * (never over max_line) and one read. */
  return pirec_bytebuf_init(&r->buf, 0, r->max_line + 1 + PIREC_JSONL_READ_CHUNK);
}

void pirec_jsonl_reader_free(struct pirec_jsonl_reader *r)
{
  pirec_bytebuf_free(&r->buf);
}

char *pirec_jsonl_reader_space(struct pirec_jsonl_reader *r, size_t *avail)
{
  return (char *)pirec_bytebuf_space(&r->buf, PIREC_JSONL_READ_CHUNK, avail);
}

void pirec_jsonl_reader_fill(struct pirec_jsonl_reader *r, size_t n)
{
  pirec_bytebuf_fill(&r->buf, n);
}

void pirec_jsonl_reader_reset(struct pirec_jsonl_reader *r)
{
  pirec_bytebuf_reset(&r->buf);
  r->scanned = 0;
  r->discarding = 0;
}

/* Drops the rest of an over-long line; 1 once its '\n' has gone, 0 while it goes on. */
static int skip_long_line(struct pirec_jsonl_reader *r)
{
  const char *data = (const char *)pirec_bytebuf_data(&r->buf);
  size_t n = pirec_bytebuf_len(&r->buf);
  const char *nl = memchr(data, '\n', n);
  if (!nl) {
    pirec_bytebuf_consume(&r->buf, n);
    return 0;
  }
  pirec_bytebuf_consume(&r->buf, (size_t)(nl - data) + 1);
  r->discarding = 0;
  return 1;
}

int pirec_jsonl_reader_next(struct pirec_jsonl_reader *r, const char **line, size_t *len)
{
  if (r->discarding && !skip_long_line(r))
    return 0;
  const char *data = (const char *)pirec_bytebuf_data(&r->buf);
  size_t n = pirec_bytebuf_len(&r->buf);
  const char *nl = n > r->scanned ? memchr(data + r->scanned, '\n', n - r->scanned) : NULL;
  if (!nl) {
    r->scanned = n;
    if (n <= r->max_line)
      return 0;
    /* Reported as soon as the partial line is over the limit, not when (if ever) it ends. */
    pirec_bytebuf_consume(&r->buf, n);
    r->scanned = 0;
    r->discarding = 1;
    return -EMSGSIZE;
  }
  size_t linelen = (size_t)(nl - data);
  r->scanned = 0;
  /* Consuming only moves the start: the bytes stay where they are until the next space or fill. */
  pirec_bytebuf_consume(&r->buf, linelen + 1);
  if (linelen > r->max_line)
    return -EMSGSIZE;
  *line = data;
  *len = linelen;
  return 1;
}

void pirec_jsonl_too_long(size_t max_line, char *err, size_t errlen)
{
  snprintf(err, errlen, "line too long (over %zu bytes)", max_line);
}

void pirec_jsonl_unknown_command(const char *cmd, const char *expected, char *err, size_t errlen)
{
  json_t *q = json_string(cmd);
  char *quoted = q ? json_dumps(q, JSON_ENCODE_ANY) : NULL;
  snprintf(err, errlen, "unknown command %.200s (expected %s)", quoted ? quoted : "?", expected);
  free(quoted);
  json_decref(q);
}

static size_t trimmed(const char *line, size_t len)
{
  while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
    len--;
  return len;
}

json_t *pirec_jsonl_parse(const char *line, size_t len, size_t flags, json_error_t *error)
{
  return json_loadb(line, trimmed(line, len), flags, error);
}

int pirec_jsonl_parse_object(const char *line, size_t len, json_t **out, char *err, size_t errlen)
{
  *out = NULL;
  len = trimmed(line, len);
  if (!len)
    return 0;
  json_error_t e;
  json_t *msg = json_loadb(line, len, JSON_REJECT_DUPLICATES, &e);
  if (!msg) {
    snprintf(err, errlen, "malformed JSON at column %d: %s", e.column, e.text);
    return -EINVAL;
  }
  if (!json_is_object(msg)) {
    json_decref(msg);
    snprintf(err, errlen, "malformed command: expected a JSON object");
    return -EINVAL;
  }
  *out = msg;
  return 1;
}

char *pirec_jsonl_encode(const json_t *obj, size_t flags, size_t *len)
{
  /* A line is one line: any indent jansson was asked for would split it. */
  char *text = json_dumps(obj, (flags & ~(size_t)JSON_MAX_INDENT) | JSON_COMPACT);
  if (!text)
    return NULL;
  size_t n = strlen(text);
  char *line = realloc(text, n + 2);
  if (!line) {
    free(text);
    return NULL;
  }
  line[n] = '\n';
  line[n + 1] = '\0';
  *len = n + 1;
  return line;
}
