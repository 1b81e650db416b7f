/* The HTTP routes (docs/HTTP.md): /api/... mirrors the control socket's commands, /files/... hands out
 * session files, everything else is the page's static files. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pirec/jsonl.h"
#include "web-int.h"

/* How long a command may take at the controller: start and stop wait for every recorder. */
#define STATUS_TIMEOUT_MS 5000
#define CMD_TIMEOUT_MS    70000

static void on_ctl_reply(json_t *reply, const char *error, void *user)
{
  struct http_conn *c = user;
  c->ticket = 0;
  if (!reply) {
    pirec__web_reply_error(c, 504, error);
    return;
  }
  const char *r = json_string_value(json_object_get(reply, "reply"));
  json_object_del(reply, "id"); /* ours, not the client's */
  pirec__web_reply_json(c, r && strcmp(r, "error") == 0 ? 409 : 200, reply);
}

/* The body's fields a command takes, copied into the control request. */
static int copy_fields(json_t *req, json_t *body, const char *const *fields, char *err, size_t errlen)
{
  for (int i = 0; fields[i]; i++) {
    json_t *v = json_object_get(body, fields[i]);
    if (!v)
      continue;
    if (!json_is_string(v)) {
      snprintf(err, errlen, "'%s' must be a string", fields[i]);
      return -1;
    }
    json_object_set(req, fields[i], v);
  }
  return 0;
}

static json_t *parse_body(struct http_conn *c, char *err, size_t errlen)
{
  if (!c->body_len)
    return json_object();
  json_t *body = NULL;
  int got = pirec_jsonl_parse_object(c->body, c->body_len, &body, err, errlen);
  if (got == 0)
    return json_object();
  return got > 0 ? body : NULL;
}

/* POST /api/CMD: the control socket command CMD with the body's fields. */
static void command(struct http_conn *c, const char *cmd)
{
  static const char *const label[] = {"label", NULL}, *const text[] = {"text", NULL}, *const none[] = {NULL},
                           *const session[] = {"session", NULL};
  static const struct {
    const char *cmd;
    const char *const *fields;
  } cmds[] = {{"start", label}, {"stop", none},   {"trial", label},
              {"note", text},   {"reload", none}, {"remux", session}};
  const char *const *fields = NULL;
  for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
    if (strcmp(cmd, cmds[i].cmd) == 0)
      fields = cmds[i].fields;
  if (!fields) {
    pirec__web_reply_error(c, 404, "no such command");
    return;
  }
  char err[300];
  json_t *body = parse_body(c, err, sizeof err);
  if (!body) {
    pirec__web_reply_error(c, 400, err);
    return;
  }
  json_t *req = json_pack("{s:s}", "cmd", cmd);
  if (copy_fields(req, body, fields, err, sizeof err) < 0) {
    json_decref(body);
    json_decref(req);
    pirec__web_reply_error(c, 400, err);
    return;
  }
  json_decref(body);
  if (fields[0] && !json_object_get(req, fields[0]) && strcmp(fields[0], "label") != 0) {
    json_decref(req);
    snprintf(err, sizeof err, "%s needs '%s'", cmd, fields[0]);
    pirec__web_reply_error(c, 400, err);
    return;
  }
  int64_t t = pirec_webctl_send(c->web->ctl, req, CMD_TIMEOUT_MS, on_ctl_reply, c);
  if (t < 0)
    pirec__web_reply_error(c, 503, "the controller is not running (pirec record)");
  else
    c->ticket = t;
}

static void status(struct http_conn *c)
{
  int64_t t =
      pirec_webctl_send(c->web->ctl, json_pack("{s:s}", "cmd", "status"), STATUS_TIMEOUT_MS, on_ctl_reply, c);
  if (t < 0)
    pirec__web_reply_error(c, 503, "the controller is not running (pirec record)");
  else
    c->ticket = t;
}

/* GET /api/preview?module=NAME[&max_width=N]: the controller's preview command. */
static void preview(struct http_conn *c)
{
  char buf[128], wbuf[32];
  const char *module = lws_get_urlarg_by_name(c->wsi, "module=", buf, sizeof buf);
  const char *width = lws_get_urlarg_by_name(c->wsi, "max_width=", wbuf, sizeof wbuf);
  if (!module) {
    pirec__web_reply_error(c, 400, "name the module: /api/preview?module=NAME");
    return;
  }
  json_t *req = json_pack("{s:s,s:s}", "cmd", "preview", "module", module);
  if (width)
    json_object_set_new(req, "max_width", json_integer(atoi(width)));
  int64_t t = pirec_webctl_send(c->web->ctl, req, STATUS_TIMEOUT_MS, on_ctl_reply, c);
  if (t < 0)
    pirec__web_reply_error(c, 503, "the controller is not running (pirec record)");
  else
    c->ticket = t;
}

/* A file lws reads and sends itself, a chunk per writeable callback. */
static int serve_file(struct http_conn *c, const char *root, const char *rel, int download)
{
  char path[PATH_MAX];
  int err = pirec__web_resolve(root, rel, path, sizeof path);
  if (err < 0) {
    pirec__web_reply_error(c, err == -ENOENT ? 404 : 403,
                           err == -ENOENT ? "no such file" : "refused: outside the served directory");
    return 0;
  }
  char extra[400] = "";
  const char *base = strrchr(path, '/') + 1;
  if (download)
    snprintf(extra, sizeof extra, "Content-Disposition: attachment; filename=\"%s\"\r\n", base);
  if (c->cookie[0])
    snprintf(extra + strlen(extra), sizeof extra - strlen(extra), "Set-Cookie: %s\r\n", c->cookie);
  c->routed = 1;
  int n =
      lws_serve_http_file(c->wsi, path, pirec__web_mime(path), extra[0] ? extra : NULL, (int)strlen(extra));
  if (n < 0 || (n > 0 && lws_http_transaction_completed(c->wsi)))
    return -1;
  return 0;
}

/* GET /api/auth: whether this browser must log in, and how (the page asks before anything else). */
static void auth(struct http_conn *c)
{
  struct pirec_web *w = c->web;
  int needed = (w->s.token && *w->s.token) || w->s.password_hash;
  json_t *o = json_pack("{s:s,s:b,s:b,s:b}", "reply", "auth", "needed", needed, "authorized",
                        pirec__web_authorized(w, c->wsi), "password", w->s.password_hash != NULL);
  pirec__web_reply_json(c, 200, o);
  json_decref(o);
}

static void logout(struct http_conn *c)
{
  char id[100];
  pirec__web_logout(c, pirec__web_cookie(c->wsi, "pirec_session", id, sizeof id) ? id : NULL);
}

/* Paths anyone may have, before the token or a login: the page's files and the login itself. */
static int open_path(const char *u, int post)
{
  if (post)
    return strcmp(u, "/api/login") == 0 || strcmp(u, "/api/logout") == 0;
  if (strncmp(u, "/api/", 5) == 0)
    return strcmp(u, "/api/auth") == 0;
  return strncmp(u, "/files/", 7) != 0;
}

static int route(struct http_conn *c)
{
  const char *u = c->uri;
  c->routed = 1;
  if (strncmp(u, "/api/", 5) == 0) {
    u += 5;
    if (strcmp(u, "status") == 0 && !c->post)
      status(c);
    else if (strcmp(u, "auth") == 0 && !c->post)
      auth(c);
    else if (strcmp(u, "login") == 0 && c->post)
      pirec__web_login(c);
    else if (strcmp(u, "logout") == 0 && c->post)
      logout(c);
    else if (strcmp(u, "preview") == 0 && !c->post)
      preview(c);
    else if (strcmp(u, "sessions") == 0 && !c->post) {
      if (pirec__web_list_sessions(c->web, c) < 0)
        pirec__web_reply_error(c, 500, "cannot list the sessions");
    } else if (c->post && !strchr(u, '/'))
      command(c, u);
    else
      pirec__web_reply_error(c, c->post ? 404 : 405, c->post ? "no such command" : "use POST");
    return 0;
  }
  if (c->post) {
    pirec__web_reply_error(c, 405, "POST goes to /api/COMMAND");
    return 0;
  }
  if (strncmp(u, "/files/", 7) == 0)
    return serve_file(c, c->web->s.data_dir, u + 7, 1);
  return serve_file(c, c->web->s.static_dir, strcmp(u, "/") == 0 ? "index.html" : u + 1, 0);
}

/* A new request: its URI, method, the checks, and its size. Returns -1 to drop the connection. */
static int begin(struct http_conn *c, struct lws *wsi, struct pirec_web *w, const char *in, size_t len)
{
  pirec__web_conn_reset(c);
  c->web = w;
  c->wsi = wsi;
  c->post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
  if (len >= sizeof c->uri) {
    c->routed = 1;
    pirec__web_reply_error(c, 414, "the address is too long");
    return 0;
  }
  snprintf(c->uri, sizeof c->uri, "%.*s", (int)len, in);
  const char *why = NULL;
  int refuse =
      pirec__web_guard(w, wsi, c->post, open_path(c->uri, c->post), &why, c->cookie, sizeof c->cookie);
  if (refuse) {
    c->routed = 1;
    w->refused++;
    pirec__web_reply_error(c, refuse, why);
    return 0;
  }
  char cl[32] = "";
  long long length = lws_hdr_copy(wsi, cl, sizeof cl, WSI_TOKEN_HTTP_CONTENT_LENGTH) > 0 ? atoll(cl) : 0;
  if (length < 0 || (unsigned long long)length > w->s.max_body) {
    c->routed = 1;
    pirec__web_reply_error(c, 413, "the request body is too large");
    return 0;
  }
  if (c->post && lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING) > 0) {
    c->routed = 1; /* a body of unknown size: its bound could only be checked as it arrives */
    pirec__web_reply_error(c, 411, "send the body with a Content-Length");
    return 0;
  }
  if (!c->post || length == 0)
    return route(c);
  return 0; /* the body follows */
}

static int body(struct http_conn *c, const char *in, size_t len)
{
  if (c->routed)
    return 0;
  if (c->body_len + len > c->web->s.max_body) {
    c->routed = 1;
    pirec__web_reply_error(c, 413, "the request body is too large");
    return 0;
  }
  char *b = realloc(c->body, c->body_len + len + 1);
  if (!b)
    return -1;
  memcpy(b + c->body_len, in, len);
  c->body = b;
  c->body_len += len;
  return 0;
}

int pirec__web_http_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
  struct http_conn *c = user;
  struct pirec_web *w = lws_context_user(lws_get_context(wsi));
  switch (reason) {
  case LWS_CALLBACK_HTTP: return begin(c, wsi, w, in, len);
  case LWS_CALLBACK_HTTP_BODY: return body(c, in, len);
  case LWS_CALLBACK_HTTP_BODY_COMPLETION: return c->routed ? 0 : route(c);
  case LWS_CALLBACK_HTTP_WRITEABLE: return pirec__web_reply_write(c);
  case LWS_CALLBACK_HTTP_FILE_COMPLETION:
    pirec__web_conn_reset(c);
    return lws_http_transaction_completed(wsi) ? -1 : 0;
  case LWS_CALLBACK_CLOSED_HTTP:
    if (c && c->web)
      pirec__web_conn_reset(c);
    return 0;
  default: return lws_callback_http_dummy(wsi, reason, user, in, len);
  }
}
