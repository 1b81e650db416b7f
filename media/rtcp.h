#ifndef PIREC_RTCP_H
#define PIREC_RTCP_H

/* RTCP Sender Reports (RFC 3550) and the device clock they give: an RTP timestamp mapped to the
 * sender's wall time. Pure functions and state in caller memory; one thread at a time.
 *
 * An RTCP Sender Report pairs one RTP timestamp with the sender's NTP wall time; from then on
 *     device_ns = sr_ns + floor((ext_ts - sr_ext_ts) * 1e9 / clock_rate)
 * Samples before the first Sender Report have no device time (INT64_MIN).
 * Errors are negative errno values: -EBADMSG for malformed input.
 */

#include <stddef.h>
#include <stdint.h>

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
int64_t pirec_rtcp_ntp_to_unix_ns(uint64_t ntp);
uint64_t pirec_rtcp_unix_ns_to_ntp(int64_t unix_ns);

/* ---- the device clock of one RTP stream ---- */

/* A plain value embedded in its owner: _init at each new session, no _free. */
struct pirec_rtcp_clock {
  uint32_t rate; /* Hz, > 0 */
  int have_ts;
  int64_t ext_last; /* the last extended timestamp seen */
  int have_sr;
  int64_t sr_ext; /* extended RTP timestamp of the latest Sender Report */
  int64_t sr_ns;  /* its NTP time as Unix ns */
  uint64_t sr_count;
};

/* rate 0 means 90 kHz. */
void pirec_rtcp_clock_init(struct pirec_rtcp_clock *c, uint32_t rate);
/* Unwraps ts against the last timestamp seen (the nearest 64-bit value) and remembers it. */
int64_t pirec_rtcp_clock_extend(struct pirec_rtcp_clock *c, uint32_t ts);
/* Takes a Sender Report's pair. The RTP timestamp is unwrapped against the last data timestamp. */
void pirec_rtcp_clock_sr(struct pirec_rtcp_clock *c, uint32_t rtp_ts, int64_t unix_ns);
/* Device time of an extended timestamp, or INT64_MIN before the first Sender Report. */
int64_t pirec_rtcp_clock_device_ns(const struct pirec_rtcp_clock *c, int64_t ext_ts);

#endif
