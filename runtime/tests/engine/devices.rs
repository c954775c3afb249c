//! Device nodes granted into a container, on the real engine, with fake nodes made by
//! `mknod` (no hardware needed): the granted node works with the configured access and
//! nothing else, its group joins the container's groups, a node that is not granted is absent,
//! a node smuggled into a volume cannot be opened, and the sandbox (no capabilities,
//! no-new-privileges, no mknod) is unchanged.

use bytes::Bytes;
use futures_util::stream;
use peercompute_runtime::testsupport::FakeDevice;
use peercompute_runtime::{ContainerError, DeviceAccess, DeviceBinding, GpuRequest, probe_device};

use crate::common::{Fixture, engine, mount, within};

/// The devices cgroup (v1) exceptions Docker gives every container.
const DEFAULT_DEVICE_RULES: [&str; 12] = [
    "b *:* m",
    "c *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
    "c 136:* rwm",
];

/// The container's shell lines: each check prints one `name=value` line.
const CHECKS: &str = r#"
echo "arm read=$(head -c 16 /dev/arm | od -An -tx1 | tr -d ' \n')"
if echo hi > /dev/arm; then echo "arm write=ok"; else echo "arm write=failed"; fi
echo "motor read=$(cat /dev/motor 2>&1)"
echo "motor write=$( (echo x > /dev/motor) 2>&1)"
if test -e /dev/cam; then echo "cam=present"; else echo "cam=absent"; fi
echo "dev=$(ls /dev | tr '\n' ' ')"
echo "groups=$(id -G)"
echo "sneaky=$(cat /data/sneaky 2>&1)"
if mknod /data/x c 1 1 2>/dev/null; then echo "mknod=ok"; else echo "mknod=refused"; fi
while read -r key value; do
    case "$key" in CapEff:|NoNewPrivs:) echo "self $key $value" ;; esac
done < /proc/self/status
"#;

/// A tar holding `data/sneaky`, a character device 240:8, as an import could carry it.
fn node_archive() -> Bytes {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(tar::EntryType::Char);
    header.set_mode(0o666);
    header.set_size(0);
    header
        .set_device_major(240)
        .expect("ustar has device numbers");
    header
        .set_device_minor(8)
        .expect("ustar has device numbers");
    header.set_path("data/sneaky").expect("short path");
    header.set_cksum();
    builder
        .append(&header, std::io::empty())
        .expect("in memory");
    Bytes::from(builder.into_inner().expect("in memory"))
}

/// The container's devices cgroup v1 exceptions beyond Docker's defaults; `None` on a
/// cgroup v2 host (no devices.list there: the checks inside the container still apply).
fn extra_device_rules(pid: i64) -> Option<Vec<String>> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("its cgroups");
    let path = cgroups.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == "devices")
            .then(|| path.to_owned())
    })?;
    let list = std::fs::read_to_string(format!("/sys/fs/cgroup/devices{path}/devices.list"))
        .expect("the devices.list of a cgroup v1 container");
    Some(
        list.lines()
            .filter(|rule| !DEFAULT_DEVICE_RULES.contains(rule))
            .map(str::to_owned)
            .collect(),
    )
}

#[tokio::test]
async fn a_granted_device_works_and_nothing_else_is_reachable() {
    let fx = Fixture::new("devices").await;
    within(async {
        let made = |name, major, minor| {
            FakeDevice::char(name, major, minor).unwrap_or_else(|err| panic!("{err}"))
        };
        // arm has /dev/zero's numbers; motor has a number no driver serves, so opening it
        // gives ENXIO once the cgroup lets it through (EPERM when it does not); cam has
        // /dev/null's numbers and is on the host but not granted.
        let arm = made("arm", 1, 5);
        arm.set_group(4242, 0o660)
            .unwrap_or_else(|err| panic!("{err}"));
        let motor = made("motor", 240, 7);
        let cam = made("cam", 1, 3);
        assert!(cam.path().exists());
        let probed = |device: &FakeDevice| {
            probe_device(device.path()).unwrap_or_else(|err| panic!("probe: {err}"))
        };
        let arm_binding = probed(&arm).binding("/dev/arm".to_owned(), DeviceAccess::Rw);
        assert_eq!(arm_binding.gid, Some(4242));
        let motor_binding = probed(&motor).binding("/dev/motor".to_owned(), DeviceAccess::R);

        let (volume, _) = fx.volume("robot", "data").await;
        fx.runtime
            .import_volume(&volume, stream::iter([Ok(node_archive())]))
            .await
            .expect("import a node into the volume");
        let mut spec = fx.script_spec(CHECKS);
        spec.attach.volumes = vec![mount(&volume, "/data")];
        spec.attach.devices = vec![arm_binding.clone(), motor_binding.clone()];
        let started = fx.start(&spec).await;
        fx.wait_for_line(&started.id, "script done").await;
        let line = |needle: &'static str| fx.wait_for_line(&started.id, needle);

        assert_eq!(
            line("arm read=").await,
            format!("arm read={}", "00".repeat(16))
        );
        assert_eq!(line("arm write=").await, "arm write=ok");
        let motor_read = line("motor read=").await;
        assert!(
            motor_read.contains("No such device or address"),
            "{motor_read}"
        );
        let motor_write = line("motor write=").await;
        assert!(
            motor_write.contains("Operation not permitted"),
            "{motor_write}"
        );
        assert_eq!(line("cam=").await, "cam=absent");
        let dev = line("dev=").await;
        assert!(
            dev.split_whitespace().any(|d| d == "dev=arm" || d == "arm"),
            "{dev}"
        );
        assert!(!dev.contains("cam"), "{dev}");
        let groups = line("groups=").await;
        assert!(
            groups.split_whitespace().any(|g| g.ends_with("4242")),
            "{groups}"
        );
        let sneaky = line("sneaky=").await;
        assert!(sneaky.contains("Operation not permitted"), "{sneaky}");
        assert_eq!(line("mknod=").await, "mknod=refused");
        let cap_eff = line("self CapEff:").await;
        assert!(cap_eff.ends_with("0000000000000000"), "{cap_eff}");
        assert_eq!(line("self NoNewPrivs:").await, "self NoNewPrivs: 1");

        // What the engine recorded: exactly the two mappings, no rule, the node's group.
        let inspect = engine()
            .inspect_container(&started.id, None)
            .await
            .expect("inspect");
        let host = inspect.host_config.expect("host config");
        let devices = host.devices.unwrap_or_default();
        let mapped: Vec<(String, String, String)> = devices
            .iter()
            .map(|d| {
                (
                    d.path_on_host.clone().unwrap_or_default(),
                    d.path_in_container.clone().unwrap_or_default(),
                    d.cgroup_permissions.clone().unwrap_or_default(),
                )
            })
            .collect();
        let expected = |b: &DeviceBinding, perms: &str| {
            (
                b.host_path.display().to_string(),
                b.container_path.clone(),
                perms.to_owned(),
            )
        };
        assert_eq!(
            mapped,
            [expected(&arm_binding, "rw"), expected(&motor_binding, "r")]
        );
        assert!(host.device_cgroup_rules.unwrap_or_default().is_empty());
        assert_eq!(host.group_add, Some(vec!["4242".to_owned()]));
        assert_eq!(host.privileged, Some(false));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));

        // The kernel's view (cgroup v1): motor's own rule, read only, and nothing else added
        // (arm's 1:5 merges into Docker's default rule for /dev/zero).
        let pid = inspect.state.and_then(|s| s.pid).expect("a running pid");
        match extra_device_rules(pid) {
            Some(extra) => assert_eq!(extra, ["c 240:7 r"]),
            None => eprintln!("cgroup v2 host: devices.list not checked (the checks inside ran)"),
        }
    })
    .await;
}

#[tokio::test]
async fn gpus_without_the_nvidia_runtime_are_refused_and_leave_no_container() {
    let fx = Fixture::new("gpu").await;
    within(async {
        let info = engine().info().await.expect("engine info");
        let has_nvidia = info
            .runtimes
            .unwrap_or_default()
            .contains_key("nvidia");
        let present = fx.runtime.gpu_runtime_present().await.expect("info");
        assert_eq!(present, has_nvidia);
        if present {
            eprintln!("this engine has the NVIDIA runtime: the refusal is not checked here");
            return;
        }
        let mut spec = fx.spec("serve");
        spec.attach.gpus = Some(GpuRequest::Count(1));
        let refused = fx.runtime.start(&spec).await;
        assert!(
            matches!(&refused, Err(ContainerError::NoGpuRuntime { container }) if *container == spec.container_name()),
            "{refused:?}"
        );
        let left = engine()
            .inspect_container(&spec.container_name(), None)
            .await;
        assert!(left.is_err(), "the container was left behind");
    })
    .await;
}
