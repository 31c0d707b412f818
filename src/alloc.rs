//! The global allocator. Three kinds of memory, chosen by size:
//!
//! - **Small blocks** (under 64 KiB: small requests and responses, their decoded
//!   structures, records on their way to the log) come from mimalloc on glibc targets.
//!   Under load many are freed by another thread than the one that allocated them (a
//!   request decoded on one tokio worker, its answer sent from the other, a batch appended
//!   by the group commit), and glibc takes an arena lock for such frees: with 1,000
//!   unbatched producers its lock waits and wake-ups were 6.7 % of the broker's samples and
//!   its allocation functions 9.5 %. mimalloc hands such blocks back through per-thread
//!   lists without a lock: 2 – 5 µs less CPU per request (docs/BENCHMARKS.md, "A
//!   small-block allocator"). musl builds keep the system allocator: their C code is
//!   compiled by the GNU cross gcc, without musl's headers. So do fuzzing builds
//!   (`cfg(fuzzing)`, set by cargo-fuzz), so that AddressSanitizer sees every block.
//! - **Larger blocks** (batched requests, fetch responses, read buffers) stay with the
//!   system allocator. Given to mimalloc, they cost batched produce CPU and six concurrent
//!   consumers 50 % more peak RSS; there are few of them per request, so the arena lock is
//!   no cost there. From 1 MiB glibc maps each block on its own and returns it when freed,
//!   and its `realloc` moves such blocks with `mremap`, where a copy would need both blocks
//!   at once — what an address-space limit such as systemd's `LimitAS` cannot afford.
//! - **Very large allocations made while a request body is being decoded** are lazily
//!   backed (`mmap` with `MAP_NORESERVE`). The `kafka-protocol` decoder sizes a `Vec` from
//!   the element count a client sends (`Vec::with_capacity(n)`) before it decodes any
//!   element. An 8-byte request declaring 50 million topics would make the allocator fail
//!   and abort the broker. With lazy backing the reservation costs address space only;
//!   decoding then fails on the first missing element and the untouched mapping is
//!   released. Only decoding gets this treatment (`decode_guard` marks the thread): a
//!   legitimate 80 MiB Produce frame growing as it arrives is a large block. The proper
//!   fix, bounding element counts by the bytes left before reserving, belongs in the codec
//!   crate; see docs/ARCHITECTURE.md, "Hostile input".

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

#[cfg(all(target_os = "linux", target_env = "gnu", not(fuzzing)))]
use mimalloc::MiMalloc as SmallBlocks;
#[cfg(not(all(target_os = "linux", target_env = "gnu", not(fuzzing))))]
use std::alloc::System as SmallBlocks;

/// Blocks at least this large come from the system allocator.
const LARGE_BLOCK: usize = 64 << 10;

/// Allocations at least this large are mapped lazily while decoding.
const LAZY_THRESHOLD: usize = 64 * 1024 * 1024;
/// `mmap` returns page-aligned memory; larger alignments stay with the system allocator.
const PAGE_ALIGN: usize = 4096;

/// Allocator tuning for a gateway; called first thing in `main`, before any thread exists.
///
/// glibc (large blocks, and whatever C code allocates): every thread that allocates
/// concurrently gets its own arena, each reserving 64 MiB of address space — memory and
/// address space (a 32-bit Pi, systemd's `LimitAS`) for nothing, so two arenas serve
/// tern's few threads. Blocks of 1 MiB and more are always mapped on their own and
/// returned to the system when freed, instead of glibc raising that limit after each big
/// free and keeping such blocks in its heap. Setting that limit also fixes the trim
/// threshold at its 128 KiB default, so glibc gave memory back (`brk`, `madvise`) after
/// nearly every group commit under load, each time interrupting the other CPUs to flush
/// their TLBs: up to 4 MiB free at the top of a heap are kept.
pub fn tune_for_a_gateway() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
    }
}

/// The small-block allocator is tuned before its first allocation.
///
/// mimalloc reserves address space for its arenas 1 GiB at a time by default. Under an
/// address-space limit that reservation fails or crowds out the large blocks (a 400 MB
/// `LimitAS` could not take an 80 MiB Produce any more); 64 MiB at a time is plenty for
/// tern's small blocks, and later arenas grow as mimalloc needs them. The first arena is
/// reserved by an allocation made before `main` runs, hence the check on each allocation
/// (one relaxed load; the tuning itself is out of line).
#[inline]
fn tune_small_blocks_once() {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(fuzzing)))]
    if !SMALL_BLOCKS_TUNED.load(std::sync::atomic::Ordering::Relaxed) {
        tune_small_blocks();
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu", not(fuzzing)))]
#[cold]
#[inline(never)]
fn tune_small_blocks() {
    // SAFETY: mi_option_set only changes a setting; the first allocation happens before
    // any second thread exists, and setting it twice is harmless.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_RESERVE, MI_ARENA_RESERVE_KIB) };
    SMALL_BLOCKS_TUNED.store(true, std::sync::atomic::Ordering::Relaxed);
}

#[cfg(all(target_os = "linux", target_env = "gnu", not(fuzzing)))]
static SMALL_BLOCKS_TUNED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// `mi_option_arena_reserve` in the mimalloc this crate builds (v3; libmimalloc-sys has no
/// constant for it). The unit test below checks the index still names that option.
#[cfg(all(target_os = "linux", target_env = "gnu", not(fuzzing)))]
const MI_OPTION_ARENA_RESERVE: libmimalloc_sys::mi_option_t = 23;
#[cfg(all(target_os = "linux", target_env = "gnu", not(fuzzing)))]
const MI_ARENA_RESERVE_KIB: libc::c_long = 64 * 1024;

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

fn is_small(size: usize) -> bool {
    size < LARGE_BLOCK
}

impl TernAllocator {
    /// Blocks of 64 KiB and more: lazily mapped while decoding, glibc's otherwise. Kept out
    /// of line so that every allocation site inlines only the small-block path.
    #[inline(never)]
    unsafe fn alloc_larger(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        if wants_lazy(&layout) {
            // Fresh anonymous mappings are zero-filled.
            map_lazily(layout.size())
        } else if zeroed {
            System.alloc_zeroed(layout)
        } else {
            System.alloc(layout)
        }
    }

    #[inline(never)]
    unsafe fn dealloc_larger(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= LAZY_THRESHOLD && registry::remove(ptr as usize) {
            libc::munmap(ptr.cast(), layout.size());
        } else {
            System.dealloc(ptr, layout);
        }
    }

    /// `realloc` of a block that is not lazily mapped into one that is not either, each
    /// with the allocator of its size.
    unsafe fn realloc_heap(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (is_small(layout.size()), is_small(new_size)) {
            (true, true) => SmallBlocks.realloc(ptr, layout, new_size),
            (false, false) => System.realloc(ptr, layout, new_size),
            _ => {
                // Crossing the line between the two: at most 64 KiB is copied.
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let new_ptr = self.alloc(new_layout);
                if !new_ptr.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                new_ptr
            }
        }
    }
}

// SAFETY: a pointer is released by `munmap` exactly when it was registered by
// `map_lazily` (same size: the layout passed to `dealloc` is the one of `alloc`), and
// otherwise by the allocator that its size selects, the same at allocation and release.
unsafe impl GlobalAlloc for TernAllocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_small(layout.size()) {
            tune_small_blocks_once();
            SmallBlocks.alloc(layout)
        } else {
            self.alloc_larger(layout, false)
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_small(layout.size()) {
            tune_small_blocks_once();
            SmallBlocks.alloc_zeroed(layout)
        } else {
            self.alloc_larger(layout, true)
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_small(layout.size()) {
            SmallBlocks.dealloc(ptr, layout);
        } else {
            self.dealloc_larger(ptr, layout);
        }
    }

    #[inline(never)]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let mapped = layout.size() >= LAZY_THRESHOLD && registry::remove(ptr as usize);
        if !mapped {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            if !wants_lazy(&new_layout) {
                return self.realloc_heap(ptr, layout, new_size);
            }
            // A decoder growing a vector past the threshold: move it to a lazy mapping.
            let new_ptr = map_lazily(new_size);
            if !new_ptr.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                self.dealloc(ptr, layout);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A block keeps its bytes while `realloc` moves it from mimalloc to glibc's heap, on
    /// to a mapping of its own (≥ 1 MiB) and back to mimalloc.
    #[test]
    fn realloc_across_the_large_block_line_keeps_the_contents() {
        let pattern = |i: usize| (i % 251) as u8;
        // SAFETY: each pointer is checked for null, used within its size and freed once
        // with the layout it was last (re)allocated with.
        unsafe {
            let layout = Layout::from_size_align(1000, 8).unwrap();
            let small = TernAllocator.alloc(layout);
            assert!(!small.is_null());
            for i in 0..1000 {
                *small.add(i) = pattern(i);
            }
            let large = TernAllocator.realloc(small, layout, 3 * LARGE_BLOCK);
            assert!(!large.is_null());
            for i in 0..1000 {
                assert_eq!(*large.add(i), pattern(i));
            }
            for i in 1000..3 * LARGE_BLOCK {
                *large.add(i) = pattern(i);
            }
            let larger_layout = Layout::from_size_align(3 * LARGE_BLOCK, 8).unwrap();
            let larger = TernAllocator.realloc(large, larger_layout, 20 * LARGE_BLOCK);
            assert!(!larger.is_null());
            assert!((0..3 * LARGE_BLOCK).all(|i| *larger.add(i) == pattern(i)));
            let back_layout = Layout::from_size_align(20 * LARGE_BLOCK, 8).unwrap();
            let back = TernAllocator.realloc(larger, back_layout, 4000);
            assert!(!back.is_null());
            assert!((0..4000).all(|i| *back.add(i) == pattern(i)));
            TernAllocator.dealloc(back, Layout::from_size_align(4000, 8).unwrap());
        }
    }

    /// The first allocation sets the arena reservation, and the hard-coded index is that
    /// option's: mimalloc's default reservation (1 GiB on 64-bit, 128 MiB on 32-bit, in
    /// KiB) is left in none of its options. With a wrong index the real option would still
    /// hold it, and another option would hold 64 Ki.
    #[cfg(all(target_os = "linux", target_env = "gnu", not(fuzzing)))]
    #[test]
    fn the_arena_reserve_option_is_set_before_the_first_arena() {
        drop(vec![0u8; 100]);
        let default_kib: libc::c_long = if cfg!(target_pointer_width = "64") {
            1 << 20
        } else {
            128 << 10
        };
        // SAFETY: reading an option in mimalloc's range has no preconditions.
        let options: Vec<libc::c_long> = (0..libmimalloc_sys::_mi_option_last)
            .map(|option| unsafe { libmimalloc_sys::mi_option_get(option) })
            .collect();
        assert_eq!(
            options[MI_OPTION_ARENA_RESERVE as usize],
            MI_ARENA_RESERVE_KIB
        );
        assert!(
            !options.contains(&default_kib),
            "an option still holds the default reservation: {options:?}"
        );
    }

    #[test]
    fn zeroed_blocks_of_both_kinds_are_zero() {
        for size in [64, LARGE_BLOCK - 1, LARGE_BLOCK, 2 << 20] {
            let layout = Layout::from_size_align(size, 16).unwrap();
            // SAFETY: checked for null, read within its size, freed with its layout.
            unsafe {
                let block = TernAllocator.alloc_zeroed(layout);
                assert!(!block.is_null());
                assert!((0..size).all(|i| *block.add(i) == 0), "size {size}");
                TernAllocator.dealloc(block, layout);
            }
        }
    }
}
