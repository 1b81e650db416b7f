/* bench-config: what loading a 1 MB config costs the loop thread, asynchronously (read through
 * io/fs and parsed in the threadpool) against parsing on the loop thread itself, measured side by
 * side in one run. Prints one JSON object.
 *
 * usage: bench-config [--reps N] [--kib N] [--dir DIR]
 *   --reps  repetitions, medians reported (default 9)
 *   --kib   size of the generated config (default 1024)
 *   --dir   where the file is written (default: the current directory) */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "pirec/config.h"

static uint64_t cpu_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t median(uint64_t *v, int n)
{
  qsort(v, (size_t)n, sizeof(*v), cmp_u64);
  return v[n / 2];
}

struct run {
  uint64_t start_wall, done_wall;
  uint64_t loop_cpu, step_max_cpu, step_max_wall;
  int result;
};

static void on_done(struct pirec_config_req *req)
{
  struct run *r = req->data;
  r->done_wall = uv_hrtime();
  r->result = req->result;
  r->loop_cpu = req->loop_ns;
  r->step_max_cpu = req->loop_max_ns;
  r->step_max_wall = req->loop_max_wall_ns;
  pirec_config_req_cleanup(req);
}

static void noop(uv_work_t *w)
{
  (void)w;
}

int main(int argc, char **argv)
{
  int reps = 9;
  long kib = 1024;
  const char *dir = ".";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc)
      reps = atoi(argv[++i]);
    else if (strcmp(argv[i], "--kib") == 0 && i + 1 < argc)
      kib = atol(argv[++i]);
    else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
      dir = argv[++i];
    else if (strcmp(argv[i], "--json") == 0)
      continue; /* JSON is the only output */
    else {
      fprintf(stderr, "usage: bench-config [--reps N] [--kib N] [--dir DIR]\n");
      return 64;
    }
  }
  if (reps < 1 || reps > 1000 || kib < 1 || kib > 15 * 1024) {
    fprintf(stderr, "bench-config: --reps 1..1000, --kib 1..15360\n");
    return 64;
  }

  size_t target = (size_t)kib * 1024, cap = target + 4096, len = 0, cameras = 0;
  char *text = malloc(cap);
  if (!text)
    return 1;
  while (len < target) {
    len += (size_t)snprintf(text + len, cap - len,
                            "# camera %zu of the rig: a comment long enough to look like real notes\n"
                            "; mounted on the left arm, looking at the participant's hands from above\n"
                            "[camera.cam%zu]\nsource = lavfi ; synthetic\nfps = %zu\nsize = 320x240\n"
                            "preset = ultrafast\n\n",
                            cameras, cameras, 1 + cameras % 60);
    cameras++;
  }
  char path[4096];
  snprintf(path, sizeof(path), "%s/bench-config-%d.conf", dir, (int)getpid());
  FILE *f = fopen(path, "wb");
  if (!f || fwrite(text, 1, len, f) != len || fclose(f) != 0) {
    fprintf(stderr, "bench-config: cannot write '%s': %s\n", path, strerror(errno));
    return 74;
  }

  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_work_t warm; /* start libuv's threadpool once, as a running recorder already has */
  uv_queue_work(&loop, &warm, noop, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);

  uint64_t *sync_cpu = calloc((size_t)reps, 8), *sync_wall = calloc((size_t)reps, 8),
           *free_cpu = calloc((size_t)reps, 8), *async_cpu = calloc((size_t)reps, 8),
           *async_step = calloc((size_t)reps, 8), *async_step_wall = calloc((size_t)reps, 8),
           *async_latency = calloc((size_t)reps, 8), *set_cpu = calloc((size_t)reps, 8),
           *set_latency = calloc((size_t)reps, 8);
  for (int i = 0; i < reps; i++) {
    /* on the loop thread: what a synchronous load inside a callback would block it for */
    uint64_t c = cpu_ns(), w = uv_hrtime();
    struct pirec_config *cfg;
    if (pirec_config_load(path, &cfg, NULL) != 0) {
      fprintf(stderr, "bench-config: load failed\n");
      return 1;
    }
    sync_cpu[i] = cpu_ns() - c;
    sync_wall[i] = uv_hrtime() - w;
    c = cpu_ns();
    pirec_config_free(cfg);
    free_cpu[i] = cpu_ns() - c;

    /* asynchronously: the loop thread's share */
    struct run r = {0};
    struct pirec_config_req req = {.data = &r};
    r.start_wall = uv_hrtime();
    if (pirec_config_load_async(&loop, &req, path, on_done) != 0)
      return 1;
    uv_run(&loop, UV_RUN_DEFAULT);
    if (r.result != 0)
      return 1;
    async_cpu[i] = r.loop_cpu;
    async_step[i] = r.step_max_cpu;
    async_step_wall[i] = r.step_max_wall;
    async_latency[i] = r.done_wall - r.start_wall;

    char fps[8];
    snprintf(fps, sizeof(fps), "%d", 1 + i % 60);
    struct pirec_config_assignment a = {"camera.cam7.fps", fps};
    r = (struct run){0};
    r.start_wall = uv_hrtime();
    if (pirec_config_set_async(&loop, &req, path, &a, 1, on_done) != 0)
      return 1;
    uv_run(&loop, UV_RUN_DEFAULT);
    if (r.result != 0)
      return 1;
    set_cpu[i] = r.loop_cpu;
    set_latency[i] = r.done_wall - r.start_wall;
  }
  uint64_t m_sync = median(sync_cpu, reps), m_async = median(async_cpu, reps);
  printf("{\"bench\": \"config\", \"file_bytes\": %zu, \"cameras\": %zu, \"reps\": %d, "
         "\"sync_load_loop_cpu_us\": %.1f, \"sync_load_wall_us\": %.1f, \"free_cpu_us\": %.1f, "
         "\"async_load_loop_cpu_us\": %.1f, \"async_load_step_max_cpu_us\": %.1f, "
         "\"async_load_step_max_wall_us\": %.1f, \"async_load_latency_us\": %.1f, "
         "\"async_set_loop_cpu_us\": %.1f, \"async_set_latency_us\": %.1f, \"loop_cpu_ratio\": %.1f}\n",
         len, cameras, reps, m_sync / 1e3, median(sync_wall, reps) / 1e3, median(free_cpu, reps) / 1e3,
         m_async / 1e3, median(async_step, reps) / 1e3, median(async_step_wall, reps) / 1e3,
         median(async_latency, reps) / 1e3, median(set_cpu, reps) / 1e3, median(set_latency, reps) / 1e3,
         m_async ? (double)m_sync / (double)m_async : 0.0);
  unlink(path);
  free(text);
  free(sync_cpu);
  free(sync_wall);
  free(free_cpu);
  free(async_cpu);
  free(async_step);
  free(async_step_wall);
  free(async_latency);
  free(set_cpu);
  free(set_latency);
  return uv_loop_close(&loop) == 0 ? 0 : 1;
}
