#ifndef PIREC_REMUX_INTERNAL_H
#define PIREC_REMUX_INTERNAL_H

#include "pirec/remux.h"

/* Mapping of input packets (decode order) to presentation ranks, for streams with B-frames.
 * Returns 0 with rank[i] for each of the first n complete packets (heap, caller frees), or a
 * negative error with err set. */
struct AVFormatContext;

#endif
