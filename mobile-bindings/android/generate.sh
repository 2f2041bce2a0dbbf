#!/usr/bin/env bash
# Fill the Gradle library module android/homeroom with the Homeroom bindings:
#   1. the Kotlin sources, generated from a host build of the library (runs anywhere cargo
#      runs: the uniffi metadata is the same for every target)
#        -> homeroom/src/main/java/uniffi/homeroom_mobile/homeroom_mobile.kt
#   2. the native library per Android ABI, cross-compiled with cargo-ndk, when cargo-ndk and
#      an NDK are installed (otherwise this step is skipped, saying so, and the script still
#      succeeds)
#        -> homeroom/src/main/jniLibs/{arm64-v8a,armeabi-v7a,x86_64}/libhomeroom_mobile.so
# Both outputs are generated (see .gitignore); re-run after changing mobile-bindings/src.
#
# Usage: mobile-bindings/android/generate.sh
# Environment: ANDROID_NDK_HOME (or ANDROID_NDK_ROOT, or an NDK under $ANDROID_HOME/ndk/),
#              ANDROID_MIN_SDK (default 24).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
MODULE="$HERE/homeroom"
cd "$ROOT"

# --- 1. Kotlin sources ------------------------------------------------------------------
echo "== host build of homeroom-mobile (library + uniffi-bindgen)"
cargo build -p homeroom-mobile
case "$(uname)" in
    Darwin) HOST_LIB="$ROOT/target/debug/libhomeroom_mobile.dylib" ;;
    *) HOST_LIB="$ROOT/target/debug/libhomeroom_mobile.so" ;;
esac
OUT="$MODULE/src/main/java"
rm -rf "$OUT/uniffi/homeroom_mobile"
mkdir -p "$OUT"
"$ROOT/target/debug/uniffi-bindgen" generate "$HOST_LIB" --language kotlin --out-dir "$OUT" \
    --no-format >/dev/null
KT="$OUT/uniffi/homeroom_mobile/homeroom_mobile.kt"
[ -f "$KT" ] || { echo "uniffi-bindgen did not write $KT" >&2; exit 1; }
echo "generated ${KT#"$ROOT"/} ($(wc -l <"$KT") lines)"

# --- 2. jniLibs (needs cargo-ndk and the Android NDK) ------------------------------------
NDK="${ANDROID_NDK_HOME:-${ANDROID_NDK_ROOT:-}}"
if [ -z "$NDK" ] && [ -n "${ANDROID_HOME:-}" ] && [ -d "$ANDROID_HOME/ndk" ]; then
    NDK=$(find "$ANDROID_HOME/ndk" -mindepth 1 -maxdepth 1 -type d | sort -V | tail -n 1)
fi
missing=()
cargo ndk --version >/dev/null 2>&1 || missing+=("cargo-ndk (cargo install cargo-ndk)")
[ -n "$NDK" ] && [ -d "$NDK" ] || missing+=("the Android NDK (set ANDROID_NDK_HOME)")
if [ ${#missing[@]} -gt 0 ]; then
    for m in "${missing[@]}"; do echo "skipping jniLibs: missing $m"; done
    echo "The Kotlin sources are in place; add homeroom/src/main/jniLibs/<abi>/libhomeroom_mobile.so"
    echo "(see README.md) before building an app."
    exit 0
fi
export ANDROID_NDK_HOME="$NDK"
echo "== cross-compiling for arm64-v8a, armeabi-v7a, x86_64 (NDK: $NDK)"
rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android
# Release, without the bindgen CLI (no clap etc. in the app's library).
cargo ndk -t arm64-v8a -t armeabi-v7a -t x86_64 -P "${ANDROID_MIN_SDK:-24}" \
    -o "$MODULE/src/main/jniLibs" \
    build --release -p homeroom-mobile --no-default-features --lib
find "$MODULE/src/main/jniLibs" -name 'libhomeroom_mobile.so' | sed "s|^$ROOT/||"
