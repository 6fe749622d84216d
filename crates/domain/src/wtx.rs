//! Wallet transaction types (LNPay `wtxType`, spec §4.5).

/// The kind of a user-visible wallet transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WtxType {
    /// Invoice settled or keysend received.
    LnDeposit,
    /// Invoice paid or keysend sent.
    LnWithdrawal,
    /// Internal transfer credit.
    LnTransferIn,
    /// Internal transfer debit.
    LnTransferOut,
    /// Routing fee of an outgoing payment.
    NetworkFee,
    /// A balance carried over from elsewhere (LNPay's history compression; Satchel's import).
    BalanceRollUp,
    /// An invoice of an LNURL-pay link or Lightning Address was paid (LNPay id 60).
    LnLnurlPayInbound,
    /// LNURL-pay link or Lightning Address paid (`POST /lnurlp/pay`).
    LnLnurlPayOutbound,
}

impl WtxType {
    /// LNPay's numeric id, stored in the database.
    pub fn code(self) -> i64 {
        match self {
            WtxType::LnDeposit => 10,
            WtxType::LnWithdrawal => 20,
            WtxType::LnTransferIn => 30,
            WtxType::LnTransferOut => 40,
            WtxType::NetworkFee => 70,
            WtxType::BalanceRollUp => 45,
            WtxType::LnLnurlPayInbound => 60,
            WtxType::LnLnurlPayOutbound => 62,
        }
    }

    /// Inverse of [`WtxType::code`].
    pub fn from_code(code: i64) -> Option<WtxType> {
        Some(match code {
            10 => WtxType::LnDeposit,
            20 => WtxType::LnWithdrawal,
            30 => WtxType::LnTransferIn,
            40 => WtxType::LnTransferOut,
            70 => WtxType::NetworkFee,
            45 => WtxType::BalanceRollUp,
            60 => WtxType::LnLnurlPayInbound,
            62 => WtxType::LnLnurlPayOutbound,
            _ => return None,
        })
    }

    /// `wtxType.name`.
    pub fn name(self) -> &'static str {
        match self {
            WtxType::LnDeposit => "ln_deposit",
            WtxType::LnWithdrawal => "ln_withdrawal",
            WtxType::LnTransferIn => "ln_transfer_in",
            WtxType::LnTransferOut => "ln_transfer_out",
            WtxType::NetworkFee => "network_fee",
            WtxType::BalanceRollUp => "balance_roll_up",
            WtxType::LnLnurlPayInbound => "ln_lnurl_pay_inbound",
            WtxType::LnLnurlPayOutbound => "ln_lnurl_pay_outbound",
        }
    }

    /// `wtxType.display_name`.
    pub fn display_name(self) -> &'static str {
        match self {
            WtxType::LnDeposit => "LN Deposit",
            WtxType::LnWithdrawal => "LN Withdrawal",
            WtxType::LnTransferIn => "Transfer In",
            WtxType::LnTransferOut => "Transfer Out",
            WtxType::NetworkFee => "LN Routing Fees",
            WtxType::BalanceRollUp => "Balance Roll Up",
            // LNPay renamed the type in 2022 but never its display name.
            WtxType::LnLnurlPayInbound => "LNURL Pay",
            WtxType::LnLnurlPayOutbound => "LNURL Pay Outbound",
        }
    }
}
