/* Session descriptions (see sdp.h). */

#include "sdp.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void copy_trim(char *dst, size_t cap, const char *s, size_t n)
{
  while (n > 0 && (s[n - 1] == '\r' || s[n - 1] == ' '))
    n--;
  if (n >= cap)
    n = cap - 1;
  memcpy(dst, s, n);
  dst[n] = 0;
}

/* An m= line ("video 0 RTP/AVP 96") starts a media. */
static int media_line(struct pirec_sdp_media *m, const char *v, size_t vn)
{
  char line[256];
  copy_trim(line, sizeof line, v, vn);
  char media[16], proto[32];
  int port, pt;
  if (sscanf(line, "%15s %d %31s %d", media, &port, proto, &pt) != 4 || pt < 0 || pt > 127)
    return -EBADMSG;
  snprintf(m->media, sizeof m->media, "%s", media);
  m->pt = pt;
  /* Static payload types need no rtpmap; those pirec meets are dynamic. */
  m->clock_rate = 0;
  return 0;
}

/* An a= line of the current media: rtpmap, control and fmtp are kept, the rest ignored. */
static void attribute_line(struct pirec_sdp_media *m, const char *v, size_t vn)
{
  char line[512];
  copy_trim(line, sizeof line, v, vn);
  int pt;
  char enc[64];
  unsigned rate;
  if (strncmp(line, "rtpmap:", 7) == 0) {
    if (sscanf(line + 7, "%d %63[^/]/%u", &pt, enc, &rate) == 3 && pt == m->pt) {
      snprintf(m->encoding, sizeof m->encoding, "%s", enc);
      m->clock_rate = rate;
    }
  } else if (strncmp(line, "control:", 8) == 0) {
    snprintf(m->control, sizeof m->control, "%s", line + 8);
  } else if (strncmp(line, "fmtp:", 5) == 0) {
    char *sp = strchr(line + 5, ' ');
    if (sp && atoi(line + 5) == m->pt)
      snprintf(m->fmtp, sizeof m->fmtp, "%s", sp + 1);
  }
}

int pirec_sdp_parse(const char *text, size_t len, struct pirec_sdp *out)
{
  memset(out, 0, sizeof *out);
  const char *p = text, *end = text + len;
  int have_v = 0, skipping = 0;
  struct pirec_sdp_media *m = NULL;
  for (; p < end; p++) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol)
      eol = end;
    size_t n = (size_t)(eol - p);
    if (n > 0 && p[n - 1] == '\r')
      n--;
    const char *line = p;
    p = eol;
    if (n < 2 || line[1] != '=')
      continue;
    if (line[0] == 'v') {
      have_v = n == 3 && line[2] == '0';
    } else if (line[0] == 'm') {
      skipping = out->n_media >= PIREC_SDP_MAX_MEDIA;
      if (!skipping) {
        m = &out->media[out->n_media++];
        if (media_line(m, line + 2, n - 2) < 0)
          return -EBADMSG;
      }
    } else if (line[0] == 'a' && m && !skipping) {
      attribute_line(m, line + 2, n - 2);
    }
  }
  if (!have_v || out->n_media == 0)
    return -EBADMSG;
  for (size_t i = 0; i < out->n_media; i++)
    if (out->media[i].clock_rate == 0 || !out->media[i].encoding[0])
      return -EBADMSG;
  return 0;
}
