#include "pirec/log.h"

#include <stdatomic.h>
#include <stdio.h>

/* The handler is process-wide on purpose: logging is the one place every module reaches, and a
 * program sets it once before any thread starts. */
static pirec_log_handler log_handler;
static void *log_user;
static atomic_int log_max_level = PIREC_LOG_INFO;

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void pirec_log_set_handler(pirec_log_handler handler, void *user)
{
  log_handler = handler;
  log_user = user;
}

void pirec_log_set_level(enum pirec_log_level max_level)
{
  atomic_store(&log_max_level, (int)max_level);
}

void pirec_logv(enum pirec_log_level level, const char *fmt, va_list ap)
{
  char line[1024];

  if ((int)level > atomic_load(&log_max_level))
    return;
  vsnprintf(line, sizeof line, fmt, ap);
  if (log_handler) {
    log_handler(level, line, log_user);
    return;
  }
  /* One fprintf per line so lines from different threads do not interleave. */
  fprintf(stderr, "pirec: %s: %s\n", level_names[level], line);
}

void pirec_log(enum pirec_log_level level, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  pirec_logv(level, fmt, ap);
  va_end(ap);
}
