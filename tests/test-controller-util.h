#ifndef PIREC_TEST_CONTROLLER_UTIL_H
#define PIREC_TEST_CONTROLLER_UTIL_H

/* Helpers shared by the notes, session and controller tests: real child processes with pipes,
 * line-oriented I/O with timeouts, reading files back and parsing CSV with libcsv (the same parser
 * analysis scripts would use), a JSON-lines socket client. The tests drive the real binaries
 * through these; nothing here stands in for a component under test. */

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Path of a built program: $PIREC_BUILD_DIR/apps/NAME (ctest sets PIREC_BUILD_DIR). */
const char *tu_program(const char *name);
/* A fresh directory under $TMPDIR (or /tmp); caller frees; removed by tu_rm_rf. */
char *tu_tmpdir(const char *tag);
void tu_rm_rf(const char *path);
int64_t tu_now_ms(void);

struct tu_proc {
  pid_t pid;
  int in_fd;  /* child's stdin (write end), -1 when closed */
  int out_fd; /* child's stdout (read end) */
  char buf[1 << 16];
  size_t len;
  int exited;
  int status; /* waitpid status */
};

/* Starts argv with stdin and stdout piped (stderr inherited). env entries ("K=V") are added. */
int tu_proc_start(struct tu_proc *p, const char *const *argv, const char *const *env);
/* Writes all of data (blocking). */
int tu_proc_write(struct tu_proc *p, const char *data, size_t len);
int tu_proc_writeln(struct tu_proc *p, const char *line);
/* Reads one line from stdout within timeout_ms; returns a malloc'd line without '\n' or NULL. */
char *tu_proc_readline(struct tu_proc *p, int timeout_ms);
/* Reads lines until one parses as a JSON object whose "id" equals id (or, with id < 0, whose
 * "reply" equals want); other lines are dropped. NULL on timeout. */
json_t *tu_proc_reply(struct tu_proc *p, json_int_t id, const char *want, int timeout_ms);
void tu_proc_close_stdin(struct tu_proc *p);
/* Waits for the child to exit within timeout_ms (then SIGKILLs it); returns the waitpid status or
 * -1 on timeout. */
int tu_proc_wait(struct tu_proc *p, int timeout_ms);

/* Newline characters in a file so far (0 when it is missing). */
size_t tu_file_lines(const char *path);

/* Reads a whole file; NULL if it cannot. */
char *tu_read_file(const char *path, size_t *len);

/* A parsed CSV file: rows of fields, the formula guard removed from every field. */
struct tu_csv {
  size_t rows;
  size_t *nfields;
  char ***fields;
};
/* Strict parse (libcsv CSV_STRICT | CSV_STRICT_FINI). Returns 0, or -1 when the file is missing
 * or malformed (a torn last row included). */
int tu_csv_load(const char *path, struct tu_csv *csv);
void tu_csv_free(struct tu_csv *csv);
/* Index of a column in the header row, or -1. */
int tu_csv_col(const struct tu_csv *csv, const char *name);

/* A blocking JSON-lines client of the control socket. */
int tu_sock_connect(const char *path, int timeout_ms);
/* Sends one command object (serialised on one line). */
int tu_sock_send(int fd, json_t *cmd);
/* Reads one reply line within timeout_ms; carry holds bytes read past it between calls. */
struct tu_sock_buf {
  char *data;
  size_t len;
  size_t cap;
  size_t off; /* bytes already handed out as lines */
};
json_t *tu_sock_read(int fd, struct tu_sock_buf *b, int timeout_ms);
/* One recv into b (non-blocking callers: returns bytes, 0 at end of stream, -errno). */
ssize_t tu_sock_fill(int fd, struct tu_sock_buf *b);
/* The next complete line in b as JSON, or NULL when none is buffered. */
json_t *tu_sock_next(struct tu_sock_buf *b);
/* connect + send + read + close in one: the reply or NULL. */
json_t *tu_sock_call(const char *path, const char *json_text, int timeout_ms);

/* A datagram socket standing in for systemd's notify socket: the controller (through libsystemd's
 * sd_notify, which only needs $NOTIFY_SOCKET) sends READY=1 there once it listens. */
int tu_notify_open(const char *path);
/* Waits for a datagram containing `what`; returns 0 or -1 on timeout. */
int tu_notify_wait(int fd, const char *what, int timeout_ms);
#endif
