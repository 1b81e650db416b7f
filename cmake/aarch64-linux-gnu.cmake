# Toolchain file: cross-build pirec for 64-bit Raspberry Pi OS / Debian arm64 on a Debian x86_64
# machine with multiarch (see scripts/ci-arm64):
#   dpkg --add-architecture arm64 && apt-get update
#   apt-get install gcc-aarch64-linux-gnu qemu-user-static libuv1-dev:arm64 libgpiod-dev:arm64 ...
# cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)

# Multiarch keeps arm64 libraries in /usr/lib/aarch64-linux-gnu and shares /usr/include; the
# cross toolchain's own sysroot bits live in /usr/aarch64-linux-gnu. Programs (pkg-config,
# ffmpeg for tests) are the build machine's.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# pkg-config must see only the arm64 .pc files (PKG_CONFIG_PATH, e.g. a libgpiod 2 prefix given
# with -DPIREC_GPIOD_PREFIX, is still searched first).
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")

# ctest (and try_run) start arm64 programs through qemu-user; -L / lets it find the multiarch
# loader /lib/ld-linux-aarch64.so.1. No binfmt_misc registration is needed.
find_program(PIREC_QEMU_AARCH64 NAMES qemu-aarch64-static qemu-aarch64)
if(PIREC_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${PIREC_QEMU_AARCH64} -L /)
endif()
