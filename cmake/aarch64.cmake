# CMake toolchain for cross-building braid for 64-bit ARM Linux on a Debian x86-64 host
# with multiarch packages (see scripts/cross_aarch64.sh):
#   g++-aarch64-linux-gnu                 the cross compiler
#   libhwy-dev:arm64 libgtest-dev:arm64   target libraries in /usr/lib/aarch64-linux-gnu
#   libssl-dev:arm64                      (headers in /usr/include are shared)
#   qemu-user                             runs the binaries (ctest uses it as the emulator)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)

# Multiarch: find_library/find_package look in /usr/lib/aarch64-linux-gnu (and never in
# the host's /usr/lib/x86_64-linux-gnu); arch-independent files (/usr/include,
# /usr/share/cmake: nlohmann_json) are shared with the host.
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE BOTH)

# pkg-config (Highway) must read the arm64 .pc files, not the host's.
set(ENV{PKG_CONFIG_LIBDIR} "/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig")
set(ENV{PKG_CONFIG_PATH} "")

# Tests run under user-mode qemu. The arm64 loader and libc come from multiarch
# (libc6:arm64, pulled in by libhwy1:arm64) at their usual paths, so no -L prefix:
# with `-L /usr/aarch64-linux-gnu` (the cross toolchain's libc6-arm64-cross) qemu 7.2
# hangs the first time a program starts a thread.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64)
