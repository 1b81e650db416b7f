#include "pirec/error.h"

#include <libavutil/error.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

const char *pirec_strerror(int err)
{
  static _Thread_local char message[AV_ERROR_MAX_STRING_SIZE + 32];

  if (err >= 0)
    return "Success";
  /* libuv's own codes outside errno's range: UV_EOF (-4095), UV_ECHARSET (-4080) and the
   * getaddrinfo family (-3000..-3014). strerror_r would call UV_EOF "Unknown error 4095". */
  if (err <= -3000 && err >= -4095) {
    snprintf(message, sizeof message, "%s", uv_strerror(err));
    return message;
  }
  /* av_strerror knows both FFmpeg's tagged codes and plain errno values (through strerror_r). */
  if (av_strerror(err, message, sizeof message) < 0)
    strerror_r(-err, message, sizeof message);
  return message;
}
