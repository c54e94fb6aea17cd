//! Resource limits (RLIMIT_*), read and set with injected `prlimit64` so
//! that they apply to the process itself.

use crp_ptrace::{Capture, EngineError, Persist, Restore, Tracee, TraceeExt};

use crate::valid::Invalid;

/// RLIMIT_CPU (0) through RLIMIT_RTTIME (15).
const RESOURCE_COUNT: usize = 16;
/// `struct rlimit64`: soft and hard.
const RLIMIT64_SIZE: usize = 16;
const RLIMIT_NAMES: [&str; 16] = [
    "RLIMIT_CPU",
    "RLIMIT_FSIZE",
    "RLIMIT_DATA",
    "RLIMIT_STACK",
    "RLIMIT_CORE",
    "RLIMIT_RSS",
    "RLIMIT_NPROC",
    "RLIMIT_NOFILE",
    "RLIMIT_MEMLOCK",
    "RLIMIT_AS",
    "RLIMIT_LOCKS",
    "RLIMIT_SIGPENDING",
    "RLIMIT_MSGQUEUE",
    "RLIMIT_NICE",
    "RLIMIT_RTPRIO",
    "RLIMIT_RTTIME",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Limit {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

impl Limit {
    /// For messages only: a resource number no kernel has shows as `RLIMIT_?`.
    pub fn name(&self) -> &'static str {
        usize::try_from(self.resource).ok().and_then(|index| RLIMIT_NAMES.get(index)).copied().unwrap_or("RLIMIT_?")
    }
}

/// Every resource limit of a process, as one kind of state.
#[derive(Debug, Clone, Default, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct ResourceLimits(pub Vec<Limit>);

impl From<Vec<Limit>> for ResourceLimits {
    fn from(limits: Vec<Limit>) -> Self {
        Self(limits)
    }
}

impl std::ops::Deref for ResourceLimits {
    type Target = Vec<Limit>;

    fn deref(&self) -> &Vec<Limit> {
        &self.0
    }
}

impl<'a> IntoIterator for &'a ResourceLimits {
    type Item = &'a Limit;
    type IntoIter = std::slice::Iter<'a, Limit>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl std::ops::DerefMut for ResourceLimits {
    fn deref_mut(&mut self) -> &mut Vec<Limit> {
        &mut self.0
    }
}

impl Persist for ResourceLimits {
    const KIND: &'static str = "resource limits";
    type Error = EngineError;

    /// prlimit64 of every resource, injected.
    fn capture(context: &mut Capture<'_>) -> Result<Self, EngineError> {
        capture(context.tracee).map(Self)
    }

    /// Raising a hard limit needs crp's privileges: before the credentials.
    fn restore(&self, context: &mut Restore<'_>) -> Result<(), EngineError> {
        restore(context.tracee, &self.0)
    }
}

/// Every limit of the tracee.
fn capture(tracee: &mut dyn Tracee) -> Result<Vec<Limit>, EngineError> {
    let mut scratch = tracee.scratch();
    let buffer = scratch.reserve(RLIMIT64_SIZE * RESOURCE_COUNT);
    scratch.commit(tracee)?;
    for resource in 0..RESOURCE_COUNT {
        let slot = buffer + (resource * RLIMIT64_SIZE) as u64;
        tracee.syscall("prlimit64", libc::SYS_prlimit64, [0, resource as u64, 0, slot, 0, 0])?;
    }
    // `struct rlimit64` as two whole 8-byte words: no conversion can fail.
    let mut raw = [[[0u8; 8]; 2]; RESOURCE_COUNT];
    tracee.read_memory(buffer, raw.as_flattened_mut().as_flattened_mut())?;
    Ok(raw
        .iter()
        .zip(0u32..)
        .map(|(pair, resource)| {
            let [soft, hard] = pair.map(u64::from_le_bytes);
            Limit { resource, soft, hard }
        })
        .collect())
}

/// Sets every limit in the tracee.
fn restore(tracee: &mut dyn Tracee, limits: &[Limit]) -> Result<(), EngineError> {
    let mut scratch = tracee.scratch();
    let addresses: Vec<(u32, u64)> = limits
        .iter()
        .map(|limit| (limit.resource, scratch.push(&[limit.soft.to_le_bytes(), limit.hard.to_le_bytes()].concat())))
        .collect();
    scratch.commit(tracee)?;
    for (resource, address) in addresses {
        tracee.syscall("prlimit64", libc::SYS_prlimit64, [0, u64::from(resource), address, 0, 0, 0])?;
    }
    Ok(())
}

/// Refuses limits `prlimit64` would refuse: an unknown resource, a soft
/// value above the hard one, a resource given twice.
pub fn check(limits: &[Limit]) -> Result<(), Invalid> {
    for (index, limit) in limits.iter().enumerate() {
        let field = || format!("resource limit {index} ({})", limit.name());
        if !usize::try_from(limit.resource).is_ok_and(|resource| resource < RESOURCE_COUNT) {
            return Err(Invalid::new(field(), format!("has resource {}, not 0..{RESOURCE_COUNT}", limit.resource)));
        }
        if limit.soft > limit.hard {
            return Err(Invalid::new(field(), format!("has soft {} above hard {}", limit.soft, limit.hard)));
        }
        if limits[..index].iter().any(|other| other.resource == limit.resource) {
            return Err(Invalid::new(field(), "is given twice"));
        }
    }
    Ok(())
}

/// The first limit whose hard value is above the restorer's own and so
/// could only be set with CAP_SYS_RESOURCE.
pub fn first_above(limits: &[Limit], own: impl Fn(u32) -> Option<u64>) -> Option<(Limit, u64)> {
    limits.iter().find_map(|limit| {
        own(limit.resource).filter(|own_hard| limit.hard > *own_hard).map(|own_hard| (*limit, own_hard))
    })
}

impl ResourceLimits {
    /// The kmod ABI: every limit in the module's task record, by resource number.
    pub fn from_abi(state: &crp_kmod_abi::CrpTaskState) -> Self {
        Self(
            (0u32..)
                .zip(state.rlimits.iter())
                .map(|(resource, limit)| Limit { resource, soft: limit.soft, hard: limit.hard })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crp_ptrace::fake::FakeTracee;
    use crp_ptrace::{Capture, Restore};

    #[test]
    fn every_limit_is_read_and_set_back_by_prlimit64() {
        let mut process = FakeTracee::answering(|call, memory| {
            if call.number == libc::SYS_prlimit64 && call.args[3] != 0 {
                let resource = call.args[1];
                memory.write(call.args[3], &[resource.to_le_bytes(), (resource + 100).to_le_bytes()].concat());
            }
            0
        });
        let limits = ResourceLimits::capture(&mut Capture {
            tracee: &mut process,
            proc: &crp_ptrace::fake::snapshot(),
            stopped_before_freeze: false,
        })
        .unwrap();
        assert_eq!(limits.len(), RESOURCE_COUNT);
        assert_eq!(limits[7], Limit { resource: 7, soft: 7, hard: 107 });

        let mut restored = FakeTracee::default();
        limits.restore(&mut Restore::new(&mut restored)).unwrap();
        let calls = restored.calls_of(libc::SYS_prlimit64);
        assert_eq!(calls.len(), RESOURCE_COUNT);
        let nofile = calls.iter().find(|call| call.args[1] == 7).unwrap();
        assert_eq!(restored.memory.read(nofile.args[2], 16), [7u64.to_le_bytes(), 107u64.to_le_bytes()].concat());
    }

    #[test]
    fn limits_above_the_restorer_are_found() {
        let limits = [Limit { resource: 7, soft: 1024, hard: 4096 }, Limit { resource: 3, soft: 8, hard: 16 }];
        let found = first_above(&limits, |resource| Some(if resource == 7 { 2048 } else { 1 << 40 }));
        assert_eq!(found.map(|(limit, own)| (limit.name(), own)), Some(("RLIMIT_NOFILE", 2048)));
        assert!(first_above(&limits, |_| Some(u64::MAX)).is_none());
    }
}
