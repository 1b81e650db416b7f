#ifndef PIREC_CRYPT_H
#define PIREC_CRYPT_H

/* Session files encrypted as they are written (docs/PRIVACY.md, docs/FORMATS.md "Encrypted files").
 *
 * Constructions, all libsodium's (https://doc.libsodium.org):
 *   - a session key (32 random bytes) encrypts every file of the session with
 *     crypto_secretstream_xchacha20poly1305 ("Encrypted streams and file encryption"): one
 *     stream per file and opening of it, one message ("chunk") per write batch of the sink, the
 *     file's name inside the session as additional data, the last chunk tagged FINAL at close;
 *   - the session key is sealed to the lab's public key with crypto_box_seal ("Sealed boxes") into
 *     the session's `session.key`, so only the holder of the secret key can read the session;
 *   - the key lives in sodium_malloc memory (guarded, locked with mlock, wiped by sodium_free).
 *
 * A file is one or more segments (an O_APPEND file gets a segment per opening):
 *   segment = header chunk+
 *   header  = "PIRECENC" (8) | version 1 (1) | 3 zero bytes | key id (16) | stream header (24)
 *   chunk   = ciphertext length (u32 little-endian) | ciphertext (17 + plaintext bytes)
 * The key id is a BLAKE2b hash of the key, so a wrong key is told apart from damage.
 *
 * Threads: a writer or reader is used by one thread at a time; keys are read-only after creation
 * and may be shared between threads. Errors are negative errno values; the library never prints.
 */

#include <stddef.h>
#include <stdint.h>

#define PIREC_CRYPT_KEY_BYTES    32 /* the session key */
#define PIREC_CRYPT_PUBLIC_BYTES 32 /* crypto_box public key */
#define PIREC_CRYPT_SECRET_BYTES 32 /* crypto_box secret key */
#define PIREC_CRYPT_SEALED_BYTES 80 /* session key sealed: 32 + crypto_box_SEALBYTES */
#define PIREC_CRYPT_ID_BYTES     16
#define PIREC_CRYPT_HEADER_BYTES 52           /* a segment's header */
#define PIREC_CRYPT_CHUNK_EXTRA  21           /* a chunk's bytes beyond its plaintext: length + tag + MAC */
#define PIREC_CRYPT_CHUNK_MAX    (256u << 20) /* largest plaintext of one chunk */
#define PIREC_CRYPT_KEY_TEXT     45           /* base64 of 32 bytes plus NUL */
#define PIREC_CRYPT_MAGIC        "PIRECENC"
#define PIREC_CRYPT_KEY_FILE     "session.key" /* the sealed session key in a session directory */

/* Initialises libsodium (idempotent, any thread). Returns 0 or -ENOSYS. */
int pirec_crypt_init(void);

/* ---- keys ---- */

struct pirec_crypt_key;

/* A new random session key in locked memory. Returns 0 and *out, or -ENOMEM (locked memory
 * exhausted: see RLIMIT_MEMLOCK) / -ENOSYS. Free with pirec_crypt_key_free(). */
int pirec_crypt_key_new(struct pirec_crypt_key **out);
/* A key from its base64 text (PIREC_CRYPT_KEY_TEXT - 1 characters). Returns 0, -EINVAL, -ENOMEM. */
int pirec_crypt_key_from_text(const char *text, struct pirec_crypt_key **out);
/* A copy of key. Returns 0 or -ENOMEM. */
int pirec_crypt_key_dup(const struct pirec_crypt_key *key, struct pirec_crypt_key **out);
/* Writes the key's base64 text into text (PIREC_CRYPT_KEY_TEXT bytes). The caller wipes it
 * (pirec_crypt_wipe) once it is sent. */
void pirec_crypt_key_text(const struct pirec_crypt_key *key, char text[PIREC_CRYPT_KEY_TEXT]);
/* The key's id (a hash that does not reveal the key). */
const unsigned char *pirec_crypt_key_id(const struct pirec_crypt_key *key);
/* Wipes and frees the key. NULL is a no-op. */
void pirec_crypt_key_free(struct pirec_crypt_key *key);

/* Seals key to the public key pk. Returns 0 or -EINVAL. */
int pirec_crypt_key_seal(const struct pirec_crypt_key *key, const unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES],
                         unsigned char sealed[PIREC_CRYPT_SEALED_BYTES]);
/* Opens a sealed session key with the lab's key pair. Returns 0 and *out, -EACCES (not sealed to
 * this key pair, or damaged), -ENOMEM. */
int pirec_crypt_key_unseal(const unsigned char sealed[PIREC_CRYPT_SEALED_BYTES],
                           const unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES], const unsigned char *sk,
                           struct pirec_crypt_key **out);

/* session.key: "PIRECKEY" | version 1 | 3 zero bytes | key id (16) | sealed key (80). */
#define PIREC_CRYPT_KEY_FILE_BYTES (12 + PIREC_CRYPT_ID_BYTES + PIREC_CRYPT_SEALED_BYTES)
#define PIREC_CRYPT_KEY_MAGIC      "PIRECKEY"
/* The session.key contents for key sealed to pk, into out (PIREC_CRYPT_KEY_FILE_BYTES). Returns 0
 * or -EINVAL. */
int pirec_crypt_key_file(const struct pirec_crypt_key *key, const unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES],
                         unsigned char out[PIREC_CRYPT_KEY_FILE_BYTES]);

/* Wipes len bytes at p so that the compiler cannot skip it (sodium_memzero). */
void pirec_crypt_wipe(void *p, size_t len);

/* ---- the lab's key pair ---- */

/* A lab key pair: pk in caller memory; the secret key in locked memory, *sk, freed with
 * pirec_crypt_secret_free(). Returns 0, -ENOMEM, -ENOSYS. */
int pirec_crypt_keypair_new(unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES], unsigned char **sk);
void pirec_crypt_secret_free(unsigned char *sk);
/* Parses a public key given as base64 text (the `[storage] encrypt_to` value). Returns 0 or -EINVAL. */
int pirec_crypt_public_parse(const char *text, unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES]);
/* Writes base64 of n bytes (n <= 64) into text (at least 89 bytes). */
void pirec_crypt_base64(const unsigned char *bin, size_t n, char *text, size_t text_size);

/* The secret key file `pirec keys new` writes (mode 0600):
 *   # pirec secret key ...
 *   public <base64>
 *   secret <base64>
 * Parses its text. On success *sk is locked memory (pirec_crypt_secret_free). Returns 0, or
 * -EINVAL with why filled ("line 2: ..."), -ENOMEM. The caller wipes text afterwards. */
int pirec_crypt_secret_parse(const char *text, unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES], unsigned char **sk,
                             char *why, size_t why_size);
/* Formats the secret key file's text into out (at least 256 bytes); the caller wipes it. */
int pirec_crypt_secret_format(const unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES], const unsigned char *sk,
                              char *out, size_t out_size);

/* ---- writing a stream ---- */

struct pirec_crypt_writer;

/* A writer for one opening of the file called name inside the session (its additional data), under
 * key (copied). Its state is in locked memory. Returns 0 and *out, or -ENOMEM / -ENAMETOOLONG. */
int pirec_crypt_writer_new(const struct pirec_crypt_key *key, const char *name,
                           struct pirec_crypt_writer **out);
/* The bytes the next chunk of plain_len plaintext bytes takes in the file (the segment's header
 * included when first is 1). */
size_t pirec_crypt_chunk_size(size_t plain_len, int first);
/* Encrypts plain as the stream's next chunk into out (pirec_crypt_chunk_size(len, first) bytes; the
 * header is written before the first chunk). final tags the stream's last chunk. Returns 0, or
 * -EMSGSIZE (len > PIREC_CRYPT_CHUNK_MAX), -EINVAL (first out of order, or after final). */
int pirec_crypt_writer_chunk(struct pirec_crypt_writer *w, const unsigned char *plain, size_t len, int first,
                             int final, unsigned char *out);
/* Wipes and frees. NULL is a no-op. */
void pirec_crypt_writer_free(struct pirec_crypt_writer *w);

/* ---- a sink's transform ---- */

struct pirec_sink_transform;
/* Fills tf so that a sink (io/sink.h) encrypts its file under key as the file named name inside
 * the session: name is path relative to session_dir (path's last component when it is not inside
 * it). tf->ctx is a writer the sink frees. Returns 0, -ENOMEM, -ENAMETOOLONG. */
int pirec_crypt_sink_transform(const struct pirec_crypt_key *key, const char *session_dir, const char *path,
                               struct pirec_sink_transform *tf);
/* The name a file at path has inside session_dir, as the sink transform binds it. */
const char *pirec_crypt_name(const char *session_dir, const char *path);

/* A recorder's encryption settings for its sinks: the session key (a copy) and the session
 * directory files are named against. Zeroed: not encrypting. Loop thread. */
struct pirec_crypt_session {
  struct pirec_crypt_key *key;
  char *dir;
};
/* Copies key and dir in (key NULL: not encrypting from now on), wiping the old key. Returns 0 or
 * -ENOMEM (then not encrypting: the caller refuses to record). */
int pirec_crypt_session_set(struct pirec_crypt_session *cs, const struct pirec_crypt_key *key,
                            const char *dir);
/* Wipes and frees what cs holds; cs is then zeroed. */
void pirec_crypt_session_clear(struct pirec_crypt_session *cs);
struct pirec_sink_options;
/* For a sink about to be created for path: when cs encrypts, fills tf and points o->transform at
 * it (tf must live until pirec_sink_new returns). Returns 0 or a negative errno. */
int pirec_crypt_session_sink(const struct pirec_crypt_session *cs, const char *path,
                             struct pirec_sink_options *o, struct pirec_sink_transform *tf);

/* ---- reading a stream ---- */

/* 1 when the len bytes at p begin an encrypted file (its magic), else 0. */
int pirec_crypt_is_encrypted(const void *p, size_t len);

struct pirec_crypt_reader;

/* A reader of the file named name (as written) from the open fd, positioned at its start. Returns 0
 * and *out, or -ENOMEM. */
int pirec_crypt_reader_new(const struct pirec_crypt_key *key, const char *name, int fd,
                           struct pirec_crypt_reader **out);
/* The next verified chunk: *plain points to len bytes valid until the next call. Returns 1 with a
 * chunk, 0 at a clean end (the last segment ended with its FINAL chunk, then end of file), or a
 * negative errno: -EBADMSG (a chunk fails verification: damaged, reordered, from another file or
 * stream), -EACCES (a segment under another key), -ENODATA (the file ends inside a chunk or after a
 * chunk that is not FINAL: truncated, a removed chunk, a crash), -EIO and others from read(2).
 * After an error pirec_crypt_reader_why() says which chunk at which offset; nothing past it is
 * returned. */
int pirec_crypt_reader_next(struct pirec_crypt_reader *r, const unsigned char **plain, size_t *len);
/* The last error's description, e.g. "chunk 3 at offset 1049036: fails verification (damaged,
 * reordered or from another file)"; "" before any error. */
const char *pirec_crypt_reader_why(const struct pirec_crypt_reader *r);
/* The index of the chunk the last error is about, and its file offset. */
uint64_t pirec_crypt_reader_chunk(const struct pirec_crypt_reader *r);
uint64_t pirec_crypt_reader_offset(const struct pirec_crypt_reader *r);
/* Wipes and frees. NULL is a no-op. Does not close fd. */
void pirec_crypt_reader_free(struct pirec_crypt_reader *r);

#endif
