add_executable(pirec-remux ${CMAKE_CURRENT_LIST_DIR}/pirec-remux.c)
target_include_directories(pirec-remux PRIVATE ${PIREC_INCLUDE_DIR})
target_link_libraries(pirec-remux PRIVATE pirec_remux PkgConfig::UV)
install(TARGETS pirec-remux RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
