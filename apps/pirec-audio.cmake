add_executable(pirec-audio ${CMAKE_CURRENT_LIST_DIR}/pirec-audio.c)
target_include_directories(pirec-audio PRIVATE ${PIREC_INCLUDE_DIR})
target_link_libraries(pirec-audio PRIVATE pirec_app_run pirec_audio pirec_recorder pirec_io_base pirec_config)
install(TARGETS pirec-audio RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
