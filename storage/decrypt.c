/* Decrypting session files: to a file descriptor chunk by chunk, or into memory; `pirec decrypt`. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pirec/error.h"
#include "pirec/fs.h"
#include "pirec/storage.h"
#include "storage-int.h"

#define EX_USAGE   64
#define EX_DATAERR 65
#define EX_NOINPUT 66
#define EX_IOERR   74

int pirec__storage_write_all(int fd, const void *data, size_t len)
{
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -errno;
    p += n, len -= (size_t)n;
  }
  return 0;
}

int pirec_storage_decrypt_fd(const struct pirec_crypt_key *key, const char *name, int in_fd, int out_fd,
                             uint64_t *written, char *why, size_t why_size)
{
  struct pirec_crypt_reader *r;
  int err = pirec_crypt_reader_new(key, name, in_fd, &r);
  *written = 0;
  why[0] = '\0';
  if (err < 0) {
    snprintf(why, why_size, "'%s': %s", name, pirec_strerror(err));
    return err;
  }
  const unsigned char *plain;
  size_t len;
  while ((err = pirec_crypt_reader_next(r, &plain, &len)) > 0) {
    if ((err = pirec__storage_write_all(out_fd, plain, len)) < 0) {
      snprintf(why, why_size, "'%s': cannot write the clear text: %s", name, pirec_strerror(err));
      break;
    }
    *written += len;
  }
  if (err < 0 && !why[0])
    snprintf(why, why_size, "'%s': %s", name, pirec_crypt_reader_why(r));
  pirec_crypt_reader_free(r);
  return err;
}

/* A growable buffer whose old copies are wiped: it holds clear text. */
static int mem_append(unsigned char **data, size_t *len, size_t *cap, const unsigned char *p, size_t n)
{
  if (*len + n > *cap) {
    size_t c = *cap ? *cap : 1 << 20;
    while (c < *len + n)
      c *= 2;
    unsigned char *b = malloc(c);
    if (b == NULL)
      return -ENOMEM;
    if (*data) {
      memcpy(b, *data, *len);
      pirec_crypt_wipe(*data, *cap);
      free(*data);
    }
    *data = b, *cap = c;
  }
  memcpy(*data + *len, p, n);
  *len += n;
  return 0;
}

int pirec_storage_decrypt_memory(const struct pirec_crypt_key *key, const char *name, const char *path,
                                 unsigned char **data, size_t *len, char *why, size_t why_size)
{
  struct pirec_crypt_reader *r = NULL;
  size_t cap = 0;
  *data = NULL, *len = 0;
  why[0] = '\0';
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  int err = fd < 0 ? -errno : pirec_crypt_reader_new(key, name, fd, &r);
  if (err < 0) {
    snprintf(why, why_size, "cannot read '%s': %s", path, pirec_strerror(err));
    if (fd >= 0)
      close(fd);
    return err;
  }
  const unsigned char *plain;
  size_t n;
  while ((err = pirec_crypt_reader_next(r, &plain, &n)) > 0)
    if ((err = mem_append(data, len, &cap, plain, n)) < 0) {
      snprintf(why, why_size, "'%s': out of memory", path);
      break;
    }
  if (err < 0 && !why[0])
    snprintf(why, why_size, "'%s': %s", path, pirec_crypt_reader_why(r));
  pirec_crypt_reader_free(r);
  close(fd);
  return err;
}

/* ---- pirec decrypt ---- */

static const char decrypt_usage[] =
    "usage: pirec decrypt SESSION --key FILE [--out DIR]\n"
    "  decrypts every encrypted file of the session directory SESSION with the lab's secret key\n"
    "  FILE (pirec keys new) into DIR (default SESSION.decrypted, which must not exist; files 0600),\n"
    "  verifying every chunk. A damaged, truncated or foreign file is named with the chunk and\n"
    "  offset of the first problem; its verified part is written, nothing after it.\n"
    "exit status: 0 every file whole, 1 some file damaged or cut short (named on stderr),\n"
    "             64 usage, 65 wrong key or not an encrypted session, 66 cannot read, 74 I/O error\n";

/* dir/rel into out; 0, or -ENAMETOOLONG. */
static int join(char *out, size_t size, const char *dir, const char *rel)
{
  int n = snprintf(out, size, "%s%s%s", dir, *dir && *rel ? "/" : "", rel);
  return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

struct walk {
  const struct pirec_crypt_key *key;
  const char *src, *dst;
  int damaged;
  int io_error;
};

static int open_pair(struct walk *w, const char *rel, int *in, int *out)
{
  char spath[4096], dpath[4096];
  if (join(spath, sizeof spath, w->src, rel) < 0 || join(dpath, sizeof dpath, w->dst, rel) < 0) {
    fprintf(stderr, "pirec decrypt: the path of '%s' is too long\n", rel);
    return -1;
  }
  *in = open(spath, O_RDONLY | O_CLOEXEC);
  if (*in < 0) {
    fprintf(stderr, "pirec decrypt: cannot open '%s': %s\n", spath, strerror(errno));
    return -1;
  }
  *out = open(dpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (*out < 0) {
    fprintf(stderr, "pirec decrypt: cannot create '%s': %s\n", dpath, strerror(errno));
    close(*in);
    return -1;
  }
  return 0;
}

/* Copies a file that is not encrypted (session.json) as it is. */
static int copy_rest(int in, int out, const char *head, size_t n)
{
  char buf[65536];
  int r = pirec__storage_write_all(out, head, n);
  ssize_t k;
  while (r == 0 && (k = read(in, buf, sizeof buf)) != 0) {
    if (k < 0 && errno == EINTR)
      continue;
    r = k < 0 ? -errno : pirec__storage_write_all(out, buf, (size_t)k);
  }
  return r;
}

static void one_file(struct walk *w, const char *rel)
{
  int in, out;
  char head[8], why[512] = "";
  if (open_pair(w, rel, &in, &out) < 0) {
    w->io_error = 1;
    return;
  }
  ssize_t n = read(in, head, sizeof head);
  int r;
  if (n > 0 && pirec_crypt_is_encrypted(head, (size_t)n)) {
    uint64_t written;
    lseek(in, 0, SEEK_SET);
    r = pirec_storage_decrypt_fd(w->key, rel, in, out, &written, why, sizeof why);
    if (r < 0) {
      fprintf(stderr, "pirec decrypt: %s; %llu verified bytes written before it\n", why,
              (unsigned long long)written);
      w->damaged = 1;
    }
  } else {
    r = n < 0 ? -errno : copy_rest(in, out, head, (size_t)n);
    if (strcmp(rel, "session.json") != 0)
      fprintf(stderr, "pirec decrypt: '%s' is not encrypted; copied as it is\n", rel);
    if (r < 0) {
      fprintf(stderr, "pirec decrypt: cannot copy '%s': %s\n", rel, pirec_strerror(r));
      w->io_error = 1;
    }
  }
  if (close(out) != 0)
    w->io_error = 1;
  close(in);
}

/* Every regular file under rel (a directory of the session, "" for its top), in name order. */
static void walk_dir(struct walk *w, const char *rel)
{
  char path[4096], sub[4096];
  struct dirent **names;
  int n = join(path, sizeof path, w->src, rel) < 0 ? -1 : scandir(path, &names, NULL, alphasort);
  if (n < 0) {
    fprintf(stderr, "pirec decrypt: cannot read '%s': %s\n", path, strerror(errno));
    w->io_error = 1;
    return;
  }
  for (int i = 0; i < n; i++) {
    const char *name = names[i]->d_name;
    struct stat st;
    int bad = join(sub, sizeof sub, rel, name) < 0 || join(path, sizeof path, w->src, sub) < 0;
    if (!bad && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 && strcmp(sub, PIREC_CRYPT_KEY_FILE) != 0 &&
        lstat(path, &st) == 0) {
      if (S_ISDIR(st.st_mode)) {
        if (join(path, sizeof path, w->dst, sub) < 0 || (mkdir(path, 0700) != 0 && errno != EEXIST))
          w->io_error = 1;
        walk_dir(w, sub);
      } else if (S_ISREG(st.st_mode)) {
        one_file(w, sub);
      }
    }
    free(names[i]);
  }
  free(names);
}

static int decrypt_session(const char *src, const char *key_path, const char *dst)
{
  struct pirec_crypt_key *key = NULL;
  char why[4400];
  int r = pirec_storage_session_key(src, key_path, &key, why, sizeof why);
  if (r < 0) {
    fprintf(stderr, "pirec decrypt: %s\n", why);
    return r == -ENOENT || r == -EACCES || r == -EBADMSG || r == -EINVAL ? EX_DATAERR : EX_NOINPUT;
  }
  if (mkdir(dst, 0700) != 0) {
    fprintf(stderr, "pirec decrypt: cannot create '%s': %s%s\n", dst, strerror(errno),
            errno == EEXIST ? " (choose another --out)" : "");
    pirec_crypt_key_free(key);
    return EX_IOERR;
  }
  struct walk w = {.key = key, .src = src, .dst = dst};
  walk_dir(&w, "");
  pirec_crypt_key_free(key);
  if (w.io_error)
    return EX_IOERR;
  return w.damaged ? 1 : 0;
}

int pirec_storage_decrypt_main(int argc, char **argv)
{
  static const struct option longopts[] = {{"key", required_argument, NULL, 'k'},
                                           {"out", required_argument, NULL, 'o'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  const char *key = NULL, *out = NULL;
  int opt;
  optind = 1;
  while ((opt = getopt_long(argc, argv, "k:o:h", longopts, NULL)) != -1) {
    if (opt == 'k' || opt == 'o') {
      *(opt == 'k' ? &key : &out) = optarg;
    } else if (opt == 'h') {
      fputs(decrypt_usage, stdout);
      return 0;
    } else {
      fputs(decrypt_usage, stderr);
      return EX_USAGE;
    }
  }
  if (optind + 1 != argc || key == NULL) {
    fputs(decrypt_usage, stderr);
    return EX_USAGE;
  }
  char dst[4096];
  size_t n = strlen(argv[optind]);
  while (n > 1 && argv[optind][n - 1] == '/')
    n--;
  if (out == NULL)
    snprintf(dst, sizeof dst, "%.*s.decrypted", (int)n, argv[optind]);
  return decrypt_session(argv[optind], key, out ? out : dst);
}
