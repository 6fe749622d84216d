//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use satchel_domain::{
    AccountId, ApiKeySecret, KeyRole, LnTxId, Msat, NodeId, PaymentHash, Preimage, WalletId, WtxId,
};
use satchel_store::{
    AuditReport, CreditOutcome, InternalPayCmd, NewInvoiceRecord, NewKey, NewWallet, ReserveCmd,
    SettleCmd, Store, TransferCmd,
};

pub const NOW: i64 = 1_700_000_000;

pub fn node() -> NodeId {
    NodeId::from_db("lnod_test".into())
}

pub fn pubkey() -> String {
    format!("02{}", "ab".repeat(32))
}

pub fn sat(n: u64) -> Msat {
    Msat::from_sats(n).unwrap()
}

pub fn msat(n: u64) -> Msat {
    Msat::from_msat(n).unwrap()
}

pub fn new_key(role: KeyRole) -> (ApiKeySecret, NewKey) {
    let k = ApiKeySecret::generate(role);
    let nk = NewKey {
        role,
        hash: k.hash(),
        prefix: k.prefix().to_owned(),
    };
    (k, nk)
}

pub async fn connect(url: &str) -> Store {
    Store::connect(url).await.unwrap()
}

pub async fn account(store: &Store) -> AccountId {
    let id = AccountId::generate();
    let (_, k) = new_key(KeyRole::Secret);
    store
        .create_account(&id, "test account", NOW, &[k])
        .await
        .unwrap();
    id
}

pub async fn wallet_at(store: &Store, account: &AccountId, now: i64) -> WalletId {
    let id = WalletId::generate();
    let (_, k) = new_key(KeyRole::WalletAdmin);
    let w = NewWallet {
        id: id.clone(),
        account_id: account.clone(),
        user_label: format!("wallet {id}"),
        node_id: node(),
        now,
        keys: vec![k],
    };
    let rec = store.create_wallet(&w).await.unwrap();
    assert_eq!(rec.id, id);
    assert_eq!(rec.balance, Msat::ZERO);
    id
}

pub async fn wallet(store: &Store, account: &AccountId) -> WalletId {
    wallet_at(store, account, NOW).await
}

pub async fn wallets(store: &Store, account: &AccountId, n: usize) -> Vec<WalletId> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(wallet(store, account).await);
    }
    out
}

/// An open invoice of `wallet`. Returns its id and hash.
pub async fn invoice(
    store: &Store,
    account: &AccountId,
    wallet: &WalletId,
    amount: Msat,
) -> (LnTxId, PaymentHash) {
    invoice_expiring(store, account, wallet, amount, NOW + 86_400).await
}

pub async fn invoice_expiring(
    store: &Store,
    account: &AccountId,
    wallet: &WalletId,
    amount: Msat,
    expires_at: i64,
) -> (LnTxId, PaymentHash) {
    let preimage = Preimage::random();
    let hash = preimage.hash();
    let id = LnTxId::generate();
    let rec = store
        .insert_invoice(&NewInvoiceRecord {
            id: id.clone(),
            account_id: account.clone(),
            wallet_id: wallet.clone(),
            now: NOW,
            node_id: node(),
            dest_pubkey: pubkey(),
            payment_request: format!("lnbcrt1test{}", hash.to_hex()),
            payment_hash: hash,
            preimage,
            memo: "test invoice".into(),
            description_hash: None,
            payment_addr: None,
            amount,
            expiry_secs: 86_400,
            expires_at,
            pass_thru: "{}".into(),
        })
        .await
        .unwrap();
    assert_eq!(rec.id, id);
    assert!(!rec.settled);
    // The answer is built from what was written: it must equal a fresh read.
    assert_eq!(store.lntx(&id).await.unwrap().as_ref(), Some(&rec));
    (id, hash)
}

/// Deposits `amount` into `wallet` the way the node does: an invoice, then its settlement.
pub async fn deposit(
    store: &Store,
    account: &AccountId,
    wallet: &WalletId,
    amount: Msat,
) -> LnTxId {
    let (id, hash) = invoice(store, account, wallet, amount).await;
    match store
        .credit_invoice(&hash, amount, NOW, &WtxId::generate())
        .await
        .unwrap()
    {
        CreditOutcome::Credited(w) => assert_eq!(w.amount_msat, amount.as_i64()),
        other => panic!("deposit not credited: {other:?}"),
    }
    id
}

pub fn random_hash() -> PaymentHash {
    Preimage::random().hash()
}

pub fn reserve_cmd(
    account: &AccountId,
    wallet: &WalletId,
    hash: PaymentHash,
    amount: Msat,
    fee_limit: Msat,
) -> ReserveCmd {
    ReserveCmd {
        lntx_id: LnTxId::generate(),
        account_id: account.clone(),
        wallet_id: wallet.clone(),
        now: NOW,
        node_id: node(),
        dest_pubkey: format!("03{}", "cd".repeat(32)),
        payment_request: format!("lnbcrt1pay{}", hash.to_hex()),
        payment_hash: hash,
        memo: "payment".into(),
        description_hash: None,
        payment_addr: None,
        amount,
        fee_limit,
        expiry_secs: Some(3600),
        expires_at: Some(NOW + 3600),
        preimage: None,
        is_keysend: false,
        custom_records: None,
        pass_thru: "{}".into(),
        wtx_type: satchel_domain::WtxType::LnWithdrawal,
    }
}

pub fn settle_cmd(lntx: &LnTxId, fee: Msat) -> SettleCmd {
    SettleCmd {
        lntx_id: lntx.clone(),
        preimage: Preimage::random(),
        fee,
        wtx_id: WtxId::generate(),
        fee_wtx_id: WtxId::generate(),
        user_label: "paid".into(),
        pass_thru: "{}".into(),
        fee_pass_thru: "{}".into(),
        now: NOW + 1,
    }
}

pub fn transfer_cmd(
    account: &AccountId,
    from: &WalletId,
    to: &WalletId,
    amount: Msat,
) -> TransferCmd {
    TransferCmd {
        account_id: account.clone(),
        from: from.clone(),
        to: to.clone(),
        amount,
        memo: "transfer".into(),
        pass_thru: "{}".into(),
        wtx_in_id: WtxId::generate(),
        wtx_out_id: WtxId::generate(),
        now: NOW,
    }
}

pub fn internal_cmd(account: &AccountId, payer: &WalletId, hash: PaymentHash) -> InternalPayCmd {
    InternalPayCmd {
        account_id: account.clone(),
        payer: payer.clone(),
        payment_hash: hash,
        out_lntx_id: LnTxId::generate(),
        payer_wtx_id: WtxId::generate(),
        payee_wtx_id: WtxId::generate(),
        payer_pass_thru: "{}".into(),
        now: NOW + 1,
        expect_request: None,
        send_limit: None,
        payer_wtx_type: satchel_domain::WtxType::LnWithdrawal,
    }
}

pub async fn balance(store: &Store, wallet: &WalletId) -> i64 {
    store
        .wallet(wallet)
        .await
        .unwrap()
        .unwrap()
        .balance
        .as_i64()
}

pub async fn wtx_count(store: &Store, wallet: &WalletId) -> u64 {
    store.wallet(wallet).await.unwrap().unwrap().wtx_count
}

/// Runs the audit and fails the test (naming the database) unless it is clean.
pub async fn assert_clean(kind: &str, store: &Store) -> AuditReport {
    let rep = store.audit().await.unwrap();
    assert!(
        rep.is_clean(),
        "[{kind}] audit found problems: {:#?}",
        rep.problems
    );
    rep
}
