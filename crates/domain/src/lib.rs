//! Satchel's domain types: money, identifiers, access keys, payment vocabulary.
//!
//! This crate does no I/O. Everything that crosses a layer boundary in Satchel is one of these
//! types, so the layers above never handle a bare amount, a bare id string or unparsed BOLT11.
#![deny(missing_docs)]

pub mod bolt11;
pub mod event;
pub mod ids;
pub mod keys;
pub mod lnurl;
pub mod lnurlp;
pub mod money;
pub mod payment;
pub mod request_id;
pub mod time;
pub mod wtx;

pub use bolt11::{Bolt11, Bolt11Error, HopHint, Network};
pub use event::EventName;
pub use ids::{
    AccountId, AttemptId, DeliveryId, EventId, IdError, JobId, LnTxId, NodeId, WalletId, WebhookId,
    WtxId,
};
pub use keys::{ApiKeySecret, KeyHash, KeyRole, MIN_KEY_ENTROPY_BITS, Permission};
pub use lnurl::{LnurlError, decode_lnurl, encode_lnurl};
pub use lnurlp::{Username, UsernameError, metadata_hash, pay_metadata};
pub use money::{MoneyError, Msat, fee_limit_default, payment_charge, payment_reserve, sats_floor};
pub use payment::{
    CustomRecords, FailureReason, KEYSEND_PREIMAGE_TLV, NodePubkey, PaymentHash, PaymentStatus,
    Preimage, PubkeyError, WALLET_ROUTING_TLVS, parse_tlv_type,
};
pub use request_id::RequestId;
pub use time::now_secs;
pub use wtx::WtxType;
