# pirec-web's HTTP API, WebSocket pushes, security and load against a real `pirec record` with a
# synthetic camera (tests/web/test_api.py; about 7 s). Needs python3; skipped (77) when pirec-web is
# not built (no libwebsockets-dev).
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND AND TARGET pirec-web AND TARGET pirec-camera)
  add_test(NAME test-web-api COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/web/test_api.py ${CMAKE_BINARY_DIR})
  set_tests_properties(test-web-api PROPERTIES TIMEOUT 180 LABELS "web" SKIP_RETURN_CODE 77
    FAIL_REGULAR_EXPRESSION "FAIL")
endif()
# The page in Debian's chromium, headless, driven by puppeteer-core (tests/web/browser.mjs; about
# 15 s). Skipped (77) without chromium or without tests/web/node_modules (`npm ci` there); CI's
# browser stage installs both (.ci/run).
find_program(NODE_EXECUTABLE node)
if(NODE_EXECUTABLE AND TARGET pirec-web AND TARGET pirec-camera AND TARGET pirec-eyesim)
  add_test(NAME test-web-browser COMMAND ${NODE_EXECUTABLE} ${CMAKE_CURRENT_LIST_DIR}/web/browser.mjs ${CMAKE_BINARY_DIR})
  set_tests_properties(test-web-browser PROPERTIES TIMEOUT 180 LABELS "web;browser" SKIP_RETURN_CODE 77
    FAIL_REGULAR_EXPRESSION "FAIL")
endif()
