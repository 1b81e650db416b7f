/* RTP packets and sequence numbers (see rtp.h). */

#include "rtp.h"

#include "be.h"

#include <errno.h>
#include <string.h>

#define NS_PER_S 1000000000LL

/* ---- RTP ---- */

int pirec_rtp_parse(const uint8_t *buf, size_t len, struct pirec_rtp_packet *out)
{
  if (len < 12 || (buf[0] >> 6) != 2)
    return -EBADMSG;
  /* Payload types 72..76 with the marker bit are RTCP SR/RR/SDES/BYE/APP (RFC 5761). */
  if (buf[1] >= 200 && buf[1] <= 204)
    return -EBADMSG;
  size_t off = 12 + 4u * (buf[0] & 0x0F);
  if (off > len)
    return -EBADMSG;
  if (buf[0] & 0x10) {
    if (off + 4 > len)
      return -EBADMSG;
    off += 4 + 4u * pirec_be_read16(buf + off + 2);
    if (off > len)
      return -EBADMSG;
  }
  size_t end = len;
  if (buf[0] & 0x20) {
    uint8_t pad = buf[len - 1];
    if (pad == 0 || pad > end - off)
      return -EBADMSG;
    end -= pad;
  }
  out->marker = buf[1] >> 7;
  out->pt = buf[1] & 0x7F;
  out->seq = pirec_be_read16(buf + 2);
  out->ts = pirec_be_read32(buf + 4);
  out->ssrc = pirec_be_read32(buf + 8);
  out->payload = buf + off;
  out->payload_len = end - off;
  return 0;
}

size_t pirec_rtp_write_header(uint8_t *out, int marker, int pt, uint16_t seq, uint32_t ts, uint32_t ssrc)
{
  out[0] = 0x80;
  out[1] = (uint8_t)((marker ? 0x80 : 0) | (pt & 0x7F));
  pirec_be_write16(out + 2, seq);
  pirec_be_write32(out + 4, ts);
  pirec_be_write32(out + 8, ssrc);
  return 12;
}

/* ---- sequence numbers ---- */

int64_t pirec_rtp_seq_update(struct pirec_rtp_seq *s, uint16_t seq)
{
  s->received++;
  if (!s->started) {
    s->started = 1;
    s->ext_max = (1u << 16) + seq;
    return 0;
  }
  int16_t d = (int16_t)(seq - (uint16_t)s->ext_max);
  if (d <= 0) {
    s->late++;
    return -1;
  }
  s->ext_max += (uint64_t)d;
  s->lost += (uint64_t)(d - 1);
  return d - 1;
}

/* ---- timestamps ---- */

int64_t pirec_rtp_ticks_to_ns(int64_t ticks, uint32_t rate)
{
  __int128 n = (__int128)ticks * NS_PER_S;
  __int128 q = n / rate;
  if (n % rate != 0 && n < 0)
    q--;
  return (int64_t)q;
}
