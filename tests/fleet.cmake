# Fleet control over MQTT (issue 18): a real mosquitto broker and three `pirec record` controllers
# (tests/fleet/test_fleet.py; skipped, exit 77, without mosquitto).
if(PIREC_PYTHON3)
  add_test(NAME fleet-mqtt COMMAND ${PIREC_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/fleet/test_fleet.py)
  set_tests_properties(fleet-mqtt PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77 LABELS "fleet;controller"
    ENVIRONMENT "PIREC_BUILD_DIR=${CMAKE_BINARY_DIR};PIREC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endif()
