//! The group names in `fleet status`: every robot of a group serves the group's app at
//! `<app>.<domain>` too, and reports whether the gateway took it. [`group_lines`] folds the
//! robots' reports into one line per group name — its URL once, how many robots serve it,
//! and any refusal a robot was given.

use std::collections::BTreeMap;

use peercompute_fleet::SignedStatus;

/// One line per group name (sorted by group, then name), for the groups `group` selects.
pub(crate) fn group_lines(statuses: &[&SignedStatus], group: Option<&str>) -> Vec<String> {
    #[derive(Default)]
    struct Seen {
        url: Option<String>,
        serving: usize,
        asked: usize,
        refused: Vec<String>,
    }
    let mut seen: BTreeMap<(String, String), Seen> = BTreeMap::new();
    for status in statuses {
        for g in &status.report.group_names {
            if group.is_some_and(|want| want != g.group) {
                continue;
            }
            let entry = seen.entry((g.group.clone(), g.name.clone())).or_default();
            entry.asked += 1;
            if let Some(url) = &g.url {
                entry.serving += 1;
                entry.url.get_or_insert_with(|| url.clone());
            }
            if let Some(why) = &g.refused
                && !entry.refused.contains(why)
            {
                entry.refused.push(why.clone());
            }
        }
    }
    seen.into_iter()
        .map(|((group, name), s)| {
            let head = match &s.url {
                Some(url) => format!(
                    "group {group}: {url} ({} of {} robots serve it)",
                    s.serving, s.asked
                ),
                None => format!(
                    "group {group}: {name} not published yet ({} robots asked)",
                    s.asked
                ),
            };
            if s.refused.is_empty() {
                head
            } else {
                format!("{head}; refused: {}", s.refused.join("; "))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use peercompute_fleet::{FleetId, GroupName, MemberKey, StatusReport};

    use super::*;

    fn status(robot: u8, names: Vec<GroupName>) -> SignedStatus {
        let key = SigningKey::from_bytes(&[robot; 32]);
        let report = StatusReport {
            fleet: FleetId([1; 32]),
            robot: MemberKey(key.verifying_key().to_bytes()),
            at_ms: 0,
            agent: "t".into(),
            uptime_secs: 0,
            log_len: 0,
            apps: vec![],
            cpu_permille: 0,
            memory_used_bytes: 0,
            memory_total_bytes: 0,
            disk_free_bytes: 0,
            history: vec![],
            group_names: names,
        };
        SignedStatus::sign(report, &key)
    }

    fn name(group: &str, url: Option<&str>, refused: Option<&str>) -> GroupName {
        GroupName {
            group: group.into(),
            name: "web".into(),
            url: url.map(Into::into),
            refused: refused.map(Into::into),
        }
    }

    #[test]
    fn one_line_per_group_with_its_url_once() {
        let url = "https://web.apps.example.com";
        let a = status(2, vec![name("prod", Some(url), None)]);
        let b = status(3, vec![name("prod", Some(url), None)]);
        let c = status(
            4,
            vec![name("prod", None, Some("name owned by another provider"))],
        );
        let d = status(5, vec![name("lab", None, None)]);
        let all = [&a, &b, &c, &d];
        assert_eq!(
            group_lines(&all, None),
            [
                "group lab: web not published yet (1 robots asked)".to_owned(),
                format!(
                    "group prod: {url} (2 of 3 robots serve it); refused: name owned by another provider"
                ),
            ]
        );
        assert_eq!(group_lines(&all, Some("lab")).len(), 1);
        assert!(group_lines(&[], None).is_empty());
    }
}
