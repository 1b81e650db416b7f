# `pirec`: a thin dispatcher; each subcommand's code lives in its module (config/cli.c, ...).
add_executable(pirec ${CMAKE_CURRENT_SOURCE_DIR}/pirec.c)
target_link_libraries(pirec PRIVATE pirec_config)
if(TARGET pirec_controller)
  target_link_libraries(pirec PRIVATE pirec_controller)
  target_compile_definitions(pirec PRIVATE PIREC_HAVE_CONTROLLER=1)
endif()
install(TARGETS pirec RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
