//! Helpers for tests that need real containers on an engine with no registry: build an image
//! `FROM scratch` out of files given as bytes ([`ScratchImage`], loaded like `docker load`),
//! take Debian's static busybox as the one binary such images need ([`busybox`]), name
//! things uniquely so parallel tests never collide ([`unique_name`]), and remove what a test
//! created even when it panics ([`Cleanup`]), run a throw-away registry on a loopback
//! port to test pulls ([`LocalRegistry`]), and make device nodes with `mknod` to pass into
//! containers ([`FakeDevice`]). Used by this crate's tests, by the end-to-end
//! tests and by the quickstart.

mod cleanup;
mod device;
mod image;
mod registry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::engine::EngineError;

pub use cleanup::Cleanup;
pub use device::FakeDevice;
pub use image::{ImageFile, ScratchImage};
pub use registry::{LocalRegistry, REGISTRY_PATH};

/// Where Debian's `busybox-static` installs its binary.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// The bytes of a statically linked busybox, to put in a scratch image. Fails with a message
/// saying what to install when there is none (a dynamically linked busybox would not run in
/// an image without a C library).
pub fn busybox() -> Result<Vec<u8>, TestSupportError> {
    let bytes = std::fs::read(BUSYBOX_PATH).map_err(|source| TestSupportError::BusyboxMissing {
        path: BUSYBOX_PATH,
        source,
    })?;
    // A dynamic executable names its loader in .interp, near the start of the file.
    let head = &bytes[..bytes.len().min(8192)];
    let names_loader = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if !head.starts_with(b"\x7fELF") || names_loader(b"/ld-linux") || names_loader(b"/ld-musl") {
        return Err(TestSupportError::BusyboxNotStatic { path: BUSYBOX_PATH });
    }
    Ok(bytes)
}

/// A name no other test (in this process or a parallel one) uses: `<prefix>-<pid>-<n>-<nanos>`,
/// lowercase so it is valid as an image tag, a container name and a route name.
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id()).to_ascii_lowercase()
}

/// A test helper failed; the message says what to install or what the engine said.
#[derive(Debug, thiserror::Error)]
pub enum TestSupportError {
    /// No busybox binary.
    #[error(
        "cannot read {path} ({source}): install Debian's busybox-static (apt-get install -y busybox-static)"
    )]
    BusyboxMissing {
        /// Where it was looked for.
        path: &'static str,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A busybox that needs a C library.
    #[error(
        "{path} is not statically linked, so it cannot run in a scratch image: install Debian's busybox-static (apt-get install -y busybox-static)"
    )]
    BusyboxNotStatic {
        /// Where it was found.
        path: &'static str,
    },
    /// A file path that is not absolute or not plain.
    #[error("image file path {0:?} must be absolute, without . or .. components")]
    BadPath(String),
    /// Writing the archive in memory failed.
    #[error("building the image archive failed: {0}")]
    Archive(#[from] std::io::Error),
    /// The engine refused the archive.
    #[error("the Docker engine refused to load test image {tag}: {detail}")]
    Load {
        /// The image tag.
        tag: String,
        /// The engine's message.
        detail: String,
    },
    /// No `docker-registry` binary.
    #[error(
        "cannot run {path} ({source}): install Debian's docker-registry (apt-get install -y docker-registry)"
    )]
    RegistryMissing {
        /// The binary looked for.
        path: &'static str,
        /// Why it could not run.
        source: std::io::Error,
    },
    /// The registry did not come up.
    #[error("the local registry did not start: {0}")]
    RegistryStart(String),
    /// Pushing to the local registry failed.
    #[error("pushing {image} to the local registry failed: {detail}")]
    Push {
        /// The image reference.
        image: String,
        /// The engine's message.
        detail: String,
    },
    /// `mknod` or `chown` of a fake device node failed.
    #[error(
        "cannot make or chgrp the device node {path} ({errno}): device tests need root with CAP_MKNOD and a temp dir not mounted nodev (set TMPDIR to one)"
    )]
    Mknod {
        /// The node.
        path: std::path::PathBuf,
        /// What the kernel said (EPERM: no CAP_MKNOD).
        errno: nix::errno::Errno,
    },
    /// Any other engine failure.
    #[error(transparent)]
    Engine(#[from] EngineError),
}
