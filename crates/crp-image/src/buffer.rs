//! A heap buffer that starts on a page boundary, as `O_DIRECT` writes need
//! (a `Vec<u8>` is only byte-aligned).

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Alignment of every buffer: a page, which covers the logical block size
/// of the devices `O_DIRECT` is used on.
const ALIGN: usize = 4096;

pub(crate) struct PageBuffer {
    memory: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer owns its memory exclusively (like a Vec<u8>); nothing
// in it is tied to a thread.
unsafe impl Send for PageBuffer {}

impl PageBuffer {
    /// `bytes` of zeroes, page-aligned (`bytes` is rounded up to a page).
    pub(crate) fn new(bytes: usize) -> std::io::Result<Self> {
        let layout = Layout::from_size_align(bytes.max(1).next_multiple_of(ALIGN), ALIGN)
            .map_err(|_| std::io::Error::other("page buffer too large"))?;
        // SAFETY: the layout's size is not zero.
        let memory = unsafe { alloc_zeroed(layout) };
        let memory = NonNull::new(memory).ok_or_else(|| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
        Ok(Self { memory, layout })
    }
}

impl Deref for PageBuffer {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: `memory` points to `layout.size()` initialised (zeroed)
        // bytes this buffer owns until it is dropped.
        unsafe { std::slice::from_raw_parts(self.memory.as_ptr(), self.layout.size()) }
    }
}

impl DerefMut for PageBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.memory.as_ptr(), self.layout.size()) }
    }
}

impl Drop for PageBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this very layout, freed once.
        unsafe { dealloc(self.memory.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_page_aligned_zeroed_and_whole_pages() {
        for bytes in [1, 4096, 5000, 8 << 20] {
            let buffer = PageBuffer::new(bytes).unwrap();
            assert_eq!(buffer.as_ptr() as usize % ALIGN, 0);
            assert_eq!(buffer.len(), bytes.next_multiple_of(ALIGN));
            assert!(buffer.iter().all(|&byte| byte == 0));
        }
    }
}
