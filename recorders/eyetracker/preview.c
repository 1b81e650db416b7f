/* The scene preview (pirec_eyetracker_preview; docs/EYETRACKER.md, "Scene preview"): a JPEG of the
 * scene video's newest frame with the newest gaze point drawn on it, for pirec-web.
 *
 * Only while someone watches (a preview asked in the last PREVIEW_WATCH_MS) does the loop keep a
 * copy of each scene access unit, from a keyframe on, and only up to PREVIEW_MAX_BYTES (then it
 * waits for the next keyframe). Decoding them (libavcodec's H.264 decoder), scaling, drawing the gaze
 * and JPEG-encoding run in libuv's threadpool, one job at a time, never on the loop or a capture path;
 * each job decodes the units that came since the last one, at most one GOP's worth (a keyframe
 * drops what came before it). A picture is made at most every PREVIEW_MIN_MS: requests in between
 * get the last one. Nothing here touches the recording: the hooks only copy a unit or a gaze sample
 * the recording has already taken. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "eyetracker-int.h"
#include "jpeg.h"
#include "pirec/container_of.h"

#define PREVIEW_WATCH_MS  3000
#define PREVIEW_MIN_MS    250
#define PREVIEW_MAX_BYTES (8u << 20)
#define PREVIEW_WAITERS   8

struct et_au {
  struct et_au *next;
  int64_t mono_ns;
  size_t len;
  uint8_t data[];
};

struct preview_waiter {
  pirec_eyetracker_preview_cb cb;
  void *user;
};

struct pirec__et_preview {
  struct pirec_eyetracker *et;
  /* loop thread */
  uint64_t watch_until_ms;
  int have_key, params_seen, reset;
  struct et_au *head, *tail;
  size_t bytes;
  struct pirec_gaze_sample gaze;
  int have_gaze;
  struct preview_waiter waiters[PREVIEW_WAITERS];
  int nwait, busy;
  struct pirec_eyetracker_picture cached; /* the last picture (jpeg malloc'd), for requests within
                                             PREVIEW_MIN_MS */
  int cached_max;
  uint64_t cached_at_ms;
  /* a job: its input (set on the loop before it is queued), its output (read in its done callback) */
  uv_work_t work;
  struct et_au *batch;
  struct pirec_gaze_sample job_gaze;
  int job_have_gaze, job_max, job_reset;
  int result;
  struct pirec_eyetracker_picture out; /* jpeg malloc'd */
  /* the jobs' own (one job at a time) */
  AVCodecContext *dec;
  AVFrame *last;
  int64_t last_mono;
};

static void free_aus(struct et_au *au)
{
  while (au) {
    struct et_au *next = au->next;
    free(au);
    au = next;
  }
}

static void drop_list(struct pirec__et_preview *p)
{
  free_aus(p->head);
  p->head = p->tail = NULL;
  p->bytes = 0;
}

void pirec__et_preview_au(struct pirec_eyetracker *et, int keyframe, int params, const uint8_t *au,
                          size_t len, int64_t mono_ns)
{
  struct pirec__et_preview *p = et->preview;
  if (!p)
    return;
  if (uv_now(et->loop) >= p->watch_until_ms) {
    if (p->have_key || p->head) {
      drop_list(p);
      p->have_key = 0;
      p->reset = 1; /* the next watcher must not see a picture from before */
    }
    return;
  }
  if (keyframe && (params || p->params_seen)) {
    drop_list(p); /* this picture decodes without them */
    p->have_key = 1;
    p->params_seen |= params;
  }
  if (!p->have_key)
    return;
  struct et_au *a = p->bytes + len <= PREVIEW_MAX_BYTES ? malloc(sizeof *a + len) : NULL;
  if (!a) {
    drop_list(p); /* behind: start again at the next keyframe */
    p->have_key = 0;
    return;
  }
  a->next = NULL;
  a->mono_ns = mono_ns;
  a->len = len;
  memcpy(a->data, au, len);
  if (p->tail)
    p->tail->next = a;
  else
    p->head = a;
  p->tail = a;
  p->bytes += len;
}

void pirec__et_preview_gaze(struct pirec_eyetracker *et, const struct pirec_gaze_sample *g)
{
  struct pirec__et_preview *p = et->preview;
  if (p && uv_now(et->loop) < p->watch_until_ms) {
    p->gaze = *g;
    p->have_gaze = 1;
  }
}

/* ---- the job (threadpool) ---- */

static int open_decoder(struct pirec__et_preview *p)
{
  const AVCodec *codec = avcodec_find_decoder(AV_CODEC_ID_H264);
  if (!codec)
    return AVERROR_DECODER_NOT_FOUND;
  p->dec = avcodec_alloc_context3(codec);
  p->last = av_frame_alloc();
  if (!p->dec || !p->last)
    return AVERROR(ENOMEM);
  p->dec->thread_count = 1; /* it is a threadpool thread already */
  p->dec->flags |= AV_CODEC_FLAG_LOW_DELAY;
  return avcodec_open2(p->dec, codec, NULL);
}

/* The batch's units through the decoder; p->last ends as the newest picture out of it. */
static int decode_batch(struct pirec__et_preview *p)
{
  AVPacket *pkt = av_packet_alloc();
  AVFrame *f = av_frame_alloc();
  int r = pkt && f ? 0 : AVERROR(ENOMEM);
  for (struct et_au *a = p->batch; a && r >= 0; a = a->next) {
    pkt->data = a->data; /* not reference-counted: the decoder copies what it keeps */
    pkt->size = (int)a->len;
    if (avcodec_send_packet(p->dec, pkt) < 0)
      continue; /* a damaged unit: the next keyframe repairs the picture */
    while (avcodec_receive_frame(p->dec, f) >= 0) {
      av_frame_unref(p->last);
      av_frame_move_ref(p->last, f);
      p->last_mono = a->mono_ns;
    }
  }
  av_packet_free(&pkt);
  av_frame_free(&f);
  return r;
}

/* A ring around (cx, cy) with a dot in its middle, red (full-range Y 76, Cb 85, Cr 255). */
static void draw_gaze(AVFrame *fr, int cx, int cy)
{
  int r = fr->width / 24 > 8 ? fr->width / 24 : 8, t = r / 3; /* thick enough to survive 4:2:0 and JPEG */
  for (int y = cy - r; y <= cy + r; y++) {
    for (int x = cx - r; x <= cx + r; x++) {
      if (x < 0 || y < 0 || x >= fr->width || y >= fr->height)
        continue;
      int d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
      if (d2 > r * r || (d2 < (r - t) * (r - t) && d2 > t * t))
        continue;
      fr->data[0][y * fr->linesize[0] + x] = 76;
      fr->data[1][(y / 2) * fr->linesize[1] + x / 2] = 85;
      fr->data[2][(y / 2) * fr->linesize[2] + x / 2] = 255;
    }
  }
}

/* p->last scaled to the job's width, the gaze drawn, as a JPEG in p->jpeg. */
static int picture(struct pirec__et_preview *p)
{
  AVFrame *out = av_frame_alloc();
  AVPacket *pkt = av_packet_alloc();
  int w = p->job_max > 0 && p->job_max < p->last->width ? p->job_max : p->last->width;
  int r = out && pkt ? pirec_jpeg_scale(p->last, w, out) : AVERROR(ENOMEM);
  const struct pirec_gaze_sample *g = &p->job_gaze;
  p->out.gaze_x = p->out.gaze_y = -1;
  /* The gaze is in the scene camera's pixels (docs/EYETRACKER.md), the picture's frame scaled. */
  if (r >= 0 && p->job_have_gaze && g->x >= 0 && g->y >= 0 && g->x < p->last->width &&
      g->y < p->last->height) {
    p->out.gaze_x = (int)(g->x * out->width / p->last->width);
    p->out.gaze_y = (int)(g->y * out->height / p->last->height);
    draw_gaze(out, p->out.gaze_x, p->out.gaze_y);
  }
  if (r >= 0)
    r = pirec_jpeg_encode(out, pkt);
  uint8_t *jpeg = r >= 0 ? malloc((size_t)pkt->size) : NULL;
  if (jpeg) {
    memcpy(jpeg, pkt->data, (size_t)pkt->size);
    p->out.jpeg = jpeg;
    p->out.len = (size_t)pkt->size;
    p->out.width = out->width;
    p->out.height = out->height;
    p->out.mono_ns = p->last_mono;
  } else if (r >= 0) {
    r = AVERROR(ENOMEM);
  }
  av_frame_free(&out);
  av_packet_free(&pkt);
  return r;
}

static void job(uv_work_t *w)
{
  struct pirec__et_preview *p = container_of(w, struct pirec__et_preview, work);
  int r = p->dec ? 0 : open_decoder(p);
  if (r >= 0 && p->job_reset)
    av_frame_unref(p->last);
  if (r >= 0)
    r = decode_batch(p);
  free_aus(p->batch);
  p->batch = NULL;
  if (r >= 0 && !p->last->data[0])
    r = AVERROR(EAGAIN); /* no picture yet: the first keyframe since watching began is still to come */
  if (r >= 0)
    r = picture(p);
  p->result = r == AVERROR(EAGAIN) ? -EAGAIN : r < 0 ? -EIO : 0;
}

/* ---- the loop side ---- */

static void answer(struct pirec__et_preview *p, int err)
{
  struct preview_waiter w[PREVIEW_WAITERS];
  int n = p->nwait;
  memcpy(w, p->waiters, sizeof w);
  p->nwait = 0; /* a callback may ask again */
  for (int i = 0; i < n; i++)
    w[i].cb(p->et, err, err == 0 ? &p->cached : NULL, w[i].user);
}

static void job_done(uv_work_t *w, int status)
{
  struct pirec__et_preview *p = container_of(w, struct pirec__et_preview, work);
  struct pirec_eyetracker *et = p->et;
  p->busy = 0;
  int err = status < 0 ? -ECANCELED : p->result;
  if (err == 0) {
    free((uint8_t *)p->cached.jpeg);
    p->cached = p->out;
    p->cached_max = p->job_max;
    p->cached_at_ms = uv_now(et->loop);
    p->out.jpeg = NULL;
  }
  answer(p, err);
  et->pending--;
  pirec__et_maybe_closed(et);
}

static int start_job(struct pirec__et_preview *p, int max_width)
{
  p->batch = p->head;
  p->head = p->tail = NULL;
  p->bytes = 0;
  p->job_gaze = p->gaze;
  p->job_have_gaze = p->have_gaze;
  p->job_max = max_width;
  p->job_reset = p->reset;
  p->reset = 0;
  int err = uv_queue_work(p->et->loop, &p->work, job, job_done);
  if (err < 0) {
    free_aus(p->batch);
    p->batch = NULL;
    return err;
  }
  p->busy = 1;
  p->et->pending++; /* the eye tracker is not freed under a running job */
  return 0;
}

int pirec_eyetracker_preview(struct pirec_eyetracker *et, int max_width, pirec_eyetracker_preview_cb cb,
                             void *user)
{
  if (et->closing)
    return -ECANCELED;
  if (!et->preview && !(et->preview = calloc(1, sizeof *et->preview)))
    return -ENOMEM;
  struct pirec__et_preview *p = et->preview;
  uint64_t now = uv_now(et->loop);
  p->et = et;
  p->watch_until_ms = now + PREVIEW_WATCH_MS;
  if (p->cached.jpeg && now - p->cached_at_ms < PREVIEW_MIN_MS && p->cached_max == max_width && !p->reset) {
    cb(et, 0, &p->cached, user);
    return 0;
  }
  if (p->nwait == PREVIEW_WAITERS)
    return -EBUSY;
  if (!p->busy) {
    int err = start_job(p, max_width);
    if (err < 0)
      return err;
  }
  p->waiters[p->nwait++] = (struct preview_waiter){cb, user};
  return 0;
}

void pirec__et_preview_free(struct pirec_eyetracker *et)
{
  struct pirec__et_preview *p = et->preview;
  if (!p)
    return;
  drop_list(p);
  avcodec_free_context(&p->dec);
  av_frame_free(&p->last);
  free((uint8_t *)p->cached.jpeg);
  free((uint8_t *)p->out.jpeg);
  free(p);
  et->preview = NULL;
}
