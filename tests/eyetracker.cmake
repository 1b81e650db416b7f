# Eye tracker tests (owner: eyetracker).
pirec_add_test(test-rtp SOURCES test-rtp.c LIBS pirec_rtp TIMEOUT 30)
pirec_add_test(test-gaze SOURCES test-gaze.c LIBS pirec_gaze pirec_io_csv pirec_libcsv TIMEOUT 30)
