/* A compressed camera's recent frames (pirec/backlog.h): the current GOP at all times, and while
 * no trial runs with pre_trigger set, the last N seconds from the keyframe at or before them; a
 * trial's video starts with them (see camera-int.h). */

#include "camera-int.h"

#include "h264.h"

#include <errno.h>
#include <string.h>

#define KEY 1u

static int is_keyframe(const struct pirec__camera_gop *g, const uint8_t *frame, size_t len)
{
  return g->all_key || pirec_h264_is_keyframe(frame, len);
}

int pirec__camera_gop_init(struct pirec__camera_gop *g, enum pirec_camera_codec codec, int64_t pre_ns,
                           size_t bytes)
{
  memset(g, 0, sizeof *g);
  if (codec != PIREC_CAMERA_CODEC_MJPEG && codec != PIREC_CAMERA_CODEC_H264)
    return 0; /* raw frames are encoded per trial (each file starts at a keyframe); HEVC: not yet */
  g->all_key = codec == PIREC_CAMERA_CODEC_MJPEG;
  g->pre_ns = pre_ns > 0 ? pre_ns : 0;
  if (!bytes) {
    /* MJPEG runs at up to ~8 MiB/s (1080p30), H.264 at up to ~2 MiB/s; N s plus two GOPs */
    size_t per_s = g->all_key ? (size_t)8 << 20 : (size_t)2 << 20;
    bytes = (size_t)((g->pre_ns + 999999999) / 1000000000 + 2) * per_s;
  }
  g->need_key = 1;
  return pirec_backlog_new(bytes, &g->b);
}

void pirec__camera_gop_free(struct pirec__camera_gop *g)
{
  pirec_backlog_free(g->b);
  g->b = NULL;
}

void pirec__camera_gop_keep(struct pirec__camera_gop *g, const void *hdr, size_t hdr_len,
                            const uint8_t *frame, size_t len, int64_t mono, int gap, int recording)
{
  if (!g->b)
    return;
  int key = is_keyframe(g, frame, len);
  if (gap && !key)
    g->need_key = 1; /* what follows refers to frames that were lost */
  if (g->need_key && !key)
    return;
  g->need_key = 0;
  if (key && (recording || g->pre_ns == 0))
    pirec_backlog_clear(g->b);
  uint8_t *p = pirec_backlog_append(g->b, 0, key ? KEY : 0, mono, hdr_len + len, INT64_MAX);
  if (!p) {
    g->need_key = 1;
    return;
  }
  memcpy(p, hdr, hdr_len);
  memcpy(p + hdr_len, frame, len);
  if (key && !recording && g->pre_ns > 0)
    pirec_backlog_trim_to_key(g->b, KEY, mono - g->pre_ns);
}

size_t pirec__camera_gop_replay(struct pirec__camera_gop *g, int64_t start, size_t hdr_len,
                                void (*fn)(const void *hdr, const uint8_t *frame, size_t len, void *user),
                                void *user)
{
  if (!g->b)
    return 0;
  int64_t key = pirec_backlog_first_key(g->b, KEY, start - g->pre_ns), index = 0;
  uint64_t cursor = 0;
  size_t n = 0;
  struct pirec_backlog_rec r;
  while (key >= 0 && pirec_backlog_next(g->b, &cursor, &r))
    if (index++ >= key && r.mono_ns < start && r.len >= hdr_len) {
      fn(r.data, (const uint8_t *)r.data + hdr_len, r.len - hdr_len, user);
      n++;
    }
  /* what stays is the current GOP, for the next trial change */
  pirec_backlog_trim_to_key(g->b, KEY, INT64_MAX);
  return n;
}

void pirec__camera_gop_stats(const struct pirec__camera_gop *g, struct pirec_backlog_stats *out)
{
  memset(out, 0, sizeof *out);
  if (g->b)
    pirec_backlog_stats(g->b, out);
}
