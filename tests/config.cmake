# Tests for config/ (owner: config).
pirec_add_test(test-config SOURCES test-config.c LIBS pirec_config LABELS config TIMEOUT 60)
pirec_add_test(test-config-file SOURCES test-config-file.c LIBS pirec_config LABELS "config;concurrency" TIMEOUT 60)
pirec_add_test(test-config-async SOURCES test-config-async.c LIBS pirec_config LABELS "config;concurrency" TIMEOUT 60)
