/* pirec_strerror: one message function for errno values, FFmpeg's codes and libuv's. */
#include <errno.h>
#include <libavutil/error.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <uv.h>

#include <cmocka.h>

#include "pirec/error.h"

static void test_errno(void **state)
{
  assert_string_equal(pirec_strerror(-ENOSPC), strerror(ENOSPC));
  assert_string_equal(pirec_strerror(0), "Success");
}

static void test_ffmpeg(void **state)
{
  assert_string_equal(pirec_strerror(AVERROR_EOF), "End of file");
  assert_string_equal(pirec_strerror(AVERROR_INVALIDDATA), "Invalid data found when processing input");
}

/* A device that closes its connection ends a read with UV_EOF: the message must say so, not
 * "Unknown error 4095" (seen in `pirec trial`'s warning while the eye tracker reconnected). */
static void test_libuv(void **state)
{
  assert_string_equal(pirec_strerror(UV_EOF), uv_strerror(UV_EOF));
  assert_null(strstr(pirec_strerror(UV_EOF), "Unknown"));
  assert_string_equal(pirec_strerror(UV_EAI_NONAME), uv_strerror(UV_EAI_NONAME));
  assert_string_equal(pirec_strerror(UV_ECONNREFUSED), strerror(ECONNREFUSED));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_errno),
      cmocka_unit_test(test_ffmpeg),
      cmocka_unit_test(test_libuv),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
