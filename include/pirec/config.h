#ifndef PIREC_CONFIG_H
#define PIREC_CONFIG_H

/* pirec's configuration: an INI file checked against one schema (config/schema.c), which also
 * produces the defaults, `pirec config defaults`, config/pirec.conf.example and docs/CONFIG.md.
 *
 * Sections are singletons ([session], [storage], [control], [eyetracker], [notes], [remux]) or
 * instances of a kind ([camera.NAME], [gpio.NAME]; NAME is letters, digits, '-' and '_').
 * Keys are addressed as (section, key), e.g. ("camera.front", "fps"), or as one dotted string
 * "camera.front.fps" where stated.
 *
 * A loaded config (struct pirec_config) is an immutable, reference-counted value: every getter is a
 * pure read, safe from any thread at any time. Consumers copy what they need. A reload builds a new
 * value; whoever holds the old one keeps a valid object until they drop their reference, so a
 * running session keeps the settings it started with and the new ones apply to the next session or
 * trial.
 *
 * Errors are negative errno values. File problems are -errno from the system; a file that does not
 * pass validation is -EINVAL with every problem listed in a struct pirec_config_errors.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "pirec/fs.h"

struct pirec_config;

/* ---- errors ---------------------------------------------------------------------------------- */

/* One problem found in a file. message is the complete line shown to users, for example
 *   "pirec.conf:12: camera.front.fps = '0': out of range, expected an integer from 1 to 240"
 *   "pirec.conf:7: camera.front.fsp = '30': unknown key, did you mean 'fps'?"
 *   "pirec.conf:14: [sesion]: unknown section, did you mean '[session]'?"
 * i.e. FILE:LINE: SECTION.KEY = 'VALUE': what was expected. line is 1-based, 0 when the problem is
 * not tied to a line (a file that cannot be read). key is the dotted key ("camera.front.fps"), the
 * bracketed section ("[camera.front]") for problems with a section line, or NULL. */
struct pirec_config_error {
  int line;
  char *key;
  char *message;
};

/* All problems of one parse, in file order. Zero-initialise before first use
 * (struct pirec_config_errors e = {0};). Functions taking one append to it, so it may collect
 * several calls; pirec_config_errors_free() releases the items and resets it to empty. */
struct pirec_config_errors {
  size_t count;
  struct pirec_config_error *items;
};

void pirec_config_errors_free(struct pirec_config_errors *errors);

/* ---- synchronous load and save (start-up, CLI, tests; they block on the file system) --------- */

/* Parses and validates text (len bytes, need not be NUL-terminated). filename is used only in
 * messages and stored as the config's path (may be NULL: "<string>"). On success returns 0 and
 * *out is a new config with one reference. On failure *out is NULL and the result is -EINVAL
 * (problems appended to errors; errors may be NULL to discard them) or -ENOMEM.
 * A key and its value together are limited to 196 bytes (inih's line buffer; longer is an error
 * reported with its line number; comments and blanks do not count); ';' after
 * whitespace starts an inline comment, '#' or ';' at line start a whole-line comment; leading
 * whitespace is ignored (there are no continuation lines). */
int pirec_config_parse(const char *text, size_t len, const char *filename, struct pirec_config **out,
                       struct pirec_config_errors *errors);

/* Reads path (at most 16 MiB) and parses it as above. A file that cannot be read returns its
 * -errno and appends one error "cannot read 'PATH': REASON" (line 0). */
int pirec_config_load(const char *path, struct pirec_config **out, struct pirec_config_errors *errors);

/* A config holding only defaults and no instance sections, as if parsed from an empty file. */
int pirec_config_new_defaults(struct pirec_config **out);

/* Writes cfg as canonical INI text (every singleton section and every instance in cfg, every key,
 * defaults included, no comments) to path atomically through pirec_fs_write_atomic (mode 0644),
 * under the same lock as pirec_config_set(). Use this for generated files; to change a user's file
 * keeping its comments use pirec_config_set(). Returns 0 or -errno. */
int pirec_config_save(const struct pirec_config *cfg, const char *path);

/* Returns the canonical text written by pirec_config_save() (malloc'd, NUL-terminated; caller
 * frees), or NULL when out of memory. */
char *pirec_config_format(const struct pirec_config *cfg);

/* The commented template with every key at its default (what `pirec config defaults` prints and
 * config/pirec.conf.example holds), and docs/CONFIG.md's key reference as Markdown.
 * malloc'd; caller frees; NULL when out of memory. */
char *pirec_config_defaults_text(void);
char *pirec_config_reference_markdown(void);

/* ---- the value: reference counting and typed getters ------------------------------------------ */

/* Takes another reference; returns cfg. Thread-safe. */
struct pirec_config *pirec_config_ref(struct pirec_config *cfg);
/* Drops a reference and frees the config with the last one. NULL is a no-op. Thread-safe. */
void pirec_config_free(struct pirec_config *cfg);

/* The file name given at parse/load time ("<string>" when none). Lives as long as cfg. */
const char *pirec_config_path(const struct pirec_config *cfg);

/* The exact bytes the config was parsed from (NUL-terminated, *len set when len != NULL), e.g. for
 * the config snapshot in session.json. Lives as long as cfg. */
const char *pirec_config_source(const struct pirec_config *cfg, size_t *len);

/* Instances of a kind ("camera", "gpio") in file order. pirec_config_instance() returns the full
 * section name ("camera.front"; the NAME part starts at strlen(kind) + 1), or NULL when index is
 * past the end. The string lives as long as cfg. */
size_t pirec_config_instance_count(const struct pirec_config *cfg, const char *kind);
const char *pirec_config_instance(const struct pirec_config *cfg, const char *kind, size_t index);

/* True when the file had this section ("eyetracker", "camera.front"). Singleton sections not in the
 * file still answer every getter with defaults. */
bool pirec_config_has_section(const struct pirec_config *cfg, const char *section);

/* Typed getters. section is a singleton name or "KIND.NAME"; an instance that is not in the file
 * answers with the schema defaults. The value is the file's, else the default.
 *   bool     : pirec_config_get_bool
 *   integer  : pirec_config_get_int                (within the key's range)
 *   duration : pirec_config_get_duration           (nanoseconds)
 *   size     : pirec_config_get_size               (bytes)
 *   string, path, enum : pirec_config_get_string   (never NULL; "" when empty; an enum gives one
 *                                                   of its listed words; lives as long as cfg)
 * Asking for a key the schema does not have, or with the wrong type, is a programming error that
 * the library neither prints nor aborts on: the getter answers the type's zero value (false, 0,
 * ""), so a caller never handles a failure. test-config checks that every literal key the product
 * code asks for is in the schema with the getter's type, which keeps that answer out of a release. */
bool pirec_config_get_bool(const struct pirec_config *cfg, const char *section, const char *key);
int64_t pirec_config_get_int(const struct pirec_config *cfg, const char *section, const char *key);
int64_t pirec_config_get_duration(const struct pirec_config *cfg, const char *section, const char *key);
uint64_t pirec_config_get_size(const struct pirec_config *cfg, const char *section, const char *key);
const char *pirec_config_get_string(const struct pirec_config *cfg, const char *section, const char *key);

/* True when the file set this key explicitly (false for defaults, and for a key the schema lacks). */
bool pirec_config_is_set(const struct pirec_config *cfg, const char *section, const char *key);

/* Looks up a dotted key ("camera.front.fps") and returns its value as canonical text (durations
 * and sizes in the largest exact unit: "10s", "64MiB"; bools "true"/"false") in *out (malloc'd,
 * caller frees). Returns 0, -ENOENT when the schema has no such key (and *out = NULL), -ENOMEM. */
int pirec_config_get_text(const struct pirec_config *cfg, const char *dotted_key, char **out);

/* Helpers for the string-typed values the schema validates: "WxH" sizes (camera.*.size). Return 0
 * or -EINVAL. */
int pirec_config_parse_wxh(const char *text, int *width, int *height);

/* Value parsers used by the schema, exposed for consumers with their own options (e.g. the CLI's
 * --duration). Return 0 or -EINVAL (-ERANGE on overflow). Durations take ns, us, ms, s, min, h
 * (a bare number is refused, "0" excepted); sizes take B, KiB, MiB, GiB (binary) and kB, MB, GB
 * (decimal); a bare number is bytes. Fractions are allowed ("1.5s", "0.5MiB") when the result is a
 * whole number of ns or bytes. */
int pirec_config_parse_duration(const char *text, int64_t *ns);
int pirec_config_parse_size(const char *text, uint64_t *bytes);

/* ---- safe edit -------------------------------------------------------------------------------- */

/* One assignment: key is dotted ("camera.front.fps"), value is the text to write. */
struct pirec_config_assignment {
  const char *key;
  const char *value;
};

/* Sets keys in the file at path, keeping every other byte: order, comments, blank lines and inline
 * comments stay. An existing key has its value replaced in place (its inline comment kept); a new
 * key goes at the end of its section (after the section's last key); a new section goes at the end
 * of the file. A missing file is created.
 *
 * Each value is checked against the schema first; then, under an exclusive flock(2) on the file's
 * directory (the file itself is replaced by each write, so its inode cannot carry the lock), the
 * file is read, edited, the result is parsed and validated as a whole, and written with
 * pirec_fs_write_atomic keeping the file's permissions. Two processes setting different keys at the
 * same time therefore both land, and readers only ever see a complete file.
 * Nothing is written when any check fails: returns -EINVAL with the problems in errors (may be
 * NULL), or another -errno for file problems (message in errors too). Blocks; never call on a loop
 * thread (use pirec_config_set_async). */
int pirec_config_set(const char *path, const struct pirec_config_assignment *assignments, size_t count,
                     struct pirec_config_errors *errors);

/* The text edit alone, no file access: returns the edited copy of text in *out (malloc'd, *out_len
 * bytes, NUL-terminated) or -EINVAL with errors when a key is unknown or a value invalid. The
 * result is not validated as a whole. filename is used in messages only. */
int pirec_config_edit_text(const char *text, size_t len, const char *filename,
                           const struct pirec_config_assignment *assignments, size_t count, char **out,
                           size_t *out_len, struct pirec_config_errors *errors);

/* ---- asynchronous load, reload, save and set on a libuv loop --------------------------------- */

struct pirec_config_req;
typedef void (*pirec_config_cb)(struct pirec_config_req *req);

/* A request owned by the caller, valid until its callback has run; call pirec_config_req_cleanup()
 * after the callback (in it is fine). File I/O goes through io/fs in libuv's threadpool, parsing
 * and editing also run in the threadpool; the loop thread only starts the steps and runs cb. The
 * callback runs on the loop thread, exactly once, unless the starting call returns an error (then
 * it never runs). Starting an operation resets every field but data; a request may be reused once
 * its callback has run and it has been cleaned up. Set operations may wait in the threadpool for
 * another process's edit lock (milliseconds: the lock covers one read, edit and atomic write). */
struct pirec_config_req {
  void *data;                        /* caller's pointer, untouched */
  int result;                        /* 0, -EINVAL (see errors), or -errno */
  struct pirec_config *config;       /* load/reload: the new config on success. The request owns
                                        this reference: take it by copying the pointer and setting
                                        req->config = NULL, or cleanup frees it. */
  bool changed;                      /* reload: false when the file's bytes equal the current
                                        config's source (config is still set) */
  struct pirec_config_errors errors; /* every problem, when result != 0 */
  uint64_t loop_ns;                  /* CPU time the loop thread spent inside this request's own
                                        steps (start call and internal callbacks, excluding cb),
                                        for the < 1 ms per callback budget */
  uint64_t loop_max_ns;              /* CPU time of the longest single step */
  uint64_t loop_max_wall_ns;         /* wall time of the longest step (includes preemption) */
  /* private */
  uv_loop_t *loop;
  uv_work_t work;
  struct pirec_fs_req fs;
  pirec_config_cb cb;
  int op;
  char *path;
  char *text;
  size_t text_len;
  struct pirec_config *current;
  struct pirec_config_assignment *assignments;
  size_t assignment_count;
};

/* Loads path asynchronously. Returns 0 or -errno (cb not called); -ENOMEM/-EINVAL for bad args. */
int pirec_config_load_async(uv_loop_t *loop, struct pirec_config_req *req, const char *path,
                            pirec_config_cb cb);

/* Reload: loads current's path again. On success req->config is the new value (changed tells if the
 * bytes differ); on failure req->errors lists the problems and the caller keeps using current,
 * which this call does not modify (it holds its own reference until cleanup). The caller decides when the
 * new value takes effect; pirec applies it from the next session or trial, never mid-recording. */
int pirec_config_reload_async(uv_loop_t *loop, struct pirec_config_req *req, struct pirec_config *current,
                              pirec_config_cb cb);

/* pirec_config_save() in the threadpool. The request holds its own reference to cfg until cleanup,
 * so the caller may drop its reference at once. */
int pirec_config_save_async(uv_loop_t *loop, struct pirec_config_req *req, const struct pirec_config *cfg,
                            const char *path, pirec_config_cb cb);

/* pirec_config_set() in the threadpool (flock, read, edit, validate, atomic write). Assignments are
 * copied before the call returns. */
int pirec_config_set_async(uv_loop_t *loop, struct pirec_config_req *req, const char *path,
                           const struct pirec_config_assignment *assignments, size_t count,
                           pirec_config_cb cb);

/* Frees errors, the config reference the request still holds, and private buffers. */
void pirec_config_req_cleanup(struct pirec_config_req *req);

/* ---- CLI -------------------------------------------------------------------------------------- */

/* `pirec config ...`: argv[0] is "config". Subcommands:
 *   check FILE            validate; prints every problem to stderr
 *   get FILE KEY          prints the value of a dotted key (defaults included)
 *   set FILE KEY VALUE... sets one or more KEY VALUE pairs (pirec_config_set)
 *   defaults              prints the commented template with every key
 *   reference             prints docs/CONFIG.md's key reference (Markdown)
 * Returns the process exit status: 0 ok, 64 usage (EX_USAGE), 65 bad data (EX_DATAERR),
 * 66 cannot open input (EX_NOINPUT), 74 I/O error (EX_IOERR). */
int pirec_config_main(int argc, char **argv);

#endif
