//! SQLite storage (placeholder until the store lands).
