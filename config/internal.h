#ifndef PIREC_CONFIG_INTERNAL_H
#define PIREC_CONFIG_INTERNAL_H

/* Shared between the files of config/; not installed. */

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pirec/config.h"

enum pirec__config_type {
  PIREC__CONFIG_BOOL,
  PIREC__CONFIG_INT,
  PIREC__CONFIG_DURATION,
  PIREC__CONFIG_SIZE,
  PIREC__CONFIG_STRING,
  PIREC__CONFIG_ENUM,
  PIREC__CONFIG_PATH,
};

/* Extra check for string-typed values: returns NULL when value is fine, else what was expected. */
typedef const char *(*pirec__config_check_fn)(const char *value);

struct pirec__config_key {
  const char *name;
  enum pirec__config_type type;
  const char *def;     /* default as text; NULL: required, no default */
  const char *example; /* shown in the template for required keys */
  const char *help;
  int64_t min, max;           /* int, duration (ns), size (bytes) */
  const char *const *choices; /* enum: NULL-terminated */
  pirec__config_check_fn check;
  int base; /* int: 10, or 8 for file modes */
};

struct pirec__config_section;
struct pirec__config_parse;

struct pirec__config_kind {
  const char *name;
  bool instance; /* [name.NAME] */
  const char *help;
  const struct pirec__config_key *keys;
  size_t key_count;
  /* cross-key checks after all keys of the file are read; may be NULL */
  void (*validate)(struct pirec__config_parse *p, struct pirec__config_section *s);
};

extern const struct pirec__config_kind pirec__config_kinds[];
extern const size_t pirec__config_kind_count;

/* A parsed value. Strings point into the config's arena or at schema text. */
struct pirec__config_value {
  bool set;
  bool refused; /* given, but invalid and already reported: not "missing" as well */
  int line;
  union {
    bool b;
    int64_t i;
    uint64_t u;
  } v;
  const char *s; /* string, path, enum */
};

struct pirec__config_section {
  const char *name; /* "camera.front" */
  const struct pirec__config_kind *kind;
  int line; /* 0 when not in the file */
  bool present;
  struct pirec__config_value *values; /* kind->key_count entries */
};

struct pirec__arena_chunk;

struct pirec__arena {
  struct pirec__arena_chunk *head;
};

void *pirec__arena_alloc(struct pirec__arena *a, size_t size);
char *pirec__arena_strndup(struct pirec__arena *a, const char *s, size_t n);
void pirec__arena_free(struct pirec__arena *a);

struct pirec_config {
  atomic_int refs;
  struct pirec__arena arena;
  const char *path;
  char *source; /* malloc'd, owned */
  size_t source_len;
  struct pirec__config_section *sections; /* file order; singletons not in the file appended */
  size_t section_count;
  struct pirec__config_section *defaults; /* one per kind, pirec__config_kinds order */
  uint32_t *index;  /* open-addressing hash of section names: section position + 1, 0 empty */
  size_t index_cap; /* power of two, at least twice section_count */
};

/* Parse state shared with the schema's validators. */
struct pirec__config_parse {
  struct pirec_config *cfg;
  struct pirec_config_errors *errors;
  const char *filename;
  size_t error_count;
  bool oom;
};

/* Appends "FILE:LINE: KEY = 'VALUE': what" (or "FILE:LINE: KEY: what" when value is NULL). */
void pirec__config_error(struct pirec__config_parse *p, int line, const char *key, const char *value,
                         const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int pirec__config_errors_add(struct pirec_config_errors *errors, int line, const char *key,
                             const char *message);

const struct pirec__config_kind *pirec__config_kind_find(const char *name, size_t len);
const struct pirec__config_key *pirec__config_key_find(const struct pirec__config_kind *kind,
                                                       const char *name, size_t *index);
/* Closest candidate within a small edit distance, or NULL. */
const char *pirec__config_suggest(const char *word, const char *const *candidates, size_t count);
const char *pirec__config_suggest_key(const struct pirec__config_kind *kind, const char *word);
/* The kind closest to the KIND part of section ("KIND" or "KIND.NAME"), or NULL. */
const char *pirec__config_suggest_kind(const char *section);

/* Parses text for key into out. On failure returns -EINVAL and *expected says what was expected
 * (static or thread-local text); *range is true when the syntax was fine but out of range. */
int pirec__config_parse_value(const struct pirec__config_key *key, const char *text,
                              struct pirec__config_value *out, const char **expected);
/* The "expected ..." phrase for key (thread-local buffer). */
const char *pirec__config_expected(const struct pirec__config_key *key);
/* Canonical text of a value into buf. */
void pirec__config_value_text(const struct pirec__config_key *key, const struct pirec__config_value *v,
                              char *buf, size_t len);
void pirec__config_format_duration(int64_t ns, char *buf, size_t len);
void pirec__config_format_size(uint64_t bytes, char *buf, size_t len);

/* Splits "camera.front.fps" at the last dot. Returns 0 or -ENOENT when there is no dot. */
int pirec__config_split_key(const char *dotted, char *section, size_t section_len, const char **key);
/* Resolves a section name: its kind, or NULL. For "camera.front" the kind is camera;
 * *bad_name set when the NAME part is missing or has characters other than [A-Za-z0-9_-]. */
const struct pirec__config_kind *pirec__config_section_kind(const char *section, bool *bad_name);

/* Line classification shared by the parser's reader and the editor. Offsets are relative to the
 * line start; the line excludes its '\n' (and a trailing '\r'). */
enum pirec__line_kind {
  PIREC__LINE_BLANK,
  PIREC__LINE_COMMENT,
  PIREC__LINE_SECTION,
  PIREC__LINE_KEY,
  PIREC__LINE_BAD,
};

struct pirec__line {
  enum pirec__line_kind kind;
  size_t name_start, name_end;   /* section name or key */
  size_t value_start, value_end; /* key: the value without surrounding blanks or inline comment */
  size_t sep;                    /* key: offset of '=' or ':' */
};

void pirec__config_classify(const char *line, size_t len, struct pirec__line *out);

/* Parses text, taking ownership of it (malloc'd, text[len] == '\0'), as pirec_config_parse. */
int pirec__config_parse_owned(char *text, size_t len, const char *filename, struct pirec_config **out,
                              struct pirec_config_errors *errors);
/* Takes the exclusive edit lock for path (a flock on its directory); returns the fd to close. */
int pirec__config_lock(const char *path, struct pirec_config_errors *errors);
/* pirec_config_save with the edit lock held, appending failures to errors (may be NULL). */
int pirec__config_save_locked(const struct pirec_config *cfg, const char *path,
                              struct pirec_config_errors *errors);

#define PIREC__CONFIG_MAX_FILE (16u * 1024 * 1024)
#define PIREC__CONFIG_MAX_LINE 196 /* inih's 200-byte buffer minus '\r', '\n', '\0' and slack */

#endif
