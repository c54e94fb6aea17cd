//! Recursive structures: the kernel keeps a process's VMAs in a tree of
//! pointers. crp never stores pointers: an image holds the VMAs as a flat,
//! address-ordered list, and this crate rebuilds the tree from it
//! ([`AddressSpace`]) to check the layout and to search it for holes, the way
//! the kernel's maple tree answers `get_unmapped_area`.

mod address_space;

pub use address_space::{AddressSpace, LayoutError};
