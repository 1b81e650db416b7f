/* The recorder mains' shared run: stop signals, duration, loop and exit status (see run.h). */
#include "run.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "pirec/container_of.h"
#include "pirec/error.h"
#include "pirec/looplag.h"
#include "pirec/spawner.h"

void run_spawner_start(const char *prog)
{
  int err = pirec_spawner_start();
  if (err < 0)
    fprintf(stderr, "%s: cannot start the spawn helper (children are forked from the loop): %s\n", prog,
            pirec_strerror(err));
}

static void stop_once(struct run *run)
{
  if (run->stopped)
    return;
  run->stopped = 1;
  run->on_stop(run);
}

static void on_signal(uv_signal_t *sig, int signum)
{
  (void)signum;
  stop_once(sig->data);
}

static void on_duration(uv_timer_t *timer)
{
  stop_once(container_of(timer, struct run, duration));
}

void run_watch(struct run *run, uv_loop_t *loop, double seconds, void (*on_stop)(struct run *run))
{
  run->loop = loop;
  run->on_stop = on_stop;
  run->stopped = 0;
  uv_signal_init(loop, &run->sigint);
  uv_signal_init(loop, &run->sigterm);
  uv_timer_init(loop, &run->duration);
  run->sigint.data = run->sigterm.data = run;
  run->watching = 1;
  uv_signal_start(&run->sigint, on_signal, SIGINT);
  uv_signal_start(&run->sigterm, on_signal, SIGTERM);
  if (seconds > 0)
    uv_timer_start(&run->duration, on_duration, (uint64_t)(seconds * 1000), 0);
}

void run_unwatch(struct run *run)
{
  if (!run->watching)
    return;
  run->watching = 0;
  uv_close((uv_handle_t *)&run->sigint, NULL);
  uv_close((uv_handle_t *)&run->sigterm, NULL);
  uv_close((uv_handle_t *)&run->duration, NULL);
}

int run_exit(uv_loop_t *loop, const char *prog, const int *status)
{
  pirec_looplag_thread_enter(loop);
  uv_run(loop, UV_RUN_DEFAULT);
  pirec_looplag_thread_leave();
  int r = uv_loop_close(loop);
  if (r == 0)
    return *status;
  fprintf(stderr, "%s: handles left open at exit: %s\n", prog, pirec_strerror(r));
  return 1;
}
