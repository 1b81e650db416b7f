# Fleet control over MQTT (issue 18): a real mosquitto broker and `pirec record` controllers
# (tests/fleet/; skipped, exit 77, without mosquitto): fleet-mqtt (three devices: start, late join,
# trial, note, bad commands, the broker killed and back, stop), fleet-tls (TLS with a test CA,
# passwords and the ACL of docs/FLEET.md).
if(PIREC_PYTHON3)
  foreach(t mqtt tls)
    add_test(NAME fleet-${t} COMMAND ${PIREC_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/fleet/test_fleet$<$<STREQUAL:${t},tls>:_tls>.py)
    set_tests_properties(fleet-${t} PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77 LABELS "fleet;controller"
      ENVIRONMENT "PIREC_BUILD_DIR=${CMAKE_BINARY_DIR};PIREC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
  endforeach()
endif()
# controller/fleetconf.c on its own: URLs, names, command shapes, settings, clock state.
pirec_add_test(test-fleet SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-fleet.c LIBS pirec_controller LABELS "fleet;controller"
               TIMEOUT 30)
target_include_directories(test-fleet PRIVATE ${PROJECT_SOURCE_DIR}/controller)
