/* The WebSocket clients: each is sent the newest state as it changes (the controller's status once
 * a second while anyone watches, the controller going away and coming back). A client that does
 * not read holds at most one message: libwebsockets keeps what the socket did not take and asks
 * for the next write only once it is gone, and by then the client is sent only the newest. */
#include <stdlib.h>
#include <string.h>

#include "pirec/jsonl.h"
#include "web-int.h"

#define POLL_MS 1000
/* The largest message a client may send (it sends none today; a few small requests later). */
#define RX_MAX 4096

static void push_set(struct pirec_web *w, json_t *msg)
{
  size_t len = 0;
  char *text = pirec_jsonl_encode(msg, 0, &len);
  json_decref(msg);
  if (!text)
    return;
  char *buf = malloc(LWS_PRE + len);
  if (!buf) {
    free(text);
    return;
  }
  memcpy(buf + LWS_PRE, text, len - 1); /* without the '\n' */
  free(text);
  free(w->push);
  w->push = buf;
  w->push_len = len - 1;
  w->push_gen++;
  for (struct ws_conn *p = w->clients; p; p = p->next)
    lws_callback_on_writable(p->wsi);
}

void pirec__web_push_controller(struct pirec_web *w, int connected)
{
  push_set(w, json_pack("{s:s,s:b}", "type", "controller", "connected", connected));
}

static void on_status(json_t *reply, const char *error, void *user)
{
  struct pirec_web *w = user;
  w->status_ticket = 0;
  if (!reply)
    return;
  json_t *msg = json_pack("{s:s,s:b,s:O,s:{s:I,s:I}}", "type", "status", "connected", 1, "status", reply,
                          "disk", "free", (json_int_t)w->disk_free, "total", (json_int_t)w->disk_total);
  push_set(w, msg);
}

static void on_statfs(uv_fs_t *req)
{
  struct pirec_web *w = container_of(req, struct pirec_web, statfs);
  if (req->result == 0) {
    uv_statfs_t *st = req->ptr;
    w->disk_free = st->f_bavail * st->f_bsize;
    w->disk_total = st->f_blocks * st->f_bsize;
  }
  uv_fs_req_cleanup(req);
  w->statfs_busy = 0;
}

static void on_poll(uv_timer_t *t)
{
  struct pirec_web *w = t->data;
  if (!w->clients) {
    uv_timer_stop(t); /* nobody watches: the controller is not asked */
    return;
  }
  if (!w->statfs_busy && uv_fs_statfs(w->loop, &w->statfs, w->s.data_dir, on_statfs) == 0)
    w->statfs_busy = 1;
  if (w->status_ticket == 0 && pirec_webctl_connected(w->ctl)) {
    int64_t tk = pirec_webctl_send(w->ctl, json_pack("{s:s}", "cmd", "status"), 5000, on_status, w);
    w->status_ticket = tk > 0 ? tk : 0;
  }
}

void pirec__web_poll_start(struct pirec_web *w)
{
  if (!uv_is_active((uv_handle_t *)&w->poll))
    uv_timer_start(&w->poll, on_poll, 0, POLL_MS);
}

static int admit(struct pirec_web *w, struct lws *wsi)
{
  const char *why = NULL;
  char cookie[160];
  int refuse = pirec__web_guard(w, wsi, 0, &why, cookie, sizeof cookie);
  if (!refuse && w->nclients >= w->s.max_clients)
    refuse = 503;
  if (refuse)
    w->refused++;
  return refuse ? -1 : 0;
}

static void drop(struct pirec_web *w, struct ws_conn *c)
{
  for (struct ws_conn **pp = &w->clients; *pp; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      w->nclients--;
      return;
    }
  }
}

static int write_newest(struct ws_conn *c)
{
  struct pirec_web *w = c->web;
  if (!w->push || c->sent_gen == w->push_gen)
    return 0;
  c->sent_gen = w->push_gen;
  /* lws_write keeps what the socket does not take and sends it before the next writeable
   * callback: at most one message waits per client. */
  int n = lws_write(c->wsi, (unsigned char *)w->push + LWS_PRE, w->push_len, LWS_WRITE_TEXT);
  return n < (int)w->push_len ? -1 : 0;
}

int pirec__web_ws_cb(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
  struct ws_conn *c = user;
  struct pirec_web *w = lws_context_user(lws_get_context(wsi));
  switch (reason) {
  case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION: return admit(w, wsi);
  case LWS_CALLBACK_ESTABLISHED:
    *c = (struct ws_conn){w->clients, w, wsi, 0};
    w->clients = c;
    w->nclients++;
    if (!w->push)
      pirec__web_push_controller(w, pirec_webctl_connected(w->ctl));
    lws_callback_on_writable(wsi);
    pirec__web_poll_start(w);
    return 0;
  case LWS_CALLBACK_SERVER_WRITEABLE: return write_newest(c);
  case LWS_CALLBACK_RECEIVE:
    if (len > RX_MAX || lws_remaining_packet_payload(wsi) > 0 || !lws_is_final_fragment(wsi)) {
      lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, (unsigned char *)"message too large", 17);
      return -1;
    }
    return 0;
  case LWS_CALLBACK_CLOSED:
    if (c && c->web)
      drop(w, c);
    return 0;
  default: return 0;
  }
}
