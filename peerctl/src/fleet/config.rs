//! `<home>/fleets.json`: the fleets this client knows by name, where each one's fleet key is
//! kept, and which one is the default. The logs themselves are under `<home>/fleets/`.
//!
//! ```json
//! {"default": "lekiwi", "fleets": {"lekiwi": {"id": "pcf…", "key": "/home/me/.peercompute/fleets/lekiwi.key"}}}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use peercompute_fleet::FleetId;
use peercompute_identity::write_atomic;
use serde::{Deserialize, Serialize};

use crate::exit::{CliError, Kind};

/// File name inside the home directory.
pub(crate) const FLEETS_FILE: &str = "fleets.json";

/// One fleet this client knows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KnownFleet {
    /// The fleet id (`pcf…`).
    pub(crate) id: String,
    /// Where its fleet key was saved (absent when this client never held it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<PathBuf>,
}

/// The contents of `fleets.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Fleets {
    #[serde(default)]
    pub(crate) default: Option<String>,
    #[serde(default)]
    pub(crate) fleets: BTreeMap<String, KnownFleet>,
}

/// A fleet chosen with `--fleet` or as the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Chosen {
    /// Its name here (the id's text when it has none).
    pub(crate) name: String,
    pub(crate) id: FleetId,
}

impl Fleets {
    pub(crate) fn load(home: &Path) -> Result<Self, CliError> {
        let path = home.join(FLEETS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CliError::new(
                    Kind::Other,
                    format!("{}: {e} (fix or delete the file)", path.display()),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(CliError::new(
                Kind::Other,
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    }

    pub(crate) fn save(&self, home: &Path) -> Result<(), CliError> {
        let path = home.join(FLEETS_FILE);
        let fail = |e: &dyn std::fmt::Display| {
            CliError::new(Kind::Other, format!("cannot write {}: {e}", path.display()))
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| fail(&e))?;
        std::fs::create_dir_all(home).map_err(|e| fail(&e))?;
        write_atomic(&path, &text, 0o600).map_err(|e| fail(&e))
    }

    /// Records a new fleet; it becomes the default when it is the first.
    pub(crate) fn add(&mut self, name: &str, id: FleetId, key: Option<PathBuf>) -> bool {
        self.fleets.insert(
            name.to_owned(),
            KnownFleet {
                id: id.to_string(),
                key,
            },
        );
        let first = self.default.is_none();
        if first {
            self.default = Some(name.to_owned());
        }
        first
    }

    /// The fleet `arg` names (a name here, or a fleet id), else the default.
    pub(crate) fn choose(&self, arg: Option<&str>) -> Result<Chosen, CliError> {
        let Some(arg) = arg.or(self.default.as_deref()) else {
            return Err(CliError::new(
                Kind::Usage,
                "no fleet yet: make one with `peerctl fleet create NAME`, or name one with --fleet",
            ));
        };
        if let Some(known) = self.fleets.get(arg) {
            let id = known.id.parse().map_err(|e| {
                CliError::new(Kind::Other, format!("{FLEETS_FILE}: fleet {arg}: {e}"))
            })?;
            return Ok(Chosen {
                name: arg.to_owned(),
                id,
            });
        }
        match arg.parse::<FleetId>() {
            Ok(id) => {
                let name = self
                    .fleets
                    .iter()
                    .find(|(_, f)| f.id == id.to_string())
                    .map_or_else(|| id.to_string(), |(name, _)| name.clone());
                Ok(Chosen { name, id })
            }
            Err(_) => Err(CliError::new(
                Kind::NotFound,
                format!(
                    "no fleet named `{arg}` here: `peerctl fleet list` shows yours, `peerctl fleet create {arg}` makes one"
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_id() -> FleetId {
        FleetId(
            peercompute_identity::Identity::generate()
                .expect("key")
                .public_key_bytes(),
        )
    }

    #[test]
    fn first_fleet_is_the_default_and_names_or_ids_choose() {
        let ids = [new_id(), new_id(), new_id()];
        let id = |i: usize| ids[i - 1];
        let dir = tempfile::tempdir().expect("dir");
        let mut fleets = Fleets::load(dir.path()).expect("empty");
        let err = fleets.choose(None).expect_err("none yet");
        assert!(err.message.contains("fleet create"), "{}", err.message);
        assert!(fleets.add("lekiwi", id(1), Some("/k".into())));
        assert!(!fleets.add("lab", id(2), None));
        fleets.save(dir.path()).expect("save");
        let fleets = Fleets::load(dir.path()).expect("load");
        assert_eq!(fleets.choose(None).expect("default").name, "lekiwi");
        assert_eq!(fleets.choose(Some("lab")).expect("by name").id, id(2));
        let by_id = fleets.choose(Some(&id(2).to_string())).expect("by id");
        assert_eq!(by_id.name, "lab");
        let unknown = fleets.choose(Some(&id(3).to_string())).expect("any id");
        assert_eq!(unknown.name, id(3).to_string());
        let err = fleets.choose(Some("nope")).expect_err("unknown");
        assert_eq!(err.kind, Kind::NotFound);
    }

    #[test]
    fn a_damaged_file_says_what_to_do() {
        let dir = tempfile::tempdir().expect("dir");
        std::fs::write(dir.path().join(FLEETS_FILE), b"{").expect("write");
        let err = Fleets::load(dir.path()).expect_err("damaged");
        assert!(err.message.contains("fix or delete"), "{}", err.message);
    }
}
