/* Parsing (through inih), validation, the immutable value and its getters. */

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "pirec/error.h"

/* ---- arena: a config is freed with a handful of free() calls however many sections it has ---- */

struct pirec__arena_chunk {
  struct pirec__arena_chunk *next;
  size_t used, cap;
  max_align_t data[];
};

void *pirec__arena_alloc(struct pirec__arena *a, size_t size)
{
  size = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
  struct pirec__arena_chunk *c = a->head;
  if (!c || c->cap - c->used < size) {
    size_t cap = c ? c->cap * 2 : 4096;
    if (cap > 1024 * 1024)
      cap = 1024 * 1024;
    if (cap < size)
      cap = size;
    c = malloc(sizeof(*c) + cap);
    if (!c)
      return NULL;
    c->used = 0;
    c->cap = cap;
    c->next = a->head;
    a->head = c;
  }
  void *p = (char *)c->data + c->used;
  c->used += size;
  return p;
}

char *pirec__arena_strndup(struct pirec__arena *a, const char *s, size_t n)
{
  char *p = pirec__arena_alloc(a, n + 1);
  if (p) {
    memcpy(p, s, n);
    p[n] = '\0';
  }
  return p;
}

void pirec__arena_free(struct pirec__arena *a)
{
  while (a->head) {
    struct pirec__arena_chunk *next = a->head->next;
    free(a->head);
    a->head = next;
  }
}

/* ---- line classification (mirrors inih's rules so the editor and the parser agree) ------------- */

static bool is_space(char c)
{
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* inih: scan until one of chars, or ';' right after whitespace (an inline comment). */
static size_t find_chars_or_comment(const char *s, size_t i, size_t end, const char *chars)
{
  bool was_space = false;
  for (; i < end; i++) {
    if (chars && strchr(chars, s[i]) && s[i])
      return i;
    if (was_space && s[i] == ';')
      return i;
    was_space = is_space(s[i]);
  }
  return end;
}

void pirec__config_classify(const char *line, size_t len, struct pirec__line *out)
{
  memset(out, 0, sizeof(*out));
  size_t i = 0, end = len;
  while (i < end && is_space(line[i]))
    i++;
  while (end > i && is_space(line[end - 1]))
    end--;
  if (i == end) {
    out->kind = PIREC__LINE_BLANK;
    return;
  }
  if (line[i] == ';' || line[i] == '#') {
    out->kind = PIREC__LINE_COMMENT;
    return;
  }
  if (line[i] == '[') {
    size_t j = find_chars_or_comment(line, i + 1, end, "]");
    if (j < end && line[j] == ']') {
      out->kind = PIREC__LINE_SECTION;
      out->name_start = i + 1;
      out->name_end = j;
    } else {
      out->kind = PIREC__LINE_BAD;
    }
    return;
  }
  size_t j = find_chars_or_comment(line, i, end, "=:");
  if (j >= end || (line[j] != '=' && line[j] != ':')) {
    out->kind = PIREC__LINE_BAD;
    return;
  }
  out->kind = PIREC__LINE_KEY;
  out->sep = j;
  out->name_start = i;
  size_t ne = j;
  while (ne > i && is_space(line[ne - 1]))
    ne--;
  out->name_end = ne;
  size_t ve = find_chars_or_comment(line, j + 1, end, NULL);
  size_t vs = j + 1;
  while (vs < ve && is_space(line[vs]))
    vs++;
  while (ve > vs && is_space(line[ve - 1]))
    ve--;
  if (vs == ve)
    vs = ve = j + 1;
  out->value_start = vs;
  out->value_end = ve;
}

/* ---- parsing ----------------------------------------------------------------------------------- */

struct ctx {
  struct pirec__config_parse p;
  const char *text;
  size_t len, pos;
  int line;
  long cur;   /* index of the current section, -1 none */
  bool skip;  /* inside an unknown or invalid section: its keys are not reported again */
  size_t cap; /* capacity of cfg->sections */
};

static uint32_t name_hash(const char *s)
{
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

/* Sections are found by name through a hash index, so a file with thousands of instances parses in
 * linear time and getters stay O(1). */
static struct pirec__config_section *find_section(const struct pirec_config *cfg, const char *name)
{
  if (!cfg->index_cap)
    return NULL;
  size_t mask = cfg->index_cap - 1;
  for (size_t i = name_hash(name) & mask;; i = (i + 1) & mask) {
    uint32_t slot = cfg->index[i];
    if (!slot)
      return NULL;
    if (strcmp(cfg->sections[slot - 1].name, name) == 0)
      return &cfg->sections[slot - 1];
  }
}

static void index_put(struct pirec_config *cfg, size_t pos)
{
  size_t mask = cfg->index_cap - 1;
  size_t i = name_hash(cfg->sections[pos].name) & mask;
  while (cfg->index[i])
    i = (i + 1) & mask;
  cfg->index[i] = (uint32_t)(pos + 1);
}

/* Makes room for one more section in the index. */
static int index_grow(struct pirec_config *cfg)
{
  if ((cfg->section_count + 1) * 2 <= cfg->index_cap)
    return 0;
  size_t cap = cfg->index_cap ? cfg->index_cap * 2 : 32;
  uint32_t *idx = calloc(cap, sizeof(*idx));
  if (!idx)
    return -ENOMEM;
  free(cfg->index);
  cfg->index = idx;
  cfg->index_cap = cap;
  for (size_t i = 0; i < cfg->section_count; i++)
    index_put(cfg, i);
  return 0;
}

static size_t kind_index(const struct pirec__config_kind *kind)
{
  return (size_t)(kind - pirec__config_kinds);
}

static int init_defaults(struct pirec_config *cfg)
{
  cfg->defaults = pirec__arena_alloc(&cfg->arena, pirec__config_kind_count * sizeof(*cfg->defaults));
  if (!cfg->defaults)
    return -ENOMEM;
  for (size_t k = 0; k < pirec__config_kind_count; k++) {
    const struct pirec__config_kind *kind = &pirec__config_kinds[k];
    struct pirec__config_section *s = &cfg->defaults[k];
    memset(s, 0, sizeof(*s));
    s->name = kind->name;
    s->kind = kind;
    s->values = pirec__arena_alloc(&cfg->arena, kind->key_count * sizeof(*s->values));
    if (!s->values)
      return -ENOMEM;
    for (size_t i = 0; i < kind->key_count; i++) {
      const struct pirec__config_key *key = &kind->keys[i];
      struct pirec__config_value *v = &s->values[i];
      const char *expected;
      memset(v, 0, sizeof(*v));
      /* test-config parses the defaults of every key, so this fails only in a broken build. */
      if (key->def && pirec__config_parse_value(key, key->def, v, &expected) != 0)
        return -EINVAL;
      if (!key->def)
        v->s = ""; /* required string keys: empty until set */
    }
  }
  return 0;
}

static struct pirec__config_section *
add_section(struct ctx *c, const char *name, const struct pirec__config_kind *kind, int line, bool present)
{
  struct pirec_config *cfg = c->p.cfg;
  if (cfg->section_count >= UINT32_MAX - 1 || index_grow(cfg) != 0)
    return NULL;
  if (cfg->section_count == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    struct pirec__config_section *s = realloc(cfg->sections, cap * sizeof(*s));
    if (!s)
      return NULL;
    cfg->sections = s;
    c->cap = cap;
  }
  struct pirec__config_section *s = &cfg->sections[cfg->section_count];
  memset(s, 0, sizeof(*s));
  s->kind = kind;
  s->line = line;
  s->present = present;
  s->name = pirec__arena_strndup(&cfg->arena, name, strlen(name));
  if (!s->name)
    return NULL;
  struct pirec__config_section *def = &cfg->defaults[kind_index(kind)];
  if (!present) {
    s->values = def->values; /* immutable: an absent section shares the defaults */
  } else {
    s->values = pirec__arena_alloc(&cfg->arena, kind->key_count * sizeof(*s->values));
    if (!s->values)
      return NULL;
    memcpy(s->values, def->values, kind->key_count * sizeof(*s->values));
  }
  index_put(cfg, cfg->section_count);
  cfg->section_count++;
  return s;
}

static void begin_section(struct ctx *c, const char *name, size_t len)
{
  c->cur = -1;
  c->skip = true;
  if (len > 49) {
    pirec__config_error(&c->p, c->line, NULL, NULL,
                        "section name '%.*s...' is too long, expected at most 49 characters", 20, name);
    return;
  }
  char nm[64], br[68];
  memcpy(nm, name, len);
  nm[len] = '\0';
  snprintf(br, sizeof(br), "[%s]", nm);
  bool bad;
  const struct pirec__config_kind *kind = pirec__config_section_kind(nm, &bad);
  if (!kind) {
    const char *dot = strchr(nm, '.');
    const char *s = pirec__config_suggest_kind(nm);
    if (s) {
      const struct pirec__config_kind *sk = pirec__config_kind_find(s, strlen(s));
      pirec__config_error(&c->p, c->line, br, NULL, "unknown section, did you mean '[%s%s%s]'?", s,
                          sk->instance ? "." : "", sk->instance ? (dot ? dot + 1 : "NAME") : "");
    } else {
      pirec__config_error(&c->p, c->line, br, NULL,
                          "unknown section, expected one of session, storage, control, "
                          "camera.NAME, eyetracker, notes, gpio.NAME, remux");
    }
    return;
  }
  if (bad) {
    if (kind->instance)
      pirec__config_error(&c->p, c->line, br, NULL,
                          "expected [%s.NAME] with NAME made of letters, digits, '-' and '_'", kind->name);
    else
      pirec__config_error(&c->p, c->line, br, NULL, "expected [%s] without a .NAME suffix", kind->name);
    return;
  }
  struct pirec__config_section *s = find_section(c->p.cfg, nm);
  if (s) {
    pirec__config_error(&c->p, c->line, br, NULL, "duplicate section, first on line %d", s->line);
    return;
  }
  s = add_section(c, nm, kind, c->line, true);
  if (!s) {
    c->p.oom = true;
    return;
  }
  c->cur = (long)(s - c->p.cfg->sections);
  c->skip = false;
}

/* inih calls the reader for each line, then the handler for that line, so c->line is the handler's
 * line number. The reader also does what inih cannot: report every malformed line (inih remembers
 * only the first), see sections without keys, and refuse lines its buffer would split. */
static char *reader(char *str, int num, void *stream)
{
  struct ctx *c = stream;
  if (c->pos >= c->len)
    return NULL;
  const char *s = c->text + c->pos;
  size_t avail = c->len - c->pos;
  const char *nl = memchr(s, '\n', avail);
  size_t n = nl ? (size_t)(nl - s) : avail;
  c->pos += n + (nl != NULL);
  c->line++;
  str[0] = '\0';
  if (c->line == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
    s += 3;
    n -= 3;
  }
  if (memchr(s, '\0', n)) {
    pirec__config_error(&c->p, c->line, NULL, NULL, "line contains a NUL byte, expected text");
    return str;
  }
  struct pirec__line l;
  pirec__config_classify(s, n, &l);
  switch (l.kind) {
  case PIREC__LINE_BLANK:
  case PIREC__LINE_COMMENT: return str;
  case PIREC__LINE_BAD: {
    /* quote the line (trimmed, at most 60 bytes) so the user sees what was not understood */
    size_t a = 0, b = n;
    while (a < b && is_space(s[a]))
      a++;
    while (b > a && is_space(s[b - 1]))
      b--;
    pirec__config_error(&c->p, c->line, NULL, NULL,
                        "'%.*s%s': syntax error, expected '[section]', 'key = value' or a comment",
                        (int)(b - a > 60 ? 60 : b - a), s + a, b - a > 60 ? "..." : "");
    return str;
  }
  case PIREC__LINE_SECTION:
    begin_section(c, s + l.name_start, l.name_end - l.name_start);
    if (c->cur >= 0)
      snprintf(str, (size_t)num, "[%s]", c->p.cfg->sections[c->cur].name);
    else
      snprintf(str, (size_t)num, "[?]");
    return str;
  case PIREC__LINE_KEY: {
    /* inih gets "key=value" without blanks or comment, so a long comment never counts against
     * its line buffer; only a key and value too long for it are refused. */
    size_t name_len = l.name_end - l.name_start, value_len = l.value_end - l.value_start;
    size_t used = name_len + 1 + value_len;
    if (used > PIREC__CONFIG_MAX_LINE || used + 4 > (size_t)num) {
      pirec__config_error(&c->p, c->line, NULL, NULL, "key and value are %zu bytes long, expected at most %d",
                          used, PIREC__CONFIG_MAX_LINE);
      return str;
    }
    if (name_len > 40) {
      pirec__config_error(&c->p, c->line, NULL, NULL, "key '%.*s...' is too long, expected a key name", 20,
                          s + l.name_start);
      return str;
    }
    memcpy(str, s + l.name_start, name_len);
    str[name_len] = '=';
    memcpy(str + name_len + 1, s + l.value_start, value_len);
    str[used] = '\0';
    return str;
  }
  }
  return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
  struct ctx *c = user;
  (void)section;
  if (c->skip)
    return 1;
  if (c->cur < 0) {
    pirec__config_error(&c->p, c->line, name, value,
                        "key outside any section, expected a [section] line before it");
    c->skip = true;
    return 1;
  }
  struct pirec__config_section *s = &c->p.cfg->sections[c->cur];
  char full[128];
  snprintf(full, sizeof(full), "%s.%s", s->name, name);
  size_t idx;
  const struct pirec__config_key *key = pirec__config_key_find(s->kind, name, &idx);
  if (!key) {
    const char *sug = pirec__config_suggest_key(s->kind, name);
    if (sug)
      pirec__config_error(&c->p, c->line, full, value, "unknown key, did you mean '%s'?", sug);
    else
      pirec__config_error(&c->p, c->line, full, value,
                          "unknown key, expected one of the keys of [%s%s] listed by `pirec config defaults`",
                          s->kind->name, s->kind->instance ? ".NAME" : "");
    return 1;
  }
  struct pirec__config_value *v = &s->values[idx];
  if (v->set) {
    pirec__config_error(&c->p, c->line, full, value, "duplicate key, first set on line %d", v->line);
    return 1;
  }
  struct pirec__config_value nv = {0};
  const char *expected;
  if (pirec__config_parse_value(key, value, &nv, &expected) != 0) {
    pirec__config_error(&c->p, c->line, full, value, "%s", expected);
    v->refused = true;
    return 1;
  }
  if (key->type == PIREC__CONFIG_STRING || key->type == PIREC__CONFIG_PATH) {
    nv.s = pirec__arena_strndup(&c->p.cfg->arena, value, strlen(value));
    if (!nv.s) {
      c->p.oom = true;
      return 1;
    }
  }
  nv.set = true;
  nv.line = c->line;
  *v = nv;
  return 1;
}

static int config_alloc(struct pirec_config **out)
{
  struct pirec_config *cfg = calloc(1, sizeof(*cfg));
  *out = NULL;
  if (!cfg)
    return -ENOMEM;
  atomic_init(&cfg->refs, 1);
  int r = init_defaults(cfg);
  if (r != 0) {
    pirec__arena_free(&cfg->arena);
    free(cfg);
    return r;
  }
  *out = cfg;
  return 0;
}

/* Cross-key checks run after the whole file is read; sorting puts their errors in file order too.
 * Stable: errors on one line keep the order they were found in. */
static void sort_errors(struct pirec_config_errors *errors, size_t first)
{
  size_t n = errors->count - first;
  struct pirec_config_error *items = errors->items + first;
  /* Insertion sort: stable, and the list is already sorted except for the few validator errors. */
  for (size_t i = 1; i < n; i++) {
    struct pirec_config_error e = items[i];
    size_t j = i;
    while (j > 0 && items[j - 1].line > e.line) {
      items[j] = items[j - 1];
      j--;
    }
    items[j] = e;
  }
}

/* Takes ownership of text (malloc'd, text[len] == '\0'). */
static int parse_owned(char *text, size_t len, const char *filename, struct pirec_config **out,
                       struct pirec_config_errors *errors)
{
  *out = NULL;
  if (!filename)
    filename = "<string>";
  struct pirec_config *cfg;
  int r = config_alloc(&cfg);
  if (r != 0) {
    free(text);
    return r;
  }
  cfg->source = text;
  cfg->source_len = len;
  cfg->path = pirec__arena_strndup(&cfg->arena, filename, strlen(filename));
  size_t first_error = errors ? errors->count : 0;
  struct ctx c = {
      .p = {.cfg = cfg, .errors = errors, .filename = filename}, .text = text, .len = len, .cur = -1};
  if (!cfg->path) {
    pirec_config_free(cfg);
    return -ENOMEM;
  }
  r = ini_parse_stream(reader, &c, handler, &c);
  if (r == -2)
    c.p.oom = true;
  else if (r > 0 && c.p.error_count == 0)
    /* The reader screens every line inih would refuse; this is a safety net. */
    pirec__config_error(&c.p, r, NULL, NULL, "syntax error");
  /* Singletons absent from the file still answer with defaults and appear in pirec_config_format. */
  for (size_t k = 0; k < pirec__config_kind_count && !c.p.oom; k++) {
    const struct pirec__config_kind *kind = &pirec__config_kinds[k];
    if (!kind->instance && !find_section(cfg, kind->name) && !add_section(&c, kind->name, kind, 0, false))
      c.p.oom = true;
  }
  for (size_t i = 0; i < cfg->section_count && !c.p.oom; i++) {
    struct pirec__config_section *s = &cfg->sections[i];
    if (s->kind->validate)
      s->kind->validate(&c.p, s);
  }
  if (c.p.oom) {
    pirec_config_free(cfg);
    return -ENOMEM;
  }
  if (errors && errors->count > first_error)
    sort_errors(errors, first_error);
  if (c.p.error_count) {
    pirec_config_free(cfg);
    return -EINVAL;
  }
  *out = cfg;
  return 0;
}

int pirec__config_parse_owned(char *text, size_t len, const char *filename, struct pirec_config **out,
                              struct pirec_config_errors *errors)
{
  return parse_owned(text, len, filename, out, errors);
}

int pirec_config_parse(const char *text, size_t len, const char *filename, struct pirec_config **out,
                       struct pirec_config_errors *errors)
{
  char *copy = malloc(len + 1);
  if (!copy) {
    *out = NULL;
    return -ENOMEM;
  }
  if (len)
    memcpy(copy, text, len);
  copy[len] = '\0';
  return parse_owned(copy, len, filename, out, errors);
}

int pirec_config_load(const char *path, struct pirec_config **out, struct pirec_config_errors *errors)
{
  struct pirec_fs_req req = {0};
  *out = NULL;
  int r = pirec_fs_read_file(NULL, &req, path, PIREC__CONFIG_MAX_FILE, NULL);
  if (r < 0) {
    if (errors) {
      char msg[1200];
      if (req.message)
        snprintf(msg, sizeof(msg), "%s", req.message);
      else
        snprintf(msg, sizeof(msg), "cannot read '%s': %s", path, pirec_strerror(r));
      if (pirec__config_errors_add(errors, 0, NULL, msg) != 0)
        r = -ENOMEM;
    }
    pirec_fs_req_cleanup(&req);
    return r;
  }
  char *text = req.contents;
  size_t len = req.size;
  req.contents = NULL;
  pirec_fs_req_cleanup(&req);
  return parse_owned(text, len, path, out, errors);
}

int pirec_config_new_defaults(struct pirec_config **out)
{
  return pirec_config_parse("", 0, NULL, out, NULL);
}

/* ---- the value --------------------------------------------------------------------------------- */

struct pirec_config *pirec_config_ref(struct pirec_config *cfg)
{
  atomic_fetch_add_explicit(&cfg->refs, 1, memory_order_relaxed);
  return cfg;
}

void pirec_config_free(struct pirec_config *cfg)
{
  if (!cfg)
    return;
  if (atomic_fetch_sub_explicit(&cfg->refs, 1, memory_order_acq_rel) != 1)
    return;
  free(cfg->sections);
  free(cfg->index);
  free(cfg->source);
  pirec__arena_free(&cfg->arena);
  free(cfg);
}

const char *pirec_config_path(const struct pirec_config *cfg)
{
  return cfg->path;
}

const char *pirec_config_source(const struct pirec_config *cfg, size_t *len)
{
  if (len)
    *len = cfg->source_len;
  return cfg->source;
}

static bool kind_is(const struct pirec__config_section *s, const char *kind)
{
  return strcmp(s->kind->name, kind) == 0;
}

size_t pirec_config_instance_count(const struct pirec_config *cfg, const char *kind)
{
  size_t n = 0;
  for (size_t i = 0; i < cfg->section_count; i++)
    if (cfg->sections[i].present && cfg->sections[i].kind->instance && kind_is(&cfg->sections[i], kind))
      n++;
  return n;
}

const char *pirec_config_instance(const struct pirec_config *cfg, const char *kind, size_t index)
{
  for (size_t i = 0; i < cfg->section_count; i++)
    if (cfg->sections[i].present && cfg->sections[i].kind->instance && kind_is(&cfg->sections[i], kind) &&
        index-- == 0)
      return cfg->sections[i].name;
  return NULL;
}

bool pirec_config_has_section(const struct pirec_config *cfg, const char *section)
{
  const struct pirec__config_section *s = find_section(cfg, section);
  return s && s->present;
}

static bool type_matches(enum pirec__config_type want, enum pirec__config_type have)
{
  if (want == PIREC__CONFIG_STRING)
    return have == PIREC__CONFIG_STRING || have == PIREC__CONFIG_PATH || have == PIREC__CONFIG_ENUM;
  return want == have;
}

/* Returns the value, or NULL when the schema has no such key (key_out NULL too). */
static const struct pirec__config_value *lookup(const struct pirec_config *cfg, const char *section,
                                                const char *name, const struct pirec__config_key **key_out)
{
  bool bad;
  *key_out = NULL;
  const struct pirec__config_kind *kind = pirec__config_section_kind(section, &bad);
  if (!kind || bad)
    return NULL;
  size_t idx;
  const struct pirec__config_key *key = pirec__config_key_find(kind, name, &idx);
  if (!key)
    return NULL;
  *key_out = key;
  const struct pirec__config_section *s = find_section(cfg, section);
  if (!s)
    s = &cfg->defaults[kind_index(kind)];
  return &s->values[idx];
}

/* The zero value answers a key the schema lacks or a getter of another type: false, 0, "". */
static const struct pirec__config_value missing = {.s = ""};

static const struct pirec__config_value *get(const struct pirec_config *cfg, const char *section,
                                             const char *name, enum pirec__config_type type)
{
  const struct pirec__config_key *key;
  const struct pirec__config_value *v = lookup(cfg, section, name, &key);
  if (!v || !type_matches(type, key->type))
    return &missing;
  return v;
}

bool pirec_config_get_bool(const struct pirec_config *cfg, const char *section, const char *key)
{
  return get(cfg, section, key, PIREC__CONFIG_BOOL)->v.b;
}

int64_t pirec_config_get_int(const struct pirec_config *cfg, const char *section, const char *key)
{
  return get(cfg, section, key, PIREC__CONFIG_INT)->v.i;
}

int64_t pirec_config_get_duration(const struct pirec_config *cfg, const char *section, const char *key)
{
  return get(cfg, section, key, PIREC__CONFIG_DURATION)->v.i;
}

uint64_t pirec_config_get_size(const struct pirec_config *cfg, const char *section, const char *key)
{
  return get(cfg, section, key, PIREC__CONFIG_SIZE)->v.u;
}

const char *pirec_config_get_string(const struct pirec_config *cfg, const char *section, const char *key)
{
  const char *s = get(cfg, section, key, PIREC__CONFIG_STRING)->s;
  return s ? s : "";
}

bool pirec_config_is_set(const struct pirec_config *cfg, const char *section, const char *name)
{
  const struct pirec__config_key *key;
  const struct pirec__config_value *v = lookup(cfg, section, name, &key);
  return v && v->set;
}

int pirec_config_get_text(const struct pirec_config *cfg, const char *dotted_key, char **out)
{
  char section[128];
  const char *name;
  *out = NULL;
  if (pirec__config_split_key(dotted_key, section, sizeof(section), &name) != 0)
    return -ENOENT;
  const struct pirec__config_key *key;
  const struct pirec__config_value *v = lookup(cfg, section, name, &key);
  if (!v)
    return -ENOENT;
  char buf[64];
  if (key->type == PIREC__CONFIG_STRING || key->type == PIREC__CONFIG_PATH || key->type == PIREC__CONFIG_ENUM)
    *out = strdup(v->s ? v->s : "");
  else {
    pirec__config_value_text(key, v, buf, sizeof(buf));
    *out = strdup(buf);
  }
  return *out ? 0 : -ENOMEM;
}

char *pirec_config_format(const struct pirec_config *cfg)
{
  size_t cap = 4096, len = 0;
  char *out = malloc(cap);
  if (!out)
    return NULL;
  out[0] = '\0';
  for (size_t i = 0; i < cfg->section_count; i++) {
    const struct pirec__config_section *s = &cfg->sections[i];
    for (size_t k = 0; k <= s->kind->key_count; k++) {
      char line[512];
      int n;
      if (k == 0) {
        n = snprintf(line, sizeof(line), "%s[%s]\n", i ? "\n" : "", s->name);
      } else {
        const struct pirec__config_key *key = &s->kind->keys[k - 1];
        const struct pirec__config_value *v = &s->values[k - 1];
        if (!key->def && !v->set)
          continue;
        char val[256];
        pirec__config_value_text(key, v, val, sizeof(val));
        n = snprintf(line, sizeof(line), "%s =%s%s\n", key->name, *val ? " " : "", val);
      }
      if (n < 0)
        continue;
      if (len + (size_t)n + 1 > cap) {
        while (len + (size_t)n + 1 > cap)
          cap *= 2;
        char *p = realloc(out, cap);
        if (!p) {
          free(out);
          return NULL;
        }
        out = p;
      }
      memcpy(out + len, line, (size_t)n + 1);
      len += (size_t)n;
    }
  }
  return out;
}
