# Recorder protocol (recorder side), sessions and the controller. See include/pirec/recorder.h,
# include/pirec/session.h and docs/PROTOCOL.md.
add_library(pirec_recorder STATIC ${CMAKE_CURRENT_LIST_DIR}/protocol.c)
target_include_directories(pirec_recorder PUBLIC ${PIREC_INCLUDE_DIR})
target_link_libraries(pirec_recorder PUBLIC PkgConfig::UV PkgConfig::JANSSON pirec_io_base)
if(TARGET pirec_io_looplag)
  target_link_libraries(pirec_recorder PUBLIC pirec_io_looplag)
  target_compile_definitions(pirec_recorder PRIVATE PIREC_HAVE_LOOPLAG=1)
endif()

# Session directory, events.csv, clocks.csv, session.json.
add_library(pirec_session STATIC ${CMAKE_CURRENT_LIST_DIR}/session.c)
target_include_directories(pirec_session PUBLIC ${PIREC_INCLUDE_DIR})
target_link_libraries(pirec_session PUBLIC PkgConfig::UV PkgConfig::JANSSON pirec_io_base
                      pirec_io_sink pirec_io_csv pirec_io_fs PRIVATE PkgConfig::AVUTIL)

# The controller behind `pirec record` and the control-socket clients (include/pirec/controller.h).
if(TARGET pirec_config AND TARGET pirec_subprocess)
  add_library(pirec_controller STATIC ${CMAKE_CURRENT_LIST_DIR}/controller.c
              ${CMAKE_CURRENT_LIST_DIR}/controller_client.c)
  target_include_directories(pirec_controller PUBLIC ${PIREC_INCLUDE_DIR}
                             PRIVATE ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(pirec_controller PUBLIC pirec_session pirec_config pirec_subprocess
                        pirec_io_looplag PkgConfig::UV PkgConfig::JANSSON)
  if(SYSTEMD_FOUND)
    target_link_libraries(pirec_controller PRIVATE PkgConfig::SYSTEMD)
    target_compile_definitions(pirec_controller PRIVATE PIREC_HAVE_SYSTEMD=1)
  endif()
endif()
if(TARGET pirec_controller AND TARGET pirec_gpio)
  target_link_libraries(pirec_controller PRIVATE pirec_gpio)
  target_compile_definitions(pirec_controller PRIVATE PIREC_HAVE_GPIO=1)
endif()
