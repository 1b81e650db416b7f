/* JPEG pictures of raw frames: snapshots and previews (docs/CAMERA.md). Runs in libuv's threadpool,
 * never on the capture or loop threads. */
#include "camera-int.h"

#include <errno.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>

/* The mjpeg encoder takes full-range 4:2:0/4:2:2 planar input; yuv420p and yuv422p are the cheap
 * cases (no conversion). */
static enum AVPixelFormat jpeg_pix(enum AVPixelFormat pix)
{
  return pix == AV_PIX_FMT_YUV420P   ? AV_PIX_FMT_YUVJ420P
         : pix == AV_PIX_FMT_YUV422P ? AV_PIX_FMT_YUVJ422P
                                     : AV_PIX_FMT_NONE;
}

static int encode_frame(AVFrame *frame, AVPacket *pkt)
{
  const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
  if (!codec)
    return AVERROR_ENCODER_NOT_FOUND;
  AVCodecContext *c = avcodec_alloc_context3(codec);
  if (!c)
    return AVERROR(ENOMEM);
  c->width = frame->width;
  c->height = frame->height;
  c->pix_fmt = frame->format;
  c->time_base = (AVRational){1, 25};
  c->flags |= AV_CODEC_FLAG_QSCALE;
  c->global_quality = FF_QP2LAMBDA * 4;
  int r = avcodec_open2(c, codec, NULL);
  if (r >= 0 && (r = avcodec_send_frame(c, frame)) >= 0 && (r = avcodec_send_frame(c, NULL)) >= 0)
    r = avcodec_receive_packet(c, pkt);
  avcodec_free_context(&c);
  return r;
}

/* frame's planes point into data (len bytes) in the source's own format. */
static int wrap(AVFrame *frame, const struct pirec_camera_format *fmt, const uint8_t *data, size_t len)
{
  enum AVPixelFormat pix = av_get_pix_fmt(fmt->pix_fmt);
  frame->width = fmt->width;
  frame->height = fmt->height;
  frame->format = pix;
  int r = av_image_fill_arrays(frame->data, frame->linesize, data, pix, fmt->width, fmt->height, 1);
  return r < 0 ? r : (size_t)r > len ? AVERROR_INVALIDDATA : 0;
}

/* src scaled to width w (height in proportion, even) in a new 4:2:0 full-range frame. */
static int scale(const AVFrame *src, int w, AVFrame *dst)
{
  int h = (int)((int64_t)src->height * w / src->width) & ~1;
  dst->width = w;
  dst->height = h > 0 ? h : 2;
  dst->format = AV_PIX_FMT_YUVJ420P;
  int r = av_frame_get_buffer(dst, 0);
  if (r < 0)
    return r;
  struct SwsContext *sws = sws_getContext(src->width, src->height, src->format, dst->width, dst->height,
                                          AV_PIX_FMT_YUVJ420P, SWS_BILINEAR, NULL, NULL, NULL);
  if (!sws)
    return AVERROR(ENOMEM);
  sws_scale(sws, (const uint8_t *const *)src->data, src->linesize, 0, src->height, dst->data, dst->linesize);
  sws_freeContext(sws);
  return 0;
}

int pirec__camera_jpeg(const struct pirec_camera_format *fmt, const uint8_t *data, size_t len, int max_width,
                       AVPacket *pkt, int *width, int *height)
{
  enum AVPixelFormat pix = av_get_pix_fmt(fmt->pix_fmt);
  if (jpeg_pix(pix) == AV_PIX_FMT_NONE && (max_width <= 0 || pix == AV_PIX_FMT_NONE))
    return -ENOTSUP;
  AVFrame *in = av_frame_alloc(), *out = av_frame_alloc(), *use = in;
  int r = in && out ? wrap(in, fmt, data, len) : AVERROR(ENOMEM);
  if (r >= 0 && max_width > 0 && (fmt->width > max_width || jpeg_pix(pix) == AV_PIX_FMT_NONE)) {
    r = scale(in, fmt->width > max_width ? max_width : fmt->width, out);
    use = out;
  } else if (r >= 0) {
    in->format = jpeg_pix(pix); /* the same planes, tagged full range for the encoder */
  }
  if (r >= 0)
    r = encode_frame(use, pkt);
  if (r >= 0) {
    *width = use->width;
    *height = use->height;
  }
  av_frame_free(&in);
  av_frame_free(&out);
  return r;
}
