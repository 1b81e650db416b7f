/* Tests for config/: value types and their errors (several checked verbatim), whole-file validation,
 * the immutable value and its getters, canonical formatting, and the byte-preserving text edit. */
#include <errno.h>
#include <ftw.h>
#include <regex.h>
#include <stdbool.h>
#include <sys/stat.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "../config/internal.h"
#include "pirec/config.h"

#define NS_MS INT64_C(1000000)
#define NS_S  INT64_C(1000000000)

/* Parses text expecting failure; returns the errors (caller frees). */
static struct pirec_config_errors parse_bad(const char *text)
{
  struct pirec_config *cfg = (struct pirec_config *)1;
  struct pirec_config_errors e = {0};
  int r = pirec_config_parse(text, strlen(text), "t.conf", &cfg, &e);
  assert_int_equal(r, -EINVAL);
  assert_null(cfg);
  assert_true(e.count > 0);
  return e;
}

static struct pirec_config *parse_ok(const char *text)
{
  struct pirec_config *cfg = NULL;
  struct pirec_config_errors e = {0};
  int r = pirec_config_parse(text, strlen(text), "t.conf", &cfg, &e);
  for (size_t i = 0; i < e.count; i++)
    fprintf(stderr, "unexpected: %s\n", e.items[i].message);
  assert_int_equal(r, 0);
  assert_int_equal(e.count, 0);
  assert_non_null(cfg);
  return cfg;
}

/* Asserts that text yields exactly one error, with this message. */
static void expect_one(const char *text, const char *message)
{
  struct pirec_config_errors e = parse_bad(text);
  if (e.count != 1 || strcmp(e.items[0].message, message) != 0) {
    for (size_t i = 0; i < e.count; i++)
      fprintf(stderr, "got: %s\n", e.items[i].message);
    fprintf(stderr, "want: %s\n", message);
  }
  assert_int_equal(e.count, 1);
  assert_string_equal(e.items[0].message, message);
  pirec_config_errors_free(&e);
  assert_int_equal(e.count, 0);
  assert_null(e.items);
}

static void test_bool(void **state)
{
  (void)state;
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  char text[128];
  for (size_t i = 0; i < 4; i++) {
    snprintf(text, sizeof(text), "[session]\nremux_after = %s\n", yes[i]);
    struct pirec_config *cfg = parse_ok(text);
    assert_true(pirec_config_get_bool(cfg, "session", "remux_after"));
    pirec_config_free(cfg);
    snprintf(text, sizeof(text), "[session]\nremux_after = %s\n", no[i]);
    cfg = parse_ok(text);
    assert_false(pirec_config_get_bool(cfg, "session", "remux_after"));
    pirec_config_free(cfg);
  }
  expect_one("[session]\nremux_after = maybe\n",
             "t.conf:2: session.remux_after = 'maybe': expected true or false (also yes/no, on/off, 1/0)");
  expect_one("[session]\nremux_after = TRUE\n",
             "t.conf:2: session.remux_after = 'TRUE': expected true or false (also yes/no, on/off, 1/0)");
}

static void test_integer(void **state)
{
  (void)state;
  struct pirec_config *cfg = parse_ok("[camera.a]\nfps = 240\ncrf = 0\ngop = +5\n");
  assert_int_equal(pirec_config_get_int(cfg, "camera.a", "fps"), 240);
  assert_int_equal(pirec_config_get_int(cfg, "camera.a", "crf"), 0);
  assert_int_equal(pirec_config_get_int(cfg, "camera.a", "gop"), 5);
  pirec_config_free(cfg);
  expect_one("[camera.a]\nfps = 0\n",
             "t.conf:2: camera.a.fps = '0': out of range, expected an integer from 1 to 240");
  expect_one("[camera.a]\nfps = 241\n",
             "t.conf:2: camera.a.fps = '241': out of range, expected an integer from 1 to 240");
  expect_one(
      "[camera.a]\nfps = 99999999999999999999999\n",
      "t.conf:2: camera.a.fps = '99999999999999999999999': out of range, expected an integer from 1 to 240");
  expect_one("[camera.a]\nfps = 30fps\n",
             "t.conf:2: camera.a.fps = '30fps': expected an integer from 1 to 240");
  expect_one("[camera.a]\nfps = 29.97\n",
             "t.conf:2: camera.a.fps = '29.97': expected an integer from 1 to 240");
  expect_one("[camera.a]\nfps =\n", "t.conf:2: camera.a.fps = '': expected an integer from 1 to 240");
  /* file modes are octal */
  cfg = parse_ok("[control]\nsocket_mode = 0600\n");
  assert_int_equal(pirec_config_get_int(cfg, "control", "socket_mode"), 0600);
  char *text;
  assert_int_equal(pirec_config_get_text(cfg, "control.socket_mode", &text), 0);
  assert_string_equal(text, "0600");
  free(text);
  pirec_config_free(cfg);
  expect_one("[control]\nsocket_mode = 0800\n",
             "t.conf:2: control.socket_mode = '0800': expected an octal file mode from 0000 to 0777");
}

static void test_duration(void **state)
{
  (void)state;
  static const struct {
    const char *text;
    int64_t ns;
  } good[] = {{"500ms", 500 * NS_MS},
              {"2s", 2 * NS_S},
              {"1.5s", 1500 * NS_MS},
              {"1min", 60 * NS_S},
              {"1h", 3600 * NS_S},
              {"10us", 10000},
              {"7ns", 7},
              {"0", 0},
              {"0.5ms", 500000},
              {"1 s", NS_S},
              {"0.000001s", 1000},
              {"2.5h", 9000 * NS_S}};
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    int64_t ns = -1;
    assert_int_equal(pirec_config_parse_duration(good[i].text, &ns), 0);
    assert_int_equal(ns, good[i].ns);
  }
  static const char *const bad[] = {"500", "1.5ns", "s", "", "1.s", "-1s", "1sec", ".5s", "1S", "1m", "5 5s"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int64_t ns = -1;
    assert_int_equal(pirec_config_parse_duration(bad[i], &ns), -EINVAL);
    assert_int_equal(ns, -1);
  }
  int64_t ns;
  assert_int_equal(pirec_config_parse_duration("99999999999h", &ns), -ERANGE);
  assert_int_equal(pirec_config_parse_duration("99999999999999999999999ns", &ns), -ERANGE);

  struct pirec_config *cfg = parse_ok("[session]\nclocks_interval = 250ms\n");
  assert_int_equal(pirec_config_get_duration(cfg, "session", "clocks_interval"), 250 * NS_MS);
  pirec_config_free(cfg);
  expect_one("[session]\nclocks_interval = 10\n",
             "t.conf:2: session.clocks_interval = '10': expected a duration from 100ms to 1h with a unit "
             "(ns, us, ms, s, min, h), e.g. 500ms");
  expect_one("[session]\nclocks_interval = 50ms\n",
             "t.conf:2: session.clocks_interval = '50ms': out of range, expected a duration from 100ms to 1h "
             "with a unit (ns, us, ms, s, min, h), e.g. 500ms");
}

static void test_size(void **state)
{
  (void)state;
  static const struct {
    const char *text;
    uint64_t bytes;
  } good[] = {{"64MiB", 64u << 20},   {"1GiB", 1u << 30}, {"1kB", 1000}, {"1MB", 1000000},
              {"2GB", 2000000000u},   {"1.5KiB", 1536},   {"100", 100},  {"100B", 100},
              {"0.5MiB", 512u << 10}, {"4 KiB", 4096}};
  for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
    uint64_t b = 0;
    assert_int_equal(pirec_config_parse_size(good[i].text, &b), 0);
    assert_int_equal(b, good[i].bytes);
  }
  static const char *const bad[] = {"64mb", "1TiB", "0.5B", "MiB", "", "-1MiB", "1 MiBs", "1KB"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    uint64_t b = 7;
    assert_int_equal(pirec_config_parse_size(bad[i], &b), -EINVAL);
    assert_int_equal(b, 7);
  }
  uint64_t b;
  assert_int_equal(pirec_config_parse_size("99999999999999GiB", &b), -ERANGE);

  struct pirec_config *cfg = parse_ok("[storage]\nring_size = 16MiB\n[camera.a]\nring_size = 64kB\n");
  assert_int_equal(pirec_config_get_size(cfg, "storage", "ring_size"), 16u << 20);
  assert_int_equal(pirec_config_get_size(cfg, "camera.a", "ring_size"), 64000);
  char *text;
  assert_int_equal(pirec_config_get_text(cfg, "camera.a.ring_size", &text), 0);
  assert_string_equal(text, "64kB");
  free(text);
  pirec_config_free(cfg);
  expect_one("[storage]\nring_size = 2GiB\n",
             "t.conf:2: storage.ring_size = '2GiB': out of range, expected a size from 64KiB to 1GiB "
             "(units B, KiB, MiB, GiB, kB, MB, GB), e.g. 64MiB");
}

static void test_enum_and_strings(void **state)
{
  (void)state;
  struct pirec_config *cfg = parse_ok("[camera.usb]\nsource = v4l2\ndevice = /dev/video2\nsize = 1280x720\n"
                                      "[eyetracker]\naddress = 192.168.75.51:8080\n");
  assert_string_equal(pirec_config_get_string(cfg, "camera.usb", "source"), "v4l2");
  assert_string_equal(pirec_config_get_string(cfg, "camera.usb", "device"), "/dev/video2");
  int w, h;
  assert_int_equal(pirec_config_parse_wxh(pirec_config_get_string(cfg, "camera.usb", "size"), &w, &h), 0);
  assert_int_equal(w, 1280);
  assert_int_equal(h, 720);
  assert_string_equal(pirec_config_get_string(cfg, "eyetracker", "address"), "192.168.75.51:8080");
  pirec_config_free(cfg);
  expect_one(
      "[camera.a]\nsource = v4l\n",
      "t.conf:2: camera.a.source = 'v4l': expected one of lavfi, v4l2, rpicam, url; did you mean 'v4l2'?");
  expect_one(
      "[camera.a]\npreset = fastest\n",
      "t.conf:2: camera.a.preset = 'fastest': expected one of ultrafast, superfast, veryfast, faster, fast, "
      "medium, slow, slower, veryslow; did you mean 'faster'?");
  expect_one("[camera.a]\nsize = 640*480\n", "t.conf:2: camera.a.size = '640*480': expected WIDTHxHEIGHT "
                                             "with each from 16 to 8192 and even, e.g. 640x480");
  expect_one("[session]\nlabel = my session\n",
             "t.conf:2: session.label = 'my session': expected letters, digits, '-' and '_' only "
             "(it becomes part of a directory name)");
  expect_one(
      "[eyetracker]\naddress = glasses\n",
      "t.conf:2: eyetracker.address = 'glasses': expected auto, or HOST:PORT with a port from 1 to 65535, "
      "e.g. 192.168.75.51:8080");
  expect_one("[session]\noutput_dir =\n", "t.conf:2: session.output_dir = '': expected a non-empty value");
  expect_one("[camera.net]\nsource = url\n",
             "t.conf:1: camera.net.url: missing, expected a stream URL because source = url");
  expect_one(
      "[gpio.start]\naction = start\n",
      "t.conf:1: gpio.start.line: missing, expected a line name such as GPIO17 or an offset such as 17");
  expect_one("[gpio.a]\nline = GPIO17\n[gpio.b]\nline = GPIO17\n",
             "t.conf:4: gpio.b.line = 'GPIO17': line already used by [gpio.a] on line 2");
  expect_one("[eyetracker]\nreconnect_min = 5s\nreconnect_max = 2s\n",
             "t.conf:3: eyetracker.reconnect_max = '2s': expected at least reconnect_min (5s)");
  /* "label =;x" reads as ";x", but written back canonically ("label = ;x") it would be a comment:
   * refused instead of changing meaning on the next save (found by the config fuzzer). */
  expect_one("[session]\nlabel =;x\n", "t.conf:2: session.label = ';x': expected a value that does not start "
                                       "with ';' (which starts a comment)");
  expect_one("[session]\nlabel = a\x01b\n",
             "t.conf:2: session.label = 'a\x01b': expected a value without control characters");
  expect_one(
      "[gpio.led]\nline = ;a comment, not a value\n",
      "t.conf:2: gpio.led.line = '': expected a line name such as GPIO17, or a line offset such as 17");
}

static void test_unknown_keys_and_sections(void **state)
{
  (void)state;
  expect_one("[camera.front]\nfsp = 30\n",
             "t.conf:2: camera.front.fsp = '30': unknown key, did you mean 'fps'?");
  expect_one("[session]\noutput_directory = /x\n",
             "t.conf:2: session.output_directory = '/x': unknown key, expected one of the keys of [session] "
             "listed by `pirec config defaults`");
  expect_one("[sesion]\nlabel = x\n", "t.conf:1: [sesion]: unknown section, did you mean '[session]'?");
  expect_one("[camra.front]\n", "t.conf:1: [camra.front]: unknown section, did you mean '[camera.front]'?");
  expect_one("[camera]\nfps = 1\n",
             "t.conf:1: [camera]: expected [camera.NAME] with NAME made of letters, digits, '-' and '_'");
  expect_one("[camera.a b]\n",
             "t.conf:1: [camera.a b]: expected [camera.NAME] with NAME made of letters, digits, '-' and '_'");
  expect_one("[session.x]\n", "t.conf:1: [session.x]: expected [session] without a .NAME suffix");
  expect_one("[zzzzzz]\n", "t.conf:1: [zzzzzz]: unknown section, expected one of session, storage, control, "
                           "camera.NAME, eyetracker, notes, gpio.NAME, remux");
  expect_one("[session]\nlabel = a\nlabel = b\n",
             "t.conf:3: session.label = 'b': duplicate key, first set on line 2");
  expect_one("[notes]\n[notes]\n", "t.conf:2: [notes]: duplicate section, first on line 1");
  expect_one("label = x\n[session]\n",
             "t.conf:1: label = 'x': key outside any section, expected a [section] line before it");
  expect_one("[session]\njust words\n",
             "t.conf:2: 'just words': syntax error, expected '[section]', 'key = value' or a comment");
  expect_one("[session\n",
             "t.conf:1: '[session': syntax error, expected '[section]', 'key = value' or a comment");
}

static void test_all_errors_at_once(void **state)
{
  (void)state;
  const char *text = "# a broken file\n"
                     "[session]\n"
                     "clocks_interval = 10 parsecs\n" /* 3 */
                     "trial_digits = 0\n"             /* 4 */
                     "[gpio.x]\n"                     /* 5: line missing, reported after parsing */
                     "edge = up\n"                    /* 6 */
                     "[camera.front]\n"
                     "fsp = 30\n" /* 8 */
                     "garbage\n"  /* 9 */
                     "[eyetracker]\n"
                     "reconnect_min = 10s\n"
                     "reconnect_max = 1s\n"; /* 12 */
  struct pirec_config_errors e = parse_bad(text);
  static const int lines[] = {3, 4, 5, 6, 8, 9, 12};
  for (size_t i = 0; i < e.count; i++)
    fprintf(stderr, "%s\n", e.items[i].message);
  assert_int_equal(e.count, 7);
  for (size_t i = 0; i < 7; i++)
    assert_int_equal(e.items[i].line, lines[i]);
  assert_string_equal(e.items[2].key, "gpio.x.line");
  assert_string_equal(e.items[4].key, "camera.front.fsp");
  assert_null(e.items[5].key);
  /* errors accumulate across calls until freed */
  struct pirec_config *cfg;
  assert_int_equal(pirec_config_parse("[x]\n", 4, "u.conf", &cfg, &e), -EINVAL);
  assert_int_equal(e.count, 8);
  assert_string_equal(e.items[7].message, "u.conf:1: [x]: unknown section, expected one of session, storage, "
                                          "control, camera.NAME, eyetracker, notes, gpio.NAME, remux");
  pirec_config_errors_free(&e);
  /* errors may be NULL */
  assert_int_equal(pirec_config_parse(text, strlen(text), NULL, &cfg, NULL), -EINVAL);
}

static void test_syntax(void **state)
{
  (void)state;
  /* CRLF, BOM, indentation, '#' and ';' comments, inline ';' comments, ':' separators */
  const char *text = "\xEF\xBB\xBF# comment\r\n"
                     "; another\r\n"
                     "  [session]  \r\n"
                     "\t label = abc ; inline comment\r\n"
                     "clocks_interval: 2s\r\n"
                     "[camera.c1]\r\n"
                     "lavfi = testsrc2;x\r\n"
                     "url = rtsp://h:554/s#frag\r\n"
                     "   \r\n";
  struct pirec_config *cfg = parse_ok(text);
  assert_string_equal(pirec_config_get_string(cfg, "session", "label"), "abc");
  assert_int_equal(pirec_config_get_duration(cfg, "session", "clocks_interval"), 2 * NS_S);
  assert_string_equal(pirec_config_get_string(cfg, "camera.c1", "lavfi"), "testsrc2;x");
  assert_string_equal(pirec_config_get_string(cfg, "camera.c1", "url"), "rtsp://h:554/s#frag");
  size_t len;
  assert_string_equal(pirec_config_source(cfg, &len), text);
  assert_int_equal(len, strlen(text));
  assert_string_equal(pirec_config_path(cfg), "t.conf");
  pirec_config_free(cfg);

  /* NUL bytes and overlong lines are errors with their line numbers, and parsing goes on */
  const char nul[] = "[session]\nlabel = a\0b\nfoo = 1\n";
  struct pirec_config_errors e = {0};
  assert_int_equal(pirec_config_parse(nul, sizeof(nul) - 1, "n.conf", &cfg, &e), -EINVAL);
  assert_int_equal(e.count, 2);
  assert_string_equal(e.items[0].message, "n.conf:2: line contains a NUL byte, expected text");
  assert_string_equal(e.items[1].message,
                      "n.conf:3: session.foo = '1': unknown key, expected one of the keys of "
                      "[session] listed by `pirec config defaults`");
  pirec_config_errors_free(&e);
  char longline[400];
  snprintf(longline, sizeof(longline), "[camera.a]\nlavfi = %0250d\nfps = 0\n", 0);
  e = parse_bad(longline);
  assert_int_equal(e.count, 2);
  assert_string_equal(e.items[0].message, "t.conf:2: key and value are 256 bytes long, expected at most 196");
  assert_int_equal(e.items[1].line, 3);
  pirec_config_errors_free(&e);
  /* a long comment does not count */
  snprintf(longline, sizeof(longline), "[camera.a]\nfps = 5 ; %0250d\n", 0);
  cfg = parse_ok(longline);
  assert_int_equal(pirec_config_get_int(cfg, "camera.a", "fps"), 5);
  pirec_config_free(cfg);
  /* an empty file is all defaults */
  cfg = parse_ok("");
  assert_int_equal(pirec_config_instance_count(cfg, "camera"), 0);
  assert_false(pirec_config_has_section(cfg, "session"));
  assert_string_equal(pirec_config_get_string(cfg, "session", "output_dir"), "/var/lib/pirec/sessions");
  pirec_config_free(cfg);
}

static void test_getters(void **state)
{
  (void)state;
  struct pirec_config *cfg = parse_ok("[camera.front]\nfps = 25\n"
                                      "[gpio.start]\nline = GPIO17\naction = start\n"
                                      "[camera.back]\nenabled = false\n"
                                      "[notes]\n");
  assert_int_equal(pirec_config_instance_count(cfg, "camera"), 2);
  assert_string_equal(pirec_config_instance(cfg, "camera", 0), "camera.front");
  assert_string_equal(pirec_config_instance(cfg, "camera", 1), "camera.back");
  assert_null(pirec_config_instance(cfg, "camera", 2));
  assert_string_equal(pirec_config_instance(cfg, "gpio", 0) + strlen("gpio") + 1, "start");
  assert_int_equal(pirec_config_instance_count(cfg, "session"), 0);
  assert_int_equal(pirec_config_get_int(cfg, "camera.front", "fps"), 25);
  assert_int_equal(pirec_config_get_int(cfg, "camera.back", "fps"), 30);
  assert_false(pirec_config_get_bool(cfg, "camera.back", "enabled"));
  assert_true(pirec_config_get_bool(cfg, "camera.front", "enabled"));
  /* an instance not in the file answers with defaults */
  assert_int_equal(pirec_config_get_int(cfg, "camera.nothere", "fps"), 30);
  assert_false(pirec_config_has_section(cfg, "camera.nothere"));
  assert_true(pirec_config_has_section(cfg, "notes"));
  assert_false(pirec_config_has_section(cfg, "session"));
  assert_true(pirec_config_is_set(cfg, "camera.front", "fps"));
  assert_false(pirec_config_is_set(cfg, "camera.front", "crf"));
  assert_string_equal(pirec_config_get_string(cfg, "gpio.start", "action"), "start");
  assert_string_equal(pirec_config_get_string(cfg, "gpio.start", "edge"), "rising");
  assert_int_equal(pirec_config_get_duration(cfg, "gpio.start", "debounce"), 5 * NS_MS);
  assert_int_equal(pirec_config_get_size(cfg, "camera.front", "ring_size"), 0); /* 0: a second of frames */
  assert_string_equal(pirec_config_get_string(cfg, "session", "label"), "");
  char *t;
  assert_int_equal(pirec_config_get_text(cfg, "gpio.start.debounce", &t), 0);
  assert_string_equal(t, "5ms");
  free(t);
  assert_int_equal(pirec_config_get_text(cfg, "camera.front.enabled", &t), 0);
  assert_string_equal(t, "true");
  free(t);
  assert_int_equal(pirec_config_get_text(cfg, "camera.front.nope", &t), -ENOENT);
  assert_null(t);
  assert_int_equal(pirec_config_get_text(cfg, "nosuchkey", &t), -ENOENT);
  /* references: the value outlives the first owner */
  struct pirec_config *other = pirec_config_ref(cfg);
  pirec_config_free(cfg);
  assert_int_equal(pirec_config_get_int(other, "camera.front", "fps"), 25);
  pirec_config_free(other);
  pirec_config_free(NULL);

  struct pirec_config *def;
  assert_int_equal(pirec_config_new_defaults(&def), 0);
  assert_int_equal(pirec_config_get_int(def, "remux", "jobs"), 1);
  assert_string_equal(pirec_config_get_string(def, "remux", "format"), "mp4");
  pirec_config_free(def);
}

/* A getter with a key the schema lacks (or the wrong type) answers the type's zero value. */
static void test_getter_misuse_gives_zero(void **state)
{
  (void)state;
  struct pirec_config *cfg = parse_ok("[camera.a]\nfps = 30\n");
  assert_int_equal(pirec_config_get_int(cfg, "camera.a", "enabled"), 0);
  assert_false(pirec_config_get_bool(cfg, "session", "nope"));
  assert_string_equal(pirec_config_get_string(cfg, "nosection", "x"), "");
  assert_int_equal(pirec_config_get_duration(cfg, "camera.a", "fps"), 0);
  assert_false(pirec_config_is_set(cfg, "camera.a", "nope"));
  assert_true(pirec_config_is_set(cfg, "camera.a", "fps"));
  pirec_config_free(cfg);
}

/* Whether the schema has key in section (a literal "kind" or "kind.NAME"; any kind when section is
 * not a literal) with the type the getter reads. */
static bool schema_has(const char *getter, const char *section, const char *key)
{
  const struct pirec__config_kind *only = NULL;
  if (section[0] == '"') {
    char name[128];
    snprintf(name, sizeof(name), "%.*s", (int)strlen(section) - 2, section + 1);
    bool bad;
    only = pirec__config_section_kind(name, &bad);
    if (!only)
      return false;
  }
  for (size_t k = 0; k < pirec__config_kind_count; k++) {
    const struct pirec__config_kind *kind = &pirec__config_kinds[k];
    size_t i;
    const struct pirec__config_key *found = pirec__config_key_find(kind, key, &i);
    if ((only && kind != only) || !found)
      continue;
    enum pirec__config_type t = found->type;
    if (strcmp(getter, "is_set") == 0 || (strcmp(getter, "get_bool") == 0 && t == PIREC__CONFIG_BOOL) ||
        (strcmp(getter, "get_int") == 0 && t == PIREC__CONFIG_INT) ||
        (strcmp(getter, "get_duration") == 0 && t == PIREC__CONFIG_DURATION) ||
        (strcmp(getter, "get_size") == 0 && t == PIREC__CONFIG_SIZE) ||
        (strcmp(getter, "get_string") == 0 &&
         (t == PIREC__CONFIG_STRING || t == PIREC__CONFIG_PATH || t == PIREC__CONFIG_ENUM)))
      return true;
  }
  return false;
}

static regex_t getter_call;
static size_t getter_calls;

static int scan_source(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  (void)st;
  (void)ftw;
  size_t n = strlen(path);
  if (flag != FTW_F || n < 2 || strcmp(path + n - 2, ".c") != 0)
    return 0;
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  static char text[1 << 20];
  size_t len = fread(text, 1, sizeof(text) - 1, f);
  fclose(f);
  text[len] = '\0';
  regmatch_t m[4];
  for (const char *at = text; regexec(&getter_call, at, 4, m, 0) == 0; at += m[0].rm_eo) {
    char getter[32], section[128], key[64];
    snprintf(getter, sizeof(getter), "%.*s", (int)(m[1].rm_eo - m[1].rm_so), at + m[1].rm_so);
    snprintf(section, sizeof(section), "%.*s", (int)(m[2].rm_eo - m[2].rm_so), at + m[2].rm_so);
    snprintf(key, sizeof(key), "%.*s", (int)(m[3].rm_eo - m[3].rm_so), at + m[3].rm_so);
    if (!schema_has(getter, section, key))
      fail_msg("%s: pirec_config_%s(%s, \"%s\"): not in the schema with that type", path, getter, section,
               key);
    getter_calls++;
  }
  return 0;
}

/* The getters answer zero for a key the schema lacks instead of failing, so every literal key the
 * product code reads is checked here against the schema, with the getter's type. */
static void test_product_keys_are_in_schema(void **state)
{
  (void)state;
  assert_int_equal(regcomp(&getter_call,
                           "pirec_config_(get_bool|get_int|get_duration|get_size|get_string|is_set)\\("
                           "[^,()]*,[[:space:]]*([^,()]*[^,()[:space:]])[[:space:]]*,[[:space:]]*"
                           "\"([a-z_0-9]+)\"[[:space:]]*\\)",
                           REG_EXTENDED),
                   0);
  static const char *const dirs[] = {"apps", "controller", "gpio", "recorders", "config", "remux", "media"};
  for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/%s", PIREC_SOURCE_DIR, dirs[i]);
    assert_int_equal(nftw(dir, scan_source, 16, FTW_PHYS), 0);
  }
  regfree(&getter_call);
  assert_true(getter_calls >= 50); /* the scan found the callers */
}

/* Every default in the schema parses: a config of defaults builds. */
static void test_schema_defaults_parse(void **state)
{
  (void)state;
  struct pirec_config *cfg;
  assert_int_equal(pirec_config_new_defaults(&cfg), 0);
  pirec_config_free(cfg);
}

/* pirec_config_format writes every key; parsing it gives the same values and the same text. */
static void test_format_is_canonical(void **state)
{
  (void)state;
  struct pirec_config *cfg = parse_ok("[gpio.sync]\nline = 4\ndirection = output\nrole = sync_pulse\n"
                                      "pulse_length = 1500us\n[camera.front]\nfps = 25\nsize = 320x240\n"
                                      "[session]\nlabel = pilot\nclocks_interval = 90s\n");
  char *a = pirec_config_format(cfg);
  assert_non_null(a);
  assert_non_null(strstr(a, "[gpio.sync]\nchip = auto\nline = 4\ndirection = output\n"));
  assert_non_null(strstr(a, "pulse_length = 1500us\n"));
  assert_non_null(strstr(a, "clocks_interval = 90s\n"));
  assert_non_null(strstr(a, "label = pilot\n"));
  assert_non_null(strstr(a, "[remux]\n")); /* absent singletons are written with defaults */
  struct pirec_config *again = parse_ok(a);
  char *b = pirec_config_format(again);
  assert_string_equal(a, b);
  assert_int_equal(pirec_config_get_duration(again, "gpio.sync", "pulse_length"), 1500000);
  assert_string_equal(pirec_config_get_string(again, "session", "label"), "pilot");
  free(a);
  free(b);
  pirec_config_free(again);
  pirec_config_free(cfg);
}

/* The template (`pirec config defaults`) is itself a valid config with every key at its default. */
static void test_defaults_text(void **state)
{
  (void)state;
  char *t = pirec_config_defaults_text();
  assert_non_null(t);
  struct pirec_config *cfg = parse_ok(t);
  assert_int_equal(pirec_config_instance_count(cfg, "camera"), 1);
  assert_int_equal(pirec_config_instance_count(cfg, "gpio"), 0); /* commented out: needs hardware */
  assert_non_null(strstr(t, "# [gpio.start]\n"));
  assert_non_null(strstr(t, "\n# line = GPIO17\n"));
  pirec_config_free(cfg);
  free(t);
  char *md = pirec_config_reference_markdown();
  assert_non_null(md);
  assert_non_null(
      strstr(md, "| `fps` | integer 1..240 | `30` | frames per second requested from the source |\n"));
  assert_non_null(strstr(md, "| `line` | string | required |"));
  free(md);
}

/* ---- text edit ---------------------------------------------------------------------------------- */

static char *edit(const char *text, const char *key, const char *value)
{
  struct pirec_config_assignment a = {key, value};
  char *out = NULL;
  size_t len = 0;
  struct pirec_config_errors e = {0};
  int r = pirec_config_edit_text(text, strlen(text), "e.conf", &a, 1, &out, &len, &e);
  for (size_t i = 0; i < e.count; i++)
    fprintf(stderr, "%s\n", e.items[i].message);
  assert_int_equal(r, 0);
  assert_int_equal(len, strlen(out));
  pirec_config_errors_free(&e);
  return out;
}

static const char sample[] = "# pirec config for rig 2\n"
                             "\n"
                             "[session]\n"
                             "output_dir = /data/sessions   ; on the USB disk\n"
                             "  label=pilot\n"
                             "\n"
                             "# cameras\n"
                             "[camera.front]\n"
                             "source = v4l2 ; the USB one\n"
                             "fps: 30\n"
                             "url =\n"
                             "; the eye tracker follows\n"
                             "\n"
                             "[eyetracker]\n"
                             "enabled = true\n";

static void test_edit_replaces_value_only(void **state)
{
  (void)state;
  char *out = edit(sample, "camera.front.fps", "25");
  /* every other byte identical: the result equals the sample with "30" replaced on that line */
  const char *at = strstr(sample, "fps: 30");
  size_t pre = (size_t)(at - sample) + strlen("fps: ");
  assert_int_equal(strlen(out), strlen(sample));
  assert_memory_equal(out, sample, pre);
  assert_memory_equal(out + pre, "25", 2);
  assert_string_equal(out + pre + 2, sample + pre + 2);
  free(out);

  out = edit(sample, "session.output_dir", "/mnt/x");
  char want[1024];
  snprintf(want, sizeof(want), "%s", sample);
  char *p = strstr(want, "/data/sessions");
  memmove(p + 6, p + 14, strlen(p + 14) + 1);
  memcpy(p, "/mnt/x", 6);
  assert_string_equal(out, want); /* inline comment and its spacing kept */
  free(out);

  out = edit(sample, "session.label", "main");
  snprintf(want, sizeof(want), "%.*slabel=main%s", (int)(strstr(sample, "label=pilot") - sample), sample,
           strstr(sample, "label=pilot") + strlen("label=pilot"));
  assert_string_equal(out, want);
  free(out);

  /* an empty value gets one blank after '=' */
  out = edit(sample, "camera.front.url", "rtsp://h/s");
  snprintf(want, sizeof(want), "%.*surl = rtsp://h/s%s", (int)(strstr(sample, "url =") - sample), sample,
           strstr(sample, "url =") + strlen("url ="));
  assert_string_equal(out, want);
  free(out);
}

static void test_edit_inserts(void **state)
{
  (void)state;
  /* a new key goes right after the last key of its section, before comments about the next one */
  char *out = edit(sample, "camera.front.crf", "20");
  char want[1024];
  const char *after = strstr(sample, "url =\n") + strlen("url =\n");
  snprintf(want, sizeof(want), "%.*scrf = 20\n%s", (int)(after - sample), sample, after);
  assert_string_equal(out, want);
  free(out);
  /* a new section goes at the end, after one blank line */
  out = edit(sample, "camera.side.source", "rpicam");
  snprintf(want, sizeof(want), "%s\n[camera.side]\nsource = rpicam\n", sample);
  assert_string_equal(out, want);
  free(out);
  /* last line without newline; section with no keys; CRLF files keep CRLF */
  out = edit("[eyetracker]\nenabled = true", "eyetracker.rtsp_port", "554");
  assert_string_equal(out, "[eyetracker]\nenabled = true\nrtsp_port = 554\n");
  free(out);
  out = edit("[notes]\r\n# c\r\n", "notes.enabled", "false");
  assert_string_equal(out, "[notes]\r\nenabled = false\r\n# c\r\n");
  free(out);
  out = edit("[notes]\r\nenabled = true\r\n", "remux.jobs", "2");
  assert_string_equal(out, "[notes]\r\nenabled = true\r\n\r\n[remux]\r\njobs = 2\r\n");
  free(out);
  out = edit("", "remux.jobs", "2");
  assert_string_equal(out, "[remux]\njobs = 2\n");
  free(out);
  out = edit("# only a comment", "remux.jobs", "2");
  assert_string_equal(out, "# only a comment\n\n[remux]\njobs = 2\n");
  free(out);

  /* several assignments in one call, and the result parses to the new values */
  struct pirec_config_assignment as[] = {{"camera.front.fps", "15"},
                                         {"session.label", "run2"},
                                         {"gpio.led.line", "GPIO27"},
                                         {"gpio.led.direction", "output"}};
  char *o;
  size_t len;
  assert_int_equal(pirec_config_edit_text(sample, strlen(sample), NULL, as, 4, &o, &len, NULL), 0);
  struct pirec_config *cfg = parse_ok(o);
  assert_int_equal(pirec_config_get_int(cfg, "camera.front", "fps"), 15);
  assert_string_equal(pirec_config_get_string(cfg, "session", "label"), "run2");
  assert_string_equal(pirec_config_get_string(cfg, "gpio.led", "direction"), "output");
  assert_non_null(strstr(o, "\n[gpio.led]\nline = GPIO27\ndirection = output\n"));
  pirec_config_free(cfg);
  free(o);
}

static void test_edit_refuses_bad_values(void **state)
{
  (void)state;
  struct pirec_config_assignment as[] = {{"camera.front.fps", "0"},   {"camera.front.fsp", "1"},
                                         {"session.label", "a ;b"},   {"sesion.label", "x"},
                                         {"camera.label", "x"},       {"label", "x"},
                                         {"session.label", " padded"}};
  char *o = (char *)1;
  size_t len = 9;
  struct pirec_config_errors e = {0};
  assert_int_equal(pirec_config_edit_text(sample, strlen(sample), "e.conf", as, 7, &o, &len, &e), -EINVAL);
  assert_null(o);
  assert_int_equal(len, 0);
  assert_int_equal(e.count, 7);
  assert_string_equal(e.items[0].message,
                      "e.conf: camera.front.fps = '0': out of range, expected an integer from 1 to 240");
  assert_string_equal(e.items[1].message,
                      "e.conf: camera.front.fsp = '1': unknown key, did you mean 'camera.front.fps'?");
  assert_string_equal(e.items[2].message, "e.conf: session.label = 'a ;b': expected letters, digits, '-' and "
                                          "'_' only (it becomes part of a directory name)");
  assert_string_equal(e.items[3].message,
                      "e.conf: sesion.label = 'x': unknown section, did you mean 'session'?");
  assert_string_equal(
      e.items[4].message,
      "e.conf: camera.label = 'x': expected camera.NAME.KEY with NAME of letters, digits, '-' and '_'");
  assert_string_equal(e.items[5].message,
                      "e.conf: label = 'x': unknown key, expected SECTION.KEY such as session.label");
  pirec_config_errors_free(&e);
  /* a string value that INI would cut at ' ;' is refused rather than silently shortened */
  struct pirec_config_assignment c = {"camera.a.lavfi", "testsrc2 ;x"};
  assert_int_equal(pirec_config_edit_text("", 0, "e.conf", &c, 1, &o, NULL, &e), -EINVAL);
  assert_string_equal(e.items[0].message,
                      "e.conf: camera.a.lavfi = 'testsrc2 ;x': expected a value without "
                      "leading or trailing blanks and without ' ;' (which starts a comment)");
  pirec_config_errors_free(&e);
  c.value = ";testsrc2";
  assert_int_equal(pirec_config_edit_text("", 0, "e.conf", &c, 1, &o, NULL, &e), -EINVAL);
  assert_string_equal(e.items[0].message, "e.conf: camera.a.lavfi = ';testsrc2': expected a value that does "
                                          "not start with ';' (which starts a comment)");
  pirec_config_errors_free(&e);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bool),
      cmocka_unit_test(test_integer),
      cmocka_unit_test(test_duration),
      cmocka_unit_test(test_size),
      cmocka_unit_test(test_enum_and_strings),
      cmocka_unit_test(test_unknown_keys_and_sections),
      cmocka_unit_test(test_all_errors_at_once),
      cmocka_unit_test(test_syntax),
      cmocka_unit_test(test_getters),
      cmocka_unit_test(test_getter_misuse_gives_zero),
      cmocka_unit_test(test_product_keys_are_in_schema),
      cmocka_unit_test(test_schema_defaults_parse),
      cmocka_unit_test(test_format_is_canonical),
      cmocka_unit_test(test_defaults_text),
      cmocka_unit_test(test_edit_replaces_value_only),
      cmocka_unit_test(test_edit_inserts),
      cmocka_unit_test(test_edit_refuses_bad_values),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
