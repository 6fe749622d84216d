//! The start-up check of file modes: everything in the data directory (node seeds, node state,
//! the SQLite database) is readable by Satchel's user only.
//!
//! New files are created private (umask 077 in `main`, explicit modes in
//! `satchel_lightning::fs_private` and the SQLite store), but installs made by older versions
//! have 0644 files in a 0755 directory, seed included. Those are reported, not changed: which
//! users may read an operator's directory is the operator's call, and a warning with the
//! `chmod` to run is enough to fix it.

use std::path::{Path, PathBuf};

/// Entries looked at before the walk stops (an LDK node keeps a few files per channel).
const MAX_ENTRIES: usize = 100_000;
/// Paths named one by one in the log; the rest are counted.
const MAX_NAMED: usize = 20;

/// A file or directory other users may access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooWide {
    /// Where.
    pub path: PathBuf,
    /// Its permission bits.
    pub mode: u32,
    /// The mode it should have at most: 0700 for a directory, 0600 for a file.
    pub want: u32,
}

/// The files and directories whose mode grants group or others any access: `data_dir` itself,
/// everything below it (symbolic links are not followed), and `extra` files that exist (a
/// database kept elsewhere, with its `-wal` and `-shm`).
pub fn too_wide(data_dir: &Path, extra: &[PathBuf]) -> Vec<TooWide> {
    let mut out = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let check = |path: &Path, out: &mut Vec<TooWide>| -> Option<std::fs::Metadata> {
            let meta = std::fs::symlink_metadata(path).ok()?;
            let ft = meta.file_type();
            let want = if ft.is_dir() {
                satchel_lightning::fs_private::PRIVATE_DIR_MODE
            } else if ft.is_file() {
                satchel_lightning::fs_private::PRIVATE_FILE_MODE
            } else {
                return None;
            };
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                out.push(TooWide {
                    path: path.to_owned(),
                    mode,
                    want,
                });
            }
            Some(meta)
        };
        let mut seen = 0usize;
        let mut stack = vec![data_dir.to_owned()];
        while let Some(dir) = stack.pop() {
            let Some(meta) = check(&dir, &mut out) else {
                continue;
            };
            if !meta.is_dir() {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                seen += 1;
                if seen > MAX_ENTRIES {
                    return out;
                }
                let p = e.path();
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(p);
                } else {
                    check(&p, &mut out);
                }
            }
        }
        for f in extra {
            if !f.starts_with(data_dir) {
                check(f, &mut out);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (data_dir, extra);
    out
}

/// Logs a warning for each path [`too_wide`] finds (the first [`MAX_NAMED`], then a count),
/// with the command that fixes it. Returns how many there were.
pub fn warn_if_too_wide(data_dir: &Path, extra: &[PathBuf]) -> usize {
    let found = too_wide(data_dir, extra);
    for t in found.iter().take(MAX_NAMED) {
        let p = t.path.display();
        tracing::warn!(
            "{p} has mode {:04o}: other local users can read it (it should be at most {:04o}); fix with: chmod {:o} {p}",
            t.mode,
            t.want,
            t.want,
        );
    }
    if found.len() > MAX_NAMED {
        tracing::warn!(
            "{} more files or directories under {} are readable by other users; fix them all with: chmod -R go-rwx {}",
            found.len() - MAX_NAMED,
            data_dir.display(),
            data_dir.display(),
        );
    }
    found.len()
}

/// The SQLite database file a URL names, with its `-wal` and `-shm` (nothing for Postgres or an
/// in-memory database).
pub fn database_files(database_url: &str) -> Vec<PathBuf> {
    if !database_url.starts_with("sqlite:") {
        return Vec::new();
    }
    let Some(db) = satchel_store::sqlite::database_file(database_url) else {
        return Vec::new();
    };
    let with = |suffix: &str| {
        let mut s = db.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    };
    vec![with("-wal"), with("-shm"), db]
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn finds_what_others_may_read() {
        let t = tempfile::tempdir().unwrap();
        let data = t.path().join("data");
        satchel_lightning::fs_private::ensure_private_dir(&data.join("devnet/satchel/kv")).unwrap();
        let seed = data.join("devnet/satchel/keys_seed");
        let mon = data.join("devnet/satchel/kv/monitor");
        let db = data.join("satchel.db");
        for f in [&seed, &mon, &db] {
            satchel_lightning::fs_private::write_private(f, b"x").unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", data.join("link")).unwrap();
        let outside = t.path().join("elsewhere.db");
        satchel_lightning::fs_private::write_private(&outside, b"x").unwrap();
        let extra = vec![outside.clone(), t.path().join("missing.db-wal")];
        assert_eq!(too_wide(&data, &extra), vec![]);

        chmod(&seed, 0o644);
        chmod(&mon, 0o640);
        chmod(&data, 0o755);
        chmod(&outside, 0o604);
        let mut found = too_wide(&data, &extra);
        found.sort_by(|a, b| a.path.cmp(&b.path));
        let want = |p: &Path, mode, want| TooWide {
            path: p.to_owned(),
            mode,
            want,
        };
        let mut expected = vec![
            want(&data, 0o755, 0o700),
            want(&seed, 0o644, 0o600),
            want(&mon, 0o640, 0o600),
            want(&outside, 0o604, 0o600),
        ];
        expected.sort_by(|a, b| a.path.cmp(&b.path));
        assert_eq!(found, expected);
        assert_eq!(warn_if_too_wide(&data, &extra), 4);
        // 0400 and 0500 are narrower, not wider.
        chmod(&seed, 0o400);
        chmod(&mon, 0o600);
        chmod(&data, 0o500);
        chmod(&outside, 0o600);
        assert_eq!(too_wide(&data, &extra), vec![]);
        chmod(&data, 0o700);
    }

    #[test]
    fn database_files_of_urls() {
        assert_eq!(
            database_files("sqlite:///var/lib/s.db"),
            ["/var/lib/s.db-wal", "/var/lib/s.db-shm", "/var/lib/s.db"]
                .map(PathBuf::from)
                .to_vec()
        );
        assert!(database_files("sqlite::memory:").is_empty());
        assert!(database_files("postgres://u@h/db").is_empty());
    }
}
