#ifndef PIREC_STORAGE_INT_H
#define PIREC_STORAGE_INT_H

#include <stddef.h>

/* Reads a file of less than size bytes into buf (*len bytes, not terminated). Returns 0, -EFBIG
 * (size bytes or more), or a negative errno from open/read. */
int pirec__storage_read_small(const char *path, char *buf, size_t size, size_t *len);
/* Writes all of data to fd, retrying short writes. Returns 0 or a negative errno. */
int pirec__storage_write_all(int fd, const void *data, size_t len);

/* SHA-256 of a stream on a thread of its own (hasher.c). Feed buffers in order between _begin and
 * _end; _feed returns once the previous buffer is hashed and the thread has taken this one, so the
 * caller must not change data until its next _feed or _end returns. _end writes lowercase hex
 * (65 bytes with the NUL). _new returns 0 or a negative errno; _free accepts NULL. */
struct pirec__hasher;
int pirec__hasher_new(struct pirec__hasher **out);
int pirec__hasher_begin(struct pirec__hasher *h);
void pirec__hasher_feed(struct pirec__hasher *h, const void *data, size_t len);
void pirec__hasher_end(struct pirec__hasher *h, char hex[65]);
void pirec__hasher_free(struct pirec__hasher *h);

#endif
