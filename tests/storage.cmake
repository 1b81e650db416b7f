# Tests for io/crypt, the sink's encrypting transform and storage/ (docs/PRIVACY.md).
pirec_add_test(test-crypt SOURCES test-crypt.c LIBS pirec_io_crypt pirec_io_sink PkgConfig::SODIUM TIMEOUT 180)
