//! `uniffi-bindgen`, built from the same `UniFFI` version as `mesh-ffi` (one `Cargo.lock`), so
//! the generated bindings always match the library's scaffolding.

fn main() {
    uniffi::uniffi_bindgen_main();
}
