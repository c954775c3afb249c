//! Addressing a deployment the way Docker addresses containers: by its full id, a unique
//! prefix of the id, or its name. Pure: it takes the provider's list of your deployments and
//! answers which one is meant, or why none or several are.
//!
//! Order, as Docker's: an exact id wins, then an exact name, then an id prefix that only one
//! deployment has. Names are not matched by prefix (`web` never means `web-2`).

use peercompute_tunnel_proto::DeploymentSummary;

/// Length of a deployment id as providers make them: 12 lowercase hex characters.
pub const FULL_ID_LEN: usize = 12;

/// Whether `arg` has the shape of a full deployment id, so it can be sent as is without
/// listing first. (A name may have that shape too: a provider's "not found" then falls back
/// to [`resolve`].)
pub fn is_full_id(arg: &str) -> bool {
    arg.len() == FULL_ID_LEN && arg.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why `arg` names no single deployment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// Neither an id, an id prefix nor a name of any of your deployments.
    #[error("no deployment `{arg}` of yours (by id, id prefix or name)")]
    NotFound {
        /// What was given.
        arg: String,
    },
    /// Several deployments match; the user must give more of the id, or the name.
    #[error(
        "`{arg}` is ambiguous: it matches {} deployments: {}; give more of the id, or the name",
        .candidates.len(),
        .candidates.iter().map(|c| format!("{} ({})", c.id, c.name)).collect::<Vec<_>>().join(", ")
    )]
    Ambiguous {
        /// What was given.
        arg: String,
        /// The deployments it matches, by id.
        candidates: Vec<Candidate>,
    },
}

/// A deployment an ambiguous argument matches.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Candidate {
    /// Its full id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// The deployment `arg` designates among `deployments` (yours on one provider).
pub fn resolve<'a>(
    arg: &str,
    deployments: &'a [DeploymentSummary],
) -> Result<&'a DeploymentSummary, ResolveError> {
    if let Some(d) = deployments.iter().find(|d| d.id == arg) {
        return Ok(d);
    }
    let by_name: Vec<&DeploymentSummary> = deployments.iter().filter(|d| d.name == arg).collect();
    let matches = if by_name.is_empty() {
        deployments
            .iter()
            .filter(|d| !arg.is_empty() && d.id.starts_with(arg))
            .collect()
    } else {
        by_name
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(ResolveError::NotFound {
            arg: arg.to_owned(),
        }),
        several => {
            let mut candidates: Vec<Candidate> = several
                .iter()
                .map(|d| Candidate {
                    id: d.id.clone(),
                    name: d.name.clone(),
                })
                .collect();
            candidates.sort_by(|a, b| a.id.cmp(&b.id));
            Err(ResolveError::Ambiguous {
                arg: arg.to_owned(),
                candidates,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peercompute_tunnel_proto::DeploymentState;

    fn dep(id: &str, name: &str) -> DeploymentSummary {
        DeploymentSummary {
            id: id.into(),
            name: name.into(),
            image: "nginx:1.27".into(),
            url: format!("https://{name}.example.com"),
            state: DeploymentState::Running,
            created_at: 0,
            stopped_reason: None,
        }
    }

    #[test]
    fn resolution_table() {
        let list = [
            dep("a1b2c3d4e5f6", "web"),
            dep("a1ff00112233", "api"),
            dep("b0b0b0b0b0b0", "a1"),
            dep("c0ffee000000", "c0ffee000001"),
            dep("c0ffee000001", "other"),
            dep("d00000000000", "web-2"),
        ];
        // (argument, the id it resolves to, or the error's start)
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("a1b2c3d4e5f6", Ok("a1b2c3d4e5f6")), // full id
            ("a1b2", Ok("a1b2c3d4e5f6")),         // unique prefix
            ("a1f", Ok("a1ff00112233")),
            ("web", Ok("a1b2c3d4e5f6")),           // name
            ("web-", Err("no deployment `web-`")), // names do not match by prefix
            ("a1", Ok("b0b0b0b0b0b0")),            // a name beats an id prefix
            (
                "a",
                Err(
                    "`a` is ambiguous: it matches 2 deployments: a1b2c3d4e5f6 (web), a1ff00112233 (api)",
                ),
            ),
            ("c0ffee000001", Ok("c0ffee000001")), // an exact id beats a name
            ("c0ffee", Err("`c0ffee` is ambiguous")),
            ("zz", Err("no deployment `zz` of yours")),
            ("", Err("no deployment")),
        ];
        for (arg, want) in cases {
            match (resolve(arg, &list), want) {
                (Ok(d), Ok(id)) => assert_eq!(d.id, *id, "{arg:?}"),
                (Err(e), Err(start)) => {
                    assert!(e.to_string().starts_with(start), "{arg:?}: {e}")
                }
                (got, want) => panic!("{arg:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn ambiguity_lists_every_candidate() {
        let list = [dep("abc000000000", "x"), dep("abc111111111", "y")];
        let err = resolve("abc", &list).expect_err("ambiguous");
        assert_eq!(
            err,
            ResolveError::Ambiguous {
                arg: "abc".into(),
                candidates: vec![
                    Candidate {
                        id: "abc000000000".into(),
                        name: "x".into()
                    },
                    Candidate {
                        id: "abc111111111".into(),
                        name: "y".into()
                    },
                ],
            }
        );
        assert!(
            err.to_string()
                .ends_with("give more of the id, or the name")
        );
    }

    #[test]
    fn full_id_shape() {
        assert!(is_full_id("a1b2c3d4e5f6"));
        assert!(!is_full_id("a1b2c3d4e5f"));
        assert!(!is_full_id("A1B2C3D4E5F6"));
        assert!(!is_full_id("a1b2c3d4e5fg"));
        assert!(!is_full_id("web"));
    }
}
