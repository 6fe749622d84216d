//! Outgoing payments: a persisted state machine driven by a detached task.
//!
//! 1. `reserve_payment` commits the intent (amount + fee limit debited into `sys:in_flight`)
//!    **before** the node hears of it.
//! 2. A spawned task marks it `dispatched` and calls the node. The HTTP request only waits for
//!    that task with a timeout; a client disconnect or timeout never cancels it.
//! 3. Success books the real fee and releases the rest. A failure is refunded only when the node
//!    reports a definite failure *and* a fresh lookup agrees. Anything else (timeouts, transport
//!    errors, in-flight) stays pending and is polled until the node says how it ended.
//! 4. [`PaymentService::recover`] re-drives every live payment from our own records at startup and
//!    periodically, so a crash at any point resumes. Nothing is ever released on a timer.
//!
//! The files follow those steps:
//! - `start.rs`: the requests (`withdraw`, `keysend`, the shared BOLT11 path), their
//!   validation (fee limit, send limit, keysend records) and the reservation;
//! - `internal.rs`: paying one of our own invoices inside the ledger instead of through the
//!   node, and cancelling such invoices on the node;
//! - `driver.rs`: the state machine: the detached driver, the caller's bounded wait, and the
//!   moves to settled, failed or unknown;
//! - `recovery.rs`: rebuilding what to send from a stored payment and re-driving every live one.
//!
//! The operator's manual resolution of a stuck payment is not here: it is `operator.rs`.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use satchel_domain::{FailureReason, LnTxId, Msat, PaymentHash};
use satchel_store::{LnTxRecord, PaymentSettled, WtxRecord};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Ctx;

mod driver;
mod internal;
mod recovery;
mod start;

/// `POST /wallet/:key/withdraw`.
#[derive(Debug, Clone, Default)]
pub struct WithdrawRequest {
    /// BOLT11.
    pub payment_request: String,
    /// Explicit fee limit (must be >= 0).
    pub fee_limit_msat: Option<i64>,
    /// Client passThru.
    pub pass_thru: Option<Map<String, Value>>,
}

/// `POST /wallet/:key/keysend`, before validation.
#[derive(Debug, Clone, Default)]
pub struct KeysendRequest {
    /// 66 hex chars.
    pub dest_pubkey: String,
    /// Amount.
    pub amount: Msat,
    /// Explicit fee limit (must be >= 0).
    pub fee_limit_msat: Option<i64>,
    /// TLV type (decimal string) → value.
    pub custom_records: Option<Map<String, Value>>,
    /// Client passThru.
    pub pass_thru: Option<Map<String, Value>>,
}

/// A keysend that passed validation; serialisable so async jobs can persist it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidKeysend {
    /// Destination (hex).
    pub dest_pubkey: String,
    /// Amount in msat.
    pub amount_msat: u64,
    /// Fee limit in msat.
    pub fee_limit_msat: u64,
    /// TLV type → UTF-8 value.
    pub records: BTreeMap<u64, String>,
    /// Client passThru.
    pub pass_thru: Option<Map<String, Value>>,
    /// Preimage (hex), chosen once so a retried job pays the same hash.
    pub preimage: String,
}

/// What a payment request produced.
// Returned once per request and never stored in bulk: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum PaymentResult {
    /// Paid: the `ln_withdrawal` and the `network_fee` WTX if any.
    Done {
        /// Withdrawal.
        wtx: WtxRecord,
        /// Fee.
        fee_wtx: Option<WtxRecord>,
    },
    /// Not resolved within the wait; still reserved and being tracked.
    Pending(LnTxRecord),
}

/// How a driven payment ended.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
enum Final {
    Settled(PaymentSettled),
    Failed(FailureReason),
}

fn failure_of(l: &LnTxRecord) -> FailureReason {
    l.failure_reason
        .as_deref()
        .and_then(FailureReason::from_lnd_name)
        .unwrap_or(FailureReason::Error)
}

/// Outgoing payment use cases.
#[derive(Clone)]
pub struct PaymentService {
    ctx: Arc<Ctx>,
    driving: Arc<Mutex<HashSet<LnTxId>>>,
    /// Invoices settled in the ledger, for the node to cancel (started on first use).
    cancels: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<PaymentHash>>,
}

impl PaymentService {
    pub(crate) fn new(ctx: Arc<Ctx>) -> PaymentService {
        PaymentService {
            ctx,
            driving: Arc::new(Mutex::new(HashSet::new())),
            cancels: std::sync::OnceLock::new(),
        }
    }
}
