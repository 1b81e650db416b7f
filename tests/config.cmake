# Tests for config/ (owner: config).
pirec_add_test(test-config SOURCES test-config.c LIBS pirec_config LABELS config TIMEOUT 60)
# test-config checks the keys the product code reads against the schema, in the sources.
target_compile_definitions(test-config PRIVATE PIREC_SOURCE_DIR="${PROJECT_SOURCE_DIR}")
pirec_add_test(test-config-file SOURCES test-config-file.c helpers/test-dir.c LIBS pirec_config LABELS "config;concurrency" TIMEOUT 60)
pirec_add_test(test-config-async SOURCES test-config-async.c helpers/test-dir.c LIBS pirec_config LABELS "config;concurrency" TIMEOUT 60)
# The CLI test runs the real `pirec` binary.
pirec_add_test(test-config-cli SOURCES test-config-cli.c helpers/test-dir.c LIBS pirec_config LABELS config TIMEOUT 60)
target_compile_definitions(test-config-cli PRIVATE PIREC_BIN="$<TARGET_FILE:pirec>")
add_dependencies(test-config-cli pirec)
