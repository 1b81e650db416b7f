/* controller/fleetconf.c: broker URLs, names, the shape of fleet commands (each refusal with what
 * is wrong), [fleet] settings with a credentials file, and the clock-sync state. The MQTT side is
 * tested against a real mosquitto in tests/fleet/. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fleet.h"

static void test_url(void **state)
{
  (void)state;
  char host[64];
  int port, tls;
  assert_int_equal(pirec_fleet_url_parse("mqtt://lab.local", host, sizeof host, &port, &tls), 0);
  assert_string_equal(host, "lab.local");
  assert_int_equal(port, 1883);
  assert_int_equal(tls, 0);
  assert_int_equal(pirec_fleet_url_parse("mqtts://10.0.0.2:9883", host, sizeof host, &port, &tls), 0);
  assert_string_equal(host, "10.0.0.2");
  assert_int_equal(port, 9883);
  assert_int_equal(tls, 1);
  assert_int_equal(pirec_fleet_url_parse("mqtt://[fe80::1]:1884", host, sizeof host, &port, &tls), 0);
  assert_string_equal(host, "fe80::1");
  assert_int_equal(port, 1884);
  static const char *bad[] = {"http://x",       "mqtt://",      "mqtt://:1883",  "mqtt://h:0",
                              "mqtt://h:70000", "mqtt://h:12x", "mqtt://h/path", "mqtt://u@h",
                              "mqtt://[::1]x",  "tcp://h:1883"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(pirec_fleet_url_parse(bad[i], host, sizeof host, &port, &tls), -EINVAL);
  assert_int_equal(pirec_fleet_url_parse("mqtt://a-very-long-host-name-indeed", host, 8, &port, &tls),
                   -EINVAL);
}

static void test_names_and_topics(void **state)
{
  (void)state;
  assert_true(pirec_fleet_name_ok("cam-left_2.a"));
  assert_false(pirec_fleet_name_ok(""));
  assert_false(pirec_fleet_name_ok("a/b"));
  assert_false(pirec_fleet_name_ok("+"));
  assert_false(pirec_fleet_name_ok("#"));
  assert_false(pirec_fleet_name_ok("a b"));
  char long_name[66];
  memset(long_name, 'a', 65);
  long_name[65] = '\0';
  assert_false(pirec_fleet_name_ok(long_name));
  char t[PIREC_FLEET_TOPIC_MAX];
  pirec_fleet_topic(t, sizeof t, "lab", NULL, NULL);
  assert_string_equal(t, "pirec/lab/command");
  pirec_fleet_topic(t, sizeof t, "lab", "pi1", "status");
  assert_string_equal(t, "pirec/lab/device/pi1/status");
}

static void expect_refused(const char *text, const char *why)
{
  json_t *cmd = json_loads(text, 0, NULL);
  char err[200] = "";
  assert_int_equal(pirec_fleet_command_check(cmd, err, sizeof err), -EINVAL);
  if (!strstr(err, why))
    fprintf(stderr, "'%s': '%s' lacks '%s'\n", text, err, why);
  assert_non_null(strstr(err, why));
  json_decref(cmd);
}

static void test_commands(void **state)
{
  (void)state;
  static const char *good[] = {
      "{\"id\":\"a1\",\"cmd\":\"start\",\"session\":\"s1\",\"start_wall_ns\":1,\"peers\":[\"pi1\",\"pi2\"]}",
      "{\"id\":\"a2\",\"cmd\":\"stop\"}", "{\"id\":\"a3\",\"cmd\":\"trial\",\"label\":\"curve\"}",
      "{\"id\":\"a4\",\"cmd\":\"note\",\"text\":\"x\"}"};
  char err[200];
  for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
    json_t *cmd = json_loads(good[i], 0, NULL);
    assert_int_equal(pirec_fleet_command_check(cmd, err, sizeof err), 0);
    json_decref(cmd);
  }
  expect_refused("[1]", "JSON object");
  expect_refused("{\"cmd\":\"stop\"}", "\"id\"");
  expect_refused("{\"id\":\"a/b\",\"cmd\":\"stop\"}", "\"id\"");
  expect_refused("{\"id\":\"a\",\"cmd\":\"reboot\"}", "\"cmd\"");
  expect_refused("{\"id\":\"a\",\"cmd\":7}", "\"cmd\"");
  expect_refused("{\"id\":\"a\",\"cmd\":\"start\",\"start_wall_ns\":1}", "\"session\"");
  expect_refused("{\"id\":\"a\",\"cmd\":\"start\",\"session\":\"s\",\"start_wall_ns\":\"soon\"}",
                 "\"start_wall_ns\"");
  expect_refused("{\"id\":\"a\",\"cmd\":\"start\",\"session\":\"s\",\"start_wall_ns\":-5}",
                 "\"start_wall_ns\"");
  expect_refused("{\"id\":\"a\",\"cmd\":\"start\",\"session\":\"s\",\"start_wall_ns\":1,\"peers\":\"pi1\"}",
                 "\"peers\"");
  expect_refused("{\"id\":\"a\",\"cmd\":\"start\",\"session\":\"s\",\"start_wall_ns\":1,\"peers\":[\"a\",3]}",
                 "\"peers\"[1]");
  expect_refused("{\"id\":\"a\",\"cmd\":\"trial\",\"label\":5}", "\"label\"");
  expect_refused("{\"id\":\"a\",\"cmd\":\"note\"}", "\"text\"");
  expect_refused("{\"id\":\"a\",\"cmd\":\"note\",\"text\":\"\"}", "\"text\"");
  char *big = malloc(PIREC_FLEET_NOTE_MAX + 64);
  int n = snprintf(big, 64, "{\"id\":\"a\",\"cmd\":\"note\",\"text\":\"");
  memset(big + n, 'x', PIREC_FLEET_NOTE_MAX + 1);
  strcpy(big + n + PIREC_FLEET_NOTE_MAX + 1, "\"}");
  expect_refused(big, "\"text\"");
  free(big);
}

static struct pirec_config *config_with(const char *text)
{
  struct pirec_config *cfg = NULL;
  struct pirec_config_errors errors = {0};
  assert_int_equal(pirec_config_parse(text, strlen(text), "t.conf", &cfg, &errors), 0);
  pirec_config_errors_free(&errors);
  return cfg;
}

static void test_settings(void **state)
{
  (void)state;
  struct pirec_fleet_settings s;
  char err[600] = "";
  struct pirec_config *cfg = config_with("");
  assert_int_equal(pirec_fleet_settings_load(cfg, &s, err, sizeof err), 0);
  pirec_config_free(cfg);

  char path[] = "/tmp/pirec-test-fleet-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, "pi1:pa:ss\n", 10), 10);
  close(fd);
  char text[512];
  snprintf(
      text, sizeof text,
      "[fleet]\nbroker = mqtts://lab:9000\ngroup = g\ndevice = d\ncredentials_file = %s\nstart_lead = 3s\n",
      path);
  cfg = config_with(text);
  assert_int_equal(pirec_fleet_settings_load(cfg, &s, err, sizeof err), 1);
  assert_string_equal(s.host, "lab");
  assert_int_equal(s.port, 9000);
  assert_int_equal(s.tls, 1);
  assert_string_equal(s.group, "g");
  assert_string_equal(s.device, "d");
  assert_string_equal(s.username, "pi1");
  assert_string_equal(s.password, "pa:ss");
  assert_int_equal(s.lead_ns, INT64_C(3000000000));
  assert_int_equal(s.keepalive_s, 10);

  /* A credentials file without USER:PASSWORD is refused naming the file and line. */
  FILE *f = fopen(path, "w");
  fputs("just-a-password\n", f);
  fclose(f);
  assert_int_equal(pirec_fleet_settings_load(cfg, &s, err, sizeof err), -EINVAL);
  char want[200];
  snprintf(want, sizeof want, "%s:1: expected one line USER:PASSWORD", path);
  assert_string_equal(err, want);
  unlink(path);
  assert_int_equal(pirec_fleet_settings_load(cfg, &s, err, sizeof err), -ENOENT);
  assert_non_null(strstr(err, path));
  pirec_config_free(cfg);
}

static void test_clock_json(void **state)
{
  (void)state;
  json_t *o = pirec_fleet_clock_json();
  assert_non_null(o);
  assert_true(json_is_boolean(json_object_get(o, "synchronised")));
  assert_true(json_integer_value(json_object_get(o, "max_error_ns")) >= 0);
  assert_true(json_integer_value(json_object_get(o, "est_error_ns")) >= 0);
  json_decref(o);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_url),        cmocka_unit_test(test_names_and_topics),
      cmocka_unit_test(test_commands),   cmocka_unit_test(test_settings),
      cmocka_unit_test(test_clock_json),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
