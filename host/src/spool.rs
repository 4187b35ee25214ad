//! Request bodies as a worker receives them, before the engine runs: in memory
//! up to `IN_MEMORY` bytes while all bodies of the worker together hold less
//! than `MEMORY_CAP`, otherwise in a temporary file without a name in the
//! engine's temporary directory (nginx's client_body_buffer_size and temp files).
//! The engine pulls the body through `body_read`, from the bytes or the file.

use bytes::BytesMut;
use std::ffi::c_void;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Largest body kept in memory.
pub const IN_MEMORY: usize = 64 * 1024;
/// Memory all bodies of this worker may hold together; past it, every body spills.
pub const MEMORY_CAP: usize = 16 << 20;

/// Bytes of memory held by bodies of this process.
static HELD: AtomicUsize = AtomicUsize::new(0);
/// Where bodies spill: the engine's temporary directory (set once per worker).
static DIR: OnceLock<PathBuf> = OnceLock::new();

pub fn set_dir(dir: PathBuf) {
    let _ = DIR.set(dir);
}

pub fn dir() -> &'static Path {
    DIR.get().map_or(Path::new("/tmp"), |d| d.as_path())
}

/// Takes `n` bytes of the memory budget; false when it would pass the cap.
fn reserve(n: usize) -> bool {
    HELD.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
        (held + n <= MEMORY_CAP).then_some(held + n)
    })
    .is_ok()
}

fn unreserve(n: usize) {
    HELD.fetch_sub(n, Ordering::Relaxed);
}

/// A body being received.
pub struct Receiver {
    /// The body so far while it is in memory.
    buf: BytesMut,
    /// Budget taken for `buf` (its capacity).
    reserved: usize,
    file: Option<File>,
    len: u64,
    /// `Content-Length`, when announced: sizes the buffer.
    announced: u64,
}

impl Receiver {
    pub fn new(announced: u64) -> Receiver {
        Receiver {
            buf: BytesMut::new(),
            reserved: 0,
            file: None,
            len: 0,
            announced,
        }
    }

    /// Bytes received so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Appends received bytes: to memory while the body and the worker's budget
    /// allow, else to the file (created, and the memory moved there, on the way).
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        self.len += data.len() as u64;
        if self.file.is_none() {
            let need = self.buf.len() + data.len();
            if need <= IN_MEMORY {
                if need > self.buf.capacity() {
                    // One allocation for an announced small body, else the most a
                    // body may hold in memory.
                    let cap = match self.announced {
                        n if n > 0 && n as usize <= IN_MEMORY => n as usize,
                        _ => IN_MEMORY,
                    }
                    .max(need);
                    if !reserve(cap - self.reserved) {
                        return self.spill(data);
                    }
                    self.buf.reserve(cap - self.buf.len());
                    self.reserved = cap;
                }
                self.buf.extend_from_slice(data);
                return Ok(());
            }
            return self.spill(data);
        }
        self.file.as_mut().expect("spilled").write_all(data)
    }

    fn spill(&mut self, data: &[u8]) -> io::Result<()> {
        let mut file = fe_php_spool_file(dir())?;
        file.write_all(&self.buf)?;
        file.write_all(data)?;
        self.buf = BytesMut::new();
        unreserve(std::mem::take(&mut self.reserved));
        self.file = Some(file);
        Ok(())
    }

    /// The whole body, for the engine to read.
    pub fn finish(mut self) -> Spooled {
        let data = match self.file.take() {
            Some(f) => Data::File(f),
            None => Data::Memory {
                bytes: std::mem::take(&mut self.buf),
                reserved: std::mem::take(&mut self.reserved),
            },
        };
        Spooled {
            data,
            len: self.len,
            pos: AtomicU64::new(0),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        unreserve(self.reserved);
    }
}

/// A received body, served to the engine by `body_read`.
pub struct Spooled {
    data: Data,
    len: u64,
    /// Read position (the engine's calls never overlap).
    pos: AtomicU64,
}

enum Data {
    Memory { bytes: BytesMut, reserved: usize },
    File(File),
}

impl Drop for Spooled {
    fn drop(&mut self) {
        if let Data::Memory { reserved, .. } = self.data {
            unreserve(reserved);
        }
    }
}

impl Spooled {
    pub fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let pos = self.pos.load(Ordering::Relaxed);
        let want = (self.len - pos.min(self.len)).min(buf.len() as u64) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = match &self.data {
            Data::Memory { bytes, .. } => {
                buf[..want].copy_from_slice(&bytes[pos as usize..pos as usize + want]);
                want
            }
            // A page-cache read of a file this process just wrote.
            Data::File(f) => f.read_at(&mut buf[..want], pos)?,
        };
        self.pos.store(pos + n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The engine's `body_read`: `ctx` is the `Spooled` the request carries.
///
/// # Safety
/// `ctx` points at a live `Spooled` (abi::Engine::handle_async keeps it until the
/// completion has run, after which the engine never calls this); `buf` is valid
/// for `cap` bytes.
pub unsafe extern "C" fn body_read(ctx: *mut c_void, buf: *mut u8, cap: usize) -> isize {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let body = &*(ctx as *const Spooled);
        let buf = std::slice::from_raw_parts_mut(buf, cap);
        match body.read(buf) {
            Ok(n) => n as isize,
            Err(e) => {
                tracing::error!("reading a spooled request body failed: {e}");
                -1
            }
        }
    }))
    .unwrap_or(-1)
}

/// A new file in `dir` without a name: `O_TMPFILE` where the file system has it,
/// else a file unlinked as soon as it is created. It goes with its descriptor.
fn fe_php_spool_file(dir: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut open = std::fs::OpenOptions::new();
    open.read(true).write(true).mode(0o600);
    match open.clone().custom_flags(libc::O_TMPFILE).open(dir) {
        Ok(f) => return Ok(f),
        // No O_TMPFILE on this file system (EOPNOTSUPP; EISDIR before Linux 3.11).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {}
        Err(e) => return Err(e),
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!(".fe-php-body-{}-{n}", std::process::id()));
        match open.clone().create_new(true).open(&path) {
            Ok(f) => {
                std::fs::remove_file(&path)?;
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}
