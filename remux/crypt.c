/* pirec-remux --key: an encrypted session's video remuxed without clear text on disk. The video and
 * its timing file are decrypted (every chunk verified) into anonymous memory files (memfd_create),
 * which the engine reads through /proc/self/fd like any file; its output goes to a third one and is
 * written encrypted under the session key next to the input, as `pirec record` would have. */

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pirec/crypt.h"
#include "pirec/error.h"
#include "pirec/remux.h"
#include "pirec/storage.h"
#include "remux-internal.h"

#define CHUNK (1u << 20)

struct enc {
  char session[4096]; /* the session directory: where session.key is */
  struct pirec_crypt_key *key;
  int fd[3]; /* video, timing, output: memory */
  char path[3][64];
};

/* The session directory of path: the nearest directory above it holding session.key. */
static int find_session(const char *path, char *out, size_t cap)
{
  snprintf(out, cap, "%s", path);
  for (int up = 0; up < 4; up++) {
    char *slash = strrchr(out, '/');
    if (slash == NULL)
      snprintf(out, cap, ".");
    else if (slash == out)
      slash[1] = '\0';
    else
      *slash = '\0';
    char probe[4200];
    struct stat st;
    snprintf(probe, sizeof probe, "%s/%s", out, PIREC_CRYPT_KEY_FILE);
    if (stat(probe, &st) == 0)
      return 0;
    if (slash == NULL || slash == out)
      break;
  }
  return -ENOENT;
}

static int seterr(struct pirec_remux_result *res, int rc, const char *fmt, const char *a, const char *b)
{
  if (snprintf(res->error, sizeof res->error, fmt, a, b) < 0)
    res->error[0] = '\0';
  return rc;
}

/* Decrypts file (named inside the session) into memory file i. A file cut short by a crash gives
 * its verified chunks (the engine then recovers what they hold, as for a clear file cut short);
 * damage or a foreign file fails. */
static int decrypt_into(struct enc *e, int i, const char *file, struct pirec_remux_result *res)
{
  char why[900];
  uint64_t written;
  int in = open(file, O_RDONLY | O_CLOEXEC);
  if (in < 0)
    return seterr(res, -errno, "cannot open '%s': %s", file, strerror(errno));
  int rc = pirec_storage_decrypt_fd(e->key, pirec_crypt_name(e->session, file), in, e->fd[i], &written, why,
                                    sizeof why);
  close(in);
  if (rc == -ENODATA)
    rc = 0;
  if (rc < 0)
    return seterr(res, rc, "%s%s", why, "");
  return 0;
}

/* Encrypts memory file fd into path (through path.part, renamed once synced). */
static int encrypt_out(struct enc *e, int fd, const char *path, struct pirec_remux_result *res)
{
  char tmp[4200];
  struct pirec_crypt_writer *w = NULL;
  unsigned char *in = malloc(CHUNK), *out = malloc(pirec_crypt_chunk_size(CHUNK, 1));
  snprintf(tmp, sizeof tmp, "%s.part", path);
  int o = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  int rc = !in || !out ? -ENOMEM
           : o < 0     ? -errno
                       : pirec_crypt_writer_new(e->key, pirec_crypt_name(e->session, path), &w);
  off_t size = lseek(fd, 0, SEEK_END), at = 0;
  for (int first = 1; rc == 0 && (first || at < size); first = 0) {
    size_t n = size - at > (off_t)CHUNK ? CHUNK : (size_t)(size - at);
    if (pread(fd, in, n, at) != (ssize_t)n)
      rc = -EIO;
    at += (off_t)n;
    if (rc == 0)
      rc = pirec_crypt_writer_chunk(w, in, n, first, at >= size, out);
    size_t m = pirec_crypt_chunk_size(n, first);
    if (rc == 0 && write(o, out, m) != (ssize_t)m)
      rc = -EIO;
  }
  if (rc == 0 && fsync(o) != 0)
    rc = -errno;
  if (o >= 0 && close(o) != 0 && rc == 0)
    rc = -errno;
  if (rc == 0 && rename(tmp, path) != 0)
    rc = -errno;
  if (rc < 0 && o >= 0)
    unlink(tmp);
  pirec_crypt_writer_free(w);
  if (in)
    pirec_crypt_wipe(in, CHUNK);
  free(in);
  free(out);
  return rc < 0 ? seterr(res, rc, "cannot write '%s': %s", path, pirec_strerror(rc)) : 0;
}

static int setup(struct enc *e, const char *path, const struct pirec_remux_options *o, char *timing,
                 struct pirec_remux_result *res)
{
  char why[900];
  if (find_session(path, e->session, sizeof e->session) < 0)
    return seterr(res, -ENOENT, "no session.key above '%s': not an encrypted session%s", path, "");
  int rc = pirec_storage_session_key(e->session, o->key_file, &e->key, why, sizeof why);
  if (rc < 0)
    return seterr(res, rc, "%s%s", why, "");
  if (o->timing_path)
    snprintf(timing, 4096, "%s", o->timing_path);
  else if (pirec_remux_find_timing(path, timing, 4096) < 0)
    return seterr(res, -ENOENT, "no timing file for '%s'%s", path, "");
  for (int i = 0; i < 3; i++) {
    e->fd[i] = memfd_create("pirec-remux", MFD_CLOEXEC);
    if (e->fd[i] < 0)
      return seterr(res, -errno, "cannot make a memory file: %s%s", strerror(errno), "");
    snprintf(e->path[i], sizeof e->path[i], "/proc/self/fd/%d", e->fd[i]);
  }
  if ((rc = decrypt_into(e, 0, path, res)) < 0 || (rc = decrypt_into(e, 1, timing, res)) < 0)
    return rc;
  return 0;
}

int pirec__remux_encrypted(const char *path, const struct pirec_remux_options *options,
                           struct pirec_remux_result *res, pirec_remux_progress_cb progress, void *user)
{
  struct enc e = {.fd = {-1, -1, -1}};
  char timing[4096], output[4096];
  memset(res, 0, sizeof *res);
  int rc = setup(&e, path, options, timing, res);
  if (rc == 0 && options->output_path)
    snprintf(output, sizeof output, "%s", options->output_path);
  else if (rc == 0 && pirec_remux_output_path(path, options->format, output, sizeof output) < 0)
    rc = seterr(res, -ENAMETOOLONG, "output name for '%s' is too long%s", path, "");
  if (rc == 0) {
    struct pirec_remux_options o = *options;
    o.timing_path = e.path[1];
    o.output_path = e.path[2];
    o.input_name = path;
    o.key_file = NULL;
    o.flags =
        (o.flags & ~(unsigned)(PIREC__REMUX_SYNC | PIREC_REMUX_REPLACE | PIREC_REMUX_WRITE_TIMESTAMPS)) |
        PIREC__REMUX_IN_MEMORY;
    rc = pirec_remux_file(e.path[0], &o, res, progress, user);
    snprintf(res->timing_path, sizeof res->timing_path, "%s", timing);
    snprintf(res->output_path, sizeof res->output_path, "%s", output);
  }
  if (rc == 0 && !(options->flags & PIREC_REMUX_DRY_RUN))
    rc = encrypt_out(&e, e.fd[2], output, res);
  for (int i = 0; i < 3; i++)
    if (e.fd[i] >= 0)
      close(e.fd[i]); /* the memory goes with the last reference */
  pirec_crypt_key_free(e.key);
  return rc;
}
