//! The records the service's methods return, re-exported so the API can render them without
//! depending on the store or the Lightning traits.
//!
//! They cross deliberately: each is a plain read model (a wallet, a transaction, a webhook, an
//! audit report, a route or a channel as the node reports it) with no behaviour of the store
//! attached, and giving each a service-owned twin would only copy fields. What the API must not
//! see — the `Store` itself, its errors, its commands — stays behind the service.

/// Wallets, their transactions and payments (what the LNPay DTOs are built from).
pub use satchel_store::{Direction, LnTxRecord, TransferDone, WalletRecord, WtxRecord};

/// Async jobs (`X-LNPAY-ASYNC`).
pub use satchel_store::{JobRecord, JobStatus};

/// Webhooks, their deliveries and attempts, and the outbox events they deliver.
pub use satchel_store::{
    AttemptOutcome, AttemptRecord, DeliveryRecord, DeliveryStatus, DueDelivery, EventRecord,
    WebhookRecord,
};

/// LNURL-withdraw link kinds (one-time or reusable), shown on the wallet page.
pub use satchel_store::LnurlwKind;

/// The operator's views: accounts, the audit report, the trail of manual resolutions.
pub use satchel_store::{AccountSummary, AuditReport, OperatorAction};

/// A stored `Idempotency-Key` record and the answer it replays.
pub use satchel_store::{IdemRecord, StoredResponse};

/// A route the node found (`/v1/node/:id/queryroutes`) and a channel the node reports.
pub use satchel_lightning::{ChannelInfo, Route};
