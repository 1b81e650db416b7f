#ifndef PIREC_BE_H
#define PIREC_BE_H

/* Big-endian (network order) loads and stores for the wire formats in media/. The caller checks
 * that the bytes are there. */

#include <stdint.h>

static inline uint16_t pirec_be_read16(const uint8_t *p)
{
  return (uint16_t)(p[0] << 8 | p[1]);
}
static inline uint32_t pirec_be_read32(const uint8_t *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t pirec_be_read64(const uint8_t *p)
{
  return (uint64_t)pirec_be_read32(p) << 32 | pirec_be_read32(p + 4);
}

static inline void pirec_be_write16(uint8_t *p, uint16_t v)
{
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}
static inline void pirec_be_write32(uint8_t *p, uint32_t v)
{
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static inline void pirec_be_write64(uint8_t *p, uint64_t v)
{
  pirec_be_write32(p, (uint32_t)(v >> 32));
  pirec_be_write32(p + 4, (uint32_t)v);
}

#endif
