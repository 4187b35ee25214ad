//! A zeroed value in memory that processes forked afterwards share: an anonymous
//! `MAP_SHARED` mapping, or private heap memory where the mapping fails (then
//! each process sees only its own counts). The metrics regions are made this way
//! before any fork.

/// Owns the mapping (or allocation) of one `T`; derefs to it.
pub(super) struct SharedZeroed<T> {
    ptr: *const T,
    mapped: bool,
}

// SAFETY: `new`'s contract makes `T` atomics only, shared on purpose; the
// pointer stays valid until drop.
unsafe impl<T> Send for SharedZeroed<T> {}
unsafe impl<T> Sync for SharedZeroed<T> {}

impl<T> SharedZeroed<T> {
    /// # Safety
    /// All-zero bytes must be a valid `T`, and `T` must be safe to share between
    /// threads and processes through `&T` (atomics, fixed-size arrays of them).
    pub(super) unsafe fn new() -> SharedZeroed<T> {
        let size = std::mem::size_of::<T>();
        // SAFETY: a fresh anonymous mapping, zero-filled: a valid T by contract.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p != libc::MAP_FAILED {
            return SharedZeroed {
                ptr: p as *const T,
                mapped: true,
            };
        }
        let layout = std::alloc::Layout::new::<T>();
        // SAFETY: T has a non-zero size (the regions are structs of counters);
        // zeroed memory is a valid T by contract.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        SharedZeroed {
            ptr: p as *const T,
            mapped: false,
        }
    }

    /// Whether it is shared (else private to this process: mmap failed).
    pub(super) fn is_shared(&self) -> bool {
        self.mapped
    }
}

impl<T> std::ops::Deref for SharedZeroed<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: valid until drop (see `new`).
        unsafe { &*self.ptr }
    }
}

impl<T> Drop for SharedZeroed<T> {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from the matching mmap or alloc_zeroed in `new`.
        unsafe {
            if self.mapped {
                libc::munmap(self.ptr as *mut libc::c_void, std::mem::size_of::<T>());
            } else {
                std::alloc::dealloc(self.ptr as *mut u8, std::alloc::Layout::new::<T>());
            }
        }
    }
}
