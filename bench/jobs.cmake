# bench-jobs: supervised child jobs (spawn cost, stdin throughput, loop lag) against a plain
# blocking write loop into cat, measured in the same run. Owner: jobs.
add_executable(bench-jobs bench-jobs.c)
target_include_directories(bench-jobs PRIVATE ${PIREC_INCLUDE_DIR})
target_link_libraries(bench-jobs PRIVATE pirec_subprocess pirec_io_looplag pirec_io_base
                      PkgConfig::UV Threads::Threads)
