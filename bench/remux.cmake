# bench-remux: remuxing a 10-minute 720p30 H.264 stream with its CSV, against
# "ffmpeg -i in.h264 -c copy out.mp4" in the same run. Owner: remux.
add_executable(bench-remux bench-remux.c ${CMAKE_SOURCE_DIR}/tests/helpers/remux-gen.c)
target_include_directories(bench-remux PRIVATE ${PIREC_INCLUDE_DIR} ${CMAKE_SOURCE_DIR}/tests)
target_link_libraries(bench-remux PRIVATE pirec_remux pirec_io_base)
target_compile_definitions(bench-remux PRIVATE PIREC_BUILD_DIR="${CMAKE_BINARY_DIR}")
