/* Tests for io/f32: every output reads back (strtof, glibc's correctly rounded parser) to the same
 * bits, has no more significant digits than the shortest printf %.{p}e that reads back, and looks
 * like %g. A random sample of 2^22 bit patterns plus every power of two, every boundary between
 * subnormal and normal, and the neighbours of powers of ten; the exhaustive run over all 2^32
 * patterns is `bench-f32 --all` (docs/PERFORMANCE.md). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "pirec/csv.h"
#include "pirec/f32.h"

static float from_bits(uint32_t u)
{
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

static uint32_t to_bits(float f)
{
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static size_t fmt(char *buf, float f)
{
  char out[PIREC_F32_MAX + 8];
  memset(out, 'X', sizeof out);
  size_t n = pirec_f32_format(out, f);
  assert_in_range(n, 1, PIREC_F32_MAX - 1);
  assert_int_equal(out[PIREC_F32_MAX], 'X'); /* nothing written past the contract */
  memcpy(buf, out, n);
  buf[n] = '\0';
  return n;
}

static int significant_digits(const char *s)
{
  int n = 0, leading = 1;
  for (; *s && *s != 'e'; s++) {
    if (*s < '0' || *s > '9')
      continue;
    if (*s == '0' && leading)
      continue;
    leading = 0;
    n++;
  }
  return n;
}

/* Strips zeros that fixed notation pads an integer with ("123456790" has 8 significant digits). */
static int digits_of(const char *s)
{
  int n = significant_digits(s);
  if (!strchr(s, '.') && !strchr(s, 'e')) {
    const char *end = s + strlen(s);
    while (end > s && end[-1] == '0' && n > 1)
      end--, n--;
  }
  return n;
}

/* The fewest digits p for which printf's correctly rounded %.{p-1}e reads back. */
static int printf_shortest(float f)
{
  char b[64];
  for (int p = 1; p <= 9; p++) {
    snprintf(b, sizeof b, "%.*e", p - 1, (double)f);
    if (to_bits(strtof(b, NULL)) == to_bits(f))
      return p;
  }
  return 99;
}

static void check(uint32_t bits, int compare_printf)
{
  float f = from_bits(bits);
  char s[PIREC_F32_MAX + 1];
  fmt(s, f);
  if (isnan(f)) {
    assert_string_equal(s, "nan");
    return;
  }
  char *end;
  float back = strtof(s, &end);
  if (*end != '\0' || to_bits(back) != bits)
    fail_msg("0x%08x: '%s' reads back as 0x%08x", bits, s, to_bits(back));
  if (compare_printf && isfinite(f) && f != 0) {
    int mine = digits_of(s), ref = printf_shortest(f);
    if (mine > ref)
      fail_msg("0x%08x: '%s' has %d digits, printf needs %d", bits, s, mine, ref);
  }
}

static void test_known(void **state)
{
  (void)state;
  static const struct {
    float f;
    const char *text;
  } cases[] = {
      {0.1f, "0.1"},
      {0.5f, "0.5"},
      {1.0f, "1"},
      {-2.5f, "-2.5"},
      {0.0f, "0"},
      {-0.0f, "-0"},
      {1234.5678f, "1234.5677"},
      {0.00012f, "0.00012"},
      {0.0000123f, "1.23e-05"},
      {123456789.0f, "123456790"},
      {1e9f, "1e+09"},
      {3.4028235e38f, "3.4028235e+38"},
      {1.17549435e-38f, "1.1754944e-38"},
      {1.4e-45f, "1e-45"},
      {16777216.0f, "16777216"},
      {(float)INFINITY, "inf"},
      {-(float)INFINITY, "-inf"},
  };
  char s[PIREC_F32_MAX + 1];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fmt(s, cases[i].f);
    assert_string_equal(s, cases[i].text);
  }
  fmt(s, from_bits(0xffc00001u));
  assert_string_equal(s, "nan");
}

static void test_edges(void **state)
{
  (void)state;
  for (uint32_t e = 0; e < 256; e++) {
    for (int d = -3; d <= 3; d++) {
      uint32_t b = (e << 23) + (uint32_t)d;
      check(b, 1);
      check(b | 0x80000000u, 1);
    }
  }
  for (int k = -45; k <= 38; k++) {
    char b[16];
    snprintf(b, sizeof b, "1e%d", k);
    float p = strtof(b, NULL);
    uint32_t u = to_bits(p);
    for (int d = -2; d <= 2; d++)
      check(u + (uint32_t)d, 1);
  }
}

static uint64_t next_random(uint64_t *s)
{
  /* splitmix64: a fixed seed, so a failure reproduces */
  uint64_t z = (*s += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static void test_random_sample(void **state)
{
  (void)state;
  uint64_t seed = 21;
  for (int i = 0; i < (1 << 22); i++) {
    uint32_t b = (uint32_t)next_random(&seed);
    check(b, (i & 15) == 0); /* the printf comparison is 10x slower: every 16th value */
  }
}

static void test_csv_field(void **state)
{
  (void)state;
  char buf[64];
  struct pirec_csv_row row;
  pirec_csv_row_begin(&row, buf, sizeof buf);
  pirec_csv_row_f32(&row, 0.25f);
  pirec_csv_row_f32(&row, -1e-10f);
  int n = pirec_csv_row_end(&row);
  assert_int_equal(n, (int)strlen("0.25,-1e-10\n"));
  assert_memory_equal(buf, "0.25,-1e-10\n", (size_t)n);
  pirec_csv_row_begin(&row, buf, 8);
  pirec_csv_row_f32(&row, 3.4028235e38f); /* 13 bytes: does not fit */
  assert_int_equal(pirec_csv_row_end(&row), -ENOSPC);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_known),
      cmocka_unit_test(test_edges),
      cmocka_unit_test(test_random_sample),
      cmocka_unit_test(test_csv_field),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
