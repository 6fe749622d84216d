//! Test doubles of the Lightning nodes Satchel talks to; never a normal dependency of a
//! production crate.
//!
//! Each fake speaks a node's real wire protocol over a real socket, so the production client
//! (`satchel-lnd`, `satchel-cln`) is tested unchanged, while the money moves on whatever
//! [`satchel_lightning::LightningBackend`] the test hands it (usually the LDK node of the
//! in-process devnet).
//!
//! - [`lnd`]: LND's REST API over HTTPS, macaroon checked ([`lnd::FakeLnd`]).
//! - [`cln`]: Core Lightning's JSON-RPC on a unix socket and CLNRest over HTTPS, playing a
//!   chosen release ([`cln::FakeCln`]).
#![deny(missing_docs)]

pub mod cln;
pub mod lnd;
