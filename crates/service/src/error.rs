//! Service errors. `Display` is the LNPay message; [`ServiceError::class`] picks the HTTP status.

use satchel_domain::{Bolt11Error, FailureReason};
use satchel_store::StoreError;

/// How the API should answer an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// 400.
    BadRequest,
    /// 401 (LNPay also uses it for unknown wallets and lnTx).
    Unauthorized,
    /// 404.
    NotFound,
    /// 401 with LNPay's invalid-credentials body and challenge.
    InvalidCredentials,
    /// 500; the message is logged, never sent.
    Internal,
    /// 501: a feature the operator has not configured (LNURL without `public_url`). Not the
    /// client's fault, and retrying will not help until the operator acts.
    NotImplemented,
    /// 429; the error's [`ServiceError::retry_after_secs`] gives `Retry-After`.
    TooManyRequests,
    /// 503 with `Retry-After`: the database cannot be reached right now. Like `Internal`, not
    /// the client's fault and not an outcome; a write caught in it may or may not have
    /// committed.
    Unavailable,
}

/// Everything a use case can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No key, or a key we don't know.
    #[error("Your request was made with invalid credentials.")]
    InvalidCredentials,
    /// The API key is suspended.
    #[error("Something went wrong, please reach out.")]
    KeySuspended,
    /// The wallet key in the URL is suspended.
    #[error("Key has been suspended")]
    WalletKeySuspended,
    /// Unknown or foreign wallet.
    #[error("Wallet not found: {0}")]
    WalletNotFound(String),
    /// A pak was used with a wallet id instead of a wallet key.
    #[error(
        "Invalid Wallet Access Key. Keys prefixed with waka_, waki_, wakr, waklw are valid when using pak_"
    )]
    PakNeedsWalletKey,
    /// The wallet key lacks the permission.
    #[error("{prefix}_ access key provided does not permission to do this: {permission}")]
    PermissionDenied {
        /// Key prefix, e.g. `waki`.
        prefix: String,
        /// LNPay permission name.
        permission: &'static str,
    },
    /// A secret key is required.
    #[error("This resource can only be access with secret access key.")]
    SecretKeyRequired,
    /// Unknown or foreign lnTx.
    #[error("LnTx not found")]
    LnTxNotFound,
    /// Unknown or foreign resource without an LNPay-defined message (webhooks, deliveries).
    #[error("{0}")]
    NotFound(String),
    /// Unknown or foreign job.
    #[error("You are not allowed to access this resource!")]
    JobNotFound,
    /// Invalid input (message is LNPay/Yii style).
    #[error("{0}")]
    Invalid(String),
    /// Balance too low for amount + fee limit. Carries the balance in sats.
    #[error("Invoice too large :) Max balance: {0}")]
    InsufficientBalance(u64),
    /// The payment hash was already paid.
    #[error("invoice is already paid")]
    AlreadyPaid,
    /// A payment of this hash is in flight.
    #[error("Payment is already in flight for this invoice")]
    PaymentInFlight,
    /// The invoice cannot be paid.
    #[error("{0}")]
    Invoice(#[from] Bolt11Error),
    /// The node proved the payment failed; the reserve was refunded.
    #[error("Failure reason: {}", .0.lnd_name())]
    PaymentFailed(FailureReason),
    /// Transfer refused (message from the store's error).
    #[error("{0}")]
    Transfer(String),
    /// A one-time LNURL-withdraw link was already used (or expired) when its payment was
    /// about to be reserved.
    #[error("LNURL is no longer valid")]
    LinkSpent,
    /// LNURL endpoints need `public_url`, which the operator has not set.
    #[error("LNURL is not enabled on this server: the operator has not configured public_url.")]
    LnurlDisabled,
    /// The Lightning backend cannot do what the operator asked (e.g. list channels).
    #[error("{0}")]
    NotSupported(String),
    /// A per-account rate limit refused the request.
    #[error("Too many requests; try again in {retry_after_secs} seconds.")]
    RateLimited {
        /// When a retry will be accepted.
        retry_after_secs: u64,
    },
    /// Anything unexpected. Logged, never shown.
    #[error("internal error: {0}")]
    Internal(String),
    /// The database is unreachable (connection refused or lost, pool exhausted, server
    /// shutting down). Logged, never shown.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl ServiceError {
    /// The HTTP class.
    pub fn class(&self) -> ErrorClass {
        use ServiceError::*;
        match self {
            InvalidCredentials => ErrorClass::InvalidCredentials,
            KeySuspended
            | WalletKeySuspended
            | WalletNotFound(_)
            | PakNeedsWalletKey
            | PermissionDenied { .. }
            | SecretKeyRequired
            | LnTxNotFound
            | JobNotFound => ErrorClass::Unauthorized,
            Invalid(_)
            | InsufficientBalance(_)
            | AlreadyPaid
            | PaymentInFlight
            | Invoice(_)
            | PaymentFailed(_)
            | LinkSpent
            | Transfer(_) => ErrorClass::BadRequest,
            LnurlDisabled | NotSupported(_) => ErrorClass::NotImplemented,
            NotFound(_) => ErrorClass::NotFound,
            Internal(_) => ErrorClass::Internal,
            Unavailable(_) => ErrorClass::Unavailable,
            RateLimited { .. } => ErrorClass::TooManyRequests,
        }
    }

    /// Seconds until a rate-limited request may be retried.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ServiceError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            _ => None,
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> ServiceError {
        if e.is_unavailable() {
            return ServiceError::Unavailable(e.to_string());
        }
        ServiceError::Internal(e.to_string())
    }
}
