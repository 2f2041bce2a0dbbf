#!/usr/bin/env bash
# Build homeroom_mobileFFI.xcframework and the Swift sources for the package in this folder.
# Needs macOS with Xcode (xcodebuild, lipo) and rustup: NOT runnable on the Linux CI here.
#   mobile-bindings/swift/build-xcframework.sh            # release
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

[ "$(uname)" = "Darwin" ] || { echo "build-xcframework.sh needs macOS + Xcode" >&2; exit 1; }
TARGETS=(aarch64-apple-ios aarch64-apple-ios-sim x86_64-apple-ios aarch64-apple-darwin x86_64-apple-darwin)
rustup target add "${TARGETS[@]}"

# 1. Static libraries, without the bindgen CLI. The crate's default crate types are lib+cdylib;
#    `cargo rustc --crate-type staticlib` adds the .a only for these builds.
for t in "${TARGETS[@]}"; do
    cargo rustc -p homeroom-mobile --lib --release --no-default-features --target "$t" \
        --crate-type staticlib
done

# 2. Swift bindings + C header + modulemap, from a host build (unstripped: the bindgen reads
#    the uniffi metadata from the library).
cargo build -p homeroom-mobile --release
GEN=$(mktemp -d)
./target/release/uniffi-bindgen generate target/release/libhomeroom_mobile.dylib \
    --language swift --out-dir "$GEN" --no-format
mkdir -p "$HERE/Sources/Homeroom"
cp "$GEN/homeroom_mobile.swift" "$HERE/Sources/Homeroom/"
HDRS=$(mktemp -d)
cp "$GEN/homeroom_mobileFFI.h" "$HDRS/"
cp "$GEN/homeroom_mobileFFI.modulemap" "$HDRS/module.modulemap"

# 3. Fat libraries for the simulator and macOS slices, then the XCFramework.
FAT=$(mktemp -d)
mkdir -p "$FAT/ios-sim" "$FAT/macos"
lipo -create target/aarch64-apple-ios-sim/release/libhomeroom_mobile.a \
             target/x86_64-apple-ios/release/libhomeroom_mobile.a \
     -output "$FAT/ios-sim/libhomeroom_mobile.a"
lipo -create target/aarch64-apple-darwin/release/libhomeroom_mobile.a \
             target/x86_64-apple-darwin/release/libhomeroom_mobile.a \
     -output "$FAT/macos/libhomeroom_mobile.a"
rm -rf "$HERE/homeroom_mobileFFI.xcframework"
xcodebuild -create-xcframework \
    -library target/aarch64-apple-ios/release/libhomeroom_mobile.a -headers "$HDRS" \
    -library "$FAT/ios-sim/libhomeroom_mobile.a" -headers "$HDRS" \
    -library "$FAT/macos/libhomeroom_mobile.a" -headers "$HDRS" \
    -output "$HERE/homeroom_mobileFFI.xcframework"
echo "built $HERE/homeroom_mobileFFI.xcframework and Sources/Homeroom/homeroom_mobile.swift"
echo "next: swift build && swift test (in $HERE), or add the package to an Xcode project"
