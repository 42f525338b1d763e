//! The management HTTP server (placeholder on the `ui` branch so the UI's
//! router compiles; the lead's `src/management/mod.rs` replaces it on merge).

pub mod ui;
