# make demo as a test: the README's first command records a session with every recorder this build
# has, remuxes it and prints where it is. A config key or option the demo script uses that the
# code no longer accepts fails here, not on a researcher's first try.
add_test(NAME test-demo COMMAND ${CMAKE_SOURCE_DIR}/scripts/demo ${CMAKE_BINARY_DIR})
set_tests_properties(test-demo PROPERTIES TIMEOUT 180 LABELS "demo"
  PASS_REGULAR_EXPRESSION "pirec demo: done; the session is in"
  FAIL_REGULAR_EXPRESSION "unknown key|error:")
