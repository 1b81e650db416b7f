#ifndef PIREC_RTSP_H
#define PIREC_RTSP_H

/* RTSP over TCP with interleaved RTP ($ framing, RFC 2326 section 10.12): the framer that cuts a
 * connection's bytes into messages and interleaved packets, a response's status, and control URLs.
 * Message heads are read with http.h. No I/O, no threads, no logging; one thread at a time.
 * Errors are negative errno values. */

#include <stddef.h>
#include <stdint.h>

#include "pirec/bytebuf.h"

#include <uv.h>

enum pirec_rtsp_item_kind {
  PIREC_RTSP_MESSAGE = 1,     /* a request or response: header block plus Content-Length body */
  PIREC_RTSP_INTERLEAVED = 2, /* '$', channel, 16-bit length, data */
};

struct pirec_rtsp_item {
  enum pirec_rtsp_item_kind kind;
  int channel;         /* INTERLEAVED */
  const uint8_t *data; /* INTERLEAVED: the packet; MESSAGE: the header block (ends "\r\n\r\n") */
  size_t len;
  const char *body; /* MESSAGE: the body (not NUL-terminated), len body_len */
  size_t body_len;
};

/* A plain value embedded in its owner: _init, then _free (NULL or a freed framer: no-op). */
struct pirec_rtsp_framer {
  struct pirec_bytebuf buf;
  size_t max_message;
  uint64_t skipped; /* bytes thrown away while resynchronising */
};

/* max_message bounds a message's header block plus body. Returns 0 or -ENOMEM. */
int pirec_rtsp_framer_init(struct pirec_rtsp_framer *f, size_t max_message);
void pirec_rtsp_framer_free(struct pirec_rtsp_framer *f);
/* Forgets every buffered byte (a new connection). */
void pirec_rtsp_framer_reset(struct pirec_rtsp_framer *f);
/* Where the next read may land and how much fits: 64 KiB + 4 (NULL and *avail 0 only if that
 * cannot be made, which the fixed size rules out). */
uint8_t *pirec_rtsp_framer_space(struct pirec_rtsp_framer *f, size_t *avail);
/* The same space as a libuv read buffer, for a connection's uv_alloc_cb (a NULL base when no
 * space can be made: libuv then fails the read with UV_ENOBUFS). */
uv_buf_t pirec_rtsp_framer_read_buf(struct pirec_rtsp_framer *f);
void pirec_rtsp_framer_fill(struct pirec_rtsp_framer *f, size_t n);
/* Returns 1 and the next item (valid until the next call on f), 0 when more bytes are needed,
 * -EBADMSG when garbage was skipped (the caller counts it and calls again), -EMSGSIZE when a
 * message outgrew max_message (it is skipped up to its end). */
int pirec_rtsp_framer_next(struct pirec_rtsp_framer *f, struct pirec_rtsp_item *item);

/* The status code of a response ("RTSP/1.0 200 OK"), or -EBADMSG. */
int pirec_rtsp_status(const uint8_t *msg, size_t len);

/* Resolves a media's control attribute against base (the Content-Base or the request URL) as
 * FFmpeg does: absolute URLs are kept, "*" or "" mean base, anything else is appended after a '/'.
 * Returns 0 or -ENAMETOOLONG. */
int pirec_rtsp_control_url(const char *base, const char *control, char *out, size_t cap);

#endif
