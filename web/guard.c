/* Who may talk to pirec-web (docs/HTTP.md, "Security"): the Host a request names, the Origin a
 * browser says it comes from, the token, and the header a cross-site page cannot send. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "web-int.h"

#define TOKEN_MIN 16

/* Equal in time independent of where the strings differ (the token). */
static int same_secret(const char *a, const char *b)
{
  size_t la = strlen(a), lb = strlen(b);
  unsigned char d = la != lb;
  for (size_t i = 0; i < la && i < lb; i++)
    d |= (unsigned char)(a[i] ^ b[i]);
  return d == 0;
}

/* "localhost", "127.0.0.1" or "[::1]", with or without ":PORT": the names that reach this machine
 * only. A page from elsewhere that makes its own name resolve to 127.0.0.1 (DNS rebinding) sends
 * its own name as Host and is refused. */
static int loopback_host(const char *host)
{
  static const char *const names[] = {"localhost", "127.0.0.1", "[::1]", NULL};
  for (int i = 0; names[i]; i++) {
    size_t n = strlen(names[i]);
    if (strncmp(host, names[i], n) == 0 && (host[n] == '\0' || host[n] == ':'))
      return 1;
  }
  return 0;
}

/* The Origin header, when a browser sent one, must be this very server. */
static int origin_ok(struct lws *wsi, const char *host)
{
  char origin[300];
  if (lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN) <= 0)
    return 1;
  if (lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) < 0)
    return 0;
  const char *rest = strncmp(origin, "http://", 7) == 0    ? origin + 7
                     : strncmp(origin, "https://", 8) == 0 ? origin + 8
                                                           : NULL;
  return rest && strcmp(rest, host) == 0;
}

int pirec__web_cookie(struct lws *wsi, const char *name, char *buf, size_t cap)
{
  char h[600];
  size_t n = strlen(name);
  if (lws_hdr_copy(wsi, h, sizeof h, WSI_TOKEN_HTTP_COOKIE) <= 0)
    return 0;
  for (char *save = NULL, *part = strtok_r(h, ";", &save); part; part = strtok_r(NULL, ";", &save)) {
    part += strspn(part, " ");
    if (strncmp(part, name, n) == 0 && part[n] == '=') {
      snprintf(buf, cap, "%s", part + n + 1);
      return 1;
    }
  }
  return 0;
}

/* The token from "Authorization: Bearer T", the pirec_token cookie, or ?token=T (1 in *from_url). */
static int find_token(struct lws *wsi, char *buf, size_t cap, int *from_url)
{
  char h[300];
  *from_url = 0;
  if (lws_hdr_copy(wsi, h, sizeof h, WSI_TOKEN_HTTP_AUTHORIZATION) > 0 && strncmp(h, "Bearer ", 7) == 0) {
    snprintf(buf, cap, "%s", h + 7);
    return 1;
  }
  if (pirec__web_cookie(wsi, "pirec_token", buf, cap))
    return 1;
  char arg[300];
  const char *v = lws_get_urlarg_by_name(wsi, "token=", arg, sizeof arg);
  if (v) {
    snprintf(buf, cap, "%s", v);
    *from_url = 1;
    return 1;
  }
  return 0;
}

static int needs_auth(const struct pirec_web *w)
{
  return (w->s.token && *w->s.token) || w->s.password_hash;
}

/* 1 with a logged-in session's cookie. */
static int logged_in(struct pirec_web *w, struct lws *wsi)
{
  char id[100];
  return w->s.password_hash && pirec__web_cookie(wsi, "pirec_session", id, sizeof id) &&
         pirec__web_session_ok(w, id);
}

/* 0 when the request has the token (or a login), else the refusal's status and why. */
static int check_token(struct pirec_web *w, struct lws *wsi, const char **why, char *cookie,
                       size_t cookie_cap)
{
  if (logged_in(w, wsi))
    return 0;
  char token[300];
  int from_url = 0;
  int has_token = w->s.token && *w->s.token;
  if (!has_token || !find_token(wsi, token, sizeof token, &from_url)) {
    *why = w->s.password_hash ? "log in with the console's password (POST /api/login)"
                              : "a token is needed: open the URL that `pirec-web --url` prints";
    return 401;
  }
  if (!same_secret(token, w->s.token)) {
    *why = "wrong token";
    return 401;
  }
  if (from_url)
    snprintf(cookie, cookie_cap, "pirec_token=%s; Path=/; HttpOnly; SameSite=Strict", w->s.token);
  return 0;
}

int pirec__web_authorized(struct pirec_web *w, struct lws *wsi)
{
  const char *why;
  char cookie[200];
  return !needs_auth(w) || check_token(w, wsi, &why, cookie, sizeof cookie) == 0;
}

int pirec__web_guard(struct pirec_web *w, struct lws *wsi, int state_changing, int open, const char **why,
                     char *cookie, size_t cookie_cap)
{
  char host[256];
  cookie[0] = '\0';
  /* HTTP/2 (what browsers and curl speak over TLS, by ALPN) names the host in ":authority". */
  if (lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) <= 0 &&
      lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HTTP_COLON_AUTHORITY) <= 0) {
    *why = "the request has no Host header";
    return 400;
  }
  if (!needs_auth(w) && !loopback_host(host)) {
    *why = "this console answers to localhost only (Host names another machine)";
    return 403;
  }
  if (!origin_ok(wsi, host)) {
    *why = "cross-origin request refused (Origin is not this server)";
    return 403;
  }
  if (state_changing && lws_hdr_custom_length(wsi, "x-pirec:", 8) <= 0) {
    *why = "state-changing requests need the header 'X-Pirec: 1'";
    return 403;
  }
  if (!needs_auth(w))
    return 0;
  int refuse =
      check_token(w, wsi, why, cookie, cookie_cap); /* on an open path too: ?token= sets the cookie */
  return open ? 0 : refuse;
}

static int write_new_token(const char *path)
{
  unsigned char raw[32];
  if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
    return -errno;
  char hex[2 * sizeof raw + 2];
  for (size_t i = 0; i < sizeof raw; i++)
    snprintf(hex + 2 * i, 3, "%02x", raw[i]);
  strcat(hex, "\n");
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    return -errno;
  ssize_t n = write(fd, hex, strlen(hex));
  int err = n == (ssize_t)strlen(hex) && fsync(fd) == 0 ? 0 : -EIO;
  close(fd);
  return err;
}

int pirec_web_token_load(const char *path, int create, char *buf, size_t cap)
{
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT && create) {
    int err = write_new_token(path);
    if (err < 0 && err != -EEXIST)
      return err;
    fd = open(path, O_RDONLY | O_CLOEXEC);
  }
  if (fd < 0)
    return -errno;
  struct stat st;
  if (fstat(fd, &st) < 0 || (st.st_mode & 077)) {
    close(fd); /* a token others can read is no secret: refuse it rather than use it */
    return -EINVAL;
  }
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n < 0)
    return -errno;
  buf[n] = '\0';
  buf[strcspn(buf, "\r\n")] = '\0';
  return strlen(buf) >= TOKEN_MIN ? 0 : -EINVAL;
}
