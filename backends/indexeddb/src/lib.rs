//! IndexedDB backend (wasm32 only).
