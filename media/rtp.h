#ifndef PIREC_RTP_H
#define PIREC_RTP_H

/* RTP, RTCP, RTSP framing, SDP and H.264 (RFC 6184) pieces used by the eye tracker client and its
 * simulator. Everything here is a pure function or a small state machine over caller memory: no
 * I/O, no threads, no logging. Each object is used by one thread at a time.
 *
 * Time: RTP timestamps are 32-bit counters at the stream's clock rate (from the SDP rtpmap); they
 * wrap, so pirec_rtp_clock unwraps them into 64-bit "extended" timestamps. An RTCP Sender Report
 * pairs one RTP timestamp with the sender's NTP wall time; from then on
 *     device_ns = sr_ns + floor((ext_ts - sr_ext_ts) * 1e9 / clock_rate)
 * Samples before the first Sender Report have no device time (INT64_MIN).
 *
 * Errors are negative errno values: -EBADMSG for malformed input, -ENOMEM, -EMSGSIZE.
 */

#include <stddef.h>
#include <stdint.h>

/* ---- RTP (RFC 3550) ---- */

struct pirec_rtp_packet {
  int marker;
  int pt; /* payload type 0..127 */
  uint16_t seq;
  uint32_t ts;
  uint32_t ssrc;
  const uint8_t *payload; /* points into the parsed buffer (CSRCs, extension and padding removed) */
  size_t payload_len;
};

/* Parses one RTP packet. Returns 0, or -EBADMSG (short, version != 2, bad padding or extension
 * length, an RTCP packet type). */
int pirec_rtp_parse(const uint8_t *buf, size_t len, struct pirec_rtp_packet *out);

/* Writes a 12-byte RTP header (version 2, no CSRC, no extension) into out. Returns 12. */
size_t pirec_rtp_write_header(uint8_t *out, int marker, int pt, uint16_t seq, uint32_t ts, uint32_t ssrc);

/* ---- RTCP Sender Reports ---- */

struct pirec_rtcp_sr {
  uint32_t ssrc;
  uint64_t ntp;    /* 32.32 fixed point seconds since 1900 */
  uint32_t rtp_ts; /* the RTP timestamp taken at the instant ntp names */
  uint32_t packets, octets;
};

/* Walks a compound RTCP packet. Returns 1 and *out for the first Sender Report, 0 when the compound
 * packet is well formed but holds none (receiver reports, SDES, BYE), -EBADMSG otherwise. */
int pirec_rtcp_parse_sr(const uint8_t *buf, size_t len, struct pirec_rtcp_sr *out);

/* Writes a Sender Report without report blocks (28 bytes). Returns 28. */
size_t pirec_rtcp_write_sr(uint8_t *out, const struct pirec_rtcp_sr *sr);

/* NTP 32.32 <-> nanoseconds since the Unix epoch. Rounded to nearest; ns -> ntp -> ns is exact. */
int64_t pirec_ntp_to_unix_ns(uint64_t ntp);
uint64_t pirec_unix_ns_to_ntp(int64_t unix_ns);

/* ---- clock mapping ---- */

struct pirec_rtp_clock {
  uint32_t rate; /* Hz, > 0 */
  int have_ts;
  int64_t ext_last; /* the last extended timestamp seen */
  int have_sr;
  int64_t sr_ext; /* extended RTP timestamp of the latest Sender Report */
  int64_t sr_ns;  /* its NTP time as Unix ns */
  uint64_t sr_count;
};

void pirec_rtp_clock_init(struct pirec_rtp_clock *c, uint32_t rate);
/* Unwraps ts against the last timestamp seen (the nearest 64-bit value) and remembers it. */
int64_t pirec_rtp_clock_extend(struct pirec_rtp_clock *c, uint32_t ts);
/* Takes a Sender Report's pair. The RTP timestamp is unwrapped against the last data timestamp. */
void pirec_rtp_clock_sr(struct pirec_rtp_clock *c, uint32_t rtp_ts, int64_t unix_ns);
/* Device time of an extended timestamp, or INT64_MIN before the first Sender Report. */
int64_t pirec_rtp_clock_device_ns(const struct pirec_rtp_clock *c, int64_t ext_ts);
/* floor(ticks * 1e9 / rate) without overflow; the simulator stamps with the same rounding. */
int64_t pirec_rtp_ticks_to_ns(int64_t ticks, uint32_t rate);

/* ---- sequence numbers ---- */

struct pirec_rtp_seq {
  int started;
  uint64_t ext_max; /* highest extended sequence number seen */
  uint64_t received;
  uint64_t lost; /* sum of gaps */
  uint64_t late; /* duplicates and packets older than ext_max */
};

/* Accounts for seq. Returns the number of packets missing just before this one (>= 0), or -1 for
 * a late or duplicate packet. Forward jumps of up to 32767 count as losses. */
int64_t pirec_rtp_seq_update(struct pirec_rtp_seq *s, uint16_t seq);

/* ---- RTSP over TCP with interleaved RTP ($ framing, RFC 2326 section 10.12) ---- */

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

struct pirec_rtsp_framer {
  uint8_t *buf;
  size_t cap, start, end;
  size_t max_message;
  uint64_t skipped; /* bytes thrown away while resynchronising */
};

/* max_message bounds a message's header block plus body. Returns 0 or -ENOMEM. */
int pirec_rtsp_framer_init(struct pirec_rtsp_framer *f, size_t max_message);
void pirec_rtsp_framer_free(struct pirec_rtsp_framer *f);
/* Where the next read may land and how much fits (at least 64 KiB + 4 after init). */
uint8_t *pirec_rtsp_framer_space(struct pirec_rtsp_framer *f, size_t *avail);
void pirec_rtsp_framer_fill(struct pirec_rtsp_framer *f, size_t n);
/* Returns 1 and the next item (valid until the next call on f), 0 when more bytes are needed,
 * -EBADMSG when garbage was skipped (the caller counts it and calls again), -EMSGSIZE when a
 * message outgrew max_message (it is skipped up to its end). */
int pirec_rtsp_framer_next(struct pirec_rtsp_framer *f, struct pirec_rtsp_item *item);

/* Finds header name (case-insensitive) in a header block. Returns 1 and the trimmed value, or 0. */
int pirec_rtsp_header(const uint8_t *msg, size_t len, const char *name, const char **value,
                      size_t *value_len);
/* The status code of a response ("RTSP/1.0 200 OK"), or -EBADMSG. */
int pirec_rtsp_status(const uint8_t *msg, size_t len);

/* ---- HTTP replies ---- */

/* Parses a whole HTTP/1.x reply read until the server closed the connection (msg, len). Returns
 * the status code with *body and *body_len set to the body: Content-Length bytes when the header
 * is there, the decoded bytes of a chunked reply (decoded in place, so msg is changed), or
 * everything after the header block otherwise. Returns -EBADMSG for no status line, a malformed
 * length or chunk, or a transfer coding other than chunked; -ENODATA when the reply was cut off
 * (no end of headers, fewer bytes than declared, no last chunk). */
int pirec_http_reply(uint8_t *msg, size_t len, uint8_t **body, size_t *body_len);

/* ---- SDP ---- */

#define PIREC_SDP_MAX_MEDIA 4

struct pirec_sdp_media {
  char media[16]; /* "video", "application", ... */
  int pt;
  char encoding[64]; /* rtpmap encoding name, e.g. "H264", "com.pupillabs.gaze1" */
  uint32_t clock_rate;
  char control[512]; /* a=control value, "" when absent */
  char fmtp[512];    /* a=fmtp parameters for pt, "" when absent */
};

struct pirec_sdp {
  size_t n_media;
  struct pirec_sdp_media media[PIREC_SDP_MAX_MEDIA];
};

/* Parses a session description. Returns 0, or -EBADMSG (no "v=0", no m= line, a media line without
 * a usable payload type or rtpmap, a clock rate of 0). Media beyond PIREC_SDP_MAX_MEDIA are ignored. */
int pirec_sdp_parse(const char *text, size_t len, struct pirec_sdp *out);

/* Resolves a media's control attribute against base (the Content-Base or the request URL) as
 * FFmpeg does: absolute URLs are kept, "*" or "" mean base, anything else is appended after a '/'.
 * Returns 0 or -ENAMETOOLONG. */
int pirec_rtsp_control_url(const char *base, const char *control, char *out, size_t cap);

/* ---- H.264 over RTP (RFC 6184, packetization modes 0 and 1) ---- */

struct pirec_h264_au {
  const uint8_t *data; /* Annex B: every NAL unit preceded by 00 00 00 01 */
  size_t len;
  uint32_t rtp_ts;
  int keyframe;   /* holds an IDR slice */
  int has_params; /* holds an SPS and a PPS */
  int damaged;    /* a packet of it was lost or malformed: do not write it */
  int complete;   /* ended by the marker bit (0: ended because the timestamp changed) */
};

typedef void (*pirec_h264_au_cb)(const struct pirec_h264_au *au, void *user);

struct pirec_h264_depay {
  uint8_t *buf;
  size_t cap, len, max_au;
  int have_ts;
  uint32_t ts;
  int in_fu;
  int damaged, keyframe, sps, pps;
  uint64_t malformed; /* packets that broke the rules (unknown NAL type, FU without start, ...) */
};

/* max_au bounds an access unit (larger ones are marked damaged). Returns 0 or -ENOMEM. */
int pirec_h264_depay_init(struct pirec_h264_depay *d, size_t max_au);
void pirec_h264_depay_free(struct pirec_h264_depay *d);
/* Feeds one RTP packet; lost_before is the number of packets missing just before it (from
 * pirec_rtp_seq_update). cb runs, inside this call, for each access unit that completes (a
 * timestamp change closes the previous one, the marker bit closes the current one). Returns 0,
 * or -EBADMSG when the packet was malformed (counted; the access unit becomes damaged). */
int pirec_h264_depay_push(struct pirec_h264_depay *d, const struct pirec_rtp_packet *pkt, int64_t lost_before,
                          pirec_h264_au_cb cb, void *user);
/* Forgets a partial access unit (after a reconnect). */
void pirec_h264_depay_reset(struct pirec_h264_depay *d);

/* Splits one Annex B access unit into RTP payloads of at most mtu bytes (single NAL unit packets,
 * FU-A fragments for larger NAL units) and calls emit for each; last is 1 on the final payload
 * (its packet carries the marker bit). Returns the number of payloads, or -EINVAL (mtu < 16, no NAL
 * unit found), or the first negative value emit returned. */
typedef int (*pirec_h264_emit_cb)(const uint8_t *payload, size_t len, int last, void *user);
int pirec_h264_pay(const uint8_t *au, size_t len, size_t mtu, pirec_h264_emit_cb emit, void *user);

#endif
