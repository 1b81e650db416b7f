#include "pirec/crypt.h"

#include "pirec/sink.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SS_HEADER      crypto_secretstream_xchacha20poly1305_HEADERBYTES
#define SS_ABYTES      crypto_secretstream_xchacha20poly1305_ABYTES
#define NAME_MAX_BYTES 1024
#define VERSION        1

_Static_assert(SS_HEADER == 24, "the header layout in crypt.h");
_Static_assert(SS_ABYTES + 4 == PIREC_CRYPT_CHUNK_EXTRA, "the chunk layout in crypt.h");
_Static_assert(8 + 4 + PIREC_CRYPT_ID_BYTES + SS_HEADER == PIREC_CRYPT_HEADER_BYTES, "the header size");
_Static_assert(PIREC_CRYPT_KEY_BYTES + crypto_box_SEALBYTES == PIREC_CRYPT_SEALED_BYTES, "sealed size");

struct pirec_crypt_key {
  unsigned char k[PIREC_CRYPT_KEY_BYTES];
  unsigned char id[PIREC_CRYPT_ID_BYTES];
};

int pirec_crypt_init(void)
{
  return sodium_init() < 0 ? -ENOSYS : 0;
}

void pirec_crypt_wipe(void *p, size_t len)
{
  if (p != NULL)
    sodium_memzero(p, len);
}

/* sodium_malloc memory is guarded and mlock'ed; a failed mlock (RLIMIT_MEMLOCK) makes it fail. */
static int key_alloc(struct pirec_crypt_key **out)
{
  if (pirec_crypt_init() < 0)
    return -ENOSYS;
  *out = sodium_malloc(sizeof **out);
  return *out ? 0 : -ENOMEM;
}

static void key_finish(struct pirec_crypt_key *key)
{
  static const unsigned char context[] = "pirec key id v1";
  crypto_generichash(key->id, sizeof key->id, key->k, sizeof key->k, context, sizeof context);
}

int pirec_crypt_key_new(struct pirec_crypt_key **out)
{
  int r = key_alloc(out);
  if (r == 0) {
    crypto_secretstream_xchacha20poly1305_keygen((*out)->k);
    key_finish(*out);
  }
  return r;
}

static int base64_decode(const char *text, unsigned char *bin, size_t n)
{
  size_t got = 0;
  const char *end = NULL;
  if (text == NULL ||
      sodium_base642bin(bin, n, text, strlen(text), " \t\r\n", &got, &end, sodium_base64_VARIANT_ORIGINAL) !=
          0 ||
      got != n || *end != '\0')
    return -EINVAL;
  return 0;
}

int pirec_crypt_key_from_text(const char *text, struct pirec_crypt_key **out)
{
  int r = key_alloc(out);
  if (r < 0)
    return r;
  if (base64_decode(text, (*out)->k, sizeof(*out)->k) < 0) {
    sodium_free(*out);
    *out = NULL;
    return -EINVAL;
  }
  key_finish(*out);
  return 0;
}

int pirec_crypt_key_dup(const struct pirec_crypt_key *key, struct pirec_crypt_key **out)
{
  int r = key_alloc(out);
  if (r == 0)
    memcpy(*out, key, sizeof *key);
  return r;
}

void pirec_crypt_base64(const unsigned char *bin, size_t n, char *text, size_t text_size)
{
  sodium_bin2base64(text, text_size, bin, n, sodium_base64_VARIANT_ORIGINAL);
}

void pirec_crypt_key_text(const struct pirec_crypt_key *key, char text[PIREC_CRYPT_KEY_TEXT])
{
  pirec_crypt_base64(key->k, sizeof key->k, text, PIREC_CRYPT_KEY_TEXT);
}

const unsigned char *pirec_crypt_key_id(const struct pirec_crypt_key *key)
{
  return key->id;
}

void pirec_crypt_key_free(struct pirec_crypt_key *key)
{
  if (key != NULL)
    sodium_free(key); /* wipes before unlocking and freeing */
}

int pirec_crypt_key_seal(const struct pirec_crypt_key *key, const unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES],
                         unsigned char sealed[PIREC_CRYPT_SEALED_BYTES])
{
  return crypto_box_seal(sealed, key->k, sizeof key->k, pk) == 0 ? 0 : -EINVAL;
}

int pirec_crypt_key_unseal(const unsigned char sealed[PIREC_CRYPT_SEALED_BYTES],
                           const unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES], const unsigned char *sk,
                           struct pirec_crypt_key **out)
{
  int r = key_alloc(out);
  if (r < 0)
    return r;
  if (crypto_box_seal_open((*out)->k, sealed, PIREC_CRYPT_SEALED_BYTES, pk, sk) != 0) {
    sodium_free(*out);
    *out = NULL;
    return -EACCES;
  }
  key_finish(*out);
  return 0;
}

int pirec_crypt_key_file(const struct pirec_crypt_key *key, const unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES],
                         unsigned char out[PIREC_CRYPT_KEY_FILE_BYTES])
{
  memcpy(out, PIREC_CRYPT_KEY_MAGIC, 8);
  out[8] = 1, out[9] = out[10] = out[11] = 0;
  memcpy(out + 12, key->id, PIREC_CRYPT_ID_BYTES);
  return pirec_crypt_key_seal(key, pk, out + 12 + PIREC_CRYPT_ID_BYTES);
}

/* ---- the lab's key pair ---- */

int pirec_crypt_keypair_new(unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES], unsigned char **sk)
{
  if (pirec_crypt_init() < 0)
    return -ENOSYS;
  *sk = sodium_malloc(crypto_box_SECRETKEYBYTES);
  if (*sk == NULL)
    return -ENOMEM;
  crypto_box_keypair(pk, *sk);
  return 0;
}

void pirec_crypt_secret_free(unsigned char *sk)
{
  if (sk != NULL)
    sodium_free(sk);
}

int pirec_crypt_public_parse(const char *text, unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES])
{
  if (pirec_crypt_init() < 0)
    return -ENOSYS;
  return base64_decode(text, pk, PIREC_CRYPT_PUBLIC_BYTES);
}

/* One "word base64" line of the secret key file into bin; 1 when it was that word, 0 when another,
 * -EINVAL when the word matched and the value did not parse. */
static int key_line(const char *line, size_t len, const char *word, unsigned char *bin, size_t n)
{
  size_t wl = strlen(word);
  char value[128];
  if (len <= wl || memcmp(line, word, wl) != 0 || line[wl] != ' ')
    return 0;
  if (len - wl - 1 >= sizeof value)
    return -EINVAL;
  memcpy(value, line + wl + 1, len - wl - 1);
  value[len - wl - 1] = '\0';
  int r = base64_decode(value, bin, n);
  sodium_memzero(value, sizeof value);
  return r < 0 ? r : 1;
}

int pirec_crypt_secret_parse(const char *text, unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES], unsigned char **sk,
                             char *why, size_t why_size)
{
  int have_pk = 0, have_sk = 0, line_no = 0;
  if (pirec_crypt_init() < 0)
    return -ENOSYS;
  *sk = sodium_malloc(crypto_box_SECRETKEYBYTES);
  if (*sk == NULL)
    return -ENOMEM;
  for (const char *p = text; *p; line_no++) {
    const char *nl = strchr(p, '\n');
    size_t len = nl ? (size_t)(nl - p) : strlen(p);
    int a = 0, b = 0;
    if (len > 0 && p[0] != '#') {
      a = key_line(p, len, "public", pk, PIREC_CRYPT_PUBLIC_BYTES);
      b = a == 0 ? key_line(p, len, "secret", *sk, crypto_box_SECRETKEYBYTES) : 0;
      if (a < 0 || b < 0 || (a == 0 && b == 0)) {
        snprintf(why, why_size, "line %d: expected 'public BASE64' or 'secret BASE64' (32 bytes each)",
                 line_no + 1);
        pirec_crypt_secret_free(*sk);
        *sk = NULL;
        return -EINVAL;
      }
    }
    have_pk |= a, have_sk |= b;
    p += len + (nl != NULL);
  }
  unsigned char check[PIREC_CRYPT_PUBLIC_BYTES];
  if (have_sk && have_pk &&
      (crypto_scalarmult_base(check, *sk) != 0 || memcmp(check, pk, sizeof check) != 0)) {
    snprintf(why, why_size, "its public and secret keys do not belong together");
    have_sk = 0;
  } else if (!have_sk || !have_pk) {
    snprintf(why, why_size, "missing the '%s' line", have_pk ? "secret" : "public");
  }
  if (!have_sk || !have_pk) {
    pirec_crypt_secret_free(*sk);
    *sk = NULL;
    return -EINVAL;
  }
  return 0;
}

int pirec_crypt_secret_format(const unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES], const unsigned char *sk,
                              char *out, size_t out_size)
{
  char p[PIREC_CRYPT_KEY_TEXT], s[PIREC_CRYPT_KEY_TEXT];
  pirec_crypt_base64(pk, PIREC_CRYPT_PUBLIC_BYTES, p, sizeof p);
  pirec_crypt_base64(sk, crypto_box_SECRETKEYBYTES, s, sizeof s);
  int n = snprintf(out, out_size,
                   "# pirec secret key: it opens every session sealed to the public key below.\n"
                   "# Keep it on the lab machine (pirec decrypt --key, pirec-remux --key), never on the Pi.\n"
                   "public %s\nsecret %s\n",
                   p, s);
  sodium_memzero(s, sizeof s);
  return n < 0 || (size_t)n >= out_size ? -ENOSPC : 0;
}

/* ---- writing ---- */

struct pirec_crypt_writer {
  crypto_secretstream_xchacha20poly1305_state st;
  unsigned char key[PIREC_CRYPT_KEY_BYTES];
  unsigned char id[PIREC_CRYPT_ID_BYTES];
  int started, finished;
  size_t name_len;
  char name[NAME_MAX_BYTES];
};

int pirec_crypt_writer_new(const struct pirec_crypt_key *key, const char *name,
                           struct pirec_crypt_writer **out)
{
  size_t n = strlen(name);
  if (n >= NAME_MAX_BYTES)
    return -ENAMETOOLONG;
  if (pirec_crypt_init() < 0)
    return -ENOSYS;
  struct pirec_crypt_writer *w = sodium_malloc(sizeof *w);
  if (w == NULL)
    return -ENOMEM;
  memset(w, 0, sizeof *w);
  memcpy(w->key, key->k, sizeof w->key);
  memcpy(w->id, key->id, sizeof w->id);
  memcpy(w->name, name, n);
  w->name_len = n;
  *out = w;
  return 0;
}

size_t pirec_crypt_chunk_size(size_t plain_len, int first)
{
  return (first ? PIREC_CRYPT_HEADER_BYTES : 0) + PIREC_CRYPT_CHUNK_EXTRA + plain_len;
}

static void put_u32(unsigned char *p, uint32_t v)
{
  p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8), p[2] = (unsigned char)(v >> 16),
  p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32(const unsigned char *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int pirec_crypt_writer_chunk(struct pirec_crypt_writer *w, const unsigned char *plain, size_t len, int first,
                             int final, unsigned char *out)
{
  if (len > PIREC_CRYPT_CHUNK_MAX)
    return -EMSGSIZE;
  if (w->finished || first == w->started)
    return -EINVAL;
  if (first) {
    memcpy(out, PIREC_CRYPT_MAGIC, 8);
    out[8] = VERSION, out[9] = out[10] = out[11] = 0;
    memcpy(out + 12, w->id, sizeof w->id);
    crypto_secretstream_xchacha20poly1305_init_push(&w->st, out + 12 + sizeof w->id, w->key);
    sodium_memzero(w->key, sizeof w->key); /* the stream state holds what it needs from here on */
    out += PIREC_CRYPT_HEADER_BYTES;
    w->started = 1;
  }
  put_u32(out, (uint32_t)(len + SS_ABYTES));
  unsigned char tag = final ? crypto_secretstream_xchacha20poly1305_TAG_FINAL
                            : crypto_secretstream_xchacha20poly1305_TAG_MESSAGE;
  crypto_secretstream_xchacha20poly1305_push(&w->st, out + 4, NULL, plain, len,
                                             (const unsigned char *)w->name, w->name_len, tag);
  w->finished = final;
  return 0;
}

void pirec_crypt_writer_free(struct pirec_crypt_writer *w)
{
  if (w != NULL)
    sodium_free(w);
}

/* ---- reading ---- */

int pirec_crypt_is_encrypted(const void *p, size_t len)
{
  return len >= 8 && memcmp(p, PIREC_CRYPT_MAGIC, 8) == 0;
}

struct pirec_crypt_reader {
  crypto_secretstream_xchacha20poly1305_state st;
  struct pirec_crypt_key key;
  int fd;
  int in_segment;  /* a header was read and no FINAL chunk yet */
  uint64_t offset; /* of the next byte to read */
  uint64_t chunk;  /* index of the next chunk in the file (all segments) */
  uint64_t err_chunk, err_offset;
  unsigned char *cbuf, *pbuf;
  size_t cap;
  size_t name_len;
  char name[NAME_MAX_BYTES];
  char why[256];
};

int pirec_crypt_reader_new(const struct pirec_crypt_key *key, const char *name, int fd,
                           struct pirec_crypt_reader **out)
{
  size_t n = strlen(name);
  if (n >= NAME_MAX_BYTES)
    return -ENAMETOOLONG;
  if (pirec_crypt_init() < 0)
    return -ENOSYS;
  struct pirec_crypt_reader *r = sodium_malloc(sizeof *r);
  if (r == NULL)
    return -ENOMEM;
  memset(r, 0, sizeof *r);
  r->key = *key;
  r->fd = fd;
  memcpy(r->name, name, n);
  r->name_len = n;
  *out = r;
  return 0;
}

/* Reads exactly n bytes; returns n, fewer at end of file, or a negative errno. */
static ssize_t read_full(int fd, unsigned char *buf, size_t n)
{
  size_t got = 0;
  while (got < n) {
    ssize_t k = read(fd, buf + got, n - got);
    if (k < 0 && errno == EINTR)
      continue;
    if (k < 0)
      return -errno;
    if (k == 0)
      break;
    got += (size_t)k;
  }
  return (ssize_t)got;
}

static int fail(struct pirec_crypt_reader *r, int err, uint64_t offset, const char *what)
{
  r->err_chunk = r->chunk;
  r->err_offset = offset;
  snprintf(r->why, sizeof r->why, "chunk %llu at offset %llu: %s", (unsigned long long)r->chunk,
           (unsigned long long)offset, what);
  return err;
}

/* A segment's header: checks magic, version and key id, and starts the stream. Returns 1, 0 at a
 * clean end of file, or an error. */
static int read_header(struct pirec_crypt_reader *r)
{
  unsigned char h[PIREC_CRYPT_HEADER_BYTES];
  uint64_t at = r->offset;
  ssize_t n = read_full(r->fd, h, sizeof h);
  if (n < 0)
    return fail(r, (int)n, at, strerror((int)-n));
  r->offset += (uint64_t)n;
  if (n == 0 && r->chunk > 0)
    return 0;
  if ((size_t)n < sizeof h)
    return fail(r, -ENODATA, at, "the file ends inside a segment header (truncated)");
  if (!pirec_crypt_is_encrypted(h, 8) || h[8] != VERSION)
    return fail(r, -EBADMSG, at, "not a segment header of a pirec encrypted file (damaged or removed bytes)");
  if (memcmp(h + 12, r->key.id, PIREC_CRYPT_ID_BYTES) != 0)
    return fail(r, -EACCES, at, "encrypted under another session key (wrong key or session.key)");
  if (crypto_secretstream_xchacha20poly1305_init_pull(&r->st, h + 12 + PIREC_CRYPT_ID_BYTES, r->key.k) != 0)
    return fail(r, -EBADMSG, at, "invalid stream header");
  r->in_segment = 1;
  return 1;
}

static int grow(struct pirec_crypt_reader *r, size_t n)
{
  if (n <= r->cap)
    return 0;
  unsigned char *c = realloc(r->cbuf, n);
  if (c == NULL)
    return -ENOMEM;
  r->cbuf = c;
  if (r->pbuf)
    sodium_memzero(r->pbuf, r->cap);
  free(r->pbuf);
  r->pbuf = malloc(n);
  r->cap = r->pbuf ? n : 0;
  return r->pbuf ? 0 : -ENOMEM;
}

int pirec_crypt_reader_next(struct pirec_crypt_reader *r, const unsigned char **plain, size_t *len)
{
  if (r->why[0])
    return -EBADMSG;
  if (!r->in_segment) {
    int h = read_header(r);
    if (h <= 0)
      return h;
  }
  uint64_t at = r->offset;
  unsigned char lb[4];
  ssize_t n = read_full(r->fd, lb, 4);
  if (n < 0)
    return fail(r, (int)n, at, strerror((int)-n));
  if (n < 4)
    return fail(r, -ENODATA, at,
                n == 0 ? "missing: the file ends before its final chunk (truncated, chunks removed, or the "
                         "recording was cut short by a crash)"
                       : "the file ends inside the chunk's length (truncated)");
  uint32_t clen = get_u32(lb);
  if (clen < SS_ABYTES || clen > PIREC_CRYPT_CHUNK_MAX + SS_ABYTES)
    return fail(r, -EBADMSG, at, "impossible chunk length (damaged)");
  if (grow(r, clen) < 0)
    return fail(r, -ENOMEM, at, "out of memory");
  n = read_full(r->fd, r->cbuf, clen);
  if (n < 0)
    return fail(r, (int)n, at, strerror((int)-n));
  if ((size_t)n < clen)
    return fail(r, -ENODATA, at,
                "the file ends inside this chunk (truncated, cut short by a crash, or its length damaged)");
  unsigned long long plen = 0;
  unsigned char tag = 0;
  if (crypto_secretstream_xchacha20poly1305_pull(&r->st, r->pbuf, &plen, &tag, r->cbuf, clen,
                                                 (const unsigned char *)r->name, r->name_len) != 0)
    return fail(r, -EBADMSG, at, "fails verification (damaged, reordered, or from another file)");
  r->offset += 4 + clen;
  r->chunk++;
  if (tag == crypto_secretstream_xchacha20poly1305_TAG_FINAL)
    r->in_segment = 0;
  *plain = r->pbuf;
  *len = (size_t)plen;
  return 1;
}

const char *pirec_crypt_reader_why(const struct pirec_crypt_reader *r)
{
  return r->why;
}

uint64_t pirec_crypt_reader_chunk(const struct pirec_crypt_reader *r)
{
  return r->err_chunk;
}

uint64_t pirec_crypt_reader_offset(const struct pirec_crypt_reader *r)
{
  return r->err_offset;
}

void pirec_crypt_reader_free(struct pirec_crypt_reader *r)
{
  if (r == NULL)
    return;
  if (r->pbuf)
    sodium_memzero(r->pbuf, r->cap);
  free(r->pbuf);
  free(r->cbuf);
  sodium_free(r);
}

/* ---- a sink's transform ---- */

static size_t tf_size(void *ctx, uint64_t index, size_t in_len)
{
  (void)ctx;
  return pirec_crypt_chunk_size(in_len, index == 0);
}

static int tf_apply(void *ctx, uint64_t index, const unsigned char *in, size_t in_len, int final,
                    unsigned char *out)
{
  return pirec_crypt_writer_chunk(ctx, in, in_len, index == 0, final, out);
}

static void tf_free(void *ctx)
{
  pirec_crypt_writer_free(ctx);
}

const char *pirec_crypt_name(const char *session_dir, const char *path)
{
  size_t n = session_dir ? strlen(session_dir) : 0;
  while (n > 1 && session_dir[n - 1] == '/')
    n--;
  if (n > 0 && strncmp(path, session_dir, n) == 0 && path[n] == '/')
    return path + n + 1;
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

int pirec_crypt_sink_transform(const struct pirec_crypt_key *key, const char *session_dir, const char *path,
                               struct pirec_sink_transform *tf)
{
  struct pirec_crypt_writer *w;
  int r = pirec_crypt_writer_new(key, pirec_crypt_name(session_dir, path), &w);
  if (r < 0)
    return r;
  tf->size = tf_size;
  tf->apply = tf_apply;
  tf->free = tf_free;
  tf->ctx = w;
  return 0;
}

/* ---- a recorder's encryption settings ---- */

int pirec_crypt_session_set(struct pirec_crypt_session *cs, const struct pirec_crypt_key *key,
                            const char *dir)
{
  pirec_crypt_session_clear(cs);
  if (key == NULL)
    return 0;
  cs->dir = strdup(dir ? dir : "");
  if (cs->dir == NULL || pirec_crypt_key_dup(key, &cs->key) < 0) {
    pirec_crypt_session_clear(cs);
    return -ENOMEM;
  }
  return 0;
}

void pirec_crypt_session_clear(struct pirec_crypt_session *cs)
{
  pirec_crypt_key_free(cs->key);
  free(cs->dir);
  cs->key = NULL;
  cs->dir = NULL;
}

int pirec_crypt_session_sink(const struct pirec_crypt_session *cs, const char *path,
                             struct pirec_sink_options *o, struct pirec_sink_transform *tf)
{
  if (cs == NULL || cs->key == NULL)
    return 0;
  int r = pirec_crypt_sink_transform(cs->key, cs->dir, path, tf);
  if (r == 0)
    o->transform = tf;
  return r;
}
