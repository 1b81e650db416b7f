pirec_add_test(test-remux SOURCES test-remux.c helpers/remux-gen.c
  LIBS pirec_remux LABELS remux TIMEOUT 120)
# Runs the real binary on sessions it builds with ffmpeg; children run under the same sanitizers.
pirec_add_test(test-remux-cli SOURCES test-remux-cli.c helpers/remux-gen.c
  LIBS PkgConfig::JANSSON LABELS remux TIMEOUT 120)
add_dependencies(test-remux-cli pirec-remux)
# The real pirec-camera, SIGKILLed mid-recording, then the real pirec-remux on its directory.
pirec_add_test(test-remux-camera SOURCES test-remux-camera.c helpers/remux-gen.c
  LIBS PkgConfig::JANSSON LABELS remux TIMEOUT 120)
add_dependencies(test-remux-camera pirec-remux pirec-camera)
# The acceptance length: every packet of a 60 s jittered recording (label "long").
add_test(NAME test-remux-60s COMMAND test-remux)
set_tests_properties(test-remux-60s PROPERTIES TIMEOUT 120 LABELS "remux;long"
  ENVIRONMENT "PIREC_REMUX_TEST_SECONDS=60;PIREC_BUILD_DIR=${CMAKE_BINARY_DIR};PIREC_SOURCE_DIR=${CMAKE_SOURCE_DIR}")
# The timing loader: issue 22's hand-edited files and a property test over random timing files.
pirec_add_test(test-remux-timing SOURCES test-remux-timing.c helpers/remux-gen.c
  LIBS pirec_remux LABELS remux TIMEOUT 120)
