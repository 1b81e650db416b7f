/* libFuzzer target over the config parser and the text editor. Beyond "no crash, no leak, no
 * sanitizer report" it checks properties that must hold for every input:
 *   - a refused file has at least one error, and every error names the file;
 *   - a valid file's canonical form parses again to the same canonical form;
 *   - setting a key in a valid file yields a valid file holding the new value (or, when the edit
 *     makes a line too long for inih's buffer, only that error);
 *   - an edit leaves every byte outside one line's value (or the inserted lines) identical. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pirec/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_errors(int r, const struct pirec_config_errors *e)
{
  if (r == -EINVAL && e->count == 0)
    abort();
  for (size_t i = 0; i < e->count; i++)
    if (strncmp(e->items[i].message, "fuzz.conf:", 10) != 0)
      abort();
}

static void check_edit(const char *text, size_t len, const char *key, const char *value)
{
  struct pirec_config_assignment a = {key, value};
  char *out;
  size_t out_len;
  if (pirec_config_edit_text(text, len, "fuzz.conf", &a, 1, &out, &out_len, NULL) != 0)
    abort(); /* the assignment is valid, so the edit must succeed */
  /* Every other byte identical: after removing the common prefix and suffix, what is left of the
   * original lies within one line (a value replaced) or is empty (lines inserted). */
  size_t pre = 0, suf = 0, min = len < out_len ? len : out_len;
  while (pre < min && text[pre] == out[pre])
    pre++;
  while (suf < min - pre && text[len - 1 - suf] == out[out_len - 1 - suf])
    suf++;
  if (memchr(text + pre, '\n', len - pre - suf))
    abort();
  struct pirec_config *cfg;
  struct pirec_config_errors e = {0};
  int r = pirec_config_parse(out, out_len, "fuzz.conf", &cfg, &e);
  if (r == 0) {
    char *got;
    if (pirec_config_get_text(cfg, key, &got) != 0 || strcmp(got, value) != 0)
      abort();
    free(got);
    pirec_config_free(cfg);
  } else {
    for (size_t i = 0; i < e.count; i++)
      if (!strstr(e.items[i].message, " bytes long, expected at most "))
        abort();
  }
  pirec_config_errors_free(&e);
  free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  const char *text = (const char *)data;
  struct pirec_config *cfg;
  struct pirec_config_errors e = {0};
  int r = pirec_config_parse(text, size, "fuzz.conf", &cfg, &e);
  check_errors(r, &e);
  pirec_config_errors_free(&e);
  if (r != 0)
    return 0;

  char *a = pirec_config_format(cfg);
  struct pirec_config *again;
  if (!a || pirec_config_parse(a, strlen(a), "fuzz.conf", &again, NULL) != 0)
    abort();
  char *b = pirec_config_format(again);
  if (!b || strcmp(a, b) != 0)
    abort();
  free(a);
  free(b);
  pirec_config_free(again);

  /* read every instance through the public getters */
  static const char *const kinds[] = {"camera", "gpio"};
  for (size_t k = 0; k < 2; k++)
    for (size_t i = 0; i < pirec_config_instance_count(cfg, kinds[k]); i++) {
      const char *s = pirec_config_instance(cfg, kinds[k], i);
      if (!s || !pirec_config_has_section(cfg, s))
        abort();
      if (k == 0 && pirec_config_get_int(cfg, s, "fps") < 1)
        abort();
      if (k == 1 && !*pirec_config_get_string(cfg, s, "line"))
        abort();
    }
  pirec_config_free(cfg);

  check_edit(text, size, "session.label", "fz");
  check_edit(text, size, "camera.fz.fps", "12");
  return 0;
}
