/* The session controller's setup and public lifecycle (include/pirec/controller.h): the config
 * (or the built-in demo), the hooks that let lower files call up (controller-int.h), start-up
 * and the final free. The top layer of controller/. */
#include "pirec/controller.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "controller-int.h"
#include "pirec/crypt.h"
#include "pirec/container_of.h"
#include "pirec/error.h"
#include "pirec/log.h"

static const char demo_config_fmt[] = "# pirec's built-in demo configuration (pirec record without -c)\n"
                                      "[session]\n"
                                      "output_dir = %s\n"
                                      "clocks_interval = 1s\n"
                                      "remux_after = false\n"
                                      "[notes]\n"
                                      "enabled = true\n"
                                      "%s";

static const char demo_camera[] = "[camera.demo]\n"
                                  "source = lavfi\n"
                                  "lavfi = testsrc2\n"
                                  "size = 320x240\n"
                                  "fps = 15\n";

static int load_config(struct pirec_controller *c)
{
  struct pirec_config_errors errors = {0};
  int err;
  if (c->config_path) {
    err = pirec_config_load(c->config_path, &c->cfg, &errors);
  } else {
    c->demo = 1;
    char out[PATH_MAX], cwd[PATH_MAX - 32];
    if (c->output_dir_override)
      snprintf(out, sizeof out, "%s", c->output_dir_override);
    else
      snprintf(out, sizeof out, "%s/pirec-sessions", getcwd(cwd, sizeof cwd) ? cwd : ".");
    char probe[PATH_MAX];
    int camera = pirec__find_program(c, "pirec-camera", probe, sizeof probe) == 0;
    char text[PATH_MAX + 1024];
    snprintf(text, sizeof text, demo_config_fmt, out, camera ? demo_camera : "");
    err = pirec_config_parse(text, strlen(text), "<built-in demo>", &c->cfg, &errors);
  }
  for (size_t i = 0; i < errors.count; i++)
    pirec__report(c, "%s", errors.items[i].message);
  pirec_config_errors_free(&errors);
  return err;
}

static void controller_free(struct pirec_controller *c);
static void close_last(struct pirec_controller *c);

/* systemd and the fleet hear of every state change. */
static void state_changed(struct pirec_controller *c)
{
  pirec__notify_status(c);
  pirec__fleet_state_changed(c);
}

int pirec_controller_new(uv_loop_t *loop, const struct pirec_controller_options *opts,
                         struct pirec_controller **out)
{
  *out = NULL;
  struct pirec_controller *c = calloc(1, sizeof(*c));
  if (!c)
    return -ENOMEM;
  c->loop = loop;
  c->hooks = (struct pirec__hooks){
      .settle = pirec__settle,
      .state_changed = state_changed,
      .ops_idle = pirec__ops_idle,
      .module_ready = pirec__ops_module_ready,
      .module_ended = pirec__ops_module_ended,
      .module_device_ready = pirec__ops_module_device_ready,
      .gpio_submit = pirec__ops_gpio_submit,
      .status_json = pirec__status_json,
      .low_space = pirec__ops_low_space,
      .closed = close_last,
  };
  pirec_controller_options_default(&c->opts);
  if (opts)
    c->opts = *opts;
  if (!c->opts.ready_timeout_ms)
    c->opts.ready_timeout_ms = 10000;
  if (!c->opts.stop_timeout_ms)
    c->opts.stop_timeout_ms = 10000;
  c->config_path = c->opts.config_path ? strdup(c->opts.config_path) : NULL;
  c->label = c->opts.label ? strdup(c->opts.label) : NULL;
  c->recorder_dir = c->opts.recorder_dir ? strdup(c->opts.recorder_dir) : NULL;
  c->output_dir_override = c->opts.output_dir ? strdup(c->opts.output_dir) : NULL;
  char clean[PIREC_SESSION_LABEL_MAX + 1];
  if (c->label && pirec_session_label_sanitise(c->label, clean) < 0) {
    pirec__report(c, "pirec: invalid label '%s': '..' and '/' are not allowed, at most %d bytes", c->label,
                  PIREC_SESSION_LABEL_MAX);
    controller_free(c);
    return -EINVAL;
  }
  if (c->opts.socket_path)
    snprintf(c->socket_path, sizeof c->socket_path, "%s", c->opts.socket_path);
  else if (pirec_controller_socket_default(c->config_path, c->socket_path, sizeof c->socket_path) < 0) {
    controller_free(c);
    return -ENAMETOOLONG;
  }
  int err = load_config(c);
  if (err < 0) {
    controller_free(c);
    return err == -ENOMEM ? err : -EINVAL;
  }
  if (!c->opts.socket_path && c->config_path && *pirec_config_get_string(c->cfg, "control", "socket"))
    snprintf(c->socket_path, sizeof c->socket_path, "%s",
             pirec_config_get_string(c->cfg, "control", "socket"));
  pirec__modules_build(c);
  /* The handles every controller has from here on, started or not: a close always has them to
   * close, op_timer last. */
  uv_timer_init(c->loop, &c->op_timer);
  uv_timer_init(c->loop, &c->status_timer);
  uv_timer_init(c->loop, &c->watchdog_timer);
  uv_timer_init(c->loop, &c->demo_timer);
  uv_idle_init(c->loop, &c->idle);
  uv_timer_init(c->loop, &c->gpio_retry);
  c->handles_open += 6;
  pirec__disk_init(c);
  *out = c;
  return 0;
}

int pirec_controller_start(struct pirec_controller *c)
{
  int err = pirec__control_listen(c);
  if (err < 0)
    return err;
  err = pirec__snapshot_write(c, c->cfg);
  if (err < 0) {
    pirec__report(c, "pirec: cannot write the config snapshot '%s': %s", c->snapshot_path,
                  pirec_strerror(err));
    return err;
  }
  err = pirec__fleet_open(c);
  if (err < 0)
    return err;
  pirec__timers_start(c);
  pirec__gpio_open_all(c);
  c->started = 1;
  pirec__modules_spawn(c);
  char ready[700];
  snprintf(ready, sizeof ready, "READY=1\nSTATUS=idle; control socket %s", c->socket_path);
  pirec__sdnotify(ready);
  pirec_log(PIREC_LOG_INFO, "pirec %s: control socket '%s', %d recorder(s)%s", PIREC_VERSION, c->socket_path,
            c->nmodules, c->demo ? ", built-in demo configuration" : "");
  if (!c->opts.wait)
    pirec__op_enqueue(c, OP_START, c->label ? c->label : "", "cli", "pirec record");
  return 0;
}

void pirec_controller_shutdown(struct pirec_controller *c)
{
  pirec__shutdown(c, "api", NULL);
}

int pirec_controller_exit_status(const struct pirec_controller *c)
{
  return c->errors ? 1 : 0;
}
const char *pirec_controller_socket_path(const struct pirec_controller *c)
{
  return c->socket_path;
}

/* What c holds besides its handles (none open any more, or none opened yet). */
static void controller_free(struct pirec_controller *c)
{
  for (int i = 0; i < c->nmodules; i++)
    pirec__module_release(&c->modules[i]);
  pirec__ops_free(c);
  if (*c->snapshot_path)
    unlink(c->snapshot_path);
  pirec_config_free(c->cfg);
  pirec_config_free(c->pending_cfg);
  pirec_crypt_key_free(c->session_key);
  free(c->config_path);
  free(c->label);
  free(c->recorder_dir);
  free(c->output_dir_override);
  free(c);
}

static void on_last_closed(uv_handle_t *h)
{
  struct pirec_controller *c = container_of((uv_timer_t *)h, struct pirec_controller, op_timer);
  if (c->close_cb)
    c->close_cb(c);
  controller_free(c);
}

static void close_last(struct pirec_controller *c)
{
  if (!uv_is_closing((uv_handle_t *)&c->op_timer))
    uv_close((uv_handle_t *)&c->op_timer, on_last_closed);
}

void pirec_controller_close(struct pirec_controller *c, pirec_controller_close_cb cb)
{
  if (!c || c->closing)
    return;
  c->closing = 1;
  c->close_cb = cb;
  pirec__shutdown(c, "api", NULL);
  pirec__settle(c);
}
