/* What a frame's payload is, whatever container framed it: --verify compares an output's frames
 * with its input's by these, so a different clip with the same count and timing is caught. */
#include "remux-internal.h"

#include <libavcodec/avcodec.h>

#define FNV_OFFSET UINT64_C(14695981039346656037)
#define FNV_PRIME  UINT64_C(1099511628211)

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * FNV_PRIME;
  return h;
}

/* One NAL unit into the digest: its bytes without the trailing zeros a start code may leave
 * before the next one (a NAL unit ends in its stop bit, never in a zero byte), with its length so
 * that the units' borders count. */
static void add_nal(struct pirec__remux_digest *d, const uint8_t *p, size_t n)
{
  uint8_t len[8];
  while (n > 0 && p[n - 1] == 0)
    n--;
  for (int i = 0; i < 8; i++)
    len[i] = (uint8_t)((uint64_t)n >> (8 * i));
  d->hash = fnv(fnv(d->hash, len, sizeof len), p, n);
  d->size += (int64_t)n;
}

/* Length of the start code at p (3 or 4 bytes: 00 00 01, 00 00 00 01), or 0. */
static size_t start_code(const uint8_t *p, size_t n)
{
  if (n >= 3 && p[0] == 0 && p[1] == 0 && p[2] == 1)
    return 3;
  if (n >= 4 && p[0] == 0 && p[1] == 0 && p[2] == 0 && p[3] == 1)
    return 4;
  return 0;
}

static void annexb(struct pirec__remux_digest *d, const uint8_t *p, size_t n)
{
  size_t i = 0, begin = SIZE_MAX;
  while (i < n) {
    size_t sc = start_code(p + i, n - i);
    if (sc == 0) {
      i++;
      continue;
    }
    if (begin != SIZE_MAX)
      add_nal(d, p + begin, i - begin);
    i += sc;
    begin = i;
  }
  if (begin != SIZE_MAX)
    add_nal(d, p + begin, n - begin);
  else
    add_nal(d, p, n); /* no start code at all: the bytes as they are */
}

/* Length-prefixed NAL units (avcC/hvcC). A packet whose lengths do not tile it is taken whole. */
static void prefixed(struct pirec__remux_digest *d, const uint8_t *p, size_t n, int len_size)
{
  struct pirec__remux_digest whole = *d;
  size_t i = 0;
  while (i + (size_t)len_size <= n) {
    size_t len = 0;
    for (int k = 0; k < len_size; k++)
      len = len << 8 | p[i + (size_t)k];
    i += (size_t)len_size;
    if (len > n - i)
      break;
    add_nal(d, p + i, len);
    i += len;
  }
  if (i != n) {
    *d = whole;
    add_nal(d, p, n);
  }
}

void pirec__remux_digest(const struct AVCodecParameters *par, const uint8_t *data, int size,
                         struct pirec__remux_digest *out)
{
  const uint8_t *x = par->extradata;
  int len_size = 0;
  out->size = 0;
  out->hash = FNV_OFFSET;
  if (size <= 0)
    return;
  /* avcC and hvcC begin with version 1 and say how many bytes each NAL unit's length takes. */
  if (par->codec_id == AV_CODEC_ID_H264 && x && par->extradata_size >= 7 && x[0] == 1)
    len_size = (x[4] & 3) + 1;
  else if (par->codec_id == AV_CODEC_ID_HEVC && x && par->extradata_size >= 23 && x[0] == 1)
    len_size = (x[21] & 3) + 1;
  if (len_size > 0)
    prefixed(out, data, (size_t)size, len_size);
  else if (par->codec_id == AV_CODEC_ID_H264 || par->codec_id == AV_CODEC_ID_HEVC)
    annexb(out, data, (size_t)size);
  else
    add_nal(out, data, (size_t)size); /* MJPEG and others: the bytes are stored as they are */
}
