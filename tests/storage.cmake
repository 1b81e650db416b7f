# Tests for io/crypt, the sink's encrypting transform and storage/ (docs/PRIVACY.md).
pirec_add_test(test-crypt SOURCES test-crypt.c LIBS pirec_io_crypt pirec_io_sink PkgConfig::SODIUM
               LABELS storage TIMEOUT 180)
# A whole encrypted session through the real programs (python3, like the fault suite).
find_program(PIREC_PYTHON3_STORAGE python3)
if(PIREC_PYTHON3_STORAGE)
  add_test(NAME storage-encrypted-session
           COMMAND ${PIREC_PYTHON3_STORAGE} ${CMAKE_CURRENT_LIST_DIR}/storage/test_encrypted_session.py)
  set_tests_properties(storage-encrypted-session PROPERTIES TIMEOUT 300 SKIP_RETURN_CODE 77 LABELS storage
    ENVIRONMENT "PIREC_BUILD_DIR=${CMAKE_BINARY_DIR};PIREC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
endif()
if(PIREC_PYTHON3_STORAGE)
  add_test(NAME storage-archive COMMAND ${PIREC_PYTHON3_STORAGE} ${CMAKE_CURRENT_LIST_DIR}/storage/test_archive.py)
  # concurrency: the archive hashes on a thread of its own (storage/hasher.c), so TSan runs it too
  set_tests_properties(storage-archive PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77 LABELS "storage;concurrency"
    ENVIRONMENT "PIREC_BUILD_DIR=${CMAKE_BINARY_DIR}")
endif()
