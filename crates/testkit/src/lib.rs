//! Test support shared by Satchel's crates; never a normal dependency of a production crate.
//!
//! - [`conformance`]: the scenario suite every Lightning backend must pass (scripted, LDK, LND,
//!   Core Lightning), written only against the traits of `satchel-lightning`.
//! - [`db`]: throw-away SQLite and Postgres databases, so every store and server test runs on both.
#![deny(missing_docs)]

pub mod conformance;
pub mod db;
