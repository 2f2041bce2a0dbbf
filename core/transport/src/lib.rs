//! QUIC transport (placeholder).
