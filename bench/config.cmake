# bench-config: loop-thread cost of loading a 1 MB config asynchronously against parsing it on the
# loop, in the same run. Owner: config.
add_executable(bench-config bench-config.c)
target_include_directories(bench-config PRIVATE ${PIREC_INCLUDE_DIR})
target_link_libraries(bench-config PRIVATE pirec_config PkgConfig::UV)
