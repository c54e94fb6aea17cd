//! A small seeded generator (SplitMix64): the same seed gives the same
//! mutations on every machine, so a failure is reproduced from its seed.

#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn next_u32(&mut self) -> u32 {
        let [a, b, c, d, ..] = self.next_u64().to_le_bytes();
        u32::from_le_bytes([a, b, c, d])
    }

    pub fn next_u8(&mut self) -> u8 {
        self.next_u64().to_le_bytes()[0]
    }

    /// A value in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    pub fn index(&mut self, length: usize) -> usize {
        usize::try_from(self.below(length.max(1) as u64)).unwrap_or(0)
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    pub fn pick<T: Copy>(&mut self, values: &[T]) -> T {
        values[self.index(values.len())]
    }

    /// An integer a parser or an arithmetic step is likely to get wrong:
    /// the edges of the ranges, page-aligned addresses near the top, or any.
    pub fn hostile_u64(&mut self) -> u64 {
        match self.below(10) {
            0 => 0,
            1 => u64::MAX,
            2 => u64::MAX - self.below(4096),
            3 => (u64::MAX - self.below(1 << 20)) & !0xfff,
            4 => i64::MAX.cast_unsigned() + self.below(3) - 1,
            5 => 0x7fff_ffff_f000 + (self.below(16) << 12),
            6 => self.below(64),
            7 => u64::from(u32::MAX) + self.below(3) - 1,
            8 => self.next_u64() & !0xfff,
            _ => self.next_u64(),
        }
    }

    pub fn hostile_i32(&mut self) -> i32 {
        match self.below(8) {
            0 => i32::MIN,
            1 => i32::MAX,
            2 => -1,
            3 => 0,
            4 => 65,
            5 => i32::try_from(self.below(70)).unwrap_or(0),
            6 => i32::MIN + 1,
            _ => self.next_u32().cast_signed(),
        }
    }
}
