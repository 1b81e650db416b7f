#ifndef PIREC_CAMERA_INT_H
#define PIREC_CAMERA_INT_H

/* Internals shared by the camera's files (not installed). */

#include "pirec/camera.h"

#include <stdatomic.h>

struct pirec__rpicam;

/* The rpicam-vid source (camera-rpicam.c). */
int pirec__rpicam_open(const struct pirec_camera_settings *s, struct pirec__rpicam **out,
                       struct pirec_camera_format *fmt, char **message);
int pirec__rpicam_read(struct pirec__rpicam *rp, struct pirec_camera_frame *frame, atomic_int *interrupted);
void pirec__rpicam_interrupt(struct pirec__rpicam *rp);
void pirec__rpicam_free(struct pirec__rpicam *rp);

/* Bytes to put at the start of an elementary-stream file before the first frame (H.264/HEVC
 * parameter sets from the container's extradata in Annex B form), or len 0. Valid until free. */
void pirec__camera_source_stream_header(const struct pirec_camera_source *src, const uint8_t **data,
                                        size_t *len);

/* 1 when s is a URL source read over the network (a "://" URL other than file:), whose end of
 * stream means the peer went away, not that the recording is over; 0 for files, file: and pipe:
 * URLs and every other source kind. */
int pirec__camera_source_is_network(const struct pirec_camera_settings *s);

/* Formats into a malloc'd string (NULL when out of memory). */
char *pirec__camera_strdupf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
