/* `pirec archive SESSION` and `pirec archive --verify FILE`: a session as one .tar.zst (ustar,
 * compressed as a stream by libzstd) whose last member, MANIFEST.sha256, lists each file's SHA-256
 * in sha256sum's format. SHA-256 is libcrypto's (OpenSSL EVP): libsodium's portable one ran 53 MB/s
 * here against libcrypto's 248 MB/s (SHA-NI); hashing was the archive's bottleneck, so it runs on
 * a thread of its own (hasher.c) beside reading and compressing. Encrypted sessions are archived as
 * they are: the archive needs no key. */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include "pirec/bytebuf.h"
#include "pirec/error.h"
#include "pirec/storage.h"
#include "storage-int.h"

#define EX_USAGE   64
#define EX_DATAERR 65
#define EX_NOINPUT 66
#define EX_IOERR   74
#define BLOCK      512
#define READ_BYTES (1u << 20)
#define MANIFEST   "MANIFEST.sha256"

/* A message into why; vsnprintf, since a long path cut short in a message is fine. */
static void setwhy(char *why, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void setwhy(char *why, size_t size, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, size, fmt, ap);
  va_end(ap);
}

/* snprintf whose cut result is an error. Returns 0 or -ENAMETOOLONG. */
static int pathf(char *out, size_t size, const char *a, const char *sep, const char *b)
{
  int n = snprintf(out, size, "%s%s%s", a, sep, b);
  return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* SHA-256 of a stream, as lowercase hex into hex (65 bytes). */
struct sha {
  EVP_MD_CTX *ctx;
};
static int sha_init(struct sha *h)
{
  h->ctx = EVP_MD_CTX_new();
  return h->ctx && EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
}
static void sha_update(struct sha *h, const void *p, size_t n)
{
  EVP_DigestUpdate(h->ctx, p, n);
}
static void sha_final(struct sha *h, char hex[65])
{
  unsigned char d[32];
  unsigned len = 0;
  EVP_DigestFinal_ex(h->ctx, d, &len);
  EVP_MD_CTX_free(h->ctx);
  h->ctx = NULL;
  sodium_bin2hex(hex, 65, d, 32);
}

/* ---- writing ---- */

struct arch {
  ZSTD_CCtx *cctx;
  int fd;
  unsigned char *in[2], *out; /* read buffers alternate: one is hashed while the other fills */
  struct pirec__hasher *hasher;
  size_t out_size;
  struct pirec_bytebuf manifest;
  const char *root; /* the session directory */
  const char *top;  /* its name: the archive's top directory */
  int err;
  char why[600];
};

/* Compresses len bytes of the tar stream (mode ZSTD_e_end: and finishes the frame). */
static int put(struct arch *a, const void *data, size_t len, ZSTD_EndDirective mode)
{
  ZSTD_inBuffer in = {data, len, 0};
  size_t left;
  do {
    ZSTD_outBuffer out = {a->out, a->out_size, 0};
    left = ZSTD_compressStream2(a->cctx, &out, &in, mode);
    if (ZSTD_isError(left)) {
      setwhy(a->why, sizeof a->why, "zstd: %s", ZSTD_getErrorName(left));
      return -EIO;
    }
    int r = pirec__storage_write_all(a->fd, a->out, out.pos);
    if (r < 0) {
      setwhy(a->why, sizeof a->why, "cannot write the archive: %s", pirec_strerror(r));
      return r;
    }
  } while (mode == ZSTD_e_end ? left != 0 : in.pos < in.size);
  return 0;
}

static void octal(char *field, size_t width, uint64_t v)
{
  if (snprintf(field, width, "%0*llo", (int)width - 1, (unsigned long long)v) >= (int)width)
    memset(field, '7', width - 1); /* not reached: callers pass values that fit */
}

/* A ustar header for name (relative to the archive's root; a long one split into prefix/name),
 * sizes over 8 GiB in GNU's base-256. Returns 0 or -ENAMETOOLONG. */
static int header(unsigned char h[BLOCK], const char *name, char type, uint64_t size, int64_t mtime,
                  unsigned mode)
{
  size_t n = strlen(name);
  memset(h, 0, BLOCK);
  if (n <= 100) {
    memcpy(h, name, n);
  } else {
    const char *cut = name + n - 100 - 1;
    while (*cut && *cut != '/')
      cut++;
    if (*cut != '/' || (size_t)(cut - name) > 155)
      return -ENAMETOOLONG;
    memcpy(h + 345, name, (size_t)(cut - name));
    memcpy(h, cut + 1, n - (size_t)(cut - name) - 1);
  }
  octal((char *)h + 100, 8, mode & 07777);
  octal((char *)h + 108, 8, 0);
  octal((char *)h + 116, 8, 0);
  if (size < 077777777777ull) {
    octal((char *)h + 124, 12, size);
  } else {
    h[124] = 0x80;
    for (int i = 0; i < 8; i++)
      h[135 - i] = (unsigned char)(size >> (8 * i));
  }
  octal((char *)h + 136, 12, mtime > 0 ? (uint64_t)mtime : 0);
  h[156] = (unsigned char)type;
  memcpy(h + 257, "ustar", 6);
  memcpy(h + 263, "00", 2);
  memset(h + 148, ' ', 8);
  unsigned sum = 0;
  for (int i = 0; i < BLOCK; i++)
    sum += h[i];
  snprintf((char *)h + 148, 8, "%06o", sum);
  h[155] = ' ';
  return 0;
}

static int put_member(struct arch *a, const char *rel, char type, uint64_t size, int64_t mtime, unsigned mode)
{
  unsigned char h[BLOCK];
  char name[4200];
  if (pathf(name, sizeof name - 1, a->top, *rel ? "/" : "", rel) < 0 ||
      header(h, type == '5' ? strcat(name, "/") : name, type, size, mtime, mode) < 0) {
    setwhy(a->why, sizeof a->why, "'%s': the name is too long for a tar archive", rel);
    return -ENAMETOOLONG;
  }
  return put(a, h, BLOCK, ZSTD_e_continue);
}

static int put_padding(struct arch *a, uint64_t size)
{
  static const unsigned char zero[BLOCK];
  return size % BLOCK ? put(a, zero, BLOCK - size % BLOCK, ZSTD_e_continue) : 0;
}

/* A file: its header, its bytes (hashed on the hasher's thread while this one compresses them and
 * reads the next), its padding and its manifest line. The size is the one at stat time; a file
 * still growing is cut there (archive finished sessions). */
static int put_file(struct arch *a, const char *rel, const struct stat *st)
{
  char path[4200], hex[65];
  int fd = pathf(path, sizeof path, a->root, "/", rel) < 0 ? -1 : open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    setwhy(a->why, sizeof a->why, "cannot open '%s': %s", path, strerror(errno));
    return -errno;
  }
  uint64_t size = (uint64_t)st->st_size, done = 0;
  int r = pirec__hasher_begin(a->hasher);
  if (r == 0)
    r = put_member(a, rel, '0', size, st->st_mtime, st->st_mode);
  for (unsigned k = 0; r == 0 && done < size; k ^= 1) {
    size_t want = size - done < READ_BYTES ? (size_t)(size - done) : READ_BYTES;
    /* a->in[k] was fed two rounds ago: the last feed's return says it is hashed */
    ssize_t n = read(fd, a->in[k], want);
    if (n <= 0) {
      setwhy(a->why, sizeof a->why, "'%s' shrank or cannot be read", path);
      r = -EIO;
      break;
    }
    pirec__hasher_feed(a->hasher, a->in[k], (size_t)n);
    r = put(a, a->in[k], (size_t)n, ZSTD_e_continue);
    done += (uint64_t)n;
  }
  close(fd);
  if (r == 0)
    r = put_padding(a, size);
  pirec__hasher_end(a->hasher, hex);
  if (r == 0 && (pirec_bytebuf_append(&a->manifest, hex, strlen(hex)) < 0 ||
                 pirec_bytebuf_append(&a->manifest, "  ", 2) < 0 ||
                 pirec_bytebuf_append(&a->manifest, rel, strlen(rel)) < 0 ||
                 pirec_bytebuf_append(&a->manifest, "\n", 1) < 0))
    r = -ENOMEM;
  return r;
}

/* Every directory and regular file under rel, in name order. */
static int put_dir(struct arch *a, const char *rel)
{
  char path[4200], sub[4200];
  struct dirent **names;
  int n = pathf(path, sizeof path, a->root, *rel ? "/" : "", rel) < 0
              ? -1
              : scandir(path, &names, NULL, alphasort);
  int r = 0;
  if (n < 0) {
    setwhy(a->why, sizeof a->why, "cannot read '%s': %s", path, strerror(errno));
    return -errno;
  }
  for (int i = 0; i < n; i++) {
    struct stat st;
    const char *name = names[i]->d_name;
    int bad = pathf(sub, sizeof sub, rel, *rel ? "/" : "", name) < 0 ||
              pathf(path, sizeof path, a->root, "/", sub) < 0;
    if (r == 0 && !bad && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 && lstat(path, &st) == 0) {
      if (S_ISDIR(st.st_mode) && (r = put_member(a, sub, '5', 0, st.st_mtime, st.st_mode)) == 0)
        r = put_dir(a, sub);
      else if (S_ISREG(st.st_mode) && !(*rel == '\0' && strcmp(name, MANIFEST) == 0))
        r = put_file(a, sub, &st);
    }
    free(names[i]);
  }
  free(names);
  return r;
}

/* The archive's top directory: the session directory's own name. */
static void top_name(const char *dir, char *top, size_t size)
{
  size_t n = strlen(dir);
  while (n > 1 && dir[n - 1] == '/')
    n--;
  const char *base = dir + n;
  while (base > dir && base[-1] != '/')
    base--;
  snprintf(top, size, "%.*s", (int)(dir + n - base), base);
}

/* Buffers, the compressor's settings and the .part file. */
static int archive_start(struct arch *a, const char *tmp, int level, int threads)
{
  a->cctx = ZSTD_createCCtx();
  a->out_size = ZSTD_CStreamOutSize();
  a->in[0] = malloc(READ_BYTES);
  a->in[1] = malloc(READ_BYTES);
  a->out = malloc(a->out_size);
  if (!a->cctx || !a->in[0] || !a->in[1] || !a->out || sodium_init() < 0 ||
      pirec__hasher_new(&a->hasher) < 0 || pirec_bytebuf_init(&a->manifest, 4096, 64u << 20) < 0)
    return -ENOMEM;
  if (ZSTD_isError(ZSTD_CCtx_setParameter(a->cctx, ZSTD_c_compressionLevel, level)) ||
      ZSTD_isError(ZSTD_CCtx_setParameter(a->cctx, ZSTD_c_checksumFlag, 1)) ||
      (threads > 0 && ZSTD_isError(ZSTD_CCtx_setParameter(a->cctx, ZSTD_c_nbWorkers, threads)))) {
    setwhy(a->why, sizeof a->why, "zstd refuses level %d or %d threads", level, threads);
    return -EINVAL;
  }
  a->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (a->fd < 0) {
    setwhy(a->why, sizeof a->why, "cannot create '%s': %s", tmp, strerror(errno));
    return -errno;
  }
  return 0;
}

/* The members, the manifest and the end of the stream. */
static int archive_body(struct arch *a)
{
  static const unsigned char zero[2 * BLOCK];
  int r = put_member(a, "", '5', 0, 0, 0755);
  if (r == 0)
    r = put_dir(a, "");
  size_t len = pirec_bytebuf_len(&a->manifest);
  if (r == 0)
    r = put_member(a, MANIFEST, '0', len, 0, 0644);
  if (r == 0)
    r = put(a, pirec_bytebuf_data(&a->manifest), len, ZSTD_e_continue);
  if (r == 0)
    r = put_padding(a, len);
  return r == 0 ? put(a, zero, sizeof zero, ZSTD_e_end) : r;
}

/* The .part synced and renamed into place, or removed after a failure r. Frees a's memory. */
static int archive_finish(struct arch *a, int r, const char *tmp, const char *out)
{
  if (r == 0 && fsync(a->fd) != 0)
    r = -errno, setwhy(a->why, sizeof a->why, "cannot sync '%s': %s", tmp, strerror(errno));
  if (a->fd >= 0 && close(a->fd) != 0 && r == 0)
    r = -errno, setwhy(a->why, sizeof a->why, "cannot write '%s': %s", tmp, strerror(errno));
  if (r == 0 && rename(tmp, out) != 0)
    r = -errno, setwhy(a->why, sizeof a->why, "cannot rename '%s': %s", tmp, strerror(errno));
  if (r < 0 && a->fd >= 0)
    unlink(tmp);
  ZSTD_freeCCtx(a->cctx);
  pirec__hasher_free(a->hasher);
  free(a->in[0]);
  free(a->in[1]);
  free(a->out);
  pirec_bytebuf_free(&a->manifest);
  return r;
}

static int archive_session(const char *dir, const char *out, int level, int threads)
{
  char top[256], tmp[4200];
  top_name(dir, top, sizeof top);
  struct arch a = {.root = dir, .top = top, .fd = -1};
  if (pathf(tmp, sizeof tmp, out, "", ".part") < 0)
    return EX_USAGE;
  if (access(out, F_OK) == 0) {
    fprintf(stderr, "pirec archive: '%s' exists; choose another --out\n", out);
    return EX_IOERR;
  }
  int r = archive_start(&a, tmp, level, threads);
  if (r == 0)
    r = archive_body(&a);
  r = archive_finish(&a, r, tmp, out);
  if (r < 0) {
    fprintf(stderr, "pirec archive: %s\n", a.why[0] ? a.why : pirec_strerror(r));
    return EX_IOERR;
  }
  printf("%s\n", out);
  return 0;
}

/* ---- verifying ---- */

struct rd {
  int fd;
  ZSTD_DCtx *dctx;
  unsigned char *cin;
  size_t cin_size;
  ZSTD_inBuffer in;
  size_t frame_left; /* ZSTD_decompressStream's last hint: 0 at the end of a frame */
  uint64_t offset;   /* compressed bytes read */
  struct pirec_bytebuf buf;
  char why[600];
};

/* At least n decompressed bytes in r->buf. Returns 1, 0 at a clean end of the stream before any
 * of them, or -EBADMSG with why. */
static int need(struct rd *r, size_t n)
{
  while (pirec_bytebuf_len(&r->buf) < n) {
    if (r->in.pos == r->in.size) {
      ssize_t k = read(r->fd, r->cin, r->cin_size);
      if (k < 0 || (k == 0 && r->frame_left != 0)) {
        setwhy(r->why, sizeof r->why,
               "the archive ends at offset %llu inside its compressed stream (truncated)",
               (unsigned long long)r->offset);
        return -EBADMSG;
      }
      if (k == 0)
        return pirec_bytebuf_len(&r->buf) == 0 ? 0 : -EBADMSG;
      r->in = (ZSTD_inBuffer){r->cin, (size_t)k, 0};
      r->offset += (uint64_t)k;
    }
    size_t avail;
    uint8_t *space = pirec_bytebuf_space(&r->buf, ZSTD_DStreamOutSize(), &avail);
    if (space == NULL)
      return -ENOMEM;
    ZSTD_outBuffer out = {space, avail, 0};
    r->frame_left = ZSTD_decompressStream(r->dctx, &out, &r->in);
    if (ZSTD_isError(r->frame_left)) {
      setwhy(r->why, sizeof r->why, "damaged compressed data before offset %llu: %s",
             (unsigned long long)r->offset, ZSTD_getErrorName(r->frame_left));
      return -EBADMSG;
    }
    pirec_bytebuf_fill(&r->buf, out.pos);
  }
  return 1;
}

static uint64_t tar_size(const unsigned char *h)
{
  uint64_t v = 0;
  if (h[124] & 0x80) {
    for (int i = 4; i < 12; i++)
      v = v << 8 | h[124 + i];
    return v;
  }
  for (int i = 124; i < 136 && h[i] >= '0' && h[i] <= '7'; i++)
    v = v * 8 + (uint64_t)(h[i] - '0');
  return v;
}

/* One member's data (size bytes and padding): hashed into hex, or kept in *keep when non-NULL. */
static int member_data(struct rd *r, uint64_t size, char *hex, struct pirec_bytebuf *keep)
{
  struct sha hs;
  uint64_t left = size + (BLOCK - size % BLOCK) % BLOCK, data = size;
  if (sha_init(&hs) < 0)
    return -ENOMEM;
  while (left > 0) {
    int k = need(r, 1);
    if (k <= 0) {
      sha_final(&hs, hex);
      return k == 0 ? (setwhy(r->why, sizeof r->why, "the archive ends inside a member"), -EBADMSG) : k;
    }
    size_t n = pirec_bytebuf_len(&r->buf) < left ? pirec_bytebuf_len(&r->buf) : (size_t)left;
    size_t d = n < data ? n : (size_t)data;
    sha_update(&hs, pirec_bytebuf_data(&r->buf), d);
    if (keep && d && pirec_bytebuf_append(keep, pirec_bytebuf_data(&r->buf), d) < 0) {
      sha_final(&hs, hex);
      return -ENOMEM;
    }
    pirec_bytebuf_consume(&r->buf, n);
    left -= n, data -= d;
  }
  sha_final(&hs, hex);
  return 0;
}

/* Compares the lines "HEX  NAME" each file produced (got) with the manifest's. Returns the
 * number of mismatches, each printed. */
static int compare(const char *archive, const char *got, const char *manifest)
{
  int bad = 0;
  for (const char *l = manifest; *l;) {
    const char *nl = strchr(l, '\n');
    size_t len = nl ? (size_t)(nl - l) + 1 : strlen(l);
    char line[4400];
    snprintf(line, sizeof line, "\n%.*s", (int)len, l);
    if (len < 67 || !strstr(got, line)) {
      fprintf(stderr, "pirec archive: '%s': %.*s: missing, or its SHA-256 differs from the manifest\n",
              archive, (int)(len > 66 ? len - 67 : 0), l + (len > 66 ? 66 : 0));
      bad++;
    }
    l += len;
  }
  return bad;
}

/* One member whose header h was just read: hashed into got ("HEX  NAME" lines), or kept in
 * manifest when it is the manifest. Returns 0 or an error. */
static int verify_member(struct rd *r, const unsigned char *h, struct pirec_bytebuf *got,
                         struct pirec_bytebuf *manifest, int *files)
{
  char name[300], hex[65], line[400];
  snprintf(name, sizeof name, "%s%s%.100s", h[345] ? (const char *)h + 345 : "", h[345] ? "/" : "",
           (const char *)h);
  const char *rel = strchr(name, '/') ? strchr(name, '/') + 1 : name;
  if (h[156] != '0' && h[156] != '\0')
    return member_data(r, h[156] == '5' ? 0 : tar_size(h), hex, NULL);
  int is_manifest = strcmp(rel, MANIFEST) == 0;
  int rc = member_data(r, tar_size(h), hex, is_manifest ? manifest : NULL);
  if (rc < 0 || is_manifest)
    return rc;
  int n = snprintf(line, sizeof line, "%s  %s\n", hex, rel);
  (*files)++;
  return pirec_bytebuf_append(got, line, n > 0 && (size_t)n < sizeof line ? (size_t)n : 0);
}

/* Every member of the archive r reads. Returns 0 or an error (r->why). */
static int verify_members(struct rd *r, struct pirec_bytebuf *got, struct pirec_bytebuf *manifest, int *files)
{
  int rc;
  while ((rc = need(r, BLOCK)) == 1) {
    unsigned char h[BLOCK];
    memcpy(h, pirec_bytebuf_data(&r->buf), BLOCK);
    pirec_bytebuf_consume(&r->buf, BLOCK);
    if (h[0] != '\0' && (rc = verify_member(r, h, got, manifest, files)) < 0) /* '\0': the end blocks */
      return rc;
  }
  return rc;
}

/* The files found against the manifest. Returns the exit status. */
static int verify_report(const char *path, struct pirec_bytebuf *got, struct pirec_bytebuf *manifest,
                         int files)
{
  if (pirec_bytebuf_len(manifest) == 0) {
    fprintf(stderr, "pirec archive: '%s' has no %s\n", path, MANIFEST);
    return 1;
  }
  pirec_bytebuf_append(got, "", 1);
  pirec_bytebuf_append(manifest, "", 1);
  int bad = compare(path, (const char *)pirec_bytebuf_data(got), (const char *)pirec_bytebuf_data(manifest));
  int listed = 0;
  for (const char *p = (const char *)pirec_bytebuf_data(manifest); *p; p++)
    listed += *p == '\n';
  if (listed != files) {
    fprintf(stderr, "pirec archive: '%s': %d files, the manifest lists %d\n", path, files, listed);
    bad++;
  }
  if (!bad)
    printf("%s: ok, %d files match their SHA-256\n", path, files);
  return bad ? 1 : 0;
}

static int verify_archive(const char *path)
{
  struct rd r = {.fd = open(path, O_RDONLY | O_CLOEXEC)};
  struct pirec_bytebuf got = {0}, manifest = {0};
  int rc = 0, files = 0, status;
  if (r.fd < 0) {
    fprintf(stderr, "pirec archive: cannot open '%s': %s\n", path, strerror(errno));
    return EX_NOINPUT;
  }
  r.dctx = ZSTD_createDCtx();
  r.cin_size = ZSTD_DStreamInSize();
  r.cin = malloc(r.cin_size);
  if (!r.dctx || !r.cin || pirec_bytebuf_init(&r.buf, 1 << 20, 64u << 20) < 0 ||
      pirec_bytebuf_init(&got, 4096, 64u << 20) < 0 || pirec_bytebuf_init(&manifest, 4096, 64u << 20) < 0 ||
      pirec_bytebuf_append(&got, "\n", 1) < 0)
    rc = -ENOMEM;
  if (rc == 0)
    rc = verify_members(&r, &got, &manifest, &files);
  if (rc < 0) {
    fprintf(stderr, "pirec archive: '%s': %s\n", path, r.why[0] ? r.why : pirec_strerror(rc));
    status = 1;
  } else {
    status = verify_report(path, &got, &manifest, files);
  }
  close(r.fd);
  ZSTD_freeDCtx(r.dctx);
  free(r.cin);
  pirec_bytebuf_free(&r.buf);
  pirec_bytebuf_free(&got);
  pirec_bytebuf_free(&manifest);
  return status;
}

/* ---- pirec archive ---- */

static const char archive_usage[] =
    "usage: pirec archive SESSION [--out FILE] [--level N] [--threads N]\n"
    "       pirec archive --verify FILE\n"
    "  writes SESSION as FILE (default SESSION.tar.zst; never overwritten): a tar of the session\n"
    "  directory, zstd-compressed as a stream at --level (1..19, default 3) with --threads worker\n"
    "  threads (default 0: compress on the calling thread), its last member MANIFEST.sha256 listing\n"
    "  every file's SHA-256. Encrypted sessions are archived as they are. --verify decompresses FILE\n"
    "  and checks every file against the manifest.\n"
    "exit status: 0 ok, 1 the archive does not verify, 64 usage, 66 cannot open, 74 I/O error\n";

int pirec_storage_archive_main(int argc, char **argv)
{
  static const struct option longopts[] = {
      {"out", required_argument, NULL, 'o'},     {"level", required_argument, NULL, 'l'},
      {"threads", required_argument, NULL, 't'}, {"verify", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
  const char *out = NULL;
  long level = 3, threads = 0;
  int opt, verify = 0;
  char *end;
  optind = 1;
  while ((opt = getopt_long(argc, argv, "o:l:t:vh", longopts, NULL)) != -1) {
    if (opt == 'o') {
      out = optarg;
    } else if (opt == 'l' || opt == 't') {
      long v = strtol(optarg, &end, 10);
      if (*end || v < (opt == 'l' ? 1 : 0) || v > (opt == 'l' ? 19 : 64)) {
        fprintf(stderr, "pirec archive: invalid value '%s' for --%s\n", optarg,
                opt == 'l' ? "level" : "threads");
        return EX_USAGE;
      }
      *(opt == 'l' ? &level : &threads) = v;
    } else if (opt == 'v') {
      verify = 1;
    } else if (opt == 'h') {
      fputs(archive_usage, stdout);
      return 0;
    } else {
      fputs(archive_usage, stderr);
      return EX_USAGE;
    }
  }
  if (optind + 1 != argc) {
    fputs(archive_usage, stderr);
    return EX_USAGE;
  }
  if (verify)
    return verify_archive(argv[optind]);
  char dst[4200];
  size_t n = strlen(argv[optind]);
  while (n > 1 && argv[optind][n - 1] == '/')
    n--;
  snprintf(dst, sizeof dst, "%.*s.tar.zst", (int)n, argv[optind]);
  return archive_session(argv[optind], out ? out : dst, (int)level, (int)threads);
}
