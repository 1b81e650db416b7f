# subprocess/: supervised child jobs and ffmpeg command lines, tested against real processes.
add_executable(job-child ${CMAKE_CURRENT_SOURCE_DIR}/helpers/job-child.c)

pirec_add_test(test-job SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test-job.c
               LIBS pirec_subprocess LABELS subprocess TIMEOUT 120)
target_compile_definitions(test-job PRIVATE JOB_CHILD="$<TARGET_FILE:job-child>")
add_dependencies(test-job job-child)

pirec_add_test(test-ffmpeg SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test-ffmpeg.c
               LIBS pirec_subprocess LABELS subprocess TIMEOUT 120)

# The same tests with every child made by the spawn helper (pirec/spawner.h), as in the programs.
add_test(NAME test-job-spawner COMMAND test-job)
set_tests_properties(test-job-spawner PROPERTIES TIMEOUT 120 LABELS subprocess
  ENVIRONMENT "PIREC_TEST_SPAWNER=1;PIREC_BUILD_DIR=${CMAKE_BINARY_DIR};PIREC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
