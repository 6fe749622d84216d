//! Webhook events (LNPay spec §9.2).

/// An event a webhook can subscribe to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventName {
    /// A wallet was created. Data: `{"wal": …}`.
    WalletCreated,
    /// A payment left a wallet. Data: `{"wtx": …}`.
    WalletSend,
    /// A payment definitely failed and was refunded.
    WalletSendFailure,
    /// Money arrived in a wallet. Data: `{"wtx": …}`.
    WalletReceive,
    /// Transfer credit.
    WalletTransferIn,
    /// Transfer debit.
    WalletTransferOut,
    /// A routing fee was charged. Data: `{"wtx": …}` (the `network_fee` WTX).
    NetworkFeeIncurred,
}

impl EventName {
    /// All events, in catalogue order.
    pub const ALL: [EventName; 7] = [
        EventName::WalletCreated,
        EventName::WalletSend,
        EventName::WalletSendFailure,
        EventName::WalletReceive,
        EventName::WalletTransferIn,
        EventName::WalletTransferOut,
        EventName::NetworkFeeIncurred,
    ];

    /// Wire name.
    pub fn name(self) -> &'static str {
        match self {
            EventName::WalletCreated => "wallet_created",
            EventName::WalletSend => "wallet_send",
            EventName::WalletSendFailure => "wallet_send_failure",
            EventName::WalletReceive => "wallet_receive",
            EventName::WalletTransferIn => "wallet_transfer_in",
            EventName::WalletTransferOut => "wallet_transfer_out",
            EventName::NetworkFeeIncurred => "network_fee_incurred",
        }
    }

    /// `event.type`.
    pub fn kind(self) -> &'static str {
        match self {
            EventName::NetworkFeeIncurred => "network_fee",
            _ => "wallet",
        }
    }

    /// `event.display_name` (LNPay's database wording).
    pub fn display_name(self) -> &'static str {
        match self {
            EventName::WalletCreated => "Wallet Created",
            EventName::WalletSend => "Wallet Send",
            EventName::WalletSendFailure => "Wallet Send Failure",
            EventName::WalletReceive => "Wallet Receive",
            EventName::WalletTransferIn => "Wallet Transfer IN",
            EventName::WalletTransferOut => "Wallet Transfer OUT",
            EventName::NetworkFeeIncurred => "LN Network Fee Incurred",
        }
    }

    /// Inverse of [`EventName::name`].
    pub fn from_name(s: &str) -> Option<EventName> {
        EventName::ALL.into_iter().find(|e| e.name() == s)
    }
}
