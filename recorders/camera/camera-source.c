/* Camera sources behind one blocking interface: lavfi, V4L2 and any URL through libavformat /
 * libavdevice, and rpicam-vid (camera-rpicam.c). */

#include "camera-int.h"

#include "pirec/clock.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libavcodec/avcodec.h>
#include <libavcodec/bsf.h>
#include <libavdevice/avdevice.h>
#include <libavformat/avformat.h>
#include <libavutil/imgutils.h>
#include <libavutil/intreadwrite.h>
#include <libavutil/pixdesc.h>

struct pirec_camera_source {
  enum pirec_camera_kind kind;
  struct pirec_camera_format fmt;
  atomic_int interrupted;

  /* libavformat sources */
  AVFormatContext *ic;
  AVPacket *pkt;
  AVPacket *out_pkt; /* after the bitstream filter */
  AVBSFContext *bsf;
  int stream;
  AVRational tb;
  int pace;              /* sleep until each packet's time relative to the first */
  int64_t pace_first_ts; /* INT64_MIN until the first packet */
  int64_t pace_start_ns;
  uint8_t *header; /* Annex B parameter sets for elementary-stream files */
  size_t header_len;

  struct pirec__rpicam *rpicam;
};

void pirec_camera_settings_default(struct pirec_camera_settings *s)
{
  memset(s, 0, sizeof *s);
  snprintf(s->name, sizeof s->name, "camera0");
  s->kind = PIREC_CAMERA_LAVFI;
  snprintf(s->source, sizeof s->source, "testsrc2");
  s->width = 1280;
  s->height = 720;
  s->fps_num = 30;
  s->fps_den = 1;
  s->realtime = -1;
  snprintf(s->rpicam_program, sizeof s->rpicam_program, "rpicam-vid");
  snprintf(s->ffmpeg, sizeof s->ffmpeg, "ffmpeg");
  snprintf(s->preset, sizeof s->preset, "ultrafast");
  s->crf = 23;
  s->gop = 60;
  s->fsync_interval_ms = 1000;
  s->ring_ms = 1000;
  s->encoder_max_failures = 5;
  s->encoder_backoff_ms = 200;
}

static int set_text(char *dst, size_t cap, const char *text)
{
  size_t len = strlen(text);
  if (len == 0 || len >= cap)
    return -EINVAL;
  memcpy(dst, text, len + 1);
  return 0;
}

int pirec_camera_settings_set_source(struct pirec_camera_settings *s, const char *spec)
{
  if (!spec || !*spec)
    return -EINVAL;
  if (strncmp(spec, "lavfi:", 6) == 0) {
    s->kind = PIREC_CAMERA_LAVFI;
    return set_text(s->source, sizeof s->source, spec + 6);
  }
  if (strncmp(spec, "v4l2:", 5) == 0) {
    s->kind = PIREC_CAMERA_V4L2;
    return set_text(s->source, sizeof s->source, spec + 5);
  }
  if (strcmp(spec, "rpicam") == 0 || strncmp(spec, "rpicam:", 7) == 0) {
    s->kind = PIREC_CAMERA_RPICAM;
    return set_text(s->source, sizeof s->source, spec[6] == ':' && spec[7] ? spec + 7 : "0");
  }
  if (strncmp(spec, "url:", 4) == 0) {
    s->kind = PIREC_CAMERA_URL;
    return set_text(s->source, sizeof s->source, spec + 4);
  }
  if (strncmp(spec, "/dev/", 5) == 0) {
    s->kind = PIREC_CAMERA_V4L2;
    return set_text(s->source, sizeof s->source, spec);
  }
  s->kind = PIREC_CAMERA_URL;
  return set_text(s->source, sizeof s->source, spec);
}

int pirec__camera_source_is_network(const struct pirec_camera_settings *s)
{
  return s->kind == PIREC_CAMERA_URL && strstr(s->source, "://") != NULL &&
         strncmp(s->source, "file:", 5) != 0;
}

static int interrupt_cb(void *opaque)
{
  struct pirec_camera_source *src = opaque;
  return atomic_load_explicit(&src->interrupted, memory_order_relaxed);
}

static enum pirec_camera_codec map_codec(enum AVCodecID id)
{
  switch (id) {
  case AV_CODEC_ID_RAWVIDEO: return PIREC_CAMERA_CODEC_RAW;
  case AV_CODEC_ID_MJPEG: return PIREC_CAMERA_CODEC_MJPEG;
  case AV_CODEC_ID_H264: return PIREC_CAMERA_CODEC_H264;
  case AV_CODEC_ID_HEVC: return PIREC_CAMERA_CODEC_HEVC;
  default: return PIREC_CAMERA_CODEC_OTHER;
  }
}

/* H.264 and HEVC from MP4/MKV files carry length-prefixed NAL units and their parameter sets in
 * avcC/hvcC extradata; an elementary-stream file needs start codes and in-band parameter sets, which
 * the mp4toannexb filters provide. Streams that are Annex B already (RTSP, raw .h264) keep their
 * extradata as the file header. */
static int setup_annexb(struct pirec_camera_source *src, AVCodecParameters *par, char **message)
{
  const char *name = par->codec_id == AV_CODEC_ID_H264 ? "h264_mp4toannexb" : "hevc_mp4toannexb";
  int annexb = par->extradata_size >= 4 && (AV_RB24(par->extradata) == 1 || AV_RB32(par->extradata) == 1);
  int r;

  if (par->extradata_size == 0)
    return 0;
  if (annexb) {
    src->header = av_memdup(par->extradata, (size_t)par->extradata_size);
    if (!src->header)
      return AVERROR(ENOMEM);
    src->header_len = (size_t)par->extradata_size;
    return 0;
  }
  const AVBitStreamFilter *f = av_bsf_get_by_name(name);
  if (!f) {
    *message = pirec__camera_strdupf("bitstream filter '%s' is missing from this FFmpeg", name);
    return AVERROR_BSF_NOT_FOUND;
  }
  if ((r = av_bsf_alloc(f, &src->bsf)) < 0)
    return r;
  if ((r = avcodec_parameters_copy(src->bsf->par_in, par)) < 0)
    return r;
  src->bsf->time_base_in = src->tb;
  if ((r = av_bsf_init(src->bsf)) < 0) {
    *message = pirec__camera_strdupf("cannot start '%s': %s", name, av_err2str(r));
    return r;
  }
  src->out_pkt = av_packet_alloc();
  return src->out_pkt ? 0 : AVERROR(ENOMEM);
}

/* lavfi: the size and rate are appended to the source filter's own options ("testsrc2" or
 * "testsrc2=alpha=0"); lavfi renders as fast as it is read, a camera delivers at its rate. */
static const AVInputFormat *lavfi_input(const struct pirec_camera_settings *s,
                                        struct pirec_camera_source *src, char *url, size_t cap)
{
  snprintf(url, cap, "%s%csize=%dx%d:rate=%d/%d", s->source, strchr(s->source, '=') ? ':' : '=',
           s->width > 0 ? s->width : 1280, s->height > 0 ? s->height : 720, s->fps_num > 0 ? s->fps_num : 30,
           s->fps_num > 0 && s->fps_den > 0 ? s->fps_den : 1);
  src->pace = 1;
  return av_find_input_format("lavfi");
}

static const AVInputFormat *v4l2_input(const struct pirec_camera_settings *s, char *url, size_t cap,
                                       AVDictionary **opts)
{
  char text[64];

  snprintf(url, cap, "%s", s->source);
  if (s->width > 0 && s->height > 0) {
    snprintf(text, sizeof text, "%dx%d", s->width, s->height);
    av_dict_set(opts, "video_size", text, 0);
  }
  if (s->fps_num > 0) {
    snprintf(text, sizeof text, "%d/%d", s->fps_num, s->fps_den > 0 ? s->fps_den : 1);
    av_dict_set(opts, "framerate", text, 0);
  }
  if (s->input_format[0])
    av_dict_set(opts, "input_format", s->input_format, 0);
  /* "default" keeps the kernel's buffer timestamps (CLOCK_MONOTONIC) as the packets' pts. */
  av_dict_set(opts, "timestamps", "default", 0);
  return av_find_input_format("video4linux2");
}

/* A camera that stops sending must end the read (then the capture thread reconnects) rather than
 * block it forever; RTSP over TCP survives lossy networks where UDP drops whole frames. Options a
 * protocol does not know are ignored. */
static void url_input(const struct pirec_camera_settings *s, struct pirec_camera_source *src, char *url,
                      size_t cap, AVDictionary **opts)
{
  int network = pirec__camera_source_is_network(s);

  snprintf(url, cap, "%s", s->source);
  src->pace = s->realtime >= 0 ? s->realtime : !network;
  if (strncmp(s->source, "rtsp://", 7) == 0 || strncmp(s->source, "rtsps://", 8) == 0) {
    av_dict_set(opts, "rtsp_transport", "tcp", 0);
    av_dict_set(opts, "timeout", "5000000", 0);
  } else if (network) {
    av_dict_set(opts, "rw_timeout", "5000000", 0);
  }
}

/* Opens url and picks its video stream (src->stream); the others are discarded. */
static int lav_connect(const struct pirec_camera_settings *s, struct pirec_camera_source *src,
                       const char *url, const AVInputFormat *ifmt, AVDictionary **opts, char **message)
{
  int r;

  src->ic = avformat_alloc_context();
  if (!src->ic)
    return AVERROR(ENOMEM);
  src->ic->interrupt_callback.callback = interrupt_cb;
  src->ic->interrupt_callback.opaque = src;
  r = avformat_open_input(&src->ic, url, ifmt, opts);
  if (r < 0) {
    *message = pirec__camera_strdupf("cannot open '%s': %s", url, av_err2str(r));
    return r;
  }
  if (s->kind == PIREC_CAMERA_URL && (r = avformat_find_stream_info(src->ic, NULL)) < 0) {
    *message = pirec__camera_strdupf("cannot read stream info of '%s': %s", url, av_err2str(r));
    return r;
  }
  r = av_find_best_stream(src->ic, AVMEDIA_TYPE_VIDEO, -1, -1, NULL, 0);
  if (r < 0) {
    *message = pirec__camera_strdupf("no video stream in '%s'", url);
    return r;
  }
  src->stream = r;
  src->tb = src->ic->streams[r]->time_base;
  for (unsigned i = 0; i < src->ic->nb_streams; i++)
    if ((int)i != src->stream)
      src->ic->streams[i]->discard = AVDISCARD_ALL;
  return 0;
}

/* src->fmt from the chosen stream; raw frames need a known pixel format, H.264/HEVC the Annex B
 * set-up. */
static int lav_format(const struct pirec_camera_settings *s, struct pirec_camera_source *src, const char *url,
                      char **message)
{
  AVStream *st = src->ic->streams[src->stream];
  AVCodecParameters *par = st->codecpar;

  src->fmt.codec = map_codec(par->codec_id);
  src->fmt.width = par->width;
  src->fmt.height = par->height;
  src->fmt.has_device_ts = 1;
  AVRational rate = st->avg_frame_rate.num > 0 ? st->avg_frame_rate : st->r_frame_rate;
  if (s->fps_num > 0 && s->kind != PIREC_CAMERA_URL)
    rate = (AVRational){s->fps_num, s->fps_den > 0 ? s->fps_den : 1};
  src->fmt.fps_num = rate.num > 0 ? rate.num : 0;
  src->fmt.fps_den = rate.num > 0 ? rate.den : 1;
  if (src->fmt.codec == PIREC_CAMERA_CODEC_RAW) {
    const char *pix = av_get_pix_fmt_name((enum AVPixelFormat)par->format);
    int size = av_image_get_buffer_size((enum AVPixelFormat)par->format, par->width, par->height, 1);
    if (!pix || size <= 0) {
      *message = pirec__camera_strdupf("'%s' delivers raw video in an unknown pixel format", url);
      return AVERROR(EINVAL);
    }
    snprintf(src->fmt.pix_fmt, sizeof src->fmt.pix_fmt, "%s", pix);
    src->fmt.frame_bytes = (size_t)size;
  } else if (src->fmt.codec == PIREC_CAMERA_CODEC_H264 || src->fmt.codec == PIREC_CAMERA_CODEC_HEVC) {
    return setup_annexb(src, par, message);
  }
  return 0;
}

static int lav_open(const struct pirec_camera_settings *s, struct pirec_camera_source *src, char **message)
{
  const AVInputFormat *ifmt = NULL;
  AVDictionary *opts = NULL;
  char url[PIREC_CAMERA_PATH_MAX + 128];
  int r;

  avdevice_register_all();
  src->pace_first_ts = INT64_MIN;
  if (s->kind == PIREC_CAMERA_LAVFI)
    ifmt = lavfi_input(s, src, url, sizeof url);
  else if (s->kind == PIREC_CAMERA_V4L2)
    ifmt = v4l2_input(s, url, sizeof url, &opts);
  else
    url_input(s, src, url, sizeof url, &opts);
  if ((s->kind == PIREC_CAMERA_LAVFI || s->kind == PIREC_CAMERA_V4L2) && !ifmt) {
    *message = pirec__camera_strdupf("this FFmpeg has no '%s' input device",
                                     s->kind == PIREC_CAMERA_LAVFI ? "lavfi" : "video4linux2");
    av_dict_free(&opts);
    return AVERROR_DEMUXER_NOT_FOUND;
  }
  r = lav_connect(s, src, url, ifmt, &opts, message);
  av_dict_free(&opts);
  if (r < 0 || (r = lav_format(s, src, url, message)) < 0)
    return r;
  src->pkt = av_packet_alloc();
  return src->pkt ? 0 : AVERROR(ENOMEM);
}

/* Sleeps until mono deadline_ns in slices, so an interrupt is seen within 50 ms. */
static int sleep_until(struct pirec_camera_source *src, int64_t deadline_ns)
{
  for (;;) {
    if (atomic_load_explicit(&src->interrupted, memory_order_relaxed))
      return -EINTR;
    int64_t now = pirec_clock_mono_ns();
    if (now >= deadline_ns)
      return 0;
    int64_t until = deadline_ns - now > 50000000 ? now + 50000000 : deadline_ns;
    struct timespec ts = {.tv_sec = until / 1000000000, .tv_nsec = until % 1000000000};
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
  }
}

static int lav_read(struct pirec_camera_source *src, struct pirec_camera_frame *frame)
{
  AVPacket *pkt = src->pkt;
  int r;

  av_packet_unref(src->pkt);
  if (src->out_pkt)
    av_packet_unref(src->out_pkt);
  for (;;) {
    if (atomic_load_explicit(&src->interrupted, memory_order_relaxed))
      return -EINTR;
    if (src->bsf) {
      r = av_bsf_receive_packet(src->bsf, src->out_pkt);
      if (r == 0) {
        pkt = src->out_pkt;
        break;
      }
      if (r != AVERROR(EAGAIN))
        return r;
    }
    r = av_read_frame(src->ic, src->pkt);
    if (r == AVERROR_EXIT)
      return -EINTR;
    if (r < 0)
      return r;
    if (src->pkt->stream_index != src->stream) {
      av_packet_unref(src->pkt);
      continue;
    }
    if (!src->bsf) {
      pkt = src->pkt;
      break;
    }
    if ((r = av_bsf_send_packet(src->bsf, src->pkt)) < 0)
      return r;
  }

  int64_t ts = pkt->pts != AV_NOPTS_VALUE ? pkt->pts : pkt->dts;
  frame->device_ts_ns =
      ts != AV_NOPTS_VALUE ? av_rescale_q(ts, src->tb, (AVRational){1, 1000000000}) : INT64_MIN;
  if (src->pace && frame->device_ts_ns != INT64_MIN) {
    if (src->pace_first_ts == INT64_MIN) {
      src->pace_first_ts = frame->device_ts_ns;
      src->pace_start_ns = pirec_clock_mono_ns();
    } else if ((r = sleep_until(src, src->pace_start_ns + (frame->device_ts_ns - src->pace_first_ts))) < 0) {
      return r;
    }
  }
  frame->arrival_mono_ns = pirec_clock_mono_ns();
  frame->arrival_wall_ns = pirec_clock_wall_ns();
  frame->data = pkt->data;
  frame->len = (size_t)pkt->size;
  return 0;
}

int pirec_camera_source_open(const struct pirec_camera_settings *s, struct pirec_camera_source **out,
                             char **message)
{
  struct pirec_camera_source *src;
  char *msg = NULL;
  int r;

  *out = NULL;
  if (message)
    *message = NULL;
  src = calloc(1, sizeof *src);
  if (!src)
    return -ENOMEM;
  src->kind = s->kind;
  atomic_init(&src->interrupted, 0);
  if (s->kind == PIREC_CAMERA_RPICAM)
    r = pirec__rpicam_open(s, &src->rpicam, &src->fmt, &msg);
  else
    r = lav_open(s, src, &msg);
  if (r < 0) {
    if (message)
      *message = msg;
    else
      free(msg);
    pirec_camera_source_free(src);
    return r;
  }
  *out = src;
  return 0;
}

void pirec_camera_source_format(const struct pirec_camera_source *src, struct pirec_camera_format *fmt)
{
  *fmt = src->fmt;
}

int pirec_camera_source_read(struct pirec_camera_source *src, struct pirec_camera_frame *frame)
{
  if (src->rpicam)
    return pirec__rpicam_read(src->rpicam, frame, &src->interrupted);
  return lav_read(src, frame);
}

void pirec_camera_source_interrupt(struct pirec_camera_source *src)
{
  atomic_store(&src->interrupted, 1);
  if (src->rpicam)
    pirec__rpicam_interrupt(src->rpicam);
}

void pirec__camera_source_stream_header(const struct pirec_camera_source *src, const uint8_t **data,
                                        size_t *len)
{
  *data = src->header;
  *len = src->header_len;
}

void pirec_camera_source_free(struct pirec_camera_source *src)
{
  if (!src)
    return;
  if (src->rpicam)
    pirec__rpicam_free(src->rpicam);
  av_packet_free(&src->pkt);
  av_packet_free(&src->out_pkt);
  av_bsf_free(&src->bsf);
  if (src->ic)
    avformat_close_input(&src->ic);
  av_free(src->header);
  free(src);
}
