# Tests for io/ring and io/sink (owner: ring).
pirec_add_test(test-ring SOURCES test-ring.c LIBS pirec_io_ring LABELS concurrency TIMEOUT 600)
pirec_add_test(test-sink SOURCES test-sink.c LIBS pirec_io_sink LABELS concurrency TIMEOUT 180)
pirec_add_test(test-rowgate SOURCES test-rowgate.c helpers/test-dir.c LIBS pirec_io_rowgate TIMEOUT 60)
# The write-path benchmark's smoke run: its exit status checks that drops equal refused pushes and
# that the CSV writer's rows equal fprintf's; its timings are not judged here.
if(PIREC_BUILD_BENCH)
  add_test(NAME bench-write-smoke COMMAND ${CMAKE_BINARY_DIR}/bench/bench-write --quick --json)
  set_tests_properties(bench-write-smoke PROPERTIES TIMEOUT 120 LABELS "bench")
endif()
