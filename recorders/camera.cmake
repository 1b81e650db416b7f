# The camera recorder (include/pirec/camera.h); the executable is apps/pirec-camera.
add_library(pirec_camera STATIC
  ${CMAKE_CURRENT_LIST_DIR}/camera.c
  ${CMAKE_CURRENT_LIST_DIR}/camera-source.c
  ${CMAKE_CURRENT_LIST_DIR}/camera-rpicam.c)
target_include_directories(pirec_camera PUBLIC ${PIREC_INCLUDE_DIR})
target_link_libraries(pirec_camera PUBLIC PkgConfig::UV Threads::Threads pirec_io_base pirec_io_ring
  pirec_io_sink pirec_io_csv pirec_io_fs pirec_subprocess pirec_h264mkv
  PRIVATE PkgConfig::AVDEVICE PkgConfig::AVFORMAT PkgConfig::AVCODEC PkgConfig::AVUTIL)
