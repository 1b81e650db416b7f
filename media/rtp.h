#ifndef PIREC_RTP_H
#define PIREC_RTP_H

/* RTP data packets (RFC 3550): parsing, writing a header, and counting sequence numbers. Pure
 * functions and small state over caller memory: no I/O, no threads, no logging; each object is
 * used by one thread at a time. The other media pieces of the eye tracker and its simulator are
 * rtcp.h (Sender Reports and the device clock), rtsp.h, sdp.h, http.h and h264.h.
 *
 * RTP timestamps are 32-bit counters at the stream's clock rate (from the SDP rtpmap); they wrap,
 * and rtcp.h's clock unwraps them. Errors are negative errno values: -EBADMSG for malformed input.
 */

#include <stddef.h>
#include <stdint.h>

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

#endif
