#ifndef PIREC_MEDIA_JPEG_H
#define PIREC_MEDIA_JPEG_H

/* JPEG pictures of decoded frames, for snapshots and previews (the camera's raw frames, the eye
 * tracker's decoded scene video): FFmpeg's mjpeg encoder and swscale. Pure CPU work that takes
 * milliseconds: callers run it in libuv's threadpool, never on a capture or loop thread. */

#include <libavcodec/avcodec.h>
#include <libavutil/frame.h>

/* src scaled to width w (height in proportion, even, at least 2) into dst, a new full-range 4:2:0
 * (AV_PIX_FMT_YUVJ420P) frame with its own buffers. Returns 0 or an AVERROR. */
int pirec_jpeg_scale(const AVFrame *src, int w, AVFrame *dst);

/* frame (full-range planar 4:2:0 or 4:2:2: YUVJ420P, YUVJ422P) as one JPEG in pkt (quality
 * qscale 4). Returns 0 or an AVERROR (AVERROR_ENCODER_NOT_FOUND without FFmpeg's mjpeg encoder). */
int pirec_jpeg_encode(AVFrame *frame, AVPacket *pkt);

#endif
