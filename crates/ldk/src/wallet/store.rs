//! The wallet's file: BDK's whole [`ChangeSet`] as JSON, replaced atomically on every persist.
//!
//! Why not `bdk_file_store`: its own README calls it a development/testing database without
//! upgrade compatibility, and an append-only log needs its own torn-tail handling. A node
//! wallet's change set stays small (its descriptors, revealed indices, its own transactions and
//! a sparse chain of checkpoints), so rewriting it whole is cheap and makes a crash leave either
//! the old file or the new one, never a mix. The file holds public descriptors only (no private
//! key: those are re-derived from the node seed on every open), but it is still written 0600 as
//! it tells which addresses and coins are ours.
//!
//! Durability: write a temporary file, `fsync` it, rename it over the old one, `fsync` the
//! directory. [`AsyncWalletPersister::persist`] returns only after all of that, and
//! [`bdk_wallet::PersistedWallet::persist_async`] clears the staged changes only on success, so
//! the wallet acts on (hands out, returns for broadcast) only what is already on disk.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;

use bdk_wallet::chain::Merge;
use bdk_wallet::{AsyncWalletPersister, ChangeSet};

/// Errors of the wallet file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading, writing or syncing the file failed.
    #[error("wallet file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a change set this version can read.
    #[error("wallet file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
}

/// The persister: the file's path and the change set it holds (the aggregate of every change
/// persisted so far), so that each persist writes the whole new state.
#[derive(Debug)]
pub(crate) struct WalletFile {
    path: PathBuf,
    on_disk: ChangeSet,
}

impl WalletFile {
    /// The file name inside the wallet directory.
    pub(crate) const NAME: &'static str = "changeset.json";

    pub(crate) fn new(dir: &Path) -> WalletFile {
        WalletFile {
            path: dir.join(Self::NAME),
            on_disk: ChangeSet::default(),
        }
    }

    fn io(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.path.clone(),
            source,
        }
    }

    async fn read(&mut self) -> Result<ChangeSet, StoreError> {
        let path = self.path.clone();
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(ChangeSet::default()),
            Err(e) => return Err(self.io(e)),
        };
        let changeset: ChangeSet =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        self.on_disk = changeset.clone();
        Ok(changeset)
    }

    async fn write(&mut self, changes: &ChangeSet) -> Result<(), StoreError> {
        let mut next = self.on_disk.clone();
        next.merge(changes.clone());
        let bytes = serde_json::to_vec(&next).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            reason: format!("cannot encode: {e}"),
        })?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || replace_file(&path, &bytes))
            .await
            .map_err(|e| self.io(std::io::Error::other(e)))?
            .map_err(|e| self.io(e))?;
        self.on_disk = next;
        Ok(())
    }
}

/// Replaces `path` with `bytes` so that a crash leaves the old or the new content: temporary
/// file, fsync, rename, fsync of the directory (which makes the rename itself durable).
fn replace_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = satchel_lightning::fs_private::create_private_file(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

type FutureResult<'a, T> =
    Pin<Box<dyn std::future::Future<Output = Result<T, StoreError>> + Send + 'a>>;

impl AsyncWalletPersister for WalletFile {
    type Error = StoreError;

    fn initialize<'a>(persister: &'a mut Self) -> FutureResult<'a, ChangeSet>
    where
        Self: 'a,
    {
        Box::pin(persister.read())
    }

    fn persist<'a>(persister: &'a mut Self, changeset: &'a ChangeSet) -> FutureResult<'a, ()>
    where
        Self: 'a,
    {
        Box::pin(persister.write(changeset))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bdk_wallet::chain::local_chain;
    use bitcoin::BlockHash;
    use bitcoin::hashes::Hash;

    fn chain_changes(height: u32, byte: u8) -> ChangeSet {
        ChangeSet {
            local_chain: local_chain::ChangeSet {
                blocks: [(height, Some(BlockHash::from_byte_array([byte; 32])))].into(),
            },
            ..ChangeSet::default()
        }
    }

    #[tokio::test]
    async fn persists_merges_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let mut file = WalletFile::new(dir.path());
        assert!(WalletFile::initialize(&mut file).await.unwrap().is_empty());
        WalletFile::persist(&mut file, &chain_changes(0, 1))
            .await
            .unwrap();
        WalletFile::persist(&mut file, &chain_changes(5, 2))
            .await
            .unwrap();

        let mut again = WalletFile::new(dir.path());
        let loaded = WalletFile::initialize(&mut again).await.unwrap();
        let mut expected = chain_changes(0, 1);
        expected.merge(chain_changes(5, 2));
        assert_eq!(loaded, expected);
        assert!(!dir.path().join("changeset.json.tmp").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(WalletFile::NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn a_corrupt_file_is_an_error_not_an_empty_wallet() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(WalletFile::NAME), b"{not json").unwrap();
        let mut file = WalletFile::new(dir.path());
        let err = WalletFile::initialize(&mut file).await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }
}
