"""Check the generated Swift bindings without a Swift compiler (none is installable here).

1. syntax: parse homeroom_mobile.swift with tree-sitter-swift; no error nodes (apart from
   nodes that are exactly one `@_documentation(...)` attribute, which that grammar does not
   know, and `{ () }` Void closures).
2. symbols: every function the FFI header declares is exported by the cdylib (`nm -D`).
3. C ABI: a C program, compiled with gcc against the generated header, runs the checks Swift
   runs at load time (contract version, every API checksum) and calls the real API through
   the ABI: open a device, read its id, found a class, get a typed error back.

Usage: check_swift.py BINDINGS_DIR LIBRARY
"""

import os
import re
import subprocess
import sys
import tempfile

import tree_sitter
import tree_sitter_swift


# `@_documentation(visibility: private)`: an attribute the grammar does not know. An error
# node is ignored only when its whole text is one such attribute (short, no nested parens).
DOC_ATTRIBUTE = re.compile(r"@_documentation\([^()\n]{0,60}\)")


def check_syntax(swift_file):
    src = open(swift_file, "rb").read()
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_swift.language()))
    tree = parser.parse(src)
    errors, ignored, void_closures = [], 0, 0
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        if node.is_error or node.is_missing:
            text = src[node.start_byte:node.end_byte].decode("utf-8", "replace")
            line = src[:node.start_byte].count(b"\n") + 1
            context = src.splitlines()[line - 1].decode("utf-8", "replace") if line - 1 < len(src.splitlines()) else ""
            # Only the attribute itself: an error node that merely sits on such a line, or
            # that swallowed more than the attribute, is a real error.
            if DOC_ATTRIBUTE.fullmatch(text.strip()):
                ignored += 1
                continue
            # `{ () }` (a closure returning Void) is valid Swift the grammar does not parse.
            if context.strip() == "let writeReturn = { () }":
                void_closures += 1
                continue
            errors.append(f"line {line}: {text[:80]!r}")
            continue
        stack.extend(node.children)
    print(f"[syntax] {os.path.basename(swift_file)}: {len(errors)} error(s) ({ignored} ignored @_documentation, {void_closures} ignored `{{ () }}` closures)")
    for e in errors[:20]:
        print("   ", e)
    return not errors


def header_functions(header):
    text = open(header).read()
    return sorted(set(re.findall(r"^\s*[A-Za-z_][\w \*]*?\b((?:uniffi|ffi)_\w+)\s*\(", text, re.M)))


def check_symbols(header, lib):
    declared = header_functions(header)
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True, capture_output=True, text=True).stdout
    exported = {line.split()[-1] for line in out.splitlines() if line.strip()}
    missing = [f for f in declared if f not in exported]
    print(f"[symbols] {os.path.basename(header)}: {len(declared)} declared, {len(missing)} missing from {os.path.basename(lib)}")
    for m in missing[:20]:
        print("    missing:", m)
    return bool(declared) and not missing


C_TEMPLATE = r"""
#define _Nullable
#define _Nonnull
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "homeroom_mobileFFI.h"

static int failures = 0;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); } } while (0)

static RustBuffer str_buf(const char *s) {
    RustCallStatus st = {0};
    ForeignBytes fb = { (int32_t)strlen(s), (const uint8_t *)s };
    RustBuffer b = ffi_homeroom_mobile_rustbuffer_from_bytes(fb, &st);
    if (st.code != 0) { fprintf(stderr, "rustbuffer_from_bytes failed\n"); exit(2); }
    return b;
}

static void free_buf(RustBuffer b) {
    RustCallStatus st = {0};
    ffi_homeroom_mobile_rustbuffer_free(b, &st);
}

/* A String return value is the raw UTF-8 bytes. */
static char *buf_str(RustBuffer b) {
    char *s = malloc(b.len + 1);
    memcpy(s, b.data, b.len);
    s[b.len] = 0;
    free_buf(b);
    return s;
}

/* A method call consumes one reference to the object (as Swift's uniffiCloneHandle() does). */
static uint64_t cloned(uint64_t handle) {
    RustCallStatus st = {0};
    uint64_t h = uniffi_homeroom_mobile_fn_clone_homeroom(handle, &st);
    if (st.code != 0) { fprintf(stderr, "clone failed\n"); exit(2); }
    return h;
}

static int32_t be32(const uint8_t *p) { return (int32_t)((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]); }

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: smoke DATA_DIR\n"); return 2; }
    uint32_t v = ffi_homeroom_mobile_uniffi_contract_version();
    CHECK(v == CONTRACT_VERSION, "contract version %u, bindings expect %u", v, CONTRACT_VERSION);
    int checksums = 0;
    CHECKSUMS
    RustCallStatus st = {0};
    uint64_t hr = uniffi_homeroom_mobile_fn_constructor_homeroom_open(str_buf(argv[1]), &st);
    CHECK(st.code == 0 && hr != 0, "Homeroom.open failed (code %d)", st.code);

    st = (RustCallStatus){0};
    char *id = buf_str(uniffi_homeroom_mobile_fn_method_homeroom_device_id(cloned(hr), &st));
    CHECK(st.code == 0 && strlen(id) == 64, "device_id() = %s", id);

    st = (RustCallStatus){0};
    char *class_id = buf_str(uniffi_homeroom_mobile_fn_method_homeroom_create_class(cloned(hr), str_buf("Class 1A"), str_buf("Ms C"), &st));
    CHECK(st.code == 0 && strlen(class_id) == 32, "create_class() = %s", class_id);

    /* A typed error: classroom("bad") -> ApiError.InvalidInput { field: "class_id", .. }.
       Error buffer: i32 variant index (1-based, big-endian), then each field. */
    st = (RustCallStatus){0};
    uniffi_homeroom_mobile_fn_method_homeroom_classroom(cloned(hr), str_buf("bad"), &st);
    CHECK(st.code == 1, "classroom(\"bad\") status %d, expected 1 (error)", st.code);
    if (st.code == 1 && st.errorBuf.len >= 8) {
        int32_t variant = be32(st.errorBuf.data);
        int32_t flen = be32(st.errorBuf.data + 4);
        char field[64] = {0};
        if (flen > 0 && flen < 64 && (uint64_t)(8 + flen) <= st.errorBuf.len) memcpy(field, st.errorBuf.data + 8, flen);
        CHECK(variant == INVALID_INPUT_INDEX, "error variant %d, expected InvalidInput (%d)", variant, INVALID_INPUT_INDEX);
        CHECK(strcmp(field, "class_id") == 0, "InvalidInput.field = %s", field);
        free_buf(st.errorBuf);
    }

    st = (RustCallStatus){0};
    uniffi_homeroom_mobile_fn_free_homeroom(hr, &st);
    CHECK(st.code == 0, "free failed");
    if (failures) return 1;
    printf("[c-smoke] contract v%u, %d checksums OK, device %.8s…, class %.8s…, InvalidInput{class_id} OK\n", v, checksums, id, class_id);
    return 0;
}
"""


def check_c_abi(bindings, lib):
    swift = open(os.path.join(bindings, "homeroom_mobile.swift")).read()
    m = re.search(r"let bindings_contract_version = (\d+)", swift)
    if not m:
        print("[c-smoke] no contract version in the Swift file")
        return False
    pairs = re.findall(r"if \((uniffi_homeroom_mobile_checksum_\w+)\(\) != (\d+)\)", swift)
    if not pairs:
        print("[c-smoke] no checksums in the Swift file")
        return False
    checks = "\n    ".join(
        f'CHECK({fn}() == {val}, "checksum {fn}"); checksums++;' for fn, val in pairs
    )
    # The variant index of ApiError.InvalidInput as the Swift reader decodes it.
    enum = re.search(r"\benum ApiError\b.*?\n}\n", swift, re.S)
    names = re.findall(r"^\s*case (\w+)\(", enum.group(0), re.M) if enum else []
    if "InvalidInput" not in names:
        print("[c-smoke] ApiError.InvalidInput not found in the Swift file")
        return False
    index = names.index("InvalidInput") + 1
    src = (C_TEMPLATE.replace("CONTRACT_VERSION", m.group(1))
           .replace("CHECKSUMS", checks)
           .replace("INVALID_INPUT_INDEX", str(index)))
    with tempfile.TemporaryDirectory() as tmp:
        c_file = os.path.join(tmp, "smoke.c")
        exe = os.path.join(tmp, "smoke")
        open(c_file, "w").write(src)
        libdir = os.path.dirname(os.path.abspath(lib))
        cc = subprocess.run(["gcc", "-std=c11", "-Wall", "-Werror", "-I", bindings, c_file, "-o", exe,
                             "-L", libdir, "-lhomeroom_mobile", f"-Wl,-rpath,{libdir}"],
                            capture_output=True, text=True)
        if cc.returncode != 0:
            print("[c-smoke] gcc failed:\n" + cc.stderr[-3000:])
            return False
        run = subprocess.run([exe, os.path.join(tmp, "device")], capture_output=True, text=True, timeout=120)
        sys.stdout.write(run.stdout)
        sys.stderr.write(run.stderr[-3000:])
        return run.returncode == 0


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    bindings, lib = sys.argv[1], sys.argv[2]
    ok = check_syntax(os.path.join(bindings, "homeroom_mobile.swift"))
    ok &= check_symbols(os.path.join(bindings, "homeroom_mobileFFI.h"), lib)
    ok &= check_c_abi(bindings, lib)
    print("SWIFT-CHECK OK" if ok else "SWIFT-CHECK FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
