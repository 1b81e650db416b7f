# bench-remux: remuxing 10-minute recordings (raw H.264, the camera's MKV, the eye tracker's scene
# MKV) with their CSVs, against "ffmpeg -i IN -c copy out.mp4" and mkvmerge --timestamps in the
# same run. Owner: remux.
add_executable(bench-remux bench-remux.c ${CMAKE_SOURCE_DIR}/tests/helpers/remux-gen.c)
target_include_directories(bench-remux PRIVATE ${PIREC_INCLUDE_DIR} ${CMAKE_SOURCE_DIR}/tests ${CMAKE_SOURCE_DIR})
target_link_libraries(bench-remux PRIVATE pirec_remux pirec_media pirec_io_sink pirec_io_base PkgConfig::UV)
target_compile_definitions(bench-remux PRIVATE PIREC_BUILD_DIR="${CMAKE_BINARY_DIR}")
