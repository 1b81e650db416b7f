/* JPEG pictures of decoded frames (jpeg.h). */
#include "jpeg.h"

#include <libswscale/swscale.h>

int pirec_jpeg_encode(AVFrame *frame, AVPacket *pkt)
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

int pirec_jpeg_scale(const AVFrame *src, int w, AVFrame *dst)
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
