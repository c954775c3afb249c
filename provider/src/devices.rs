//! The devices this machine's owner grants, and who may use them. A grant is a `[[devices]]`
//! entry of the config file or a `--grant-device` flag ([`DeviceGrant`], parsed in
//! `config.rs`); nothing is granted by default.

pub use crate::config::{
    DeviceAccess, DeviceGrant, DeviceKind, FleetRef, GpuSelect, MAX_DEVICE_NAME,
};
