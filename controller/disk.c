/* The disk budget: how fast a session fills output_dir's file system, whether a start has room
 * for [storage] min_free_time of it (the pre-flight), and the low-space watchdog that stops a
 * session while [storage] reserve is still free, so no recorder ever meets a full disk.
 *
 * Free space comes from statvfs(2) in libuv's threadpool (one probe at a time): on an SD card
 * whose controller is busy a statvfs can wait, and the loop must not. The data rate is each
 * enabled recorder's measured rate (the growth of its status counters' bytes while it records)
 * plus what its rows add, or, before it has recorded, an estimate from its settings. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>

#include "controller-int.h"
#include "pirec/clock.h"
#include "pirec/container_of.h"
#include "pirec/error.h"
#include "pirec/log.h"

#define NS_PER_S INT64_C(1000000000)
#define BLINK_MS 250

/* ---- rates ------------------------------------------------------------------------------------ */

/* Rows a recorder writes besides its video: a frames CSV row is about 120 bytes, a gaze row
 * about 200 (Neon's 65-byte payload as text, with the leading columns). */
#define FRAME_ROW_BYTES 120
#define GAZE_ROW_BYTES  200
#define GAZE_HZ         200
/* Scene video of a Neon or Invisible: H.264, about 4 Mbit/s. */
#define SCENE_BYTES_S (500 * 1000)

/* A camera's bytes per second from its settings: x264 at crf 23 gives about 0.1 bit per pixel
 * on ordinary scenes, doubling every 6 crf steps down; MJPEG as received about 1.5 bits per
 * pixel; H.264 as received (pixel_format h264, a network camera: source url) about 0.15. */
static uint64_t camera_estimate(const struct pirec_config *cfg, const char *section)
{
  int w = 640, h = 480;
  (void)pirec_config_parse_wxh(pirec_config_get_string(cfg, section, "size"), &w, &h);
  double fps = (double)pirec_config_get_int(cfg, section, "fps");
  const char *pix = pirec_config_get_string(cfg, section, "pixel_format");
  double bpp;
  if (strcmp(pix, "mjpeg") == 0)
    bpp = 1.5;
  else if (strcmp(pix, "h264") == 0 || strcmp(pirec_config_get_string(cfg, section, "source"), "url") == 0)
    bpp = 0.15;
  else
    bpp = 0.1 * exp2((23.0 - (double)pirec_config_get_int(cfg, section, "crf")) / 6.0);
  return (uint64_t)((double)w * h * fps * bpp / 8.0 + fps * FRAME_ROW_BYTES);
}

/* What m's rows add to its counted bytes (the counters count video and notes, not rows). */
static uint64_t rows_estimate(const struct pirec_config *cfg, const struct module *m)
{
  char section[96];
  if (strcmp(m->kind, "camera") == 0) {
    snprintf(section, sizeof section, "camera.%s", m->name);
    return (uint64_t)pirec_config_get_int(cfg, section, "fps") * FRAME_ROW_BYTES;
  }
  if (strcmp(m->kind, "eyetracker") == 0)
    return GAZE_HZ * GAZE_ROW_BYTES;
  return 0;
}

uint64_t pirec__disk_module_estimate(const struct pirec_config *cfg, const struct module *m)
{
  char section[96];
  if (strcmp(m->kind, "camera") == 0) {
    snprintf(section, sizeof section, "camera.%s", m->name);
    return camera_estimate(cfg, section);
  }
  if (strcmp(m->kind, "eyetracker") == 0)
    return SCENE_BYTES_S + GAZE_HZ * GAZE_ROW_BYTES;
  return 1000; /* notes: a note of 1000 bytes a second is a busy operator */
}

uint64_t pirec__disk_module_rate(const struct module *m, int *measured)
{
  const struct pirec_config *cfg = m->c->cfg;
  *measured = m->rate_measured;
  if (*measured)
    return m->rate_bps + rows_estimate(cfg, m);
  return pirec__disk_module_estimate(cfg, m);
}

/* The session's rate: every recorder that is not ended. *source: "measured" when every one was
 * measured, "configured" when none was, else "mixed". */
static uint64_t session_rate(struct pirec_controller *c, const char **source)
{
  uint64_t sum = 1000; /* events.csv, clocks.csv, session.json */
  int measured = 0, counted = 0;
  for (int i = 0; i < c->nmodules; i++) {
    struct module *m = &c->modules[i];
    if (m->state == M_ENDED)
      continue;
    int mm;
    sum += pirec__disk_module_rate(m, &mm);
    measured += mm;
    counted++;
  }
  *source = measured == 0 ? "configured" : measured == counted ? "measured" : "mixed";
  return sum;
}

/* ---- the verdict ------------------------------------------------------------------------------ */

static double mib(uint64_t bytes)
{
  return (double)bytes / (1024.0 * 1024.0);
}

uint64_t pirec__disk_needed(uint64_t rate, int64_t min_free_ns, uint64_t reserve)
{
  return (uint64_t)((double)rate * ((double)min_free_ns / NS_PER_S)) + reserve;
}

int pirec__disk_verdict(uint64_t free_bytes, uint64_t rate, int64_t min_free_ns, uint64_t reserve,
                        const char *source, char *msg, size_t cap)
{
  uint64_t need = pirec__disk_needed(rate, min_free_ns, reserve);
  msg[0] = '\0';
  if (free_bytes >= need)
    return 0;
  snprintf(msg, cap,
           "not enough free space: %.1f MiB free, %.1f MiB needed (%.0f s of recording at %.3f MiB/s %s, "
           "plus the %.1f MiB reserve)",
           mib(free_bytes), mib(need), (double)min_free_ns / NS_PER_S, mib(rate), source, mib(reserve));
  return 1;
}

/* ---- probes ----------------------------------------------------------------------------------- */

/* In the threadpool: statvfs of the path, or of its nearest existing parent (output_dir is made
 * by the first session). */
static void probe_work(uv_work_t *w)
{
  struct disk_budget *d = container_of(w, struct disk_budget, work);
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s", d->probe_path);
  struct statvfs st;
  for (;;) {
    if (statvfs(path, &st) == 0) {
      d->probe_err = 0;
      d->probe_free = (uint64_t)st.f_bavail * st.f_frsize;
      d->probe_total = (uint64_t)st.f_blocks * st.f_frsize;
      snprintf(d->probe_fs, sizeof d->probe_fs, "%s", path);
      return;
    }
    d->probe_err = -errno;
    char *slash = strrchr(path, '/');
    if (d->probe_err != -ENOENT || !slash || slash == path)
      return;
    *slash = '\0';
  }
}

const char *pirec__output_dir(const struct pirec_controller *c)
{
  return c->output_dir_override ? c->output_dir_override
                                : pirec_config_get_string(c->cfg, "session", "output_dir");
}

static void watchdog_verdict(struct pirec_controller *c);

static void probe_done(uv_work_t *w, int status)
{
  struct disk_budget *d = container_of(w, struct disk_budget, work);
  struct pirec_controller *c = container_of(d, struct pirec_controller, disk);
  d->busy = 0;
  if (status == 0 && d->probe_err == 0) {
    d->known = 1;
    d->free_bytes = d->probe_free;
    d->total_bytes = d->probe_total;
    d->checked_mono = pirec_clock_mono_ns();
    snprintf(d->fs_path, sizeof d->fs_path, "%s", d->probe_fs);
    d->err = 0;
  } else {
    d->err = status < 0 ? status : d->probe_err;
  }
  void (*cb)(struct pirec_controller *) = d->preflight_cb;
  d->preflight_cb = NULL;
  if (cb)
    cb(c);
  if (c->shutting_down)
    c->hooks.settle(c);
  else
    watchdog_verdict(c);
}

static int probe(struct pirec_controller *c)
{
  struct disk_budget *d = &c->disk;
  if (d->busy)
    return 0;
  snprintf(d->probe_path, sizeof d->probe_path, "%s", pirec__output_dir(c));
  int err = uv_queue_work(c->loop, &d->work, probe_work, probe_done);
  if (err == 0)
    d->busy = 1;
  return err;
}

/* ---- the LED ---------------------------------------------------------------------------------- */

static void blink(uv_timer_t *t)
{
  struct pirec_controller *c = container_of(t, struct pirec_controller, disk.blink);
  c->disk.blink_level = !c->disk.blink_level;
  pirec__gpio_set_led(c, c->disk.blink_level);
}

/* The LED blinks while alarm is on and no session records: a session was stopped for want of
 * space, or a start was refused. */
static void set_alarm(struct pirec_controller *c, int on)
{
  struct disk_budget *d = &c->disk;
  if (d->alarm == on || c->shutting_down)
    return;
  d->alarm = on;
  if (on) {
    uv_timer_start(&d->blink, blink, BLINK_MS, BLINK_MS);
  } else {
    uv_timer_stop(&d->blink);
    pirec__gpio_set_led(c, c->state == C_RECORDING);
  }
}

/* ---- the watchdog ----------------------------------------------------------------------------- */

static uint64_t reserve_of(struct pirec_controller *c)
{
  return pirec_config_get_size(c->cfg, "storage", "reserve");
}

static void watchdog_verdict(struct pirec_controller *c)
{
  struct disk_budget *d = &c->disk;
  uint64_t reserve = reserve_of(c);
  if (!d->known || reserve == 0)
    return;
  const char *source;
  uint64_t rate = session_rate(c, &source);
  int64_t interval = pirec_config_get_duration(c->cfg, "storage", "space_check_interval");
  /* What the session may write before the next look must fit above the reserve too. */
  uint64_t floor = reserve + (uint64_t)((double)rate * ((double)interval / NS_PER_S));
  if (c->state != C_RECORDING && c->state != C_STARTING) {
    /* Room again (someone freed space): the LED stops blinking. */
    if (d->alarm &&
        d->free_bytes >=
            pirec__disk_needed(rate, pirec_config_get_duration(c->cfg, "storage", "min_free_time"), reserve))
      set_alarm(c, 0);
    return;
  }
  if (d->stopping || d->free_bytes >= floor)
    return;
  snprintf(
      d->last_event, sizeof d->last_event,
      "low space: %.1f MiB free on '%.200s', below the %.1f MiB reserve plus %.1f MiB for the next check "
      "(%.3f MiB/s %s): stopping the session",
      mib(d->free_bytes), d->fs_path, mib(reserve), mib(floor - reserve), mib(rate), source);
  d->stopping = 1;
  pirec_log(PIREC_LOG_WARN, "%s", d->last_event);
  c->hooks.low_space(c, d->last_event);
}

static void on_check(uv_timer_t *t)
{
  struct pirec_controller *c = container_of(t, struct pirec_controller, disk.timer);
  if (!c->shutting_down)
    (void)probe(c);
}

void pirec__disk_init(struct pirec_controller *c)
{
  uv_timer_init(c->loop, &c->disk.timer);
  uv_timer_init(c->loop, &c->disk.blink);
  c->handles_open += 2;
}

void pirec__disk_start(struct pirec_controller *c)
{
  uint64_t ms = (uint64_t)(pirec_config_get_duration(c->cfg, "storage", "space_check_interval") / 1000000);
  uv_timer_start(&c->disk.timer, on_check, 0, ms ? ms : 1);
}

void pirec__disk_restart(struct pirec_controller *c)
{
  if (uv_is_active((uv_handle_t *)&c->disk.timer))
    pirec__disk_start(c);
}

int pirec__disk_busy(const struct pirec_controller *c)
{
  return c->disk.busy;
}

void pirec__disk_session_started(struct pirec_controller *c)
{
  c->disk.stopping = 0;
  set_alarm(c, 0);
  for (int i = 0; i < c->nmodules; i++)
    c->modules[i].rate_t0 = 0;
}

void pirec__disk_session_stopped(struct pirec_controller *c)
{
  if (c->disk.stopping)
    set_alarm(c, 1);
  c->disk.stopping = 0;
}

/* ---- the pre-flight --------------------------------------------------------------------------- */

static void preflight_judge(struct pirec_controller *c)
{
  struct disk_budget *d = &c->disk;
  pirec__disk_preflight_cb done = d->preflight_done;
  d->preflight_done = NULL;
  struct pirec__disk_check r = {0};
  if (d->err < 0) {
    /* Not knowing is no reason to refuse a recording: the watchdog still stops it in time. */
    pirec_log(PIREC_LOG_WARN, "cannot check free space on '%s': %s; starting anyway", d->probe_path,
              pirec_strerror(d->err));
    done(c, &r);
    return;
  }
  const char *source;
  r.rate = session_rate(c, &source);
  r.free_bytes = d->free_bytes;
  uint64_t reserve = reserve_of(c);
  int64_t min_free = pirec_config_get_duration(c->cfg, "storage", "min_free_time");
  r.needed = pirec__disk_needed(r.rate, min_free, reserve);
  if (!pirec__disk_verdict(r.free_bytes, r.rate, min_free, reserve, source, r.message, sizeof r.message)) {
    done(c, &r);
    return;
  }
  size_t n = strlen(r.message);
  snprintf(r.message + n, sizeof r.message - n, " on '%.200s'", d->fs_path);
  r.refuse = strcmp(pirec_config_get_string(c->cfg, "storage", "if_low_space"), "refuse") == 0;
  snprintf(d->last_event, sizeof d->last_event, "%s%s",
           r.refuse ? "start refused: " : "start warned: ", r.message);
  pirec_log(r.refuse ? PIREC_LOG_ERROR : PIREC_LOG_WARN, "%s", d->last_event);
  if (r.refuse)
    set_alarm(c, 1);
  done(c, &r);
}

int pirec__disk_preflight(struct pirec_controller *c, pirec__disk_preflight_cb done)
{
  struct disk_budget *d = &c->disk;
  if (pirec_config_get_duration(c->cfg, "storage", "min_free_time") == 0 && reserve_of(c) == 0)
    return -ENOSYS; /* no budget: nothing to check */
  d->preflight_done = done;
  d->preflight_cb = preflight_judge;
  int err = probe(c); /* a probe in flight answers for this start too */
  if (err < 0) {
    d->preflight_done = NULL;
    d->preflight_cb = NULL;
  }
  return err;
}

/* ---- status ----------------------------------------------------------------------------------- */

json_t *pirec__disk_status(struct pirec_controller *c)
{
  struct disk_budget *d = &c->disk;
  const char *source;
  uint64_t rate = session_rate(c, &source);
  uint64_t reserve = reserve_of(c);
  json_t *o = json_pack("{s:s,s:I,s:s,s:I,s:I,s:s}", "path", d->known ? d->fs_path : pirec__output_dir(c),
                        "rate_bytes_per_s", (json_int_t)rate, "rate_source", source, "reserve_bytes",
                        (json_int_t)reserve, "min_free_time_ns",
                        (json_int_t)pirec_config_get_duration(c->cfg, "storage", "min_free_time"),
                        "if_low_space", pirec_config_get_string(c->cfg, "storage", "if_low_space"));
  if (d->known) {
    json_object_set_new(o, "free_bytes", json_integer((json_int_t)d->free_bytes));
    json_object_set_new(o, "total_bytes", json_integer((json_int_t)d->total_bytes));
    uint64_t usable = d->free_bytes > reserve ? d->free_bytes - reserve : 0;
    json_object_set_new(o, "time_left_ns",
                        json_integer((json_int_t)((double)usable / (double)rate * NS_PER_S)));
    json_object_set_new(o, "checked_age_ns", json_integer(pirec_clock_mono_ns() - d->checked_mono));
  } else {
    json_object_set_new(o, "free_bytes", json_null());
    json_object_set_new(o, "time_left_ns", json_null());
  }
  if (d->err < 0)
    json_object_set_new(o, "error", json_string(pirec_strerror(d->err)));
  json_object_set_new(o, "low_space", json_boolean(d->alarm));
  json_object_set_new(o, "last_low_space", *d->last_event ? json_string(d->last_event) : json_null());
  return o;
}

void pirec__disk_close(struct pirec_controller *c, uv_close_cb cb)
{
  uv_handle_t *h[2] = {(uv_handle_t *)&c->disk.timer, (uv_handle_t *)&c->disk.blink};
  for (int i = 0; i < 2; i++)
    if (!uv_is_closing(h[i])) {
      h[i]->data = c;
      uv_close(h[i], cb);
    }
}
