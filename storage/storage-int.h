#ifndef PIREC_STORAGE_INT_H
#define PIREC_STORAGE_INT_H

#include <stddef.h>

/* Reads a file of less than size bytes into buf (*len bytes, not terminated). Returns 0, -EFBIG
 * (size bytes or more), or a negative errno from open/read. */
int pirec__storage_read_small(const char *path, char *buf, size_t size, size_t *len);
/* Writes all of data to fd, retrying short writes. Returns 0 or a negative errno. */
int pirec__storage_write_all(int fd, const void *data, size_t len);

#endif
