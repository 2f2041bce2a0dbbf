//! Mobile bindings (placeholder).
