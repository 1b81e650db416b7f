/* RTCP Sender Reports and the device clock they give (see rtcp.h). */

#include "rtcp.h"

#include "be.h"
#include "rtp.h"

#include <errno.h>
#include <string.h>

/* ---- RTCP ---- */

int pirec_rtcp_parse_sr(const uint8_t *buf, size_t len, struct pirec_rtcp_sr *out)
{
  int found = 0;
  if (len < 4)
    return -EBADMSG;
  while (len > 0) {
    if (len < 4 || (buf[0] >> 6) != 2 || buf[1] < 192 || buf[1] > 223)
      return -EBADMSG;
    size_t plen = 4 + 4u * pirec_be_read16(buf + 2);
    if (plen > len)
      return -EBADMSG;
    if (buf[1] == 200 && !found) {
      if (plen < 28)
        return -EBADMSG;
      out->ssrc = pirec_be_read32(buf + 4);
      out->ntp = (uint64_t)pirec_be_read32(buf + 8) << 32 | pirec_be_read32(buf + 12);
      out->rtp_ts = pirec_be_read32(buf + 16);
      out->packets = pirec_be_read32(buf + 20);
      out->octets = pirec_be_read32(buf + 24);
      found = 1;
    }
    buf += plen;
    len -= plen;
  }
  return found;
}

size_t pirec_rtcp_write_sr(uint8_t *out, const struct pirec_rtcp_sr *sr)
{
  out[0] = 0x80; /* version 2, no report blocks */
  out[1] = 200;
  pirec_be_write16(out + 2, 6); /* length in 32-bit words minus one */
  pirec_be_write32(out + 4, sr->ssrc);
  pirec_be_write32(out + 8, (uint32_t)(sr->ntp >> 32));
  pirec_be_write32(out + 12, (uint32_t)sr->ntp);
  pirec_be_write32(out + 16, sr->rtp_ts);
  pirec_be_write32(out + 20, sr->packets);
  pirec_be_write32(out + 24, sr->octets);
  return 28;
}

/* Seconds from 1900-01-01 (NTP era 0) to 1970-01-01. */
#define NTP_UNIX_OFFSET 2208988800LL
#define NS_PER_S        1000000000LL

int64_t pirec_rtcp_ntp_to_unix_ns(uint64_t ntp)
{
  int64_t sec = (int64_t)(ntp >> 32) - NTP_UNIX_OFFSET;
  uint64_t frac = ntp & 0xFFFFFFFFu;
  /* One NTP fraction unit is 0.23 ns, so rounding to the nearest ns inverts unix_ns_to_ntp. */
  int64_t ns = (int64_t)((frac * (uint64_t)NS_PER_S + (1ull << 31)) >> 32);
  return sec * NS_PER_S + ns;
}

uint64_t pirec_rtcp_unix_ns_to_ntp(int64_t unix_ns)
{
  int64_t sec = unix_ns / NS_PER_S, ns = unix_ns % NS_PER_S;
  if (ns < 0) {
    ns += NS_PER_S;
    sec--;
  }
  uint64_t frac = (((uint64_t)ns << 32) + (uint64_t)NS_PER_S / 2) / (uint64_t)NS_PER_S;
  if (frac > 0xFFFFFFFFu)
    frac = 0xFFFFFFFFu;
  return (uint64_t)(sec + NTP_UNIX_OFFSET) << 32 | frac;
}

/* ---- clock mapping ---- */

void pirec_rtcp_clock_init(struct pirec_rtcp_clock *c, uint32_t rate)
{
  memset(c, 0, sizeof *c);
  c->rate = rate ? rate : 90000;
}

static int64_t unwrap(int64_t ref, uint32_t ts)
{
  return ref + (int32_t)(ts - (uint32_t)ref);
}

int64_t pirec_rtcp_clock_extend(struct pirec_rtcp_clock *c, uint32_t ts)
{
  /* Start in the middle of the 64-bit range so unwrapping backwards never goes negative. */
  int64_t ext = c->have_ts ? unwrap(c->ext_last, ts) : ((int64_t)1 << 32) + ts;
  if (!c->have_ts || ext > c->ext_last)
    c->ext_last = ext;
  c->have_ts = 1;
  return ext;
}

void pirec_rtcp_clock_sr(struct pirec_rtcp_clock *c, uint32_t rtp_ts, int64_t unix_ns)
{
  if (!c->have_ts) {
    c->ext_last = ((int64_t)1 << 32) + rtp_ts;
    c->have_ts = 1;
  }
  c->sr_ext = unwrap(c->ext_last, rtp_ts);
  c->sr_ns = unix_ns;
  c->have_sr = 1;
  c->sr_count++;
}

int64_t pirec_rtcp_clock_device_ns(const struct pirec_rtcp_clock *c, int64_t ext_ts)
{
  if (!c->have_sr)
    return INT64_MIN;
  return c->sr_ns + pirec_rtp_ticks_to_ns(ext_ts - c->sr_ext, c->rate);
}
