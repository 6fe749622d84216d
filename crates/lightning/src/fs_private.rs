//! Files and directories only Satchel's user may read: the data directory, node seeds, node
//! state.
//!
//! Why explicit modes: files get `0666 & !umask`, and the usual umask (022) leaves them readable
//! by every local user, node seed included. New files made here are 0600 and new directories
//! 0700 whatever the umask. (The `satchel` binary also sets its umask to 077, which covers the
//! files libraries create themselves: LDK's kv store, SQLite's database, `-wal` and `-shm`.)
//! Existing files and directories keep their mode, except a file being rewritten here; the
//! server warns about the others at start.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Mode of files holding secrets or state (seeds, databases, node state).
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// Mode of directories holding them.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// `OpenOptions` that create a missing file with mode 0600. Set the access flags as usual.
pub fn private_open_options() -> OpenOptions {
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut o = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(PRIVATE_FILE_MODE);
    }
    o
}

/// Opens `path` for writing, truncated, as a private file: a new file is created 0600, and an
/// existing one (a leftover temporary file, a state file written by an older version) is
/// narrowed to 0600 before anything is written to it.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let f = private_open_options()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = f.metadata()?.permissions().mode() & 0o777;
        if mode & !PRIVATE_FILE_MODE != 0 {
            f.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))?;
        }
    }
    Ok(f)
}

/// Writes `bytes` to `path` through [`create_private_file`] (not atomically, not synced).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    create_private_file(path)?.write_all(bytes)
}

/// Creates `path` and its missing parents with mode 0700. An existing directory is left as it
/// is (an operator may have chosen its mode; the start-up check reports it if it is wider).
pub fn ensure_private_dir(path: &Path) -> io::Result<()> {
    #[cfg_attr(not(unix), allow(unused_mut))]
    let mut b = DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(PRIVATE_DIR_MODE);
    }
    b.create(path)
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_files_and_dirs_are_private_whatever_the_umask() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&t.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        // An existing directory keeps its mode.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o750)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o750);

        let f = dir.join("seed");
        write_private(&f, b"secret").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"secret");

        // Rewriting a file that is too wide narrows it first.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&f, b"new").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"new");
    }
}
