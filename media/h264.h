#ifndef PIREC_H264_H
#define PIREC_H264_H

/* H.264 access units: NAL units of an Annex B buffer, the splitter of an encoder's Annex B byte
 * stream into access units, and RTP payloading and depayloading (RFC 6184, packetization modes 0
 * and 1). Pure code over caller memory: no I/O, no threads, no logging; each object is used by
 * one thread at a time, and a callback runs only inside the call that names it.
 * Errors are negative errno values: -EBADMSG for malformed input, -ENOMEM, -EINVAL. */

#include <stddef.h>
#include <stdint.h>

#include "pirec/bytebuf.h"
#include "rtp.h"

/* ---- NAL units ---- */

/* Finds the next NAL unit of an Annex B buffer at or after *pos (start codes stripped, trailing
 * zero bytes before the next start code too). Returns 1 with *nal, *n and *pos advanced past it,
 * or 0 when there is none. */
int pirec_h264_next_nal(const uint8_t *b, size_t len, size_t *pos, const uint8_t **nal, size_t *n);

/* 1 when the Annex B access unit holds an IDR slice (nal_unit_type 5). */
int pirec_h264_is_keyframe(const uint8_t *au, size_t len);

/* ---- access units of a byte stream ---- */

/* Splits an H.264 Annex B byte stream into access units at access unit delimiters (x264 -aud 1).
 * An access unit is complete when the next delimiter arrives, or at the end of a run that
 * finished normally (pirec_h264_splitter_last). A plain value: _init, then _free. */
struct pirec_h264_splitter {
  struct pirec_bytebuf buf;
  size_t scan; /* where the search for the next delimiter resumes, relative to the data */
  int have_start;
};

/* cap: the initial buffer (it grows on demand, to 64 MiB or cap). 0 or -ENOMEM. */
int pirec_h264_splitter_init(struct pirec_h264_splitter *au, size_t cap);
/* NULL is a no-op. */
void pirec_h264_splitter_free(struct pirec_h264_splitter *au);
/* Forgets everything buffered (a crashed encoder's partial output). */
void pirec_h264_splitter_reset(struct pirec_h264_splitter *au);
/* Room for at least want more bytes (grows the buffer); NULL when out of memory or past the
 * limit. */
uint8_t *pirec_h264_splitter_space(struct pirec_h264_splitter *au, size_t want);
/* n bytes were written at the pointer pirec_h264_splitter_space returned. */
void pirec_h264_splitter_fill(struct pirec_h264_splitter *au, size_t n);
/* 1 and the next complete access unit (valid until the next call), or 0. */
int pirec_h264_splitter_next(struct pirec_h264_splitter *au, const uint8_t **data, size_t *len);
/* The trailing access unit of a run that ended cleanly: 1 and it, or 0 when there is none. */
int pirec_h264_splitter_last(struct pirec_h264_splitter *au, const uint8_t **data, size_t *len);

/* ---- depayloading: RTP packets to access units ---- */

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

/* A plain value embedded in its owner: _init, then _free. */
struct pirec_h264_depay {
  struct pirec_bytebuf au; /* the access unit being assembled; never grows past max_au */
  int have_ts;
  uint32_t ts;
  int in_fu;
  int damaged, keyframe, sps, pps;
  uint64_t malformed; /* packets that broke the rules (unknown NAL type, FU without start, ...) */
};

/* max_au bounds an access unit (larger ones are marked damaged). Returns 0 or -ENOMEM. */
int pirec_h264_depay_init(struct pirec_h264_depay *d, size_t max_au);
/* NULL or a freed depayloader is a no-op. */
void pirec_h264_depay_free(struct pirec_h264_depay *d);
/* Feeds one RTP packet; lost_before is the number of packets missing just before it (from
 * pirec_rtp_seq_update). cb runs, inside this call, for each access unit that completes (a
 * timestamp change closes the previous one, the marker bit closes the current one). Returns 0,
 * or -EBADMSG when the packet was malformed (counted; the access unit becomes damaged). */
int pirec_h264_depay_push(struct pirec_h264_depay *d, const struct pirec_rtp_packet *pkt, int64_t lost_before,
                          pirec_h264_au_cb cb, void *user);
/* Forgets a partial access unit (after a reconnect). */
void pirec_h264_depay_reset(struct pirec_h264_depay *d);

/* ---- payloading: access units to RTP payloads ---- */

/* Splits one Annex B access unit into RTP payloads of at most mtu bytes (single NAL unit packets,
 * FU-A fragments for larger NAL units) and calls emit for each; last is 1 on the final payload
 * (its packet carries the marker bit). Returns the number of payloads, or -EINVAL (mtu < 16, no NAL
 * unit found), or the first negative value emit returned. */
typedef int (*pirec_h264_emit_cb)(const uint8_t *payload, size_t len, int last, void *user);
int pirec_h264_pay(const uint8_t *au, size_t len, size_t mtu, pirec_h264_emit_cb emit, void *user);

#endif
