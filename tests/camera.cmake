# Camera recorder (issue 6): real lavfi sources, the real ffmpeg encoder, ffprobe checks, and a
# stand-in process for rpicam-vid. The capture thread makes these concurrency tests (TSan in CI).
add_executable(test-camera-fakerpicam ${CMAKE_CURRENT_LIST_DIR}/test-camera-fakerpicam.c)
target_link_libraries(test-camera-fakerpicam PRIVATE PkgConfig::AVCODEC PkgConfig::AVUTIL)

pirec_add_test(test-camera SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-camera.c helpers/counters.c
               LIBS pirec_camera pirec_libcsv PkgConfig::AVCODEC PkgConfig::AVUTIL
               LABELS camera concurrency TIMEOUT 120)
target_compile_definitions(test-camera PRIVATE FAKE_RPICAM="$<TARGET_FILE:test-camera-fakerpicam>"
                           PIREC_CAMERA_BIN="$<TARGET_FILE:pirec-camera>")
add_dependencies(test-camera test-camera-fakerpicam pirec-camera)
# The splitter and the metadata line parser are internal (recorders/camera/camera-int.h).
target_include_directories(test-camera PRIVATE ${CMAKE_SOURCE_DIR}/recorders/camera)
# TSan: the rpicam source runs its child on a libuv loop of its own, made and closed on the capture
# thread at each (re)open. libuv closes fds with a raw close syscall TSan does not see (the
# distribution's libuv is not built with TSan), so when a threadpool thread later opens a file and
# gets the loop's old epoll fd number, TSan reports a "race" on the fd itself, with no memory
# shared. Suppressed for that fd creation alone.
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/camera-tsan.supp "race:epoll_create1\n")
set_property(TEST test-camera APPEND PROPERTY ENVIRONMENT
             "TSAN_OPTIONS=suppressions=${CMAKE_CURRENT_BINARY_DIR}/camera-tsan.supp")

# 10 s of 640x360, the ring held 2 s, the encoder SIGKILLed: about 25 s.
add_test(NAME test-camera-record COMMAND test-camera record)
set_tests_properties(test-camera-record PROPERTIES TIMEOUT 150 LABELS "camera;concurrency"
  ENVIRONMENT "PIREC_BUILD_DIR=${CMAKE_BINARY_DIR};PIREC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")

# Segments (issue 24): an H.264 clip and a raw source split into 1 s files, and a SIGKILL in the
# third segment: about 15 s.
add_test(NAME test-camera-segments COMMAND test-camera segments)
set_tests_properties(test-camera-segments PROPERTIES TIMEOUT 120 LABELS "camera;concurrency"
  ENVIRONMENT "PIREC_BUILD_DIR=${CMAKE_BINARY_DIR};PIREC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")

# The acceptance run, 60 s of 1280x720 at 30 fps: opt-in (PIREC_LONG_TESTS=1), label "long".
add_test(NAME test-camera-long COMMAND test-camera long)
set_tests_properties(test-camera-long PROPERTIES TIMEOUT 240 LABELS "camera;long" SKIP_RETURN_CODE 77
  ENVIRONMENT "PIREC_BUILD_DIR=${CMAKE_BINARY_DIR};PIREC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
