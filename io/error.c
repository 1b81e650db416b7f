#include "pirec/error.h"

#include <libavutil/error.h>
#include <string.h>

const char *pirec_strerror(int err)
{
  static _Thread_local char message[AV_ERROR_MAX_STRING_SIZE + 32];

  if (err >= 0)
    return "Success";
  /* av_strerror knows both FFmpeg's tagged codes and plain errno values (through strerror_r). */
  if (av_strerror(err, message, sizeof message) < 0)
    strerror_r(-err, message, sizeof message);
  return message;
}
