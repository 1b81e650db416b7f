# Tests for io/ring and io/sink (owner: ring).
pirec_add_test(test-ring SOURCES test-ring.c LIBS pirec_io_ring LABELS concurrency TIMEOUT 600)
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test-sink.c)
  pirec_add_test(test-sink SOURCES test-sink.c LIBS pirec_io_sink LABELS concurrency TIMEOUT 180)
endif()
# The write-path benchmark's smoke run: its exit status checks that drops equal refused pushes and
# that the CSV writer's rows equal fprintf's; its timings are not judged here.
if(PIREC_BUILD_BENCH AND EXISTS ${CMAKE_SOURCE_DIR}/bench/bench-write.c)
  add_test(NAME bench-write-smoke COMMAND ${CMAKE_BINARY_DIR}/bench/bench-write --quick --json)
  set_tests_properties(bench-write-smoke PROPERTIES TIMEOUT 120 LABELS "bench")
endif()
