#ifndef PIREC_WEB_CTL_H
#define PIREC_WEB_CTL_H

/* pirec-web's side of the control socket (docs/PROTOCOL.md, "Control socket"): one connection to
 * the controller on a libuv loop, JSON lines framed and parsed by io/jsonl (the reader and encoder
 * the `pirec` client and the controller use), requests matched to replies by id.
 *
 * The connection is made at _new and remade after the controller goes away (a restart, a crash):
 * tried every 500 ms, and state_cb says each change. A request made while there is no connection
 * fails at once (its callback is not called; the return value says so); a request in flight when
 * the connection drops, or not answered within its timeout, gets its callback with reply NULL and
 * a message. Loop thread only. */

#include <jansson.h>
#include <stdint.h>
#include <uv.h>

struct pirec_webctl;

/* reply: the controller's reply object (borrowed: valid during the call), or NULL with error
 * saying why ("the controller went away", "no reply within 60 s"). */
typedef void (*pirec_webctl_reply_cb)(json_t *reply, const char *error, void *user);
/* connected: 1 when the connection has just been made, 0 when it has just been lost. */
typedef void (*pirec_webctl_state_cb)(int connected, void *user);

/* socket_path is copied. Returns 0 (connecting; *out set) or -errno. */
int pirec_webctl_new(uv_loop_t *loop, const char *socket_path, pirec_webctl_state_cb state_cb, void *user,
                     struct pirec_webctl **out);
/* Fails every request in flight (callbacks not called), closes the handles; the object is freed in
 * the last close callback, so run the loop afterwards. NULL is a no-op. */
void pirec_webctl_close(struct pirec_webctl *c);

int pirec_webctl_connected(const struct pirec_webctl *c);

/* Sends req (a command object without "id": one is added; the reference is taken over, also on
 * failure). Returns a ticket > 0 for pirec_webctl_cancel, or -ENOTCONN (no controller) or -ENOMEM;
 * on failure cb is never called. */
int64_t pirec_webctl_send(struct pirec_webctl *c, json_t *req, int timeout_ms, pirec_webctl_reply_cb cb,
                          void *user);
/* The request's callback will not be called (its reply is dropped when it comes). An unknown or
 * finished ticket is a no-op. */
void pirec_webctl_cancel(struct pirec_webctl *c, int64_t ticket);

#endif
