/* SHA-256 on a thread of its own, so `pirec archive` reads and compresses while it hashes (the
 * manifest's hashing was the archive's bottleneck on the thread that also read and fed zstd). One
 * buffer is in flight at a time: pirec__hasher_feed() waits until the previous one is hashed, so a
 * caller alternating two buffers may refill the one it fed before last. SHA-256 is libcrypto's
 * (OpenSSL EVP: SHA-NI or the ARMv8 crypto extensions where the CPU has them). */

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdlib.h>

#include "storage-int.h"

struct pirec__hasher {
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  EVP_MD_CTX *ctx;
  const void *data; /* the buffer to hash, NULL when the thread is idle */
  size_t len;
  int quit;
};

static void *hasher_main(void *arg)
{
  struct pirec__hasher *h = arg;
  pthread_mutex_lock(&h->lock);
  for (;;) {
    while (!h->data && !h->quit)
      pthread_cond_wait(&h->cond, &h->lock);
    if (!h->data)
      break;
    const void *p = h->data;
    size_t n = h->len;
    pthread_mutex_unlock(&h->lock);
    EVP_DigestUpdate(h->ctx, p, n);
    pthread_mutex_lock(&h->lock);
    h->data = NULL;
    pthread_cond_broadcast(&h->cond);
  }
  pthread_mutex_unlock(&h->lock);
  return NULL;
}

int pirec__hasher_new(struct pirec__hasher **out)
{
  struct pirec__hasher *h = calloc(1, sizeof *h);
  *out = NULL;
  if (!h || !(h->ctx = EVP_MD_CTX_new())) {
    free(h);
    return -ENOMEM;
  }
  pthread_mutex_init(&h->lock, NULL);
  pthread_cond_init(&h->cond, NULL);
  int r = pthread_create(&h->thread, NULL, hasher_main, h);
  if (r != 0) {
    pthread_cond_destroy(&h->cond);
    pthread_mutex_destroy(&h->lock);
    EVP_MD_CTX_free(h->ctx);
    free(h);
    return -r;
  }
  *out = h;
  return 0;
}

/* Until the buffer in flight is hashed. */
static void hasher_wait(struct pirec__hasher *h)
{
  pthread_mutex_lock(&h->lock);
  while (h->data)
    pthread_cond_wait(&h->cond, &h->lock);
  pthread_mutex_unlock(&h->lock);
}

int pirec__hasher_begin(struct pirec__hasher *h)
{
  hasher_wait(h);
  return EVP_DigestInit_ex(h->ctx, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
}

void pirec__hasher_feed(struct pirec__hasher *h, const void *data, size_t len)
{
  if (len == 0)
    return;
  pthread_mutex_lock(&h->lock);
  while (h->data)
    pthread_cond_wait(&h->cond, &h->lock);
  h->data = data;
  h->len = len;
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->lock);
}

void pirec__hasher_end(struct pirec__hasher *h, char hex[65])
{
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned len = 0;
  hasher_wait(h);
  EVP_DigestFinal_ex(h->ctx, d, &len);
  sodium_bin2hex(hex, 65, d, len < 32 ? len : 32);
}

void pirec__hasher_free(struct pirec__hasher *h)
{
  if (!h)
    return;
  pthread_mutex_lock(&h->lock);
  h->quit = 1;
  pthread_cond_broadcast(&h->cond);
  pthread_mutex_unlock(&h->lock);
  pthread_join(h->thread, NULL);
  pthread_cond_destroy(&h->cond);
  pthread_mutex_destroy(&h->lock);
  EVP_MD_CTX_free(h->ctx);
  free(h);
}
