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

/* Without a handler a line is queued, never written by the caller: a bounded in-memory queue
 * (256 KiB) that one writer thread ("pirec-log", started by the first line) writes to stderr, as
 * slowly as stderr takes it. A loop thread therefore never waits for a full pipe to journald or to
 * the controller. When the queue is full the line is dropped and counted, and once the writer has
 * room again it writes "pirec: warning: N log lines dropped (stderr was not read)" where they
 * would have been. At exit the queue is flushed for up to 1 s. */

/* Waits up to timeout_ms for the queue to be written out. 0, or -ETIMEDOUT. Not on a loop thread
 * (it waits); for tests and a program's last words. */
int pirec_log_flush(int timeout_ms);

struct pirec_log_queue_stats {
  unsigned long long lines;   /* lines queued since the start */
  unsigned long long dropped; /* lines dropped because the queue was full */
  unsigned long queued_bytes; /* waiting now */
};
void pirec_log_queue_stats(struct pirec_log_queue_stats *out);

/* Formats and passes on one line. Never called on a capture path. */
void pirec_log(enum pirec_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void pirec_logv(enum pirec_log_level level, const char *fmt, va_list ap);

#endif
