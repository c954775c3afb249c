//! Image references and images pinned by digest. A fleet release names its image as
//! [`PinnedImage`] — `repository@sha256:<64 lowercase hex>` — so every robot runs the same
//! bytes whatever a tag points to later. This module is pure: the reference grammar (Docker's
//! `[host[:port]/]path[:tag][@digest]`, with Docker Hub names shortened the way the engine
//! writes them in `RepoDigests`), strict parsing of pinned references, and matching an image's
//! `RepoDigests` against a pin. Resolving a tag and pulling a pin are in the `image` module.

use std::fmt;
use std::str::FromStr;

/// The only digest algorithm accepted.
const SHA256_PREFIX: &str = "sha256:";
/// Longest reference accepted (the engine's limit for a name).
const MAX_REFERENCE: usize = 255;
/// Longest tag (Docker's grammar).
const MAX_TAG: usize = 128;

/// An image pinned by its registry (manifest) digest: `repository@sha256:<64 hex>`.
///
/// The repository is kept in the short form the engine uses (`nginx`, not
/// `docker.io/library/nginx`), so it compares equal to the engine's `RepoDigests`.
///
/// ```
/// use peercompute_runtime::PinnedImage;
///
/// let digest = format!("sha256:{}", "ab".repeat(32));
/// let pinned: PinnedImage = format!("127.0.0.1:5000/app@{digest}").parse()?;
/// assert_eq!(pinned.repository(), "127.0.0.1:5000/app");
/// assert_eq!(pinned.digest(), digest);
/// assert_eq!(pinned.to_string(), format!("127.0.0.1:5000/app@{digest}"));
/// // Strict: upper-case hex, short digests, tags and other algorithms are refused.
/// assert!(PinnedImage::parse(&format!("app@sha256:{}", "AB".repeat(32))).is_err());
/// assert!(PinnedImage::parse(&format!("app:v1@{digest}")).is_err());
/// # Ok::<(), peercompute_runtime::DigestError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PinnedImage {
    repository: String,
    digest: String,
}

/// A string that is not a valid pinned image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{reference:?} is not an image pinned by digest (expected repository@sha256:<64 lowercase hex digits>): {reason}"
)]
pub struct DigestError {
    /// What was given.
    pub reference: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl PinnedImage {
    /// A pin from its parts; `digest` is `sha256:<64 lowercase hex>`.
    pub fn new(repository: &str, digest: &str) -> Result<Self, DigestError> {
        let error = |reason| DigestError {
            reference: format!("{repository}@{digest}"),
            reason,
        };
        check_digest(digest).map_err(error)?;
        check_repository(repository).map_err(error)?;
        Ok(PinnedImage {
            repository: familiar(repository),
            digest: digest.to_owned(),
        })
    }

    /// Parses `repository@sha256:<64 lowercase hex>`. A tag next to the digest is refused:
    /// the digest alone names the image, and a tag would suggest otherwise.
    pub fn parse(reference: &str) -> Result<Self, DigestError> {
        let Some((repository, digest)) = reference.split_once('@') else {
            return Err(DigestError {
                reference: reference.to_owned(),
                reason: "it has no @digest",
            });
        };
        if split_tag(repository).1.is_some() {
            return Err(DigestError {
                reference: reference.to_owned(),
                reason: "it carries a tag: drop the :tag, the digest alone names the image",
            });
        }
        Self::new(repository, digest)
    }

    /// The repository, in the engine's short form (`127.0.0.1:5000/app`, `nginx`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The digest, `sha256:<64 lowercase hex>`.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Whether an image whose `RepoDigests` are `repo_digests` is this pinned image.
    pub fn is_in(&self, repo_digests: &[String]) -> bool {
        repo_digests
            .iter()
            .filter_map(|entry| PinnedImage::parse(entry).ok())
            .any(|entry| entry == *self)
    }
}

impl fmt::Display for PinnedImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.repository, self.digest)
    }
}

impl FromStr for PinnedImage {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PinnedImage::parse(s)
    }
}

/// The distinct digests `repo_digests` (an image's `RepoDigests`) hold for `repository`.
pub(crate) fn digests_for(repo_digests: &[String], repository: &str) -> Vec<String> {
    let repository = familiar(repository);
    let mut digests: Vec<String> = repo_digests
        .iter()
        .filter_map(|entry| PinnedImage::parse(entry).ok())
        .filter(|entry| entry.repository == repository)
        .map(|entry| entry.digest)
        .collect();
    digests.sort();
    digests.dedup();
    digests
}

/// The check after a pull: `Ok` if `held` (the pulled image's `RepoDigests`) holds `pinned`;
/// otherwise the digests found instead — those held for the repository and the one the
/// engine reported pulling (`reported`), without repeats.
pub(crate) fn pulled_digests(
    pinned: &PinnedImage,
    held: &[String],
    reported: Option<String>,
) -> Result<(), Vec<String>> {
    if pinned.is_in(held) {
        return Ok(());
    }
    let mut found = digests_for(held, pinned.repository());
    found.extend(reported.filter(|d| !found.contains(d)));
    Err(found)
}

/// The pin a local copy's `RepoDigests` (`held`) give for `repository`, when the registry
/// cannot be asked: there must be exactly one. Otherwise, why not.
pub(crate) fn local_pin(held: &[String], repository: &str) -> Result<PinnedImage, String> {
    let digests = digests_for(held, repository);
    match digests.as_slice() {
        [digest] => PinnedImage::new(repository, digest).map_err(|e| e.to_string()),
        [] => Err("the local copy was never pushed to or pulled from that repository".to_owned()),
        _ => Err(format!(
            "the local copy carries several digests for that repository ({})",
            digests.join(", ")
        )),
    }
}

/// A tagged reference `repository[:tag]` checked against Docker's grammar: the repository
/// (short form) and the tag (`latest` when none is given). `None` if it is not one.
pub(crate) fn parse_tagged(reference: &str) -> Option<(String, String)> {
    if reference.len() > MAX_REFERENCE || reference.contains('@') {
        return None;
    }
    let (repository, tag) = split_tag(reference);
    let tag = tag.unwrap_or("latest");
    check_repository(repository).ok()?;
    is_tag(tag).then(|| (familiar(repository), tag.to_owned()))
}

/// `(repository, tag)`: the tag is after the last `:` that follows the last `/`, so a
/// registry port (`localhost:5000/app`) is not taken for one.
pub(crate) fn split_tag(reference: &str) -> (&str, Option<&str>) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(colon) => {
            let at = name_start + colon;
            (&reference[..at], Some(&reference[at + 1..]))
        }
        None => (reference, None),
    }
}

/// The registry a reference points at (`docker.io` when none is named).
pub(crate) fn registry_of(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if is_domain_like(first) => first,
        _ => "docker.io",
    }
}

/// Docker's rule: the first component names a registry if it has a `.` or a `:`, or is
/// `localhost`.
fn is_domain_like(component: &str) -> bool {
    component.contains(['.', ':']) || component == "localhost"
}

/// The engine's short ("familiar") form of a repository: Docker Hub's domain and its
/// `library/` namespace for official images are left out.
fn familiar(repository: &str) -> String {
    let (hub, path) = match repository.split_once('/') {
        Some(("docker.io" | "index.docker.io", path)) => (true, path),
        Some((first, _)) if is_domain_like(first) => (false, repository),
        _ => (true, repository),
    };
    match path.strip_prefix("library/") {
        Some(official) if hub && !official.contains('/') => official.to_owned(),
        _ => path.to_owned(),
    }
}

fn check_digest(digest: &str) -> Result<(), &'static str> {
    let hex = digest
        .strip_prefix(SHA256_PREFIX)
        .ok_or("the digest must start with sha256:")?;
    if hex.len() != 64 {
        return Err("a sha256 digest has exactly 64 hex digits");
    }
    if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err("a sha256 digest is written in lowercase hex digits");
    }
    Ok(())
}

/// `[domain/]component(/component)*` in Docker's grammar.
fn check_repository(repository: &str) -> Result<(), &'static str> {
    if repository.is_empty() {
        return Err("the repository is empty");
    }
    if repository.len() > MAX_REFERENCE {
        return Err("the repository name is too long");
    }
    let mut components = repository.split('/').peekable();
    if let Some(first) = components.peek().copied()
        && repository.contains('/')
        && is_domain_like(first)
    {
        if !is_domain(first) {
            return Err("the registry part must be host or host:port");
        }
        components.next();
    }
    let mut any = false;
    for component in components {
        if !is_path_component(component) {
            return Err(
                "repository path components are lowercase letters and digits, joined by ., _, __ or -",
            );
        }
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err("the repository has no name after the registry")
    }
}

/// `host[:port]`, host being dot-separated labels of letters, digits and inner hyphens.
fn is_domain(domain: &str) -> bool {
    let (host, port) = match domain.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (domain, None),
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    let label_ok = |label: &str| {
        !label.is_empty()
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    port_ok && host.split('.').all(label_ok)
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !bytes.first().is_some_and(alnum) || !bytes.last().is_some_and(alnum) {
        return false;
    }
    let mut separator = String::new();
    for &b in bytes {
        if alnum(&b) {
            let ok = separator.is_empty()
                || matches!(separator.as_str(), "." | "_" | "__")
                || separator.bytes().all(|s| s == b'-');
            if !ok {
                return false;
            }
            separator.clear();
        } else if matches!(b, b'.' | b'_' | b'-') {
            separator.push(char::from(b));
        } else {
            return false;
        }
    }
    true
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn is_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    (1..=MAX_TAG).contains(&bytes.len())
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(byte: &str) -> String {
        byte.repeat(32)
    }

    #[test]
    fn pinned_references_parse_strictly() {
        let d = format!("sha256:{}", hex("0f"));
        let ok = [
            (format!("127.0.0.1:5000/app@{d}"), "127.0.0.1:5000/app"),
            (format!("localhost:5000/a/b-c@{d}"), "localhost:5000/a/b-c"),
            (format!("ghcr.io/o/app@{d}"), "ghcr.io/o/app"),
            (format!("nginx@{d}"), "nginx"),
            (format!("docker.io/library/nginx@{d}"), "nginx"),
            (format!("library/nginx@{d}"), "nginx"),
            (format!("docker.io/o/app@{d}"), "o/app"),
            (format!("my_app__x.y-----z@{d}"), "my_app__x.y-----z"),
        ];
        for (input, repository) in ok {
            let pinned = PinnedImage::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(pinned.repository(), repository, "{input}");
            assert_eq!(pinned.digest(), d, "{input}");
            assert_eq!(pinned.to_string(), format!("{repository}@{d}"), "{input}");
            assert_eq!(
                pinned.to_string().parse::<PinnedImage>().as_ref(),
                Ok(&pinned)
            );
        }
        let bad = [
            ("app".to_owned(), "no @digest"),
            (format!("app:v1@{d}"), "tag"),
            (format!("app@sha256:{}", hex("0F")), "lowercase"),
            (format!("app@sha256:{}", &hex("0f")[1..]), "64"),
            (format!("app@sha256:{}0", hex("0f")), "64"),
            (format!("app@sha512:{}", hex("0f")), "sha256:"),
            (format!("app@sha256:{}", hex("0g")), "lowercase"),
            (format!("@{d}"), "empty"),
            (format!("App@{d}"), "lowercase"),
            (format!("a..b@{d}"), "joined"),
            (format!("a/-b@{d}"), "joined"),
            (format!("a b@{d}"), "joined"),
            (format!("127.0.0.1:5000/@{d}"), "joined"),
            (format!("127.0.0.1:5000@{d}"), "tag"),
            (format!("bad_host.io:x/app@{d}"), "host"),
            (format!("{}@{d}", "a".repeat(256)), "too long"),
        ];
        for (input, why) in bad {
            let err = PinnedImage::parse(&input).expect_err(&input);
            assert!(err.reason.contains(why), "{input}: {err}");
            assert!(err.to_string().contains(&input), "{err}");
        }
    }

    #[test]
    fn repo_digests_match_by_repository_and_digest() {
        let a = format!("sha256:{}", hex("aa"));
        let b = format!("sha256:{}", hex("bb"));
        let pinned = PinnedImage::parse(&format!("127.0.0.1:5000/app@{a}")).expect("valid");
        let held = |entries: &[String]| pinned.is_in(entries);
        assert!(held(&[format!("127.0.0.1:5000/app@{a}")]));
        assert!(held(&[
            "garbage".to_owned(),
            format!("127.0.0.1:5000/app@{a}")
        ]));
        assert!(!held(&[format!("127.0.0.1:5000/app@{b}")]));
        assert!(!held(&[format!("127.0.0.1:5000/other@{a}")]));
        assert!(!held(&[format!("127.0.0.1:5001/app@{a}")]));
        assert!(!held(&[]));
        let hub = PinnedImage::parse(&format!("docker.io/library/nginx@{a}")).expect("valid");
        assert!(hub.is_in(&[format!("nginx@{a}")]));

        let entries = [
            format!("127.0.0.1:5000/app@{b}"),
            format!("127.0.0.1:5000/other@{a}"),
            format!("127.0.0.1:5000/app@{a}"),
            format!("127.0.0.1:5000/app@{b}"),
        ];
        assert_eq!(
            digests_for(&entries, "127.0.0.1:5000/app"),
            [a.clone(), b.clone()]
        );
        assert_eq!(
            digests_for(&[format!("nginx@{a}")], "docker.io/library/nginx"),
            [a]
        );
        assert!(digests_for(&entries, "127.0.0.1:5000/none").is_empty());
    }

    #[test]
    fn a_pull_is_checked_against_the_pin() {
        let a = format!("sha256:{}", hex("aa"));
        let b = format!("sha256:{}", hex("bb"));
        let pinned = PinnedImage::parse(&format!("r.io/app@{a}")).expect("valid");
        let entry = |repo: &str, d: &str| format!("{repo}@{d}");
        assert_eq!(
            pulled_digests(&pinned, &[entry("r.io/app", &a)], None),
            Ok(())
        );
        assert_eq!(
            pulled_digests(&pinned, &[entry("r.io/app", &b)], Some(b.clone())),
            Err(vec![b.clone()])
        );
        assert_eq!(
            pulled_digests(&pinned, &[entry("r.io/other", &a)], Some(b.clone())),
            Err(vec![b.clone()])
        );
        assert_eq!(pulled_digests(&pinned, &[], None), Err(vec![]));
    }

    #[test]
    fn a_local_copy_pins_only_with_exactly_one_digest() {
        let a = format!("sha256:{}", hex("aa"));
        let b = format!("sha256:{}", hex("bb"));
        let held = [format!("r.io/app@{a}"), format!("r.io/other@{b}")];
        assert_eq!(
            local_pin(&held, "r.io/app").map(|p| p.to_string()),
            Ok(format!("r.io/app@{a}"))
        );
        let none = local_pin(&held, "r.io/third").expect_err("no digest");
        assert!(none.contains("never pushed"), "{none}");
        let two = [format!("r.io/app@{a}"), format!("r.io/app@{b}")];
        let several = local_pin(&two, "r.io/app").expect_err("ambiguous");
        assert!(several.contains(&a) && several.contains(&b), "{several}");
    }

    #[test]
    fn tagged_references_table() {
        let cases: [(&str, Option<(&str, &str)>); 12] = [
            ("nginx", Some(("nginx", "latest"))),
            ("nginx:1.27", Some(("nginx", "1.27"))),
            ("docker.io/library/nginx:1", Some(("nginx", "1"))),
            ("127.0.0.1:5000/app:v1", Some(("127.0.0.1:5000/app", "v1"))),
            ("localhost:5000/app", Some(("localhost:5000/app", "latest"))),
            ("ghcr.io/o/app:1_x.Y-z", Some(("ghcr.io/o/app", "1_x.Y-z"))),
            ("app:.v1", None),
            ("app:", None),
            ("App:v1", None),
            ("app@sha256:abc", None),
            ("-v /:/host", None),
            ("127.0.0.1:5000/:v1", None),
        ];
        for (input, expected) in cases {
            let got = parse_tagged(input);
            let got = got.as_ref().map(|(r, t)| (r.as_str(), t.as_str()));
            assert_eq!(got, expected, "{input}");
        }
        assert_eq!(parse_tagged(&format!("app:{}", "t".repeat(129))), None);
    }

    #[test]
    fn references_split_into_name_and_tag() {
        let cases = [
            ("nginx", ("nginx", None)),
            ("nginx:1.27", ("nginx", Some("1.27"))),
            ("library/nginx:1.27", ("library/nginx", Some("1.27"))),
            ("localhost:5000/app", ("localhost:5000/app", None)),
            ("localhost:5000/app:v2", ("localhost:5000/app", Some("v2"))),
        ];
        for (input, expected) in cases {
            assert_eq!(split_tag(input), expected, "{input}");
        }
    }

    #[test]
    fn registries_are_named() {
        assert_eq!(registry_of("nginx"), "docker.io");
        assert_eq!(registry_of("library/nginx:1"), "docker.io");
        assert_eq!(registry_of("ghcr.io/o/app"), "ghcr.io");
        assert_eq!(registry_of("127.0.0.1:5000/app"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/app"), "localhost");
    }
}
