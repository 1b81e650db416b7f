/* bench-f32: pirec_f32_format against snprintf("%.9g") (what the gaze rows used before), ns per
 * value, medians of alternated passes over the same values: gaze-like values (normalised gaze in
 * [0,1], millimetres, degrees) and random bit patterns. Prints one JSON object.
 * Usage: bench-f32 [--passes N] (default 9)
 *        bench-f32 --all [--threads N]: the exhaustive proof, every one of the 2^32 bit patterns
 *        formatted and read back with strtof (NaNs must print "nan"); exit 0 only if all do. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pirec/f32.h"

#define N_VALUES 200000

static int64_t cpu_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static volatile size_t sink_bytes; /* keeps the formatting from being optimised away */

static double pass(const float *v, int use_printf)
{
  char b[32];
  size_t total = 0;
  int64_t t0 = cpu_ns();
  for (int i = 0; i < N_VALUES; i++) {
    if (use_printf)
      total += (size_t)snprintf(b, sizeof b, "%.9g", (double)v[i]);
    else
      total += pirec_f32_format(b, v[i]);
  }
  int64_t t1 = cpu_ns();
  sink_bytes += total;
  return (double)(t1 - t0) / N_VALUES;
}

static void measure(const char *name, const float *v, int passes, int last)
{
  double *mine = calloc((size_t)passes, sizeof *mine), *ref = calloc((size_t)passes, sizeof *ref);
  for (int p = 0; p < passes; p++) {
    if (p % 2) {
      mine[p] = pass(v, 0);
      ref[p] = pass(v, 1);
    } else {
      ref[p] = pass(v, 1);
      mine[p] = pass(v, 0);
    }
  }
  qsort(mine, (size_t)passes, sizeof *mine, cmp_double);
  qsort(ref, (size_t)passes, sizeof *ref, cmp_double);
  double m = mine[passes / 2], r = ref[passes / 2];
  printf("  \"%s_ns\": %.1f, \"%s_printf_ns\": %.1f, \"%s_ratio\": %.3f%s\n", name, m, name, r, name, m / r,
         last ? "" : ",");
  free(mine);
  free(ref);
}

struct range {
  uint64_t from, to, failures;
};

static void *verify(void *arg)
{
  struct range *r = arg;
  char b[PIREC_F32_MAX + 1];
  for (uint64_t u = r->from; u < r->to; u++) {
    uint32_t bits = (uint32_t)u;
    float f;
    memcpy(&f, &bits, sizeof f);
    size_t n = pirec_f32_format(b, f);
    b[n] = '\0';
    if (isnan(f)) {
      r->failures += strcmp(b, "nan") != 0;
      continue;
    }
    float back = strtof(b, NULL);
    uint32_t got;
    memcpy(&got, &back, sizeof got);
    if (got != bits && r->failures++ < 10)
      fprintf(stderr, "0x%08x: '%s' reads back as 0x%08x\n", bits, b, got);
  }
  return NULL;
}

/* One binary exponent's 2^23 patterns of one sign, split over the threads. */
static uint64_t verify_block(uint32_t sign, uint32_t bexp, int threads)
{
  pthread_t th[64];
  struct range r[64];
  uint64_t base = (uint64_t)sign << 31 | (uint64_t)bexp << 23, step = ((uint64_t)1 << 23) / (uint64_t)threads;
  for (int i = 0; i < threads; i++) {
    r[i] = (struct range){.from = base + step * (uint64_t)i,
                          .to = base + (i == threads - 1 ? (uint64_t)1 << 23 : step * (uint64_t)(i + 1))};
    pthread_create(&th[i], NULL, verify, &r[i]);
  }
  uint64_t failures = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    failures += r[i].failures;
  }
  return failures;
}

/* Every pattern, one binary exponent at a time, nearest to 1.0 first (where measured values live),
 * both signs; a progress line per exponent on stderr, so a run cut short still says what it proved. */
static int verify_all(int threads)
{
  uint64_t failures = 0, values = 0;
  for (int d = 0; d < 256; d++) {
    int bexp = 127 + (d % 2 ? (d + 1) / 2 : -(d / 2));
    if (bexp < 0 || bexp > 255)
      continue;
    uint64_t f = verify_block(0, (uint32_t)bexp, threads) + verify_block(1, (uint32_t)bexp, threads);
    failures += f;
    values += (uint64_t)1 << 24;
    fprintf(stderr, "{\"biased_exponent\": %d, \"values\": %llu, \"failures\": %llu}\n", bexp,
            (unsigned long long)values, (unsigned long long)failures);
  }
  printf("{\"values\": %llu, \"failures\": %llu}\n", (unsigned long long)values,
         (unsigned long long)failures);
  return failures ? 1 : 0;
}

int main(int argc, char **argv)
{
  int passes = 9, all = 0, threads = 2;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--passes") && i + 1 < argc)
      passes = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--all"))
      all = 1;
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
      threads = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench-f32 [--passes N] | --all [--threads N]\n");
      return 2;
    }
  }
  if (all)
    return verify_all(threads < 1 ? 1 : threads > 64 ? 64 : threads);
  if (passes < 1)
    passes = 1;
  static float gaze[N_VALUES], random_bits[N_VALUES];
  uint64_t s = 21;
  for (int i = 0; i < N_VALUES; i++) {
    s = s * 6364136223846793005u + 1442695040888963407u;
    uint32_t u = (uint32_t)(s >> 32);
    /* what a gaze row holds: positions in [0,1], eyeball centres in mm, axes in [-1,1], angles */
    static const float scale[4] = {1.0f, 40.0f, 2.0f, 90.0f};
    gaze[i] = (float)(u % 1000003) / 1000003.0f * scale[i % 4] - (i % 4 == 2 ? 1.0f : 0.0f);
    memcpy(&random_bits[i], &u, sizeof u);
    if (isnan(random_bits[i]))
      random_bits[i] = 1.0f;
  }
  printf("{\n  \"passes\": %d,\n", passes);
  measure("gaze", gaze, passes, 0);
  measure("random", random_bits, passes, 1);
  printf("}\n");
  return 0;
}
