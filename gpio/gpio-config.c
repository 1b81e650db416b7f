/* [gpio.NAME] config section -> struct pirec_gpio_settings, so the controller and tests map the
 * keys of config/schema.c the same way. Built only when config/ is (see gpio/CMakeLists.txt). */
#include <errno.h>
#include <string.h>

#include "pirec/config.h"
#include "pirec/gpio.h"

int pirec_gpio_settings_from_config(const struct pirec_config *cfg, const char *section,
                                    struct pirec_gpio_settings *s)
{
  if (cfg == NULL || section == NULL || strncmp(section, "gpio.", 5) != 0 || s == NULL)
    return -EINVAL;
  pirec_gpio_settings_default(s);
  s->name = section + 5;
  s->chip = pirec_config_get_string(cfg, section, "chip");
  s->line = pirec_config_get_string(cfg, section, "line");
  int v;
  if (strcmp(pirec_config_get_string(cfg, section, "direction"), "output") == 0) {
    if ((v = pirec_gpio_role_parse(pirec_config_get_string(cfg, section, "role"))) < 0)
      return v;
    s->role = (enum pirec_gpio_role)v;
  } else {
    s->role = PIREC_GPIO_ROLE_TRIGGER;
  }
  if ((v = pirec_gpio_edge_parse(pirec_config_get_string(cfg, section, "edge"))) < 0)
    return v;
  s->edge = (enum pirec_gpio_edge)v;
  if ((v = pirec_gpio_bias_parse(pirec_config_get_string(cfg, section, "bias"))) < 0)
    return v;
  s->bias = (enum pirec_gpio_bias)v;
  if ((v = pirec_gpio_action_parse(pirec_config_get_string(cfg, section, "action"))) < 0)
    return v;
  s->action = (enum pirec_gpio_action)v;
  s->active_low = pirec_config_get_bool(cfg, section, "active_low");
  s->debounce_ns = pirec_config_get_duration(cfg, section, "debounce");
  s->min_interval_ns = pirec_config_get_duration(cfg, section, "min_interval");
  s->pulse_ns = pirec_config_get_duration(cfg, section, "pulse_length");
  s->pulse_interval_ns = pirec_config_get_duration(cfg, section, "pulse_interval");
  return pirec_gpio_settings_check(s, NULL, 0);
}
