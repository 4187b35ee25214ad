//! The host's memory allocator, and giving freed memory back to the system.

/// mimalloc for the host process: requests allocate on the I/O thread and free on
/// the PHP thread, which glibc malloc handles with lock contention.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

extern "C" {
    /// mimalloc's collection of freed memory (part of the statically linked
    /// allocator above).
    fn mi_collect(force: bool);
}

/// Returns memory freed on the calling thread (and whole segments freed by any)
/// to the system. mimalloc purges free pages only after a delay and only when the
/// allocator touches their segment again, so a worker that goes quiet after a
/// burst (a body flood) would keep its peak; the worker's I/O thread calls this
/// once a second (a pass over its pages: microseconds for a quiet worker).
pub fn return_freed_memory() {
    // SAFETY: mi_collect takes no pointers and may run on any thread at any time.
    unsafe { mi_collect(true) }
}
