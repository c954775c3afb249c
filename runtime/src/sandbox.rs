//! The sandbox every container gets, as one pure function from a validated [`ContainerSpec`]
//! and the provider's [`SandboxPolicy`] to the engine's create body. Nothing a request carries
//! can loosen it: not privileged, all capabilities dropped, `no-new-privileges`, the engine's
//! default seccomp profile, no binds, no host namespaces, a pids limit, CPU and memory limits
//! without swap, an init process, capped json logs, a bounded restart policy, the sandbox
//! network (see the `network` and `egress` modules), the one port published on 127.0.0.1 with
//! an ephemeral host port. `masked_paths` and `readonly_paths` stay unset so the engine's
//! defaults (which hide parts of /proc) apply.
//!
//! The provider's [`Attachments`] add exactly three things: named volumes as `volume` mounts
//! (never `bind` or `tmpfs`, never `binds`/`volumes_from`), device nodes as `devices`
//! entries (the engine allows each one's own major:minor in the device cgroup, with `r` or `rw`;
//! `device_cgroup_rules`, which take wildcards, stay unset) plus the nodes' groups in
//! `group_add`, and GPUs as an NVIDIA `device_requests` entry.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, DeviceMapping, DeviceRequest, HostConfig, HostConfigLogConfig, Mount,
    MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};

use crate::network::SANDBOX_NETWORK;
use crate::spec::{
    Attachments, ContainerSpec, GpuRequest, LABEL_DEPLOYMENT, LABEL_FLEET_GROUP, LABEL_MANAGED,
    LABEL_NAME, LABEL_OWNER, LABEL_PROVIDER,
};

/// The address container ports are published on.
pub const PUBLISH_IP: &str = "127.0.0.1";

/// Provider-wide sandbox settings (not per request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxPolicy {
    /// Most processes (threads included) in one container. Default 256.
    pub pids_limit: u32,
    /// How many times a container that exits with an error is restarted. Default 3.
    pub restart_max_retries: u32,
    /// Size at which a container's json log file rotates, in MiB. Default 10.
    pub log_max_size_mib: u32,
    /// How many rotated log files are kept. Default 3.
    pub log_max_files: u32,
    /// Grace period between SIGTERM and SIGKILL on stop. Default 3 s.
    pub stop_grace: Duration,
}

impl Default for SandboxPolicy {
    fn default() -> Self {
        SandboxPolicy {
            pids_limit: 256,
            restart_max_retries: 3,
            log_max_size_mib: 10,
            log_max_files: 3,
            stop_grace: Duration::from_secs(3),
        }
    }
}

/// The labels a container of `spec` carries.
pub(crate) fn labels(spec: &ContainerSpec) -> HashMap<String, String> {
    let mut labels = HashMap::from([
        (LABEL_DEPLOYMENT.to_owned(), spec.deployment_id.clone()),
        (LABEL_OWNER.to_owned(), spec.owner.clone()),
        (LABEL_PROVIDER.to_owned(), spec.provider.clone()),
        (LABEL_NAME.to_owned(), spec.name.clone()),
        (LABEL_MANAGED.to_owned(), "true".to_owned()),
    ]);
    if let Some(group) = &spec.attach.fleet_group {
        labels.insert(LABEL_FLEET_GROUP.to_owned(), group.clone());
    }
    labels
}

/// The bounded restart policy every container starts with.
pub(crate) fn on_failure(policy: &SandboxPolicy) -> RestartPolicy {
    RestartPolicy {
        name: Some(RestartPolicyNameEnum::ON_FAILURE),
        maximum_retry_count: Some(i64::from(policy.restart_max_retries)),
    }
}

/// The engine's key for the container port: `8080/tcp`.
pub(crate) fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// The create body for `spec` under `policy`. `spec` must have passed validation.
pub(crate) fn create_body(spec: &ContainerSpec, policy: &SandboxPolicy) -> ContainerCreateBody {
    let port = port_key(spec.port);
    let memory = i64::try_from(spec.memory_bytes).unwrap_or(i64::MAX);
    let host_config = HostConfig {
        privileged: Some(false),
        cap_drop: Some(vec!["ALL".to_owned()]),
        cap_add: None,
        security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
        pids_limit: Some(i64::from(policy.pids_limit)),
        nano_cpus: Some(i64::from(spec.cpu_millis) * 1_000_000),
        memory: Some(memory),
        memory_swap: Some(memory),
        init: Some(true),
        network_mode: Some(SANDBOX_NETWORK.to_owned()),
        ipc_mode: Some("private".to_owned()),
        publish_all_ports: Some(false),
        port_bindings: Some(HashMap::from([(
            port.clone(),
            Some(vec![PortBinding {
                host_ip: Some(PUBLISH_IP.to_owned()),
                host_port: Some(String::new()),
            }]),
        )])),
        log_config: Some(HostConfigLogConfig {
            typ: Some("json-file".to_owned()),
            config: Some(HashMap::from([
                (
                    "max-size".to_owned(),
                    format!("{}m", policy.log_max_size_mib),
                ),
                ("max-file".to_owned(), policy.log_max_files.to_string()),
            ])),
        }),
        restart_policy: Some(on_failure(policy)),
        mounts: volume_mounts(&spec.attach),
        devices: device_mappings(&spec.attach),
        group_add: device_groups(&spec.attach),
        device_requests: gpu_requests(&spec.attach),
        // Left unset on purpose (engine defaults): binds, volumes_from, device_cgroup_rules,
        // pid/uts/userns/cgroupns modes, sysctls, masked_paths, readonly_paths.
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        exposed_ports: Some(vec![port]),
        labels: Some(labels(spec)),
        host_config: Some(host_config),
        ..Default::default()
    }
}

/// One read-write `volume` mount per named volume; `None` when there is none.
fn volume_mounts(attach: &Attachments) -> Option<Vec<Mount>> {
    let mounts: Vec<Mount> = attach
        .volumes
        .iter()
        .map(|binding| Mount {
            typ: Some(MountType::VOLUME),
            source: Some(binding.volume.clone()),
            target: Some(binding.target.clone()),
            read_only: Some(false),
            ..Default::default()
        })
        .collect();
    (!mounts.is_empty()).then_some(mounts)
}

/// One mapping per device node, with its cgroup permissions (`r` or `rw`, never `m`).
fn device_mappings(attach: &Attachments) -> Option<Vec<DeviceMapping>> {
    let devices: Vec<DeviceMapping> = attach
        .devices
        .iter()
        .map(|device| DeviceMapping {
            path_on_host: Some(device.host_path.to_string_lossy().into_owned()),
            path_in_container: Some(device.container_path.clone()),
            cgroup_permissions: Some(device.access.cgroup_permissions().to_owned()),
        })
        .collect();
    (!devices.is_empty()).then_some(devices)
}

/// The device nodes' groups (not root's), each once, so a non-root app user can open them.
fn device_groups(attach: &Attachments) -> Option<Vec<String>> {
    let mut gids: Vec<u32> = attach
        .devices
        .iter()
        .filter_map(|device| device.gid)
        .filter(|gid| *gid != 0)
        .collect();
    gids.sort_unstable();
    gids.dedup();
    (!gids.is_empty()).then(|| gids.iter().map(u32::to_string).collect())
}

/// The NVIDIA device request for the GPUs asked for.
fn gpu_requests(attach: &Attachments) -> Option<Vec<DeviceRequest>> {
    let (count, device_ids) = match attach.gpus.as_ref()? {
        GpuRequest::Count(n) => (Some(i64::from(*n)), None),
        GpuRequest::DeviceIds(ids) => (None, Some(ids.clone())),
    };
    Some(vec![DeviceRequest {
        driver: Some("nvidia".to_owned()),
        count,
        device_ids,
        capabilities: Some(vec![vec!["gpu".to_owned()]]),
        options: None,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DeviceAccess, DeviceBinding, VolumeBinding};

    fn spec() -> ContainerSpec {
        ContainerSpec {
            deployment_id: "dep1".into(),
            owner: "12D3KooWabc".into(),
            provider: "12D3KooWProviderForTests".to_owned(),
            name: "blog".into(),
            image: "nginx:1.27".into(),
            port: 8080,
            env: vec![("A".into(), "1".into()), ("B".into(), "x=y".into())],
            cpu_millis: 500,
            memory_bytes: 256 << 20,
            attach: Default::default(),
        }
    }

    fn attached() -> ContainerSpec {
        ContainerSpec {
            attach: Attachments {
                volumes: vec![
                    VolumeBinding {
                        volume: format!("pcv-{}-blog-data", "0a".repeat(12)),
                        target: "/var/lib/app".into(),
                    },
                    VolumeBinding {
                        volume: format!("pcv-{}-blog-cache", "0a".repeat(12)),
                        target: "/cache".into(),
                    },
                ],
                devices: vec![
                    DeviceBinding {
                        host_path: "/dev/ttyACM0".into(),
                        container_path: "/dev/arm".into(),
                        access: DeviceAccess::Rw,
                        gid: Some(20),
                    },
                    DeviceBinding {
                        host_path: "/dev/video0".into(),
                        container_path: "/dev/video0".into(),
                        access: DeviceAccess::R,
                        gid: Some(44),
                    },
                    DeviceBinding {
                        host_path: "/dev/ttyUSB0".into(),
                        container_path: "/dev/ttyUSB0".into(),
                        access: DeviceAccess::Rw,
                        gid: Some(20),
                    },
                    DeviceBinding {
                        host_path: "/dev/rootonly".into(),
                        container_path: "/dev/rootonly".into(),
                        access: DeviceAccess::R,
                        gid: Some(0),
                    },
                ],
                gpus: Some(GpuRequest::Count(1)),
                fleet_group: Some("pcfTest/production".into()),
            },
            ..spec()
        }
    }

    /// What no spec, with or without attachments, can change.
    fn assert_locked_down(host: &HostConfig) {
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert_eq!(host.cap_add, None);
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges:true".to_owned()])
        );
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.network_mode.as_deref(), Some(SANDBOX_NETWORK));
        assert_eq!(host.ipc_mode.as_deref(), Some("private"));
        assert_eq!(host.binds, None);
        assert_eq!(host.volumes_from, None);
        assert_eq!(host.volume_driver, None);
        assert_eq!(host.device_cgroup_rules, None);
        assert_eq!(host.pid_mode, None);
        assert_eq!(host.uts_mode, None);
        assert_eq!(host.userns_mode, None);
        assert_eq!(host.cgroupns_mode, None);
        assert_eq!(host.cgroup_parent, None);
        assert_eq!(host.sysctls, None);
        assert_eq!(host.tmpfs, None);
        assert_eq!(host.masked_paths, None);
        assert_eq!(host.readonly_paths, None);
    }

    #[test]
    fn attachments_map_to_volume_mounts_devices_groups_and_gpus_only() {
        let body = create_body(&attached(), &SandboxPolicy::default());
        assert_eq!(body.volumes, None);
        assert_eq!(body.user, None);
        let host = body.host_config.expect("host config is always set");
        assert_locked_down(&host);
        let mounts = host.mounts.expect("volumes are mounted");
        assert_eq!(
            mounts,
            vec![
                Mount {
                    typ: Some(MountType::VOLUME),
                    source: Some(format!("pcv-{}-blog-data", "0a".repeat(12))),
                    target: Some("/var/lib/app".into()),
                    read_only: Some(false),
                    ..Default::default()
                },
                Mount {
                    typ: Some(MountType::VOLUME),
                    source: Some(format!("pcv-{}-blog-cache", "0a".repeat(12))),
                    target: Some("/cache".into()),
                    read_only: Some(false),
                    ..Default::default()
                },
            ]
        );
        assert!(mounts.iter().all(|m| m.bind_options.is_none()
            && m.tmpfs_options.is_none()
            && m.volume_options.is_none()));
        let devices = host.devices.expect("devices are mapped");
        let as_tuples: Vec<(&str, &str, &str)> = devices
            .iter()
            .map(|d| {
                (
                    d.path_on_host.as_deref().unwrap_or_default(),
                    d.path_in_container.as_deref().unwrap_or_default(),
                    d.cgroup_permissions.as_deref().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            as_tuples,
            [
                ("/dev/ttyACM0", "/dev/arm", "rw"),
                ("/dev/video0", "/dev/video0", "r"),
                ("/dev/ttyUSB0", "/dev/ttyUSB0", "rw"),
                ("/dev/rootonly", "/dev/rootonly", "r"),
            ]
        );
        // Each non-root group once, root's never.
        assert_eq!(host.group_add, Some(vec!["20".to_owned(), "44".to_owned()]));
        assert_eq!(
            host.device_requests,
            Some(vec![DeviceRequest {
                driver: Some("nvidia".into()),
                count: Some(1),
                device_ids: None,
                capabilities: Some(vec![vec!["gpu".into()]]),
                options: None,
            }])
        );
    }

    #[test]
    fn gpu_ids_and_empty_attachments() {
        let mut spec = spec();
        spec.attach.gpus = Some(GpuRequest::DeviceIds(vec!["0".into(), "2".into()]));
        let host = create_body(&spec, &SandboxPolicy::default())
            .host_config
            .expect("host config is always set");
        let request = &host.device_requests.expect("GPUs are requested")[0];
        assert_eq!(request.count, None);
        assert_eq!(request.device_ids, Some(vec!["0".into(), "2".into()]));
        assert_eq!(request.driver.as_deref(), Some("nvidia"));
        assert_eq!(host.mounts, None);
        assert_eq!(host.devices, None);
        assert_eq!(host.group_add, None);
        // A device whose group is root's adds no group.
        let mut root = attached();
        root.attach.devices.retain(|d| d.gid == Some(0));
        let host = create_body(&root, &SandboxPolicy::default())
            .host_config
            .expect("host config is always set");
        assert_eq!(host.group_add, None);
        assert_eq!(host.devices.map(|d| d.len()), Some(1));
    }

    #[test]
    fn every_sandbox_setting_is_present() {
        let body = create_body(&spec(), &SandboxPolicy::default());
        let host = body.host_config.expect("host config is always set");
        assert_locked_down(&host);
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(256 << 20));
        assert_eq!(host.memory_swap, host.memory);
        let log = host.log_config.expect("log config is always set");
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        let log_caps = log.config.expect("log caps are always set");
        assert_eq!(log_caps.get("max-size").map(String::as_str), Some("10m"));
        assert_eq!(log_caps.get("max-file").map(String::as_str), Some("3"));
        let restart = host.restart_policy.expect("restart policy is always set");
        assert_eq!(restart.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(restart.maximum_retry_count, Some(3));
        let bindings = host.port_bindings.expect("port bindings are always set");
        assert_eq!(bindings.len(), 1);
        let binding = bindings
            .get("8080/tcp")
            .cloned()
            .flatten()
            .expect("the container port is bound");
        assert_eq!(
            binding,
            vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(String::new())
            }]
        );
        // Nothing that would widen the sandbox is ever sent (assert_locked_down), and
        // without attachments nothing is mounted, mapped or requested either.
        assert_eq!(host.mounts, None);
        assert_eq!(host.devices, None);
        assert_eq!(host.group_add, None);
        assert_eq!(host.device_requests, None);
    }

    #[test]
    fn body_carries_image_env_port_and_labels() {
        let body = create_body(&spec(), &SandboxPolicy::default());
        assert_eq!(body.image.as_deref(), Some("nginx:1.27"));
        assert_eq!(body.env, Some(vec!["A=1".to_owned(), "B=x=y".to_owned()]));
        assert_eq!(body.exposed_ports, Some(vec!["8080/tcp".to_owned()]));
        let labels = body.labels.expect("labels are always set");
        assert_eq!(
            labels.get(LABEL_DEPLOYMENT).map(String::as_str),
            Some("dep1")
        );
        assert_eq!(
            labels.get(LABEL_OWNER).map(String::as_str),
            Some("12D3KooWabc")
        );
        assert_eq!(labels.get(LABEL_NAME).map(String::as_str), Some("blog"));
        assert_eq!(labels.get(LABEL_MANAGED).map(String::as_str), Some("true"));
        assert_eq!(labels.get(LABEL_FLEET_GROUP), None, "not a fleet container");
        let fleet = create_body(&attached(), &SandboxPolicy::default());
        assert_eq!(
            fleet
                .labels
                .expect("labels")
                .get(LABEL_FLEET_GROUP)
                .map(String::as_str),
            Some("pcfTest/production")
        );
        assert_eq!(body.cmd, None);
        assert_eq!(body.entrypoint, None);
        assert_eq!(body.user, None);
        assert_eq!(body.working_dir, None);
        assert_eq!(body.volumes, None);
    }
}
