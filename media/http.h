#ifndef PIREC_HTTP_H
#define PIREC_HTTP_H

/* HTTP/1.x message heads and whole replies. RTSP (RFC 2326) borrows HTTP's message syntax, so
 * rtsp.c frames its messages with the same head, header and Content-Length readers: one parser of
 * those for both protocols. Pure functions over caller memory; errors are negative errno values. */

#include <stddef.h>
#include <stdint.h>

/* One past the blank line ("\r\n\r\n") that ends a message head in p[0..len), or NULL. */
const uint8_t *pirec_http_head_end(const uint8_t *p, size_t len);

/* Finds header name (case-insensitive) in a message head (the start line is skipped). Returns 1
 * and the value with surrounding blanks trimmed (pointing into msg), or 0. */
int pirec_http_header(const uint8_t *msg, size_t len, const char *name, const char **value,
                      size_t *value_len);

/* The Content-Length of a message head: 1 and *out when present and a plain decimal number, 0 when
 * absent, -EBADMSG when malformed. */
int pirec_http_content_length(const uint8_t *msg, size_t head_len, unsigned long long *out);

/* The three-digit code at msg[9] of a status line ("HTTP/1.1 200 OK", "RTSP/1.0 200 OK") whose
 * first 9 bytes the caller checked; msg holds at least 12 bytes. The code, or -EBADMSG. */
int pirec_http_status_code(const uint8_t *msg);

/* Parses a whole HTTP/1.x reply read until the server closed the connection (msg, len). Returns
 * the status code with *body and *body_len set to the body: Content-Length bytes when the header
 * is there, the decoded bytes of a chunked reply (decoded in place, so msg is changed), or
 * everything after the header block otherwise. Returns -EBADMSG for no status line, a malformed
 * length or chunk, or a transfer coding other than chunked; -ENODATA when the reply was cut off
 * (no end of headers, fewer bytes than declared, no last chunk). */
int pirec_http_reply(uint8_t *msg, size_t len, uint8_t **body, size_t *body_len);

#endif
