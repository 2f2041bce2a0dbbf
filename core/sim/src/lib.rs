//! Simulated network (placeholder).
