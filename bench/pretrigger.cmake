# bench-pretrigger: a compressed camera's pre-trigger buffer, memory and cost vs N (issue 24).
add_executable(bench-pretrigger ${CMAKE_CURRENT_LIST_DIR}/bench-pretrigger.c)
target_include_directories(bench-pretrigger PRIVATE ${PIREC_INCLUDE_DIR})
target_link_libraries(bench-pretrigger PRIVATE pirec_camera pirec_io_looplag pirec_io_base PkgConfig::UV)
