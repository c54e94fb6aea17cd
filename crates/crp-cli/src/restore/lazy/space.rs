//! Where the image's pages go in one address space served lazily: the
//! memory the process moved (`mremap`) or dropped (`munmap`, `madvise`)
//! since its registration, in the order it did, so that an image page is
//! placed where it is now, never where the process discarded memory, and a
//! fault is traced back to the image page it wants.

/// One change the process made to its registered memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// `length` bytes moved from `from` to `to`.
    Moved { from: u64, to: u64, length: u64 },
    /// `[start, end)` unmapped or discarded: what was there is gone, and
    /// what comes there later is not the image's.
    Dropped { start: u64, end: u64 },
}

/// The changes of one address space, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Changes(Vec<Change>);

impl Changes {
    pub(crate) fn push(&mut self, change: Change) {
        self.0.push(change);
    }

    /// Where the image's page at `address` is now; `None` if the process
    /// dropped it.
    pub(crate) fn current(&self, address: u64) -> Option<u64> {
        self.0.iter().try_fold(address, |at, change| match *change {
            Change::Moved { from, to, length } if (from..from.saturating_add(length)).contains(&at) => {
                Some(at - from + to)
            }
            Change::Dropped { start, end } if (start..end).contains(&at) => None,
            _ => Some(at),
        })
    }

    /// Which image page the page at `address` is now; `None` when it is
    /// memory that is not the image's (made or left empty by a change).
    pub(crate) fn original(&self, address: u64) -> Option<u64> {
        self.0.iter().rev().try_fold(address, |at, change| match *change {
            Change::Moved { from, to, length } if (to..to.saturating_add(length)).contains(&at) => Some(at - to + from),
            Change::Moved { from, length, .. } if (from..from.saturating_add(length)).contains(&at) => None,
            Change::Dropped { start, end } if (start..end).contains(&at) => None,
            _ => Some(at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_moves_and_drops_in_order() {
        let mut changes = Changes::default();
        assert_eq!(changes.current(0x1000), Some(0x1000));
        changes.push(Change::Moved { from: 0x1000, to: 0x9000, length: 0x2000 });
        changes.push(Change::Dropped { start: 0xa000, end: 0xb000 });
        assert_eq!(changes.current(0x1000), Some(0x9000));
        assert_eq!(changes.current(0x2000), None);
        assert_eq!(changes.current(0x5000), Some(0x5000));
        assert_eq!(changes.original(0x9000), Some(0x1000));
        assert_eq!(changes.original(0xa000), None);
        // Left empty by the move.
        assert_eq!(changes.original(0x1000), None);
        assert_eq!(changes.original(0x5000), Some(0x5000));
    }

    #[test]
    fn memory_moved_back_is_the_image_again() {
        let mut changes = Changes::default();
        changes.push(Change::Moved { from: 0x1000, to: 0x9000, length: 0x1000 });
        changes.push(Change::Moved { from: 0x9000, to: 0x1000, length: 0x1000 });
        assert_eq!(changes.current(0x1000), Some(0x1000));
        assert_eq!(changes.original(0x1000), Some(0x1000));
        assert_eq!(changes.original(0x9000), None);
    }
}
