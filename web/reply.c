/* HTTP replies: built whole, then written a chunk at a time as the client takes them, so a slow
 * or stalled client holds one reply's memory and never the loop. */
#include <stdlib.h>
#include <string.h>

#include "pirec/jsonl.h"
#include "web-int.h"

/* The most one writeable callback sends. */
#define CHUNK 16384

void pirec__web_conn_reset(struct http_conn *c)
{
  if (c->ticket > 0 && c->web && c->web->ctl)
    pirec_webctl_cancel(c->web->ctl, c->ticket);
  c->ticket = 0;
  pirec__web_list_detach(c);
  pirec__web_login_detach(c);
  free(c->body);
  free(c->reply);
  c->body = c->reply = NULL;
  c->body_len = c->reply_len = c->reply_off = 0;
  c->headers_sent = c->routed = c->post = 0;
  c->cookie[0] = '\0';
}

void pirec__web_reply(struct http_conn *c, int status, const char *ctype, char *body, size_t len)
{
  char *buf = malloc(LWS_PRE + len + 1);
  if (buf && len)
    memcpy(buf + LWS_PRE, body, len);
  free(body);
  free(c->reply);
  c->reply = buf;
  c->reply_len = buf ? len : 0;
  c->reply_off = 0;
  c->status = buf ? status : 500;
  c->ctype = ctype;
  lws_callback_on_writable(c->wsi);
}

void pirec__web_reply_json(struct http_conn *c, int status, json_t *obj)
{
  size_t len = 0;
  char *text = pirec_jsonl_encode(obj, 0, &len);
  pirec__web_reply(c, text ? status : 500, "application/json", text, len);
}

void pirec__web_reply_error(struct http_conn *c, int status, const char *message)
{
  json_t *o = json_pack("{s:s,s:s}", "reply", "error", "message", message);
  pirec__web_reply_json(c, status, o);
  json_decref(o);
}

static int write_headers(struct http_conn *c)
{
  unsigned char head[LWS_PRE + 1024];
  unsigned char *start = head + LWS_PRE, *p = start, *end = head + sizeof head - 1;
  if (lws_add_http_common_headers(c->wsi, (unsigned)c->status, c->ctype, c->reply_len, &p, end) ||
      lws_add_http_header_by_name(
          c->wsi, (const unsigned char *)"cache-control:", (const unsigned char *)"no-store", 8, &p, end) ||
      lws_add_http_header_by_name(c->wsi, (const unsigned char *)"x-content-type-options:",
                                  (const unsigned char *)"nosniff", 7, &p, end))
    return -1;
  if (c->cookie[0] && lws_add_http_header_by_name(
                          c->wsi, (const unsigned char *)"set-cookie:", (const unsigned char *)c->cookie,
                          (int)strlen(c->cookie), &p, end))
    return -1;
  if (lws_finalize_write_http_header(c->wsi, start, &p, end))
    return -1;
  c->headers_sent = 1;
  return 0;
}

int pirec__web_reply_write(struct http_conn *c)
{
  if (!c->reply)
    return 0; /* not ready yet: the control reply or the listing is on its way */
  if (!c->headers_sent) {
    if (write_headers(c) < 0)
      return -1;
    if (c->reply_len) {
      lws_callback_on_writable(c->wsi);
      return 0;
    }
  }
  size_t left = c->reply_len - c->reply_off;
  size_t n = left > CHUNK ? CHUNK : left;
  int final = n == left;
  if (n && lws_write(c->wsi, (unsigned char *)c->reply + LWS_PRE + c->reply_off, n,
                     final ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) != (int)n)
    return -1;
  c->reply_off += n;
  if (!final) {
    lws_callback_on_writable(c->wsi);
    return 0;
  }
  pirec__web_conn_reset(c);
  return lws_http_transaction_completed(c->wsi) ? -1 : 0;
}
