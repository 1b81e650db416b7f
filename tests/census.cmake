# The system-call census (issue 14): `pirec record` with every recorder (notes, a lavfi camera, the
# rpicam stand-in, the eye tracker against pirec-eyesim) through a whole scenario under strace -f;
# fails when a loop thread makes a call that can wait on the disk or another process. About 15 s.
# Needs strace (scripts/install-deps --tests); exits 77 (skipped) without it or without ptrace.
# The normal build only: a sanitizer's runtime makes system calls of its own (and its shadow memory
# makes every fork slow), which would be judged as the program's.
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND AND NOT PIREC_ASAN AND NOT PIREC_TSAN AND NOT PIREC_UBSAN AND TARGET pirec-camera AND TARGET pirec-eyetracker AND TARGET pirec-eyesim
   AND TARGET test-camera-fakerpicam)
  add_test(NAME test-census COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/census/census.py
           ${CMAKE_BINARY_DIR} --rpicam $<TARGET_FILE:test-camera-fakerpicam>)
  set_tests_properties(test-census PROPERTIES TIMEOUT 240 LABELS "census" SKIP_RETURN_CODE 77
    FAIL_REGULAR_EXPRESSION "census: FAIL")
  # It spawns about twenty processes under ptrace: alone, so a loaded machine does not time it out.
  set_tests_properties(test-census PROPERTIES RUN_SERIAL TRUE)
endif()
