/* bench-gpio: what an edge costs on the loop thread, through the whole pirec_gpio pipeline (pipe
 * backend: read, seqno check, filter, rate limit, callback), with and without software debounce,
 * against a bare read(2) of the same records from the same kind of pipe. Cost is the consuming
 * thread's CPU time (CLOCK_THREAD_CPUTIME_ID: user + system, not the feeder's, not time spent
 * waiting for it) per edge; the three cases alternate in rotating order over the rounds and the
 * medians are printed. Also the loop's worst 1 ms timer gap during the runs, and how long a full
 * pipe's backlog (2730 edges) takes. Prints one JSON object.
 * Usage: bench-gpio [edges] [rounds] (defaults 200000, 5). */
#include <errno.h>
#include <time.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "pirec/clock.h"
#include "pirec/gpio.h"

#define CHUNK 2048 /* records per write: 48 KiB, below the 64 KiB pipe buffer */

static int64_t thread_cpu_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct feeder {
  int fd;
  long edges;
  int64_t step_ns;
};

/* Writes edges records (alternating levels, consecutive seqnos) from another thread, so the loop
 * under test only reads. */
static void *feed(void *arg)
{
  struct feeder *f = arg;
  static struct pirec_gpio_pipe_record buf[CHUNK];
  for (long n = 0; n < f->edges;) {
    long k = f->edges - n < CHUNK ? f->edges - n : CHUNK;
    for (long i = 0; i < k; i++)
      buf[i] = (struct pirec_gpio_pipe_record){
          .ts_ns = (n + i) * f->step_ns, .seqno = (uint64_t)(n + i) + 1, .level = (int)((n + i + 1) % 2)};
    size_t off = 0, len = (size_t)k * sizeof(buf[0]);
    while (off < len) {
      ssize_t w = write(f->fd, (char *)buf + off, len - off);
      if (w < 0) {
        perror("write");
        exit(1);
      }
      off += (size_t)w;
    }
    n += k;
  }
  return NULL;
}

static double bare_read(long edges)
{
  int p[2];
  if (pipe(p) < 0)
    exit(1);
  struct feeder f = {.fd = p[1], .edges = edges, .step_ns = 1000};
  pthread_t th;
  int64_t t0 = thread_cpu_ns();
  pthread_create(&th, NULL, feed, &f);
  struct pirec_gpio_pipe_record rec[16];
  /* one writer, so the bytes come in order; a read may end inside a record, so count bytes */
  long long bytes = 0, want = (long long)edges * (long long)sizeof(rec[0]);
  uint64_t sum = 0;
  while (bytes < want) {
    ssize_t n = read(p[0], rec, sizeof(rec));
    if (n <= 0)
      exit(1);
    bytes += n;
    sum += (uint64_t)rec[0].level; /* touch the data, as a consumer would */
  }
  int64_t t1 = thread_cpu_ns();
  pthread_join(th, NULL);
  close(p[0]);
  close(p[1]);
  (void)sum;
  return (double)(t1 - t0) / (double)edges;
}

struct run {
  long events;
};

static void on_event(struct pirec_gpio *g, const struct pirec_gpio_event *ev, void *user)
{
  (void)g;
  (void)ev;
  ((struct run *)user)->events++;
}

struct ticker {
  uv_timer_t t;
  int64_t last, max_gap;
};

static void tick(uv_timer_t *t)
{
  struct ticker *k = t->data;
  int64_t now = pirec_clock_mono_ns();
  if (k->last && now - k->last > k->max_gap)
    k->max_gap = now - k->last;
  k->last = now;
}

/* Loop-thread CPU ns per edge through pirec_gpio; *max_gap_ns: worst 1 ms timer gap meanwhile. */
static double through_gpio(long edges, int64_t debounce_ns, int64_t step_ns, int64_t *max_gap_ns)
{
  uv_loop_t loop;
  uv_loop_init(&loop);
  int p[2];
  if (pipe(p) < 0)
    exit(1);
  struct pirec_gpio_settings s;
  pirec_gpio_settings_default(&s);
  s.chip = "pipe";
  s.line = "0";
  s.edge = PIREC_GPIO_EDGE_BOTH;
  s.action = PIREC_GPIO_ACTION_TOGGLE;
  s.min_interval_ns = 100 * 1000 * 1000;
  s.debounce_ns = debounce_ns;
  struct run r = {0};
  struct pirec_gpio *g;
  int rc = pirec_gpio_new_pipe(&loop, &s, p[0], on_event, NULL, &r, &g);
  if (rc < 0) {
    fprintf(stderr, "pirec_gpio_new_pipe: %s\n", strerror(-rc));
    exit(1);
  }
  struct ticker k = {0};
  uv_timer_init(&loop, &k.t);
  k.t.data = &k;
  uv_timer_start(&k.t, tick, 1, 1);
  struct feeder f = {.fd = p[1], .edges = edges, .step_ns = step_ns};
  pthread_t th;
  int64_t t0 = thread_cpu_ns();
  pthread_create(&th, NULL, feed, &f);
  struct pirec_gpio_counters c;
  do {
    uv_run(&loop, UV_RUN_ONCE);
    pirec_gpio_counters(g, &c);
  } while ((long)c.edges < edges);
  int64_t t1 = thread_cpu_ns();
  pthread_join(th, NULL);
  *max_gap_ns = k.max_gap;
  uv_close((uv_handle_t *)&k.t, NULL);
  pirec_gpio_close(g, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  close(p[1]);
  if (uv_loop_close(&loop) != 0)
    fprintf(stderr, "loop not closed\n");
  return (double)(t1 - t0) / (double)edges;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define MAX_ROUNDS 31

int main(int argc, char **argv)
{
  long edges = argc > 1 ? atol(argv[1]) : 200000;
  int rounds = argc > 2 ? atoi(argv[2]) : 5;
  if (edges < 1000)
    edges = 1000;
  if (rounds < 1 || rounds > MAX_ROUNDS)
    rounds = rounds < 1 ? 1 : MAX_ROUNDS;
  double rawv[MAX_ROUNDS], plainv[MAX_ROUNDS], debv[MAX_ROUNDS], backv[MAX_ROUNDS];
  int64_t gap_plain = 0, gap_deb = 0, gap;
  for (int r = 0; r < rounds; r++) {
    for (int k = 0; k < 4; k++) {
      switch ((k + r) % 4) { /* rotating order: load drifts hit every case alike */
      case 0: rawv[r] = bare_read(edges); break;
      case 1:
        plainv[r] = through_gpio(edges, 0, 1000, &gap);
        gap_plain = gap > gap_plain ? gap : gap_plain;
        break;
      case 2:
        /* 1 us between edges and a 1 ms debounce: every edge is a glitch, the worst case for it */
        debv[r] = through_gpio(edges, 1000 * 1000, 1000, &gap);
        gap_deb = gap > gap_deb ? gap : gap_deb;
        break;
      default:
        /* a backlog the size of a full pipe, handled 64 per callback */
        backv[r] = through_gpio(2730, 0, 1000, &gap);
        break;
      }
    }
  }
  double raw = median(rawv, rounds), plain = median(plainv, rounds), deb = median(debv, rounds),
         backlog = median(backv, rounds);
  printf("{\"bench\":\"gpio\",\"edges\":%ld,\"rounds\":%d,\"cost\":\"consumer thread CPU\","
         "\"max_events_per_poll\":%d,"
         "\"bare_read_ns_per_edge\":%.1f,\"gpio_ns_per_edge\":%.1f,\"gpio_debounce_ns_per_edge\":%.1f,"
         "\"ratio_gpio_vs_bare\":%.2f,\"ratio_debounce_vs_bare\":%.2f,"
         "\"edges_per_cpu_s\":%.0f,\"max_timer_gap_ms\":%.3f,\"max_timer_gap_debounce_ms\":%.3f,"
         "\"backlog_2730_ns_per_edge\":%.1f,\"backlog_2730_total_us\":%.1f}\n",
         edges, rounds, PIREC_GPIO_MAX_EVENTS_PER_POLL, raw, plain, deb, plain / raw, deb / raw, 1e9 / plain,
         (double)gap_plain / 1e6, (double)gap_deb / 1e6, backlog, backlog * 2730 / 1000);
  return 0;
}
