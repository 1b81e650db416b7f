# The shared H.264 -> Matroska writer (media/mkv.h) with the real ffmpeg/ffprobe and a real
# sink on the libuv loop (the sink writes on libuv's threadpool: labelled concurrency for TSan).
pirec_add_test(test-h264mkv SOURCES test-h264mkv.c helpers/remux-gen.c
  LIBS pirec_media pirec_io_sink PkgConfig::UV LABELS concurrency TIMEOUT 60)
