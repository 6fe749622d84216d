//! Property tests: random sequences of money movements over three wallets, checked after every
//! step against a simple in-memory model, on SQLite and on Postgres.
//!
//! Amounts the node reports (deposits, fees, invoice and payment amounts) are arbitrary msat;
//! wallets move in whole sats only: credits rounded down, charges rounded up, the difference in
//! `sys:revenue`. After every step each wallet's history, as shown in sats, adds up to its
//! balance plus its live reserves, and every balance is whole sats.
//!
//! One database per kind is shared by all cases (each case gets a fresh account and wallets), so
//! the audit at the end of every case also re-checks everything earlier cases left behind,
//! including payments still in flight.

// Test code: panicking on an unexpected error is the point.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::cell::Cell;

use common::*;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use satchel_domain::{
    AccountId, LnTxId, Msat, PaymentHash, PaymentStatus, WalletId, WtxId, WtxType, payment_charge,
    payment_reserve, sats_floor,
};
use satchel_store::{
    CreditOutcome, InternalPayError, PaymentStateError, ReserveError, Store, TransferError,
};
use satchel_testkit::db::TestDb;

const WALLETS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// An invoice of `w` settled by the node.
    Deposit { w: usize, msat: u64 },
    /// An internal transfer (possibly to itself, which must be refused); whole sats, as the
    /// API only ever transfers.
    Transfer { from: usize, to: usize, msat: u64 },
    /// Reserve an outgoing payment.
    Reserve { w: usize, msat: u64, fee_limit: u64 },
    /// Settle a live payment with a fee of `fee_pct`% of its limit.
    Settle { pick: Index, fee_pct: u64 },
    /// Fail a live payment.
    Fail { pick: Index },
    /// Issue an invoice of `w` (left open for internal payments).
    Invoice { w: usize, msat: u64 },
    /// Pay an issued invoice (open or already paid) from `payer`, inside the ledger.
    PayInternal { payer: usize, pick: Index },
    /// Replay a finished event (settle/fail/credit again, or the contradicting outcome).
    Replay { pick: Index, contradict: bool },
}

fn op() -> impl Strategy<Value = Op> {
    let w = 0..WALLETS;
    prop_oneof![
        3 => (w.clone(), 1..5_000_000u64).prop_map(|(w, msat)| Op::Deposit { w, msat }),
        3 => (w.clone(), w.clone(), 1..3_000u64)
            .prop_map(|(from, to, sats)| Op::Transfer { from, to, msat: sats * 1000 }),
        3 => (w.clone(), 1..3_000_000u64, 0..60_000u64)
            .prop_map(|(w, msat, fee_limit)| Op::Reserve { w, msat, fee_limit }),
        2 => (any::<Index>(), 0..=100u64).prop_map(|(pick, fee_pct)| Op::Settle { pick, fee_pct }),
        2 => any::<Index>().prop_map(|pick| Op::Fail { pick }),
        2 => (w.clone(), 1..2_000_000u64).prop_map(|(w, msat)| Op::Invoice { w, msat }),
        2 => (w, any::<Index>()).prop_map(|(payer, pick)| Op::PayInternal { payer, pick }),
        1 => (any::<Index>(), any::<bool>())
            .prop_map(|(pick, contradict)| Op::Replay { pick, contradict }),
    ]
}

/// A finished event that may be replayed.
#[derive(Debug, Clone)]
enum Done {
    Settled(LnTxId),
    Failed(LnTxId),
    Deposited(PaymentHash),
}

struct Live {
    id: LnTxId,
    w: usize,
    amount: u64,
    fee_limit: u64,
}

struct Inv {
    hash: PaymentHash,
    payee: usize,
    amount: u64,
    paid: bool,
}

#[derive(Default)]
struct Model {
    balances: [i64; WALLETS],
    /// What this case added to `sys:revenue`.
    revenue: i64,
    live: Vec<Live>,
    invoices: Vec<Inv>,
    done: Vec<Done>,
}

fn amount(msat: u64) -> Msat {
    Msat::from_msat(msat).unwrap()
}

fn floor_sat(msat: u64) -> i64 {
    (msat - msat % 1000) as i64
}

fn ceil_sat(msat: u64) -> i64 {
    msat.next_multiple_of(1000) as i64
}

fn reserve_of(amount_msat: u64, fee_limit_msat: u64) -> i64 {
    payment_reserve(amount(amount_msat), amount(fee_limit_msat))
        .unwrap()
        .as_i64()
}

/// The invariant clients rely on: the `num_satoshis` of a wallet's history (each rounded
/// toward −∞, as shown) add up to its balance in sats plus its live reserves, and the balance
/// is whole sats.
async fn check_history_sums(
    store: &Store,
    acct: &AccountId,
    ws: &[WalletId],
    model: &Model,
    step: usize,
    op: &Op,
) -> Result<(), TestCaseError> {
    for (i, w) in ws.iter().enumerate() {
        let (wtxs, total) = store.list_wtxs(acct, Some(w), 0, 10_000).await.unwrap();
        prop_assert_eq!(wtxs.len() as u64, total);
        let shown: i64 = wtxs.iter().map(|t| sats_floor(t.amount_msat)).sum();
        let balance = model.balances[i];
        let reserved: i64 = model
            .live
            .iter()
            .filter(|p| p.w == i)
            .map(|p| reserve_of(p.amount, p.fee_limit))
            .sum();
        prop_assert!(
            balance % 1000 == 0,
            "step {step} {op:?}: wallet {i} balance {balance} msat is not whole sats"
        );
        prop_assert!(
            wtxs.iter().all(|t| t.amount_msat % 1000 == 0),
            "step {step} {op:?}: wallet {i} has a sub-sat entry"
        );
        prop_assert_eq!(
            shown * 1000,
            balance + reserved,
            "step {} {:?}: wallet {} history shows {} sats, balance {} + reserved {}",
            step,
            op,
            i,
            shown,
            balance,
            reserved
        );
    }
    Ok(())
}

fn fail_msg(step: usize, op: &Op, what: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(format!("step {step} {op:?}: {what}"))
}

async fn check_balances(
    store: &Store,
    ws: &[WalletId],
    model: &Model,
    step: usize,
    op: &Op,
) -> Result<(), TestCaseError> {
    for (i, w) in ws.iter().enumerate() {
        let rec = store.wallet(w).await.unwrap().unwrap();
        let stored = rec.balance.as_i64();
        prop_assert!(
            stored >= 0,
            "step {step} {op:?}: wallet {i} negative: {stored}"
        );
        prop_assert_eq!(
            stored,
            model.balances[i],
            "step {} {:?}: wallet {} balance differs from the model",
            step,
            op,
            i
        );
    }
    Ok(())
}

async fn run_case(store: &Store, ops: &[Op]) -> Result<(), TestCaseError> {
    let acct: AccountId = account(store).await;
    let ws = wallets(store, &acct, WALLETS).await;
    let mut m = Model::default();
    let revenue_before = store.audit().await.unwrap().revenue_msat;

    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Deposit { w, msat } => {
                let (_, hash) = invoice(store, &acct, &ws[*w], amount(*msat)).await;
                let out = store
                    .credit_invoice(&hash, amount(*msat), NOW, &WtxId::generate())
                    .await;
                match out {
                    Ok(CreditOutcome::Credited(wtx)) => {
                        // Whole sats credited, the sub-sat rest to the operator.
                        prop_assert_eq!(wtx.amount_msat, floor_sat(*msat));
                        prop_assert_eq!(wtx.wtx_type, WtxType::LnDeposit);
                    }
                    other => return Err(fail_msg(step, op, format!("{other:?}"))),
                }
                m.balances[*w] += floor_sat(*msat);
                m.revenue += (*msat % 1000) as i64;
                m.done.push(Done::Deposited(hash));
            }
            Op::Transfer { from, to, msat } => {
                let out = store
                    .transfer(&transfer_cmd(&acct, &ws[*from], &ws[*to], amount(*msat)))
                    .await;
                let expect_ok = from != to && m.balances[*from] >= *msat as i64;
                match out {
                    Ok(done) if expect_ok => {
                        prop_assert_eq!(done.wtx_out.amount_msat, -(*msat as i64));
                        prop_assert_eq!(done.wtx_in.amount_msat, *msat as i64);
                        m.balances[*from] -= *msat as i64;
                        m.balances[*to] += *msat as i64;
                    }
                    Err(TransferError::SameWallet) if from == to => {}
                    Err(TransferError::InsufficientBalance) if from != to && !expect_ok => {}
                    other => {
                        return Err(fail_msg(
                            step,
                            op,
                            format!("model balance {}: {other:?}", m.balances[*from]),
                        ));
                    }
                }
            }
            Op::Reserve { w, msat, fee_limit } => {
                let cmd = reserve_cmd(
                    &acct,
                    &ws[*w],
                    random_hash(),
                    amount(*msat),
                    amount(*fee_limit),
                );
                // The reserve is the worst case the wallet can be charged, in whole sats.
                let total = reserve_of(*msat, *fee_limit);
                match store.reserve_payment(&cmd).await {
                    Ok(p) if m.balances[*w] >= total => {
                        prop_assert_eq!(p.status, Some(PaymentStatus::Reserved));
                        m.balances[*w] -= total;
                        m.live.push(Live {
                            id: p.id,
                            w: *w,
                            amount: *msat,
                            fee_limit: *fee_limit,
                        });
                    }
                    Err(ReserveError::InsufficientBalance(b)) if m.balances[*w] < total => {
                        prop_assert_eq!(
                            b.as_i64(),
                            m.balances[*w],
                            "step {}: balance carried",
                            step
                        );
                    }
                    other => {
                        return Err(fail_msg(
                            step,
                            op,
                            format!("model balance {}: {other:?}", m.balances[*w]),
                        ));
                    }
                }
            }
            Op::Settle { pick, fee_pct } => {
                if m.live.is_empty() {
                    continue;
                }
                let p = m.live.swap_remove(pick.index(m.live.len()));
                let fee = p.fee_limit * fee_pct / 100;
                let out = store.settle_payment(&settle_cmd(&p.id, amount(fee))).await;
                // Charged: amount + fee rounded up to the sat (for a whole-sat amount, the fee
                // rounded up); the rest of the reserve comes back.
                let (shown, shown_fee) = payment_charge(amount(p.amount), amount(fee)).unwrap();
                let (shown, shown_fee) = (shown.as_i64(), shown_fee.as_i64());
                prop_assert!(
                    shown_fee >= ceil_sat(fee) - 1000
                        && shown + shown_fee >= (p.amount + fee) as i64
                );
                if p.amount % 1000 == 0 {
                    prop_assert_eq!(shown_fee, ceil_sat(fee), "the fee is rounded up");
                }
                match out {
                    Ok(s) => {
                        prop_assert!(s.newly_settled);
                        prop_assert_eq!(s.wtx.amount_msat, -shown);
                        prop_assert_eq!(s.wtx.wtx_type, WtxType::LnWithdrawal);
                        prop_assert_eq!(
                            s.fee_wtx.map(|f| f.amount_msat),
                            (shown_fee > 0).then_some(-shown_fee)
                        );
                    }
                    Err(e) => return Err(fail_msg(step, op, e)),
                }
                m.balances[p.w] += reserve_of(p.amount, p.fee_limit) - shown - shown_fee;
                m.revenue += shown + shown_fee - (p.amount + fee) as i64;
                m.done.push(Done::Settled(p.id));
            }
            Op::Fail { pick } => {
                if m.live.is_empty() {
                    continue;
                }
                let p = m.live.swap_remove(pick.index(m.live.len()));
                let rec = store
                    .fail_payment(&p.id, "FAILURE_REASON_NO_ROUTE", NOW)
                    .await
                    .map_err(|e| fail_msg(step, op, e))?;
                prop_assert_eq!(rec.status, Some(PaymentStatus::Failed));
                m.balances[p.w] += reserve_of(p.amount, p.fee_limit);
                m.done.push(Done::Failed(p.id));
            }
            Op::Invoice { w, msat } => {
                let (_, hash) = invoice(store, &acct, &ws[*w], amount(*msat)).await;
                m.invoices.push(Inv {
                    hash,
                    payee: *w,
                    amount: *msat,
                    paid: false,
                });
            }
            Op::PayInternal { payer, pick } => {
                if m.invoices.is_empty() {
                    continue;
                }
                let i = pick.index(m.invoices.len());
                let (hash, payee, amt, paid) = {
                    let inv = &m.invoices[i];
                    (inv.hash, inv.payee, inv.amount, inv.paid)
                };
                let out = store
                    .pay_internal(&internal_cmd(&acct, &ws[*payer], hash))
                    .await;
                // A sub-sat invoice amount: the payer pays it rounded up, the payee gets it
                // rounded down.
                let (debit, credit) = (ceil_sat(amt), floor_sat(amt));
                match out {
                    Ok(done) if !paid && m.balances[*payer] >= debit => {
                        prop_assert_eq!(done.payer_wtx.amount_msat, -debit);
                        prop_assert_eq!(done.payee_wtx.amount_msat, credit);
                        m.balances[*payer] -= debit;
                        m.balances[payee] += credit;
                        m.revenue += debit - credit;
                        m.invoices[i].paid = true;
                    }
                    Err(InternalPayError::AlreadyPaid) if paid => {}
                    Err(InternalPayError::InsufficientBalance(b))
                        if !paid && m.balances[*payer] < debit =>
                    {
                        prop_assert_eq!(b.as_i64(), m.balances[*payer]);
                    }
                    other => {
                        return Err(fail_msg(
                            step,
                            op,
                            format!(
                                "paid {paid}, model balance {}: {other:?}",
                                m.balances[*payer]
                            ),
                        ));
                    }
                }
            }
            Op::Replay { pick, contradict } => {
                if m.done.is_empty() {
                    continue;
                }
                match m.done[pick.index(m.done.len())].clone() {
                    Done::Settled(id) if *contradict => {
                        let r = store.fail_payment(&id, "FAILURE_REASON_TIMEOUT", NOW).await;
                        prop_assert!(
                            matches!(r, Err(PaymentStateError::AlreadySucceeded)),
                            "step {step}: {r:?}"
                        );
                    }
                    Done::Settled(id) => {
                        let s = store
                            .settle_payment(&settle_cmd(&id, amount(1)))
                            .await
                            .map_err(|e| fail_msg(step, op, e))?;
                        prop_assert!(!s.newly_settled);
                    }
                    Done::Failed(id) if *contradict => {
                        let r = store.settle_payment(&settle_cmd(&id, Msat::ZERO)).await;
                        prop_assert!(
                            matches!(r, Err(PaymentStateError::AlreadyFailed)),
                            "step {step}: {r:?}"
                        );
                    }
                    Done::Failed(id) => {
                        let r = store.fail_payment(&id, "FAILURE_REASON_TIMEOUT", NOW).await;
                        prop_assert!(r.is_ok(), "step {step}: {r:?}");
                    }
                    Done::Deposited(hash) => {
                        let r = store
                            .credit_invoice(&hash, amount(1), NOW, &WtxId::generate())
                            .await;
                        prop_assert!(
                            matches!(r, Ok(CreditOutcome::AlreadyCredited)),
                            "step {step}: {r:?}"
                        );
                    }
                }
            }
        }
        check_balances(store, &ws, &m, step, op).await?;
        check_history_sums(store, &acct, &ws, &m, step, op).await?;
    }

    // Live payments are exactly the model's.
    let mut live: Vec<String> = store
        .live_payments()
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.account_id == acct)
        .map(|p| p.id.to_string())
        .collect();
    let mut expected: Vec<String> = m.live.iter().map(|p| p.id.to_string()).collect();
    live.sort();
    expected.sort();
    prop_assert_eq!(live, expected);

    let rep = store.audit().await.unwrap();
    prop_assert!(rep.is_clean(), "audit: {:#?}", rep.problems);
    // Every sub-sat remainder of this case, and nothing else, landed in the revenue account.
    prop_assert_eq!(rep.revenue_msat - revenue_before, m.revenue);
    Ok(())
}

fn run_model(kind: &str, db: TestDb) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let store = rt.block_on(connect(&db.url));
    let config = Config {
        cases: 64,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let cases = Cell::new(0u32);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&proptest::collection::vec(op(), 1..=40), |ops| {
        cases.set(cases.get() + 1);
        rt.block_on(run_case(&store, &ops))
    });
    if let Err(e) = result {
        panic!("[{kind}] ledger diverged from the model: {e}");
    }
    // Everything all cases left behind still adds up.
    let rep = rt.block_on(store.audit()).unwrap();
    assert!(rep.is_clean(), "[{kind}] final audit: {:#?}", rep.problems);
    assert!(
        rep.wallets >= u64::from(cases.get()) * WALLETS as u64,
        "[{kind}] {rep:?}"
    );
    rt.block_on(store.close());
    drop(rt);
    drop(db);
}

#[test]
fn sqlite_ledger_matches_model() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::sqlite());
    drop(rt);
    run_model("sqlite", db);
}

#[test]
fn postgres_ledger_matches_model() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(TestDb::postgres());
    drop(rt);
    let Some(db) = db else {
        eprintln!("SATCHEL_SKIP_PG=1: Postgres property test skipped");
        return;
    };
    run_model("postgres", db);
}
