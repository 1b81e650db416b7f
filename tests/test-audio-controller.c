/* pirec-audio under `pirec record`: an [audio.NAME] section starts the recorder like a camera,
 * trials change its files, status and session.json carry its counters. The device is the test PCM
 * "tick" (tests/helpers/alsa-tick.c), reached through ALSA_CONFIG_PATH inherited by the recorder. */
#include "test-controller-fixture.h"

/* Waits until a blocks CSV holds want data rows (its header and whole rows only). */
static void wait_rows(const char *path, size_t want)
{
  int64_t deadline = tu_now_ms() + 20000;
  while (tu_file_lines(path) < want + 1) {
    if (tu_now_ms() > deadline)
      fail_msg("'%s' has no %zu rows within 20 s", path, want);
    usleep(50000);
  }
}

static void check_trial(const char *dir, int trial)
{
  char path[4400];
  snprintf(path, sizeof path, "%s/mic/t%03d_audio.wav", dir, trial);
  size_t len = 0;
  unsigned char *wav = (unsigned char *)tu_read_file(path, &len);
  assert_non_null(wav);
  assert_true(len > 80);
  uint32_t data = wav[76] | wav[77] << 8 | wav[78] << 16 | (uint32_t)wav[79] << 24;
  assert_int_equal(data, len - 80); /* the stop closed it with its sizes */
  free(wav);
  snprintf(path, sizeof path, "%s/mic/t%03d_audio_blocks.csv", dir, trial);
  struct tu_csv csv;
  assert_int_equal(tu_csv_load(path, &csv), 0);
  int frames = tu_csv_col(&csv, "frames"), tcol = tu_csv_col(&csv, "trial");
  uint64_t sum = 0;
  for (size_t i = 1; i < csv.rows; i++) {
    sum += strtoull(csv.fields[i][frames], NULL, 10);
    assert_int_equal(atoi(csv.fields[i][tcol]), trial);
  }
  assert_int_equal(sum * 4, len - 80);
  tu_csv_free(&csv);
}

static void test_audio_module(void **state)
{
  struct ctl c;
  ctl_start(&c, 0, "[audio.mic]\ndevice = tick\nchannels = 2\nperiod = 10ms\n");
  json_t *st = ctl_wait_modules(&c, 0, 15000);
  json_t *mic = json_object_get(json_object_get(st, "modules"), "mic");
  assert_non_null(mic);
  assert_string_equal(jstr(mic, "kind"), "audio");
  json_decref(st);
  json_t *r = ctl_call(&c, "{\"id\":1,\"cmd\":\"start\"}", 30000);
  expect_reply(r, "started");
  char dir[4200], path[4400];
  snprintf(dir, sizeof dir, "%s", jstr(r, "session_dir"));
  json_decref(r);
  snprintf(path, sizeof path, "%s/mic/t001_audio_blocks.csv", dir);
  wait_rows(path, 10);
  r = ctl_call(&c, "{\"id\":2,\"cmd\":\"trial\"}", 30000);
  expect_reply(r, "trial");
  json_decref(r);
  snprintf(path, sizeof path, "%s/mic/t002_audio_blocks.csv", dir);
  wait_rows(path, 10);
  /* status carries the recorder's own counters */
  int64_t deadline = tu_now_ms() + 15000;
  json_int_t blocks = 0;
  while (blocks == 0 && tu_now_ms() < deadline) {
    st = ctl_call(&c, "{\"id\":3,\"cmd\":\"status\"}", 5000);
    mic = json_object_get(json_object_get(st, "modules"), "mic");
    blocks = json_integer_value(json_object_get(json_object_get(mic, "counters"), "blocks"));
    json_decref(st);
    if (!blocks)
      usleep(100000);
  }
  assert_true(blocks > 0);
  r = ctl_call(&c, "{\"id\":4,\"cmd\":\"stop\"}", 30000);
  expect_reply(r, "stopped");
  json_decref(r);
  check_trial(dir, 1);
  check_trial(dir, 2);
  json_t *man = load_manifest(dir);
  json_t *mod = json_object_get(json_object_get(man, "modules"), "mic");
  assert_non_null(mod);
  assert_true(json_integer_value(json_object_get(json_object_get(mod, "counters"), "frames")) > 0);
  json_decref(man);
  ctl_stop_process(&c, 0);
  ctl_cleanup(&c);
}

int main(void)
{
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_audio_module)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
