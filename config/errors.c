/* The error list: the lowest layer of config/, used by every file above it. */

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int pirec__config_errors_add(struct pirec_config_errors *errors, int line, const char *key,
                             const char *message)
{
  struct pirec_config_error *items = realloc(errors->items, (errors->count + 1) * sizeof(*errors->items));
  if (!items)
    return -ENOMEM;
  errors->items = items;
  struct pirec_config_error *e = &items[errors->count];
  e->line = line;
  e->key = key ? strdup(key) : NULL;
  e->message = strdup(message);
  if (!e->message || (key && !e->key)) {
    free(e->key);
    free(e->message);
    return -ENOMEM;
  }
  errors->count++;
  return 0;
}

void pirec__config_error(struct pirec__config_parse *p, int line, const char *key, const char *value,
                         const char *fmt, ...)
{
  p->error_count++;
  if (!p->errors)
    return;
  char what[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof(what), fmt, ap);
  va_end(ap);
  char *msg = NULL;
  int n;
  if (key && value)
    n = asprintf(&msg, "%s:%d: %s = '%s': %s", p->filename, line, key, value, what);
  else if (key)
    n = asprintf(&msg, "%s:%d: %s: %s", p->filename, line, key, what);
  else
    n = asprintf(&msg, "%s:%d: %s", p->filename, line, what);
  if (n < 0 || pirec__config_errors_add(p->errors, line, key, msg) != 0)
    p->oom = true;
  free(msg);
}

void pirec_config_errors_free(struct pirec_config_errors *errors)
{
  if (!errors)
    return;
  for (size_t i = 0; i < errors->count; i++) {
    free(errors->items[i].key);
    free(errors->items[i].message);
  }
  free(errors->items);
  errors->items = NULL;
  errors->count = 0;
}
