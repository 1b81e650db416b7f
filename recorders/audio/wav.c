/* The WAV header of tNNN_audio.wav: RIFF with a JUNK chunk reserved for RF64's ds64 (EBU Tech 3306),
 * so the header keeps its 80 bytes whichever form the final rewrite takes. */
#include "pirec/audio.h"

#include <string.h>

#define JUNK_BYTES 28 /* the ds64 body: RIFF size, data size, sample count (64-bit each), table length */

static uint8_t *put_tag(uint8_t *p, const char *tag)
{
  memcpy(p, tag, 4);
  return p + 4;
}

static uint8_t *put_u16(uint8_t *p, unsigned v)
{
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
  p = put_u16(p, v & 0xffff);
  return put_u16(p, v >> 16);
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
  p = put_u32(p, (uint32_t)v);
  return put_u32(p, (uint32_t)(v >> 32));
}

void pirec_audio_wav_header(uint8_t out[PIREC_AUDIO_WAV_HEADER], enum pirec_audio_format format,
                            unsigned rate, unsigned channels, uint64_t data_bytes)
{
  unsigned sample = pirec_audio_format_bytes(format);
  uint64_t riff = data_bytes == UINT64_MAX ? UINT64_MAX : data_bytes + PIREC_AUDIO_WAV_HEADER - 8;
  /* 0xFFFFFFFF in both 32-bit sizes means "unknown": readers play to the end of the file. */
  int rf64 = data_bytes != UINT64_MAX && riff > UINT32_MAX;
  uint32_t riff32 = data_bytes == UINT64_MAX || rf64 ? UINT32_MAX : (uint32_t)riff;
  uint32_t data32 = data_bytes == UINT64_MAX || rf64 ? UINT32_MAX : (uint32_t)data_bytes;
  uint8_t *p = put_tag(out, rf64 ? "RF64" : "RIFF");
  p = put_u32(p, riff32);
  p = put_tag(p, "WAVE");
  p = put_tag(p, rf64 ? "ds64" : "JUNK");
  p = put_u32(p, JUNK_BYTES);
  memset(p, 0, JUNK_BYTES);
  if (rf64) {
    put_u64(p, riff);
    put_u64(p + 8, data_bytes);
    put_u64(p + 16, data_bytes / (sample * channels));
  }
  p += JUNK_BYTES;
  p = put_tag(p, "fmt ");
  p = put_u32(p, 16);
  p = put_u16(p, format == PIREC_AUDIO_F32 ? 3 : 1);
  p = put_u16(p, channels);
  p = put_u32(p, rate);
  p = put_u32(p, rate * channels * sample);
  p = put_u16(p, channels * sample);
  p = put_u16(p, sample * 8);
  p = put_tag(p, "data");
  put_u32(p, data32);
}
