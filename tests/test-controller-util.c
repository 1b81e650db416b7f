#include "test-controller-util.h"

#include <csv.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pirec/csv.h"

extern char **environ;

const char *tu_program(const char *name)
{
  static char path[4096];
  const char *dir = getenv("PIREC_BUILD_DIR");
  snprintf(path, sizeof path, "%s/apps/%s", dir ? dir : ".", name);
  return path;
}

char *tu_tmpdir(const char *tag)
{
  const char *base = getenv("TMPDIR");
  char *p = malloc(4096);
  snprintf(p, 4096, "%s/pirec-%s-XXXXXX", base && *base ? base : "/tmp", tag);
  if (!mkdtemp(p)) {
    free(p);
    return NULL;
  }
  return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
  return remove(path);
}

void tu_rm_rf(const char *path)
{
  if (path)
    nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int64_t tu_now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tu_proc_start(struct tu_proc *p, const char *const *argv, const char *const *env)
{
  int in[2], out[2];
  memset(p, 0, sizeof *p);
  if (pipe2(in, O_CLOEXEC) < 0)
    return -errno;
  if (pipe2(out, O_CLOEXEC) < 0)
    return -errno;
  pid_t pid = fork();
  if (pid < 0)
    return -errno;
  if (pid == 0) {
    /* A test killed by its timeout must not leave a controller (and its recorders) running. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(in[0], 0);
    dup2(out[1], 1);
    signal(SIGPIPE, SIG_DFL);
    for (const char *const *e = env; e && *e; e++)
      putenv((char *)*e);
    execv(argv[0], (char *const *)argv);
    fprintf(stderr, "cannot run '%s': %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  p->pid = pid;
  p->in_fd = in[1];
  p->out_fd = out[0];
  signal(SIGPIPE, SIG_IGN);
  return 0;
}

int tu_proc_write(struct tu_proc *p, const char *data, size_t len)
{
  while (len) {
    ssize_t n = write(p->in_fd, data, len);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    data += n;
    len -= (size_t)n;
  }
  return 0;
}

int tu_proc_writeln(struct tu_proc *p, const char *line)
{
  int err = tu_proc_write(p, line, strlen(line));
  return err ? err : tu_proc_write(p, "\n", 1);
}

static char *take_line(char *buf, size_t *len)
{
  char *nl = memchr(buf, '\n', *len);
  if (!nl)
    return NULL;
  size_t n = (size_t)(nl - buf);
  char *line = malloc(n + 1);
  memcpy(line, buf, n);
  line[n] = '\0';
  memmove(buf, nl + 1, *len - n - 1);
  *len -= n + 1;
  return line;
}

char *tu_proc_readline(struct tu_proc *p, int timeout_ms)
{
  int64_t deadline = tu_now_ms() + timeout_ms;
  for (;;) {
    char *line = take_line(p->buf, &p->len);
    if (line)
      return line;
    int64_t left = deadline - tu_now_ms();
    if (left <= 0 || p->len == sizeof p->buf)
      return NULL;
    struct pollfd pfd = {p->out_fd, POLLIN, 0};
    int r = poll(&pfd, 1, (int)left);
    if (r <= 0)
      continue;
    ssize_t n = read(p->out_fd, p->buf + p->len, sizeof p->buf - p->len);
    if (n <= 0)
      return NULL;
    p->len += (size_t)n;
  }
}

json_t *tu_proc_reply(struct tu_proc *p, json_int_t id, const char *want, int timeout_ms)
{
  int64_t deadline = tu_now_ms() + timeout_ms;
  for (;;) {
    int64_t left = deadline - tu_now_ms();
    if (left <= 0)
      return NULL;
    char *line = tu_proc_readline(p, (int)left);
    if (!line)
      return NULL;
    json_t *j = json_loads(line, 0, NULL);
    free(line);
    if (!j)
      continue;
    json_t *jid = json_object_get(j, "id");
    json_t *reply = json_object_get(j, "reply");
    if (id >= 0 ? (json_is_integer(jid) && json_integer_value(jid) == id)
                : (json_is_string(reply) && strcmp(json_string_value(reply), want) == 0))
      return j;
    json_decref(j);
  }
}

void tu_proc_close_stdin(struct tu_proc *p)
{
  if (p->in_fd >= 0)
    close(p->in_fd);
  p->in_fd = -1;
}

int tu_proc_wait(struct tu_proc *p, int timeout_ms)
{
  int64_t deadline = tu_now_ms() + timeout_ms;
  int status = -1;
  while (!p->exited) {
    pid_t r = waitpid(p->pid, &status, WNOHANG);
    if (r == p->pid) {
      p->exited = 1;
      p->status = status;
      break;
    }
    int64_t left = deadline - tu_now_ms();
    if (left <= 0) {
      kill(p->pid, SIGKILL);
      waitpid(p->pid, &status, 0);
      p->exited = 1;
      p->status = -1;
      break;
    }
    /* A pidfd becomes readable when the child exits. */
    int pfd_fd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    if (pfd_fd >= 0) {
      struct pollfd pfd = {pfd_fd, POLLIN, 0};
      poll(&pfd, 1, (int)left);
      close(pfd_fd);
    } else {
      struct timespec ts = {0, 5 * 1000000};
      nanosleep(&ts, NULL);
    }
  }
  tu_proc_close_stdin(p);
  if (p->out_fd >= 0)
    close(p->out_fd);
  p->out_fd = -1;
  return p->status;
}

char *tu_read_file(const char *path, size_t *len)
{
  FILE *f = fopen(path, "rb");
  if (!f)
    return NULL;
  size_t cap = 65536, n = 0;
  char *buf = malloc(cap + 1);
  size_t r;
  while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
    n += r;
    if (n == cap) {
      cap *= 2;
      buf = realloc(buf, cap + 1);
    }
  }
  fclose(f);
  buf[n] = '\0';
  if (len)
    *len = n;
  return buf;
}

struct csv_acc {
  struct tu_csv *csv;
  char **row;
  size_t n;
  size_t cap;
};

static void on_field(void *data, size_t len, void *user)
{
  struct csv_acc *a = user;
  if (a->n == a->cap) {
    a->cap = a->cap ? a->cap * 2 : 8;
    a->row = realloc(a->row, a->cap * sizeof(char *));
  }
  size_t skip = pirec_csv_guard_len(data, len);
  char *f = malloc(len - skip + 1);
  memcpy(f, (char *)data + skip, len - skip);
  f[len - skip] = '\0';
  a->row[a->n++] = f;
}

static void on_row(int c, void *user)
{
  struct csv_acc *a = user;
  struct tu_csv *csv = a->csv;
  csv->fields = realloc(csv->fields, (csv->rows + 1) * sizeof(char **));
  csv->nfields = realloc(csv->nfields, (csv->rows + 1) * sizeof(size_t));
  csv->fields[csv->rows] = a->row;
  csv->nfields[csv->rows] = a->n;
  csv->rows++;
  a->row = NULL;
  a->n = a->cap = 0;
}

int tu_csv_load(const char *path, struct tu_csv *csv)
{
  memset(csv, 0, sizeof *csv);
  size_t len;
  char *text = tu_read_file(path, &len);
  if (!text)
    return -1;
  /* A file whose last row is not ended by a newline was cut mid-row. */
  if (len && text[len - 1] != '\n') {
    free(text);
    return -1;
  }
  struct csv_parser p;
  csv_init(&p, CSV_STRICT | CSV_STRICT_FINI | CSV_APPEND_NULL);
  struct csv_acc a = {csv, NULL, 0, 0};
  int ok = csv_parse(&p, text, len, on_field, on_row, &a) == len;
  ok = ok && csv_fini(&p, on_field, on_row, &a) == 0;
  csv_free(&p);
  free(text);
  for (size_t i = 0; i < a.n; i++)
    free(a.row[i]);
  free(a.row);
  return ok ? 0 : -1;
}

void tu_csv_free(struct tu_csv *csv)
{
  for (size_t r = 0; r < csv->rows; r++) {
    for (size_t i = 0; i < csv->nfields[r]; i++)
      free(csv->fields[r][i]);
    free(csv->fields[r]);
  }
  free(csv->fields);
  free(csv->nfields);
  memset(csv, 0, sizeof *csv);
}

int tu_csv_col(const struct tu_csv *csv, const char *name)
{
  if (!csv->rows)
    return -1;
  for (size_t i = 0; i < csv->nfields[0]; i++)
    if (strcmp(csv->fields[0][i], name) == 0)
      return (int)i;
  return -1;
}

int tu_sock_connect(const char *path, int timeout_ms)
{
  int64_t deadline = tu_now_ms() + timeout_ms;
  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
      return fd;
    close(fd);
    if (tu_now_ms() > deadline)
      return -1;
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
  }
}

int tu_sock_send(int fd, json_t *cmd)
{
  char *text = json_dumps(cmd, JSON_COMPACT);
  size_t len = strlen(text);
  text = realloc(text, len + 2);
  text[len++] = '\n';
  size_t off = 0;
  while (off < len) {
    ssize_t n = send(fd, text + off, len - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      free(text);
      return -errno;
    }
    off += (size_t)n;
  }
  free(text);
  return 0;
}

json_t *tu_sock_read(int fd, struct tu_sock_buf *b, int timeout_ms)
{
  int64_t deadline = tu_now_ms() + timeout_ms;
  for (;;) {
    if (b->data && b->off) {
      memmove(b->data, b->data + b->off, b->len - b->off);
      b->len -= b->off;
      b->off = 0;
    }
    if (b->data) {
      char *line = take_line(b->data, &b->len);
      if (line) {
        json_t *j = json_loads(line, 0, NULL);
        free(line);
        return j;
      }
    }
    int64_t left = deadline - tu_now_ms();
    if (left <= 0)
      return NULL;
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, (int)left) <= 0)
      continue;
    if (b->cap - b->len < 65536) {
      b->cap = b->cap ? b->cap * 2 : 131072;
      b->data = realloc(b->data, b->cap);
    }
    ssize_t n = recv(fd, b->data + b->len, b->cap - b->len, 0);
    if (n <= 0)
      return NULL;
    b->len += (size_t)n;
  }
}

json_t *tu_sock_call(const char *path, const char *json_text, int timeout_ms)
{
  int fd = tu_sock_connect(path, timeout_ms);
  if (fd < 0)
    return NULL;
  json_t *cmd = json_loads(json_text, 0, NULL);
  json_t *reply = NULL;
  if (cmd && tu_sock_send(fd, cmd) == 0) {
    struct tu_sock_buf b = {0};
    reply = tu_sock_read(fd, &b, timeout_ms);
    free(b.data);
  }
  json_decref(cmd);
  close(fd);
  return reply;
}

int tu_notify_open(const char *path)
{
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
  unlink(path);
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int err = -errno;
    close(fd);
    return err;
  }
  return fd;
}

int tu_notify_wait(int fd, const char *what, int timeout_ms)
{
  int64_t deadline = tu_now_ms() + timeout_ms;
  for (;;) {
    int64_t left = deadline - tu_now_ms();
    if (left <= 0)
      return -1;
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, (int)left) <= 0)
      continue;
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
      continue;
    buf[n] = '\0';
    if (strstr(buf, what))
      return 0;
  }
}

ssize_t tu_sock_fill(int fd, struct tu_sock_buf *b)
{
  if (b->off) {
    memmove(b->data, b->data + b->off, b->len - b->off);
    b->len -= b->off;
    b->off = 0;
  }
  if (b->cap - b->len < 65536) {
    b->cap = b->cap ? b->cap * 2 : 131072;
    b->data = realloc(b->data, b->cap);
  }
  ssize_t n = recv(fd, b->data + b->len, b->cap - b->len, MSG_DONTWAIT);
  if (n < 0)
    return -errno;
  b->len += (size_t)n;
  return n;
}

json_t *tu_sock_next(struct tu_sock_buf *b)
{
  if (!b->data || b->off >= b->len)
    return NULL;
  char *start = b->data + b->off;
  char *nl = memchr(start, '\n', b->len - b->off);
  if (!nl)
    return NULL;
  json_t *j = json_loadb(start, (size_t)(nl - start), 0, NULL);
  b->off += (size_t)(nl - start) + 1;
  return j;
}

size_t tu_file_lines(const char *path)
{
  size_t len = 0, n = 0;
  char *text = tu_read_file(path, &len);
  for (size_t i = 0; text && i < len; i++)
    n += text[i] == '\n';
  free(text);
  return n;
}
