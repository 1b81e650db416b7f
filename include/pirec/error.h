#ifndef PIREC_ERROR_H
#define PIREC_ERROR_H

/* Errors across pirec are negative errno values (libuv's UV_E* and FFmpeg's AVERROR(e) are the
 * same numbers on Linux). FFmpeg's tagged codes (AVERROR_EOF, AVERROR_INVALIDDATA, ...) are negative
 * too and are understood by pirec_strerror(), and so are libuv's codes beyond errno's range (UV_EOF,
 * UV_EAI_*). */

/* Returns a human-readable message for a negative errno or FFmpeg error code. The string lives
 * until the next call on the same thread; it is never NULL. Thread-safe. */
const char *pirec_strerror(int err);

#endif
