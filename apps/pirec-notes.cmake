add_executable(pirec-notes ${CMAKE_CURRENT_LIST_DIR}/pirec-notes.c)
target_include_directories(pirec-notes PRIVATE ${PIREC_INCLUDE_DIR})
target_link_libraries(pirec-notes PRIVATE pirec_app_run pirec_notes pirec_recorder pirec_io_base pirec_config)
install(TARGETS pirec-notes RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
