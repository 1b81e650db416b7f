# Tests for io/fs, io/csv, io/looplag and io/clock (owner: iofs).
# fs and csv use libuv's threadpool (and csv the sink's producer/loop handoff): also run under TSan.
pirec_add_test(test-fs SOURCES test-fs.c LIBS pirec_io_fs LABELS concurrency TIMEOUT 120)
pirec_add_test(test-bytebuf SOURCES test-bytebuf.c LIBS pirec_io_bytebuf TIMEOUT 30)
pirec_add_test(test-backlog SOURCES test-backlog.c LIBS pirec_io_backlog TIMEOUT 30)
pirec_add_test(test-jsonl SOURCES test-jsonl.c LIBS pirec_io_jsonl TIMEOUT 30)
pirec_add_test(test-looplag SOURCES test-looplag.c LIBS pirec_io_looplag PkgConfig::JANSSON TIMEOUT 60)
# It measures scheduling lateness: run alone so the rest of a parallel ctest does not add to it.
set_tests_properties(test-looplag PROPERTIES RUN_SERIAL TRUE)
pirec_add_test(test-clock SOURCES test-clock.c LIBS pirec_io_base TIMEOUT 30)
pirec_add_test(test-error SOURCES test-error.c LIBS pirec_io_base PkgConfig::AVUTIL PkgConfig::UV TIMEOUT 30)
# io/csv pushes rows into io/sink, so its test exists only once both are in the tree.
pirec_add_test(test-csv SOURCES test-csv.c LIBS pirec_io_csv pirec_io_sink pirec_libcsv LABELS concurrency TIMEOUT 60)
# io/f32: round-trip of a 2^22 random sample (about 5 s); the exhaustive run is bench-f32 --all.
pirec_add_test(test-f32 SOURCES test-f32.c LIBS pirec_io_f32 pirec_io_csv pirec_io_sink pirec_libcsv TIMEOUT 120)
# io/log: a stderr pipe nobody reads must not stop the loop (its writer thread: also under TSan).
pirec_add_test(test-log SOURCES test-log.c LIBS pirec_io_base PkgConfig::UV LABELS concurrency TIMEOUT 60)
