# bench-camera: the camera recorder end to end at 720p and 1080p (issue 6). Owner: camera.
add_executable(bench-camera ${CMAKE_CURRENT_LIST_DIR}/bench-camera.c)
target_include_directories(bench-camera PRIVATE ${PIREC_INCLUDE_DIR} ${CMAKE_SOURCE_DIR}/recorders/camera)
target_link_libraries(bench-camera PRIVATE pirec_camera pirec_io_base PkgConfig::UV PkgConfig::AVCODEC
  PkgConfig::AVUTIL)
