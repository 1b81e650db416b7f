/* Password login (docs/HTTP.md, "Security"): [web] password_hash holds an Argon2id hash
 * (libsodium's crypto_pwhash_str, made by `pirec-web --hash-password`); POST /api/login checks a
 * password against it in libuv's threadpool, one at a time, and answers a right one with a session
 * cookie. Failed attempts are counted per client address: LOGIN_FAILS in LOGIN_WINDOW_MS and that
 * address is refused (429) until the window ends; a right password clears its count. Sessions live in pirec-web's memory only (a
 * restart asks for the password again) and end LOGIN_SESSION_MS after the login. */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pirec/jsonl.h"
#include "pirec/log.h"
#include "web-int.h"

#define LOGIN_FAILS      5
#define LOGIN_WINDOW_MS  (60 * 1000)
#define LOGIN_SESSION_MS (12ull * 3600 * 1000) /* a working day in the lab */

struct login_work {
  uv_work_t req;
  struct pirec_web *web;
  struct http_conn *conn; /* NULL once the client went away */
  char password[LOGIN_PASSWORD_MAX + 1];
  char hash[crypto_pwhash_STRBYTES];
  char addr[sizeof(((struct login_fails *)0)->addr)];
  int ok;
};

int pirec_web_password_hash(const char *password, char *out, size_t cap)
{
  if (sodium_init() < 0 || cap < crypto_pwhash_STRBYTES)
    return -EINVAL;
  if (crypto_pwhash_str(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                        crypto_pwhash_MEMLIMIT_INTERACTIVE) != 0)
    return -ENOMEM; /* libsodium: out of memory for the hash's 64 MiB */
  return 0;
}

int pirec__web_password_hash_ok(const char *hash)
{
  return hash && strncmp(hash, "$argon2id$", 10) == 0 && strlen(hash) < crypto_pwhash_STRBYTES;
}

/* The fail counter of addr: its own, a free one, or the one whose window started longest ago. */
static struct login_fails *fails_of(struct pirec_web *w, const char *addr)
{
  struct login_fails *oldest = &w->fails[0];
  for (int i = 0; i < LOGIN_ADDRS; i++) {
    if (strcmp(w->fails[i].addr, addr) == 0)
      return &w->fails[i];
    if (w->fails[i].window_ms < oldest->window_ms)
      oldest = &w->fails[i];
  }
  snprintf(oldest->addr, sizeof oldest->addr, "%s", addr);
  oldest->window_ms = 0;
  oldest->count = 0;
  return oldest;
}

/* Seconds addr must still wait, or 0 when it may try. */
static int wait_s(struct pirec_web *w, const char *addr)
{
  struct login_fails *f = fails_of(w, addr);
  uint64_t now = uv_now(w->loop);
  if (now - f->window_ms >= LOGIN_WINDOW_MS) {
    f->window_ms = now;
    f->count = 0;
  }
  return f->count >= LOGIN_FAILS ? (int)((f->window_ms + LOGIN_WINDOW_MS - now) / 1000) + 1 : 0;
}

/* A new session: 32 random bytes as hex in a free (or expired, or the oldest) slot. */
static const char *session_new(struct pirec_web *w)
{
  uint64_t now = uv_now(w->loop);
  struct login_session *s = &w->sessions[0];
  for (int i = 0; i < LOGIN_SESSIONS; i++)
    if (w->sessions[i].expires_ms < s->expires_ms)
      s = &w->sessions[i];
  unsigned char raw[32];
  randombytes_buf(raw, sizeof raw);
  sodium_bin2hex(s->id, sizeof s->id, raw, sizeof raw);
  s->expires_ms = now + LOGIN_SESSION_MS;
  return s->id;
}

int pirec__web_session_ok(struct pirec_web *w, const char *id)
{
  uint64_t now = uv_now(w->loop);
  int ok = 0;
  for (int i = 0; i < LOGIN_SESSIONS; i++)
    if (w->sessions[i].expires_ms > now && strlen(id) == sizeof w->sessions[i].id - 1)
      ok |= sodium_memcmp(w->sessions[i].id, id, sizeof w->sessions[i].id - 1) == 0;
  return ok;
}

static void session_end(struct pirec_web *w, const char *id)
{
  for (int i = 0; i < LOGIN_SESSIONS; i++)
    if (strcmp(w->sessions[i].id, id) == 0)
      memset(&w->sessions[i], 0, sizeof w->sessions[i]);
}

static void verify_work(uv_work_t *req)
{
  struct login_work *lw = container_of(req, struct login_work, req);
  lw->ok = crypto_pwhash_str_verify(lw->hash, lw->password, strlen(lw->password)) == 0;
  sodium_memzero(lw->password, sizeof lw->password);
}

static void verify_done(uv_work_t *req, int status)
{
  struct login_work *lw = container_of(req, struct login_work, req);
  struct pirec_web *w = lw->web;
  w->login_busy = 0;
  if (!lw->ok) {
    fails_of(w, lw->addr)->count++;
    pirec_log(PIREC_LOG_WARN, "pirec-web: a wrong password from %s", lw->addr);
  } else {
    fails_of(w, lw->addr)->count = 0; /* a typo before the right password costs nothing later */
  }
  struct http_conn *c = lw->conn;
  if (c) {
    c->login = NULL;
    if (lw->ok && status == 0) {
      snprintf(c->cookie, sizeof c->cookie,
               "pirec_session=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%llu%s", session_new(w),
               (unsigned long long)(LOGIN_SESSION_MS / 1000), w->s.tls_cert ? "; Secure" : "");
      json_t *o = json_pack("{s:s}", "reply", "logged_in");
      pirec__web_reply_json(c, 200, o);
      json_decref(o);
    } else {
      pirec__web_reply_error(c, 401, "wrong password");
    }
  }
  free(lw);
}

/* The password from the body {"password":"..."}, into out; 0, or -1 with the reply sent. */
static int body_password(struct http_conn *c, char *out, size_t cap)
{
  json_t *body = NULL;
  char err[200];
  if (pirec_jsonl_parse_object(c->body ? c->body : "", c->body_len, &body, err, sizeof err) <= 0) {
    pirec__web_reply_error(c, 400, c->body_len ? err : "send {\"password\":\"...\"}");
    return -1;
  }
  const char *p = json_string_value(json_object_get(body, "password"));
  int rc = p && strlen(p) < cap ? 0 : -1;
  if (rc == 0)
    snprintf(out, cap, "%s", p);
  else
    pirec__web_reply_error(c, 400, p ? "the password is too long" : "send {\"password\":\"...\"}");
  json_decref(body);
  return rc;
}

void pirec__web_login(struct http_conn *c)
{
  struct pirec_web *w = c->web;
  char addr[sizeof(((struct login_fails *)0)->addr)], retry[80];
  if (!w->s.password_hash) {
    pirec__web_reply_error(c, 404, "no password is set ([web] password_hash): use the token");
    return;
  }
  lws_get_peer_simple(c->wsi, addr, sizeof addr);
  int wait = wait_s(w, addr);
  if (wait > 0 || w->login_busy) {
    if (wait > 0)
      snprintf(retry, sizeof retry, "too many wrong passwords from this address: try again in %d s", wait);
    else
      snprintf(retry, sizeof retry, "another login is being checked: try again");
    pirec__web_reply_error(c, 429, retry);
    return;
  }
  struct login_work *lw = calloc(1, sizeof *lw);
  if (!lw) {
    pirec__web_reply_error(c, 500, "out of memory");
    return;
  }
  if (body_password(c, lw->password, sizeof lw->password) < 0) {
    free(lw);
    return;
  }
  lw->web = w;
  lw->conn = c;
  snprintf(lw->hash, sizeof lw->hash, "%s", w->s.password_hash);
  snprintf(lw->addr, sizeof lw->addr, "%s", addr);
  if (uv_queue_work(w->loop, &lw->req, verify_work, verify_done) < 0) {
    sodium_memzero(lw->password, sizeof lw->password);
    free(lw);
    pirec__web_reply_error(c, 500, "cannot check the password now");
    return;
  }
  w->login_busy = 1;
  c->login = lw;
}

void pirec__web_logout(struct http_conn *c, const char *session)
{
  if (session && *session)
    session_end(c->web, session);
  snprintf(c->cookie, sizeof c->cookie, "pirec_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
  json_t *o = json_pack("{s:s}", "reply", "logged_out");
  pirec__web_reply_json(c, 200, o);
  json_decref(o);
}

void pirec__web_login_detach(struct http_conn *c)
{
  if (c->login)
    c->login->conn = NULL;
  c->login = NULL;
}
