//! Device client (placeholder).
