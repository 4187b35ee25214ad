//! SIGPROF belongs to the PHP thread. NTS PHP's `max_execution_time` is an
//! `ITIMER_PROF` timer of the whole process, and the kernel hands its SIGPROF to
//! any thread that does not block it. So the PHP thread unblocks it for itself,
//! the threads this library starts for other work block it for themselves, and
//! `fephp_worker_start` blocks it in the host thread that calls it (documented
//! there). No other call changes a host thread's signal mask.

/// Blocks (`true`) or unblocks SIGPROF in the calling thread only.
pub fn set_blocked(blocked: bool) {
    let how = if blocked {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: `set` is a local initialized by sigemptyset; pthread_sigmask changes
    // the mask of the calling thread alone and accepts a NULL old-mask pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPROF);
        libc::pthread_sigmask(how, &set, std::ptr::null_mut());
    }
}

/// Whether SIGPROF is blocked in the calling thread (for tests).
#[cfg(test)]
pub fn is_blocked() -> bool {
    // SAFETY: queries the calling thread's mask into a local.
    unsafe {
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old);
        libc::sigismember(&old, libc::SIGPROF) == 1
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_calling_thread_changes() {
        std::thread::spawn(|| {
            super::set_blocked(true);
            assert!(super::is_blocked());
            std::thread::spawn(|| {
                assert!(super::is_blocked(), "inherited");
                super::set_blocked(false);
                assert!(!super::is_blocked());
            })
            .join()
            .unwrap();
            assert!(super::is_blocked(), "the parent keeps its mask");
        })
        .join()
        .unwrap();
    }
}
