//! Restarting the master in place for a configuration that a reload cannot apply:
//! a new `[php] libphp_path` or `[php.ini]` (PHP starts once per process).
//!
//! The master re-executes its own binary with the same arguments. The process (and
//! its pid, which supervisors watch) stays; what passes to the new image is in two
//! environment variables: the listening sockets (their descriptors are kept open
//! across exec) and the pids of the old workers, which keep serving meanwhile. The
//! new master starts PHP from the new configuration, forks new workers on the same
//! sockets and drains the old ones, as a reload does. Signals stay blocked across
//! exec (execve keeps the mask), so a SIGTERM or SIGHUP arriving in between waits
//! for the new master instead of killing it.

use crate::listen::Listeners;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

/// "ADDR;FD,FD,…": the sockets handed over.
const LISTENERS_VAR: &str = "FEPHP_INHERITED_LISTENERS";
/// "PID,PID,…": the workers of the previous image, to drain.
const WORKERS_VAR: &str = "FEPHP_INHERITED_WORKERS";

/// What the previous image of this master handed over.
#[derive(Default)]
pub struct Inherited {
    pub listeners: Option<(String, Vec<i32>)>,
    pub workers: Vec<libc::pid_t>,
}

/// Takes (and removes from the environment, so PHP never sees them) what a
/// restart handed over. Call first thing, while the process has one thread.
pub fn take_inherited() -> Inherited {
    let mut out = Inherited::default();
    if let Some(v) = std::env::var_os(LISTENERS_VAR) {
        std::env::remove_var(LISTENERS_VAR);
        let v = v.to_string_lossy();
        if let Some((addr, fds)) = v.split_once(';') {
            let fds: Vec<i32> = fds.split(',').filter_map(|f| f.parse().ok()).collect();
            out.listeners = Some((addr.to_owned(), fds));
        }
    }
    if let Some(v) = std::env::var_os(WORKERS_VAR) {
        std::env::remove_var(WORKERS_VAR);
        out.workers = v
            .to_string_lossy()
            .split(',')
            .filter_map(|p| p.parse().ok())
            .collect();
    }
    out
}

/// Checks `config` in a separate process the way a start would (`--check`: the
/// new PHP is loaded there, not here). Err: what the check printed.
pub fn check_in_child(config: &str) -> Result<(), String> {
    let exe = own_binary();
    let out = std::process::Command::new(OsStr::from_bytes(exe.as_bytes()))
        .arg("--config")
        .arg(config)
        .arg("--check")
        .output()
        .map_err(|e| format!("cannot run {} --check: {e}", exe.to_string_lossy()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim_end().to_owned())
    }
}

/// Re-executes this binary with the same arguments, handing over `listeners` and
/// `workers`. Returns only on failure, with what went wrong (nothing changed).
pub fn exec_self(listeners: &Listeners, workers: &[libc::pid_t]) -> String {
    let fds = listeners.fds();
    let set_cloexec = |on: bool| {
        for &fd in &fds {
            // SAFETY: fcntl on descriptors the master owns.
            unsafe { libc::fcntl(fd, libc::F_SETFD, if on { libc::FD_CLOEXEC } else { 0 }) };
        }
    };
    let listeners_value = format!(
        "{};{}",
        listeners.addr(),
        fds.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
    );
    let workers_value = workers
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let exe = own_binary();
    let argv: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.as_bytes()).ok())
        .collect();
    let mut envp: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k != LISTENERS_VAR && k != WORKERS_VAR)
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    envp.push(CString::new(format!("{LISTENERS_VAR}={listeners_value}")).expect("no NUL"));
    envp.push(CString::new(format!("{WORKERS_VAR}={workers_value}")).expect("no NUL"));
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|e| e.as_ptr()).collect();
    envp_p.push(std::ptr::null());

    set_cloexec(false);
    // SAFETY: NULL-terminated arrays of C strings that live across the call. The
    // master is single-threaded, so nothing else runs while the image is replaced.
    unsafe { libc::execve(exe.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    let err = std::io::Error::last_os_error();
    set_cloexec(true);
    format!("cannot re-execute {}: {err}", exe.to_string_lossy())
}

/// The binary this process runs: its path, or /proc/self/exe when the file was
/// replaced or removed since it started (exec of the path would then run another).
fn own_binary() -> CString {
    let fallback = || CString::new("/proc/self/exe").expect("no NUL");
    match std::env::current_exe() {
        Ok(p) if !p.as_os_str().as_bytes().ends_with(b" (deleted)") => {
            CString::new(p.as_os_str().as_bytes()).unwrap_or_else(|_| fallback())
        }
        _ => fallback(),
    }
}
