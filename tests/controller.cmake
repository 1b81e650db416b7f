# Recorder protocol, note taker, sessions and the controller (issue 5).
pirec_add_test(test-protocol SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-protocol.c
               LIBS pirec_recorder LABELS controller TIMEOUT 60)
