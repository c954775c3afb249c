//! Grant tests: round trips, the golden vector, and every way a grant must be refused.

use proptest::prelude::*;

use super::*;

const NOW: u64 = 1_800_000_000;
const DAY: u64 = 86_400;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn peer(key: &SigningKey) -> PeerId {
    let public =
        libp2p_identity::ed25519::PublicKey::try_from_bytes(&key.verifying_key().to_bytes())
            .expect("the test key decompresses");
    libp2p_identity::PublicKey::from(public).to_peer_id()
}

fn grant() -> NameGrant {
    NameGrant::sign(
        &key(1),
        "apps.example.com",
        "blog",
        peer(&key(2)),
        NOW + 30 * DAY,
        NOW,
    )
    .expect("signs")
}

#[test]
fn a_signed_grant_verifies_for_its_grantee() {
    let g = grant();
    assert_eq!(g.owner, peer(&key(1)));
    assert_eq!(
        g.verify("apps.example.com", "blog", &peer(&key(2)), NOW),
        Ok(())
    );
    assert_eq!(
        g.verify("APPS.example.com", "blog", &peer(&key(2)), NOW + DAY),
        Ok(())
    );
}

#[test]
fn refusals() {
    let g = grant();
    let grantee = peer(&key(2));
    let mut forged = g.clone();
    forged.not_after += 1;
    let mut other_signer = g.clone();
    other_signer.owner = peer(&key(3));
    let cases: Vec<(&str, NameGrant, &str, &str, PeerId, u64, GrantError)> = vec![
        (
            "wrong domain",
            g.clone(),
            "evil.example",
            "blog",
            grantee,
            NOW,
            GrantError::WrongDomain {
                expected: "evil.example".into(),
                got: "apps.example.com".into(),
            },
        ),
        (
            "wrong name",
            g.clone(),
            "apps.example.com",
            "shop",
            grantee,
            NOW,
            GrantError::WrongName {
                expected: "shop".into(),
                got: "blog".into(),
            },
        ),
        (
            "wrong grantee",
            g.clone(),
            "apps.example.com",
            "blog",
            peer(&key(3)),
            NOW,
            GrantError::WrongGrantee {
                expected: peer(&key(3)).to_string(),
                got: grantee.to_string(),
            },
        ),
        (
            "expired",
            g.clone(),
            "apps.example.com",
            "blog",
            grantee,
            NOW + 30 * DAY,
            GrantError::Expired {
                not_after: NOW + 30 * DAY,
                now: NOW + 30 * DAY,
            },
        ),
        (
            "altered expiry",
            forged,
            "apps.example.com",
            "blog",
            grantee,
            NOW,
            GrantError::BadSignature(peer(&key(1)).to_string()),
        ),
        (
            "wrong signer",
            other_signer,
            "apps.example.com",
            "blog",
            grantee,
            NOW,
            GrantError::BadSignature(peer(&key(3)).to_string()),
        ),
    ];
    for (what, g, domain, name, grantee, now, want) in cases {
        assert_eq!(g.verify(domain, name, &grantee, now), Err(want), "{what}");
    }
}

#[test]
fn lifetime_is_at_most_90_days() {
    let grantee = peer(&key(2));
    assert_eq!(
        NameGrant::sign(&key(1), "d", "blog", grantee, NOW + MAX_GRANT_SECS + 1, NOW),
        Err(GrantError::TooLong)
    );
    let g =
        NameGrant::sign(&key(1), "d", "blog", grantee, NOW + MAX_GRANT_SECS, NOW).expect("90 d");
    // Signed with a clock far ahead: refused by a gateway at the real time.
    assert_eq!(
        g.verify("d", "blog", &grantee, NOW - DAY),
        Err(GrantError::TooLong)
    );
}

#[test]
fn the_signature_is_domain_separated() {
    let g = grant();
    let message = g.signing_message().expect("encodes");
    assert!(message[1..].starts_with(GRANT_SIGNATURE_DOMAIN));
    // The same fields signed without the separation string do not verify.
    let mut raw = BytesMut::new();
    g.put_unsigned(&mut raw).expect("encodes");
    let mut bare = g.clone();
    bare.signature = key(1).sign(&raw).to_bytes();
    assert!(matches!(
        bare.verify("apps.example.com", "blog", &peer(&key(2)), NOW),
        Err(GrantError::BadSignature(_))
    ));
}

/// Golden vector: keys from seeds 1 (owner) and 2 (grantee), Ed25519 signatures are
/// deterministic, so the whole text form is fixed.
#[test]
fn golden_text_form() {
    let text = grant().to_text().expect("encodes");
    let mut raw = BytesMut::new();
    grant().encode(&mut raw).expect("encodes");
    // version 1 | domain 16 "apps.example.com" | name 4 "blog" | owner 38 bytes | …
    assert_eq!(&raw[..2], &[0x01, 16]);
    assert_eq!(&raw[2..18], b"apps.example.com");
    assert_eq!(&raw[18..23], b"\x04blog");
    assert_eq!(raw[23], 38);
    assert_eq!(raw.len(), 1 + 17 + 5 + 39 + 39 + 8 + 64);
    assert_eq!(text, GOLDEN_TEXT);
    assert_eq!(
        NameGrant::from_text(&format!(" {GOLDEN_TEXT}\n")),
        Ok(grant())
    );
}

const GOLDEN_TEXT: &str = "pcgrant1.ARBhcHBzLmV4YW1wbGUuY29tBGJsb2cmACQIARIgiojj3XQJ8ZX9UtstPLpdcspnCb8dlBIb83SIAbQPb1wmACQIARIggTl3Dqh9F19Wo1Rmw0x-zMuNipG07jeiXfYPW4_Js5QAAAAAa3FfAFZQfN2z50YobOIQB2KlX_IphuvS7Gn2Jb-gsVzGGbcNlTuNMclNwyPpls6XrpaBHW-if-KJonMhaT0to40viAc";

#[test]
fn malformed_text_is_refused() {
    for bad in ["", "pcgrant1.", "pcgrant1.!!", "grant.AAAA", "pcgrant1.AQ"] {
        assert!(
            matches!(NameGrant::from_text(bad), Err(GrantError::Malformed(_))),
            "{bad:?}"
        );
    }
}

proptest! {
    #[test]
    fn round_trip(domain in "[a-z0-9.-]{0,60}", name in "[a-z][a-z0-9]{0,20}", seed in 1u8..250, days in 1u64..90) {
        let g = NameGrant::sign(&key(seed), &domain, &name, peer(&key(seed + 1)), NOW + days * DAY, NOW)
            .expect("signs");
        let back = NameGrant::from_text(&g.to_text().expect("encodes")).expect("decodes");
        prop_assert_eq!(&back, &g);
        prop_assert_eq!(back.verify(&domain, &name, &peer(&key(seed + 1)), NOW), Ok(()));
    }

    #[test]
    fn truncations_are_refused(cut in 0usize..175) {
        let mut raw = BytesMut::new();
        grant().encode(&mut raw).expect("encodes");
        let cut = cut.min(raw.len() - 1);
        prop_assert!(NameGrant::decode(&raw[..cut]).is_err());
    }
}
