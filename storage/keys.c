/* The lab's key files and a session's sealed key (session.key); `pirec keys new`. */

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pirec/error.h"
#include "pirec/storage.h"
#include "storage-int.h"

#define EX_USAGE     64
#define EX_CANTCREAT 73

int pirec__storage_read_small(const char *path, char *buf, size_t size, size_t *len)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  size_t got = 0;
  ssize_t n;
  while (got < size && (n = read(fd, buf + got, size - got)) != 0) {
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = -errno;
      close(fd);
      return e;
    }
    got += (size_t)n;
  }
  close(fd);
  if (got == size)
    return -EFBIG;
  *len = got;
  return 0;
}

int pirec_storage_secret_load(const char *path, unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES],
                              unsigned char **sk, char *why, size_t why_size)
{
  char text[1024], line_why[160];
  size_t len = 0;
  int r = pirec__storage_read_small(path, text, sizeof text, &len);
  if (r < 0) {
    snprintf(why, why_size, "cannot read key file '%s': %s", path,
             r == -EFBIG ? "too large for a key file" : pirec_strerror(r));
    return r;
  }
  text[len] = '\0';
  r = pirec_crypt_secret_parse(text, pk, sk, line_why, sizeof line_why);
  pirec_crypt_wipe(text, sizeof text);
  if (r < 0)
    snprintf(why, why_size, "key file '%s': %s", path, r == -EINVAL ? line_why : pirec_strerror(r));
  return r;
}

int pirec_storage_session_key(const char *dir, const char *key_path, struct pirec_crypt_key **out, char *why,
                              size_t why_size)
{
  char path[4096], buf[PIREC_CRYPT_KEY_FILE_BYTES + 1];
  size_t len = 0;
  snprintf(path, sizeof path, "%s/%s", dir, PIREC_CRYPT_KEY_FILE);
  int r = pirec__storage_read_small(path, buf, sizeof buf, &len);
  if (r < 0 && r != -EFBIG) {
    snprintf(why, why_size, "cannot read '%s': %s%s", path, pirec_strerror(r),
             r == -ENOENT ? " (the session is not encrypted)" : "");
    return r;
  }
  if (r < 0 || len != PIREC_CRYPT_KEY_FILE_BYTES || memcmp(buf, PIREC_CRYPT_KEY_MAGIC, 8) != 0 ||
      buf[8] != 1) {
    snprintf(why, why_size, "'%s' is not a pirec session key (damaged)", path);
    return -EBADMSG;
  }
  unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES], *sk = NULL;
  r = pirec_storage_secret_load(key_path, pk, &sk, why, why_size);
  if (r < 0)
    return r;
  r = pirec_crypt_key_unseal((unsigned char *)buf + 12 + PIREC_CRYPT_ID_BYTES, pk, sk, out);
  pirec_crypt_secret_free(sk);
  if (r == -EACCES)
    snprintf(why, why_size, "'%s' is not sealed to the key in '%s' (wrong --key, or session.key damaged)",
             path, key_path);
  else if (r < 0)
    snprintf(why, why_size, "cannot open '%s': %s", path, pirec_strerror(r));
  else if (memcmp(pirec_crypt_key_id(*out), buf + 12, PIREC_CRYPT_ID_BYTES) != 0) {
    snprintf(why, why_size, "'%s': the key id does not match the sealed key (damaged)", path);
    pirec_crypt_key_free(*out);
    *out = NULL;
    r = -EBADMSG;
  }
  return r;
}

/* ---- pirec keys new ---- */

static const char keys_usage[] =
    "usage: pirec keys new [--out PREFIX]\n"
    "  writes a lab key pair: PREFIX.key (the secret key, mode 0600: keep it on the lab machine,\n"
    "  never on the Pi) and PREFIX.pub (the public key), and prints the config line\n"
    "  `[storage] encrypt_to = PUBLIC` for the Pi. PREFIX defaults to 'pirec-lab'; existing files\n"
    "  are never overwritten.\n"
    "exit status: 0 ok, 64 usage, 73 cannot create a file\n";

/* Creates path exclusively with mode and writes text; removes it again on failure. */
static int write_new(const char *path, const char *text, mode_t mode)
{
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0)
    return -errno;
  size_t len = strlen(text), done = 0;
  int r = 0;
  while (r == 0 && done < len) {
    ssize_t n = write(fd, text + done, len - done);
    if (n < 0 && errno != EINTR)
      r = -errno;
    else if (n > 0)
      done += (size_t)n;
  }
  if (r == 0 && fsync(fd) != 0)
    r = -errno;
  if (close(fd) != 0 && r == 0)
    r = -errno;
  if (r < 0)
    unlink(path);
  return r;
}

static int keys_new(const char *prefix)
{
  char key_path[4096], pub_path[4096], text[512], pub[PIREC_CRYPT_KEY_TEXT + 2];
  unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES], *sk = NULL;
  snprintf(key_path, sizeof key_path, "%s.key", prefix);
  snprintf(pub_path, sizeof pub_path, "%s.pub", prefix);
  int r = pirec_crypt_keypair_new(pk, &sk);
  if (r == 0)
    r = pirec_crypt_secret_format(pk, sk, text, sizeof text);
  pirec_crypt_secret_free(sk);
  if (r < 0) {
    fprintf(stderr, "pirec keys: cannot make a key pair: %s\n", pirec_strerror(r));
    return EX_CANTCREAT;
  }
  pirec_crypt_base64(pk, sizeof pk, pub, PIREC_CRYPT_KEY_TEXT);
  r = write_new(key_path, text, 0600);
  pirec_crypt_wipe(text, sizeof text);
  if (r < 0) {
    fprintf(stderr, "pirec keys: cannot create '%s': %s\n", key_path, pirec_strerror(r));
    return EX_CANTCREAT;
  }
  strcat(pub, "\n");
  if ((r = write_new(pub_path, pub, 0644)) < 0) {
    fprintf(stderr, "pirec keys: cannot create '%s': %s\n", pub_path, pirec_strerror(r));
    unlink(key_path);
    return EX_CANTCREAT;
  }
  pub[strlen(pub) - 1] = '\0';
  printf("secret key: %s (keep it off the Pi)\npublic key: %s\nfor the Pi's config:\n[storage]\nencrypt_to = "
         "%s\n",
         key_path, pub_path, pub);
  return 0;
}

int pirec_storage_keys_main(int argc, char **argv)
{
  static const struct option longopts[] = {
      {"out", required_argument, NULL, 'o'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
  const char *prefix = "pirec-lab";
  int opt;
  optind = 1;
  while ((opt = getopt_long(argc, argv, "o:h", longopts, NULL)) != -1) {
    if (opt == 'o') {
      prefix = optarg;
    } else if (opt == 'h') {
      fputs(keys_usage, stdout);
      return 0;
    } else {
      fputs(keys_usage, stderr);
      return EX_USAGE;
    }
  }
  if (optind + 1 != argc || strcmp(argv[optind], "new") != 0) {
    fputs(keys_usage, stderr);
    return EX_USAGE;
  }
  return keys_new(prefix);
}
