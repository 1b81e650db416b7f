#ifndef PIREC_CONTAINER_OF_H
#define PIREC_CONTAINER_OF_H

#include <stddef.h>

/* The object that embeds `ptr` as its member `member`: how a libuv callback, which receives the
 * handle, finds the object that owns the handle (STYLE.md, item 6). */
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif
