//! The sandbox as the engine records it and as a process inside the container sees it
//! (checklist S3): no capabilities, no-new-privileges, seccomp filtering, a pids limit that
//! stops a fork loop, a memory limit that kills a hog inside the container only.

use std::collections::HashMap;

use bollard::models::{PortBinding, RestartPolicyNameEnum};

use crate::common::{Fixture, PORT, engine, http_get, within};

#[tokio::test]
async fn engine_records_every_sandbox_setting() {
    let fx = Fixture::new("hostconfig").await;
    within(async {
        let mut spec = fx.spec("serve");
        spec.cpu_millis = 250;
        spec.memory_bytes = 48 << 20;
        let started = fx.start_ready(&spec).await;
        let inspect = engine()
            .inspect_container(&started.id, None)
            .await
            .expect("inspect");
        let host = inspect.host_config.expect("host config");
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
        assert!(host.cap_add.unwrap_or_default().is_empty());
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges:true".to_owned()])
        );
        assert_eq!(host.pids_limit, Some(256));
        assert_eq!(host.memory, Some(48 << 20));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.nano_cpus, Some(250_000_000));
        assert_eq!(host.init, Some(true));
        assert_eq!(
            host.network_mode.as_deref(),
            Some(peercompute_runtime::SANDBOX_NETWORK)
        );
        assert_eq!(host.readonly_rootfs, Some(false));
        assert!(host.binds.unwrap_or_default().is_empty());
        assert!(host.devices.unwrap_or_default().is_empty());
        assert!(host.mounts.unwrap_or_default().is_empty());
        assert!(host.sysctls.unwrap_or_default().is_empty());
        assert!(!host.pid_mode.unwrap_or_default().starts_with("host"));
        assert!(!host.ipc_mode.unwrap_or_default().starts_with("host"));
        assert!(!host.uts_mode.unwrap_or_default().starts_with("host"));
        // The engine's default masks over /proc are in force (never unmasked).
        assert!(
            host.masked_paths
                .unwrap_or_default()
                .iter()
                .any(|p| p == "/proc/kcore"),
            "default masked paths missing"
        );
        let restart = host.restart_policy.expect("restart policy");
        assert_eq!(restart.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(restart.maximum_retry_count, Some(3));
        let log = host.log_config.expect("log config");
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        let caps = log.config.unwrap_or_default();
        assert_eq!(caps.get("max-size").map(String::as_str), Some("10m"));
        assert_eq!(caps.get("max-file").map(String::as_str), Some("3"));
        let wanted = HashMap::from([(
            format!("{PORT}/tcp"),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".to_owned()),
                host_port: Some(String::new()),
            }]),
        )]);
        assert_eq!(host.port_bindings, Some(wanted));
        // What the engine actually bound: 127.0.0.1 only.
        let bound = inspect
            .network_settings
            .and_then(|n| n.ports)
            .and_then(|p| p.get(&format!("{PORT}/tcp")).cloned().flatten())
            .expect("port bound");
        assert_eq!(bound.len(), 1, "{bound:?}");
        assert_eq!(bound[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(bound[0].host_port, Some(started.addr.port().to_string()));
        assert!(inspect.mounts.unwrap_or_default().is_empty());
        assert_eq!(
            inspect
                .app_armor_profile
                .as_deref()
                .filter(|p| *p == "unconfined"),
            None
        );
    })
    .await;
}

#[tokio::test]
async fn inside_the_container_no_capabilities_no_new_privileges_seccomp() {
    let fx = Fixture::new("status").await;
    within(async {
        let started = fx.start(&fx.spec("status")).await;
        for who in ["self", "pid1"] {
            let cap_eff = fx
                .wait_for_line(&started.id, &format!("{who} CapEff:"))
                .await;
            assert!(cap_eff.ends_with("0000000000000000"), "{cap_eff}");
            let nnp = fx
                .wait_for_line(&started.id, &format!("{who} NoNewPrivs:"))
                .await;
            assert!(nnp.ends_with('1'), "{nnp}");
            let seccomp = fx
                .wait_for_line(&started.id, &format!("{who} Seccomp:"))
                .await;
            assert!(seccomp.ends_with('2'), "{seccomp}");
        }
        let bounding = fx.wait_for_line(&started.id, "self CapBnd:").await;
        assert!(bounding.ends_with("0000000000000000"), "{bounding}");
    })
    .await;
}

#[tokio::test]
async fn a_fork_loop_stops_at_the_pids_limit() {
    let fx = Fixture::new("forkbomb").await;
    within(async {
        let mut spec = fx.spec("forkbomb");
        spec.memory_bytes = 256 << 20;
        let started = fx.start(&spec).await;
        let ended = fx
            .wait_for_line(&started.id, "fork loop ended with status")
            .await;
        assert!(
            !ended.ends_with("status 0"),
            "the loop should have failed to fork: {ended}"
        );
        let max = fx.wait_for_line(&started.id, "pids.max=").await;
        assert_eq!(max, "pids.max=256");
        let processes = fx.wait_for_line(&started.id, "processes=").await;
        let count: u32 = processes["processes=".len()..].parse().expect("a count");
        assert!((200..=256).contains(&count), "{processes}");
        fx.wait_for_line(&started.id, "can't fork").await;
        // Once the sleepers are killed the container carries on, and so does the host.
        fx.runtime
            .wait_ready(&started.id, started.addr, crate::common::READY_TIMEOUT)
            .await
            .expect("serves again after the fork loop");
        assert_eq!(http_get(started.addr, "/").await.0, 200);
    })
    .await;
}

#[tokio::test]
async fn a_memory_hog_is_killed_inside_the_container_only() {
    let fx = Fixture::new("memhog").await;
    within(async {
        let mut spec = fx.spec("memhog");
        spec.memory_bytes = 32 << 20;
        let started = fx.start(&spec).await;
        let exit = fx.wait_for_line(&started.id, "memhog exit=").await;
        assert_eq!(exit, "memhog exit=137", "SIGKILL expected");
        let oom_kills = fx.wait_for_line(&started.id, "oom oom_kill=").await;
        let kills: u64 = oom_kills["oom oom_kill=".len()..].parse().expect("a count");
        assert!(
            kills >= 1,
            "the kernel's OOM killer should have acted: {oom_kills}"
        );
        // Only the hog died: the container's shell went on to serve, within its limit.
        fx.runtime
            .wait_ready(&started.id, started.addr, crate::common::READY_TIMEOUT)
            .await
            .expect("serves after the hog was killed");
        assert_eq!(http_get(started.addr, "/").await.0, 200);
        let status = fx.runtime.status(&started.id).await.expect("status");
        assert_eq!(status.restart_count, 0);
        let usage = status.usage.expect("stats");
        assert_eq!(usage.memory_limit_bytes, Some(32 << 20));
        assert!(
            usage.memory_bytes.unwrap_or(u64::MAX) <= 32 << 20,
            "{usage:?}"
        );
    })
    .await;
}
