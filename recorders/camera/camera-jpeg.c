/* JPEG pictures of raw frames: snapshots and previews (docs/CAMERA.md). Runs in libuv's threadpool,
 * never on the capture or loop threads. */
#include "camera-int.h"

#include <errno.h>
#include <string.h>

#include <libavcodec/avcodec.h>
#include <libavutil/imgutils.h>
#include <libavutil/pixdesc.h>

#include "jpeg.h"

/* The mjpeg encoder takes full-range 4:2:0/4:2:2 planar input; yuv420p and yuv422p are the cheap
 * cases (no conversion). */
static enum AVPixelFormat jpeg_pix(enum AVPixelFormat pix)
{
  return pix == AV_PIX_FMT_YUV420P   ? AV_PIX_FMT_YUVJ420P
         : pix == AV_PIX_FMT_YUV422P ? AV_PIX_FMT_YUVJ422P
                                     : AV_PIX_FMT_NONE;
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

int pirec__camera_jpeg(const struct pirec_camera_format *fmt, const uint8_t *data, size_t len, int max_width,
                       AVPacket *pkt, int *width, int *height)
{
  enum AVPixelFormat pix = av_get_pix_fmt(fmt->pix_fmt);
  if (jpeg_pix(pix) == AV_PIX_FMT_NONE && (max_width <= 0 || pix == AV_PIX_FMT_NONE))
    return -ENOTSUP;
  AVFrame *in = av_frame_alloc(), *out = av_frame_alloc(), *use = in;
  int r = in && out ? wrap(in, fmt, data, len) : AVERROR(ENOMEM);
  if (r >= 0 && max_width > 0 && (fmt->width > max_width || jpeg_pix(pix) == AV_PIX_FMT_NONE)) {
    r = pirec_jpeg_scale(in, fmt->width > max_width ? max_width : fmt->width, out);
    use = out;
  } else if (r >= 0) {
    in->format = jpeg_pix(pix); /* the same planes, tagged full range for the encoder */
  }
  if (r >= 0)
    r = pirec_jpeg_encode(use, pkt);
  if (r >= 0) {
    *width = use->width;
    *height = use->height;
  }
  av_frame_free(&in);
  av_frame_free(&out);
  return r;
}
