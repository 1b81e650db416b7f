# The eye tracker (owner: eyetracker). See include/pirec/eyetracker.h, rtp.h, gaze.h and
# docs/EYETRACKER.md.
# pirec_rtp: RTP/RTCP/RTSP framing/SDP/H.264 payloading, pure code shared by client and simulator.
add_library(pirec_rtp STATIC ${CMAKE_CURRENT_LIST_DIR}/rtp.c)
target_include_directories(pirec_rtp PUBLIC ${PIREC_INCLUDE_DIR})
# pirec_gaze: the com.pupillabs.gaze1 payload and its CSV row.
add_library(pirec_gaze STATIC ${CMAKE_CURRENT_LIST_DIR}/gaze.c)
target_include_directories(pirec_gaze PUBLIC ${PIREC_INCLUDE_DIR})
target_link_libraries(pirec_gaze PUBLIC pirec_io_csv)
# pirec_mdns: discovery of the Neon ("PI monitor", _http._tcp) through the avahi daemon. avahi's
# client library is optional: without it the same API fails with -ENOTSUP and a clear message.
add_library(pirec_mdns STATIC ${CMAKE_CURRENT_LIST_DIR}/mdns.c)
target_include_directories(pirec_mdns PUBLIC ${PIREC_INCLUDE_DIR})
target_link_libraries(pirec_mdns PUBLIC PkgConfig::UV Threads::Threads)
pkg_check_modules(AVAHI_CLIENT IMPORTED_TARGET avahi-client)
if(AVAHI_CLIENT_FOUND)
  target_compile_definitions(pirec_mdns PRIVATE PIREC_HAVE_AVAHI=1)
  target_link_libraries(pirec_mdns PRIVATE PkgConfig::AVAHI_CLIENT)
else()
  message(STATUS "avahi-client not found: [eyetracker] address = auto will ask for an address")
endif()
# pirec_eyetracker: the realtime-API client on libuv (status over HTTP, RTSP with interleaved RTP).
if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/eyetracker.c)
  add_library(pirec_eyetracker STATIC ${CMAKE_CURRENT_LIST_DIR}/eyetracker.c)
  target_include_directories(pirec_eyetracker PUBLIC ${PIREC_INCLUDE_DIR})
  target_link_libraries(pirec_eyetracker PUBLIC pirec_rtp pirec_gaze pirec_io_sink pirec_io_csv
                        pirec_io_base pirec_h264mkv pirec_mdns PkgConfig::UV PkgConfig::JANSSON)
endif()
# pirec_eyesim: the device simulator (HTTP status, RTSP gaze and world streams, fault modes).
if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/eyetracker-sim.c)
  add_library(pirec_eyesim STATIC ${CMAKE_CURRENT_LIST_DIR}/eyetracker-sim.c)
  target_include_directories(pirec_eyesim PUBLIC ${PIREC_INCLUDE_DIR})
  target_link_libraries(pirec_eyesim PUBLIC pirec_rtp pirec_gaze pirec_io_sink pirec_io_base PkgConfig::UV m)
endif()
