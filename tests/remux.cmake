if(TARGET pirec_remux)
  pirec_add_test(test-remux SOURCES test-remux.c helpers/remux-gen.c
    LIBS pirec_remux LABELS remux TIMEOUT 120)
endif()
