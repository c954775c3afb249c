//! Building `release` and `rollback` entries from what was typed: the image pinned by digest
//! (a tag is resolved through the local Docker engine), the app name from the image, the
//! group's next sequence number and the default version `v<seq>`. The rules a release must
//! follow (same as `deploy`: nothing that escapes the sandbox) are checked when the entry is
//! signed, by [`peercompute_fleet::Entry::validate`].

use peercompute_fleet::{FleetState, HealthCheck, Op, Release, Rollback};
use peercompute_runtime::{DockerRuntime, PinnedImage};
use peercompute_tunnel_proto::{DeployRequest, EnvVar};

pub(crate) use super::cli::ReleaseArgs;
use crate::exit::{CliError, Kind};

mod serve;

pub(crate) use serve::{pin_release_image, start_serving};

fn bad(message: String) -> CliError {
    CliError::new(Kind::BadRequest, message)
}

/// `image` pinned by digest: as given when already pinned (checked strictly), else resolved
/// to the digest its registry holds now, through the local Docker engine.
pub(crate) async fn pin(image: &str) -> Result<String, CliError> {
    if image.contains('@') {
        return PinnedImage::parse(image)
            .map(|p| p.to_string())
            .map_err(|e| bad(e.to_string()));
    }
    let runtime = DockerRuntime::connect().await.map_err(|e| {
        CliError::new(
            Kind::Image,
            format!(
                "cannot resolve {image} to a digest without a Docker engine ({e}); pin it yourself: `docker buildx imagetools inspect {image}` prints the digest, then release {}@sha256:<digest>",
                repository_of(image)
            ),
        )
    })?;
    runtime
        .resolve_digest(image)
        .await
        .map(|p| p.to_string())
        .map_err(|e| CliError::new(Kind::Image, e.to_string()))
}

/// The repository part of a reference (`registry:5000/app:v1` → `registry:5000/app`).
pub(crate) fn repository_of(image: &str) -> &str {
    let image = image.split_once('@').map_or(image, |(repo, _)| repo);
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

/// The app name an image suggests: its last path segment, as a DNS label
/// (`ghcr.io/acme/Tele_Op:2@sha256:…` → `tele-op`).
pub(crate) fn app_from_image(image: &str) -> Option<String> {
    let repo = repository_of(image);
    let last = repo.rsplit('/').next().unwrap_or(repo);
    let mut label: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    label.truncate(63);
    let label = label.trim_matches('-').to_owned();
    (!label.is_empty()).then_some(label)
}

/// `KEY=VALUE` strings as environment variables.
pub(crate) fn env_vars(list: &[String]) -> Result<Vec<EnvVar>, CliError> {
    let mut vars = Vec::with_capacity(list.len());
    for kv in list {
        let Some((key, value)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            return Err(bad(format!("--env `{kv}` is not KEY=VALUE")));
        };
        vars.push(EnvVar {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    Ok(vars)
}

/// The group's next sequence number.
fn next_seq(state: &FleetState, group: &str) -> u64 {
    state.groups.get(group).map_or(0, |g| g.seq) + 1
}

/// The release entry's op; `args.image` must already be pinned.
pub(crate) fn release_op(args: ReleaseArgs, state: &FleetState) -> Result<Op, CliError> {
    let group = args.group.trim().to_ascii_lowercase();
    let seq = next_seq(state, &group);
    let name = match args.name {
        Some(name) => name,
        None => app_from_image(&args.image).ok_or_else(|| {
            bad(format!(
                "cannot make an app name from {}: name it with --name",
                args.image
            ))
        })?,
    };
    let timeout_secs = u32::try_from(args.health_timeout.as_secs())
        .map_err(|_| bad("--health-timeout is far too long".to_owned()))?;
    Ok(Op::Release(Release {
        group,
        seq,
        version: args.version.unwrap_or_else(|| format!("v{seq}")),
        spec: DeployRequest {
            image: args.image,
            name: Some(name),
            port: args.port,
            env: env_vars(&args.env)?,
            cpu_millis: args.cpu,
            memory_bytes: args.memory,
            volumes: args.attach.volumes,
            devices: args.attach.devices,
            volume_exclusive: args.attach.volume_exclusive,
        },
        health: HealthCheck {
            path: args.health_path,
            timeout_secs,
        },
    }))
}

/// What a release with volumes or devices means for robots older than them: they refuse its
/// entry (a new kind, `ReleaseV2`) and so every later one, e-stop included. `None` for a
/// release without them (old robots read it as ever).
pub(crate) fn old_robots_note(
    spec: &peercompute_tunnel_proto::DeployRequest,
) -> Option<&'static str> {
    let attached = !spec.volumes.is_empty() || !spec.devices.is_empty() || spec.volume_exclusive;
    attached.then_some(
        "note: robots older than volumes and devices refuse this release and then stop following the fleet log (e-stop, rollbacks and revocations included) until upgraded: upgrade every robot first",
    )
}

/// The rollback entry's op.
pub(crate) fn rollback_op(
    group: &str,
    to: Option<String>,
    state: &FleetState,
) -> Result<Op, CliError> {
    let group = group.trim().to_ascii_lowercase();
    let Some(current) = state.groups.get(&group).and_then(|g| g.desired()) else {
        return Err(CliError::new(
            Kind::NotFound,
            format!("group {group} has no release to roll back from (see `peerctl fleet log`)"),
        ));
    };
    if to.as_deref() == Some(current.release.version.as_str()) {
        return Err(bad(format!(
            "group {group} already runs {}: name an earlier version with --to",
            current.release.version
        )));
    }
    Ok(Op::Rollback(Rollback {
        seq: next_seq(state, &group),
        group,
        to_version: to,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_come_from_the_image() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        let cases = [
            ("nginx:1.27", Some("nginx")),
            ("127.0.0.1:5000/app:v1", Some("app")),
            ("127.0.0.1:5000/app", Some("app")),
            ("ghcr.io/acme/Tele_Op:2", Some("tele-op")),
            ("___", None),
        ];
        for (image, want) in cases {
            assert_eq!(app_from_image(image).as_deref(), want, "{image}");
        }
        let pinned = format!("127.0.0.1:5000/team/robot-ui@{digest}");
        assert_eq!(app_from_image(&pinned).as_deref(), Some("robot-ui"));
    }

    #[test]
    fn env_must_be_key_equals_value() {
        let vars = env_vars(&["A=1".into(), "B=x=y".into(), "C=".into()]).expect("ok");
        let pairs: Vec<(&str, &str)> = vars
            .iter()
            .map(|v| (v.key.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(pairs, [("A", "1"), ("B", "x=y"), ("C", "")]);
        for wrong in ["A", "=1"] {
            let err = env_vars(&[wrong.into()]).expect_err(wrong);
            assert!(err.message.contains("KEY=VALUE"), "{}", err.message);
        }
    }

    fn state() -> FleetState {
        let id = peercompute_identity::Identity::generate().expect("key");
        FleetState::genesis(peercompute_fleet::FleetId(id.public_key_bytes()), "t")
    }

    fn args(image: &str) -> ReleaseArgs {
        ReleaseArgs {
            image: image.into(),
            group: "Production".into(),
            port: 8080,
            name: None,
            version: None,
            env: vec!["MODE=fast".into()],
            cpu: None,
            memory: None,
            health_path: Some("/healthz".into()),
            health_timeout: std::time::Duration::from_secs(30),
            attach: Default::default(),
            source: Default::default(),
        }
    }

    #[test]
    fn a_release_gets_the_next_sequence_and_default_version() {
        let image = format!("127.0.0.1:5000/teleop@sha256:{}", "0f".repeat(32));
        let Op::Release(r) = release_op(args(&image), &state()).expect("op") else {
            panic!("not a release");
        };
        assert_eq!((r.group.as_str(), r.seq), ("production", 1));
        assert_eq!(r.version, "v1");
        assert_eq!(r.app(), "teleop");
        assert_eq!(r.health.timeout_secs, 30);
        assert_eq!(r.spec.env.len(), 1);
    }

    #[test]
    fn a_release_carries_its_volumes_and_devices() {
        let image = format!("127.0.0.1:5000/teleop@sha256:{}", "0f".repeat(32));
        let mut a = args(&image);
        a.attach.volumes = vec![
            peercompute_tunnel_proto::parse_volume("maps:/var/lib/teleop:2G").expect("a volume"),
        ];
        a.attach.devices = vec!["arm".into()];
        a.attach.volume_exclusive = true;
        let Op::Release(r) = release_op(a, &state()).expect("op") else {
            panic!("not a release");
        };
        assert_eq!(r.spec.volumes[0].path, "/var/lib/teleop");
        assert_eq!(r.spec.devices, ["arm"]);
        assert!(r.spec.volume_exclusive);
    }

    #[test]
    fn only_a_release_with_attachments_warns_about_old_robots() {
        let mut spec = peercompute_tunnel_proto::DeployRequest::new("app@sha256:00", 80);
        assert_eq!(old_robots_note(&spec), None);
        spec.devices = vec!["arm".into()];
        let note = old_robots_note(&spec).expect("a note");
        assert!(note.contains("e-stop"), "{note}");
    }

    #[test]
    fn rollback_needs_a_current_release() {
        let err = rollback_op("production", None, &state()).expect_err("nothing yet");
        assert_eq!(err.kind, Kind::NotFound);
    }

    #[tokio::test]
    async fn pinned_references_are_checked_without_an_engine() {
        let good = format!("127.0.0.1:5000/app@sha256:{}", "ab".repeat(32));
        assert_eq!(pin(&good).await.expect("pinned"), good);
        let err = pin("app@sha256:1234").await.expect_err("short digest");
        assert_eq!(err.kind, Kind::BadRequest);
        assert!(err.message.contains("sha256:<64"), "{}", err.message);
    }
}
