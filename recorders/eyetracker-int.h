#ifndef PIREC_EYETRACKER_INT_H
#define PIREC_EYETRACKER_INT_H

/* Internals of the eye tracker client (not installed). Loop thread only. */

#include <stddef.h>
#include <stdint.h>

struct pirec_sink;
struct pirec__et_mkv;

/* A Matroska writer for stream-copied H.264 whose bytes go into sink. Nothing is written until the
 * first access unit, which must hold SPS, PPS and an IDR slice: its parameter sets become the
 * track's codec private data and its SPS the track's size. The output is not seekable (unknown
 * segment size, clusters of at most 1 s), so a file cut short stays readable. */
int pirec__et_mkv_new(struct pirec_sink *sink, struct pirec__et_mkv **out);
/* Writes one Annex B access unit at pts_ns (relative to the first; stored in ms, kept strictly
 * increasing). Returns 0, -EINVAL (the first unit cannot start a file), or the first write error
 * (after which every call returns it). */
int pirec__et_mkv_write(struct pirec__et_mkv *m, const uint8_t *au, size_t len, int keyframe,
                        int64_t pts_ns);
int pirec__et_mkv_started(const struct pirec__et_mkv *m);
/* Writes the trailer (when a header was written). Returns 0 or the first error. */
int pirec__et_mkv_finish(struct pirec__et_mkv *m);
uint64_t pirec__et_mkv_bytes(const struct pirec__et_mkv *m);
void pirec__et_mkv_free(struct pirec__et_mkv *m);

#endif
