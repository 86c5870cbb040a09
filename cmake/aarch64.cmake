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

# Tests run under user-mode qemu; -L lets it find the target's dynamic loader and libc.
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /usr/aarch64-linux-gnu)
