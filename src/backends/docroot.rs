//! A document root on disk, as the static and PHP backends both see it: paths
//! below it are opened with `openat2(RESOLVE_BENEATH)` relative to the root's
//! descriptor, so the kernel refuses `..` and symlinks that leave it; what a path
//! is (file, directory, missing) is remembered for a second for script
//! resolution.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once openat2 has answered ENOSYS (kernels before 5.6, valgrind).
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// A directory files are served and scripts found in.
#[derive(Debug)]
pub struct DocRoot {
    root: PathBuf,
    root_fd: OwnedFd,
    /// What recently resolved paths are, for PHP script resolution.
    kinds: parking_lot::Mutex<KindCache>,
}

/// What a path below the root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    File,
    Dir,
    Missing,
    /// Cannot be known now: the process is out of file descriptors (or memory).
    /// Never remembered.
    Unavailable,
}

/// How long a path's kind is remembered: as long as PHP's own stat caches at
/// their shortest (OPcache revalidates scripts every 2 s by default). The static
/// backend keeps small files' bytes as long.
pub const KIND_TTL: std::time::Duration = std::time::Duration::from_secs(1);
/// Entries kept before the cache starts over.
const KIND_CACHE_SIZE: usize = 4096;

#[derive(Debug, Default)]
struct KindCache {
    entries: std::collections::HashMap<Box<str>, (std::time::Instant, PathKind)>,
}

impl DocRoot {
    /// Opens the root directory. Fails with a message naming the root.
    pub fn new(root: &Path) -> io::Result<DocRoot> {
        let dir = File::open(root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot open static root {}: {e}", root.display()),
            )
        })?;
        if !dir.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("static root {} is not a directory", root.display()),
            ));
        }
        Ok(DocRoot {
            // Absolute: the PHP thread changes the process's working directory.
            root: root.canonicalize().unwrap_or_else(|_| root.to_owned()),
            root_fd: dir.into(),
            kinds: parking_lot::Mutex::new(KindCache::default()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the root is still a readable directory (for `/_health`).
    pub fn check(&self) -> Result<(), String> {
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(format!(
                "static root {} is not a directory",
                self.root.display()
            )),
            Err(e) => Err(format!("static root {}: {e}", self.root.display())),
        }
    }

    /// What `rel` (a normalized path, leading '/' allowed) is below the root: for
    /// the PHP backends' script resolution. Opens with O_PATH, which checks the path
    /// (with the same confinement to the root) without opening the file itself.
    pub fn metadata(&self, rel: &str) -> io::Result<Metadata> {
        let flags = libc::O_PATH | libc::O_CLOEXEC;
        match self.open_beneath_with(rel, flags) {
            Ok(f) => f.metadata(),
            Err(e) => Err(e),
        }
    }

    /// What `rel` is, remembered for a second: script resolution asks for the same
    /// few paths on every request, and each answer costs three system calls.
    pub fn kind(&self, rel: &str) -> PathKind {
        let now = std::time::Instant::now();
        if let Some(&(at, kind)) = self.kinds.lock().entries.get(rel) {
            if now.duration_since(at) < KIND_TTL {
                return kind;
            }
        }
        let kind = match self.metadata(rel) {
            Ok(m) if m.is_file() => PathKind::File,
            Ok(m) if m.is_dir() => PathKind::Dir,
            Err(e) if super::exhaustion(&e).is_some() => {
                tracing::error!(
                    path = rel,
                    "cannot tell what the path is: {}",
                    super::exhaustion(&e).unwrap_or_default()
                );
                return PathKind::Unavailable;
            }
            _ => PathKind::Missing,
        };
        let mut cache = self.kinds.lock();
        if cache.entries.len() >= KIND_CACHE_SIZE {
            cache.entries.clear();
        }
        cache.entries.insert(rel.into(), (now, kind));
        kind
    }

    /// Opens `rel` (a normalized path) for reading without ever leaving the root.
    pub fn open_beneath(&self, rel: &str) -> io::Result<File> {
        // O_NONBLOCK: opening a FIFO planted in the root must not hang the worker.
        self.open_beneath_with(
            rel,
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK,
        )
    }

    fn open_beneath_with(&self, rel: &str, flags: libc::c_int) -> io::Result<File> {
        let rel = rel.trim_start_matches('/');
        let rel = if rel.is_empty() { "." } else { rel };
        if NO_OPENAT2.load(Ordering::Relaxed) {
            return self.open_beneath_fallback(rel, flags);
        }
        let c_rel = CString::new(rel).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: open_how is plain data; all-zero is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = flags as u64;
        how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
        // SAFETY: `c_rel` is a valid NUL-terminated string and `how` a valid open_how
        // for the duration of the call; the kernel copies both. A non-negative result
        // is a new file descriptor that nothing else owns.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                self.root_fd.as_raw_fd(),
                c_rel.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: see above; the descriptor is fresh and owned by the File from here.
            return Ok(unsafe { File::from_raw_fd(fd as i32) });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOSYS) {
            NO_OPENAT2.store(true, Ordering::Relaxed);
            return self.open_beneath_fallback(rel, flags);
        }
        Err(err)
    }

    /// For kernels before 5.6: resolve, then check the result is still under the root.
    fn open_beneath_fallback(&self, rel: &str, flags: libc::c_int) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let root = self.root.canonicalize()?;
        let full = root.join(rel).canonicalize()?;
        if !full.starts_with(&root) {
            return Err(io::Error::from_raw_os_error(libc::EXDEV));
        }
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags & !libc::O_ACCMODE)
            .open(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_kinds_are_remembered_for_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let sf = DocRoot::new(dir.path()).unwrap();
        assert_eq!(sf.kind("/new.php"), PathKind::Missing);
        std::fs::write(dir.path().join("new.php"), "<?php").unwrap();
        assert_eq!(
            sf.kind("/new.php"),
            PathKind::Missing,
            "answered from the cache"
        );
        std::thread::sleep(KIND_TTL + std::time::Duration::from_millis(100));
        assert_eq!(sf.kind("/new.php"), PathKind::File);
        assert_eq!(sf.kind("/"), PathKind::Dir);
    }
}
