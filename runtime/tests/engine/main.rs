//! The runtime against the real Docker engine (found through `DOCKER_HOST` or the default
//! socket). No registry is needed: each test loads its own busybox image under a unique tag
//! (Debian's `busybox-static` must be installed), names its containers uniquely, bounds
//! itself in time and removes what it created through a guard, even when it fails.

mod common;
mod devices;
mod images;
mod lifecycle;
mod logs;
mod prune;
mod readiness;
mod sandbox;
mod volumes;
