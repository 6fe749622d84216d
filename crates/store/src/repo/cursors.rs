//! Persisted stream cursors (how far a node's event stream was processed).

use super::to_u64;
use crate::{Store, StoreError, args};

impl Store {
    /// A persisted stream cursor (0 if never set).
    pub async fn cursor(&self, name: &str) -> Result<u64, StoreError> {
        let mut c = self.read_conn().await?;
        match c
            .fetch_opt("SELECT value FROM cursors WHERE name = $1", args![name])
            .await?
        {
            Some(r) => Ok(to_u64(r.i64(0)?)),
            None => Ok(0),
        }
    }

    /// Advances a cursor (never moves it backwards).
    pub async fn set_cursor(&self, name: &str, value: u64) -> Result<(), StoreError> {
        let v = i64::try_from(value).map_err(|_| StoreError::Corrupt("cursor overflow".into()))?;
        let mut tx = self.begin_write().await?;
        // One statement (an upsert), so two writers creating the same cursor at once cannot
        // collide on its primary key (Postgres).
        tx.exec(
            "INSERT INTO cursors (name, value) VALUES ($1, $2) ON CONFLICT (name) \
             DO UPDATE SET value = excluded.value WHERE cursors.value < excluded.value",
            args![name, v],
        )
        .await?;
        tx.commit().await
    }
}
