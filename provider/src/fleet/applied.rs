//! What this robot runs for each fleet group, kept in `<home>/fleet/applied.json` (written
//! atomically, 0600) so that a restarted daemon re-adopts its containers instead of starting
//! them again: the release serving (entry hash, version, container, route), the last
//! release that failed its health gate and why, and the last few releases' images kept for a
//! rollback, with the rule that decides which dropped images may go ([`prunable`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use peercompute_runtime::{ImagesInUse, Usage};
use serde::{Deserialize, Serialize};

/// File name under the fleet directory.
pub(crate) const APPLIED_FILE: &str = "applied.json";
/// How many releases' images a robot keeps (the serving one included).
pub(crate) const KEEP_RELEASES: usize = 3;

/// Why the applied state cannot be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum AppliedError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is damaged ({reason}); move it away to start over (running apps are then started again)"
    )]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot save {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The release serving a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Serving {
    /// The release entry's hash (hex).
    pub(crate) release: String,
    pub(crate) version: String,
    /// The public route, `<app>-<robot>`.
    pub(crate) route: String,
    pub(crate) container_id: String,
    pub(crate) image: String,
    /// The URL the gateway gave, once confirmed.
    #[serde(default)]
    pub(crate) url: Option<String>,
    /// The CPU its container holds, in millicores (0 in files written before it was kept).
    #[serde(default)]
    pub(crate) cpu_millis: u32,
    /// The memory its container holds, in bytes (0 likewise).
    #[serde(default)]
    pub(crate) memory_bytes: u64,
    /// The owner-granted devices its container holds, by grant name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) devices: Vec<String>,
    /// How long the app was down when this release replaced the previous one exclusively
    /// (`volume_exclusive`, or an unshared device): old one halted → new one healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) gap_ms: Option<u64>,
    /// Why an emergency stop killed its container (kept, restart policy `no`): the stop's
    /// reason. Cleared when a resume starts the container again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) stopped: Option<String>,
}

/// The last release that did not become healthy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Failure {
    pub(crate) release: String,
    pub(crate) version: String,
    /// What failed and the container's last log lines.
    pub(crate) reason: String,
    /// Refused by this robot's admission (its limits, beside the other groups' apps) before
    /// anything started, rather than failed: tried again once it fits.
    #[serde(default)]
    pub(crate) refused: bool,
}

/// One group of one fleet on this robot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppliedGroup {
    #[serde(default)]
    pub(crate) serving: Option<Serving>,
    #[serde(default)]
    pub(crate) failed: Option<Failure>,
    /// Images of the last [`KEEP_RELEASES`] releases applied, newest last.
    #[serde(default)]
    pub(crate) kept_images: Vec<String>,
}

impl AppliedGroup {
    /// Remembers `image` as the newest applied; returns images no longer kept.
    pub(crate) fn keep_image(&mut self, image: &str) -> Vec<String> {
        self.kept_images.retain(|i| i != image);
        self.kept_images.push(image.to_owned());
        let excess = self.kept_images.len().saturating_sub(KEEP_RELEASES);
        self.kept_images.drain(..excess).collect()
    }
}

/// One fleet's groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AppliedFleet {
    pub(crate) groups: BTreeMap<String, AppliedGroup>,
}

/// Every fleet's groups, keyed by fleet id (text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Applied {
    pub(crate) fleets: BTreeMap<String, AppliedFleet>,
}

impl Applied {
    pub(crate) fn path(dir: &Path) -> PathBuf {
        dir.join(APPLIED_FILE)
    }

    /// Reads the file; absent is empty.
    pub(crate) fn load(dir: &Path) -> Result<Self, AppliedError> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(AppliedError::Read { path, source }),
        };
        serde_json::from_str(&text).map_err(|e| AppliedError::Damaged {
            path,
            reason: e.to_string(),
        })
    }

    /// Writes the file atomically (a crash leaves the old or the new one).
    pub(crate) fn save(&self, dir: &Path) -> Result<(), AppliedError> {
        let path = Self::path(dir);
        let text = serde_json::to_vec_pretty(self).expect("applied state always serializes");
        peercompute_identity::write_atomic(&path, &text, 0o600)
            .map_err(|source| AppliedError::Write { path, source })
    }

    pub(crate) fn fleet(&self, fleet: &str) -> AppliedFleet {
        self.fleets.get(fleet).cloned().unwrap_or_default()
    }

    /// Every image a group of any fleet still keeps or serves.
    pub(crate) fn retained_images(&self) -> BTreeSet<String> {
        self.fleets
            .values()
            .flat_map(|f| f.groups.values())
            .flat_map(|g| {
                g.kept_images
                    .iter()
                    .chain(g.serving.as_ref().map(|s| &s.image))
            })
            .cloned()
            .collect()
    }

    /// What the serving apps of every group but `group` of `fleet` hold together: what a
    /// new release of that group must fit beside (the app it replaces does not count).
    /// The releases serving every group but `group` of `fleet`, in any fleet.
    fn serving_except<'a>(
        &'a self,
        fleet: &'a str,
        group: &'a str,
    ) -> impl Iterator<Item = &'a Serving> + 'a {
        self.fleets
            .iter()
            .flat_map(|(f, groups)| groups.groups.iter().map(move |(g, a)| (f, g, a)))
            .filter(move |(f, g, _)| !(f.as_str() == fleet && g.as_str() == group))
            .filter_map(|(_, _, a)| a.serving.as_ref())
    }

    /// The device grants every serving app holds.
    pub(crate) fn devices(&self) -> Vec<String> {
        self.fleets
            .values()
            .flat_map(|f| f.groups.values())
            .filter_map(|g| g.serving.as_ref())
            .flat_map(|s| s.devices.iter().cloned())
            .collect()
    }

    /// The device grants the apps of every other group hold.
    pub(crate) fn devices_except(&self, fleet: &str, group: &str) -> Vec<String> {
        self.serving_except(fleet, group)
            .flat_map(|s| s.devices.iter().cloned())
            .collect()
    }

    pub(crate) fn usage_except(&self, fleet: &str, group: &str) -> Usage {
        self.serving_except(fleet, group)
            .fold(Usage::default(), |mut sum, s| {
                sum.cpu_millis += u64::from(s.cpu_millis);
                sum.memory_bytes = sum.memory_bytes.saturating_add(s.memory_bytes);
                sum.deploys += 1;
                sum
            })
    }

    pub(crate) fn group_mut(&mut self, fleet: &str, group: &str) -> &mut AppliedGroup {
        self.fleets
            .entry(fleet.to_owned())
            .or_default()
            .groups
            .entry(group.to_owned())
            .or_default()
    }
}

/// Which images dropped from a group's kept list may be removed from the engine: not one
/// that another group (of any fleet) still keeps or serves, and not one any container uses —
/// a running release, a stopped container, a deployment outside the fleet — matched by
/// reference or by image id (`dropped` carries each reference's id when the engine knows it).
pub(crate) fn prunable(
    dropped: &[(String, Option<String>)],
    retained: &BTreeSet<String>,
    in_use: &ImagesInUse,
) -> Vec<String> {
    dropped
        .iter()
        .filter(|(image, id)| !retained.contains(image) && !in_use.uses(image, id.as_deref()))
        .map(|(image, _)| image.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_an_absent_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Applied::load(dir.path()).expect("empty"),
            Applied::default()
        );
        let mut applied = Applied::default();
        applied.group_mut("pcfX", "production").serving = Some(Serving {
            release: "ab".into(),
            version: "v1".into(),
            route: "web-r1".into(),
            container_id: "c1".into(),
            image: "img".into(),
            url: None,
            cpu_millis: 500,
            memory_bytes: 64 << 20,
            devices: vec!["arm".into()],
            gap_ms: Some(840),
            stopped: Some("drill".into()),
        });
        applied.save(dir.path()).expect("save");
        assert_eq!(Applied::load(dir.path()).expect("load"), applied);
        std::fs::write(Applied::path(dir.path()), b"{").expect("write");
        assert!(matches!(
            Applied::load(dir.path()),
            Err(AppliedError::Damaged { .. })
        ));
    }

    #[test]
    fn keeps_the_last_three_images() {
        let mut g = AppliedGroup::default();
        assert!(g.keep_image("a").is_empty());
        assert!(g.keep_image("b").is_empty());
        assert!(g.keep_image("c").is_empty());
        assert_eq!(g.keep_image("d"), ["a"]);
        assert!(g.keep_image("c").is_empty(), "a rollback re-keeps");
        assert_eq!(g.kept_images, ["b", "d", "c"]);
    }

    #[test]
    fn prunable_table() {
        let mut applied = Applied::default();
        let g = applied.group_mut("pcfA", "production");
        for image in ["a", "b", "c", "d"] {
            g.keep_image(image);
        }
        applied.group_mut("pcfB", "staging").kept_images = vec!["shared".into()];
        applied.group_mut("pcfB", "lab").serving = Some(Serving {
            image: "served".into(),
            ..Serving::default()
        });
        let retained = applied.retained_images();
        let in_use = ImagesInUse {
            references: ["deployment:1".to_owned()].into(),
            ids: ["sha256:running".to_owned()].into(),
        };
        let cases: &[(&str, Option<&str>, bool, &str)] = &[
            ("old", Some("sha256:old"), true, "dropped and unused"),
            ("old", None, true, "dropped, id unknown, unused"),
            ("b", Some("sha256:b"), false, "still kept by its own group"),
            ("shared", None, false, "kept by another fleet's group"),
            ("served", None, false, "serving in another group"),
            (
                "deployment:1",
                None,
                false,
                "a deployment's container uses it",
            ),
            (
                "other",
                Some("sha256:running"),
                false,
                "same image id as a container's",
            ),
        ];
        for (image, id, removed, why) in cases {
            let got = prunable(
                &[((*image).to_owned(), id.map(str::to_owned))],
                &retained,
                &in_use,
            );
            assert_eq!(got.len() == 1, *removed, "{image}: {why}");
        }
    }
}
