# Fault tests of issue 23 (items 2-4 and the power cut): SIGKILL mid-recording leaves every row's
# frame in its MKV. Label faults. (The sink's ENOSPC/EFBIG cuts are in test-sink, the eye
# tracker's restarts in test-eyetracker-reconnect.)
add_test(NAME faults-kill-frames COMMAND ${CMAKE_CURRENT_LIST_DIR}/kill-frames.sh ${CMAKE_BINARY_DIR} 3)
set_tests_properties(faults-kill-frames PROPERTIES TIMEOUT 240 LABELS "faults" SKIP_RETURN_CODE 77)
