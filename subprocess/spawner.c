/* The program's side of the spawn helper: starting it, channels, and the wire format
 * (pirec/spawner.h, spawn-proto.h). */
#include "pirec/spawner.h"

#include "spawn-proto.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One helper per process, started before any thread: the fd is written once then and only read
 * afterwards, which is why a process-wide value is safe here (and a helper per loop would defeat
 * its purpose: it must be forked while the process is still small). */
static int master_fd = -1;
static pid_t helper_pid;
static atomic_int paused;

int pirec_spawner_start(void)
{
  int sv[2];
  pid_t pid;

  if (master_fd >= 0)
    return 0;
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return -errno;
  pid = fork();
  if (pid < 0) {
    int err = -errno;
    close(sv[0]);
    close(sv[1]);
    return err;
  }
  if (pid == 0) {
    close(sv[0]);
    pirec__spawner_serve(sv[1]);
  }
  close(sv[1]);
  master_fd = sv[0];
  helper_pid = pid;
  return 0;
}

int pirec_spawner_running(void)
{
  return master_fd >= 0 && !atomic_load(&paused);
}

void pirec__spawner_pause(int p)
{
  atomic_store(&paused, p != 0);
}

int pirec_spawner_pid(void)
{
  return (int)helper_pid;
}

int pirec__spawner_channel(void)
{
  struct pirec__spawn_msg m = pirec__spawn_msg_make(PIREC__SPAWN_CHANNEL, 0, 0, 0, 0, 0);
  int sv[2], err;

  if (master_fd < 0)
    return -ENOTCONN;
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
    return -errno;
  /* The master socket carries one tiny message per job ever made, read at once by the helper:
   * a full buffer (-EAGAIN) would mean the helper is gone or stuck, and the job then fails. */
  err = pirec__spawn_send(master_fd, &m, sizeof m, &sv[1], 1);
  close(sv[1]);
  if (err == 0 && fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK) != 0)
    err = -errno;
  if (err != 0) {
    close(sv[0]);
    return err;
  }
  return sv[0];
}

/* ---- wire format ---- */

struct pirec__spawn_msg pirec__spawn_msg_make(uint32_t type, uint64_t token, int32_t a, int32_t b, uint32_t c,
                                              uint32_t d)
{
  /* The fields leave no padding, so no stray bytes go on the wire. */
  return (struct pirec__spawn_msg){.type = type, .token = token, .a = a, .b = b, .c = c, .d = d};
}

static size_t str_size(const char *s)
{
  return (s ? strlen(s) : 0) + 1;
}

static char *put_str(char *p, const char *s)
{
  size_t n = s ? strlen(s) : 0;
  if (n)
    memcpy(p, s, n);
  p[n] = '\0';
  return p + n + 1;
}

static size_t vec_count(const char *const *v)
{
  size_t n = 0;
  while (v && v[n])
    n++;
  return n;
}

long pirec__spawn_pack(const char *const *argv, const char *const *env, const char *cwd,
                       const uint8_t kinds[4], const char *const paths[4], int nfds, uint32_t term_ms,
                       uint32_t kill_ms, uint64_t token, char **out)
{
  struct pirec__spawn_msg m;
  size_t argc = vec_count(argv), envc = vec_count(env);
  size_t len = sizeof m + 4 + 24 + 24 + str_size(cwd);
  char num[24], *buf, *p;

  for (size_t i = 0; i < argc; i++)
    len += str_size(argv[i]);
  for (size_t i = 0; i < envc; i++)
    len += str_size(env[i]);
  for (int s = 0; s < 4; s++)
    len += str_size(paths[s]);
  if (len > PIREC__SPAWN_MAX_MSG)
    return -E2BIG;
  if (!(buf = calloc(1, len)))
    return -ENOMEM;
  m = pirec__spawn_msg_make(PIREC__SPAWN_RUN, token, nfds, 0, term_ms, kill_ms);
  p = buf + sizeof m;
  memcpy(p, kinds, 4);
  p += 4;
  snprintf(num, sizeof num, "%zu", argc);
  p = put_str(p, num);
  for (size_t i = 0; i < argc; i++)
    p = put_str(p, argv[i]);
  snprintf(num, sizeof num, "%ld", env ? (long)envc : -1L);
  p = put_str(p, num);
  for (size_t i = 0; i < envc; i++)
    p = put_str(p, env[i]);
  p = put_str(p, cwd);
  for (int s = 0; s < 4; s++)
    p = put_str(p, paths[s]);
  m.len = (uint32_t)(p - buf - sizeof m);
  memcpy(buf, &m, sizeof m);
  *out = buf;
  return (long)(p - buf);
}

int pirec__spawn_send(int sock, const void *msg, size_t len, const int *fds, int nfds)
{
  union {
    char buf[CMSG_SPACE(sizeof(int) * PIREC__SPAWN_MAX_FDS)];
    struct cmsghdr align;
  } u;
  struct iovec iov = {.iov_base = (void *)msg, .iov_len = len};
  struct msghdr mh;

  memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  if (nfds > 0) {
    struct cmsghdr *c;
    memset(&u, 0, sizeof u);
    mh.msg_control = u.buf;
    mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
    c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
  }
  for (;;) {
    ssize_t n = sendmsg(sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0)
      return 0;
    if (errno != EINTR)
      return -errno;
  }
}

long pirec__spawn_recv(int sock, void *buf, size_t cap, int *fds, int *nfds, int flags)
{
  union {
    char buf[CMSG_SPACE(sizeof(int) * PIREC__SPAWN_MAX_FDS)];
    struct cmsghdr align;
  } u;
  struct iovec iov = {.iov_base = buf, .iov_len = cap};
  struct msghdr mh;
  ssize_t n;

  *nfds = 0;
  memset(&mh, 0, sizeof mh);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = u.buf;
  mh.msg_controllen = sizeof u.buf;
  do
    n = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
    int got[PIREC__SPAWN_MAX_FDS * 2];
    if (k > (int)(sizeof got / sizeof got[0]))
      k = (int)(sizeof got / sizeof got[0]);
    memcpy(got, CMSG_DATA(c), sizeof(int) * (size_t)k);
    for (int i = 0; i < k; i++) {
      if (*nfds < PIREC__SPAWN_MAX_FDS)
        fds[(*nfds)++] = got[i];
      else
        close(got[i]);
    }
  }
  if ((mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0) {
    for (int i = 0; i < *nfds; i++)
      close(fds[i]);
    *nfds = 0;
    return -EMSGSIZE;
  }
  return (long)n;
}
