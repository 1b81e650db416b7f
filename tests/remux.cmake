if(TARGET pirec_remux)
  pirec_add_test(test-remux SOURCES test-remux.c helpers/remux-gen.c
    LIBS pirec_remux LABELS remux TIMEOUT 120)
endif()
if(TARGET pirec-remux)
  # Runs the real binary on sessions it builds with ffmpeg; children run under the same sanitizers.
  pirec_add_test(test-remux-cli SOURCES test-remux-cli.c helpers/remux-gen.c
    LIBS PkgConfig::JANSSON LABELS remux TIMEOUT 120)
  add_dependencies(test-remux-cli pirec-remux)
endif()
