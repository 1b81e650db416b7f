# Recorder protocol, note taker, sessions and the controller (issue 5).
pirec_add_test(test-protocol SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-protocol.c
               LIBS pirec_recorder LABELS controller TIMEOUT 60)
add_library(pirec_test_controller_util STATIC ${CMAKE_CURRENT_LIST_DIR}/test-controller-util.c)
target_include_directories(pirec_test_controller_util PUBLIC ${PIREC_INCLUDE_DIR}
                           ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(pirec_test_controller_util PUBLIC PkgConfig::JANSSON pirec_io_csv)
pirec_add_test(test-notes SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-notes.c helpers/counters.c
               LIBS pirec_test_controller_util pirec_libcsv LABELS controller TIMEOUT 60)
add_dependencies(test-notes pirec-notes)
pirec_add_test(test-session SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-session.c
               LIBS pirec_session pirec_test_controller_util LABELS controller TIMEOUT 60)
pirec_add_test(test-controller-remux SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-controller-remux.c
               LIBS pirec_controller LABELS controller TIMEOUT 30)
target_include_directories(test-controller-remux PRIVATE ${PROJECT_SOURCE_DIR}/controller)
pirec_add_test(test-controller SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-controller.c
               LIBS pirec_test_controller_util LABELS controller TIMEOUT 120)
pirec_add_test(test-controller-flood SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-controller-flood.c
               LIBS pirec_test_controller_util LABELS controller TIMEOUT 120)
pirec_add_test(test-controller-lines SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-controller-lines.c
               LIBS pirec_test_controller_util LABELS controller TIMEOUT 120)
add_dependencies(test-controller-lines pirec pirec-notes)
# The disk budget's refused start (issue 24; the watchdog's stop is faults-disk-budget's, root).
pirec_add_test(test-controller-disk SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-controller-disk.c
               LIBS pirec_test_controller_util LABELS controller TIMEOUT 60)
add_dependencies(test-controller-disk pirec pirec-notes)
foreach(t test-controller test-controller-flood)
  add_dependencies(${t} pirec pirec-notes)
  if(SYSTEMD_FOUND) # pirec then speaks sd_notify, and the fixture insists on it
    target_compile_definitions(${t} PRIVATE PIREC_TEST_EXPECT_SD_NOTIFY=1)
  endif()
  add_dependencies(${t} pirec-camera)
endforeach()
# The systemd units: `systemd-analyze verify` on the build-tree copies (skipped without systemd).
add_test(NAME test-systemd-units
         COMMAND sh ${PROJECT_SOURCE_DIR}/systemd/verify-units.sh ${CMAKE_BINARY_DIR})
set_tests_properties(test-systemd-units PROPERTIES SKIP_RETURN_CODE 77 LABELS controller TIMEOUT 60)
# `cmake --install` keeps an existing /etc/pirec/pirec.conf (staged into a scratch DESTDIR).
add_test(NAME test-systemd-install
         COMMAND sh ${PROJECT_SOURCE_DIR}/systemd/verify-install.sh ${CMAKE_BINARY_DIR})
set_tests_properties(test-systemd-install PROPERTIES LABELS controller TIMEOUT 60)
