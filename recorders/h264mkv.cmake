# pirec_h264mkv: H.264 access units -> Matroska through libavformat into a pirec_sink, and the
# Annex B access-unit splitter (recorders/h264-mkv.h, internal). Shared by pirec_camera and
# pirec_eyetracker.
add_library(pirec_h264mkv STATIC ${CMAKE_CURRENT_LIST_DIR}/h264-mkv.c)
target_include_directories(pirec_h264mkv PUBLIC ${PIREC_INCLUDE_DIR} ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(pirec_h264mkv PUBLIC pirec_io_sink pirec_io_base
  PRIVATE PkgConfig::AVFORMAT PkgConfig::AVCODEC PkgConfig::AVUTIL)
