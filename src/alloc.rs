//! The global allocator: the system allocator, except that very large allocations made
//! while a request body is being decoded are lazily backed (`mmap` with `MAP_NORESERVE`).
//!
//! Why: the `kafka-protocol` decoder sizes a `Vec` from the element count a client sends
//! (`Vec::with_capacity(n)`) before it decodes any element. An 8-byte request declaring
//! 50 million topics would make the system allocator fail and abort the broker. With lazy
//! backing the reservation costs address space only; decoding then fails on the first
//! missing element and the untouched mapping is released.
//!
//! Only decoding gets this treatment (`decode_guard` marks the thread): everything else,
//! a legitimate 80 MiB Produce frame growing as it arrives included, uses the system
//! allocator unchanged (its `realloc` moves large blocks with `mremap`, where a copy would
//! need both blocks at once — what an address-space limit such as systemd's `LimitAS`
//! cannot afford). The proper fix, bounding element counts by the bytes left before
//! reserving, belongs in the codec crate; see docs/ARCHITECTURE.md, "Hostile input".

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Allocations at least this large are mapped lazily while decoding.
const LAZY_THRESHOLD: usize = 64 * 1024 * 1024;
/// `mmap` returns page-aligned memory; larger alignments stay with the system allocator.
const PAGE_ALIGN: usize = 4096;

thread_local! {
    /// Set while this thread decodes an untrusted request body.
    static DECODING: Cell<bool> = const { Cell::new(false) };
}

/// Marks (or unmarks) the current thread as decoding an untrusted request.
pub fn set_decoding(on: bool) {
    DECODING.with(|d| d.set(on));
}

pub fn is_decoding() -> bool {
    DECODING.with(Cell::get)
}

pub struct TernAllocator;

/// Mapped blocks carry this header-free marker: their size is page-rounded and they are
/// released by `munmap` whatever thread frees them, so the choice must not depend on the
/// thread's state at free time. A lazily mapped block is recognised by its address
/// alignment and size class instead: the layout size is ≥ LAZY_THRESHOLD and the pointer
/// is page-aligned and was returned by `mmap` — tracked in a small registry.
mod registry {
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SLOTS: usize = 64;
    static PTRS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

    pub fn insert(ptr: usize) -> bool {
        for slot in &PTRS {
            if slot
                .compare_exchange(0, ptr, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
        }
        false
    }

    pub fn remove(ptr: usize) -> bool {
        for slot in &PTRS {
            if slot
                .compare_exchange(ptr, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                return true;
            }
        }
        false
    }
}

fn wants_lazy(layout: &Layout) -> bool {
    layout.size() >= LAZY_THRESHOLD && layout.align() <= PAGE_ALIGN && is_decoding()
}

unsafe fn map_lazily(size: usize) -> *mut u8 {
    let ptr = libc::mmap(
        std::ptr::null_mut(),
        size,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
        -1,
        0,
    );
    if ptr == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    if !registry::insert(ptr as usize) {
        libc::munmap(ptr, size);
        return std::ptr::null_mut();
    }
    ptr.cast()
}

// SAFETY: a pointer is released by `munmap` exactly when it was registered by
// `map_lazily` (same size: the layout passed to `dealloc` is the one of `alloc`), and by
// the system allocator otherwise.
unsafe impl GlobalAlloc for TernAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if wants_lazy(&layout) {
            map_lazily(layout.size())
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if wants_lazy(&layout) {
            // Fresh anonymous mappings are zero-filled.
            map_lazily(layout.size())
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= LAZY_THRESHOLD && registry::remove(ptr as usize) {
            libc::munmap(ptr.cast(), layout.size());
        } else {
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let mapped = layout.size() >= LAZY_THRESHOLD && registry::remove(ptr as usize);
        if !mapped {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            if !wants_lazy(&new_layout) {
                return System.realloc(ptr, layout, new_size);
            }
            // A decoder growing a vector past the threshold: move it to a lazy mapping.
            let new_ptr = map_lazily(new_size);
            if !new_ptr.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                System.dealloc(ptr, layout);
            }
            return new_ptr;
        }
        // A lazily mapped block: move it into memory of the new kind.
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new_ptr = self.alloc(new_layout);
        if !new_ptr.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
            libc::munmap(ptr.cast(), layout.size());
        } else {
            // Keep the old block valid: the caller still owns it.
            registry::insert(ptr as usize);
        }
        new_ptr
    }
}
