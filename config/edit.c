/* Safe edits: change values in a user's file byte-exactly, under a lock, written atomically. */

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "pirec/error.h"

struct buf {
  char *p;
  size_t len;
};

/* Replaces [at, at + del) of b with ins. */
static int buf_splice(struct buf *b, size_t at, size_t del, const char *ins, size_t ins_len)
{
  size_t len = b->len - del + ins_len;
  char *p = malloc(len + 1);
  if (!p)
    return -ENOMEM;
  memcpy(p, b->p, at);
  memcpy(p + at, ins, ins_len);
  memcpy(p + at + ins_len, b->p + at + del, b->len - at - del);
  p[len] = '\0';
  free(b->p);
  b->p = p;
  b->len = len;
  return 0;
}

static void add_error(struct pirec_config_errors *errors, const char *filename, const char *key,
                      const char *value, const char *what)
{
  if (!errors)
    return;
  char msg[1024];
  snprintf(msg, sizeof(msg), "%s: %s = '%s': %s", filename, key, value, what);
  pirec__config_errors_add(errors, 0, key, msg);
}

/* Checks one assignment against the schema without touching any file. Returns 0 or -EINVAL. */
static int check_assignment(const struct pirec_config_assignment *a, const char *filename,
                            struct pirec_config_errors *errors)
{
  char section[128];
  const char *name;
  if (!a->key || !a->value)
    return -EINVAL;
  if (pirec__config_split_key(a->key, section, sizeof(section), &name) != 0 || strlen(section) > 49) {
    add_error(errors, filename, a->key, a->value, "unknown key, expected SECTION.KEY such as session.label");
    return -EINVAL;
  }
  bool bad;
  const struct pirec__config_kind *kind = pirec__config_section_kind(section, &bad);
  if (!kind) {
    const char *s = pirec__config_suggest_kind(section);
    char what[256];
    if (s)
      snprintf(what, sizeof(what), "unknown section, did you mean '%s'?", s);
    else
      snprintf(what, sizeof(what), "unknown section '%s'", section);
    add_error(errors, filename, a->key, a->value, what);
    return -EINVAL;
  }
  if (bad) {
    char what[256];
    snprintf(what, sizeof(what),
             kind->instance ? "expected %s.NAME.KEY with NAME of letters, digits, '-' and '_'"
                            : "expected %s.KEY",
             kind->name);
    add_error(errors, filename, a->key, a->value, what);
    return -EINVAL;
  }
  const struct pirec__config_key *key = pirec__config_key_find(kind, name, NULL);
  if (!key) {
    const char *s = pirec__config_suggest_key(kind, name);
    char what[256];
    if (s)
      snprintf(what, sizeof(what), "unknown key, did you mean '%s.%s'?", section, s);
    else
      snprintf(what, sizeof(what), "unknown key in [%s]", section);
    add_error(errors, filename, a->key, a->value, what);
    return -EINVAL;
  }
  struct pirec__config_value v = {0};
  const char *expected;
  if (pirec__config_parse_value(key, a->value, &v, &expected) != 0) {
    add_error(errors, filename, a->key, a->value, expected);
    return -EINVAL;
  }
  /* The value must read back as itself: INI trims surrounding blanks and cuts at " ;". */
  size_t n = strlen(a->value);
  bool comment = false;
  for (size_t i = 1; i < n; i++)
    if (a->value[i] == ';' && (a->value[i - 1] == ' ' || a->value[i - 1] == '\t'))
      comment = true;
  if (comment || (n && (a->value[0] == ' ' || a->value[0] == '\t' || a->value[n - 1] == ' ' ||
                        a->value[n - 1] == '\t'))) {
    add_error(
        errors, filename, a->key, a->value,
        "expected a value without leading or trailing blanks and without ' ;' (which starts a comment)");
    return -EINVAL;
  }
  return 0;
}

/* Checks every assignment, reporting each bad one. Returns 0 or -EINVAL. */
static int check_assignments(const struct pirec_config_assignment *assignments, size_t count,
                             const char *filename, struct pirec_config_errors *errors)
{
  int bad = 0;
  for (size_t i = 0; i < count; i++)
    if (check_assignment(&assignments[i], filename, errors) != 0)
      bad = -EINVAL;
  return bad;
}

/* Where an assignment goes: the key's line when the target section has it, else after the
 * section's last key line (or its header), else nowhere yet (a new section at the end). */
struct spot {
  bool found_section, found_key;
  size_t line_at;       /* found_key: offset of the key's line */
  struct pirec__line l; /* found_key: the key's line, offsets relative to line_at */
  size_t insert_at;     /* found_section: where a new key line goes */
};

/* Classifies the line at pos (its first when lineno is 0, so a UTF-8 BOM is skipped) into *l with
 * offsets from pos; returns the line's length including its newline. */
static size_t read_line(const struct buf *b, size_t pos, int lineno, struct pirec__line *l)
{
  const char *s = b->p + pos;
  const char *nl = memchr(s, '\n', b->len - pos);
  size_t full = nl ? (size_t)(nl - s) + 1 : b->len - pos;
  size_t n = nl ? (size_t)(nl - s) : full;
  if (n && s[n - 1] == '\r')
    n--;
  size_t skip = 0;
  if (lineno == 0 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0)
    skip = 3;
  pirec__config_classify(s + skip, n - skip, l);
  l->name_start += skip;
  l->name_end += skip;
  l->value_start += skip;
  l->value_end += skip;
  l->sep += skip;
  return full;
}

static bool name_is(const char *s, const struct pirec__line *l, const char *name)
{
  size_t len = l->name_end - l->name_start;
  return strlen(name) == len && memcmp(s + l->name_start, name, len) == 0;
}

static void find_spot(const struct buf *b, const char *section, const char *name, struct spot *out)
{
  bool in_section = false;
  memset(out, 0, sizeof(*out));
  int lineno = 0;
  for (size_t pos = 0, full; pos < b->len; pos += full, lineno++) {
    struct pirec__line l;
    full = read_line(b, pos, lineno, &l);
    if (l.kind == PIREC__LINE_SECTION) {
      /* Only the first section of that name is edited; a duplicate fails validation anyway. */
      in_section = !out->found_section && name_is(b->p + pos, &l, section);
      if (in_section) {
        out->found_section = true;
        out->insert_at = pos + full;
      }
    } else if (l.kind == PIREC__LINE_KEY && in_section) {
      if (name_is(b->p + pos, &l, name)) {
        out->found_key = true;
        out->line_at = pos;
        out->l = l;
        return;
      }
      out->insert_at = pos + full;
    }
  }
}

/* Replaces the value on the key's line, leaving everything else on it as it was. */
static int replace_value(struct buf *b, const struct spot *at, const char *value)
{
  const struct pirec__line *l = &at->l;
  size_t start = at->line_at + l->value_start, del = l->value_end - l->value_start;
  if (!(l->value_start == l->value_end && l->value_start == l->sep + 1 && *value))
    return buf_splice(b, start, del, value, strlen(value));
  /* empty value right after '=': keep one blank between '=' and the new value */
  char *tmp = malloc(strlen(value) + 2);
  if (!tmp)
    return -ENOMEM;
  tmp[0] = ' ';
  strcpy(tmp + 1, value);
  int r = buf_splice(b, start, del, tmp, strlen(tmp));
  free(tmp);
  return r;
}

/* Adds a key line to the section, or the section with the key at the end of the file. */
static int insert_key(struct buf *b, const struct spot *at, const char *section, const char *name,
                      const char *value)
{
  /* New lines use the file's line ending, judged by its first line. */
  const char *eol = "\n";
  const char *first_nl = memchr(b->p, '\n', b->len);
  if (first_nl && first_nl > b->p && first_nl[-1] == '\r')
    eol = "\r\n";
  char *ins;
  int n;
  size_t insert_at = at->insert_at;
  bool ends_nl = b->len == 0 || b->p[b->len - 1] == '\n';
  if (at->found_section) {
    /* insert_at is just after a newline unless that line is the last one without a newline */
    bool need_nl = insert_at == b->len && !ends_nl;
    n = asprintf(&ins, "%s%s = %s%s", need_nl ? eol : "", name, value, eol);
  } else {
    insert_at = b->len;
    n = asprintf(&ins, "%s%s[%s]%s%s = %s%s", ends_nl ? "" : eol, b->len ? eol : "", section, eol, name,
                 value, eol);
  }
  if (n < 0)
    return -ENOMEM;
  int r = buf_splice(b, insert_at, 0, ins, (size_t)n);
  free(ins);
  return r;
}

/* Applies one checked assignment to b. */
static int apply(struct buf *b, const char *section, const char *name, const char *value)
{
  struct spot at;
  find_spot(b, section, name, &at);
  return at.found_key ? replace_value(b, &at, value) : insert_key(b, &at, section, name, value);
}

int pirec_config_edit_text(const char *text, size_t len, const char *filename,
                           const struct pirec_config_assignment *assignments, size_t count, char **out,
                           size_t *out_len, struct pirec_config_errors *errors)
{
  *out = NULL;
  if (out_len)
    *out_len = 0;
  if (!filename)
    filename = "<string>";
  int bad = check_assignments(assignments, count, filename, errors);
  if (bad)
    return bad;
  struct buf b = {malloc(len + 1), len};
  if (!b.p)
    return -ENOMEM;
  memcpy(b.p, text, len);
  b.p[len] = '\0';
  for (size_t i = 0; i < count; i++) {
    char section[128];
    const char *name;
    pirec__config_split_key(assignments[i].key, section, sizeof(section), &name);
    int r = apply(&b, section, name, assignments[i].value);
    if (r) {
      free(b.p);
      return r;
    }
  }
  *out = b.p;
  if (out_len)
    *out_len = b.len;
  return 0;
}

/* flock(2) on the directory, not on the file: the file's inode is replaced by every atomic write,
 * so a lock on it would not exclude a process that opened the old inode; the directory stays. */
int pirec__config_lock(const char *path, struct pirec_config_errors *errors)
{
  char *copy = strdup(path);
  if (!copy)
    return -ENOMEM;
  const char *dir = dirname(copy);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int err = fd < 0 ? -errno : 0;
  while (fd >= 0 && flock(fd, LOCK_EX) != 0) {
    if (errno == EINTR)
      continue;
    err = -errno;
    close(fd);
    fd = -1;
  }
  if (fd < 0 && errors) {
    char msg[1200];
    snprintf(msg, sizeof(msg), "cannot lock directory '%s': %s", dir, pirec_strerror(err));
    pirec__config_errors_add(errors, 0, NULL, msg);
  }
  free(copy);
  return fd < 0 ? err : fd;
}

/* Edits go to the file a symlink points at: renaming over the link would replace the link itself
 * with a regular file and leave the real config unchanged. A missing file is used as given. */
static char *target_path(const char *path)
{
  char *real = realpath(path, NULL);
  return real ? real : strdup(path);
}

static void fs_error(struct pirec_config_errors *errors, struct pirec_fs_req *req, const char *what,
                     const char *path, int err)
{
  if (!errors)
    return;
  char msg[1200];
  if (req->message)
    snprintf(msg, sizeof(msg), "%s", req->message);
  else
    snprintf(msg, sizeof(msg), "cannot %s '%s': %s", what, path, pirec_strerror(err));
  pirec__config_errors_add(errors, 0, NULL, msg);
}

int pirec_config_set(const char *path, const struct pirec_config_assignment *assignments, size_t count,
                     struct pirec_config_errors *errors)
{
  int bad = check_assignments(assignments, count, path, errors);
  if (bad)
    return bad;
  const char *shown = path; /* messages name the path the user gave */
  char *target = target_path(path);
  if (!target)
    return -ENOMEM;
  path = target;
  int lock = pirec__config_lock(path, errors);
  if (lock < 0) {
    free(target);
    return lock;
  }
  int r;
  char *edited = NULL;
  size_t edited_len = 0;
  mode_t mode = 0644;
  struct stat st;
  bool exists = stat(path, &st) == 0;
  if (exists)
    mode = st.st_mode & 07777;
  struct pirec_fs_req req = {0};
  r = pirec_fs_read_file(NULL, &req, path, PIREC__CONFIG_MAX_FILE, NULL);
  if (r == -ENOENT) {
    r = 0; /* a missing file is created */
  } else if (r < 0) {
    fs_error(errors, &req, "read", path, r);
    goto out;
  }
  r = pirec_config_edit_text(req.contents ? req.contents : "", req.contents ? req.size : 0, shown,
                             assignments, count, &edited, &edited_len, errors);
  if (r)
    goto out;
  /* Validate the whole result: never write a file that `pirec config check` would refuse. */
  char *copy = malloc(edited_len + 1);
  if (!copy) {
    r = -ENOMEM;
    goto out;
  }
  memcpy(copy, edited, edited_len + 1);
  struct pirec_config *cfg;
  r = pirec__config_parse_owned(copy, edited_len, shown, &cfg, errors);
  pirec_config_free(cfg);
  if (r)
    goto out;
  pirec_fs_req_cleanup(&req);
  r = pirec_fs_write_atomic(NULL, &req, path, edited, edited_len, mode, NULL);
  if (r < 0) {
    fs_error(errors, &req, "write", path, r);
  } else {
    r = 0;
    /* The new inode belongs to whoever wrote it; give it back (works when root edits a user's
     * file; otherwise there is nothing to give back). */
    if (exists && (st.st_uid != geteuid() || st.st_gid != getegid()) &&
        chown(path, st.st_uid, st.st_gid) != 0) {
      /* not fatal: the content is written; the owner is what an editor run by this user would leave */
    }
  }
out:
  pirec_fs_req_cleanup(&req);
  free(edited);
  close(lock); /* releases the flock */
  free(target);
  return r;
}

int pirec__config_save_locked(const struct pirec_config *cfg, const char *path,
                              struct pirec_config_errors *errors)
{
  char *text = pirec_config_format(cfg);
  char *target = target_path(path);
  if (!text || !target) {
    free(text);
    free(target);
    return -ENOMEM;
  }
  path = target;
  int lock = pirec__config_lock(path, errors);
  if (lock < 0) {
    free(text);
    free(target);
    return lock;
  }
  struct pirec_fs_req req = {0};
  int r = pirec_fs_write_atomic(NULL, &req, path, text, strlen(text), 0644, NULL);
  if (r < 0)
    fs_error(errors, &req, "write", path, r);
  pirec_fs_req_cleanup(&req);
  close(lock);
  free(text);
  free(target);
  return r < 0 ? r : 0;
}

int pirec_config_save(const struct pirec_config *cfg, const char *path)
{
  return pirec__config_save_locked(cfg, path, NULL);
}
