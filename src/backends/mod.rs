//! The backends a route can name. Each lives in its own module.

pub mod docroot;
pub mod embedded;
pub mod fastcgi;
mod io_thread;
pub mod php;
mod prompt_ack;
pub mod proxy;
pub mod serve;
pub mod sigprof;
pub mod static_files;

use crate::config::Built;

/// Which backends this build contains.
pub const BUILT: Built = Built {
    embedded: embedded::BUILT,
    fastcgi: fastcgi::BUILT,
};

/// Why `e` means this process or the system ran out of descriptors or memory —
/// not that a file is missing or a peer refused — with what to do about it; None
/// for every other error. Such a request is answered 503: it may work in a moment.
pub fn exhaustion(e: &std::io::Error) -> Option<String> {
    match e.raw_os_error()? {
        libc::EMFILE => {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: lim is a valid out pointer.
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
            Some(format!(
                "this process has all of its {} file descriptors open (RLIMIT_NOFILE): raise the limit (ulimit -n, systemd LimitNOFILE=) or lower [server] max_connections",
                lim.rlim_cur
            ))
        }
        libc::ENFILE => {
            Some("the system has run out of file descriptors (sysctl fs.file-max)".to_owned())
        }
        libc::ENOMEM | libc::ENOBUFS => Some("the kernel is out of memory".to_owned()),
        _ => None,
    }
}
