# bench-write: the write path (rings, sinks, CSV) against write(2) and fprintf. Owner: ring.
add_executable(bench-write bench-write.c)
target_include_directories(bench-write PRIVATE ${PIREC_INCLUDE_DIR})
target_link_libraries(bench-write PRIVATE pirec_io_csv pirec_io_sink pirec_io_ring pirec_io_base pirec_io_crypt
                      PkgConfig::UV Threads::Threads)
