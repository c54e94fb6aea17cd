//! User space's view of the `/dev/crp` ABI: the very file the kernel module
//! compiles (`crates/crp-kmod/abi.rs`), included unchanged so the two sides
//! cannot drift apart.
#![no_std]

#[path = "../../crp-kmod/abi.rs"]
mod abi;

pub use abi::*;
