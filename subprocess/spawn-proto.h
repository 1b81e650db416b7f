#ifndef PIREC_SUBPROCESS_SPAWN_PROTO_H
#define PIREC_SUBPROCESS_SPAWN_PROTO_H

/* The messages between pirec_job and the spawn helper (see pirec/spawner.h), internal to
 * subprocess/. Each job has one SOCK_SEQPACKET socketpair to the helper (a "channel"), so one
 * message is one datagram and the helper knows which job a child belongs to; a job has at most
 * one child at a time. The program's end of the master socket only creates channels. */

#include <stddef.h>
#include <stdint.h>

enum pirec__spawn_type {
  PIREC__SPAWN_CHANNEL = 1, /* program -> helper on the master socket: fd of a new channel */
  PIREC__SPAWN_RUN,         /* job -> helper: start a child (payload below, stdio fds attached) */
  PIREC__SPAWN_SIGNAL,      /* job -> helper: a = signal, b = 1: to the group even if reaped */
  PIREC__SPAWN_STARTED,     /* helper -> job: a = pid, or b = -errno with c = stage, d = fd */
  PIREC__SPAWN_EXITED,      /* helper -> job: a = wait status */
};

/* Where a child's start failed (STARTED c). */
enum pirec__spawn_stage {
  PIREC__SPAWN_STAGE_EXEC = 0,
  PIREC__SPAWN_STAGE_OPEN, /* opening the stdio file for fd d */
  PIREC__SPAWN_STAGE_CHDIR,
  PIREC__SPAWN_STAGE_FORK,
  PIREC__SPAWN_STAGE_REQUEST, /* a malformed or oversized request */
};

/* How the child's fd s is set up (RUN payload kinds[s]). */
enum pirec__spawn_fd {
  PIREC__SPAWN_FD_NULL = 0, /* /dev/null */
  PIREC__SPAWN_FD_PASSED,   /* the next fd of the SCM_RIGHTS array */
  PIREC__SPAWN_FD_READ,     /* open paths[s] read-only */
  PIREC__SPAWN_FD_TRUNC,    /* create or truncate paths[s] for writing */
  PIREC__SPAWN_FD_APPEND,   /* create paths[s], append */
};

#define PIREC__SPAWN_MAX_FDS 4
/* The largest RUN message (argv, env, cwd, paths): a request beyond it fails with -E2BIG. */
#define PIREC__SPAWN_MAX_MSG (128 * 1024)

struct pirec__spawn_msg {
  uint32_t type;
  uint32_t len; /* payload bytes after this header */
  uint64_t token;
  int32_t a, b;
  uint32_t c, d;
};

/* RUN: header a = number of fds (3 or 4), c = stop_term_ms, d = stop_kill_ms, then the payload:
 * uint8_t kinds[4]; then NUL-terminated strings: argc as text, argv..., envc as text ("-1" to
 * inherit), env..., cwd ("" for ours), then one path per fd ("" for none). */

/* A message without payload. */
struct pirec__spawn_msg pirec__spawn_msg_make(uint32_t type, uint64_t token, int32_t a, int32_t b, uint32_t c,
                                              uint32_t d);

/* Packs a RUN payload into a malloc'd buffer (header included). Returns its length, or a negative
 * errno (-ENOMEM, -E2BIG). */
long pirec__spawn_pack(const char *const *argv, const char *const *env, const char *cwd,
                       const uint8_t kinds[4], const char *const paths[4], int nfds, uint32_t term_ms,
                       uint32_t kill_ms, uint64_t token, char **out);

/* Sends one message with up to PIREC__SPAWN_MAX_FDS fds attached, MSG_DONTWAIT. 0 or -errno. */
int pirec__spawn_send(int sock, const void *msg, size_t len, const int *fds, int nfds);

/* Receives one message into buf (cap bytes) and up to PIREC__SPAWN_MAX_FDS fds (close-on-exec),
 * with flags for recvmsg (MSG_DONTWAIT or 0). Returns the length, 0 at EOF, -errno (-EAGAIN
 * when nothing waits, -EMSGSIZE when truncated: its fds are closed). */
long pirec__spawn_recv(int sock, void *buf, size_t cap, int *fds, int *nfds, int flags);

/* The program's end of a new channel (non-blocking, close-on-exec), or a negative errno:
 * -ENOTCONN when no helper runs. */
int pirec__spawner_channel(void);

/* bench-loop only: while paused, pirec_spawner_running() says 0 and jobs use uv_spawn, so one
 * process can alternate both ways of spawning. */
void pirec__spawner_pause(int paused);

/* The helper's main: serves master until it closes and the last child is gone, then _exit(0). */
void pirec__spawner_serve(int master) __attribute__((noreturn));

#endif
