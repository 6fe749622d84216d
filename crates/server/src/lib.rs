//! The `satchel` binary's library half: configuration, wiring and the development-network
//! control routes. Integration tests start the real server through [`app::start`].

pub mod app;
pub mod config;
pub mod devnet;
pub mod file_modes;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod node_cli;
pub mod progress;
pub mod retention;
