# Tests for gpio/ (owner: gpio). test-gpio runs everything above libgpiod through the pipe backend;
# test-gpio-hw runs the libgpiod backend on a gpio-sim chip (it skips, exit 77, where gpio-sim is not
# loaded; tests/hw/ boots a VM that has it).
pirec_add_test(test-gpio SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-gpio.c LIBS pirec_gpio
               LABELS concurrency gpio TIMEOUT 60)
pirec_add_test(test-gpio-hw SOURCES ${CMAKE_CURRENT_LIST_DIR}/test-gpio-hw.c LIBS pirec_gpio
               LABELS gpio hw TIMEOUT 120)
set_tests_properties(test-gpio-hw PROPERTIES SKIP_RETURN_CODE 77)
