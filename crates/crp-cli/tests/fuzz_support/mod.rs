//! The pre-child pipeline of `crp restore` and `crp inspect`, run on
//! hostile images: everything crp computes from an image before a child
//! process exists, plus the restore steps that follow, against a fake
//! kernel. Shared by the hostile-value and the seeded fuzz tests.

#![allow(dead_code)] // each test file uses a different subset

pub mod bytes;
pub mod fake_kernel;
pub mod images;
pub mod mutate;
pub mod rng;

use crp_ptrace::{Persist, Restore};
use std::collections::HashMap;
use std::path::Path;

use crp_cli::model::ProcessImage;
use crp_cli::restore::validate::{self, TASK_SIZE};
use crp_image::ImageReader;

use fake_kernel::FakeKernel;

/// What became of an image.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Refused before anything would be created, with this message.
    Refused(String),
    /// Accepted: every step before and after the child would be created
    /// succeeded.
    Accepted,
}

/// Runs every step crp takes with the image at `path` before creating a
/// child (open, inspect, load and validate, host checks, address space,
/// vDSO placement, kmod records), then the restore steps against a fake
/// kernel. `Err` names a step that failed or a syscall the kernel would
/// refuse although `load_image` accepted the image: a refusal that would
/// come too late, after the child exists. Panics are the caller's to catch.
pub fn pre_child_pipeline(path: &Path) -> Result<Outcome, String> {
    let reader = match ImageReader::open(path) {
        Ok(reader) => reader,
        Err(error) => return Ok(Outcome::Refused(error.to_string())),
    };
    if let Ok(summary) = crp_cli::inspect::summarize(&reader) {
        let text = crp_cli::inspect::render_text(&summary);
        let json = serde_json::to_string(&summary).map_err(|error| format!("inspect --json: {error}"))?;
        if text.is_empty() || json.is_empty() {
            return Err("inspect rendered nothing".into());
        }
    }
    let image = match validate::load_image(&reader) {
        Ok(image) => image,
        Err(error) => {
            let message = error.to_string();
            if error.exit_code() != 4 {
                return Err(format!("a bad image is refused with exit code {}: {message}", error.exit_code()));
            }
            return Ok(Outcome::Refused(message));
        }
    };
    // Host checks may refuse (files differ, vDSO differs); they must not
    // panic, and what follows must hold either way.
    let _ = validate::check_host(&image, false, &[]);
    after_acceptance(&image, &reader)?;
    Ok(Outcome::Accepted)
}

/// What must succeed for any image `load_image` accepted.
fn after_acceptance(image: &ProcessImage, reader: &ImageReader) -> Result<(), String> {
    let step =
        |name: &'static str| move |error: crp_cli::CrpError| format!("{name} failed on an accepted image: {error}");
    let target = validate::target_space(image).map_err(step("target_space"))?;
    crp_cli::kmod::restore::Records::build(image, reader, &HashMap::new(), 3).map_err(step("kmod records"))?;

    let mut kernel = FakeKernel::default();
    place_vdso(image, &target, &mut kernel)?;
    let mut space: Vec<_> = image.vmas.iter().collect();
    space.sort_by_key(|vma| vma.start);
    let engine = |name: &'static str| {
        move |error: crp_ptrace::EngineError| format!("{name} failed after the child exists: {error}")
    };
    for vma in &space {
        crp_compound::vma::map_vma(&mut kernel, vma, true).map_err(engine("map_vma"))?;
        crp_compound::vma::finish_vma(&mut kernel, vma, true).map_err(engine("finish_vma"))?;
    }
    let after = |name: &'static str| move |error: String| format!("{name} failed after the child exists: {error}");
    let mut context = Restore::new(&mut kernel);
    image.mm.restore(&mut context).map_err(|error| after("mm")(error.to_string()))?;
    image.mm.restore_exe_link(context.tracee).map_err(engine("exe link"))?;
    image.signals.restore(&mut context).map_err(|error| after("signals")(error.to_string()))?;
    image.threads[0].locks.restore(&mut context).map_err(|error| after("locks")(error.to_string()))?;
    image.task.restore(&mut context).map_err(|error| after("task")(error.to_string()))?;
    let thread = &image.threads[0].attributes;
    thread.restore(&mut context).map_err(|error| after("thread attributes")(error.to_string()))?;
    image.attributes.restore(&mut context).map_err(|error| after("process attributes")(error.to_string()))?;
    image.files.restore(&mut context).map_err(|error| after("files")(error.to_string()))?;
    image.rlimits.restore(&mut context).map_err(engine("rlimits"))?;
    image.timers.restore(&mut context).map_err(engine("timers"))?;
    let restorer = crp_compound::creds::IdsAndCapabilities { cap_bounding: u64::MAX, ..Default::default() };
    image.credentials.restore_as(context.tracee, &restorer).map_err(engine("credentials"))?;
    thread.parent_death_signal.restore(&mut context).map_err(engine("parent-death signal"))?;
    if !kernel.refusals.is_empty() {
        return Err(format!("the kernel would refuse, after the child exists: {}", kernel.refusals.join("; ")));
    }
    Ok(())
}

/// The vDSO move of the bootstrap: this kernel's block to the image's.
fn place_vdso(
    image: &ProcessImage,
    target: &crp_recursive::AddressSpace<()>,
    kernel: &mut FakeKernel,
) -> Result<(), String> {
    let host = validate::host_vdso().map_err(|error| format!("host vDSO: {error}"))?;
    let _ = image.vdso.check_matches(&host);
    let _ = host.check_matches(&image.vdso);
    let Some((start, end)) = host.block() else { return Ok(()) };
    let temporary = target.find_gap(end - start, 4096, 0x1_0000, TASK_SIZE).ok_or("no hole for the vDSO")?;
    if image.vdso.check_matches(&host).is_ok() {
        host.move_to(kernel, &image.vdso, temporary).map_err(|error| format!("vDSO move: {error}"))?;
    }
    Ok(())
}

/// Runs the pipeline, turning a panic into an error that says so.
pub fn pipeline_without_panic(path: &Path) -> Result<Outcome, String> {
    match std::panic::catch_unwind(|| pre_child_pipeline(path)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|text| (*text).to_owned()))
                .unwrap_or_default();
            Err(format!("panicked: {message}"))
        }
    }
}
