add_executable(pirec-camera ${CMAKE_CURRENT_LIST_DIR}/pirec-camera.c)
target_include_directories(pirec-camera PRIVATE ${PIREC_INCLUDE_DIR})
target_link_libraries(pirec-camera PRIVATE pirec_app_run pirec_camera pirec_recorder pirec_io_base pirec_config)
install(TARGETS pirec-camera RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
