//! Zeroed memory straight from the kernel, given back to it when dropped: the storage of a
//! session's ring.
//!
//! Why not `vec![0; n]`: the allocator decides where a large zeroed block comes from. glibc
//! maps the first 256 KiB ring directly (untouched pages cost nothing, freeing unmaps it), but
//! once one is freed it raises its mmap threshold and serves later rings from the heap,
//! where `calloc` zeroes them (every page resident) and `free` keeps them: three rounds of 50
//! sessions left 15.8 MiB resident with no session alive (issue 14). Other allocators differ
//! again (zig's musl malloc writes every page it hands out). An anonymous private mapping is
//! the same on every libc: its pages are the kernel's shared zero page until output is written
//! there, and `munmap` returns them at once.
//!
//! This file and `pty.rs` are the only places with `unsafe`.

use std::num::NonZeroUsize;
use std::ptr::NonNull;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

/// An anonymous, private, read-write mapping of `len` bytes, all zero at first.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes (at least 1). Fails when the kernel refuses (`ENOMEM`: no address
    /// space, or a strict overcommit policy with too little memory left); the caller refuses
    /// the one thing that needed it.
    pub fn new(len: usize) -> std::io::Result<Mapping> {
        let len = len.max(1);
        let size = NonZeroUsize::new(len).unwrap_or(NonZeroUsize::MIN);
        // SAFETY: no address is requested (the kernel picks a fresh range, so no existing
        // mapping is replaced) and the mapping is anonymous (no file whose contents could
        // change under us). The result is a new range of `len` readable, writable, zeroed
        // bytes that nothing else refers to.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE,
            )
        }
        .map_err(std::io::Error::from)?;
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }
}

impl std::ops::Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` is the start of a live mapping of `len` readable bytes, initialised
        // (zero, or written through `deref_mut`), that only this value owns; it stays mapped
        // until `drop`, which cannot run while this borrow of `self` lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Mapping {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and the mapping is writable; `&mut self` makes this the only
        // reference to those bytes while it lives.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what `mmap` returned, unmapped only here, once; no
        // slice of it outlives `self` (they borrow it).
        let unmapped = unsafe { munmap(self.ptr.cast(), self.len) };
        // munmap of a range we mapped fails only on invalid arguments, which would be a bug
        // here; the memory would stay mapped, so say it and go on.
        if let Err(e) = unmapped {
            eprintln!("keepty: munmap of {} bytes failed: {e}", self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_writable_and_sized() {
        let mut m = Mapping::new(10_000).unwrap();
        assert_eq!(m.len(), 10_000);
        assert!(m.iter().all(|&b| b == 0));
        m[9_999] = 7;
        m[0] = 1;
        assert_eq!((m[0], m[9_999]), (1, 7));
        assert_eq!(Mapping::new(0).unwrap().len(), 1);
    }

    #[test]
    fn a_refused_mapping_is_an_error_not_a_panic() {
        // More address space than any machine has.
        assert!(Mapping::new(usize::MAX / 2).is_err());
    }
}
