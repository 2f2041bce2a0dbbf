//! The uniffi bindings generator, built from this crate so it always matches its uniffi version.

fn main() {
    uniffi::uniffi_bindgen_main()
}
