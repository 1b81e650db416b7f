#ifndef PIREC_STORAGE_H
#define PIREC_STORAGE_H

/* Sessions at rest: the lab's key files, a session's sealed key, decryption of encrypted session
 * files, and the `pirec keys`, `pirec decrypt` and `pirec archive` commands (docs/PRIVACY.md).
 *
 * These are tools for the lab machine and the command line: they use plain blocking file I/O on
 * the calling thread (no loop). Errors are negative errno values with a line in why naming the
 * file, and where it applies the chunk and offset. The library never prints; the *_main functions
 * are commands and print their own messages.
 */

#include <stddef.h>
#include <stdint.h>

#include "pirec/crypt.h"

/* Reads the lab's secret key file at path (`pirec keys new`). *sk is locked memory, freed with
 * pirec_crypt_secret_free(). Returns 0, or a negative errno with why ("'lab.key' line 2: ..."). */
int pirec_storage_secret_load(const char *path, unsigned char pk[PIREC_CRYPT_PUBLIC_BYTES],
                              unsigned char **sk, char *why, size_t why_size);

/* The session key of the session directory dir: its session.key opened with the secret key file
 * key_path. Returns 0 and *out (pirec_crypt_key_free), -ENOENT (no session.key: not encrypted),
 * -EACCES (sealed to another key pair), or another negative errno, with why. */
int pirec_storage_session_key(const char *dir, const char *key_path, struct pirec_crypt_key **out, char *why,
                              size_t why_size);

/* Decrypts the encrypted file in_fd (named name inside its session) into out_fd, chunk by chunk,
 * writing only verified plaintext. Returns 0 when the whole file verified; otherwise the reader's
 * error (pirec_crypt_reader_next) with why naming the chunk and offset, the verified chunks before
 * it written. *written gets the plaintext bytes written. */
int pirec_storage_decrypt_fd(const struct pirec_crypt_key *key, const char *name, int in_fd, int out_fd,
                             uint64_t *written, char *why, size_t why_size);

/* Decrypts the file at path into memory (*data, *len; free() it after wiping). On an error the
 * verified prefix is returned too (*data, *len) with the error and why; the caller decides. */
int pirec_storage_decrypt_memory(const struct pirec_crypt_key *key, const char *name, const char *path,
                                 unsigned char **data, size_t *len, char *why, size_t why_size);

/* `pirec keys new [--out PREFIX]` */
int pirec_storage_keys_main(int argc, char **argv);
/* `pirec decrypt SESSION --key FILE [--out DIR]` */
int pirec_storage_decrypt_main(int argc, char **argv);
/* `pirec archive SESSION [--out FILE] [--level N] [--threads N]`, `pirec archive --verify FILE` */
int pirec_storage_archive_main(int argc, char **argv);

#endif
