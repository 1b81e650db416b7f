# Eye tracker tests (owner: eyetracker).
# media/'s wire formats, one test per file (test-rtp also fuzzes every parser).
pirec_add_test(test-rtp SOURCES test-rtp.c LIBS pirec_media TIMEOUT 30)
pirec_add_test(test-rtsp SOURCES test-rtsp.c LIBS pirec_media TIMEOUT 30)
pirec_add_test(test-sdp SOURCES test-sdp.c LIBS pirec_media TIMEOUT 30)
pirec_add_test(test-h264 SOURCES test-h264.c LIBS pirec_media TIMEOUT 30)
pirec_add_test(test-gaze SOURCES test-gaze.c LIBS pirec_gaze pirec_io_csv pirec_libcsv TIMEOUT 30)
# End to end against a real pirec-eyesim process (needs ffmpeg/ffprobe with libx264).
# Labelled concurrency: the files are written by libuv's threadpool through io/sink, so CI also
# runs them under TSan.
pirec_add_test(test-eyetracker SOURCES test-eyetracker.c helpers/counters.c LIBS pirec_eyetracker pirec_eyesim pirec_libcsv
               LABELS concurrency TIMEOUT 90)
pirec_add_test(test-eyetracker-reconnect SOURCES test-eyetracker.c helpers/counters.c LIBS pirec_eyetracker pirec_eyesim
               pirec_libcsv m
               LABELS concurrency TIMEOUT 120)
target_compile_definitions(test-eyetracker-reconnect PRIVATE EYETRACKER_RECONNECT=1)
# The test hook pirec_eyetracker_hold_sinks lives in the client's internal header.
target_include_directories(test-eyetracker PRIVATE ${PROJECT_SOURCE_DIR}/recorders/eyetracker)
target_include_directories(test-eyetracker-reconnect PRIVATE ${PROJECT_SOURCE_DIR}/recorders/eyetracker)
# The issue's acceptance run: 60 s of 200 Hz gaze and scene video against the simulator, checked
# sample by sample (test_clean_run with PIREC_EYETRACKER_SECONDS=60). Not under TSan (too slow
# there to keep 200 Hz); under ASan with the rest of the suite.
add_test(NAME test-eyetracker-60s COMMAND test-eyetracker)
set_tests_properties(test-eyetracker-60s PROPERTIES TIMEOUT 240 LABELS "eyetracker;acceptance"
  ENVIRONMENT "PIREC_BUILD_DIR=${CMAKE_BINARY_DIR};PIREC_SOURCE_DIR=${CMAKE_SOURCE_DIR};PIREC_EYETRACKER_SECONDS=60;PIREC_TEST_FILTER=test_clean_run")
add_dependencies(test-eyetracker pirec-eyesim)
add_dependencies(test-eyetracker-reconnect pirec-eyesim)
add_dependencies(test-eyetracker pirec-eyetracker pirec-remux)
# Driving the device: events, its own recording, Time Echo (docs/EYETRACKER.md).
pirec_add_test(test-eyetracker-neon SOURCES test-eyetracker-neon.c LIBS pirec_eyetracker LABELS concurrency TIMEOUT 60)
add_dependencies(test-eyetracker-neon pirec-eyesim)
