//! The global allocator: the system allocator, except that very large allocations are
//! lazily backed (`mmap` with `MAP_NORESERVE`).
//!
//! Why: the `kafka-protocol` decoder sizes a `Vec` from the element count a client sends
//! (`Vec::with_capacity(n)`) before it decodes any element. An 8-byte request declaring
//! 50 million topics would make the system allocator fail and abort the broker. With lazy
//! backing the reservation costs address space only; decoding then fails on the first
//! missing element and the untouched mapping is released. Memory actually used stays
//! bounded by the request bytes, which the listener caps before decoding.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are mapped lazily.
const LAZY_THRESHOLD: usize = 64 * 1024 * 1024;
/// `mmap` returns page-aligned memory; larger alignments stay with the system allocator.
const PAGE_ALIGN: usize = 4096;

pub struct TernAllocator;

fn is_lazy(size: usize, align: usize) -> bool {
    size >= LAZY_THRESHOLD && align <= PAGE_ALIGN
}

// SAFETY: every pointer handed out by `alloc` is released by the matching branch of
// `dealloc`, chosen by the same size/alignment test on the same layout.
unsafe impl GlobalAlloc for TernAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_lazy(layout.size(), layout.align()) {
            return System.alloc(layout);
        }
        let ptr = libc::mmap(
            std::ptr::null_mut(),
            layout.size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if ptr == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            ptr.cast()
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_lazy(layout.size(), layout.align()) {
            // Fresh anonymous mappings are zero-filled.
            self.alloc(layout)
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_lazy(layout.size(), layout.align()) {
            libc::munmap(ptr.cast(), layout.size());
        } else {
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !is_lazy(layout.size(), layout.align()) && !is_lazy(new_size, layout.align()) {
            return System.realloc(ptr, layout, new_size);
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new_ptr = self.alloc(new_layout);
        if !new_ptr.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new_ptr
    }
}
