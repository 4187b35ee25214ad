//! Workers without root: the master starts as root and binds the socket; each
//! worker switches to `[server] user` / `group` (supplementary groups, then the
//! group, then the user) before the engine starts a thread, so every thread of a
//! worker, PHP's included, runs unprivileged.

use std::ffi::{CStr, CString};
use std::fmt;

/// Who the workers run as.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub uid: libc::uid_t,
    pub group: String,
    pub gid: libc::gid_t,
    /// False when fe-php-host already runs as this user and group (started
    /// unprivileged by its service manager): nothing to change.
    switch: bool,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "user {} (uid {}), group {} (gid {})",
            self.user, self.uid, self.group, self.gid
        )
    }
}

/// Looks the user and group up and checks that this process may switch to them.
/// `Ok(None)`: workers keep the master's identity — no user configured, or
/// fe-php-host started unprivileged as someone else (warned: only root can switch).
pub fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Option<Identity>, String> {
    let Some(user) = user else {
        return Ok(None);
    };
    let (uid, primary_gid) = lookup_user(user)?.ok_or_else(|| {
        format!(
            "[server] user \"{user}\" does not exist on this system.\n    Create it (adduser --system --no-create-home {user}) or name an existing user such as \"www-data\"."
        )
    })?;
    if uid == 0 {
        return Err(format!(
            "[server] user \"{user}\" is root (uid 0): workers would run PHP as root.\n    Name an unprivileged user such as \"www-data\", or remove the key."
        ));
    }
    let (group, gid) = match group {
        Some(g) => {
            let gid = lookup_group(g)?.ok_or_else(|| {
                format!(
                    "[server] group \"{g}\" does not exist on this system.\n    Create it (addgroup --system {g}), name an existing group, or remove the key to use {user}'s own group."
                )
            })?;
            (g.to_owned(), gid)
        }
        None => (
            group_name(primary_gid).unwrap_or_else(|| primary_gid.to_string()),
            primary_gid,
        ),
    };
    // SAFETY: plain identity queries.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if euid != 0 && (euid != uid || egid != gid) {
        // Already unprivileged: nothing to drop, and only root could switch. The
        // workers keep this identity (as `make demo` does for a developer).
        tracing::warn!(
            "[server] user = \"{user}\" is not applied: fe-php-host runs as uid {euid} (gid {egid}), not root, so the workers keep that identity. Start it as root to switch them to {user}, or remove [server] user and group."
        );
        return Ok(None);
    }
    let switch = euid == 0;
    Ok(Some(Identity {
        user: user.to_owned(),
        uid,
        group,
        gid,
        switch,
    }))
}

/// Switches this (single-threaded) process to `id`: supplementary groups, group,
/// user — in that order, since changing the user first would lose the right to
/// change the groups. Then checks that root cannot be regained.
pub fn drop_to(id: &Identity) -> Result<(), String> {
    if !id.switch {
        return Ok(());
    }
    let name = CString::new(id.user.as_str()).map_err(|_| "user name contains NUL")?;
    let os = |what: &str| format!("{what} failed: {}", std::io::Error::last_os_error());
    // SAFETY: plain system calls on values of this process.
    unsafe {
        if libc::initgroups(name.as_ptr(), id.gid) != 0 {
            return Err(os(&format!("initgroups({}, {})", id.user, id.gid)));
        }
        if libc::setgid(id.gid) != 0 {
            return Err(os(&format!("setgid({})", id.gid)));
        }
        if libc::setuid(id.uid) != 0 {
            return Err(os(&format!("setuid({})", id.uid)));
        }
        let (mut r, mut e, mut s) = (0, 0, 0);
        libc::getresuid(&mut r, &mut e, &mut s);
        let (mut rg, mut eg, mut sg) = (0, 0, 0);
        libc::getresgid(&mut rg, &mut eg, &mut sg);
        if [r, e, s] != [id.uid; 3] || [rg, eg, sg] != [id.gid; 3] {
            return Err(format!(
                "after switching, uids are {r}/{e}/{s} and gids {rg}/{eg}/{sg}, not {}/{}",
                id.uid, id.gid
            ));
        }
        if libc::setuid(0) == 0 {
            return Err("root could be regained after setuid; refusing to serve".to_owned());
        }
    }
    Ok(())
}

/// A buffer size for the getpw*_r / getgr*_r functions.
fn buffer() -> Vec<libc::c_char> {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_GETPW_R_SIZE_MAX) };
    vec![0; if n > 0 { n as usize } else { 16 << 10 }.max(16 << 10)]
}

/// (uid, primary gid) of `name`; None when there is no such user.
fn lookup_user(name: &str) -> Result<Option<(libc::uid_t, libc::gid_t)>, String> {
    let c = CString::new(name).map_err(|_| format!("[server] user {name:?} contains NUL"))?;
    let mut buf = buffer();
    loop {
        // SAFETY: every pointer is a live local of the stated size.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out = std::ptr::null_mut();
        let r =
            unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out) };
        match r {
            0 if out.is_null() => return Ok(None),
            0 => return Ok(Some((pw.pw_uid, pw.pw_gid))),
            libc::ERANGE => buf.resize(buf.len() * 2, 0),
            e => {
                return Err(format!(
                    "cannot look up [server] user \"{name}\": {}",
                    std::io::Error::from_raw_os_error(e)
                ))
            }
        }
    }
}

/// The gid of group `name`; None when there is no such group.
fn lookup_group(name: &str) -> Result<Option<libc::gid_t>, String> {
    let c = CString::new(name).map_err(|_| format!("[server] group {name:?} contains NUL"))?;
    let mut buf = buffer();
    loop {
        // SAFETY: every pointer is a live local of the stated size.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut out = std::ptr::null_mut();
        let r =
            unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
        match r {
            0 if out.is_null() => return Ok(None),
            0 => return Ok(Some(gr.gr_gid)),
            libc::ERANGE => buf.resize(buf.len() * 2, 0),
            e => {
                return Err(format!(
                    "cannot look up [server] group \"{name}\": {}",
                    std::io::Error::from_raw_os_error(e)
                ))
            }
        }
    }
}

/// The name of group `gid`, for the log.
fn group_name(gid: libc::gid_t) -> Option<String> {
    let mut buf = buffer();
    // SAFETY: every pointer is a live local of the stated size.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let mut out = std::ptr::null_mut();
    let r = unsafe { libc::getgrgid_r(gid, &mut gr, buf.as_mut_ptr(), buf.len(), &mut out) };
    if r != 0 || out.is_null() {
        return None;
    }
    // SAFETY: on success gr_name points to a NUL-terminated string inside buf.
    Some(
        unsafe { CStr::from_ptr(gr.gr_name) }
            .to_string_lossy()
            .into_owned(),
    )
}
