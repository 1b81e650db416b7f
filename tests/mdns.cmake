# mDNS discovery of the Neon (owner: mdns). Runs a private D-Bus bus and avahi-daemon in its own
# network namespace; skips (77) without root or the packages avahi-daemon avahi-utils dbus.
# Labelled concurrency: avahi's thread hands the answer to the loop (uv_async), so CI runs it
# under TSan too.
pirec_add_test(test-mdns SOURCES test-mdns.c LIBS pirec_mdns pirec_eyetracker LABELS concurrency TIMEOUT 60)
# TSan: libdbus (uninstrumented) takes its global and per-connection locks in both orders while
# avahi_client_new/free open and close the bus connection, all on one thread; the reports name
# only libdbus frames. Suppressed for that library alone, not for pirec code.
file(WRITE ${CMAKE_CURRENT_BINARY_DIR}/mdns-tsan.supp "deadlock:libdbus-1.so.3\n")
set_property(TEST test-mdns PROPERTY SKIP_RETURN_CODE 77)
set_property(TEST test-mdns APPEND PROPERTY ENVIRONMENT
             "TSAN_OPTIONS=suppressions=${CMAKE_CURRENT_BINARY_DIR}/mdns-tsan.supp")
