#ifndef PIREC_SDP_H
#define PIREC_SDP_H

/* Session descriptions (RFC 4566) as an RTSP DESCRIBE returns them: the media, their payload
 * types, rtpmap, control and fmtp attributes. A pure function over caller memory. */

#include <stddef.h>
#include <stdint.h>

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

#endif
