/* Tests for media/sdp.c: session descriptions, good and bad, and the control URLs they name
 * (pirec_rtsp_control_url). */

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rtsp.h"
#include "sdp.h"

static void test_sdp(void **state)
{
  static const char good[] =
      "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=gaze\r\nt=0 0\r\n"
      "m=application 0 RTP/AVP 99\r\na=rtpmap:99 com.pupillabs.gaze1/90000\r\na=control:trackID=0\r\n"
      "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
      "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0IAKeKQFAe2AtwEBAaQeJEV,aM48gA==\r\n"
      "a=control:rtsp://127.0.0.1:8086/?camera=world/trackID=1\r\n";
  struct pirec_sdp sdp;
  assert_int_equal(pirec_sdp_parse(good, sizeof good - 1, &sdp), 0);
  assert_int_equal(sdp.n_media, 2);
  assert_string_equal(sdp.media[0].media, "application");
  assert_int_equal(sdp.media[0].pt, 99);
  assert_string_equal(sdp.media[0].encoding, "com.pupillabs.gaze1");
  assert_int_equal(sdp.media[0].clock_rate, 90000);
  assert_string_equal(sdp.media[0].control, "trackID=0");
  assert_string_equal(sdp.media[1].encoding, "H264");
  assert_true(strstr(sdp.media[1].fmtp, "packetization-mode=1") != NULL);

  char url[256];
  assert_int_equal(pirec_rtsp_control_url("rtsp://h:1/?camera=gaze", sdp.media[0].control, url, sizeof url),
                   0);
  assert_string_equal(url, "rtsp://h:1/?camera=gaze/trackID=0");
  assert_int_equal(pirec_rtsp_control_url("rtsp://h:1/x/", "t", url, sizeof url), 0);
  assert_string_equal(url, "rtsp://h:1/x/t");
  assert_int_equal(pirec_rtsp_control_url("rtsp://h:1/x", sdp.media[1].control, url, sizeof url), 0);
  assert_string_equal(url, sdp.media[1].control);
  assert_int_equal(pirec_rtsp_control_url("rtsp://h:1/x", "*", url, sizeof url), 0);
  assert_string_equal(url, "rtsp://h:1/x");
  assert_int_equal(pirec_rtsp_control_url("rtsp://h:1/x", "abc", url, 8), -ENAMETOOLONG);

  static const char *bad[] = {
      "",
      "garbage\r\n",
      "v=0\r\ns=no media\r\n",
      "v=0\r\nm=video 0 RTP/AVP 96\r\n",                        /* no rtpmap */
      "v=0\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/0\r\n",  /* rate 0 */
      "v=0\r\nm=video 0 RTP/AVP\r\na=rtpmap:96 H264/90000\r\n", /* no payload type */
      "v=1\r\nm=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (pirec_sdp_parse(bad[i], strlen(bad[i]), &sdp) != -EBADMSG)
      fail_msg("bad sdp %zu accepted", i);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sdp),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
