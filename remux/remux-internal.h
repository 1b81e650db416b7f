#ifndef PIREC_REMUX_INTERNAL_H
#define PIREC_REMUX_INTERNAL_H

/* Shared by the engine (remux.c, timing.c) and the command driver (run.c). */
#include "pirec/remux.h"

#include <stddef.h>

/* What pirec-remux writes as the Matroska WritingApp (and MP4 encoder tag) of its outputs, so a
 * later scan does not take them for recordings. */
#define PIREC__REMUX_WRITING_APP "pirec-remux"

/* 1 if path is a Matroska file whose WritingApp says pirec-remux wrote it. Reads only the first
 * 4 KiB (the EBML header and the Segment's Info), so it is cheap enough for a directory scan;
 * 0 for anything else, unreadable files included. */
int pirec__remux_is_own_output(const char *path);

/* pirec_remux_verify with progress: checking an output runs a dry remux of its input, which reads
 * the whole input, and a supervisor must see that the child is alive. */
int pirec__remux_verify(const char *output_path, const struct pirec_remux_options *options,
                        struct pirec_remux_result *res, pirec_remux_progress_cb progress, void *user);

/* 1 if name ends with an elementary-stream extension (.h264, .264, .mjpeg, .mjpg, .hevc, .h265). */
int pirec__remux_is_raw_name(const char *name);

/* Grows *array, a malloc'd array of *cap items of elem bytes (NULL and 0 at first), so that it
 * holds item n. Returns 0, or -ENOMEM with the array as it was. */
int pirec__remux_grow(void *array, size_t n, size_t *cap, size_t elem);

#endif
