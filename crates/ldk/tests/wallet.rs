//! The node's on-chain wallet (`OnchainWallet`) against a real in-process regtest chain
//! (`satchel-chain`) served over Esplora REST and bitcoind JSON-RPC: funding, sending, channel
//! funding transactions, restart, key derivation and refusals. Every sync is explicit and the
//! chain mines on demand, so nothing waits on time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;

use bitcoin::address::NetworkUnchecked;
use bitcoin::bip32::{DerivationPath, Xpriv};
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::Secp256k1;
use bitcoin::{
    Address, Amount, CompressedPublicKey, FeeRate, Network, ScriptBuf, Transaction, WScriptHash,
};
use satchel_chain::state::Found;
use satchel_chain::{Chain, ChainServer};
use satchel_ldk::{ChainSource, OnchainWallet, WalletError};

struct Net {
    _dir: tempfile::TempDir,
    chain: Chain,
    server: ChainServer,
}

async fn net() -> Net {
    let dir = tempfile::tempdir().unwrap();
    let chain = Chain::open(dir.path()).unwrap();
    let server = ChainServer::start(chain.clone(), SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    // Mature faucet coins.
    chain.mine(101, None).unwrap();
    Net {
        _dir: dir,
        chain,
        server,
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Esplora,
    Rpc,
}

const KINDS: [Kind; 2] = [Kind::Esplora, Kind::Rpc];

impl Net {
    fn source(&self, kind: Kind) -> ChainSource {
        match kind {
            Kind::Esplora => ChainSource::Esplora {
                url: self.server.esplora_url.clone(),
            },
            Kind::Rpc => ChainSource::BitcoindRpc {
                url: self.server.rpc_url.clone(),
                user: self.server.credentials.user.clone(),
                password: self.server.credentials.password.clone(),
            },
        }
    }

    async fn wallet(&self, dir: &Path, seed: u8, kind: Kind) -> OnchainWallet {
        OnchainWallet::open(dir, &[seed; 32], Network::Regtest, self.source(kind))
            .await
            .unwrap()
    }

    /// Broadcasts through the chain server's Esplora `POST /tx`.
    async fn broadcast(&self, tx: &Transaction) {
        let resp = reqwest::Client::new()
            .post(format!("{}/tx", self.server.esplora_url))
            .body(bitcoin::consensus::encode::serialize_hex(tx))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(status.is_success(), "broadcast refused: {status} {body}");
        assert_eq!(body, tx.compute_txid().to_string());
    }

    fn in_mempool(&self, tx: &Transaction) -> bool {
        let txid = tx.compute_txid();
        self.chain
            .with_state(|st| st.mempool.entries.contains_key(&txid))
    }

    fn confirmed_height(&self, tx: &Transaction) -> Option<u32> {
        let txid = tx.compute_txid();
        self.chain.with_state(|st| match st.find_tx(&txid) {
            Some(Found::Confirmed { entry, .. }) => Some(entry.height),
            _ => None,
        })
    }

    /// inputs − outputs, with the inputs' values from the chain.
    fn fee_of(&self, tx: &Transaction) -> Amount {
        let inputs: Amount = self.chain.with_state(|st| {
            tx.input
                .iter()
                .map(|i| st.output(&i.previous_output).unwrap().value)
                .sum()
        });
        let outputs: Amount = tx.output.iter().map(|o| o.value).sum();
        inputs.checked_sub(outputs).unwrap()
    }
}

fn unchecked(address: &Address) -> Address<NetworkUnchecked> {
    Address::from_str(&address.to_string()).unwrap()
}

/// The fee pays at least `rate` for the transaction's weight (BDK, like Core, prices weight,
/// so the fee may be a fraction of a vbyte under rate × the rounded-up vsize), and BDK's
/// estimate (which counts the largest signature) overshoots by at most a few weight units per
/// input.
fn assert_fee_matches_rate(fee: Amount, tx: &Transaction, rate_sat_per_vb: u64) {
    let weight_wu = tx.weight().to_wu();
    let slack_wu = 4 * tx.input.len() as u64 + 4;
    let fee_x4 = fee.to_sat() * 4;
    assert!(
        fee_x4 >= rate_sat_per_vb * weight_wu,
        "fee {fee} below {rate_sat_per_vb} sat/vB for {weight_wu} WU"
    );
    assert!(
        fee_x4 <= rate_sat_per_vb * (weight_wu + slack_wu) + 4,
        "fee {fee} too high for {rate_sat_per_vb} sat/vB and {weight_wu} WU"
    );
}

#[tokio::test]
async fn faucet_coins_are_pending_then_confirmed_on_both_sources() {
    for kind in KINDS {
        let net = net().await;
        let dir = tempfile::tempdir().unwrap();
        let wallet = net.wallet(dir.path(), 1, kind).await;
        wallet.sync().await.unwrap();
        assert_eq!(
            wallet.balance().await.total(),
            Some(Amount::ZERO),
            "{kind:?}"
        );

        let address = wallet.new_address().await.unwrap();
        net.chain.fund(&address, 300_000).unwrap();
        wallet.sync().await.unwrap();
        let b = wallet.balance().await;
        assert_eq!(b.untrusted_pending, Amount::from_sat(300_000), "{kind:?}");
        assert_eq!(b.confirmed, Amount::ZERO, "{kind:?}");

        net.chain.mine(1, None).unwrap();
        wallet.sync().await.unwrap();
        let b = wallet.balance().await;
        assert_eq!(b.confirmed, Amount::from_sat(300_000), "{kind:?}");
        assert_eq!(b.untrusted_pending, Amount::ZERO, "{kind:?}");
        assert_eq!(b.trusted_pending, Amount::ZERO, "{kind:?}");
        assert_eq!(wallet.synced_height().await, 102, "{kind:?}");
        let utxos = wallet.list_unspent().await;
        assert_eq!(utxos.len(), 1, "{kind:?}");
        assert_eq!(utxos[0].value, Amount::from_sat(300_000));
        assert_eq!(utxos[0].confirmation_height, Some(102));
        assert!(!utxos[0].is_change);
    }
}

#[tokio::test]
async fn send_to_address_pays_the_recipient_and_the_change_comes_back() {
    for kind in KINDS {
        let net = net().await;
        let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let wallet = net.wallet(d1.path(), 2, kind).await;
        let recipient = net.wallet(d2.path(), 3, kind).await;
        net.chain
            .fund(&wallet.new_address().await.unwrap(), 500_000)
            .unwrap();
        net.chain.mine(1, None).unwrap();
        wallet.sync().await.unwrap();

        let to = recipient.new_address().await.unwrap();
        let amount = Amount::from_sat(120_000);
        let tx = wallet
            .send_to_address(&unchecked(&to), amount, FeeRate::from_sat_per_vb_u32(5))
            .await
            .unwrap();
        assert!(!net.in_mempool(&tx), "the wallet does not broadcast");
        let paid: Vec<_> = tx
            .output
            .iter()
            .filter(|o| o.script_pubkey == to.script_pubkey())
            .collect();
        assert_eq!(paid.len(), 1);
        assert_eq!(paid[0].value, amount);
        let fee = net.fee_of(&tx);
        assert_fee_matches_rate(fee, &tx, 5);
        // Its coin is reserved at once: another payment spends the change instead, and is
        // then never broadcast (the next sync forgets it, as the chain never saw it).
        let again = wallet
            .send_to_address(&unchecked(&to), amount, FeeRate::from_sat_per_vb_u32(5))
            .await
            .unwrap();
        assert_eq!(again.input.len(), 1);
        assert_eq!(again.input[0].previous_output.txid, tx.compute_txid());

        net.broadcast(&tx).await;
        assert!(net.in_mempool(&tx));
        wallet.sync().await.unwrap();
        let change = Amount::from_sat(500_000) - amount - fee;
        let b = wallet.balance().await;
        assert_eq!(
            (b.confirmed, b.trusted_pending),
            (Amount::ZERO, change),
            "{kind:?}"
        );

        net.chain.mine(1, None).unwrap();
        assert!(net.confirmed_height(&tx).is_some());
        wallet.sync().await.unwrap();
        recipient.sync().await.unwrap();
        assert_eq!(wallet.balance().await.confirmed, change, "{kind:?}");
        assert_eq!(recipient.balance().await.confirmed, amount, "{kind:?}");
        let utxos = wallet.list_unspent().await;
        assert_eq!(utxos.len(), 1);
        assert!(utxos[0].is_change);

        let listed = wallet.transactions().await;
        assert_eq!(listed.len(), 2, "{kind:?}: funding and payment");
        let sent = listed.iter().find(|t| t.txid == tx.compute_txid()).unwrap();
        assert_eq!(sent.sent, Amount::from_sat(500_000));
        assert_eq!(sent.received, change);
        assert_eq!(sent.fee, Some(fee));
        assert_eq!(sent.confirmation_height, Some(103));
        assert!(sent.confirmation_time_secs.is_some());
    }
}

#[tokio::test]
async fn funding_tx_pays_exactly_the_channel_output_and_is_valid() {
    let net = net().await;
    let dir = tempfile::tempdir().unwrap();
    let wallet = net.wallet(dir.path(), 4, Kind::Esplora).await;
    // Two coins, so the funding amount needs both.
    for _ in 0..2 {
        net.chain
            .fund(&wallet.new_address().await.unwrap(), 200_000)
            .unwrap();
    }
    net.chain.mine(1, None).unwrap();
    wallet.sync().await.unwrap();

    // A P2WSH output like a channel's 2-of-2.
    let script = ScriptBuf::new_p2wsh(&WScriptHash::hash(b"a channel's funding script"));
    let tx = wallet
        .build_funding_tx(script.clone(), 250_000, FeeRate::from_sat_per_vb_u32(3))
        .await
        .unwrap();
    let funding: Vec<_> = tx
        .output
        .iter()
        .filter(|o| o.script_pubkey == script)
        .collect();
    assert_eq!(funding.len(), 1);
    assert_eq!(funding[0].value, Amount::from_sat(250_000));
    assert_eq!(tx.input.len(), 2);
    assert!(
        tx.input
            .iter()
            .all(|i| !i.witness.is_empty() && i.script_sig.is_empty()),
        "segwit inputs only (LDK requires it)"
    );
    assert_fee_matches_rate(net.fee_of(&tx), &tx, 3);

    let (fee, _vsize) = net.chain.test_accept(&tx).unwrap();
    assert_eq!(Amount::from_sat(fee), net.fee_of(&tx));
    net.chain.send_transaction(tx.clone()).unwrap();
    let mined = net.chain.mine(1, None).unwrap();
    assert_eq!(net.confirmed_height(&tx), Some(103));
    assert!(net.chain.with_state(|st| {
        st.entry_by_hash(&mined[0])
            .unwrap()
            .block
            .txdata
            .contains(&tx)
    }));
    wallet.sync().await.unwrap();
    let listed = wallet.transactions().await;
    let t = listed.iter().find(|t| t.txid == tx.compute_txid()).unwrap();
    assert_eq!(t.confirmation_height, Some(103));
}

#[tokio::test]
async fn reopening_keeps_the_address_sequence_and_the_balance() {
    for kind in KINDS {
        let net = net().await;
        let dir = tempfile::tempdir().unwrap();
        let node_dir = dir.path().join("node");
        let source = net.source(kind);
        let wallet = OnchainWallet::open_for_node(&node_dir, Network::Regtest, source.clone())
            .await
            .unwrap();
        assert!(node_dir.join("keys_seed").exists());
        assert!(node_dir.join("wallet").join("changeset.json").exists());
        let mut handed_out = Vec::new();
        for _ in 0..3 {
            handed_out.push(wallet.new_address().await.unwrap());
        }
        net.chain.fund(&handed_out[1], 150_000).unwrap();
        net.chain.mine(1, None).unwrap();
        wallet.sync().await.unwrap();
        let before = wallet.balance().await;
        assert_eq!(before.confirmed, Amount::from_sat(150_000));
        let sweep = wallet.sweep_script().await.unwrap();
        drop(wallet);

        let wallet = OnchainWallet::open_for_node(&node_dir, Network::Regtest, source)
            .await
            .unwrap();
        assert_eq!(wallet.balance().await, before, "{kind:?}: as persisted");
        assert_eq!(wallet.synced_height().await, 102);
        let next = wallet.new_address().await.unwrap();
        assert!(
            !handed_out.contains(&next),
            "{kind:?}: {next} handed out twice"
        );
        // The sequence goes on where it stopped: the 4th address of that seed.
        let seed: [u8; 32] = {
            let hex = std::fs::read_to_string(node_dir.join("keys_seed")).unwrap();
            let mut s = [0u8; 32];
            for (i, b) in s.iter_mut().enumerate() {
                *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
            }
            s
        };
        assert_eq!(next, bip84_address(&seed, 0, 3));
        let sweep_again = wallet.sweep_script().await.unwrap();
        assert_ne!(
            sweep, sweep_again,
            "{kind:?}: change scripts are not reused"
        );
        assert_eq!(sweep_again, bip84_address(&seed, 1, 1).script_pubkey());

        net.chain.mine(1, None).unwrap();
        wallet.sync().await.unwrap();
        assert_eq!(wallet.balance().await, before, "{kind:?}: after sync");
        assert_eq!(wallet.synced_height().await, 103);
    }
}

/// The address at `m/84'/1'/0'/<chain>/<index>` of the seed as a BIP32 master seed.
fn bip84_address(seed: &[u8; 32], chain: u32, index: u32) -> Address {
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(Network::Regtest, seed).unwrap();
    let path = DerivationPath::from_str(&format!("m/84'/1'/0'/{chain}/{index}")).unwrap();
    let key = master.derive_priv(&secp, &path).unwrap();
    let pubkey = CompressedPublicKey(key.private_key.public_key(&secp));
    Address::p2wpkh(&pubkey, Network::Regtest)
}

#[tokio::test]
async fn the_same_seed_gives_the_same_addresses_and_another_seed_others() {
    let net = net().await;
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let first = net.wallet(a.path(), 7, Kind::Esplora).await;
    let twin = net.wallet(b.path(), 7, Kind::Rpc).await;
    let other = net.wallet(c.path(), 8, Kind::Esplora).await;
    let addr = first.new_address().await.unwrap();
    assert_eq!(addr, twin.new_address().await.unwrap());
    assert_ne!(addr, other.new_address().await.unwrap());
    // BIP84 under the seed as BIP32 master: documented, recoverable elsewhere.
    assert_eq!(addr, bip84_address(&[7; 32], 0, 0));
    assert!(addr.to_string().starts_with("bcrt1q"));
    // Not LDK's keys: LDK's node key is m/0' of the same master.
    let secp = Secp256k1::new();
    let master = Xpriv::new_master(Network::Regtest, &[7; 32]).unwrap();
    let node_key = master
        .derive_priv(&secp, &DerivationPath::from_str("m/0'").unwrap())
        .unwrap();
    let node_addr = Address::p2wpkh(
        &CompressedPublicKey(node_key.private_key.public_key(&secp)),
        Network::Regtest,
    );
    assert_ne!(addr, node_addr);
}

#[tokio::test]
async fn a_wallet_file_of_another_seed_is_refused() {
    let net = net().await;
    let dir = tempfile::tempdir().unwrap();
    let w = net.wallet(dir.path(), 9, Kind::Esplora).await;
    w.new_address().await.unwrap();
    drop(w);
    let err = OnchainWallet::open(
        dir.path(),
        &[10; 32],
        Network::Regtest,
        net.source(Kind::Esplora),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, WalletError::Open(_)), "{err}");
    let err = OnchainWallet::open(
        dir.path(),
        &[9; 32],
        Network::Testnet,
        net.source(Kind::Esplora),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, WalletError::Open(_)), "{err}");
}

#[tokio::test]
async fn insufficient_funds_dust_and_foreign_addresses_are_refused() {
    let net = net().await;
    let dir = tempfile::tempdir().unwrap();
    let wallet = net.wallet(dir.path(), 11, Kind::Esplora).await;
    let to = unchecked(&bip84_address(&[12; 32], 0, 0));
    let rate = FeeRate::from_sat_per_vb_u32(2);

    // Nothing at all.
    let err = wallet
        .send_to_address(&to, Amount::from_sat(10_000), rate)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WalletError::InsufficientFunds { available, .. } if available == Amount::ZERO),
        "{err}"
    );

    // Someone else's unconfirmed payment is not spendable yet.
    net.chain
        .fund(&wallet.new_address().await.unwrap(), 100_000)
        .unwrap();
    wallet.sync().await.unwrap();
    assert_eq!(
        wallet.balance().await.untrusted_pending,
        Amount::from_sat(100_000)
    );
    let err = wallet
        .send_to_address(&to, Amount::from_sat(10_000), rate)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WalletError::InsufficientFunds { available, .. } if available == Amount::ZERO),
        "{err}"
    );
    net.chain.mine(1, None).unwrap();
    // And another one, unconfirmed: still not counted nor selected below.
    net.chain
        .fund(&wallet.new_address().await.unwrap(), 50_000)
        .unwrap();
    wallet.sync().await.unwrap();
    assert_eq!(
        wallet.balance().await.untrusted_pending,
        Amount::from_sat(50_000)
    );

    // More than the balance.
    let err = wallet
        .send_to_address(&to, Amount::from_sat(100_001), rate)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WalletError::InsufficientFunds { needed, available }
            if needed == Amount::from_sat(100_001) && available == Amount::from_sat(100_000)),
        "{err}"
    );
    // The whole confirmed balance: the fee does not fit (coin selection says so, without
    // reaching for the unconfirmed coin).
    let err = wallet
        .send_to_address(&to, Amount::from_sat(100_000), rate)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WalletError::InsufficientFunds { needed, .. } if needed > Amount::from_sat(100_000)),
        "{err}"
    );
    // Dust for P2WPKH (294 sats at the 3 sat/vB dust relay fee).
    let err = wallet
        .send_to_address(&to, Amount::from_sat(293), rate)
        .await
        .unwrap_err();
    assert!(
        matches!(err, WalletError::Dust { amount, min }
            if amount == Amount::from_sat(293) && min == Amount::from_sat(294)),
        "{err}"
    );
    let err = wallet
        .build_funding_tx(ScriptBuf::new_p2wsh(&WScriptHash::hash(b"x")), 100, rate)
        .await
        .unwrap_err();
    assert!(matches!(err, WalletError::Dust { .. }), "{err}");
    // A mainnet address.
    let mainnet: Address<NetworkUnchecked> = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
        .parse()
        .unwrap();
    let err = wallet
        .send_to_address(&mainnet, Amount::from_sat(10_000), rate)
        .await
        .unwrap_err();
    assert!(matches!(err, WalletError::WrongNetwork { .. }), "{err}");
    // None of the refusals touched the coins.
    assert_eq!(wallet.balance().await.confirmed, Amount::from_sat(100_000));
    assert_eq!(wallet.list_unspent().await.len(), 2);
}

#[tokio::test]
async fn bitcoind_sync_follows_a_reorg() {
    let net = net().await;
    let dir = tempfile::tempdir().unwrap();
    let wallet = net.wallet(dir.path(), 13, Kind::Rpc).await;
    let txid = net
        .chain
        .fund(&wallet.new_address().await.unwrap(), 80_000)
        .unwrap();
    net.chain.mine(1, None).unwrap();
    wallet.sync().await.unwrap();
    assert_eq!(wallet.balance().await.confirmed, Amount::from_sat(80_000));

    // The block confirming it is replaced; the transaction goes back to the mempool.
    net.chain.reorg(1).unwrap();
    wallet.sync().await.unwrap();
    assert_eq!(wallet.synced_height().await, 103);
    let b = wallet.balance().await;
    assert_eq!(
        (b.confirmed, b.untrusted_pending),
        (Amount::ZERO, Amount::from_sat(80_000))
    );

    net.chain.mine(1, None).unwrap();
    wallet.sync().await.unwrap();
    assert_eq!(wallet.balance().await.confirmed, Amount::from_sat(80_000));
    let listed = wallet.transactions().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].txid, listed[0].confirmation_height),
        (txid, Some(104))
    );
}

#[tokio::test]
async fn a_transaction_never_broadcast_frees_its_coins_at_the_next_sync() {
    for kind in KINDS {
        let net = net().await;
        let dir = tempfile::tempdir().unwrap();
        let wallet = net.wallet(dir.path(), 14, kind).await;
        net.chain
            .fund(&wallet.new_address().await.unwrap(), 90_000)
            .unwrap();
        net.chain.mine(1, None).unwrap();
        wallet.sync().await.unwrap();
        let to = unchecked(&bip84_address(&[15; 32], 0, 0));
        let rate = FeeRate::from_sat_per_vb_u32(2);
        let abandoned = wallet
            .send_to_address(&to, Amount::from_sat(50_000), rate)
            .await
            .unwrap();
        assert!(wallet.balance().await.confirmed < Amount::from_sat(90_000));
        // The chain source never saw it: evicted (BDK: evicted at or after last seen).
        net.chain.mine(1, None).unwrap();
        wallet.sync().await.unwrap();
        assert_eq!(
            wallet.balance().await.confirmed,
            Amount::from_sat(90_000),
            "{kind:?}"
        );
        let tx = wallet
            .send_to_address(&to, Amount::from_sat(50_000), rate)
            .await
            .unwrap();
        let coins = |t: &Transaction| {
            t.input
                .iter()
                .map(|i| i.previous_output)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            coins(&tx),
            coins(&abandoned),
            "{kind:?}: the same coin again"
        );
    }
}

#[tokio::test]
async fn ldk_sweeps_get_fresh_change_scripts_that_the_wallet_watches() {
    use lightning::sign::ChangeDestinationSource;
    let net = net().await;
    let dir = tempfile::tempdir().unwrap();
    let wallet = net.wallet(dir.path(), 16, Kind::Rpc).await;
    let first = wallet.get_change_destination_script().await.unwrap();
    let second = wallet.get_change_destination_script().await.unwrap();
    assert_ne!(first, second);
    assert_eq!(first, bip84_address(&[16; 32], 1, 0).script_pubkey());
    assert_eq!(second, bip84_address(&[16; 32], 1, 1).script_pubkey());

    // A sweep paying the second one shows up as ours.
    let swept = Address::from_script(&second, Network::Regtest).unwrap();
    net.chain.fund(&swept, 70_000).unwrap();
    net.chain.mine(1, None).unwrap();
    wallet.sync().await.unwrap();
    assert_eq!(wallet.balance().await.confirmed, Amount::from_sat(70_000));
    let utxos = wallet.list_unspent().await;
    assert!(utxos[0].is_change);
}

#[tokio::test]
async fn bitcoind_sync_walks_a_long_chain_in_batches() {
    let net = net().await;
    let dir = tempfile::tempdir().unwrap();
    let wallet = net.wallet(dir.path(), 17, Kind::Rpc).await;
    let (a, b) = (
        wallet.new_address().await.unwrap(),
        wallet.new_address().await.unwrap(),
    );
    // One payment early in the chain, one past the walk's first batch (500 blocks): the
    // wallet's first walk finds both.
    net.chain.fund(&a, 40_000).unwrap();
    net.chain.mine(450, None).unwrap();
    net.chain.fund(&b, 60_000).unwrap();
    net.chain.mine(200, None).unwrap();
    let tip = net.chain.tip().height;
    wallet.sync().await.unwrap();
    assert_eq!(wallet.synced_height().await, tip);
    assert_eq!(wallet.balance().await.confirmed, Amount::from_sat(100_000));
    let heights: Vec<_> = wallet
        .list_unspent()
        .await
        .iter()
        .map(|u| u.confirmation_height)
        .collect();
    assert_eq!(heights, vec![Some(102), Some(552)]);
}

/// Copies a wallet directory as a crash would leave it: the wallet that wrote it still open.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[tokio::test]
async fn what_a_call_returned_is_on_disk_when_it_returns() {
    let net = net().await;
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let wallet = net.wallet(&live, 18, Kind::Esplora).await;
    net.chain
        .fund(&wallet.new_address().await.unwrap(), 100_000)
        .unwrap();
    net.chain.mine(1, None).unwrap();
    wallet.sync().await.unwrap();
    let handed_out = wallet.new_address().await.unwrap();
    let tx = wallet
        .send_to_address(
            &unchecked(&bip84_address(&[19; 32], 0, 0)),
            Amount::from_sat(30_000),
            FeeRate::from_sat_per_vb_u32(2),
        )
        .await
        .unwrap();

    let crashed = dir.path().join("crashed");
    copy_dir(&live, &crashed);
    let reopened = net.wallet(&crashed, 18, Kind::Esplora).await;
    let next = reopened.new_address().await.unwrap();
    assert_ne!(next, handed_out);
    assert_eq!(next, bip84_address(&[18; 32], 0, 2));
    // The payment is there, its coin spent: nothing to spend twice.
    assert!(
        reopened
            .transactions()
            .await
            .iter()
            .any(|t| t.txid == tx.compute_txid() && t.confirmation_height.is_none())
    );
    let utxos = reopened.list_unspent().await;
    assert_eq!(utxos.len(), 1);
    assert_eq!(utxos[0].outpoint.txid, tx.compute_txid());
    assert!(utxos[0].is_change);
}
