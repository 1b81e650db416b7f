# Tests for io/ring and io/sink (owner: ring).
pirec_add_test(test-ring SOURCES test-ring.c LIBS pirec_io_ring LABELS concurrency TIMEOUT 120)
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/test-sink.c)
  pirec_add_test(test-sink SOURCES test-sink.c LIBS pirec_io_sink LABELS concurrency TIMEOUT 180)
endif()
