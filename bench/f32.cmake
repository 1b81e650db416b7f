# bench-f32: shortest float formatting against snprintf("%.9g"); --all proves round-trip over every
# binary32 bit pattern. Owner: io.
add_executable(bench-f32 bench-f32.c)
target_include_directories(bench-f32 PRIVATE ${PIREC_INCLUDE_DIR})
target_link_libraries(bench-f32 PRIVATE pirec_io_f32 m Threads::Threads)
