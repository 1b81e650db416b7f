# Eye tracker executables: the device simulator and the recorder.
add_executable(pirec-eyesim ${CMAKE_CURRENT_LIST_DIR}/pirec-eyesim.c)
target_link_libraries(pirec-eyesim PRIVATE pirec_eyesim pirec_io_sink pirec_io_base m)
install(TARGETS pirec-eyesim RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

add_executable(pirec-eyetracker ${CMAKE_CURRENT_LIST_DIR}/pirec-eyetracker.c)
target_link_libraries(pirec-eyetracker PRIVATE pirec_eyetracker pirec_recorder pirec_io_base
                      pirec_config)
install(TARGETS pirec-eyetracker RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# the recorder mains' shared run (apps/run.c): signals, duration, loop, exit status
target_link_libraries(pirec-eyesim PRIVATE pirec_app_run)
target_link_libraries(pirec-eyetracker PRIVATE pirec_app_run)
