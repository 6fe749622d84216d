//! The outgoing payment state machine of `PaymentService`, driven directly (no HTTP) over a real
//! store (SQLite and Postgres, `TestDb::all()`) and the scripted node, whose outcomes each test
//! chooses: success, definite failure, hang, transport error, late completion.
//!
//! Every test checks the wallet balance, `sys:in_flight`, the payment's status, how many times
//! the node actually sent the hash (`pay_count`), and that `Store::audit` is clean at the end.
//!
//! The node is wrapped in a [`Spy`] that records what the service asked of it, looks at the
//! books at the moment `pay` is called (to prove the reserve was committed first), can answer
//! lookups differently from the node (a lookup that disagrees with `pay`'s failure) and can play
//! a node whose internal-payment take is provisional (the embedded node's kind), which is what
//! exercises the cancel batcher.

// Test code: panicking on an unexpected error is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use satchel_domain::{
    Bolt11, Bolt11Error, FailureReason, KEYSEND_PREIMAGE_TLV, KeyRole, LnTxId, Msat, Network,
    NodePubkey, PaymentHash, PaymentStatus, Preimage, WalletId, WtxType, now_secs,
};
use satchel_lightning::{
    IncomingEvent, InternalTake, InvoiceEvents, InvoiceState, Invoices, LnError, NewInvoice,
    NodeInfo, NodeInfoData, PayOutcome, PayRequest, PayTarget, PaymentLookup, Payments, Route,
    Routes, TakeKind,
};
use satchel_scripted::{Completion, Script, ScriptedBackend};
use satchel_service::auth::Caller;
use satchel_service::idempotency::Rebuilt;
use satchel_service::payments::{KeysendRequest, PaymentResult, WithdrawRequest};
use satchel_service::wallets::{ImportWallet, InvoiceRequest};
use satchel_service::{ServiceConfig, ServiceError, Services};
use satchel_store::{LnTxRecord, ReserveCmd, Store};
use satchel_testkit::db::TestDb;

const SEED: [u8; 32] = [11u8; 32];

fn sats(n: u64) -> Msat {
    Msat::from_sats(n).unwrap()
}

fn msat(n: u64) -> Msat {
    Msat::from_msat(n).unwrap()
}

/// Short waits so the pending paths are quick to reach; the node may hang longer than a
/// request waits.
fn cfg() -> ServiceConfig {
    ServiceConfig {
        payment_wait: Duration::from_secs(5),
        node_pay_timeout: Duration::from_secs(20),
        backend_name: "scripted",
        ..ServiceConfig::default()
    }
}

/// A request wait short enough to answer "pending" while the node still has the payment.
fn short_wait() -> ServiceConfig {
    ServiceConfig {
        payment_wait: Duration::from_millis(300),
        ..cfg()
    }
}

// ------------------------------------------------------------------------------------ the spy

/// What [`Spy`] saw at the moment `pay` was called.
#[derive(Debug, Clone)]
struct AtPay {
    /// The payment's status in our books.
    status: Option<PaymentStatus>,
    /// `sys:in_flight` (msat).
    in_flight_msat: i64,
}

#[derive(Default)]
struct SpyLog {
    pays: Vec<PayTarget>,
    at_pay: HashMap<PaymentHash, AtPay>,
    /// Lookups answered by the spy instead of the node: `None` is a transport error.
    lookups: HashMap<PaymentHash, Option<PaymentLookup>>,
    /// `pay` of these is refused before anything is sent.
    reject: HashSet<PaymentHash>,
    /// Provisional takes held (for [`TakeKind::Provisional`]).
    taken: HashSet<PaymentHash>,
    released: Vec<PaymentHash>,
    cancel_batches: Vec<Vec<PaymentHash>>,
}

/// The scripted node, observed (see the module docs).
struct Spy {
    node: Arc<ScriptedBackend>,
    provisional: bool,
    store: Mutex<Option<Store>>,
    log: Mutex<SpyLog>,
}

impl Spy {
    fn new(node: Arc<ScriptedBackend>, provisional: bool) -> Arc<Spy> {
        Arc::new(Spy {
            node,
            provisional,
            store: Mutex::new(None),
            log: Mutex::new(SpyLog::default()),
        })
    }
    fn log(&self) -> std::sync::MutexGuard<'_, SpyLog> {
        self.log.lock().unwrap()
    }
    fn at_pay(&self, hash: PaymentHash) -> AtPay {
        self.log()
            .at_pay
            .get(&hash)
            .cloned()
            .expect("pay was called")
    }
}

impl satchel_lightning::NodeAdmin for Spy {}

#[async_trait]
impl NodeInfo for Spy {
    async fn node_info(&self) -> Result<NodeInfoData, LnError> {
        self.node.node_info().await
    }
}

#[async_trait]
impl Invoices for Spy {
    async fn create_invoice(&self, req: NewInvoice) -> Result<Bolt11, LnError> {
        self.node.create_invoice(req).await
    }
    async fn cancel_invoice(&self, hash: PaymentHash) -> Result<(), LnError> {
        self.node.cancel_invoice(hash).await
    }
    async fn cancel_invoices(&self, hashes: &[PaymentHash]) -> Result<(), LnError> {
        {
            let mut log = self.log();
            log.cancel_batches.push(hashes.to_vec());
            for h in hashes {
                log.taken.remove(h);
            }
        }
        self.node.cancel_invoices(hashes).await
    }
    async fn lookup_invoice(&self, hash: PaymentHash) -> Result<Option<InvoiceState>, LnError> {
        self.node.lookup_invoice(hash).await
    }
    async fn take_for_internal(&self, hash: PaymentHash) -> Result<InternalTake, LnError> {
        if !self.provisional {
            return self.node.take_for_internal(hash).await;
        }
        // A mark in memory, as the embedded node keeps it: the invoice stays open on the node.
        if let Some(InvoiceState::Settled { .. }) = self.node.lookup_invoice(hash).await? {
            return Ok(InternalTake::NodePaid);
        }
        self.log().taken.insert(hash);
        Ok(InternalTake::Taken)
    }
    async fn release_internal(&self, hash: PaymentHash) {
        let mut log = self.log();
        log.taken.remove(&hash);
        log.released.push(hash);
    }
    fn take_kind(&self) -> TakeKind {
        if self.provisional {
            TakeKind::Provisional
        } else {
            TakeKind::Final
        }
    }
}

#[async_trait]
impl Payments for Spy {
    async fn pay(&self, req: PayRequest) -> Result<PayOutcome, LnError> {
        let hash = req.target.payment_hash();
        let store = self.store.lock().unwrap().clone();
        if let Some(store) = store {
            let status = store
                .latest_outgoing(&hash)
                .await
                .unwrap()
                .and_then(|l| l.status);
            let in_flight_msat = store.gauges().await.unwrap().in_flight_msat;
            self.log().at_pay.insert(
                hash,
                AtPay {
                    status,
                    in_flight_msat,
                },
            );
        }
        {
            let mut log = self.log();
            log.pays.push(req.target.clone());
            if log.reject.contains(&hash) {
                return Err(LnError::Rejected("refused by the test".into()));
            }
        }
        self.node.pay(req).await
    }
    async fn lookup_payment(&self, hash: PaymentHash) -> Result<PaymentLookup, LnError> {
        if let Some(answer) = self.log().lookups.get(&hash).cloned() {
            return answer.ok_or_else(|| LnError::Transport("lookup refused by the test".into()));
        }
        self.node.lookup_payment(hash).await
    }
}

#[async_trait]
impl InvoiceEvents for Spy {
    async fn events_after(
        &self,
        after: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<IncomingEvent>, LnError> {
        self.node.events_after(after, limit, wait).await
    }
}

#[async_trait]
impl Routes for Spy {
    async fn query_routes(&self, dest: NodePubkey, amount: Msat) -> Result<Vec<Route>, LnError> {
        self.node.query_routes(dest, amount).await
    }
}

// ------------------------------------------------------------------------------- environment

/// One "process": services over a store and the (spied) node, with a funded wallet.
struct Env {
    kind: &'static str,
    store: Store,
    node: Arc<ScriptedBackend>,
    spy: Arc<Spy>,
    svc: Services,
    caller: Caller,
    wallet: WalletId,
}

impl Env {
    /// A fresh node and a wallet holding `funds_sats`.
    async fn start(db: &TestDb, cfg: ServiceConfig, funds_sats: u64) -> Env {
        let node = Arc::new(ScriptedBackend::new(Network::Regtest, SEED));
        Env::start_on(db, cfg, Spy::new(node, false), funds_sats).await
    }

    async fn start_on(db: &TestDb, cfg: ServiceConfig, spy: Arc<Spy>, funds_sats: u64) -> Env {
        let store = Store::connect(&db.url).await.unwrap();
        let account = satchel_service::wallets::create_account(&store, "t")
            .await
            .unwrap();
        let caller = Caller {
            account_id: account.id,
            role: KeyRole::Secret,
        };
        let mut env = Env::attach(db, cfg, spy, caller, WalletId::generate()).await;
        env.wallet = env.new_wallet(funds_sats).await;
        env
    }

    /// Services over the database `db` (a new connection) for an existing caller and wallet:
    /// what a restarted process sees.
    async fn attach(
        db: &TestDb,
        cfg: ServiceConfig,
        spy: Arc<Spy>,
        caller: Caller,
        wallet: WalletId,
    ) -> Env {
        let store = Store::connect(&db.url).await.unwrap();
        *spy.store.lock().unwrap() = Some(store.clone());
        let svc = Services::new(store.clone(), spy.clone(), cfg)
            .await
            .unwrap();
        Env {
            kind: db.kind(),
            store,
            node: spy.node.clone(),
            spy,
            svc,
            caller,
            wallet,
        }
    }

    /// A wallet of the caller's account holding `funds_sats` (booked as an imported balance).
    async fn new_wallet(&self, funds_sats: u64) -> WalletId {
        let id = WalletId::generate();
        satchel_service::wallets::import_wallet(
            &self.store,
            ImportWallet {
                account_id: self.caller.account_id.clone(),
                id: id.to_string(),
                user_label: "w".into(),
                keys: Vec::new(),
                opening_balance: sats(funds_sats),
                node_id: self.svc.ctx.cfg.node_id.clone(),
            },
        )
        .await
        .unwrap();
        id
    }

    async fn balance_of(&self, w: &WalletId) -> Msat {
        self.store.wallet(w).await.unwrap().unwrap().balance
    }

    async fn balance(&self) -> Msat {
        self.balance_of(&self.wallet).await
    }

    async fn in_flight_msat(&self) -> i64 {
        self.store.gauges().await.unwrap().in_flight_msat
    }

    async fn lntx(&self, id: &LnTxId) -> LnTxRecord {
        self.store.lntx(id).await.unwrap().unwrap()
    }

    async fn status(&self, id: &LnTxId) -> Option<PaymentStatus> {
        self.lntx(id).await.status
    }

    /// The latest outgoing payment of `hash`.
    async fn payment(&self, hash: PaymentHash) -> LnTxRecord {
        self.store.latest_outgoing(&hash).await.unwrap().unwrap()
    }

    /// Waits (bounded) until the payment is succeeded or failed in our books.
    async fn wait_final(&self, id: &LnTxId) -> LnTxRecord {
        for _ in 0..300 {
            let l = self.lntx(id).await;
            if matches!(
                l.status,
                Some(PaymentStatus::Succeeded) | Some(PaymentStatus::Failed)
            ) {
                return l;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("[{}] payment {id} never became final", self.kind);
    }

    async fn assert_clean(&self) {
        let audit = self.store.audit().await.unwrap();
        assert!(
            audit.is_clean(),
            "[{}] audit problems: {:?}",
            self.kind,
            audit.problems
        );
    }

    async fn withdraw_from(
        &self,
        w: &WalletId,
        invoice: &str,
        fee_limit_msat: Option<i64>,
    ) -> Result<PaymentResult, ServiceError> {
        self.svc
            .payments
            .withdraw(
                &self.caller,
                w.as_str(),
                WithdrawRequest {
                    payment_request: invoice.to_owned(),
                    fee_limit_msat,
                    pass_thru: None,
                },
            )
            .await
    }

    async fn withdraw(
        &self,
        invoice: &Bolt11,
        fee_limit_msat: Option<i64>,
    ) -> Result<PaymentResult, ServiceError> {
        self.withdraw_from(&self.wallet, invoice.as_str(), fee_limit_msat)
            .await
    }

    /// An invoice of carol's (the scripted node's outside peer) for `amount_sats`.
    fn carol_invoice(&self, amount_sats: u64) -> Bolt11 {
        self.node
            .external_invoice(Some(sats(amount_sats)), "carol", 3600)
            .0
    }

    /// One of our own invoices, issued to wallet `w`.
    async fn our_invoice(&self, w: &WalletId, amount_sats: u64, expiry_secs: u64) -> LnTxRecord {
        self.svc
            .wallets
            .create_invoice(
                &self.caller,
                w.as_str(),
                InvoiceRequest {
                    amount: sats(amount_sats),
                    expiry_secs: Some(expiry_secs),
                    ..InvoiceRequest::default()
                },
            )
            .await
            .unwrap()
    }
}

fn pending(r: Result<PaymentResult, ServiceError>) -> LnTxRecord {
    match r {
        Ok(PaymentResult::Pending(l)) => l,
        other => panic!("expected a pending payment, got {other:?}"),
    }
}

fn done(
    r: Result<PaymentResult, ServiceError>,
) -> (satchel_store::WtxRecord, Option<satchel_store::WtxRecord>) {
    match r {
        Ok(PaymentResult::Done { wtx, fee_wtx }) => (wtx, fee_wtx),
        other => panic!("expected a settled payment, got {other:?}"),
    }
}

fn failed(r: Result<PaymentResult, ServiceError>) -> FailureReason {
    match r {
        Err(ServiceError::PaymentFailed(reason)) => reason,
        other => panic!("expected a definite failure, got {other:?}"),
    }
}

/// The lnTx a settled payment's withdrawal entry belongs to.
fn lntx_of(w: &satchel_store::WtxRecord) -> LnTxRecord {
    w.lntx.clone().expect("withdrawal entry names its lnTx")
}

/// Amount + fee limit as reserved: rounded up to the sat (ARCHITECTURE.md, ledger).
fn reserve_of(amount: Msat, fee_limit: Msat) -> Msat {
    satchel_domain::payment_reserve(amount, fee_limit).unwrap()
}

fn minus(a: Msat, b: Msat) -> Msat {
    a.checked_sub(b).unwrap()
}

// ------------------------------------------------------------------ reserve, settle, refund

/// The intent is committed before the node hears of the payment: when `pay` is called the
/// payment is already `dispatched` in our books and `sys:in_flight` holds its reserve; while the
/// node hangs, the reserve stays, the request answers "pending", and nothing is refunded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_is_committed_before_the_node_is_called_and_held_while_it_hangs() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, short_wait(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        let fee_limit = msat(10_000);
        e.node.script(
            hash,
            Script::Hang {
                then: Box::new(Script::Succeed { fee: msat(3_000) }),
            },
        );
        let l = pending(e.withdraw(&inv, Some(10_000)).await);
        let reserve = reserve_of(sats(1_000), fee_limit);

        let seen = e.spy.at_pay(hash);
        assert_eq!(seen.status, Some(PaymentStatus::Dispatched), "[{}]", e.kind);
        assert_eq!(seen.in_flight_msat, reserve.as_i64(), "[{}]", e.kind);

        // Hanging: reserved, not refunded, sent once.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(e.status(&l.id).await, Some(PaymentStatus::Dispatched));
        assert_eq!(e.balance().await, minus(sats(10_000), reserve));
        assert_eq!(e.in_flight_msat().await, reserve.as_i64());
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;

        // The node finishes: the detached driver books it.
        assert!(e.node.release(hash));
        let l = e.wait_final(&l.id).await;
        assert_eq!(l.status, Some(PaymentStatus::Succeeded));
        assert_eq!(l.fee, msat(3_000));
        assert_eq!(e.balance().await, minus(sats(10_000), sats(1_003)));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
    }
}

/// Success books the actual fee (≤ the limit), charged to the wallet rounded up to the whole
/// sat (C = ⌈a+f⌉); the rest of the reserve comes back; the lnTx keeps the exact fee in msat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_settles_with_the_actual_fee_rounded_up_to_the_sat() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.node.script(hash, Script::Succeed { fee: msat(1_500) });
        let revenue_before = e.store.audit().await.unwrap().revenue_msat;

        let (wtx, fee_wtx) = done(e.withdraw(&inv, Some(5_000)).await);
        assert_eq!(wtx.amount_msat, -1_000_000);
        assert_eq!(wtx.wtx_type, WtxType::LnWithdrawal);
        // ⌈1,001,500⌉ − ⌈1,000,000⌉ = 2,000 msat shown as the fee entry.
        let fee_wtx = fee_wtx.expect("a fee entry");
        assert_eq!(fee_wtx.amount_msat, -2_000);
        let l = lntx_of(&wtx);
        assert_eq!(l.status, Some(PaymentStatus::Succeeded));
        assert_eq!(l.fee, msat(1_500));
        assert_eq!(l.fee_limit, msat(5_000));
        assert!(l.settled);
        assert_eq!(e.balance().await, sats(10_000 - 1_002));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        let audit = e.store.audit().await.unwrap();
        assert_eq!(audit.revenue_msat - revenue_before, 500);
        e.assert_clean().await;
    }
}

/// Without an explicit limit the reserve is LNPay's default (5%, rounded up to the sat); a
/// zero fee charges exactly the amount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn success_with_the_default_fee_limit_and_no_fee_charges_the_amount() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, short_wait(), 10_000).await;
        let inv = e.carol_invoice(2_001);
        let hash = inv.payment_hash();
        e.node.script(hash, Script::Unknown);
        let l = pending(e.withdraw(&inv, None).await);
        // 5% of 2,001 sats is 100.05: 101 sats.
        assert_eq!(l.fee_limit, sats(101));
        assert_eq!(e.balance().await, sats(10_000 - 2_001 - 101));
        assert_eq!(e.in_flight_msat().await, sats(2_102).as_i64());
        e.node
            .complete(hash, Completion::Succeed { fee: Msat::ZERO });
        let l = e.wait_final(&l.id).await;
        assert_eq!(l.status, Some(PaymentStatus::Succeeded));
        assert_eq!(e.balance().await, sats(10_000 - 2_001));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
    }
}

/// A definite failure (confirmed by a fresh lookup) refunds exactly the reserve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definite_failure_refunds_exactly_the_reserve() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.node.script(hash, Script::Fail(FailureReason::NoRoute));
        let reason = failed(e.withdraw(&inv, Some(7_500)).await);
        assert_eq!(reason, FailureReason::NoRoute);
        let l = e.payment(hash).await;
        assert_eq!(l.status, Some(PaymentStatus::Failed));
        assert_eq!(l.failure_reason.as_deref(), Some("FAILURE_REASON_NO_ROUTE"));
        assert!(!l.settled);
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        // A failed payment leaves no history entry.
        assert!(e.store.wtxs_of_lntx(&l.id).await.unwrap().is_empty());
        e.assert_clean().await;
    }
}

/// A fee above the limit is never paid: the node fails the payment (no route within the
/// limit), and the reserve comes back whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fee_above_the_limit_is_a_refunded_failure() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.node.script(hash, Script::Succeed { fee: msat(5_001) });
        assert_eq!(
            failed(e.withdraw(&inv, Some(5_000)).await),
            FailureReason::NoRoute
        );
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
    }
}

/// `pay` says failed but a fresh lookup cannot confirm it (transport error, then in flight):
/// no refund; the payment is `unknown` until a lookup says how it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_not_confirmed_by_a_fresh_lookup_is_not_refunded() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, short_wait(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.node.script(hash, Script::Fail(FailureReason::NoRoute));
        e.spy.log().lookups.insert(hash, None);
        let l = pending(e.withdraw(&inv, Some(0)).await);
        assert_eq!(e.status(&l.id).await, Some(PaymentStatus::Unknown));
        e.spy
            .log()
            .lookups
            .insert(hash, Some(PaymentLookup::InFlight));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(e.status(&l.id).await, Some(PaymentStatus::Unknown));
        assert_eq!(e.balance().await, sats(9_000));
        assert_eq!(e.in_flight_msat().await, sats(1_000).as_i64());
        e.assert_clean().await;

        // Now the node's own record answers: failed.
        e.spy.log().lookups.remove(&hash);
        let l = e.wait_final(&l.id).await;
        assert_eq!(l.status, Some(PaymentStatus::Failed));
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
    }
}

/// `pay` says failed, the fresh lookup says it succeeded after all: settled, never refunded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_contradicted_by_the_lookup_settles() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        let (inv, preimage) = e.node.external_invoice(Some(sats(1_000)), "carol", 3600);
        let hash = inv.payment_hash();
        e.node.script(hash, Script::Fail(FailureReason::NoRoute));
        e.spy.log().lookups.insert(
            hash,
            Some(PaymentLookup::Succeeded {
                preimage,
                fee: msat(1_000),
            }),
        );
        let (wtx, _) = done(e.withdraw(&inv, Some(2_000)).await);
        let l = lntx_of(&wtx);
        assert_eq!(l.status, Some(PaymentStatus::Succeeded));
        assert_eq!(l.preimage, Some(preimage));
        assert_eq!(e.balance().await, sats(10_000 - 1_001));
        assert_eq!(e.in_flight_msat().await, 0);
        e.assert_clean().await;
    }
}

/// The node refuses the payment before sending (`Rejected`) and does not know the hash: a
/// definite failure, refunded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_rejection_of_an_unknown_payment_is_refunded() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.spy.log().reject.insert(hash);
        assert_eq!(
            failed(e.withdraw(&inv, Some(0)).await),
            FailureReason::Error
        );
        assert_eq!(e.payment(hash).await.status, Some(PaymentStatus::Failed));
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 0);
        e.assert_clean().await;
    }
}

// ------------------------------------------------------- timeouts and unknown outcomes

/// The node's `pay` times out (a hang longer than its timeout answers "in flight"): the payment
/// stays pending and reserved; a later lookup that says failed refunds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_timeout_stays_pending_then_a_failed_lookup_refunds() {
    for (_, db) in TestDb::all().await {
        let cfg = ServiceConfig {
            node_pay_timeout: Duration::from_millis(100),
            ..short_wait()
        };
        let e = Env::start(&db, cfg, 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.node.script(
            hash,
            Script::Hang {
                then: Box::new(Script::Unknown),
            },
        );
        let l = pending(e.withdraw(&inv, Some(1_000)).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // The node's timeout is no outcome.
        let now = e.lntx(&l.id).await;
        assert!(now.status.is_some_and(|s| s.is_live()), "{:?}", now.status);
        assert_eq!(e.balance().await, sats(10_000 - 1_001));
        assert_eq!(e.in_flight_msat().await, sats(1_001).as_i64());
        e.assert_clean().await;

        e.node
            .complete(hash, Completion::Fail(FailureReason::Timeout));
        let l = e.wait_final(&l.id).await;
        assert_eq!(l.status, Some(PaymentStatus::Failed));
        assert_eq!(l.failure_reason.as_deref(), Some("FAILURE_REASON_TIMEOUT"));
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
    }
}

/// A transport error on `pay` is no outcome: `unknown`, reserved. Lookups that say "in flight"
/// keep it so; the lookup that says succeeded settles it, without a second send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_error_stays_unknown_then_a_succeeded_lookup_settles() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, short_wait(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.node.script(
            hash,
            Script::TransportError {
                then: Box::new(Script::Unknown),
            },
        );
        let l = pending(e.withdraw(&inv, Some(2_000)).await);
        assert_eq!(e.status(&l.id).await, Some(PaymentStatus::Unknown));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(e.status(&l.id).await, Some(PaymentStatus::Unknown));
        assert_eq!(e.balance().await, sats(10_000 - 1_002));
        assert_eq!(e.in_flight_msat().await, sats(1_002).as_i64());
        e.assert_clean().await;

        e.node
            .complete(hash, Completion::Succeed { fee: msat(999) });
        let l = e.wait_final(&l.id).await;
        assert_eq!(l.status, Some(PaymentStatus::Succeeded));
        assert_eq!(l.fee, msat(999));
        assert_eq!(e.balance().await, sats(10_000 - 1_001));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
    }
}

/// A transport error where the node in fact failed the payment: the next lookup says failed,
/// and only then is it refunded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_error_then_a_failed_lookup_refunds() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, short_wait(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.node.script(
            hash,
            Script::TransportError {
                then: Box::new(Script::Fail(FailureReason::InsufficientBalance)),
            },
        );
        // The request waits for the driver; the first lookup (200 ms later) settles it.
        let r = e.withdraw(&inv, Some(0)).await;
        let l = match r {
            Err(ServiceError::PaymentFailed(FailureReason::InsufficientBalance)) => {
                e.payment(hash).await
            }
            other => e.wait_final(&pending(other).id).await,
        };
        assert_eq!(l.status, Some(PaymentStatus::Failed));
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
    }
}

/// A transport error whose payment the lookups cannot reach either: it stays `unknown` and
/// reserved for as long as that lasts (nothing is released on a timer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_node_keeps_the_payment_reserved() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, short_wait(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.node.script(
            hash,
            Script::TransportError {
                then: Box::new(Script::Fail(FailureReason::NoRoute)),
            },
        );
        e.spy.log().lookups.insert(hash, None);
        let l = pending(e.withdraw(&inv, Some(0)).await);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        assert_eq!(e.status(&l.id).await, Some(PaymentStatus::Unknown));
        assert_eq!(e.balance().await, sats(9_000));
        assert_eq!(e.in_flight_msat().await, sats(1_000).as_i64());
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
        // Reachable again: the node's failure is confirmed, the reserve returns.
        e.spy.log().lookups.remove(&hash);
        let l = e.wait_final(&l.id).await;
        assert_eq!(l.status, Some(PaymentStatus::Failed));
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.in_flight_msat().await, 0);
        e.assert_clean().await;
    }
}

// ------------------------------------------------------------- idempotent per payment hash

/// A second withdraw of an invoice whose payment is still pending is refused ("in flight"):
/// nothing more is reserved and the node is not asked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_withdraw_while_pending_is_refused() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, short_wait(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.node.script(hash, Script::Unknown);
        let l = pending(e.withdraw(&inv, Some(0)).await);
        let r = e.withdraw(&inv, Some(0)).await;
        assert!(
            matches!(r, Err(ServiceError::PaymentInFlight)),
            "[{}] {r:?}",
            e.kind
        );
        // Also from another wallet of the account.
        let other = e.new_wallet(5_000).await;
        let r = e.withdraw_from(&other, inv.as_str(), Some(0)).await;
        assert!(matches!(r, Err(ServiceError::PaymentInFlight)), "{r:?}");
        assert_eq!(e.balance_of(&other).await, sats(5_000));
        assert_eq!(e.balance().await, sats(9_000));
        assert_eq!(e.in_flight_msat().await, sats(1_000).as_i64());
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;

        e.node
            .complete(hash, Completion::Succeed { fee: Msat::ZERO });
        assert_eq!(
            e.wait_final(&l.id).await.status,
            Some(PaymentStatus::Succeeded)
        );
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
    }
}

/// After success the invoice is paid: a second withdraw is refused and charges nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_withdraw_after_success_is_refused() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        done(e.withdraw(&inv, Some(0)).await);
        let r = e.withdraw(&inv, Some(0)).await;
        assert!(
            matches!(r, Err(ServiceError::AlreadyPaid)),
            "[{}] {r:?}",
            e.kind
        );
        assert_eq!(e.balance().await, sats(9_000));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
    }
}

/// After a definite failure the invoice may be paid again (ARCHITECTURE.md: one *live or
/// succeeded* payment per hash; the node contract: a hash may be re-sent only after a definite
/// failure). The retry is a new payment with its own reserve; the failed one stays failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withdraw_after_a_definite_failure_is_a_new_attempt() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.node
            .script(hash, Script::Fail(FailureReason::IncorrectPaymentDetails));
        failed(e.withdraw(&inv, Some(0)).await);
        let first = e.payment(hash).await;
        assert_eq!(e.balance().await, sats(10_000));

        let (wtx, _) = done(e.withdraw(&inv, Some(0)).await);
        let second = lntx_of(&wtx);
        assert_ne!(first.id, second.id);
        assert_eq!(e.status(&first.id).await, Some(PaymentStatus::Failed));
        assert_eq!(second.status, Some(PaymentStatus::Succeeded));
        assert_eq!(e.balance().await, sats(9_000));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 2);
        e.assert_clean().await;
    }
}

/// An `Idempotency-Key` on a withdraw: the key names the payment in the reserve's transaction;
/// its answer is rebuilt from the payment as it is now; the same key on another request moves
/// no money and reaches no node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_names_the_payment_and_refuses_a_second_operation() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, short_wait(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let hash = inv.payment_hash();
        e.node.script(hash, Script::Unknown);
        let claim = e.svc.idempotency.claim(&e.caller, "key-1", "fp-1".into());
        let l = pending(
            satchel_store::idempotency::with_claim(claim.clone(), e.withdraw(&inv, Some(0))).await,
        );
        let rec = e
            .svc
            .idempotency
            .record(&e.caller, "key-1")
            .await
            .unwrap()
            .expect("key recorded with the reserve");
        assert_eq!(rec.effect, format!("payment:{}", l.id));
        assert_eq!(rec.token, claim.token);
        match e
            .svc
            .idempotency
            .rebuild(&e.caller, &rec.effect)
            .await
            .unwrap()
        {
            Rebuilt::Payment(PaymentResult::Pending(p)) => assert_eq!(p.id, l.id),
            other => panic!("{other:?}"),
        }

        // Same key, another invoice: refused inside the reserve's transaction.
        let inv2 = e.carol_invoice(500);
        let claim2 = e.svc.idempotency.claim(&e.caller, "key-1", "fp-2".into());
        let r = satchel_store::idempotency::with_claim(claim2, e.withdraw(&inv2, Some(0))).await;
        assert!(r.is_err(), "[{}] {r:?}", e.kind);
        assert!(
            e.store
                .latest_outgoing(&inv2.payment_hash())
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(e.node.pay_count(inv2.payment_hash()), 0);
        assert_eq!(e.balance().await, sats(9_000));

        // Once it ends, the rebuilt answer follows.
        e.node
            .complete(hash, Completion::Fail(FailureReason::NoRoute));
        e.wait_final(&l.id).await;
        match e
            .svc
            .idempotency
            .rebuild(&e.caller, &rec.effect)
            .await
            .unwrap()
        {
            Rebuilt::PaymentFailed(FailureReason::NoRoute) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
    }
}

// ---------------------------------------------------------------------- internal payments

/// One of our own invoices settles inside the ledger: payer −a, payee +a, no node payment, no
/// fee, nothing in flight; the node's invoice is taken away (cancelled) so nobody outside can
/// pay it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_payment_settles_inside_without_the_node() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        let payee = e.new_wallet(0).await;
        let inv = e.our_invoice(&payee, 1_234, 3600).await;
        let (wtx, fee_wtx) = done(
            e.withdraw_from(&e.wallet, &inv.payment_request, Some(0))
                .await,
        );
        assert!(fee_wtx.is_none());
        assert_eq!(wtx.amount_msat, -1_234_000);
        assert_eq!(e.balance().await, sats(10_000 - 1_234));
        assert_eq!(e.balance_of(&payee).await, sats(1_234));
        assert_eq!(e.in_flight_msat().await, 0);
        let out = e.payment(inv.payment_hash).await;
        assert_eq!(out.status, Some(PaymentStatus::Succeeded));
        assert_eq!(out.fee, Msat::ZERO);
        let paid = e.lntx(&inv.id).await;
        assert!(paid.settled);
        assert_eq!(e.node.pay_count(inv.payment_hash), 0);
        assert!(e.spy.log().pays.is_empty());
        assert_eq!(
            e.node.lookup_invoice(inv.payment_hash).await.unwrap(),
            Some(InvoiceState::Canceled)
        );
        // Paid once: a second attempt is refused.
        let r = e
            .withdraw_from(&e.wallet, &inv.payment_request, Some(0))
            .await;
        assert!(matches!(r, Err(ServiceError::AlreadyPaid)), "{r:?}");
        assert_eq!(e.balance().await, sats(10_000 - 1_234));
        e.assert_clean().await;
    }
}

/// What an internal payment refuses moves no money, reaches no node, and leaves the invoice
/// open on the node (the take is final on this node kind, so it is made only after the
/// ledger's checks pass).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_payment_refusals_move_nothing() {
    for (_, db) in TestDb::all().await {
        let cfg = ServiceConfig {
            max_send: Some(sats(5_000)),
            ..cfg()
        };
        let e = Env::start(&db, cfg, 2_000).await;
        let payee = e.new_wallet(0).await;

        // Zero amount (an amountless invoice).
        let zero = e.our_invoice(&payee, 0, 3600).await;
        let r = e
            .withdraw_from(&e.wallet, &zero.payment_request, Some(0))
            .await;
        assert!(
            matches!(r, Err(ServiceError::Invoice(Bolt11Error::ZeroAmount))),
            "[{}] {r:?}",
            e.kind
        );
        // Over the send limit.
        let big = e.our_invoice(&payee, 5_001, 3600).await;
        let r = e
            .withdraw_from(&e.wallet, &big.payment_request, Some(0))
            .await;
        match &r {
            Err(ServiceError::Invalid(m)) => assert!(m.contains("5000 satoshi"), "{m}"),
            other => panic!("{other:?}"),
        }
        // More than the balance.
        let dear = e.our_invoice(&payee, 2_001, 3600).await;
        let r = e
            .withdraw_from(&e.wallet, &dear.payment_request, Some(0))
            .await;
        assert!(
            matches!(r, Err(ServiceError::InsufficientBalance(2_000))),
            "{r:?}"
        );
        // Expired.
        let old = e.our_invoice(&payee, 100, 1).await;
        let expires_at = old.expires_at.unwrap();
        while now_secs() < expires_at {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = e
            .withdraw_from(&e.wallet, &old.payment_request, Some(0))
            .await;
        assert!(
            matches!(r, Err(ServiceError::Invoice(Bolt11Error::Expired))),
            "{r:?}"
        );

        for inv in [&zero, &big, &dear] {
            assert!(!e.lntx(&inv.id).await.settled);
            assert!(
                e.store
                    .latest_outgoing(&inv.payment_hash)
                    .await
                    .unwrap()
                    .is_none()
            );
            assert_eq!(e.node.pay_count(inv.payment_hash), 0);
            assert_eq!(
                e.node.lookup_invoice(inv.payment_hash).await.unwrap(),
                Some(InvoiceState::Open),
                "refused invoice still payable from outside"
            );
        }
        assert_eq!(e.node.pay_count(old.payment_hash), 0);
        assert!(e.spy.log().pays.is_empty());
        assert_eq!(e.balance().await, sats(2_000));
        assert_eq!(e.balance_of(&payee).await, Msat::ZERO);
        assert_eq!(e.in_flight_msat().await, 0);
        e.assert_clean().await;
    }
}

/// An invoice of ours already paid from outside through the node: the wallet is refused and
/// not debited (the payee is credited from the incoming stream, once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_payment_of_an_invoice_the_node_was_paid_is_refused() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        let payee = e.new_wallet(0).await;
        let inv = e.our_invoice(&payee, 700, 3600).await;
        let bolt11 = Bolt11::parse(&inv.payment_request).unwrap();
        e.node.pay_our_invoice(&bolt11, None).unwrap();
        let r = e
            .withdraw_from(&e.wallet, &inv.payment_request, Some(0))
            .await;
        assert!(
            matches!(r, Err(ServiceError::AlreadyPaid)),
            "[{}] {r:?}",
            e.kind
        );
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.node.pay_count(inv.payment_hash), 0);
        e.svc.incoming.process_batch(Duration::ZERO).await.unwrap();
        assert_eq!(e.balance_of(&payee).await, sats(700));
        assert_eq!(e.in_flight_msat().await, 0);
        e.assert_clean().await;
    }
}

// -------------------------------------------------------------------------------- keysend

fn keysend_to(dest: NodePubkey, amount_sats: u64, records: &[(&str, &str)]) -> KeysendRequest {
    let mut custom = serde_json::Map::new();
    for (k, v) in records {
        custom.insert((*k).to_owned(), serde_json::Value::String((*v).to_owned()));
    }
    KeysendRequest {
        dest_pubkey: dest.to_hex(),
        amount: sats(amount_sats),
        fee_limit_msat: None,
        custom_records: Some(custom),
        pass_thru: None,
    }
}

/// The keysend the spy saw last.
fn last_keysend(spy: &Spy) -> (PaymentHash, satchel_domain::CustomRecords, Preimage) {
    match spy.log().pays.last().cloned() {
        Some(PayTarget::Keysend {
            preimage,
            custom_records,
            ..
        }) => (preimage.hash(), custom_records, preimage),
        other => panic!("expected a keysend, got {other:?}"),
    }
}

/// A keysend carries the caller's custom records to the node (the preimage record is the
/// backend's to add), stores them with the preimage record for display, and settles like any
/// payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keysend_passes_custom_records_and_settles() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        e.node
            .set_default_script(Script::Succeed { fee: msat(2_500) });
        let req = keysend_to(
            e.node.external_pubkey(),
            500,
            &[("696969", "hello"), ("65536", "x")],
        );
        let (wtx, fee_wtx) = done(
            e.svc
                .payments
                .keysend(&e.caller, e.wallet.as_str(), req)
                .await,
        );
        let (hash, records, preimage) = last_keysend(&e.spy);
        assert_eq!(
            records.0.get(&696_969).map(Vec::as_slice),
            Some(&b"hello"[..])
        );
        assert_eq!(records.0.get(&65_536).map(Vec::as_slice), Some(&b"x"[..]));
        assert!(!records.0.contains_key(&KEYSEND_PREIMAGE_TLV));
        let l = lntx_of(&wtx);
        assert!(l.is_keysend);
        assert_eq!(l.payment_hash, hash);
        assert_eq!(l.preimage, Some(preimage));
        let shown: serde_json::Value =
            serde_json::from_str(l.custom_records.as_deref().unwrap()).unwrap();
        assert_eq!(shown["696969"], "hello");
        assert_eq!(shown[KEYSEND_PREIMAGE_TLV.to_string()], preimage.to_hex());
        assert_eq!(fee_wtx.unwrap().amount_msat, -3_000);
        assert_eq!(e.balance().await, sats(10_000 - 503));
        assert_eq!(e.in_flight_msat().await, 0);
        assert_eq!(e.node.pay_count(hash), 1);
        e.assert_clean().await;
    }
}

/// A keysend that definitely fails is refunded; running the same validated keysend again (an
/// async job resumed) reports that failure and never sends the hash again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keysend_failure_refunds_and_a_rerun_does_not_resend() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        let k = e
            .svc
            .payments
            .validate_keysend(keysend_to(e.node.external_pubkey(), 500, &[]))
            .unwrap();
        let hash = Preimage::from_hex(&k.preimage).unwrap().hash();
        e.node.script(hash, Script::Fail(FailureReason::NoRoute));
        let wallet = e.store.wallet(&e.wallet).await.unwrap().unwrap();
        let wait = Some(Duration::from_secs(5));
        let r = e
            .svc
            .payments
            .execute_keysend(&e.caller, &wallet, &k, wait)
            .await;
        assert_eq!(failed(r), FailureReason::NoRoute);
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.in_flight_msat().await, 0);

        let r = e
            .svc
            .payments
            .execute_keysend(&e.caller, &wallet, &k, wait)
            .await;
        assert_eq!(failed(r), FailureReason::NoRoute);
        assert_eq!(e.node.pay_count(hash), 1);
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.payment(hash).await.status, Some(PaymentStatus::Failed));
        e.assert_clean().await;
    }
}

/// Re-running a keysend that is still pending reports the same payment: one reserve, one send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keysend_rerun_while_pending_reports_the_same_payment() {
    for (_, db) in TestDb::all().await {
        let e = Env::start(&db, cfg(), 10_000).await;
        let k = e
            .svc
            .payments
            .validate_keysend(keysend_to(e.node.external_pubkey(), 500, &[]))
            .unwrap();
        let hash = Preimage::from_hex(&k.preimage).unwrap().hash();
        e.node.script(hash, Script::Unknown);
        let wallet = e.store.wallet(&e.wallet).await.unwrap().unwrap();
        let wait = Some(Duration::from_millis(300));
        let first = pending(
            e.svc
                .payments
                .execute_keysend(&e.caller, &wallet, &k, wait)
                .await,
        );
        let again = pending(
            e.svc
                .payments
                .execute_keysend(&e.caller, &wallet, &k, wait)
                .await,
        );
        assert_eq!(first.id, again.id);
        assert_eq!(e.node.pay_count(hash), 1);
        // 500 sats + the default 5% limit (25 sats).
        assert_eq!(e.balance().await, sats(10_000 - 525));
        assert_eq!(e.in_flight_msat().await, sats(525).as_i64());
        e.assert_clean().await;
        e.node
            .complete(hash, Completion::Fail(FailureReason::NoRoute));
        assert_eq!(
            e.wait_final(&first.id).await.status,
            Some(PaymentStatus::Failed)
        );
        assert_eq!(e.balance().await, sats(10_000));
        assert_eq!(e.in_flight_msat().await, 0);
        e.assert_clean().await;
    }
}

// ------------------------------------------------------------------- recovery on restart

/// Runs `phase` on a runtime of its own, then drops that runtime with everything it still runs
/// (the payment drivers): a process that died. Only what `phase` committed remains.
fn run_then_die<T: Send, F: std::future::Future<Output = T> + Send>(phase: F) -> T {
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                let out = rt.block_on(phase);
                rt.shutdown_background();
                out
            })
            .join()
            .unwrap()
        })
    })
}

/// What a process that died right after `reserve_payment` committed leaves: a `reserved`
/// payment the node never heard of.
async fn reserve_only(e: &Env, target: &PayTarget, fee_limit: Msat) -> LnTxRecord {
    let (dest, request, preimage, is_keysend, custom_records, memo) = match target {
        PayTarget::Bolt11 { invoice, .. } => (
            invoice.payee().to_hex(),
            invoice.as_str().to_owned(),
            None,
            false,
            None,
            "carol".to_owned(),
        ),
        PayTarget::Keysend {
            dest,
            amount,
            preimage,
            custom_records,
        } => {
            let mut shown = serde_json::Map::new();
            for (t, v) in &custom_records.0 {
                shown.insert(
                    t.to_string(),
                    serde_json::Value::String(String::from_utf8(v.clone()).unwrap()),
                );
            }
            shown.insert(
                KEYSEND_PREIMAGE_TLV.to_string(),
                serde_json::Value::String(preimage.to_hex()),
            );
            (
                dest.to_hex(),
                format!("{}:{}", dest.to_hex(), amount.sats_floor()),
                Some(*preimage),
                true,
                Some(serde_json::Value::Object(shown).to_string()),
                "keysend".to_owned(),
            )
        }
    };
    e.store
        .reserve_payment(&ReserveCmd {
            lntx_id: LnTxId::generate(),
            account_id: e.caller.account_id.clone(),
            wallet_id: e.wallet.clone(),
            now: now_secs(),
            node_id: e.svc.ctx.cfg.node_id.clone(),
            dest_pubkey: dest,
            payment_request: request,
            payment_hash: target.payment_hash(),
            memo,
            description_hash: None,
            payment_addr: None,
            amount: target.amount(),
            fee_limit,
            expiry_secs: None,
            expires_at: None,
            preimage,
            is_keysend,
            custom_records,
            pass_thru: "{}".into(),
            wtx_type: WtxType::LnWithdrawal,
        })
        .await
        .unwrap()
}

/// Restart after a crash between the reserve and the dispatch: recovery sends it (once), from
/// our records alone: a BOLT11 payment and a keysend whose custom records are rebuilt from the
/// stored JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_sends_a_payment_reserved_before_a_crash() {
    for (_, db) in TestDb::all().await {
        let spy = Spy::new(
            Arc::new(ScriptedBackend::new(Network::Regtest, SEED)),
            false,
        );
        let e = Env::start_on(&db, cfg(), spy.clone(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let bolt11 = reserve_only(
            &e,
            &PayTarget::Bolt11 {
                invoice: inv.clone(),
                amount: sats(1_000),
            },
            sats(10),
        )
        .await;
        let mut records = satchel_domain::CustomRecords::default();
        records.0.insert(696_969, b"hi".to_vec());
        let keysend = reserve_only(
            &e,
            &PayTarget::Keysend {
                dest: e.node.external_pubkey(),
                amount: sats(200),
                preimage: Preimage::random(),
                custom_records: records.clone(),
            },
            sats(5),
        )
        .await;
        assert_eq!(e.balance().await, sats(10_000 - 1_010 - 205));
        let (caller, wallet) = (e.caller.clone(), e.wallet.clone());
        drop(e);

        let e = Env::attach(&db, cfg(), spy, caller, wallet).await;
        assert_eq!(e.svc.payments.recover().await.unwrap(), 2);
        for l in [&bolt11, &keysend] {
            let l = e.wait_final(&l.id).await;
            assert_eq!(l.status, Some(PaymentStatus::Succeeded), "[{}]", e.kind);
            assert_eq!(e.node.pay_count(l.payment_hash), 1);
            assert_eq!(
                e.spy.at_pay(l.payment_hash).status,
                Some(PaymentStatus::Dispatched)
            );
        }
        let sent = e
            .spy
            .log()
            .pays
            .iter()
            .find(|t| t.payment_hash() == keysend.payment_hash)
            .cloned();
        match sent {
            Some(PayTarget::Keysend {
                custom_records,
                amount,
                ..
            }) => {
                assert_eq!(custom_records, records);
                assert_eq!(amount, sats(200));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e.balance().await, sats(10_000 - 1_200));
        assert_eq!(e.in_flight_msat().await, 0);
        // A second recovery finds nothing live.
        assert_eq!(e.svc.payments.recover().await.unwrap(), 0);
        e.assert_clean().await;
    }
}

/// Restart after a crash between the dispatch mark and the node call: the node does not know
/// the hash, so recovery (which asks first) sends it, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_sends_a_dispatched_payment_the_node_never_got() {
    for (_, db) in TestDb::all().await {
        let spy = Spy::new(
            Arc::new(ScriptedBackend::new(Network::Regtest, SEED)),
            false,
        );
        let e = Env::start_on(&db, cfg(), spy.clone(), 10_000).await;
        let inv = e.carol_invoice(1_000);
        let target = PayTarget::Bolt11 {
            invoice: inv.clone(),
            amount: sats(1_000),
        };
        let l = reserve_only(&e, &target, Msat::ZERO).await;
        assert!(
            e.store
                .mark_payment(
                    &l.id,
                    &[PaymentStatus::Reserved],
                    PaymentStatus::Dispatched,
                    now_secs()
                )
                .await
                .unwrap()
        );
        let (caller, wallet) = (e.caller.clone(), e.wallet.clone());
        drop(e);

        let e = Env::attach(&db, cfg(), spy, caller, wallet).await;
        assert_eq!(e.svc.payments.recover().await.unwrap(), 1);
        let l = e.wait_final(&l.id).await;
        assert_eq!(l.status, Some(PaymentStatus::Succeeded), "[{}]", e.kind);
        assert_eq!(e.node.pay_count(inv.payment_hash()), 1);
        assert_eq!(e.balance().await, sats(9_000));
        assert_eq!(e.in_flight_msat().await, 0);
        e.assert_clean().await;
    }
}

/// A process dies while the node has three payments in flight. While it is down one succeeds
/// and one fails; the third is still in flight. The restarted process's recovery looks each up
/// again (never re-sending): the first is settled, the second refunded, the third stays
/// reserved until the node says how it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_after_a_crash_books_what_the_node_decided_meanwhile() {
    for (_, db) in TestDb::all().await {
        let spy = Spy::new(
            Arc::new(ScriptedBackend::new(Network::Regtest, SEED)),
            false,
        );
        let invoices: Vec<Bolt11> = (0..3)
            .map(|_| spy.node.external_invoice(Some(sats(1_000)), "c", 3600).0)
            .collect();
        for inv in &invoices {
            spy.node.script(inv.payment_hash(), Script::Unknown);
        }
        let (caller, wallet, ids) = run_then_die(async {
            let e = Env::start_on(&db, short_wait(), spy.clone(), 10_000).await;
            let mut ids = Vec::new();
            for inv in &invoices {
                ids.push(pending(e.withdraw(inv, Some(0)).await).id);
            }
            (e.caller.clone(), e.wallet.clone(), ids)
        });
        let [ok, bad, open] = [0, 1, 2].map(|i| invoices[i].payment_hash());
        spy.node
            .complete(ok, Completion::Succeed { fee: Msat::ZERO });
        spy.node.complete(
            bad,
            Completion::Fail(FailureReason::IncorrectPaymentDetails),
        );

        let e = Env::attach(&db, short_wait(), spy, caller, wallet).await;
        assert_eq!(e.balance().await, sats(7_000));
        assert_eq!(e.svc.payments.recover().await.unwrap(), 3);
        assert_eq!(
            e.wait_final(&ids[0]).await.status,
            Some(PaymentStatus::Succeeded)
        );
        assert_eq!(
            e.wait_final(&ids[1]).await.status,
            Some(PaymentStatus::Failed)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            e.status(&ids[2]).await.is_some_and(|s| s.is_live()),
            "[{}]",
            e.kind
        );
        // 1,000 paid by the first, 1,000 still reserved for the third.
        assert_eq!(e.balance().await, sats(10_000 - 1_000 - 1_000));
        assert_eq!(e.in_flight_msat().await, sats(1_000).as_i64());
        e.assert_clean().await;

        e.node
            .complete(open, Completion::Succeed { fee: Msat::ZERO });
        assert_eq!(
            e.wait_final(&ids[2]).await.status,
            Some(PaymentStatus::Succeeded)
        );
        for h in [ok, bad, open] {
            assert_eq!(e.node.pay_count(h), 1);
        }
        assert_eq!(e.balance().await, sats(10_000 - 2_000));
        assert_eq!(e.in_flight_msat().await, 0);
        e.assert_clean().await;
    }
}

// ------------------------------------------------------------ the cancel batcher

/// On a node whose take is provisional (the embedded node), internally settled invoices are
/// cancelled on the node afterwards, gathered into batches; each is cancelled exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_batcher_cancels_internally_settled_invoices_in_batches() {
    for (_, db) in TestDb::all().await {
        let spy = Spy::new(Arc::new(ScriptedBackend::new(Network::Regtest, SEED)), true);
        let e = Env::start_on(&db, cfg(), spy, 10_000).await;
        let payee = e.new_wallet(0).await;
        let mut invoices = Vec::new();
        for _ in 0..6 {
            invoices.push(e.our_invoice(&payee, 100, 3600).await);
        }
        let pays = invoices
            .iter()
            .map(|inv| e.withdraw_from(&e.wallet, &inv.payment_request, Some(0)));
        for r in futures::future::join_all(pays).await {
            done(r);
        }
        let mut cancelled = Vec::new();
        for _ in 0..100 {
            cancelled = e.spy.log().cancel_batches.concat();
            if cancelled.len() >= invoices.len() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let batches = e.spy.log().cancel_batches.len();
        assert!(batches >= 1 && batches <= invoices.len(), "{batches}");
        assert_eq!(cancelled.len(), invoices.len(), "[{}] each once", e.kind);
        for inv in &invoices {
            assert!(cancelled.contains(&inv.payment_hash));
            assert_eq!(
                e.node.lookup_invoice(inv.payment_hash).await.unwrap(),
                Some(InvoiceState::Canceled)
            );
            assert_eq!(e.node.pay_count(inv.payment_hash), 0);
        }
        assert!(e.spy.log().taken.is_empty());
        assert!(e.spy.log().released.is_empty());
        assert_eq!(e.balance().await, sats(10_000 - 600));
        assert_eq!(e.balance_of(&payee).await, sats(600));
        assert_eq!(e.in_flight_msat().await, 0);
        e.assert_clean().await;
    }
}

/// With a provisional take, an internal payment the ledger refuses gives the invoice back to
/// the node (released, not cancelled): it stays payable from outside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_internal_payment_releases_a_provisional_take() {
    for (_, db) in TestDb::all().await {
        let spy = Spy::new(Arc::new(ScriptedBackend::new(Network::Regtest, SEED)), true);
        let e = Env::start_on(&db, cfg(), spy, 100).await;
        let payee = e.new_wallet(0).await;
        let inv = e.our_invoice(&payee, 101, 3600).await;
        let r = e
            .withdraw_from(&e.wallet, &inv.payment_request, Some(0))
            .await;
        assert!(
            matches!(r, Err(ServiceError::InsufficientBalance(100))),
            "[{}] {r:?}",
            e.kind
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(e.spy.log().released, vec![inv.payment_hash]);
        assert!(e.spy.log().taken.is_empty());
        assert!(e.spy.log().cancel_batches.is_empty());
        assert_eq!(
            e.node.lookup_invoice(inv.payment_hash).await.unwrap(),
            Some(InvoiceState::Open)
        );
        assert_eq!(e.balance().await, sats(100));
        assert_eq!(e.balance_of(&payee).await, Msat::ZERO);
        assert_eq!(e.in_flight_msat().await, 0);
        e.assert_clean().await;
    }
}
