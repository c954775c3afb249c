//! The devices this machine's owner grants, and who may use them. A grant is a `[[devices]]`
//! entry of the config file or a `--grant-device` flag ([`DeviceGrant`], parsed in
//! `config.rs`); nothing is granted by default.
//!
//! [`DeviceGrants::authorize`] decides, before admission and before any container exists,
//! whether a requester (a peer's deploy, a fleet's release) may have the devices it names, and
//! turns them into the runtime's attachments. A request only ever names a grant: a path is
//! never accepted, and a refusal never names who else holds a grant. The decision is pure
//! except for looking at the device node (it may come and go: USB), which goes through a
//! probe function so that the table tests need no node.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use peercompute_fleet::FleetId;
use peercompute_identity::PeerId;
use peercompute_runtime::{DeviceBinding, DeviceError, GpuRequest};
use tracing::warn;

pub use crate::config::{DeviceGrant, DeviceKind, FleetRef, MAX_DEVICE_NAME};

/// Who asks for devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requester {
    /// A deploy, signed by this peer.
    Peer(PeerId),
    /// A fleet release: the fleet's id and its name (as its genesis entry says).
    /// `name_shared`: another fleet this machine joined has the same name, so a grant naming
    /// the fleet by name is ambiguous and does not count (by id it does).
    Fleet {
        id: FleetId,
        name: String,
        name_shared: bool,
    },
}

impl fmt::Display for Requester {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Requester::Peer(peer) => write!(f, "{peer}"),
            Requester::Fleet { id, name, .. } => write!(f, "fleet {name}, {id}"),
        }
    }
}

/// Why a request for devices is refused. The messages say who can change it and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceRefusal {
    /// No grant of that name.
    #[error(
        "this provider grants no device named `{0}`. Only its owner can grant one: a [[devices]] entry in its config (or --grant-device), then a restart"
    )]
    Unknown(String),
    /// Granted, but not to this requester (the holders are never named).
    #[error(
        "device `{device}` is not granted to you ({requester}): the provider's owner adds your {what} to `{key}` of its [[devices]] entry `{device}`"
    )]
    NotGranted {
        device: String,
        requester: String,
        /// "peer id" or "fleet".
        what: &'static str,
        /// "peers" or "fleets".
        key: &'static str,
    },
    /// The node is not there now (unplugged).
    #[error("device `{device}` ({path}) is not present on this machine now")]
    Absent { device: String, path: String },
    /// The node is there but cannot be passed through (not a character device, denied).
    #[error("device `{device}` ({path}) cannot be passed to a container: {reason}")]
    Unusable {
        device: String,
        path: String,
        reason: String,
    },
    /// A GPU grant on a provider without the NVIDIA container runtime.
    #[error(
        "device `{0}` is a GPU and this provider has no NVIDIA container runtime: it cannot pass GPUs to containers (its owner installs nvidia-container-toolkit and restarts peercomputed)"
    )]
    NoGpuRuntime(String),
    /// Granted to a fleet name that several fleets joined here share.
    #[error(
        "device `{device}` is granted to the fleet name `{name}`, which more than one fleet joined by this machine has: the provider's owner names the fleet by its id ({id}) in `fleets` of its [[devices]] entry `{device}`"
    )]
    AmbiguousFleet {
        device: String,
        name: String,
        id: String,
    },
    /// Two GPU grants in one request.
    #[error("devices `{0}` and `{1}` are both GPU grants: ask for one of them")]
    TwoGpus(String, String),
    /// Not shared, and another running container holds it.
    #[error(
        "device `{0}` is in use by another running container and is not shared: stop that deployment first, or ask the provider's owner to set shared = true"
    )]
    InUse(String),
}

impl DeviceRefusal {
    /// Whether the refusal is about permission (`NotGranted` on the wire) rather than the
    /// device's state on this machine.
    pub fn not_granted(&self) -> bool {
        matches!(
            self,
            DeviceRefusal::Unknown(_)
                | DeviceRefusal::NotGranted { .. }
                | DeviceRefusal::AmbiguousFleet { .. }
        )
    }
}

/// The devices a request may have, as the runtime attaches them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthorizedDevices {
    /// Device nodes, paths resolved, in the order asked.
    pub devices: Vec<DeviceBinding>,
    /// The GPUs, when a GPU grant was asked for.
    pub gpus: Option<GpuRequest>,
    /// The names of the grants among them that are not shared: one running container at a
    /// time (a fleet switch of an app holding one stops the old container first).
    pub exclusive: Vec<String>,
}

/// A device node as the probe found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The path with symlinks resolved (what is mapped).
    pub path: PathBuf,
    /// The node's group.
    pub gid: u32,
}

/// Why a probe found no usable node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    /// Nothing at the path.
    Missing,
    /// Something that must not be passed through; the reason says what.
    Unusable(String),
}

/// Who runs containers holding devices: the deployments and the fleet keep their own
/// records, and each tells the other (through [`DeviceGrants::publish_held`]) which grants its
/// running containers hold, so an unshared device is held by one container of either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Holder {
    /// Deploys (`peerctl deploy`).
    Deploys,
    /// Fleet releases.
    Fleet,
}

/// The owner's grants and whether GPUs can be passed at all. Clones share what each
/// [`Holder`] published.
#[derive(Debug, Clone, Default)]
pub struct DeviceGrants {
    grants: Vec<DeviceGrant>,
    gpu_runtime: bool,
    held: Arc<Mutex<BTreeMap<Holder, Vec<String>>>>,
}

impl DeviceGrants {
    /// `gpu_runtime`: the engine has the NVIDIA container runtime.
    pub fn new(grants: Vec<DeviceGrant>, gpu_runtime: bool) -> Self {
        Self {
            grants,
            gpu_runtime,
            held: Arc::default(),
        }
    }

    /// Records the grant names `holder`'s running containers hold now (replacing what it
    /// published before).
    pub fn publish_held(&self, holder: Holder, names: Vec<String>) {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(holder, names);
    }

    /// The grant names the other holders published: with a path's own, what
    /// [`check_free`](Self::check_free) takes.
    pub fn held_by_others(&self, me: Holder) -> Vec<String> {
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(h, _)| **h != me)
            .flat_map(|(_, names)| names.iter().cloned())
            .collect()
    }

    /// The grants, as configured.
    pub fn grants(&self) -> &[DeviceGrant] {
        &self.grants
    }

    /// May `who` have the devices `names`? Looks at each node now (a link such as
    /// `/dev/serial/by-id/…` is resolved now). Runs before admission and before any
    /// container exists; the first refusal is returned.
    pub fn authorize(
        &self,
        who: &Requester,
        names: &[String],
    ) -> Result<AuthorizedDevices, DeviceRefusal> {
        self.authorize_with(who, names, &probe_node)
    }

    /// [`authorize`](Self::authorize) with the node lookup given.
    pub fn authorize_with(
        &self,
        who: &Requester,
        names: &[String],
        probe: &dyn Fn(&Path) -> Result<Node, ProbeError>,
    ) -> Result<AuthorizedDevices, DeviceRefusal> {
        let mut out = AuthorizedDevices::default();
        let mut gpu_name: Option<&str> = None;
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                continue;
            }
            let grant = self
                .grants
                .iter()
                .find(|g| &g.name == name)
                .ok_or_else(|| DeviceRefusal::Unknown(name.clone()))?;
            if let Requester::Fleet {
                id,
                name: fleet_name,
                name_shared: true,
            } = who
                && !grant.allows(who)
                && grant.fleets.contains(&FleetRef::Name(fleet_name.clone()))
            {
                return Err(DeviceRefusal::AmbiguousFleet {
                    device: name.clone(),
                    name: fleet_name.clone(),
                    id: id.to_string(),
                });
            }
            if !grant.allows(who) {
                let (what, key) = match who {
                    Requester::Peer(_) => ("peer id", "peers"),
                    Requester::Fleet { .. } => ("fleet", "fleets"),
                };
                return Err(DeviceRefusal::NotGranted {
                    device: name.clone(),
                    requester: who.to_string(),
                    what,
                    key,
                });
            }
            match &grant.kind {
                DeviceKind::Char {
                    path,
                    container_path,
                    access,
                } => {
                    let shown = path.display().to_string();
                    let node = probe(path).map_err(|e| match e {
                        ProbeError::Missing => DeviceRefusal::Absent {
                            device: name.clone(),
                            path: shown.clone(),
                        },
                        ProbeError::Unusable(reason) => DeviceRefusal::Unusable {
                            device: name.clone(),
                            path: shown.clone(),
                            reason,
                        },
                    })?;
                    out.devices.push(DeviceBinding {
                        host_path: node.path,
                        container_path: container_path.clone(),
                        access: *access,
                        gid: (node.gid != 0).then_some(node.gid),
                    });
                }
                DeviceKind::Gpu(request) => {
                    if !self.gpu_runtime {
                        return Err(DeviceRefusal::NoGpuRuntime(name.clone()));
                    }
                    if let Some(first) = gpu_name {
                        return Err(DeviceRefusal::TwoGpus(first.to_owned(), name.clone()));
                    }
                    gpu_name = Some(name);
                    out.gpus = Some(request.clone());
                }
            }
            if !grant.shared {
                out.exclusive.push(name.clone());
            }
        }
        Ok(out)
    }

    /// Refuses `wanted` when one of its unshared devices is among `held`: the grant names
    /// that other running containers (not the one being replaced) hold.
    pub fn check_free<'a>(
        wanted: &AuthorizedDevices,
        held: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), DeviceRefusal> {
        let held: Vec<&str> = held.into_iter().collect();
        match wanted.exclusive.iter().find(|n| held.contains(&n.as_str())) {
            Some(name) => Err(DeviceRefusal::InUse(name.clone())),
            None => Ok(()),
        }
    }

    /// What the owner should know at start: grants whose node is missing or unusable now,
    /// GPU grants without an NVIDIA runtime, grants nobody may use.
    pub fn start_warnings_with(
        &self,
        probe: &dyn Fn(&Path) -> Result<Node, ProbeError>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for grant in &self.grants {
            let name = &grant.name;
            match &grant.kind {
                DeviceKind::Char { path, .. } => match probe(path) {
                    Ok(_) => {}
                    Err(ProbeError::Missing) => out.push(format!(
                        "device {name} ({}) is not present now: requests for it are refused until it is",
                        path.display()
                    )),
                    Err(ProbeError::Unusable(reason)) => out.push(format!(
                        "device {name} ({}) cannot be passed to a container: {reason}; requests for it will be refused",
                        path.display()
                    )),
                },
                DeviceKind::Gpu(_) if !self.gpu_runtime => out.push(format!(
                    "device {name} is a GPU and this provider has no NVIDIA container runtime: requests for it will be refused"
                )),
                DeviceKind::Gpu(_) => {}
            }
            if grant.peers.is_empty() && grant.fleets.is_empty() {
                out.push(format!(
                    "device {name} is granted to nobody (its peers and fleets are empty)"
                ));
            }
        }
        out
    }

    /// Logs [`start_warnings_with`](Self::start_warnings_with) for the real nodes.
    pub fn warn_at_start(&self) {
        for line in self.start_warnings_with(&probe_node) {
            warn!("{line}");
        }
    }
}

impl DeviceGrant {
    /// Whether `who` is among this grant's peers or fleets (a fleet by id or by name).
    fn allows(&self, who: &Requester) -> bool {
        match who {
            Requester::Peer(peer) => self.peers.contains(peer),
            Requester::Fleet {
                id,
                name,
                name_shared,
            } => self.fleets.iter().any(|f| match f {
                FleetRef::Id(granted) => granted == id,
                FleetRef::Name(granted) => !name_shared && granted == name,
            }),
        }
    }
}

/// Looks at the node at `path` now, through the runtime's probe: a character device not on
/// its denylist (memory, ports, consoles, ttys), links resolved.
fn probe_node(path: &Path) -> Result<Node, ProbeError> {
    match peercompute_runtime::probe_device(path) {
        Ok(found) => Ok(Node {
            path: found.path,
            gid: found.gid,
        }),
        Err(DeviceError::Missing { .. }) => Err(ProbeError::Missing),
        Err(e) => Err(ProbeError::Unusable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peercompute_runtime::DeviceAccess;

    const ALICE: &str = "12D3KooWDu97DyF8V2VLbWMPNhGa1J4PPFVFDxmTTER2dmd6YN4s";

    fn peer(s: &str) -> PeerId {
        s.parse().expect("a peer id")
    }

    fn bob() -> PeerId {
        peercompute_identity::Identity::generate()
            .expect("an identity")
            .peer_id()
    }

    fn fleet_id(seed: u8) -> FleetId {
        FleetId(
            ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
                .verifying_key()
                .to_bytes(),
        )
    }

    fn grants(gpu_runtime: bool) -> DeviceGrants {
        let lekiwi = fleet_id(1);
        let flags = [
            format!("name=arm,path=/dev/ttyACM0,peers={ALICE},fleets=lekiwi"),
            format!("name=cam,path=/dev/serial/by-id/cam,access=r,shared=true,fleets={lekiwi}"),
            "name=gone,path=/dev/ttyUSB9,peers=".to_owned() + ALICE,
            "name=mem,path=/dev/mem,peers=".to_owned() + ALICE,
            "name=gpu0,kind=gpu,gpu_ids=0,peers=".to_owned() + ALICE,
            "name=gpu1,kind=gpu,count=1,peers=".to_owned() + ALICE,
            "name=nobody,path=/dev/ttyACM1".to_owned(),
        ];
        DeviceGrants::new(
            flags.iter().map(|f| f.parse().expect("a grant")).collect(),
            gpu_runtime,
        )
    }

    /// /dev/ttyACM0 is a node of group 20 (dialout); the by-id link resolves to video0 of
    /// group 0; /dev/mem is denied; ttyUSB9 is unplugged.
    fn fake_probe(path: &Path) -> Result<Node, ProbeError> {
        match path.to_str() {
            Some("/dev/ttyACM0") => Ok(Node {
                path: path.to_path_buf(),
                gid: 20,
            }),
            Some("/dev/serial/by-id/cam") => Ok(Node {
                path: PathBuf::from("/dev/video0"),
                gid: 0,
            }),
            Some("/dev/mem") => Err(ProbeError::Unusable("/dev/mem is /dev/mem (1:1)".into())),
            _ => Err(ProbeError::Missing),
        }
    }

    fn ask(
        g: &DeviceGrants,
        who: &Requester,
        names: &[&str],
    ) -> Result<AuthorizedDevices, DeviceRefusal> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        g.authorize_with(who, &names, &fake_probe)
    }

    #[test]
    fn granted_devices_become_bindings() {
        let g = grants(false);
        let alice = Requester::Peer(peer(ALICE));
        let ok = ask(&g, &alice, &["arm"]).expect("arm is Alice's");
        assert_eq!(
            ok.devices,
            vec![DeviceBinding {
                host_path: "/dev/ttyACM0".into(),
                container_path: "/dev/ttyACM0".into(),
                access: DeviceAccess::Rw,
                gid: Some(20),
            }]
        );
        assert_eq!((ok.gpus, ok.exclusive), (None, vec!["arm".to_owned()]));

        let by_id = Requester::Fleet {
            id: fleet_id(1),
            name: "other-name".into(),
            name_shared: false,
        };
        let ok = ask(&g, &by_id, &["cam"]).expect("cam is granted to the fleet's id");
        assert_eq!(
            ok.devices[0].host_path,
            PathBuf::from("/dev/video0"),
            "link resolved"
        );
        assert_eq!(ok.devices[0].container_path, "/dev/serial/by-id/cam");
        assert_eq!(
            (ok.devices[0].access, ok.devices[0].gid),
            (DeviceAccess::R, None)
        );
        assert!(ok.exclusive.is_empty(), "cam is shared");

        let by_name = Requester::Fleet {
            id: fleet_id(2),
            name: "lekiwi".into(),
            name_shared: false,
        };
        let ok = ask(&g, &by_name, &["arm", "arm"]).expect("arm is granted to lekiwi by name");
        assert_eq!(ok.devices.len(), 1, "a name asked twice maps once");
        assert_eq!(ask(&g, &alice, &[]), Ok(AuthorizedDevices::default()));
    }

    #[test]
    fn refusals_say_who_can_change_them() {
        let g = grants(false);
        let alice = Requester::Peer(peer(ALICE));
        let bob = bob();
        let as_bob = Requester::Peer(bob);
        let other_fleet = Requester::Fleet {
            id: fleet_id(3),
            name: "warehouse".into(),
            name_shared: false,
        };
        let cases: Vec<(&Requester, Vec<&str>, String)> = vec![
            (
                &alice,
                vec!["arm", "leg"],
                "this provider grants no device named `leg`. Only its owner can grant one: a [[devices]] entry in its config (or --grant-device), then a restart".into(),
            ),
            (
                &alice,
                vec!["/dev/kvm"],
                "this provider grants no device named `/dev/kvm`.".into(),
            ),
            (
                &as_bob,
                vec!["arm"],
                format!("device `arm` is not granted to you ({bob}): the provider's owner adds your peer id to `peers` of its [[devices]] entry `arm`"),
            ),
            (
                &other_fleet,
                vec!["arm"],
                format!("device `arm` is not granted to you (fleet warehouse, {}): the provider's owner adds your fleet to `fleets` of its [[devices]] entry `arm`", fleet_id(3)),
            ),
            (&alice, vec!["nobody"], "not granted to you".into()),
            (
                &alice,
                vec!["gone"],
                "device `gone` (/dev/ttyUSB9) is not present on this machine now".into(),
            ),
            (&alice, vec!["mem"], "cannot be passed to a container: /dev/mem".into()),
            (
                &alice,
                vec!["gpu0"],
                "device `gpu0` is a GPU and this provider has no NVIDIA container runtime".into(),
            ),
        ];
        for (who, names, expected) in cases {
            let err = match ask(&g, who, &names) {
                Ok(ok) => panic!("{names:?} for {who} was granted: {ok:?}"),
                Err(e) => e.to_string(),
            };
            assert!(
                err.starts_with(&expected) || err.contains(&expected),
                "{names:?}: {err}"
            );
            assert!(
                !err.contains(ALICE) || matches!(who, Requester::Peer(p) if p.to_string() == ALICE),
                "a refusal never names the grant's holders: {err}"
            );
        }
    }

    #[test]
    fn a_fleet_name_two_joined_fleets_share_grants_nothing() {
        let g = grants(false);
        let shared = |id| Requester::Fleet {
            id: fleet_id(id),
            name: "lekiwi".into(),
            name_shared: true,
        };
        let err = ask(&g, &shared(2), &["arm"]).expect_err("ambiguous name");
        assert_eq!(
            err.to_string(),
            format!(
                "device `arm` is granted to the fleet name `lekiwi`, which more than one fleet joined by this machine has: the provider's owner names the fleet by its id ({}) in `fleets` of its [[devices]] entry `arm`",
                fleet_id(2)
            )
        );
        assert!(err.not_granted());
        ask(&g, &shared(1), &["cam"]).expect("a grant by id still holds");
    }

    #[test]
    fn gpus_need_the_nvidia_runtime_and_come_one_grant_at_a_time() {
        let alice = Requester::Peer(peer(ALICE));
        let g = grants(true);
        let ok = ask(&g, &alice, &["gpu0", "arm"]).expect("with the runtime");
        assert_eq!(ok.gpus, Some(GpuRequest::DeviceIds(vec!["0".into()])));
        assert_eq!(ok.devices.len(), 1);
        assert_eq!(
            ok.exclusive,
            vec!["arm".to_owned()],
            "GPUs are shared by default"
        );
        assert_eq!(
            ask(&g, &alice, &["gpu0", "gpu1"]),
            Err(DeviceRefusal::TwoGpus("gpu0".into(), "gpu1".into()))
        );
        let refusal = ask(&grants(false), &alice, &["gpu1"]).expect_err("no runtime");
        assert!(!refusal.not_granted(), "the machine cannot, whoever asks");
    }

    #[test]
    fn unshared_devices_held_elsewhere_are_refused() {
        let g = grants(false);
        let alice = Requester::Peer(peer(ALICE));
        let ok = ask(&g, &alice, &["arm"]).expect("arm");
        assert_eq!(
            DeviceGrants::check_free(&ok, ["cam", "arm"]),
            Err(DeviceRefusal::InUse("arm".into()))
        );
        assert_eq!(DeviceGrants::check_free(&ok, ["cam"]), Ok(()));
        let by_id = Requester::Fleet {
            id: fleet_id(1),
            name: "lekiwi".into(),
            name_shared: false,
        };
        let shared = ask(&g, &by_id, &["cam"]).expect("cam");
        assert_eq!(DeviceGrants::check_free(&shared, ["cam"]), Ok(()), "shared");
    }

    #[test]
    fn deploys_and_the_fleet_see_each_others_holds() {
        let g = grants(false);
        let fleet_side = g.clone();
        fleet_side.publish_held(Holder::Fleet, vec!["arm".into()]);
        assert_eq!(g.held_by_others(Holder::Deploys), vec!["arm".to_owned()]);
        assert!(
            g.held_by_others(Holder::Fleet).is_empty(),
            "its own holds are its own"
        );
        let alice = Requester::Peer(peer(ALICE));
        let ok = ask(&g, &alice, &["arm"]).expect("granted");
        assert_eq!(
            DeviceGrants::check_free(
                &ok,
                g.held_by_others(Holder::Deploys).iter().map(String::as_str)
            ),
            Err(DeviceRefusal::InUse("arm".into()))
        );
        fleet_side.publish_held(Holder::Fleet, Vec::new());
        assert!(g.held_by_others(Holder::Deploys).is_empty(), "released");
    }

    #[test]
    fn start_warnings_name_each_problem() {
        let lines = grants(false).start_warnings_with(&fake_probe);
        let has = |s: &str| lines.iter().any(|l| l.contains(s));
        assert!(
            has("device gone (/dev/ttyUSB9) is not present now"),
            "{lines:?}"
        );
        assert!(has("device mem (/dev/mem) cannot be passed"), "{lines:?}");
        assert!(
            has(
                "device gpu0 is a GPU and this provider has no NVIDIA container runtime: requests for it will be refused"
            ),
            "{lines:?}"
        );
        assert!(has("device nobody is granted to nobody"), "{lines:?}");
        assert!(!has("device arm"), "{lines:?}");
        assert!(
            grants(true)
                .start_warnings_with(&fake_probe)
                .iter()
                .all(|l| !l.contains("gpu"))
        );
    }

    #[test]
    fn real_nodes_are_probed() {
        let null = probe_node(Path::new("/dev/null")).expect("/dev/null is a char device");
        assert_eq!(null.path, PathBuf::from("/dev/null"));
        assert_eq!(
            probe_node(Path::new("/dev/nonexistent-pc")),
            Err(ProbeError::Missing)
        );
        assert!(matches!(
            probe_node(Path::new("/etc/hostname")),
            Err(ProbeError::Unusable(_))
        ));
        if Path::new("/dev/mem").exists() {
            assert!(
                matches!(probe_node(Path::new("/dev/mem")), Err(ProbeError::Unusable(m)) if m.contains("/dev/mem"))
            );
        }
    }
}
