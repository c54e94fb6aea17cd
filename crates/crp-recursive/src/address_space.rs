//! An address-ordered tree of non-overlapping ranges, each carrying a payload.
//!
//! Nodes live in an intrusive red-black tree keyed by their start address.
//! INVARIANT: a node's range never changes while it is linked, ranges are
//! non-empty and no two linked ranges overlap.

use intrusive_collections::{Bound, KeyAdapter, RBTree, RBTreeLink, intrusive_adapter};

/// One mapped range and what it holds.
#[derive(Debug)]
struct RangeNode<T> {
    link: RBTreeLink,
    start: u64,
    end: u64,
    payload: T,
}

intrusive_adapter!(RangeAdapter<T> = Box<RangeNode<T>>: RangeNode<T> { link => RBTreeLink });

impl<'a, T> KeyAdapter<'a> for RangeAdapter<T> {
    type Key = u64;
    fn get_key(&self, node: &'a RangeNode<T>) -> u64 {
        node.start
    }
}

/// Why a range cannot join the address space.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("range [{start:#x}, {end:#x}) is empty or reversed")]
    EmptyRange { start: u64, end: u64 },
    #[error("range [{start:#x}, {end:#x}) overlaps [{other_start:#x}, {other_end:#x})")]
    Overlap { start: u64, end: u64, other_start: u64, other_end: u64 },
}

/// The rebuilt address space.
pub struct AddressSpace<T> {
    tree: RBTree<RangeAdapter<T>>,
    len: usize,
}

impl<T> std::fmt::Debug for AddressSpace<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_list().entries(self.ranges().map(|(start, end, _)| start..end)).finish()
    }
}

impl<T> Default for AddressSpace<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> AddressSpace<T> {
    pub fn new() -> Self {
        Self { tree: RBTree::new(RangeAdapter::new()), len: 0 }
    }

    /// Rebuilds the tree from a flat list (the order does not matter).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (u64, u64, T)>) -> Result<Self, LayoutError> {
        let mut space = Self::new();
        for (start, end, payload) in ranges {
            space.insert(start, end, payload)?;
        }
        Ok(space)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds `[start, end)`; refuses empty ranges and overlaps.
    pub fn insert(&mut self, start: u64, end: u64, payload: T) -> Result<(), LayoutError> {
        if start >= end {
            return Err(LayoutError::EmptyRange { start, end });
        }
        // The only candidates for overlap are the last range starting before
        // `end` (it may extend over `start`).
        let cursor = self.tree.upper_bound(Bound::Excluded(&end));
        if let Some(node) = cursor.get()
            && node.end > start
        {
            return Err(LayoutError::Overlap { start, end, other_start: node.start, other_end: node.end });
        }
        self.tree.insert(Box::new(RangeNode { link: RBTreeLink::new(), start, end, payload }));
        self.len += 1;
        Ok(())
    }

    /// The range containing `address`, if any.
    pub fn find(&self, address: u64) -> Option<(u64, u64, &T)> {
        let cursor = self.tree.upper_bound(Bound::Included(&address));
        cursor.get().filter(|node| address < node.end).map(|node| (node.start, node.end, &node.payload))
    }

    /// Removes the range starting exactly at `start`.
    pub fn remove(&mut self, start: u64) -> Option<(u64, u64, T)> {
        let mut cursor = self.tree.find_mut(&start);
        let node = cursor.remove()?;
        self.len -= 1;
        Some((node.start, node.end, node.payload))
    }

    /// All ranges in address order.
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64, &T)> {
        self.tree.iter().map(|node| (node.start, node.end, &node.payload))
    }

    /// The lowest address `a` with `low <= a`, `a + size <= high`, `a`
    /// aligned to `align` (a power of two), such that `[a, a + size)` touches
    /// no range.
    pub fn find_gap(&self, size: u64, align: u64, low: u64, high: u64) -> Option<u64> {
        debug_assert!(align.is_power_of_two());
        let align_up = |value: u64| value.checked_add(align - 1).map(|v| v & !(align - 1));
        let mut candidate = align_up(low)?;
        for (start, end, _) in self.ranges() {
            if end <= candidate {
                continue;
            }
            if candidate.checked_add(size)? <= start {
                break;
            }
            candidate = align_up(end.max(candidate))?;
        }
        (candidate.checked_add(size)? <= high).then_some(candidate)
    }

    /// Checks the tree's invariants: sorted by start, non-empty, disjoint,
    /// and the count matches. Used by tests and after loading untrusted data.
    pub fn check_invariants(&self) -> Result<(), LayoutError> {
        let mut previous: Option<(u64, u64)> = None;
        let mut count = 0;
        for (start, end, _) in self.ranges() {
            if start >= end {
                return Err(LayoutError::EmptyRange { start, end });
            }
            if let Some((other_start, other_end)) = previous
                && other_end > start
            {
                return Err(LayoutError::Overlap { start, end, other_start, other_end });
            }
            previous = Some((start, end));
            count += 1;
        }
        assert_eq!(count, self.len, "length bookkeeping broken");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// The model: a BTreeMap from start to end, with the obvious semantics.
    fn model_overlaps(model: &BTreeMap<u64, u64>, start: u64, end: u64) -> bool {
        model.iter().any(|(&s, &e)| s < end && start < e)
    }

    fn model_gap(model: &BTreeMap<u64, u64>, size: u64, align: u64, low: u64, high: u64) -> Option<u64> {
        let mut candidate = low.next_multiple_of(align);
        while candidate + size <= high {
            if !model_overlaps(model, candidate, candidate + size) {
                return Some(candidate);
            }
            candidate += align;
        }
        None
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u64),
        Remove(usize),
        Find(u64),
        Gap(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..256, 1u64..24).prop_map(|(start, length)| Op::Insert(start * 16, (start + length) * 16)),
            any::<usize>().prop_map(Op::Remove),
            (0u64..4200).prop_map(Op::Find),
            (1u64..64, 0u64..3).prop_map(|(size, align_shift)| Op::Gap(size * 16, 16 << align_shift)),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec(op(), 1..120)) {
            let mut space = AddressSpace::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(start, end) => {
                        let result = space.insert(start, end, start ^ end);
                        prop_assert_eq!(result.is_err(), model_overlaps(&model, start, end));
                        if result.is_ok() {
                            model.insert(start, end);
                        }
                    }
                    Op::Remove(index) => {
                        if !model.is_empty() {
                            let start = *model.keys().nth(index % model.len()).unwrap();
                            let end = model.remove(&start).unwrap();
                            prop_assert_eq!(space.remove(start), Some((start, end, start ^ end)));
                        }
                    }
                    Op::Find(address) => {
                        let expected = model.range(..=address).next_back()
                            .filter(|(_, e)| address < **e)
                            .map(|(&s, &e)| (s, e, s ^ e));
                        prop_assert_eq!(space.find(address).map(|(s, e, p)| (s, e, *p)), expected);
                    }
                    Op::Gap(size, align) => {
                        prop_assert_eq!(
                            space.find_gap(size, align, 32, 4400),
                            model_gap(&model, size, align, 32, 4400)
                        );
                    }
                }
                space.check_invariants().unwrap();
                prop_assert_eq!(space.len(), model.len());
                let listed: Vec<(u64, u64)> = space.ranges().map(|(s, e, _)| (s, e)).collect();
                let expected: Vec<(u64, u64)> = model.iter().map(|(&s, &e)| (s, e)).collect();
                prop_assert_eq!(listed, expected);
            }
        }
    }

    #[test]
    fn empty_and_reversed_ranges_are_refused() {
        let mut space = AddressSpace::new();
        assert!(matches!(space.insert(5, 5, ()), Err(LayoutError::EmptyRange { .. })));
        assert!(matches!(space.insert(9, 5, ()), Err(LayoutError::EmptyRange { .. })));
        assert!(space.is_empty());
    }

    #[test]
    fn gap_search_fails_when_full() {
        let space = AddressSpace::from_ranges([(0, 100, ()), (100, 200, ())]).unwrap();
        assert_eq!(space.find_gap(10, 1, 0, 200), None);
        assert_eq!(space.find_gap(10, 1, 0, 210), Some(200));
    }
}
