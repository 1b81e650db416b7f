# mDNS discovery of the Neon (owner: mdns). Runs a private D-Bus bus and avahi-daemon in its own
# network namespace; skips (77) without root or the packages avahi-daemon avahi-utils dbus.
# Labelled concurrency: avahi's thread hands the answer to the loop (uv_async), so CI runs it
# under TSan too.
if(TARGET pirec_mdns AND TARGET pirec_eyetracker)
  pirec_add_test(test-mdns SOURCES test-mdns.c LIBS pirec_mdns pirec_eyetracker LABELS concurrency TIMEOUT 60)
endif()
