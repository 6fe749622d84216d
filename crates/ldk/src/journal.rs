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
//!
//! The same rewrite also happens **while running**, so a node that stays up for months does
//! not grow its log without bound: once the file holds more than twice the live records plus
//! [`COMPACT_SLACK_LINES`], a background thread compacts it. Appends go on meanwhile: the
//! thread replays the file up to a cut point and writes the snapshot to a temp file without
//! holding the writer; then, holding it briefly, copies the lines appended since the cut,
//! fsyncs, renames over the log, fsyncs the directory and switches appends to the new file.
//! A crash at any point leaves either the old log or the complete new one. Space: the snapshot
//! is at most the old log's size, so at most twice the log is on disk during a rewrite.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

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
    /// The log file appends go to (replaced by a compaction).
    file: Arc<File>,
    /// Bytes of whole lines in the file; a failed append is cut back to this.
    len: u64,
    /// Lines appended since open.
    appended: u64,
    /// Lines in the file.
    lines: u64,
    /// Compact once the file holds more lines than this.
    compact_at: u64,
}

/// The log. Cheap to share behind an `Arc`.
pub(crate) struct Journal {
    path: PathBuf,
    writer: Mutex<Writer>,
    /// Highest ticket known durable. Held while flushing, so concurrent waiters queue behind one
    /// flush and then find their line already covered.
    synced: Mutex<u64>,
    /// Lines of slack before a compaction while running; `None`: only on open.
    online_slack: Option<u64>,
    /// A compaction is running.
    compacting: AtomicBool,
    /// Compactions done while running (tests, logs).
    compactions: AtomicU64,
    /// This journal, for starting a compaction thread from `&self`.
    me: Weak<Journal>,
}

/// When a file of `live` records is worth rewriting.
fn compact_threshold(live: u64, slack: u64) -> u64 {
    live.saturating_mul(2).saturating_add(slack)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Journal {
    /// Opens (or creates) the log at `path`, replays it and returns the live records. The log
    /// is compacted on open and while running.
    pub(crate) fn open(path: &Path) -> io::Result<(Arc<Journal>, Records)> {
        Journal::open_with(path, Some(COMPACT_SLACK_LINES as u64))
    }

    /// [`Journal::open`], compacting while running after `online_slack` dead lines (`None`:
    /// only on open).
    pub(crate) fn open_with(
        path: &Path,
        online_slack: Option<u64>,
    ) -> io::Result<(Arc<Journal>, Records)> {
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
        let file_lines = if compact { live } else { lines } as u64;
        let live = live as u64;
        let journal = Arc::new_cyclic(|me| Journal {
            path: path.to_owned(),
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                len,
                appended: 0,
                lines: file_lines,
                compact_at: compact_threshold(live, online_slack.unwrap_or(u64::MAX)),
            }),
            synced: Mutex::new(0),
            online_slack,
            compacting: AtomicBool::new(false),
            compactions: AtomicU64::new(0),
            me: me.clone(),
        });
        Ok((journal, records))
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
        let file = Arc::clone(&w.file);
        if let Err(e) = (&*file).write_all(&buf) {
            // Never leave part of a line for the next append to follow.
            let len = w.len;
            if let Err(cut) = file.set_len(len) {
                tracing::error!(error = %cut, "could not cut a failed append off the record log");
            }
            return Err(e);
        }
        w.len = w.len.saturating_add(buf.len() as u64);
        w.appended = w.appended.saturating_add(1);
        w.lines = w.lines.saturating_add(items.len() as u64);
        let ticket = Ticket(w.appended);
        if w.lines > w.compact_at && !self.compacting.swap(true, Ordering::AcqRel) {
            drop(w);
            self.start_compaction();
        }
        Ok(ticket)
    }

    /// Compacts the log on a thread of its own (appends go on meanwhile).
    fn start_compaction(&self) {
        let Some(journal) = self.me.upgrade() else {
            self.compacting.store(false, Ordering::Release);
            return;
        };
        let spawned = std::thread::Builder::new()
            .name("records-compact".into())
            .spawn(move || {
                let slack = journal.online_slack.unwrap_or(u64::MAX);
                match journal.compact_now() {
                    Ok((lines, live)) => {
                        journal.compactions.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(path = %journal.path.display(), lines, live, "compacted the record log while running");
                    }
                    Err(e) => {
                        // Try again after another `slack` lines, not on every append.
                        let mut w = lock(&journal.writer);
                        w.compact_at = w.lines.saturating_add(slack);
                        tracing::error!(path = %journal.path.display(), error = %e, "compacting the record log failed; it keeps growing until the next try");
                    }
                }
                journal.compacting.store(false, Ordering::Release);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the record log compaction");
            let mut w = lock(&self.writer);
            w.compact_at = w
                .lines
                .saturating_add(self.online_slack.unwrap_or(u64::MAX));
            self.compacting.store(false, Ordering::Release);
        }
    }

    /// Rewrites the log as one line per live record plus whatever is appended meanwhile.
    /// Returns (lines before, live records).
    fn compact_now(&self) -> io::Result<(u64, u64)> {
        let tmp: PathBuf = self.path.with_extension("log.tmp");
        // 1. Up to a cut point, without holding the writer.
        let (cut, lines_before) = {
            let w = lock(&self.writer);
            (w.len, w.lines)
        };
        let mut head = Vec::new();
        File::open(&self.path)?.take(cut).read_to_end(&mut head)?;
        let (records, good, _) = replay(&self.path, &head)?;
        if good != cut {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                "the record log changed under the compaction",
            ));
        }
        drop(head);
        let live: u64 = records.values().map(|m| m.len() as u64).sum();
        let mut out = io::BufWriter::new(satchel_lightning::fs_private::create_private_file(&tmp)?);
        write_lines(&mut out, &records)?;
        drop(records);
        let mut out = out.into_inner().map_err(|e| e.into_error())?;
        // 2. Holding the writer: the lines appended since the cut, then the switch.
        let mut w = lock(&self.writer);
        let mut tail = Vec::new();
        let mut f = File::open(&self.path)?;
        io::Seek::seek(&mut f, io::SeekFrom::Start(cut))?;
        f.take(w.len.saturating_sub(cut)).read_to_end(&mut tail)?;
        let tail_lines = tail.iter().filter(|b| **b == b'\n').count() as u64;
        out.write_all(&tail)?;
        out.sync_all()?;
        let new_len = out.metadata()?.len();
        drop(out);
        fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        let file = satchel_lightning::fs_private::private_open_options()
            .append(true)
            .read(true)
            .open(&self.path)?;
        w.file = Arc::new(file);
        w.len = new_len;
        w.lines = live.saturating_add(tail_lines);
        w.compact_at = compact_threshold(live, self.online_slack.unwrap_or(u64::MAX));
        Ok((lines_before, live))
    }

    /// Compactions done while running.
    #[cfg(test)]
    pub(crate) fn compactions(&self) -> u64 {
        self.compactions.load(Ordering::Relaxed)
    }

    /// Blocks until the line behind `ticket` (and every line before it) is on disk.
    pub(crate) fn wait(&self, ticket: Ticket) -> io::Result<()> {
        let mut synced = lock(&self.synced);
        if *synced >= ticket.0 {
            return Ok(());
        }
        // Everything appended so far is covered by this flush: it is all in this file (a
        // compaction copies earlier lines into the file it switches to, and fsyncs it first).
        let (target, file) = {
            let w = lock(&self.writer);
            (w.appended, Arc::clone(&w.file))
        };
        file.sync_data()?;
        *synced = (*synced).max(target);
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
        write_lines(&mut out, records)?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// One line per live record.
fn write_lines(out: &mut impl Write, records: &Records) -> io::Result<()> {
    for (section, entries) in records {
        for (key, value) in entries {
            serde_json::to_writer(
                &mut *out,
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
            // Only on open here (the running compaction has its own test).
            let (j, _) = Journal::open_with(&path, None).unwrap();
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

    /// Writers keep appending (and waiting) while the log is compacted under them, several
    /// times; nothing is lost, the file stays small, and it reopens to the same records.
    #[test]
    fn compacts_while_running_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.log");
        let (j, _) = Journal::open_with(&path, Some(500)).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let j = &j;
                s.spawn(move || {
                    for i in 0..3000u32 {
                        // 20 live keys per writer, rewritten over and over; some removed.
                        let key = format!("{t}-{}", i % 20);
                        let ticket = if i % 7 == 0 {
                            j.append::<u32>("w", &key, None).unwrap()
                        } else {
                            j.append("w", &key, Some(&i)).unwrap()
                        };
                        if i % 10 == 0 {
                            j.wait(ticket).unwrap();
                        }
                    }
                    j.flush().unwrap();
                });
            }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while j.compacting.load(Ordering::Acquire) {
            assert!(
                std::time::Instant::now() < deadline,
                "compaction never ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(j.compactions() >= 2, "compactions: {}", j.compactions());
        let lines = fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 80 + 2 * 500 + 100, "{lines} lines left of 12000");
        drop(j);
        let (_, r) = Journal::open_with(&path, None).unwrap();
        // The last write of each key wins, as written.
        for t in 0..4 {
            for k in 0..20u32 {
                let last = (0..3000u32).filter(|i| i % 20 == k).max().unwrap();
                let want = (last % 7 != 0).then(|| Value::from(last));
                assert_eq!(get(&r, "w", &format!("{t}-{k}")), want, "{t}-{k}");
            }
        }
        assert!(!path.with_extension("log.tmp").exists());
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
