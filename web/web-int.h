#ifndef PIREC_WEB_INT_H
#define PIREC_WEB_INT_H

/* What web/'s files share. Layers (a file calls only those above it):
 *   ctl.c     the control-socket connection
 *   guard.c   tokens, Host, Origin and the state-change header
 *   login.c   password login: the hash check in the threadpool, sessions, failed-attempt limits
 *   files.c   paths inside the data and static directories; the session listing (threadpool)
 *   reply.c   building and writing HTTP replies
 *   api.c     the HTTP routes
 *   push.c    the WebSocket clients and what is pushed to them
 *   server.c  the libwebsockets context on the caller's loop, the public lifecycle */

#include <jansson.h>
#include <libwebsockets.h>
#include <stdint.h>
#include <uv.h>

#include "ctl.h"
#include "pirec/container_of.h"
#include "pirec/web.h"

/* One HTTP request (libwebsockets' per-session data of the "http" protocol; reset per request on
 * a kept-alive connection). */
struct http_conn {
  struct pirec_web *web;
  struct lws *wsi;
  char uri[512];
  int post;
  int routed; /* the request has been dispatched */
  char *body; /* the request body so far (POST) */
  size_t body_len;
  int64_t ticket;         /* a control request in flight, 0 when none */
  struct list_work *work; /* a session listing in flight, NULL when none */
  char *reply;            /* the reply, LWS_PRE bytes of head room first; NULL until ready */
  size_t reply_len, reply_off;
  int status;
  const char *ctype;
  int headers_sent;
  char cookie[200];         /* a Set-Cookie header value to send, "" when none */
  struct login_work *login; /* a password check in flight, NULL when none */
};

/* login.c's state */
#define LOGIN_PASSWORD_MAX 256 /* bytes */
#define LOGIN_ADDRS        64  /* client addresses whose failed attempts are counted */
#define LOGIN_SESSIONS     64  /* logged-in browsers at once; a new login beyond ends the oldest */
struct login_fails {
  char addr[64];
  uint64_t window_ms; /* uv_now when its window began */
  int count;          /* failed attempts in it */
};
struct login_session {
  char id[65]; /* 32 random bytes as hex, "" when free */
  uint64_t expires_ms;
};

#define WEB_PREVIEWS 8 /* modules whose previews are pushed */

/* The newest message of one kind, built once and sent to every client that wants it. */
struct push_msg {
  char *buf; /* LWS_PRE head room first */
  size_t len;
  uint64_t gen;
};

/* A module's newest preview. */
struct preview {
  struct pirec_web *web;
  char module[64];
  struct push_msg msg;
  int64_t ticket; /* a preview request in flight, 0 when none */
};

/* One WebSocket client. */
struct ws_conn {
  struct ws_conn *next;
  struct pirec_web *web;
  struct lws *wsi;
  uint64_t sent_gen;                  /* the newest status push it has been sent */
  uint64_t preview_gen[WEB_PREVIEWS]; /* and preview of each module */
  int watching;                       /* it asked for previews ({"watch":true}) */
};

struct pirec_web {
  uv_loop_t *loop;
  struct pirec_web_settings s; /* strings owned (copied) */
  struct lws_context *ctx;
  struct pirec_webctl *ctl;
  uv_timer_t poll; /* status for the WebSocket clients, while there are any */
  uv_fs_t statfs;
  int statfs_busy;
  int closing;
  int handles;
  int port;
  /* pushes: the newest status message, and each camera's newest preview */
  struct push_msg status;
  struct preview previews[WEB_PREVIEWS];
  int npreviews;
  uv_timer_t preview_timer; /* previews asked while someone watches */
  uint64_t disk_free, disk_total;
  int64_t status_ticket;
  struct ws_conn *clients;
  int nclients;
  uint64_t refused; /* clients refused: too many, bad token, bad Origin */
  struct login_fails fails[LOGIN_ADDRS];
  struct login_session sessions[LOGIN_SESSIONS];
  int login_busy; /* a password check runs (one at a time: Argon2id takes 64 MiB) */
};

/* guard.c: checks a request before anything else. Returns 0 (go on; *cookie filled with a
 * Set-Cookie value when the token came in the URL), or the HTTP status to refuse with (400, 401,
 * 403) and *why saying what was wrong. state_changing: a POST. open: a path anyone may have (the
 * page's files, /api/auth, /api/login): Host, Origin and the state-change header are checked, the
 * token or login is not. */
int pirec__web_guard(struct pirec_web *w, struct lws *wsi, int state_changing, int open, const char **why,
                     char *cookie, size_t cookie_cap);
/* Whether the request carries the token or a logged-in session (always 1 when neither is asked). */
int pirec__web_authorized(struct pirec_web *w, struct lws *wsi);
/* The value of cookie name= in the request, into buf; 1 when found. */
int pirec__web_cookie(struct lws *wsi, const char *name, char *buf, size_t cap);

/* login.c */
/* The hash has the shape libsodium's crypto_pwhash_str makes ("$argon2id$..."). */
int pirec__web_password_hash_ok(const char *hash);
/* 1 when id is a live session. */
int pirec__web_session_ok(struct pirec_web *w, const char *id);
/* POST /api/login {"password":...}: replies 200 with the session cookie, 401, 429 (too many
 * failures from this address, or another check running), 400, or 404 (no password set). */
void pirec__web_login(struct http_conn *c);
/* POST /api/logout: ends session (may be NULL) and clears the cookie. */
void pirec__web_logout(struct http_conn *c, const char *session);
/* c goes away before its check is done: the result is dropped (the failure still counted). */
void pirec__web_login_detach(struct http_conn *c);

/* files.c */
/* root/rel resolved with every symlink followed, refused (-EACCES) unless it stays inside root and
 * is a regular file; rel must not hold "..", a NUL or start with '/'. Returns 0 with the path in
 * out, -ENOENT, -EACCES, -ENAMETOOLONG. Blocks on the file system (a few lstat calls). */
int pirec__web_resolve(const char *root, const char *rel, char *out, size_t cap);
/* The content type for a file name by its extension. */
const char *pirec__web_mime(const char *path);
/* Lists the sessions under w->s.data_dir in the threadpool, then replies on c. Returns 0 or -errno
 * (then nothing runs). */
int pirec__web_list_sessions(struct pirec_web *w, struct http_conn *c);
/* c goes away before its listing is done: the listing's result is dropped. */
void pirec__web_list_detach(struct http_conn *c);

/* reply.c */
/* Takes over body (malloc'd; may be NULL for an empty reply), asks for a writeable callback. */
void pirec__web_reply(struct http_conn *c, int status, const char *ctype, char *body, size_t len);
void pirec__web_reply_json(struct http_conn *c, int status, json_t *obj); /* obj borrowed */
void pirec__web_reply_error(struct http_conn *c, int status, const char *message);
/* Writes the next part of the reply; returns what the callback returns. */
int pirec__web_reply_write(struct http_conn *c);
/* Frees a request's buffers and drops what it waits for. */
void pirec__web_conn_reset(struct http_conn *c);

/* api.c: the "http" protocol callback. */
int pirec__web_http_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);

/* push.c: the "pirec" WebSocket protocol callback, and what changes pushes. */
int pirec__web_ws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len);
void pirec__web_push_controller(struct pirec_web *w, int connected);
void pirec__web_poll_start(struct pirec_web *w);
/* Frees the pushed messages (at close). */
void pirec__web_push_free(struct pirec_web *w);

#endif
