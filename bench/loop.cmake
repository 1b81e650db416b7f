# bench-loop: loop-thread time of trial starts and stops with a 500 MiB arena held, before and
# uv_spawn and the spawn helper, alternating in one process (issue 14).
add_executable(bench-loop ${CMAKE_CURRENT_LIST_DIR}/bench-loop.c)
target_include_directories(bench-loop PRIVATE ${PIREC_INCLUDE_DIR} ${CMAKE_SOURCE_DIR}/io ${CMAKE_SOURCE_DIR}/subprocess)
target_link_libraries(bench-loop PRIVATE pirec_camera pirec_eyetracker pirec_notes pirec_io_looplag pirec_io_fs
  pirec_io_ring pirec_io_base pirec_subprocess PkgConfig::UV)
