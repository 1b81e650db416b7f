/* A stand-in for rpicam-vid (which needs a Raspberry Pi camera): takes the arguments pirec passes,
 * writes paced yuv420 or real MJPEG frames to stdout and one block per frame to the --metadata
 * file in rpicam-vid's txt format ("Name=value" lines, a blank line after each frame), flushing
 * both after each frame. SensorTimestamp is CLOCK_BOOTTIME ns, as libcamera's: the boot time at
 * start plus exactly i / framerate, so tests can check each frame's value.
 *
 * Extra options for tests: --frames N (then exit 0), --skip A,B,... (frame indices the "sensor"
 * loses: neither frame nor metadata, so the timestamps jump), --garbage (bytes that are not a JPEG
 * between images), --chunk N (write stdout in pieces of N bytes), --no-sensor-ts (blocks without a
 * SensorTimestamp line). */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libavcodec/avcodec.h>

static int write_all(int fd, const uint8_t *p, size_t n, size_t chunk)
{
  while (n > 0) {
    size_t k = chunk && chunk < n ? chunk : n;
    ssize_t w = write(fd, p, k);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int skipped(const char *list, int i)
{
  char buf[256];
  char *save = NULL;
  if (!list)
    return 0;
  snprintf(buf, sizeof buf, "%s", list);
  for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
    if (atoi(t) == i)
      return 1;
  return 0;
}

int main(int argc, char **argv)
{
  int w = 320, h = 240, frames = 1000000, mjpeg = 0, garbage = 0;
  double fps = 30;
  size_t chunk = 0;
  const char *meta_path = NULL, *meta_format = "json", *skip = NULL;
  int sensor_ts = 1;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
    if (!strcmp(a, "--width"))
      w = atoi(v), i++;
    else if (!strcmp(a, "--height"))
      h = atoi(v), i++;
    else if (!strcmp(a, "--framerate"))
      fps = atof(v), i++;
    else if (!strcmp(a, "--codec"))
      mjpeg = !strcmp(v, "mjpeg"), i++;
    else if (!strcmp(a, "--metadata"))
      meta_path = v, i++;
    else if (!strcmp(a, "--metadata-format"))
      meta_format = v, i++;
    else if (!strcmp(a, "--no-sensor-ts"))
      sensor_ts = 0;
    else if (!strcmp(a, "--frames"))
      frames = atoi(v), i++;
    else if (!strcmp(a, "--skip"))
      skip = v, i++;
    else if (!strcmp(a, "--chunk"))
      chunk = (size_t)atol(v), i++;
    else if (!strcmp(a, "--garbage"))
      garbage = 1;
    else if (!strcmp(a, "--camera") || !strcmp(a, "-t") || !strcmp(a, "-o"))
      i++;
  }
  if (meta_path && strcmp(meta_format, "txt") != 0) {
    fprintf(stderr, "fake rpicam: only --metadata-format txt is implemented, not '%s'\n", meta_format);
    return 1;
  }
  FILE *meta = meta_path ? fopen(meta_path, "w") : NULL;
  if (meta_path && !meta) {
    fprintf(stderr, "fake rpicam: cannot open '%s': %s\n", meta_path, strerror(errno));
    return 1;
  }

  size_t ysize = (size_t)w * (size_t)h, fsize = ysize * 3 / 2;
  uint8_t *frame = malloc(fsize);
  AVCodecContext *c = NULL;
  AVFrame *pic = NULL;
  AVPacket *pkt = NULL;
  if (mjpeg) {
    const AVCodec *codec = avcodec_find_encoder(AV_CODEC_ID_MJPEG);
    c = avcodec_alloc_context3(codec);
    c->width = w;
    c->height = h;
    c->pix_fmt = AV_PIX_FMT_YUVJ420P;
    c->time_base = (AVRational){1, 30};
    if (avcodec_open2(c, codec, NULL) < 0)
      return 1;
    pic = av_frame_alloc();
    pic->width = w;
    pic->height = h;
    pic->format = AV_PIX_FMT_YUVJ420P;
    av_frame_get_buffer(pic, 0);
    pkt = av_packet_alloc();
  }

  struct timespec t0, boot;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  clock_gettime(CLOCK_BOOTTIME, &boot);
  int64_t boot0 = (int64_t)boot.tv_sec * 1000000000 + boot.tv_nsec;
  for (int i = 0; i < frames; i++) {
    int64_t due_ns = (int64_t)(i * 1e9 / fps);
    struct timespec due = {.tv_sec = t0.tv_sec + (time_t)((t0.tv_nsec + due_ns) / 1000000000),
                           .tv_nsec = (t0.tv_nsec + due_ns) % 1000000000};
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &due, NULL);
    if (skipped(skip, i))
      continue;
    if (!mjpeg) {
      memset(frame, i & 0xFF, ysize);
      memset(frame + ysize, 128, fsize - ysize);
      memcpy(frame, &i, sizeof i);
      if (write_all(1, frame, fsize, chunk) < 0)
        return 0;
    } else {
      av_frame_make_writable(pic);
      for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
          pic->data[0][y * pic->linesize[0] + x] = (uint8_t)(x + y + i * 3);
      for (int y = 0; y < h / 2; y++) {
        memset(pic->data[1] + y * pic->linesize[1], 128, (size_t)w / 2);
        memset(pic->data[2] + y * pic->linesize[2], (uint8_t)(64 + i), (size_t)w / 2);
      }
      pic->pts = i;
      if (avcodec_send_frame(c, pic) < 0 || avcodec_receive_packet(c, pkt) < 0)
        return 1;
      /* An APP1 segment holding FF D9 right after SOI: a splitter that scans for EOI instead of
       * walking the segments would cut the image here. */
      static const uint8_t app1[] = {0xFF, 0xE1, 0x00, 0x08, 'p', 'i', 0xFF, 0xD9, 'r', 'e'};
      if (write_all(1, pkt->data, 2, chunk) < 0 || write_all(1, app1, sizeof app1, chunk) < 0 ||
          write_all(1, pkt->data + 2, (size_t)pkt->size - 2, chunk) < 0)
        return 0;
      av_packet_unref(pkt);
      if (garbage) {
        static const uint8_t junk[] = {0x00, 0xFF, 0x12, 0xFF, 0xD9, 0x55, 0xFF};
        if (write_all(1, junk, sizeof junk, chunk) < 0)
          return 0;
      }
    }
    if (meta) {
      fprintf(meta, "ExposureTime=%d\n", 10000 + i);
      if (sensor_ts)
        fprintf(meta, "SensorTimestamp=%lld\n",
                (long long)(boot0 + (int64_t)i * 1000000000 * 1000 / (int64_t)(fps * 1000)));
      fprintf(meta, "FrameDuration=%d\n\n", (int)(1e6 / fps));
      fflush(meta);
    }
  }
  if (meta)
    fclose(meta);
  avcodec_free_context(&c);
  av_frame_free(&pic);
  av_packet_free(&pkt);
  free(frame);
  return 0;
}
