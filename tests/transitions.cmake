# Transitions (issue 25): notes, GPIO edges and samples at every session start, trial change and
# stop, against the real `pirec record` (docs/OPERATIONS.md, "Transitions"). `ctest -L transitions`:
# test-transitions has one test per fault the issue found, test-transitions-race the race suite.
foreach(t test-transitions test-transitions-race)
  pirec_add_test(${t} SOURCES ${CMAKE_CURRENT_LIST_DIR}/${t}.c LIBS pirec_test_controller_util
                 LABELS transitions TIMEOUT 300)
  add_dependencies(${t} pirec pirec-notes pirec-camera)
  foreach(app pirec-eyetracker pirec-eyesim)
    if(TARGET ${app})
      add_dependencies(${t} ${app})
    endif()
  endforeach()
  if(SYSTEMD_FOUND)
    target_compile_definitions(${t} PRIVATE PIREC_TEST_EXPECT_SD_NOTIFY=1)
  endif()
endforeach()
