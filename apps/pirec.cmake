# `pirec`: a thin dispatcher; each subcommand's code lives in its part (config/cli.c, controller/).
add_executable(pirec ${CMAKE_CURRENT_SOURCE_DIR}/pirec.c)
target_link_libraries(pirec PRIVATE pirec_config pirec_controller pirec_storage)
install(TARGETS pirec RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
