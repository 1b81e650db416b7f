#ifndef PIREC_LOG_H
#define PIREC_LOG_H

/* Logging for pirec's libraries: one line per message, lowercase, subject quoted.
 * By default lines go to stderr prefixed with the level; a program may route them elsewhere
 * (the systemd journal, a test's capture buffer) with pirec_log_set_handler(). */

#include <stdarg.h>

enum pirec_log_level {
  PIREC_LOG_ERROR = 0,
  PIREC_LOG_WARN = 1,
  PIREC_LOG_INFO = 2,
  PIREC_LOG_DEBUG = 3,
};

/* The handler receives the complete formatted line without a trailing newline. It may run on
 * any thread that logs; it must be thread-safe. */
typedef void (*pirec_log_handler)(enum pirec_log_level level, const char *line, void *user);

/* Sets the handler (NULL restores stderr) and the most verbose level that is passed on.
 * Call before starting threads. */
void pirec_log_set_handler(pirec_log_handler handler, void *user);
void pirec_log_set_level(enum pirec_log_level max_level);

/* Formats and passes on one line. Never called on a capture path. */
void pirec_log(enum pirec_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pirec_logv(enum pirec_log_level level, const char *fmt, va_list ap);

#endif
