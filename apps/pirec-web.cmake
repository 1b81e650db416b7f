# pirec-web: the console in a browser (web/, docs/HTTP.md). Built when libwebsockets is found.
if(TARGET pirec_web)
  add_executable(pirec-web ${CMAKE_CURRENT_LIST_DIR}/pirec-web.c)
  target_include_directories(pirec-web PRIVATE ${PIREC_INCLUDE_DIR})
  target_link_libraries(pirec-web PRIVATE pirec_web pirec_config pirec_controller PkgConfig::UV)
  target_compile_definitions(pirec-web PRIVATE
    PIREC_WEB_STATIC_DIR="${CMAKE_INSTALL_FULL_DATADIR}/pirec/web"
    PIREC_WEB_SOURCE_STATIC_DIR="${PROJECT_SOURCE_DIR}/web/static"
    PIREC_WEB_BUILD_APPS_DIR="${CMAKE_CURRENT_BINARY_DIR}")
  install(TARGETS pirec-web RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
endif()
