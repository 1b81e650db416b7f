# bench-gpio: loop-thread cost per GPIO edge through pirec_gpio (pipe backend), with and without
# software debounce, against a bare read of the same records, in one run. Owner: gpio.
add_executable(bench-gpio ${CMAKE_CURRENT_LIST_DIR}/bench-gpio.c)
target_include_directories(bench-gpio PRIVATE ${PIREC_INCLUDE_DIR})
target_link_libraries(bench-gpio PRIVATE pirec_gpio pirec_io_base PkgConfig::UV Threads::Threads)
