use super::*;

#[test]
fn toml_keys_and_unknown_refused() {
    let cfg: GatewayConfig = toml::from_str(
        "domain = \"Apps.Example.com.\"\nopen = true\ngrace_period = \"5s\"\nrate_limit = 7\n",
    )
    .expect("parse");
    let cfg = cfg.validate().expect("valid");
    assert_eq!(cfg.domain, "apps.example.com");
    assert_eq!(cfg.grace_period, Duration::from_secs(5));
    assert_eq!(cfg.rate_limit, 7);
    assert!(toml::from_str::<GatewayConfig>("domian = \"x\"").is_err());
}

#[test]
fn validation_messages() {
    let base = GatewayConfig {
        domain: "apps.example.com".into(),
        open: true,
        ..GatewayConfig::default()
    };
    let no_domain = GatewayConfig {
        domain: String::new(),
        ..base.clone()
    };
    assert!(
        no_domain
            .validate()
            .expect_err("domain")
            .to_string()
            .contains("--domain")
    );
    let nobody = GatewayConfig {
        open: false,
        ..base.clone()
    };
    assert!(
        nobody
            .validate()
            .expect_err("allow")
            .to_string()
            .contains("--allow-provider")
    );
    let files = GatewayConfig {
        tls: TlsMode::Files,
        ..base.clone()
    };
    assert!(
        files
            .validate()
            .expect_err("files")
            .to_string()
            .contains("--cert")
    );
    assert_eq!(base.public_url("blog"), "https://blog.apps.example.com");
    let port = GatewayConfig {
        public_port: Some(8443),
        ..base
    };
    assert_eq!(
        port.public_url("blog"),
        "https://blog.apps.example.com:8443"
    );
}

#[test]
fn admin_off_loopback_needs_a_token_file() {
    let base = GatewayConfig {
        domain: "apps.example.com".into(),
        open: true,
        tls: TlsMode::Dev,
        ..GatewayConfig::default()
    };
    let open = GatewayConfig {
        admin_listen: Some(SocketAddr::from(([0, 0, 0, 0], 9180))),
        ..base.clone()
    };
    assert_eq!(
        open.clone()
            .validate()
            .expect_err("no token file")
            .to_string(),
        "--admin-listen 0.0.0.0:9180 is not loopback: give --admin-token-file FILE \
         (lines `read TOKEN` / `admin TOKEN`)"
    );
    let with_tokens = GatewayConfig {
        admin_token_file: Some("/etc/peercompute/admin-tokens".into()),
        ..open
    };
    assert!(with_tokens.validate().is_ok());
    let v6_loopback = GatewayConfig {
        admin_listen: Some("[::1]:9180".parse().expect("addr")),
        ..base.clone()
    };
    assert!(v6_loopback.validate().is_ok(), "loopback needs no tokens");
    let bad_host = GatewayConfig {
        admin_host: vec!["Admin.Example.com:9180".into()],
        ..base.clone()
    };
    let err = bad_host.validate().expect_err("port").to_string();
    assert!(err.contains("--admin-host"), "{err}");
    let tiny_log = GatewayConfig {
        access_log: Some("-".into()),
        access_log_keep: 0,
        ..base.clone()
    };
    assert!(tiny_log.clone().validate().is_err());
    let many = GatewayConfig {
        access_log_keep: crate::access_log::MAX_KEEP + 1,
        ..tiny_log
    };
    let err = many.validate().expect_err("too many kept").to_string();
    assert!(err.contains("access_log_keep from 1 to"), "{err}");

    let cfg: GatewayConfig = toml::from_str(
        "domain = \"apps.example.com\"\nopen = true\nadmin_listen = \"0.0.0.0:9180\"\n\
         admin_token_file = \"/etc/t\"\nadmin_host = [\"GW.example.com.\"]\n\
         access_log = \"/var/log/gw.log\"\naccess_log_max_bytes = 4096\n\
         access_log_keep = 2\nmetrics_max_routes = 3\n",
    )
    .expect("parse");
    let cfg = cfg.validate().expect("valid");
    assert_eq!(cfg.admin_host, vec!["gw.example.com".to_owned()]);
    assert_eq!(
        (
            cfg.access_log_max_bytes,
            cfg.access_log_keep,
            cfg.metrics_max_routes
        ),
        (4096, 2, 3)
    );
    assert_eq!(GatewayConfig::default().metrics_max_routes, 500);
}

#[test]
fn acme_keys_and_checks() {
    let cfg: GatewayConfig = toml::from_str(
        "domain = \"apps.example.com\"\nopen = true\ntls = \"acme\"\n\
         acme_directory = \"letsencrypt-staging\"\nacme_email = \"ops@example.com\"\n\
         acme_challenge = \"dns-01\"\ndns_provider = \"rfc2136\"\n\
         dns_server = \"127.0.0.1:5353\"\ndns_zone = \"Example.com.\"\n\
         dns_tsig_key = \"/etc/k.key\"\nacme_retry_initial = \"2s\"\n",
    )
    .expect("parse");
    let cfg = cfg.validate().expect("valid");
    assert_eq!(cfg.tls, TlsMode::Acme);
    assert_eq!(cfg.acme_directory, LETS_ENCRYPT_STAGING);
    assert_eq!(cfg.dns_zone.as_deref(), Some("example.com"));
    assert_eq!(cfg.acme_retry_initial, Duration::from_secs(2));

    let base = GatewayConfig {
        domain: "apps.example.com".into(),
        open: true,
        tls: TlsMode::Acme,
        dns_server: Some("ns1.example.com".into()),
        dns_tsig_key: Some("/k".into()),
        ..GatewayConfig::default()
    };
    let ok = base.clone().validate().expect("defaults are valid");
    assert_eq!(ok.acme_directory, LETS_ENCRYPT);
    assert_eq!(ok.dns_zone.as_deref(), Some("apps.example.com"));
    let cases = [
        (
            GatewayConfig {
                dns_server: None,
                ..base.clone()
            },
            "--dns-server",
        ),
        (
            GatewayConfig {
                dns_zone: Some("example.org".into()),
                ..base.clone()
            },
            "does not contain",
        ),
        (
            GatewayConfig {
                acme_directory: "http://ca/dir".into(),
                ..base.clone()
            },
            "https://",
        ),
        (
            GatewayConfig {
                acme_email: Some("nobody".into()),
                ..base.clone()
            },
            "e-mail",
        ),
        (
            GatewayConfig {
                acme_challenge: Some(AcmeChallenge::Http01),
                http_listen: None,
                ..base.clone()
            },
            "--no-http",
        ),
    ];
    for (cfg, why) in cases {
        let err = cfg.validate().expect_err(why).to_string();
        assert!(err.contains(why), "{why}: {err}");
    }
    let alpn = GatewayConfig {
        acme_challenge: Some(AcmeChallenge::TlsAlpn01),
        dns_server: None,
        dns_tsig_key: None,
        ..base
    };
    assert!(alpn.validate().is_ok(), "TLS-ALPN-01 needs no DNS settings");
}

#[test]
fn auto_is_the_default_and_resolves_before_checks() {
    let cfg: GatewayConfig =
        toml::from_str("domain = \"apps.localhost\"\nopen = true\n").expect("parse");
    assert_eq!(cfg.tls, TlsMode::Auto, "the default");
    let cfg = cfg.validate().expect("valid");
    assert_eq!(cfg.tls_choice().source, TlsSource::Dev);
    let explicit: GatewayConfig =
        toml::from_str("domain = \"apps.example.com\"\nopen = true\ntls = \"auto\"\n")
            .expect("parse tls = auto");
    let explicit = explicit.validate().expect("valid");
    assert_eq!(
        explicit.tls_choice().source,
        TlsSource::Acme(AcmeChallenge::Http01),
        "public domain, no DNS-01 settings: per-name HTTP-01"
    );
    let public = GatewayConfig {
        domain: "apps.example.com".into(),
        open: true,
        ..GatewayConfig::default()
    };
    let no_http = GatewayConfig {
        http_listen: None,
        ..public.clone()
    }
    .validate()
    .expect("TLS-ALPN-01 needs nothing more");
    assert_eq!(
        no_http.tls_choice().source,
        TlsSource::Acme(AcmeChallenge::TlsAlpn01)
    );
    // DNS-01 settings ask for the wildcard, which then needs all of them.
    let half = GatewayConfig {
        dns_server: Some("ns1.example.com:53".into()),
        ..public.clone()
    };
    let err = half.validate().expect_err("no TSIG key").to_string();
    assert!(err.contains("--dns-tsig-key"), "{err}");
    // A --cert without --key under auto asks for files, which names both.
    let cert_only = GatewayConfig {
        cert: Some("/etc/tls/fullchain.pem".into()),
        ..public
    };
    let err = cert_only.validate().expect_err("no key").to_string();
    assert!(err.contains("--key FILE"), "{err}");
}
