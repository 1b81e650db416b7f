/* The spawn helper process itself (pirec/spawner.h): a single-threaded poll loop that forks and
 * execs the children the program's jobs ask for, reaps them, signals them, and stops them in order
 * when the program is gone. It is forked while the program is small, so its own forks are cheap;
 * waiting here (for an exec, for a failed child) costs the program's loops nothing. */
#include "spawn-proto.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

enum { C_NONE = 0, C_RUNNING, C_REAPED };

/* One job's channel and its (at most one) child. */
struct chan {
  int fd; /* -1 once the job closed it */
  uint64_t token;
  pid_t pid;
  int state;
  uint32_t term_ms, kill_ms;
  int esc_step; /* parent gone: 0 no, 1 SIGTERM due at esc_at, 2 SIGKILL due, 3 done */
  int64_t esc_at;
};

struct helper {
  int master; /* -1 once the program is gone */
  int sigfd;
  pid_t self;
  struct chan *chans;
  size_t nchan, cap;
  char *buf;
};

/* A parsed RUN request; the strings point into the receive buffer. */
struct run_req {
  uint8_t kinds[4];
  int nfds;
  char **argv;
  char **env; /* NULL: inherit */
  char *cwd;
  char *paths[4];
};

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void reply(struct chan *c, uint32_t type, int32_t a, int32_t b, uint32_t stage, uint32_t fd)
{
  struct pirec__spawn_msg m = pirec__spawn_msg_make(type, c->token, a, b, stage, fd);

  if (c->fd < 0)
    return;
  /* The job's socket is non-blocking on its side only; ours blocks, so a reply is never lost to
   * a momentarily full buffer. */
  while (send(c->fd, &m, sizeof m, MSG_NOSIGNAL) < 0 && errno == EINTR)
    ;
}

static void signal_child(struct chan *c, int sig, int even_reaped)
{
  /* Only this process reaps the child, so while it is not reaped its pid (and group id) cannot
   * have been reused: the reason the helper, not the program, sends the signals. */
  if (c->state == C_RUNNING) {
    if (kill(-c->pid, sig) != 0)
      kill(c->pid, sig);
  } else if (c->state == C_REAPED && even_reaped) {
    kill(-c->pid, sig); /* members of the group outlived its leader */
  }
}

/* ---- the child, between fork and exec: system calls only ---- */

static void child_fail(int errfd, int stage, int fd)
{
  int32_t e[3] = {-errno, stage, fd};
  while (write(errfd, e, sizeof e) < 0 && errno == EINTR)
    ;
  _exit(127);
}

static int child_source(const struct run_req *r, int s, const int *fds, int *next)
{
  int flags;

  switch (r->kinds[s]) {
  case PIREC__SPAWN_FD_PASSED: return fds[(*next)++];
  case PIREC__SPAWN_FD_READ: flags = O_RDONLY; break;
  case PIREC__SPAWN_FD_TRUNC: flags = O_WRONLY | O_CREAT | O_TRUNC; break;
  case PIREC__SPAWN_FD_APPEND: flags = O_WRONLY | O_CREAT | O_APPEND; break;
  default: return open("/dev/null", s == 0 ? O_RDONLY : O_RDWR);
  }
  return open(r->paths[s], flags | O_CLOEXEC, 0644);
}

static void child_exec(const struct run_req *r, const int *fds, int errfd, pid_t helper)
{
  sigset_t none;
  int src[4], next = 0;

  for (int sig = 1; sig < NSIG; sig++)
    signal(sig, SIG_DFL);
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  setsid();
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != helper)
    _exit(127);
  for (int s = 0; s < r->nfds; s++) {
    int f = child_source(r, s, fds, &next);
    if (f < 0)
      child_fail(errfd, PIREC__SPAWN_STAGE_OPEN, s);
    /* Above every target so that no dup2 below overwrites a source still to be placed. */
    src[s] = fcntl(f, F_DUPFD_CLOEXEC, 16);
    if (src[s] < 0)
      child_fail(errfd, PIREC__SPAWN_STAGE_OPEN, s);
  }
  for (int s = 0; s < r->nfds; s++)
    if (dup2(src[s], s) < 0)
      child_fail(errfd, PIREC__SPAWN_STAGE_OPEN, s);
  if (r->cwd[0] && chdir(r->cwd) != 0)
    child_fail(errfd, PIREC__SPAWN_STAGE_CHDIR, -1);
  if (r->env)
    environ = r->env;
  execvp(r->argv[0], r->argv);
  child_fail(errfd, PIREC__SPAWN_STAGE_EXEC, -1);
}

/* ---- requests ---- */

static char *next_str(char **p, const char *end)
{
  char *s = *p;
  char *z = s < end ? memchr(s, '\0', (size_t)(end - s)) : NULL;
  if (!z)
    return NULL;
  *p = z + 1;
  return s;
}

static char **parse_vec(char **p, const char *end, long n)
{
  char **v;

  if (n < 0 || n > 100000)
    return NULL;
  if (!(v = calloc((size_t)n + 1, sizeof *v)))
    return NULL;
  for (long i = 0; i < n; i++)
    if (!(v[i] = next_str(p, end))) {
      free(v);
      return NULL;
    }
  return v;
}

static int parse_run(char *payload, size_t len, int nfds, struct run_req *r)
{
  char *p = payload + 4, *end = payload + len, *num;
  long argc, envc;

  memset(r, 0, sizeof *r);
  if (len < 4 || nfds < 3 || nfds > 4)
    return -EINVAL;
  memcpy(r->kinds, payload, 4);
  r->nfds = nfds;
  if (!(num = next_str(&p, end)) || (argc = strtol(num, NULL, 10)) < 1)
    return -EINVAL;
  if (!(r->argv = parse_vec(&p, end, argc)))
    return -EINVAL;
  if (!(num = next_str(&p, end)))
    return -EINVAL;
  envc = strtol(num, NULL, 10);
  if (envc >= 0 && !(r->env = parse_vec(&p, end, envc)))
    return -EINVAL;
  if (!(r->cwd = next_str(&p, end)))
    return -EINVAL;
  for (int s = 0; s < 4; s++)
    if (!(r->paths[s] = next_str(&p, end)))
      return -EINVAL;
  return 0;
}

static int count_passed(const struct run_req *r)
{
  int n = 0;
  for (int s = 0; s < r->nfds; s++)
    n += r->kinds[s] == PIREC__SPAWN_FD_PASSED;
  return n;
}

/* Forks and execs; waits here for the exec (the close-on-exec error pipe closes) so the reply says
 * whether the program runs. */
static void do_run(struct helper *h, struct chan *c, const struct pirec__spawn_msg *m, const int *fds,
                   int nfds)
{
  struct run_req r;
  int ep[2], err;
  int32_t e[3];
  pid_t pid;

  c->token = m->token;
  c->state = C_NONE;
  c->term_ms = m->c;
  c->kill_ms = m->d;
  c->esc_step = 0;
  err = parse_run(h->buf + sizeof *m, m->len, m->a, &r);
  if (err == 0 && count_passed(&r) != nfds)
    err = -EINVAL;
  if (err != 0 || pipe2(ep, O_CLOEXEC) != 0) {
    reply(c, PIREC__SPAWN_STARTED, 0, err ? err : -errno, PIREC__SPAWN_STAGE_REQUEST, 0);
    for (int k = 0; k < nfds; k++)
      close(fds[k]);
    goto out;
  }
  pid = fork();
  if (pid == 0)
    child_exec(&r, fds, ep[1], h->self);
  err = pid < 0 ? -errno : 0;
  /* Our copies go at once, before the exec is awaited: a child that closes its stdin must leave
   * the pipe without a reader (EPIPE for the job) even while we still wait here. */
  for (int k = 0; k < nfds; k++)
    close(fds[k]);
  close(ep[1]);
  if (pid > 0) {
    ssize_t n;
    do
      n = read(ep[0], e, sizeof e);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof e) {
      /* it never ran: reap it here, so no exit is reported for it */
      while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
      reply(c, PIREC__SPAWN_STARTED, 0, e[0], (uint32_t)e[1], (uint32_t)e[2]);
    } else {
      c->pid = pid;
      c->state = C_RUNNING;
      reply(c, PIREC__SPAWN_STARTED, pid, 0, 0, 0);
    }
  } else {
    reply(c, PIREC__SPAWN_STARTED, 0, err, PIREC__SPAWN_STAGE_FORK, 0);
  }
  close(ep[0]);
out:
  free(r.argv);
  free(r.env);
}

static void escalate(struct chan *c)
{
  if (c->state == C_RUNNING && c->esc_step == 0) {
    c->esc_step = 1;
    c->esc_at = now_ms() + c->term_ms;
  }
}

static void chan_message(struct helper *h, size_t i)
{
  int fds[PIREC__SPAWN_MAX_FDS], nfds;
  long n = pirec__spawn_recv(h->chans[i].fd, h->buf, PIREC__SPAWN_MAX_MSG, fds, &nfds, MSG_DONTWAIT);
  struct chan *c = &h->chans[i];
  struct pirec__spawn_msg m;

  if (n == -EAGAIN)
    return;
  if (n <= 0 && n != -EMSGSIZE) {
    /* The job is gone (freed, or the whole program): stop its child in order. */
    close(c->fd);
    c->fd = -1;
    escalate(c);
    return;
  }
  if (n < (long)sizeof m) {
    for (int k = 0; k < nfds; k++)
      close(fds[k]);
    reply(c, PIREC__SPAWN_STARTED, 0, n < 0 ? -E2BIG : -EINVAL, PIREC__SPAWN_STAGE_REQUEST, 0);
    return;
  }
  memcpy(&m, h->buf, sizeof m);
  if (m.type == PIREC__SPAWN_RUN && m.len == (uint32_t)(n - (long)sizeof m)) {
    do_run(h, c, &m, fds, nfds); /* closes the fds */
    return;
  }
  if (m.type == PIREC__SPAWN_SIGNAL && m.token == c->token)
    signal_child(c, m.a, m.b);
  for (int k = 0; k < nfds; k++)
    close(fds[k]);
}

static void add_chan(struct helper *h, int fd)
{
  if (h->nchan == h->cap) {
    size_t cap = h->cap ? h->cap * 2 : 16;
    struct chan *n = realloc(h->chans, cap * sizeof *n);
    if (!n) {
      close(fd);
      return;
    }
    h->chans = n;
    h->cap = cap;
  }
  memset(&h->chans[h->nchan], 0, sizeof h->chans[0]);
  h->chans[h->nchan++].fd = fd;
}

static void master_message(struct helper *h)
{
  int fds[PIREC__SPAWN_MAX_FDS], nfds;
  struct pirec__spawn_msg m;
  long n = pirec__spawn_recv(h->master, &m, sizeof m, fds, &nfds, MSG_DONTWAIT);

  if (n == -EAGAIN)
    return;
  if (n <= 0 && n != -EMSGSIZE) {
    /* The program is gone: every child gets the stop escalation. */
    close(h->master);
    h->master = -1;
    for (size_t i = 0; i < h->nchan; i++)
      escalate(&h->chans[i]);
    return;
  }
  for (int k = 0; k < nfds; k++) {
    if (n == (long)sizeof m && m.type == PIREC__SPAWN_CHANNEL && k == 0)
      add_chan(h, fds[k]);
    else
      close(fds[k]);
  }
}

/* ---- reaping and the stop escalation ---- */

static void reap(struct helper *h)
{
  struct signalfd_siginfo si;
  int st;
  pid_t pid;

  while (read(h->sigfd, &si, sizeof si) > 0)
    ;
  while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
    for (size_t i = 0; i < h->nchan; i++) {
      struct chan *c = &h->chans[i];
      if (c->state == C_RUNNING && c->pid == pid) {
        c->state = C_REAPED;
        reply(c, PIREC__SPAWN_EXITED, st, 0, 0, 0);
      }
    }
  }
}

/* Sends what is due; returns the poll timeout until the next step (-1 none). */
static int escalation_step(struct helper *h)
{
  int64_t now = now_ms(), next = -1;

  for (size_t i = 0; i < h->nchan; i++) {
    struct chan *c = &h->chans[i];
    if (c->state != C_RUNNING || c->esc_step == 0 || c->esc_step == 3)
      continue;
    if (now >= c->esc_at) {
      signal_child(c, c->esc_step == 1 ? SIGTERM : SIGKILL, 0);
      c->esc_at = now + (c->esc_step == 1 ? c->kill_ms : 0);
      c->esc_step++;
      if (c->esc_step == 3)
        continue;
    }
    if (next < 0 || c->esc_at - now < next)
      next = c->esc_at - now;
  }
  return (int)next;
}

/* Channels closed by their job whose child is gone are forgotten. Returns the children running. */
static size_t sweep(struct helper *h)
{
  size_t w = 0, running = 0;

  for (size_t i = 0; i < h->nchan; i++) {
    struct chan *c = &h->chans[i];
    if (c->fd < 0 && c->state != C_RUNNING)
      continue;
    running += c->state == C_RUNNING;
    h->chans[w++] = *c;
  }
  h->nchan = w;
  return running;
}

/* ---- set-up and the loop ---- */

static void detach_fds(struct helper *h, int master)
{
  int null = open("/dev/null", O_RDWR);

  for (int fd = 0; fd < 3; fd++)
    if (null >= 0 && null != fd)
      dup2(null, fd);
  if (null > 2)
    close(null);
  if (master != 3) {
    dup3(master, 3, O_CLOEXEC);
    close(master);
  }
  h->master = 3;
  /* The program's other fds (its protocol pipes, listening sockets) must not be held open here. */
  if (close_range(4, ~0U, 0) != 0)
    for (int fd = 4; fd < 1024; fd++)
      close(fd);
}

static void helper_setup(struct helper *h, int master)
{
  sigset_t chld;

  memset(h, 0, sizeof *h);
  h->self = getpid();
  prctl(PR_SET_NAME, "pirec-spawn");
  detach_fds(h, master);
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  h->sigfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
  h->buf = malloc(PIREC__SPAWN_MAX_MSG);
  if (h->sigfd < 0 || !h->buf)
    _exit(1);
}

void pirec__spawner_serve(int master)
{
  struct helper h;
  struct pollfd *pf = NULL;
  size_t pcap = 0;

  helper_setup(&h, master);
  for (;;) {
    int timeout = escalation_step(&h);
    size_t running = sweep(&h), n = 0;

    if (h.master < 0 && running == 0)
      _exit(0);
    if (pcap < h.nchan + 2) {
      pcap = h.nchan + 16;
      if (!(pf = realloc(pf, pcap * sizeof *pf)))
        _exit(1);
    }
    pf[n++] = (struct pollfd){.fd = h.sigfd, .events = POLLIN};
    pf[n++] = (struct pollfd){.fd = h.master, .events = POLLIN};
    for (size_t i = 0; i < h.nchan; i++)
      pf[n++] = (struct pollfd){.fd = h.chans[i].fd, .events = POLLIN};
    if (poll(pf, n, timeout) < 0)
      continue;
    if (pf[0].revents)
      reap(&h);
    /* Channel messages before new channels: adding one may move h.chans. */
    for (size_t i = 0; i + 2 < n; i++)
      if (pf[i + 2].revents && h.chans[i].fd >= 0)
        chan_message(&h, i);
    if (pf[1].revents && h.master >= 0)
      master_message(&h);
  }
}
