# The fault suite (issue 23): `ctest -L faults`. Each test is a python3 script in tests/faults/ run
# against the built programs, passing (0), failing (1) or skipping with a reason (77, e.g. no root
# for a tmpfs). Both fault helpers' tests live here: add one with pirec_add_fault_test(NAME SCRIPT
# [TIMEOUT s] [LABELS extra...]); the suite's helpers are in tests/faults/faultlib.py.
find_program(PIREC_PYTHON3 python3)
set(PIREC_FAULTS_DIR ${CMAKE_CURRENT_LIST_DIR})
function(pirec_add_fault_test name script)
  cmake_parse_arguments(F "" "TIMEOUT" "LABELS" ${ARGN})
  if(NOT F_TIMEOUT)
    set(F_TIMEOUT 120)
  endif()
  if(NOT PIREC_PYTHON3)
    message(WARNING "python3 not found: fault test ${name} is left out (scripts/install-deps --tests)")
    return()
  endif()
  set(labels faults ${F_LABELS})
  add_test(NAME ${name} COMMAND ${PIREC_PYTHON3} ${PIREC_FAULTS_DIR}/${script})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${F_TIMEOUT} SKIP_RETURN_CODE 77
    LABELS "${labels}"
    ENVIRONMENT "PIREC_BUILD_DIR=${CMAKE_BINARY_DIR};PIREC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endfunction()

pirec_add_fault_test(faults-sessions test_sessions.py TIMEOUT 90)
pirec_add_fault_test(faults-device-missing test_device_missing.py TIMEOUT 120)
pirec_add_fault_test(faults-efbig test_efbig.py TIMEOUT 120)
pirec_add_fault_test(faults-disk-full test_disk_full.py TIMEOUT 120)
pirec_add_fault_test(faults-rows-after-fault test_rows_after_fault.py TIMEOUT 150)
pirec_add_fault_test(faults-kill test_kill.py TIMEOUT 240)
pirec_add_fault_test(faults-disk-budget test_disk_budget.py TIMEOUT 240)
