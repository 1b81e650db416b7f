/* Shortest round-trip binary32 text (see include/pirec/f32.h for the algorithm and its source). */

#include "pirec/f32.h"

#include <stdint.h>
#include <string.h>

/* Every quantity below stays under 2^185: r and s reach f * 2^2 * 10^45 (the smallest subnormal
 * scaled up) or 4 * 10^39 (the largest float), times 10 while a digit is formed. Three 64-bit
 * words hold that with room to spare; the exhaustive run (bench-f32 --all) checks every value. */
struct big {
  uint64_t w[3];
};

static void big_set(struct big *b, uint64_t v)
{
  b->w[0] = v;
  b->w[1] = 0;
  b->w[2] = 0;
}

static void big_shl(struct big *b, int n)
{
  for (; n >= 64; n -= 64) {
    b->w[2] = b->w[1];
    b->w[1] = b->w[0];
    b->w[0] = 0;
  }
  if (n > 0) {
    b->w[2] = b->w[2] << n | b->w[1] >> (64 - n);
    b->w[1] = b->w[1] << n | b->w[0] >> (64 - n);
    b->w[0] <<= n;
  }
}

static void big_mul(struct big *b, uint64_t m)
{
  unsigned __int128 carry = 0;
  for (int i = 0; i < 3; i++) {
    carry += (unsigned __int128)b->w[i] * m;
    b->w[i] = (uint64_t)carry;
    carry >>= 64;
  }
}

static const uint64_t pow10_u64[20] = {1u,
                                       10u,
                                       100u,
                                       1000u,
                                       10000u,
                                       100000u,
                                       1000000u,
                                       10000000u,
                                       100000000u,
                                       1000000000u,
                                       10000000000u,
                                       100000000000u,
                                       1000000000000u,
                                       10000000000000u,
                                       100000000000000u,
                                       1000000000000000u,
                                       10000000000000000u,
                                       100000000000000000u,
                                       1000000000000000000u,
                                       10000000000000000000u};

static void big_mul_pow10(struct big *b, int n)
{
  for (; n > 19; n -= 19)
    big_mul(b, pow10_u64[19]);
  big_mul(b, pow10_u64[n]);
}

static int big_cmp(const struct big *a, const struct big *b)
{
  for (int i = 2; i >= 0; i--)
    if (a->w[i] != b->w[i])
      return a->w[i] < b->w[i] ? -1 : 1;
  return 0;
}

static void big_add(struct big *out, const struct big *a, const struct big *b)
{
  unsigned __int128 carry = 0;
  for (int i = 0; i < 3; i++) {
    carry += (unsigned __int128)a->w[i] + b->w[i];
    out->w[i] = (uint64_t)carry;
    carry >>= 64;
  }
}

static void big_sub(struct big *a, const struct big *b)
{
  uint64_t borrow = 0;
  for (int i = 0; i < 3; i++) {
    uint64_t x = a->w[i], y = b->w[i];
    uint64_t d = x - y - borrow;
    borrow = (x < y) || (x - y < borrow);
    a->w[i] = d;
  }
}

/* The value is r / s; the numbers within (r - m_minus) / s and (r + m_plus) / s read back to it
 * (the ends included when the significand is even: readers round ties to even). */
struct state {
  struct big r, s, m_plus, m_minus;
  int inclusive;
};

/* r + m_plus reaches s (or passes it, for exclusive ends): the upper end is at least s. */
static int high_reaches(const struct state *st)
{
  struct big hi;
  big_add(&hi, &st->r, &st->m_plus);
  int c = big_cmp(&hi, &st->s);
  return st->inclusive ? c >= 0 : c > 0;
}

static void setup(struct state *st, uint64_t f, int e, int unequal_gaps)
{
  /* Scaled by 2 (4 with the narrower lower gap of a power of two) so the half gaps are integers. */
  int shift = unequal_gaps ? 2 : 1;
  if (e >= 0) {
    big_set(&st->r, f);
    big_shl(&st->r, e + shift);
    big_set(&st->s, (uint64_t)1 << shift);
    big_set(&st->m_plus, 1);
    big_shl(&st->m_plus, e + shift - 1);
    big_set(&st->m_minus, 1);
    big_shl(&st->m_minus, e);
  } else {
    big_set(&st->r, f << shift);
    big_set(&st->s, 1);
    big_shl(&st->s, shift - e);
    big_set(&st->m_plus, (uint64_t)1 << (shift - 1));
    big_set(&st->m_minus, 1);
  }
}

/* floor(x * log10(2)) rounded down for every x in the binary32 range: the constant is a hair below
 * log10(2) for positive x and a hair above it for negative x. */
static int floor_log10_pow2(int x)
{
  if (x >= 0)
    return (x * 78913) >> 18;
  return -((-x * 78914 + (1 << 18) - 1) >> 18);
}

/* Scales r/s into [0.1, 1) by 10^k and returns k: the estimate is never above the true k, and the
 * loop raises it at most twice. */
static int scale(struct state *st, int log2_floor)
{
  int k = floor_log10_pow2(log2_floor) + 1;
  if (k >= 0) {
    big_mul_pow10(&st->s, k);
  } else {
    big_mul_pow10(&st->r, -k);
    big_mul_pow10(&st->m_plus, -k);
    big_mul_pow10(&st->m_minus, -k);
  }
  while (high_reaches(st)) {
    big_mul(&st->s, 10);
    k++;
  }
  return k;
}

/* Writes the digits into d (at most 9 for binary32) and returns their count. */
static int generate(struct state *st, char *d)
{
  for (int n = 0;;) {
    big_mul(&st->r, 10);
    big_mul(&st->m_plus, 10);
    big_mul(&st->m_minus, 10);
    int digit = 0;
    while (big_cmp(&st->r, &st->s) >= 0) {
      big_sub(&st->r, &st->s);
      digit++;
    }
    int c = big_cmp(&st->r, &st->m_minus);
    int low = st->inclusive ? c <= 0 : c < 0;
    int high = high_reaches(st);
    if (!low && !high) {
      d[n++] = (char)('0' + digit);
      continue;
    }
    if (low && high) {
      struct big twice;
      big_add(&twice, &st->r, &st->r);
      high = big_cmp(&twice, &st->s) >= 0; /* nearer the upper candidate (ties: up) */
    }
    d[n++] = (char)('0' + digit + (high ? 1 : 0));
    return n;
  }
}

static int bit_length(uint64_t v)
{
  return 64 - __builtin_clzll(v);
}

/* digits d[0..n) times 10^(k - n), laid out like %g with 9 significant digits. */
static size_t layout(char *out, const char *d, int n, int k)
{
  char *p = out;
  int x = k - 1; /* exponent of the first digit */
  if (x >= -4 && x < 9) {
    if (x < 0) {
      memcpy(p, "0.0000", (size_t)(1 - x));
      p += 1 - x;
      memcpy(p, d, (size_t)n);
      return (size_t)(p + n - out);
    }
    int whole = x + 1;
    for (int i = 0; i < whole; i++)
      *p++ = i < n ? d[i] : '0';
    if (n > whole) {
      *p++ = '.';
      memcpy(p, d + whole, (size_t)(n - whole));
      p += n - whole;
    }
    return (size_t)(p - out);
  }
  *p++ = d[0];
  if (n > 1) {
    *p++ = '.';
    memcpy(p, d + 1, (size_t)(n - 1));
    p += n - 1;
  }
  *p++ = 'e';
  *p++ = x < 0 ? '-' : '+';
  int ax = x < 0 ? -x : x;
  *p++ = (char)('0' + ax / 10);
  *p++ = (char)('0' + ax % 10);
  return (size_t)(p - out);
}

/* ---- the fast path: values from about 1e-21 to 3e7, in 128-bit integers ----------------------
 *
 * The same answer (the shortest digits in the interval, the nearest among them) found the way Ryu
 * does (Ulf Adams, "Ryu: fast float-to-string conversion", PLDI 2018): the value and its two
 * interval ends are scaled by 10^t / 2^k into integers of about ten digits, then trailing digits are
 * removed while the ends still differ, remembering whether the removed digits were all zero (exact
 * ties round to even) and the last one removed (rounding). Ryu takes 10^t / 2^k from a table of
 * approximations; below 3e7 the exact product fits 128 bits, so no table is needed. */

enum { FAST_MIN_E2 = -90 };

static unsigned __int128 pow10_u128(int n)
{
  unsigned __int128 p = pow10_u64[n > 19 ? 19 : n];
  return n > 19 ? p * pow10_u64[n - 19] : p;
}

struct scaled {
  uint64_t value;
  int exact; /* nothing was cut off */
};

static struct scaled scale_fast(uint64_t m, unsigned __int128 p10, int k)
{
  unsigned __int128 num = m * p10;
  unsigned __int128 mask = ((unsigned __int128)1 << k) - 1;
  return (struct scaled){(uint64_t)(num >> k), (num & mask) == 0};
}

/* f * 2^e with e2 = e - 2 in [FAST_MIN_E2, -1]. Returns the digits as an integer and sets *exp10 to
 * the decimal exponent of its last digit. */
static uint64_t shortest_fast(uint64_t f, int e, int unequal_gaps, int *exp10)
{
  int accept = (f & 1) == 0;
  int k = 2 - e;                  /* value = (4 f) / 2^k */
  int q = (k * 732923 >> 20) - 1; /* about k log10(5) - 1: keeps ~10 digits */
  int t = q > 0 ? k - q : k;      /* scale by 10^t / 2^k */
  unsigned __int128 p10 = pow10_u128(t);
  uint64_t mv = 4 * f, mp = mv + 2, mm = mv - 1 - (unequal_gaps ? 0 : 1);
  /* one digit more for the value, so the first digit cut off is known for rounding */
  unsigned __int128 num = mv * p10 * 10;
  unsigned __int128 mask = ((unsigned __int128)1 << k) - 1;
  uint64_t vr10 = (uint64_t)(num >> k);
  int vr_zeros = (num & mask) == 0;
  uint64_t vr = vr10 / 10;
  int last = (int)(vr10 % 10);
  struct scaled hi = scale_fast(mp, p10, k), lo = scale_fast(mm, p10, k);
  uint64_t vp = hi.value - (!accept && hi.exact ? 1 : 0), vm = lo.value;
  int vm_zeros = accept && lo.exact;
  int removed = 0;
  while (vp / 10 > vm / 10) {
    vm_zeros &= vm % 10 == 0;
    vr_zeros &= last == 0;
    last = (int)(vr % 10);
    vr /= 10, vp /= 10, vm /= 10;
    removed++;
  }
  if (vm_zeros) {
    while (vm % 10 == 0) {
      vr_zeros &= last == 0;
      last = (int)(vr % 10);
      vr /= 10, vp /= 10, vm /= 10;
      removed++;
    }
  }
  if (vr_zeros && last == 5 && vr % 2 == 0)
    last = 4; /* an exact tie rounds to even */
  uint64_t out = vr + ((vr == vm && (!accept || !vm_zeros)) || last >= 5);
  *exp10 = removed - t;
  return out;
}

/* digits of v (no trailing zeros kept) into d; returns their count and moves *exp10 to match */
static int digits_of(uint64_t v, int *exp10, char *d)
{
  while (v >= 10 && v % 10 == 0) {
    v /= 10;
    (*exp10)++;
  }
  char tmp[20];
  int n = 0;
  do
    tmp[n++] = (char)('0' + v % 10);
  while (v /= 10);
  for (int i = 0; i < n; i++)
    d[i] = tmp[n - 1 - i];
  return n;
}

size_t pirec_f32_format(char out[PIREC_F32_MAX], float value)
{
  uint32_t bits;
  memcpy(&bits, &value, sizeof bits);
  uint32_t mant = bits & 0x7fffffu, bexp = (bits >> 23) & 0xffu;
  size_t sign = bits >> 31 ? 1 : 0;
  if (bexp == 0xff) {
    if (mant) {
      memcpy(out, "nan", 3);
      return 3;
    }
    memcpy(out, "-inf", 4);
    if (!sign)
      memcpy(out, "inf", 3);
    return 3 + sign;
  }
  out[0] = '-';
  if (bexp == 0 && mant == 0) {
    out[sign] = '0';
    return sign + 1;
  }
  uint64_t f = bexp ? mant | 0x800000u : mant;
  int e = bexp ? (int)bexp - 150 : -149;
  int unequal_gaps = mant == 0 && bexp > 1;
  char d[20] = {0};
  int n, k;
  if (e - 2 >= FAST_MIN_E2 && e - 2 < 0) {
    int exp10;
    uint64_t digits = shortest_fast(f, e, unequal_gaps, &exp10);
    n = digits_of(digits, &exp10, d);
    k = exp10 + n;
  } else {
    struct state st;
    st.inclusive = (f & 1) == 0;
    setup(&st, f, e, unequal_gaps);
    k = scale(&st, bit_length(f) - 1 + e);
    n = generate(&st, d);
  }
  return sign + layout(out + sign, d, n, k);
}
