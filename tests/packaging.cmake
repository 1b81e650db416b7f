# Tests of what a package installs besides the programs (owner: packaging, issue 19): man pages
# agree with --help, bash completion, one version everywhere. Scripts, run on the built programs.
set(apps_dir ${CMAKE_BINARY_DIR}/apps)
set(all_apps pirec pirec-remux pirec-camera pirec-eyetracker pirec-notes pirec-eyesim)
find_package(Python3 COMPONENTS Interpreter)
if(Python3_Interpreter_FOUND)
  add_test(NAME packaging-man-help
           COMMAND ${Python3_EXECUTABLE} ${PROJECT_SOURCE_DIR}/tests/packaging/man-help.py ${PROJECT_SOURCE_DIR} ${apps_dir})
  set_tests_properties(packaging-man-help PROPERTIES LABELS packaging TIMEOUT 180)
endif()
add_test(NAME packaging-completion
         COMMAND bash ${PROJECT_SOURCE_DIR}/tests/packaging/completion.sh ${PROJECT_SOURCE_DIR} ${apps_dir})
add_test(NAME packaging-version
         COMMAND sh ${PROJECT_SOURCE_DIR}/tests/packaging/version.sh ${PROJECT_SOURCE_DIR} ${apps_dir} ${PROJECT_VERSION})
# completion runs every program several times: slow under ASan on a loaded machine (60 s timed out)
set_tests_properties(packaging-completion packaging-version PROPERTIES LABELS packaging TIMEOUT 240)
