/* Tests for gpio/ on a real kernel GPIO driver: the libgpiod backend pirec was built with (v1 or
 * v2) against a gpio-sim chip this program creates through configfs. Inputs are driven by writing
 * pull-up/pull-down to the simulator's sysfs "pull" attribute, outputs are read back from its
 * "value" attribute. Needs root and the gpio-sim module (tests/hw/ boots a VM that has both);
 * elsewhere it exits 77, which CTest reports as skipped.
 *
 * gpio-sim loses an edge that arrives while the previous edge's threaded interrupt handler still
 * runs (its irq_sim drops a pending interrupt while the line is masked), so every toggle that
 * produces an event waits for that event before the next toggle, as the lab found necessary. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <uv.h>

#include "pirec/clock.h"
#include "pirec/gpio.h"

#define MS     1000000LL
#define CFG    "/sys/kernel/config/gpio-sim"
#define SIM    "pirec-test" /* configfs chip directory */
#define LABEL  "pirec-sim"  /* bank label: what "chip = <label>" finds */
#define NLINES 8

/* line offsets and names on the simulated chip */
enum { L_TRIGGER = 0, L_START = 1, L_LED = 2, L_SYNC = 3, L_ALOW = 4, L_DEBOUNCE = 5, L_BUSY = 6 };
static const char *const line_names[NLINES] = {"pirec-trigger", "pirec-start",    "pirec-led",  "pirec-sync",
                                               "pirec-alow",    "pirec-debounce", "pirec-busy", NULL};

static char dev_name[64];  /* gpio-sim.N */
static char chip_name[64]; /* gpiochipM */
static char chip_path[80]; /* /dev/gpiochipM */

/* ------------------------------------------------------------------ gpio-sim through configfs */

static int write_file(const char *path, const char *text)
{
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  ssize_t n = write(fd, text, strlen(text));
  int err = n < 0 ? -errno : 0;
  close(fd);
  return err;
}

static int read_file(const char *path, char *buf, size_t len)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  ssize_t n = read(fd, buf, len - 1);
  int err = n < 0 ? -errno : 0;
  close(fd);
  if (err < 0)
    return err;
  buf[n] = '\0';
  buf[strcspn(buf, "\n")] = '\0';
  return 0;
}

static void sim_teardown(void)
{
  char p[256];
  write_file(CFG "/" SIM "/live", "0");
  for (int i = 0; i < NLINES; i++) {
    snprintf(p, sizeof(p), CFG "/" SIM "/bank0/line%d", i);
    rmdir(p);
  }
  rmdir(CFG "/" SIM "/bank0");
  rmdir(CFG "/" SIM);
}

static int sim_setup(void)
{
  char p[256], v[32];
  sim_teardown(); /* a previous run that crashed */
  if (mkdir(CFG "/" SIM, 0755) < 0 || mkdir(CFG "/" SIM "/bank0", 0755) < 0)
    return -errno;
  snprintf(v, sizeof(v), "%d", NLINES);
  if (write_file(CFG "/" SIM "/bank0/num_lines", v) < 0 || write_file(CFG "/" SIM "/bank0/label", LABEL) < 0)
    return -EIO;
  for (int i = 0; i < NLINES; i++) {
    if (line_names[i] == NULL)
      continue;
    snprintf(p, sizeof(p), CFG "/" SIM "/bank0/line%d", i);
    if (mkdir(p, 0755) < 0)
      return -errno;
    snprintf(p, sizeof(p), CFG "/" SIM "/bank0/line%d/name", i);
    if (write_file(p, line_names[i]) < 0)
      return -EIO;
  }
  int rc = write_file(CFG "/" SIM "/live", "1");
  if (rc < 0)
    return rc;
  if (read_file(CFG "/" SIM "/dev_name", dev_name, sizeof(dev_name)) < 0 ||
      read_file(CFG "/" SIM "/bank0/chip_name", chip_name, sizeof(chip_name)) < 0)
    return -EIO;
  snprintf(chip_path, sizeof(chip_path), "/dev/%s", chip_name);
  return 0;
}

static void sim_pull(int line, int up)
{
  char p[256];
  snprintf(p, sizeof(p), "/sys/devices/platform/%s/%s/sim_gpio%d/pull", dev_name, chip_name, line);
  int rc = write_file(p, up ? "pull-up" : "pull-down");
  if (rc < 0)
    fail_msg("cannot write '%s': %s", p, strerror(-rc));
}

static int sim_value(int line)
{
  char p[256], v[16];
  snprintf(p, sizeof(p), "/sys/devices/platform/%s/%s/sim_gpio%d/value", dev_name, chip_name, line);
  int rc = read_file(p, v, sizeof(v));
  if (rc < 0)
    fail_msg("cannot read '%s': %s", p, strerror(-rc));
  return atoi(v);
}

/* ------------------------------------------------------------------ loop helpers */

#define MAX_EVENTS 16

struct rec {
  struct pirec_gpio_event ev[MAX_EVENTS];
  int n;
  int errors;
  uv_loop_t *loop;
};

static void on_event(struct pirec_gpio *g, const struct pirec_gpio_event *ev, void *user)
{
  (void)g;
  struct rec *r = user;
  if (r->n < MAX_EVENTS)
    r->ev[r->n] = *ev;
  r->n++;
  uv_stop(r->loop);
}

static void on_error(struct pirec_gpio *g, int err, void *user)
{
  struct rec *r = user;
  fprintf(stderr, "gpio '%s' error: %s\n", pirec_gpio_name(g), strerror(-err));
  r->errors++;
}

static void timeout_cb(uv_timer_t *t)
{
  uv_stop(t->loop);
}

/* Runs the loop until r holds n events or ms milliseconds have passed. */
static void wait_events(struct rec *r, int n, uint64_t ms)
{
  uv_timer_t t;
  uv_timer_init(r->loop, &t);
  uv_update_time(r->loop);
  uv_timer_start(&t, timeout_cb, ms, 0);
  while (r->n < n && uv_timer_get_due_in(&t) > 0)
    uv_run(r->loop, UV_RUN_DEFAULT);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(r->loop, UV_RUN_NOWAIT);
}

static void sleep_loop(uv_loop_t *loop, uint64_t ms)
{
  struct rec r = {.loop = loop};
  wait_events(&r, 1, ms);
}

static void closed_cb(struct pirec_gpio *g, const struct pirec_gpio_counters *final, void *user)
{
  (void)g;
  (void) final;
  *(int *)user = 1;
}

/* Closes g and runs the loop until it is gone (other objects may keep the loop alive). */
static void finish(uv_loop_t *loop, struct pirec_gpio *g)
{
  int closed = 0;
  pirec_gpio_close(g, closed_cb, &closed);
  while (!closed)
    uv_run(loop, UV_RUN_ONCE);
}

/* ------------------------------------------------------------------ tests */

/* A trigger found by line name on any chip: four edges, each with the kernel's timestamp (between
 * the write that caused it and the read), alternating direction and consecutive seqnos. */
static void test_edges_by_name(void **state)
{
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_gpio_settings s;
  pirec_gpio_settings_default(&s);
  s.name = "trigger";
  s.chip = "auto";
  s.line = "pirec-trigger";
  s.edge = PIREC_GPIO_EDGE_BOTH;
  struct rec r = {.loop = &loop};
  struct pirec_gpio *g = NULL;
  sim_pull(L_TRIGGER, 0);
  assert_int_equal(pirec_gpio_new(&loop, &s, on_event, on_error, &r, &g), 0);
  printf("# %s: trigger at %s\n", pirec_gpio_backend(), pirec_gpio_describe(g));
  assert_non_null(strstr(pirec_gpio_describe(g), chip_name));
  assert_non_null(strstr(pirec_gpio_describe(g), LABEL));
  for (int k = 1; k <= 4; k++) {
    int up = k % 2;
    int64_t before = pirec_clock_mono_ns();
    sim_pull(L_TRIGGER, up);
    wait_events(&r, k, 3000);
    assert_int_equal(r.n, k);
    const struct pirec_gpio_event *ev = &r.ev[k - 1];
    int64_t after = pirec_clock_mono_ns();
    printf("# edge %d: %s ts=%lld ns, %lld us after the write, read %lld us later, seqno %llu\n", k,
           ev->rising ? "rising" : "falling", (long long)ev->ts_ns, (long long)(ev->ts_ns - before) / 1000,
           (long long)(ev->read_mono_ns - ev->ts_ns) / 1000, (unsigned long long)ev->seqno);
    assert_int_equal(ev->rising, up);
    assert_true(ev->ts_ns >= before);
    assert_true(ev->ts_ns <= ev->read_mono_ns);
    assert_true(ev->read_mono_ns <= after);
    assert_int_equal(ev->seqno, (uint64_t)k);
    assert_int_equal(ev->lost_before, 0);
    assert_int_equal(ev->action, PIREC_GPIO_ACTION_MARKER);
  }
  struct pirec_gpio_counters c;
  pirec_gpio_counters(g, &c);
  assert_int_equal(c.events, 4);
  assert_int_equal(c.lost, 0);
  assert_int_equal(r.errors, 0);
  finish(&loop, g);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* What the controller does with a toggle trigger and a recording LED: an edge starts a session,
 * the next stops it, and the LED line (read back from the simulator) follows. The trigger's chip
 * is found by label, the LED's by path and offset. */
static void test_toggle_session_led(void **state)
{
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_gpio_settings s;
  pirec_gpio_settings_default(&s);
  s.name = "start";
  s.chip = LABEL;
  s.line = "pirec-start";
  s.edge = PIREC_GPIO_EDGE_RISING;
  s.action = PIREC_GPIO_ACTION_TOGGLE;
  s.min_interval_ns = 1 * MS;
  struct rec r = {.loop = &loop};
  struct pirec_gpio *trig = NULL, *led = NULL;
  sim_pull(L_START, 0);
  assert_int_equal(pirec_gpio_new(&loop, &s, on_event, on_error, &r, &trig), 0);
  struct pirec_gpio_settings ls;
  pirec_gpio_settings_default(&ls);
  ls.name = "led";
  ls.chip = chip_path;
  char off[8];
  snprintf(off, sizeof(off), "%d", L_LED);
  ls.line = off;
  ls.role = PIREC_GPIO_ROLE_LED;
  assert_int_equal(pirec_gpio_new(&loop, &ls, NULL, on_error, &r, &led), 0);
  assert_non_null(strstr(pirec_gpio_describe(led), "pirec-led"));
  assert_int_equal(sim_value(L_LED), 0);

  int recording = 0;
  printf("# events.csv as the controller would write it: kind,kernel_ts_ns,seqno,action\n");
  for (int k = 1; k <= 2; k++) {
    sim_pull(L_START, 1);
    wait_events(&r, k, 3000);
    assert_int_equal(r.n, k);
    const struct pirec_gpio_event *ev = &r.ev[k - 1];
    assert_int_equal(ev->action, PIREC_GPIO_ACTION_TOGGLE);
    recording = !recording;
    assert_int_equal(pirec_gpio_set_recording(led, recording), 0);
    printf("gpio,%lld,%llu,%s -> %s\n", (long long)ev->ts_ns, (unsigned long long)ev->seqno,
           pirec_gpio_action_name(ev->action), recording ? "session start" : "session stop");
    assert_int_equal(sim_value(L_LED), recording);
    /* the falling edge is not requested: no event to wait for, so give the simulator time */
    sim_pull(L_START, 0);
    sleep_loop(&loop, 50);
  }
  assert_int_equal(r.n, 2);
  assert_int_equal(recording, 0);
  /* close while "recording" turns the LED off */
  assert_int_equal(pirec_gpio_set_recording(led, 1), 0);
  assert_int_equal(sim_value(L_LED), 1);
  finish(&loop, led);
  finish(&loop, trig);
  assert_int_equal(r.errors, 0);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A sync output pulses at a trial start; the simulator sees the line high, then low again. */
static void test_sync_pulse(void **state)
{
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_gpio_settings s;
  pirec_gpio_settings_default(&s);
  s.name = "sync";
  s.chip = chip_name;
  s.line = "pirec-sync";
  s.role = PIREC_GPIO_ROLE_SYNC;
  s.pulse_ns = 100 * MS;
  struct pirec_gpio *g = NULL;
  assert_int_equal(pirec_gpio_new(&loop, &s, NULL, NULL, NULL, &g), 0);
  assert_int_equal(sim_value(L_SYNC), 0);
  int64_t at = 0;
  assert_int_equal(pirec_gpio_trial_started(g, &at), 0);
  assert_true(at > 0);
  assert_int_equal(sim_value(L_SYNC), 1);
  sleep_loop(&loop, 300);
  assert_int_equal(sim_value(L_SYNC), 0);
  finish(&loop, g);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* active_low and bias reach the kernel: a pull-up bias holds the line high (inactive), a pull-down
 * from the simulator is then a logical rising edge. */
static void test_active_low_bias(void **state)
{
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_gpio_settings s;
  pirec_gpio_settings_default(&s);
  s.name = "pedal";
  s.chip = chip_path;
  s.line = "pirec-alow";
  s.active_low = 1;
  s.bias = PIREC_GPIO_BIAS_PULL_UP;
  s.edge = PIREC_GPIO_EDGE_RISING;
  struct rec r = {.loop = &loop};
  struct pirec_gpio *g = NULL;
  assert_int_equal(pirec_gpio_new(&loop, &s, on_event, on_error, &r, &g), 0);
  assert_int_equal(sim_value(L_ALOW), 1); /* the bias pulled it up */
  sleep_loop(&loop, 50);
  assert_int_equal(r.n, 0);
  sim_pull(L_ALOW, 0);
  wait_events(&r, 1, 3000);
  assert_int_equal(r.n, 1);
  assert_int_equal(r.ev[0].rising, 1);
  finish(&loop, g);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* Debounce: the kernel's on v2, software on v1. A glitch shorter than the period produces no
 * event; a level that holds produces one. */
static void test_debounce(void **state)
{
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_gpio_settings s;
  pirec_gpio_settings_default(&s);
  s.name = "debounced";
  s.chip = "auto";
  s.line = "pirec-debounce";
  s.edge = PIREC_GPIO_EDGE_BOTH;
  s.debounce_ns = 400 * MS;
  struct rec r = {.loop = &loop};
  struct pirec_gpio *g = NULL;
  sim_pull(L_DEBOUNCE, 0);
  assert_int_equal(pirec_gpio_new(&loop, &s, on_event, on_error, &r, &g), 0);
  sim_pull(L_DEBOUNCE, 1);
  sleep_loop(&loop, 100); /* long enough apart for the simulator to report both edges */
  sim_pull(L_DEBOUNCE, 0);
  sleep_loop(&loop, 800);
  assert_int_equal(r.n, 0);
  int64_t before = pirec_clock_mono_ns();
  sim_pull(L_DEBOUNCE, 1);
  wait_events(&r, 1, 3000);
  assert_int_equal(r.n, 1);
  assert_int_equal(r.ev[0].rising, 1);
  assert_true(r.ev[0].ts_ns >= before);
  assert_true(pirec_clock_mono_ns() - before >= s.debounce_ns); /* not before the period */
  struct pirec_gpio_counters c;
  pirec_gpio_counters(g, &c);
  printf("# debounce: %llu edges read, %llu swallowed in software\n", (unsigned long long)c.edges,
         (unsigned long long)c.debounced);
  finish(&loop, g);
  assert_int_equal(uv_loop_close(&loop), 0);
}

/* A line that is already requested: -EBUSY from the kernel, wrapped as a negative errno. */
static void test_busy(void **state)
{
  (void)state;
  uv_loop_t loop;
  assert_int_equal(uv_loop_init(&loop), 0);
  struct pirec_gpio_settings s;
  pirec_gpio_settings_default(&s);
  s.chip = chip_path;
  s.line = "pirec-busy";
  struct pirec_gpio *a = NULL, *b = NULL;
  assert_int_equal(pirec_gpio_new(&loop, &s, NULL, NULL, NULL, &a), 0);
  assert_int_equal(pirec_gpio_new(&loop, &s, NULL, NULL, NULL, &b), -EBUSY);
  assert_null(b);
  s.line = "99"; /* offset beyond the chip */
  assert_int_equal(pirec_gpio_new(&loop, &s, NULL, NULL, NULL, &b), -EINVAL);
  finish(&loop, a);
  assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
  setvbuf(stdout, NULL, _IOLBF, 0); /* the VM log shows progress line by line */
  if (geteuid() != 0 || access(CFG, W_OK) != 0) {
    printf("SKIP: test-gpio-hw needs root and the gpio-sim module (%s); tests/hw/ boots a VM with them\n",
           CFG);
    return 77;
  }
  int rc = sim_setup();
  if (rc < 0) {
    printf("SKIP: cannot create a gpio-sim chip under %s: %s\n", CFG, strerror(-rc));
    sim_teardown();
    return 77;
  }
  printf("# gpio-sim %s = %s (label %s), %s\n", dev_name, chip_path, LABEL, pirec_gpio_backend());
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_edges_by_name), cmocka_unit_test(test_toggle_session_led),
      cmocka_unit_test(test_sync_pulse),    cmocka_unit_test(test_active_low_bias),
      cmocka_unit_test(test_debounce),      cmocka_unit_test(test_busy),
  };
  int failed = cmocka_run_group_tests(tests, NULL, NULL);
  sim_teardown();
  return failed;
}
