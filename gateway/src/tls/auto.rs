//! `--tls auto` (the default): which certificate source the gateway's domain gets, and the
//! one start-up line that says why. Pure — the answer depends only on the settings — and
//! table-tested below.
//!
//! The rule, first match wins:
//! 1. `--tls dev|files|acme` given: that source.
//! 2. `--cert` or `--key` given: `files`.
//! 3. A name no public CA certifies — `localhost`, `*.localhost`, a reserved or private-use
//!    suffix (`.test`, `.example`, `.invalid`, `.local`, `.internal`, `.home.arpa`), a
//!    single label, an IP address: `dev`, a local CA.
//! 4. Anything else: `acme`.
//!
//! The ACME challenge (for rule 1 with `acme` and rule 4): `--acme-challenge` when given;
//! DNS-01 (one wildcard certificate, needs credentials) when DNS-01 settings are given;
//! otherwise per-name certificates, which need no credentials: HTTP-01 when the HTTP listener
//! is on, TLS-ALPN-01 on the HTTPS port when it is off.

use std::net::IpAddr;
use std::path::Path;

use crate::config::{AcmeChallenge, LETS_ENCRYPT, LETS_ENCRYPT_STAGING, TlsMode};

/// Suffixes under which no public CA issues certificates (RFC 2606, 6761, 6762, 8375 and the
/// ICANN-reserved `.internal`).
const PRIVATE_SUFFIXES: [&str; 7] = [
    "localhost",
    "test",
    "example",
    "invalid",
    "local",
    "internal",
    "home.arpa",
];

/// The settings the choice depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TlsInputs<'a> {
    pub(crate) tls: TlsMode,
    /// Normalised (lower case, no trailing dot).
    pub(crate) domain: &'a str,
    /// `--cert` or `--key` given.
    pub(crate) cert_files: bool,
    pub(crate) acme_challenge: Option<AcmeChallenge>,
    /// Any of `--dns-server`, `--dns-provider`, `--dns-zone`, `--dns-tsig-key` given.
    pub(crate) dns_settings: bool,
    pub(crate) http_listener: bool,
}

/// Where the visitor-facing certificate comes from, once `auto` is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSource {
    /// A local CA in the state dir.
    Dev,
    /// `--cert` / `--key` PEM files.
    Files,
    /// An ACME server, with this challenge.
    Acme(AcmeChallenge),
}

/// Why the source was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsReason {
    /// `--tls dev|files|acme` named it.
    Given,
    /// `--cert` or `--key` was given.
    CertFiles,
    /// The domain is a name no public CA certifies.
    PrivateName(PrivateName),
    /// The domain is a public name.
    PublicName,
}

/// Why a name cannot get a publicly trusted certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateName {
    /// Equal to or under this reserved suffix (`localhost`, `test`, `home.arpa`, ...).
    Suffix(&'static str),
    /// An IPv4 or IPv6 literal.
    IpAddress,
    /// One label, no dot.
    SingleLabel,
}

/// Why the ACME challenge was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeReason {
    /// `--acme-challenge` named it.
    Given,
    /// DNS-01 settings (`--dns-server`, `--dns-provider`, ...) were given.
    DnsSettings,
    /// No DNS-01 settings; the HTTP listener answers HTTP-01.
    HttpListener,
    /// No DNS-01 settings and no HTTP listener: TLS-ALPN-01 on the HTTPS port.
    NoHttpListener,
}

/// The resolved `--tls` and the reasons, as printed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsChoice {
    pub source: TlsSource,
    pub reason: TlsReason,
    /// Set when the source is ACME.
    pub challenge_reason: Option<ChallengeReason>,
}

/// Why `domain` (normalised) cannot get a publicly trusted certificate, if it cannot.
pub(crate) fn private_name(domain: &str) -> Option<PrivateName> {
    let bare = domain.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Some(PrivateName::IpAddress);
    }
    for suffix in PRIVATE_SUFFIXES {
        if domain == suffix
            || domain
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.'))
        {
            return Some(PrivateName::Suffix(suffix));
        }
    }
    (!domain.contains('.')).then_some(PrivateName::SingleLabel)
}

/// Resolves `--tls` (see the module docs for the rule).
pub(crate) fn choose(inputs: &TlsInputs<'_>) -> TlsChoice {
    // `None`: ACME, with the challenge picked below.
    let (source, reason) = match inputs.tls {
        TlsMode::Dev => (Some(TlsSource::Dev), TlsReason::Given),
        TlsMode::Files => (Some(TlsSource::Files), TlsReason::Given),
        TlsMode::Acme => (None, TlsReason::Given),
        TlsMode::Auto if inputs.cert_files => (Some(TlsSource::Files), TlsReason::CertFiles),
        TlsMode::Auto => match private_name(inputs.domain) {
            Some(why) => (Some(TlsSource::Dev), TlsReason::PrivateName(why)),
            None => (None, TlsReason::PublicName),
        },
    };
    if let Some(source) = source {
        return TlsChoice {
            source,
            reason,
            challenge_reason: None,
        };
    }
    let (challenge, why) = match inputs.acme_challenge {
        Some(c) => (c, ChallengeReason::Given),
        None if inputs.dns_settings => (AcmeChallenge::Dns01, ChallengeReason::DnsSettings),
        None if inputs.http_listener => (AcmeChallenge::Http01, ChallengeReason::HttpListener),
        None => (AcmeChallenge::TlsAlpn01, ChallengeReason::NoHttpListener),
    };
    TlsChoice {
        source: TlsSource::Acme(challenge),
        reason,
        challenge_reason: Some(why),
    }
}

/// What the line needs besides the choice.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineContext<'a> {
    pub(crate) domain: &'a str,
    pub(crate) acme_directory: &'a str,
    pub(crate) dev_ca: &'a Path,
    pub(crate) cert: Option<&'a Path>,
}

impl TlsChoice {
    /// The one start-up line: mode, what it does, and why, e.g. `TLS: acme (http-01,
    /// per-name certificates from Let's Encrypt) because apps.example.com is a public domain
    /// and no DNS-01 settings are given; --tls dev for a private CA`.
    pub(crate) fn line(&self, cx: &LineContext<'_>) -> String {
        let d = cx.domain;
        let what = match self.source {
            TlsSource::Dev => format!(
                "dev (a local CA signs {d} and *.{d}; trust it with curl --cacert {ca} or import \
                 it in a browser)",
                ca = cx.dev_ca.display()
            ),
            TlsSource::Files => format!(
                "files ({})",
                cx.cert.map_or("--cert".into(), |p| p.display().to_string())
            ),
            TlsSource::Acme(challenge) => {
                let from = match cx.acme_directory {
                    LETS_ENCRYPT | "letsencrypt" => "Let's Encrypt",
                    LETS_ENCRYPT_STAGING | "letsencrypt-staging" => "Let's Encrypt staging",
                    url => url,
                };
                match challenge {
                    AcmeChallenge::Dns01 => {
                        format!(
                            "acme (dns-01, one wildcard certificate for {d} and *.{d} from {from})"
                        )
                    }
                    AcmeChallenge::Http01 => format!(
                        "acme (http-01 on the HTTP port, per-name certificates from {from})"
                    ),
                    AcmeChallenge::TlsAlpn01 => format!(
                        "acme (tls-alpn-01 on the HTTPS port, per-name certificates from {from})"
                    ),
                }
            }
        };
        let mode = match self.source {
            TlsSource::Dev => "dev",
            TlsSource::Files => "files",
            TlsSource::Acme(_) => "acme",
        };
        let mut why = match self.reason {
            TlsReason::Given => format!("--tls {mode} was given"),
            TlsReason::CertFiles => "--cert/--key were given".into(),
            TlsReason::PrivateName(PrivateName::Suffix(s)) if d == s => {
                format!("{d} is a reserved name that no public CA certifies")
            }
            TlsReason::PrivateName(PrivateName::Suffix(s)) => {
                format!("{d} is under .{s}, which no public CA certifies")
            }
            TlsReason::PrivateName(PrivateName::IpAddress) => {
                format!("{d} is an IP address, which public CAs do not certify here")
            }
            TlsReason::PrivateName(PrivateName::SingleLabel) => {
                format!("{d} is a single-label name that no public CA certifies")
            }
            TlsReason::PublicName => format!("{d} is a public domain"),
        };
        match self.challenge_reason {
            Some(ChallengeReason::DnsSettings) => why.push_str(" and DNS-01 settings are given"),
            Some(ChallengeReason::HttpListener) => {
                why.push_str(" and no DNS-01 settings are given");
            }
            Some(ChallengeReason::NoHttpListener) => {
                why.push_str(" and neither DNS-01 settings nor the HTTP listener are given");
            }
            Some(ChallengeReason::Given) | None => {}
        }
        let hint = match self.reason {
            TlsReason::PrivateName(_) => "; --tls acme or --tls files to override",
            TlsReason::PublicName => "; --tls dev for a private CA",
            TlsReason::Given | TlsReason::CertFiles => "",
        };
        format!("TLS: {what} because {why}{hint}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PUBLIC: &str = "apps.example.com";

    fn auto(domain: &str) -> TlsInputs<'_> {
        TlsInputs {
            tls: TlsMode::Auto,
            domain,
            cert_files: false,
            acme_challenge: None,
            dns_settings: false,
            http_listener: true,
        }
    }

    #[test]
    fn private_names() {
        use PrivateName::*;
        for (domain, want) in [
            ("localhost", Some(Suffix("localhost"))),
            ("apps.localhost", Some(Suffix("localhost"))),
            ("a.b.localhost", Some(Suffix("localhost"))),
            ("apps.test", Some(Suffix("test"))),
            ("apps.example", Some(Suffix("example"))),
            ("x.invalid", Some(Suffix("invalid"))),
            ("printer.local", Some(Suffix("local"))),
            ("svc.corp.internal", Some(Suffix("internal"))),
            ("apps.home.arpa", Some(Suffix("home.arpa"))),
            ("127.0.0.1", Some(IpAddress)),
            ("203.0.113.7", Some(IpAddress)),
            ("[::1]", Some(IpAddress)),
            ("intranet", Some(SingleLabel)),
            // Public: the reserved words only count as whole labels at the end.
            (PUBLIC, None),
            ("apps.example.org", None),
            ("mytest", Some(SingleLabel)),
            ("apps.mytest.dev", None),
            ("localhost.example.com", None),
            ("apps.notlocal", None),
            ("arpa.example.net", None),
            ("apps.arpa", None),
            ("1.2.3.4.nip.io", None),
        ] {
            assert_eq!(private_name(domain), want, "{domain}");
        }
    }

    #[test]
    fn the_rule_table() {
        use AcmeChallenge::*;
        use ChallengeReason as C;
        let acme = |c, r, cr| TlsChoice {
            source: TlsSource::Acme(c),
            reason: r,
            challenge_reason: Some(cr),
        };
        let plain = |source, reason| TlsChoice {
            source,
            reason,
            challenge_reason: None,
        };
        let cases: [(&str, TlsInputs<'_>, TlsChoice); 14] = [
            (
                "*.localhost picks dev",
                auto("apps.localhost"),
                plain(
                    TlsSource::Dev,
                    TlsReason::PrivateName(PrivateName::Suffix("localhost")),
                ),
            ),
            (
                ".test picks dev (the tests' apps.test)",
                auto("apps.test"),
                plain(
                    TlsSource::Dev,
                    TlsReason::PrivateName(PrivateName::Suffix("test")),
                ),
            ),
            (
                "DNS settings do not make a private name public",
                TlsInputs {
                    dns_settings: true,
                    ..auto("apps.internal")
                },
                plain(
                    TlsSource::Dev,
                    TlsReason::PrivateName(PrivateName::Suffix("internal")),
                ),
            ),
            (
                "IP literal picks dev",
                auto("192.0.2.1"),
                plain(
                    TlsSource::Dev,
                    TlsReason::PrivateName(PrivateName::IpAddress),
                ),
            ),
            (
                "public domain: per-name HTTP-01",
                auto(PUBLIC),
                acme(Http01, TlsReason::PublicName, C::HttpListener),
            ),
            (
                "public domain without the HTTP listener: TLS-ALPN-01",
                TlsInputs {
                    http_listener: false,
                    ..auto(PUBLIC)
                },
                acme(TlsAlpn01, TlsReason::PublicName, C::NoHttpListener),
            ),
            (
                "public domain with DNS settings: the wildcard",
                TlsInputs {
                    dns_settings: true,
                    ..auto(PUBLIC)
                },
                acme(Dns01, TlsReason::PublicName, C::DnsSettings),
            ),
            (
                "--acme-challenge dns-01 alone asks for the wildcard",
                TlsInputs {
                    acme_challenge: Some(Dns01),
                    ..auto(PUBLIC)
                },
                acme(Dns01, TlsReason::PublicName, C::Given),
            ),
            (
                "--acme-challenge wins over DNS settings",
                TlsInputs {
                    acme_challenge: Some(TlsAlpn01),
                    dns_settings: true,
                    ..auto(PUBLIC)
                },
                acme(TlsAlpn01, TlsReason::PublicName, C::Given),
            ),
            (
                "--cert/--key pick files",
                TlsInputs {
                    cert_files: true,
                    ..auto(PUBLIC)
                },
                plain(TlsSource::Files, TlsReason::CertFiles),
            ),
            (
                "--tls dev on a public domain stays dev",
                TlsInputs {
                    tls: TlsMode::Dev,
                    ..auto(PUBLIC)
                },
                plain(TlsSource::Dev, TlsReason::Given),
            ),
            (
                "--tls files stays files",
                TlsInputs {
                    tls: TlsMode::Files,
                    ..auto("apps.localhost")
                },
                plain(TlsSource::Files, TlsReason::Given),
            ),
            (
                "--tls acme on a private name stays acme (a private ACME server)",
                TlsInputs {
                    tls: TlsMode::Acme,
                    ..auto("acme.test")
                },
                acme(Http01, TlsReason::Given, C::HttpListener),
            ),
            (
                "--tls acme with DNS settings: the wildcard, as before",
                TlsInputs {
                    tls: TlsMode::Acme,
                    dns_settings: true,
                    ..auto(PUBLIC)
                },
                acme(Dns01, TlsReason::Given, C::DnsSettings),
            ),
        ];
        for (why, inputs, want) in cases {
            assert_eq!(choose(&inputs), want, "{why}");
        }
    }

    #[test]
    fn the_start_line_says_mode_and_why() {
        fn cx(domain: &str) -> LineContext<'_> {
            LineContext {
                domain,
                acme_directory: LETS_ENCRYPT,
                dev_ca: Path::new("/var/lib/peercompute-gateway/dev-ca.pem"),
                cert: None,
            }
        }
        fn line(inputs: TlsInputs<'_>) -> String {
            choose(&inputs).line(&cx(inputs.domain))
        }
        assert_eq!(
            line(auto(PUBLIC)),
            "TLS: acme (http-01 on the HTTP port, per-name certificates from Let's Encrypt) \
             because apps.example.com is a public domain and no DNS-01 settings are given; \
             --tls dev for a private CA"
        );
        assert_eq!(
            line(TlsInputs {
                dns_settings: true,
                ..auto(PUBLIC)
            }),
            "TLS: acme (dns-01, one wildcard certificate for apps.example.com and \
             *.apps.example.com from Let's Encrypt) because apps.example.com is a public domain \
             and DNS-01 settings are given; --tls dev for a private CA"
        );
        assert_eq!(
            line(auto("apps.localhost")),
            "TLS: dev (a local CA signs apps.localhost and *.apps.localhost; trust it with curl \
             --cacert /var/lib/peercompute-gateway/dev-ca.pem or import it in a browser) \
             because apps.localhost is under .localhost, which no public CA certifies; \
             --tls acme or --tls files to override"
        );
        assert!(line(auto("localhost")).contains("localhost is a reserved name"));
        let staging = LineContext {
            acme_directory: LETS_ENCRYPT_STAGING,
            ..cx(PUBLIC)
        };
        let given = TlsInputs {
            tls: TlsMode::Acme,
            acme_challenge: Some(AcmeChallenge::TlsAlpn01),
            ..auto(PUBLIC)
        };
        assert_eq!(
            choose(&given).line(&staging),
            "TLS: acme (tls-alpn-01 on the HTTPS port, per-name certificates from Let's Encrypt \
             staging) because --tls acme was given"
        );
        let files = LineContext {
            cert: Some(Path::new("/etc/tls/fullchain.pem")),
            ..cx(PUBLIC)
        };
        let with_cert = TlsInputs {
            cert_files: true,
            ..auto(PUBLIC)
        };
        assert_eq!(
            choose(&with_cert).line(&files),
            "TLS: files (/etc/tls/fullchain.pem) because --cert/--key were given"
        );
    }
}
