//! The XSAVE area as the kernel's ptrace regset presents it (standard
//! format): the 512-byte legacy region, the 64-byte XSAVE header, then the
//! extended components. Kernels no longer fill the software-reserved bytes
//! (464..512) of that region, so the features the dumping CPU had enabled
//! (its XCR0) are recorded beside the area.

use crate::error::ArchError;

const HEADER_XSTATE_BV: usize = 512;
/// XCOMP_BV, then the reserved bytes of the XSAVE header: all zero in the
/// standard format, or the kernel refuses the area.
const HEADER_XCOMP_BV: usize = 520;
const MXCSR: usize = 24;
const MINIMUM_LENGTH: usize = 576;
/// Far above any CPU's area today (AMX makes it about 11 KiB).
const MAXIMUM_LENGTH: usize = 1 << 16;

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct XsaveArea {
    pub bytes: Vec<u8>,
    /// XCR0 of the dumping CPU.
    pub xcr0: u64,
}

fn read_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(word)
}

impl XsaveArea {
    pub fn new(bytes: Vec<u8>, xcr0: u64) -> Result<Self, ArchError> {
        if bytes.len() < MINIMUM_LENGTH {
            return Err(ArchError::ShortXsaveArea { length: bytes.len() });
        }
        Ok(Self { bytes, xcr0 })
    }

    /// Refuses an area `PTRACE_SETREGSET(NT_X86_XSTATE)` would refuse once
    /// the restored child exists: a size no CPU has, a compacted or
    /// reserved header, components the dumping CPU did not enable, MXCSR
    /// reserved bits.
    pub fn check(&self) -> Result<(), ArchError> {
        let malformed = |reason: String| Err(ArchError::MalformedXsave { reason });
        let length = self.bytes.len();
        if !(MINIMUM_LENGTH..=MAXIMUM_LENGTH).contains(&length) {
            return malformed(format!("{length} bytes, not between {MINIMUM_LENGTH} and {MAXIMUM_LENGTH}"));
        }
        if self.bytes[HEADER_XCOMP_BV..MINIMUM_LENGTH].iter().any(|byte| *byte != 0) {
            return malformed("XCOMP_BV or the reserved header bytes are not zero".into());
        }
        let beyond = self.live_components() & !self.xcr0;
        if beyond != 0 {
            return malformed(format!(
                "components {beyond:#x} hold state but were not enabled (XCR0 {:#x})",
                self.xcr0
            ));
        }
        let mxcsr = read_u64(&self.bytes, MXCSR) & 0xffff_ffff;
        if mxcsr >> 16 != 0 {
            return malformed(format!("MXCSR {mxcsr:#x} has reserved bits set"));
        }
        Ok(())
    }

    /// The features the dumping CPU had enabled. The restored process may
    /// use any of them: glibc picks code paths from CPUID at start-up.
    pub fn enabled_features(&self) -> u64 {
        self.xcr0
    }

    /// Components actually holding state (XSTATE_BV).
    pub fn live_components(&self) -> u64 {
        if self.bytes.len() < MINIMUM_LENGTH {
            return 0;
        }
        read_u64(&self.bytes, HEADER_XSTATE_BV)
    }

    /// Refuses when this CPU lacks a feature the image's CPU had enabled.
    pub fn check_host_supports(&self, host_features: u64) -> Result<(), ArchError> {
        let image = self.enabled_features();
        let missing = image & !host_features;
        if missing != 0 {
            return Err(ArchError::MissingXsaveFeatures { image, host: host_features, missing });
        }
        Ok(())
    }

    /// This area in the size of `live` (the target task's current area; the
    /// kernel accepts only its own size), keeping only components this
    /// CPU's `host_features` enable.
    pub fn fitted_to(&self, live: &[u8], host_features: u64) -> Result<Vec<u8>, ArchError> {
        if live.len() < MINIMUM_LENGTH || self.bytes.len() < MINIMUM_LENGTH {
            return Err(ArchError::ShortXsaveArea { length: live.len().min(self.bytes.len()) });
        }
        let mut fitted = live.to_vec();
        let common = fitted.len().min(self.bytes.len());
        fitted[..464].copy_from_slice(&self.bytes[..464]);
        fitted[HEADER_XSTATE_BV..common].copy_from_slice(&self.bytes[HEADER_XSTATE_BV..common]);
        let xstate_bv = self.live_components() & host_features;
        fitted[HEADER_XSTATE_BV..HEADER_XSTATE_BV + 8].copy_from_slice(&xstate_bv.to_le_bytes());
        Ok(fitted)
    }
}

/// XCR0 of this CPU: the XSAVE features the OS enabled, 0 without XSAVE.
pub fn host_xsave_features() -> u64 {
    if !std::arch::is_x86_feature_detected!("xsave") {
        return 0;
    }
    // SAFETY: XGETBV(0) is available whenever the CPU reports XSAVE, which
    // was checked just above; it only reads XCR0.
    unsafe { read_xcr0() }
}

#[target_feature(enable = "xsave")]
fn read_xcr0() -> u64 {
    // SAFETY: this function is only compiled for and called on CPUs with
    // XSAVE (see host_xsave_features).
    unsafe { std::arch::x86_64::_xgetbv(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn area(enabled: u64, live: u64, length: usize) -> XsaveArea {
        let mut bytes = vec![0xAB; length];
        bytes[HEADER_XSTATE_BV..HEADER_XSTATE_BV + 8].copy_from_slice(&live.to_le_bytes());
        XsaveArea::new(bytes, enabled).unwrap()
    }

    #[test]
    fn missing_features_are_named() {
        let image = area(0b1110_0111, 0b111, 1024);
        assert!(image.check_host_supports(0b1110_0111).is_ok());
        let error = image.check_host_supports(0b111).unwrap_err();
        assert!(matches!(error, ArchError::MissingXsaveFeatures { missing: 0b1110_0000, .. }));
    }

    #[test]
    fn fitting_keeps_live_size_and_masks_components() {
        let image = area(0b111, 0b111, 832);
        let live = area(0b11, 0b1, 1088);
        let fitted = image.fitted_to(&live.bytes, 0b11).unwrap();
        assert_eq!(fitted.len(), 1088);
        assert_eq!(read_u64(&fitted, HEADER_XSTATE_BV), 0b11);
        assert_eq!(fitted[600], 0xAB);
    }

    #[test]
    fn short_areas_are_refused() {
        assert!(XsaveArea::new(vec![0; 100], 3).is_err());
    }

    #[test]
    fn areas_the_kernel_would_refuse_fail_the_check() {
        let mut good = area(0b111, 0b11, 832);
        good.bytes[HEADER_XCOMP_BV..MINIMUM_LENGTH].fill(0);
        good.bytes[MXCSR..MXCSR + 4].copy_from_slice(&0x1f80u32.to_le_bytes());
        assert!(good.check().is_ok());
        let mut compacted = good.clone();
        compacted.bytes[HEADER_XCOMP_BV + 7] = 0x80;
        assert!(compacted.check().unwrap_err().to_string().contains("XCOMP_BV"));
        let mut not_enabled = good.clone();
        not_enabled.xcr0 = 0b1;
        assert!(not_enabled.check().unwrap_err().to_string().contains("not enabled"));
        let mut short = good.clone();
        short.bytes.truncate(575);
        assert!(short.check().is_err());
        let mut huge = good;
        huge.bytes.resize(MAXIMUM_LENGTH + 1, 0);
        assert!(huge.check().is_err());
    }

    #[test]
    fn this_cpu_has_x87_and_sse() {
        assert_eq!(host_xsave_features() & 0b11, 0b11);
    }
}
