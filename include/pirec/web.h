#ifndef PIREC_WEB_H
#define PIREC_WEB_H

/* pirec-web: the operator's console in a browser and an HTTP JSON API (docs/HTTP.md), a process of
 * its own that talks to the controller through the control socket, so nothing it does (a crash, a
 * flood of clients) reaches a recording.
 *
 * HTTP and WebSocket are libwebsockets' (Debian's libwebsockets 4.1 with its libuv event-library
 * plugin), joined to the caller's libuv loop as a "foreign loop": one loop thread serves the
 * control socket connection, every client and the timers. Session listings run in libuv's
 * threadpool; file downloads are read by libwebsockets a chunk at a time as the client takes them.
 *
 * Lifecycle: pirec_web_new, uv_run; pirec_web_close (from a callback: a signal), and uv_run returns
 * once every connection and handle is closed; then pirec_web_free, which finishes the
 * libwebsockets context (its last stage runs outside the loop) and frees the object. Loop thread
 * only. */

#include <stddef.h>
#include <uv.h>

struct pirec_web;

struct pirec_web_settings {
  const char *listen;        /* address to bind ("127.0.0.1", "0.0.0.0", "::") */
  int port;                  /* 0: any free port (pirec_web_port says which) */
  const char *static_dir;    /* the page's files (index.html, app.js, ...) */
  const char *data_dir;      /* [session] output_dir: sessions listed and downloaded from here only */
  const char *socket_path;   /* the controller's control socket */
  const char *token;         /* NULL or "": no token asked (refused unless listen is a loopback
                              address); else every request must carry it (docs/HTTP.md) */
  const char *password_hash; /* NULL or "": no password login; else an Argon2id hash
                                (pirec_web_password_hash): POST /api/login with that password
                                gives a session cookie, taken like the token (docs/HTTP.md) */
  const char *tls_cert;      /* PEM certificate and key: HTTPS and WSS; NULL or "": plain HTTP */
  const char *tls_key;
  int max_clients; /* WebSocket clients at once; more are refused */
  size_t max_body; /* the largest request body accepted (bytes) */
  int quiet;       /* 1: libwebsockets logs errors only */
};

void pirec_web_settings_default(struct pirec_web_settings *s);

/* Binds the listening socket and starts connecting to the controller (retried until it answers).
 * Returns 0, -EINVAL (a token-less listen on a non-loopback address; TLS half configured; a
 * password_hash not of libsodium's "$argon2id$" form), -EIO
 * when libwebsockets cannot listen (the port is taken, its libuv plugin is missing: it logs which),
 * or -ENOMEM. Strings in s
 * are copied. */
int pirec_web_new(uv_loop_t *loop, const struct pirec_web_settings *s, struct pirec_web **out);

/* The port actually listened on. */
int pirec_web_port(const struct pirec_web *w);

/* Closes every client and handle; the loop returns once they are closed. NULL is a no-op. */
void pirec_web_close(struct pirec_web *w);
/* After the loop has returned: finishes and frees (closing first if that was not done). NULL is a
 * no-op. */
void pirec_web_free(struct pirec_web *w);

/* ---- tokens (web/guard.c) ------------------------------------------------------------------- */

/* Reads the token from path (its first line; at least 16 characters). When the file does not
 * exist and create is 1, writes a new random token (32 bytes as hex) with mode 0600 first.
 * Returns 0 with the token in buf, -ENOENT, -EINVAL (too short, or the file is readable by others),
 * or another -errno. Blocks: start-up and the command line only. */
int pirec_web_token_load(const char *path, int create, char *buf, size_t cap);

/* The Argon2id hash of password for [web] password_hash (libsodium's crypto_pwhash_str, its
 * "interactive" limits: 64 MiB, about 0.1 s on a PC). out needs 128 bytes. Returns 0, -EINVAL,
 * -ENOMEM. */
int pirec_web_password_hash(const char *password, char *out, size_t cap);

#endif
