# Eye tracker tests (owner: eyetracker).
pirec_add_test(test-rtp SOURCES test-rtp.c LIBS pirec_rtp TIMEOUT 30)
pirec_add_test(test-gaze SOURCES test-gaze.c LIBS pirec_gaze pirec_io_csv pirec_libcsv TIMEOUT 30)
# End to end against a real pirec-eyesim process (needs ffmpeg/ffprobe with libx264).
if(TARGET pirec_eyetracker AND TARGET pirec-eyesim)
  # Labelled concurrency: the files are written by libuv's threadpool through io/sink, so CI also
  # runs them under TSan.
  pirec_add_test(test-eyetracker SOURCES test-eyetracker.c LIBS pirec_eyetracker pirec_eyesim
                 LABELS concurrency TIMEOUT 90)
  pirec_add_test(test-eyetracker-reconnect SOURCES test-eyetracker.c LIBS pirec_eyetracker pirec_eyesim
                 LABELS concurrency TIMEOUT 60)
  target_compile_definitions(test-eyetracker-reconnect PRIVATE EYETRACKER_RECONNECT=1)
  add_dependencies(test-eyetracker pirec-eyesim)
  add_dependencies(test-eyetracker-reconnect pirec-eyesim)
endif()
if(TARGET pirec-eyetracker AND TARGET test-eyetracker)
  add_dependencies(test-eyetracker pirec-eyetracker)
endif()
