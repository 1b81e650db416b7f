/* What a frame's payload is, whatever container framed it: --verify compares an output's frames
 * with its input's by these, so a different clip with the same count and timing is caught. */
#include "remux-internal.h"

#include <libavcodec/avcodec.h>
#include <string.h>

#define FNV_OFFSET UINT64_C(14695981039346656037)
#define FNV_PRIME  UINT64_C(1099511628211)
#define MIX        UINT64_C(0x9e3779b97f4a7c15) /* odd, bits spread: 2^64 / golden ratio */

/* A multiply-xorshift hash over 8-byte words in four independent lanes (32 bytes per step, the
 * lanes folded at the end; the tail byte by byte, FNV-1a), not byte-by-byte FNV-1a: one multiply
 * chain per byte made the digests of a remux and its verification pass (every frame's bytes,
 * twice) a fifth of pirec-remux's CPU time, and one chain per 8 bytes still a seventh. Digests are
 * computed afresh on both sides of each comparison, never stored, so the function may change. */
static uint64_t mix(uint64_t h, uint64_t w)
{
  h = (h ^ w) * MIX;
  return h ^ (h >> 29);
}

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
  size_t i = 0;
  if (n >= 32) {
    uint64_t lane[4] = {h, h ^ 1, h ^ 2, h ^ 3};
    for (; i + 32 <= n; i += 32) {
      uint64_t w[4];
      memcpy(w, p + i, 32);
      for (int k = 0; k < 4; k++)
        lane[k] = mix(lane[k], w[k]);
    }
    h = mix(mix(mix(lane[0], lane[1]), lane[2]), lane[3]);
  }
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    memcpy(&w, p + i, 8);
    h = mix(h, w);
  }
  for (; i < n; i++)
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

/* The next start code at or after i: where its 00 00 01 begins (a fourth zero before it belongs to
 * the NAL unit before, whose trailing zeros add_nal drops), or n. memchr finds the 01 bytes at
 * memory speed instead of testing every position. */
static size_t next_start_code(const uint8_t *p, size_t n, size_t i)
{
  while (i + 3 <= n) {
    const uint8_t *one = memchr(p + i + 2, 1, n - i - 2);
    if (one == NULL)
      break;
    size_t q = (size_t)(one - p);
    if (p[q - 1] == 0 && p[q - 2] == 0)
      return q - 2;
    i = q - 1;
  }
  return n;
}

static void annexb(struct pirec__remux_digest *d, const uint8_t *p, size_t n)
{
  size_t i = 0, begin = SIZE_MAX;
  while ((i = next_start_code(p, n, i)) < n) {
    if (begin != SIZE_MAX)
      add_nal(d, p + begin, i - begin);
    i += 3;
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
