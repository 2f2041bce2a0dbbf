#!/usr/bin/env bash
# The uniffi bindings, tested from Python, Kotlin/JVM and (without a Swift compiler) Swift,
# against a real homeroom-relay process. Idempotent: installs what it needs on first run
#   - Python venv in .venv (pytest, tree-sitter + tree-sitter-swift for the Swift parse check)
#   - kotlinc 2.4.20 from npm (`kotlin-compiler`) in .tools/kotlin
#   - JNA from Debian (`libjna-java`, /usr/share/java/jna.jar) and a JDK (java, present here)
# Generated bindings go to bindings/ (gitignored), compiled Kotlin to build/ (gitignored).
#
# Usage: scripts/test-bindings.sh [python|kotlin|swift]...   (default: all three)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

KOTLIN_VERSION=2.4.20
KOTLIN_HOME="$ROOT/.tools/kotlin/node_modules/kotlin-compiler"
JNA_JAR=/usr/share/java/jna.jar
LIB="$ROOT/target/debug/libhomeroom_mobile.so"
BINDGEN="$ROOT/target/debug/uniffi-bindgen"
export HOMEROOM_RELAY_BIN="$ROOT/target/debug/homeroom-relay"

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(python kotlin swift)
for x in "${want[@]}"; do
    case "$x" in
        python | kotlin | swift) ;;
        *) echo "usage: $0 [python|kotlin|swift]...  (unknown: '$x')" >&2; exit 2 ;;
    esac
done
wants() { local x; for x in "${want[@]}"; do [ "$x" = "$1" ] && return 0; done; return 1; }
step() { printf '\n== %s\n' "$*"; }
t0=$(date +%s)

# --- tools (each only when missing) ------------------------------------------------------
if wants python || wants swift; then
    if [ ! -x .venv/bin/python ]; then
        step "creating .venv"
        python3 -m venv .venv
    fi
    if ! .venv/bin/python -c 'import pytest, tree_sitter, tree_sitter_swift' 2>/dev/null; then
        step "installing pytest, tree-sitter, tree-sitter-swift into .venv"
        .venv/bin/pip install -q 'pytest>=8' 'tree-sitter==0.26.1' 'tree-sitter-swift==0.7.4'
    fi
fi
if wants kotlin; then
    if [ ! -x "$KOTLIN_HOME/bin/kotlinc" ]; then
        step "installing kotlinc $KOTLIN_VERSION (npm kotlin-compiler) into .tools/kotlin"
        mkdir -p .tools/kotlin
        npm install --prefix .tools/kotlin --no-audit --no-fund "kotlin-compiler@$KOTLIN_VERSION"
    fi
    if [ ! -f "$JNA_JAR" ]; then
        step "installing libjna-java (Debian)"
        SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
        $SUDO apt-get install -y libjna-java || { $SUDO apt-get update && $SUDO apt-get install -y libjna-java; }
    fi
    command -v java >/dev/null || { echo "java (a JDK >= 11) is required for the Kotlin test" >&2; exit 1; }
fi

# --- build: the cdylib + bindgen and the relay, in one cargo invocation (one feature set) --
step "cargo build -p homeroom-mobile -p homeroom-relay"
cargo build -p homeroom-mobile -p homeroom-relay

# --- Python ----------------------------------------------------------------------------------
if wants python; then
    step "python: generate + pytest"
    rm -rf bindings/python && mkdir -p bindings/python
    "$BINDGEN" generate "$LIB" --language python --out-dir bindings/python --no-format >/dev/null
    cp "$LIB" bindings/python/   # the generated module loads the library from its own folder
    HOMEROOM_PY_BINDINGS="$ROOT/bindings/python" .venv/bin/python -m pytest -q -p no:cacheprovider \
        mobile-bindings/tests/python
fi

# --- Kotlin/JVM -----------------------------------------------------------------------------
if wants kotlin; then
    step "kotlin: generate + kotlinc + run on the JVM"
    rm -rf bindings/kotlin && mkdir -p bindings/kotlin build/kotlin
    "$BINDGEN" generate "$LIB" --language kotlin --out-dir bindings/kotlin --no-format >/dev/null
    KT_SRC=$(find bindings/kotlin -name '*.kt')
    JAR=build/kotlin/homeroom-test.jar
    # Recompile only when the generated bindings or the test changed (kotlinc takes ~20 s).
    STAMP=$(cat $KT_SRC mobile-bindings/tests/kotlin/*.kt | sha256sum | cut -c1-16)
    if [ ! -f "$JAR" ] || [ "$(cat build/kotlin/stamp 2>/dev/null)" != "$STAMP" ]; then
        rm -f "$JAR" build/kotlin/stamp
        "$KOTLIN_HOME/bin/kotlinc" $KT_SRC mobile-bindings/tests/kotlin/*.kt \
            -cp "$JNA_JAR" -d "$JAR" 2>&1 | grep -v '^warning:' || true
        [ -f "$JAR" ] || { echo "kotlinc failed" >&2; exit 1; }
        echo "$STAMP" > build/kotlin/stamp
    fi
    java -Djna.library.path="$ROOT/target/debug" \
        -cp "$JAR:$JNA_JAR:$KOTLIN_HOME/lib/kotlin-stdlib.jar" HomeroomTestKt
fi

# --- Swift (no Swift compiler here: parse, symbols, C ABI smoke test) ---------------------
if wants swift; then
    step "swift: generate + parse + symbols + C ABI smoke test"
    rm -rf bindings/swift && mkdir -p bindings/swift
    "$BINDGEN" generate "$LIB" --language swift --out-dir bindings/swift --no-format >/dev/null
    .venv/bin/python mobile-bindings/tests/swift/check_swift.py bindings/swift "$LIB"
fi

printf '\nbindings tests OK (%ss)\n' "$(( $(date +%s) - t0 ))"
