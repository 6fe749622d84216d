//! An append-only, group-committed log of Satchel's node records (`records.log`).
//!
//! Why not one file per record (LDK's `FilesystemStore`)? Every record written that way costs a
//! new file, an fsync, a rename and a directory fsync, and callers wrote it while holding the
//! node's state lock, so invoice creation and internal settlement were serialized on the disk.
//! Here a write is one `write(2)` of one line; durability comes from [`Journal::wait`], where one
//! `fdatasync` covers every line appended before it (group commit), so concurrent writers share
//! the flush.
//!
//! Format: one JSON object per line, `{"s":section,"k":key,"v":value}`; `"v":null` removes the
//! key. The last line for a key wins. On open, a torn tail (a crash in the middle of an append
//! that was never acknowledged) is cut off; an unreadable line *followed by readable ones* is
//! corruption and refuses to open. When dead lines outnumber live records the log is rewritten
//! (temp file, fsync, rename, directory fsync) before use.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Live records after replay: section → key → value.
pub(crate) type Records = BTreeMap<String, BTreeMap<String, Value>>;

/// Rewrite the log on open once it holds this many more lines than live records.
const COMPACT_SLACK_LINES: usize = 10_000;

/// Proof that a line was appended; [`Journal::wait`] makes it durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[must_use = "a ticket must be waited on before the write counts as durable"]
pub(crate) struct Ticket(u64);

#[derive(Serialize)]
struct LineOut<'a, T: Serialize> {
    s: &'a str,
    k: &'a str,
    v: Option<&'a T>,
}

#[derive(Deserialize)]
struct LineIn {
    s: String,
    k: String,
    v: Option<Value>,
}

struct Writer {
    file: File,
    /// Bytes of whole lines in the file; a failed append is cut back to this.
    len: u64,
    /// Lines appended since open.
    appended: u64,
}

/// The log. Cheap to share behind an `Arc`.
pub(crate) struct Journal {
    writer: Mutex<Writer>,
    /// Highest ticket known durable. Held while flushing, so concurrent waiters queue behind one
    /// flush and then find their line already covered.
    synced: Mutex<u64>,
    sync_file: File,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    /// Opens (or creates) the log at `path`, replays it and returns the live records.
    pub(crate) fn open(path: &Path) -> io::Result<(Arc<Journal>, Records)> {
        let (records, good_len, lines) = match File::open(path) {
            Ok(mut f) => {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                replay(path, &buf)?
            }
            Err(e) if e.kind() == ErrorKind::NotFound => (Records::new(), 0, 0),
            Err(e) => return Err(e),
        };
        let live: usize = records.values().map(BTreeMap::len).sum();
        let compact = lines > live.saturating_mul(2).saturating_add(COMPACT_SLACK_LINES);
        if compact {
            write_snapshot(path, &records)?;
            tracing::info!(path = %path.display(), lines, live, "compacted the record log");
        }
        // 0600 whatever the umask: the log holds preimages.
        let file = satchel_lightning::fs_private::private_open_options()
            .create(true)
            .append(true)
            .read(true)
            .open(path)?;
        let mut len = file.metadata()?.len();
        if !compact && len > good_len {
            tracing::warn!(path = %path.display(), cut_bytes = len - good_len, "cutting a torn tail off the record log");
            file.set_len(good_len)?;
            file.sync_all()?;
            len = good_len;
        }
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        let sync_file = file.try_clone()?;
        Ok((
            Arc::new(Journal {
                writer: Mutex::new(Writer {
                    file,
                    len,
                    appended: 0,
                }),
                synced: Mutex::new(0),
                sync_file,
            }),
            records,
        ))
    }

    /// Appends one put (`Some`) or removal (`None`). Not durable until [`Journal::wait`].
    pub(crate) fn append<T: Serialize>(
        &self,
        section: &str,
        key: &str,
        value: Option<&T>,
    ) -> io::Result<Ticket> {
        self.append_many(section, &[(key, value)])
    }

    /// Appends several puts or removals of one section in one write (all or none of them).
    /// Not durable until [`Journal::wait`] on the returned ticket.
    pub(crate) fn append_many<K: AsRef<str>, T: Serialize>(
        &self,
        section: &str,
        items: &[(K, Option<&T>)],
    ) -> io::Result<Ticket> {
        let mut buf = Vec::with_capacity(items.len().saturating_mul(256));
        for (key, value) in items {
            serde_json::to_writer(
                &mut buf,
                &LineOut {
                    s: section,
                    k: key.as_ref(),
                    v: *value,
                },
            )
            .map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        let mut w = lock(&self.writer);
        if let Err(e) = w.file.write_all(&buf) {
            // Never leave part of a line for the next append to follow.
            let len = w.len;
            if let Err(cut) = w.file.set_len(len) {
                tracing::error!(error = %cut, "could not cut a failed append off the record log");
            }
            return Err(e);
        }
        w.len = w.len.saturating_add(buf.len() as u64);
        w.appended = w.appended.saturating_add(1);
        Ok(Ticket(w.appended))
    }

    /// Blocks until the line behind `ticket` (and every line before it) is on disk.
    pub(crate) fn wait(&self, ticket: Ticket) -> io::Result<()> {
        let mut synced = lock(&self.synced);
        if *synced >= ticket.0 {
            return Ok(());
        }
        // Everything appended so far is covered by this flush.
        let target = lock(&self.writer).appended;
        self.sync_file.sync_data()?;
        *synced = target;
        Ok(())
    }

    /// Makes everything appended so far durable (nothing to do if it already is).
    pub(crate) fn flush(&self) -> io::Result<()> {
        let appended = lock(&self.writer).appended;
        self.wait(Ticket(appended))
    }

    /// [`Journal::append`] then [`Journal::wait`].
    pub(crate) fn write<T: Serialize>(
        &self,
        section: &str,
        key: &str,
        value: Option<&T>,
    ) -> io::Result<()> {
        let ticket = self.append(section, key, value)?;
        self.wait(ticket)
    }

    /// [`Journal::wait`] on a blocking thread, for async callers.
    pub(crate) async fn wait_async(self: &Arc<Self>, ticket: Ticket) -> io::Result<()> {
        let journal = Arc::clone(self);
        tokio::task::spawn_blocking(move || journal.wait(ticket))
            .await
            .map_err(io::Error::other)?
    }
}

/// Replays `buf`: the live records, the length of the readable prefix and its line count.
fn replay(path: &Path, buf: &[u8]) -> io::Result<(Records, u64, usize)> {
    let mut records = Records::new();
    let mut good_len = 0usize;
    let mut lines = 0usize;
    let mut rest = buf;
    while !rest.is_empty() {
        let Some(end) = rest.iter().position(|b| *b == b'\n') else {
            break; // a torn last line
        };
        let Ok(line) = serde_json::from_slice::<LineIn>(&rest[..end]) else {
            // Torn tail (garbage or zeros to the end) or corruption (good lines after it)?
            let after = &rest[end.saturating_add(1)..];
            if after
                .split(|b| *b == b'\n')
                .any(|l| serde_json::from_slice::<LineIn>(l).is_ok())
            {
                return Err(io::Error::new(
                    ErrorKind::InvalidData,
                    format!(
                        "{}: unreadable record at byte {good_len} followed by readable ones",
                        path.display()
                    ),
                ));
            }
            break;
        };
        let section = records.entry(line.s).or_default();
        match line.v {
            Some(v) => {
                section.insert(line.k, v);
            }
            None => {
                section.remove(&line.k);
            }
        }
        lines = lines.saturating_add(1);
        good_len = good_len.saturating_add(end).saturating_add(1);
        rest = &rest[end.saturating_add(1)..];
    }
    Ok((records, good_len as u64, lines))
}

/// Atomically replaces the log at `path` with one line per live record.
pub(crate) fn write_snapshot(path: &Path, records: &Records) -> io::Result<()> {
    let tmp: PathBuf = path.with_extension("log.tmp");
    {
        let mut out = io::BufWriter::new(satchel_lightning::fs_private::create_private_file(&tmp)?);
        for (section, entries) in records {
            for (key, value) in entries {
                serde_json::to_writer(
                    &mut out,
                    &LineOut {
                        s: section,
                        k: key,
                        v: Some(value),
                    },
                )
                .map_err(io::Error::other)?;
                out.write_all(b"\n")?;
            }
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;

    fn get(r: &Records, s: &str, k: &str) -> Option<Value> {
        r.get(s).and_then(|m| m.get(k)).cloned()
    }

    #[test]
    fn last_write_wins_and_removal_forgets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.log");
        {
            let (j, r) = Journal::open(&path).unwrap();
            assert!(r.is_empty());
            j.write("a", "1", Some(&1)).unwrap();
            j.write("a", "1", Some(&2)).unwrap();
            j.write("a", "2", Some(&"x")).unwrap();
            j.write::<u8>("a", "2", None).unwrap();
            j.write("b", "1", Some(&true)).unwrap();
        }
        let (_, r) = Journal::open(&path).unwrap();
        assert_eq!(get(&r, "a", "1"), Some(Value::from(2)));
        assert_eq!(get(&r, "a", "2"), None);
        assert_eq!(get(&r, "b", "1"), Some(Value::from(true)));
    }

    #[test]
    fn a_batch_is_one_write_and_flush_covers_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.log");
        {
            let (j, _) = Journal::open(&path).unwrap();
            j.write("a", "0", Some(&0)).unwrap();
            let t = j
                .append_many("a", &[("1", Some(&1)), ("2", Some(&2)), ("0", None)])
                .unwrap();
            // One ticket for the whole batch, not yet durable; flush makes it so.
            assert_eq!(t.0, 2);
            assert!(*lock(&j.synced) < t.0);
            j.flush().unwrap();
            assert_eq!(*lock(&j.synced), t.0);
            // Nothing new: nothing to flush.
            j.flush().unwrap();
        }
        let (_, r) = Journal::open(&path).unwrap();
        assert_eq!(get(&r, "a", "0"), None);
        assert_eq!(get(&r, "a", "1"), Some(Value::from(1)));
        assert_eq!(get(&r, "a", "2"), Some(Value::from(2)));
    }

    #[test]
    fn torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.log");
        {
            let (j, _) = Journal::open(&path).unwrap();
            j.write("a", "1", Some(&1)).unwrap();
        }
        // A crash in the middle of an unacknowledged append.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"s":"a","k":"2","v":"#).unwrap();
        drop(f);
        {
            let (j, r) = Journal::open(&path).unwrap();
            assert_eq!(get(&r, "a", "2"), None);
            j.write("a", "3", Some(&3)).unwrap();
        }
        let (_, r) = Journal::open(&path).unwrap();
        assert_eq!(get(&r, "a", "1"), Some(Value::from(1)));
        assert_eq!(get(&r, "a", "3"), Some(Value::from(3)));
    }

    #[test]
    fn zero_filled_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.log");
        {
            let (j, _) = Journal::open(&path).unwrap();
            j.write("a", "1", Some(&1)).unwrap();
        }
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[0u8; 300]).unwrap();
        f.write_all(b"\n\0\0").unwrap();
        drop(f);
        let (_, r) = Journal::open(&path).unwrap();
        assert_eq!(get(&r, "a", "1"), Some(Value::from(1)));
    }

    #[test]
    fn corruption_in_the_middle_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.log");
        fs::write(
            &path,
            b"{\"s\":\"a\",\"k\":\"1\",\"v\":1}\n#garbage#\n{\"s\":\"a\",\"k\":\"2\",\"v\":2}\n",
        )
        .unwrap();
        let err = Journal::open(&path).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn many_dead_lines_are_compacted_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.log");
        {
            let (j, _) = Journal::open(&path).unwrap();
            for i in 0..(COMPACT_SLACK_LINES + 50) {
                let t = j.append("a", "k", Some(&i)).unwrap();
                if i % 1000 == 0 {
                    j.wait(t).unwrap();
                }
            }
            let t = j.append("a", "other", Some(&"v")).unwrap();
            j.wait(t).unwrap();
        }
        let before = fs::metadata(&path).unwrap().len();
        let (_, r) = Journal::open(&path).unwrap();
        let after = fs::metadata(&path).unwrap().len();
        assert!(after < before / 100, "{after} vs {before}");
        assert_eq!(
            get(&r, "a", "k"),
            Some(Value::from(COMPACT_SLACK_LINES + 49))
        );
        assert_eq!(get(&r, "a", "other"), Some(Value::from("v")));
    }

    #[test]
    fn concurrent_writers_share_flushes_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.log");
        {
            let (j, _) = Journal::open(&path).unwrap();
            std::thread::scope(|s| {
                for t in 0..8 {
                    let j = &j;
                    s.spawn(move || {
                        for i in 0..50 {
                            j.write("w", &format!("{t}-{i}"), Some(&i)).unwrap();
                        }
                    });
                }
            });
        }
        let (_, r) = Journal::open(&path).unwrap();
        assert_eq!(r["w"].len(), 400);
    }
}
