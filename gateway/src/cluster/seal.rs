//! Sealing secrets kept in etcd (the ACME private key): AES-256-GCM with the 32-byte key of
//! `--cluster-secret-file` and the etcd key path as associated data, so a sealed value moved
//! to another key does not open. Layout: 12-byte random nonce ‖ ciphertext ‖ 16-byte tag.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Why a sealed value did not open.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum SealError {
    #[error("the sealed value is too short")]
    Short,
    #[error(
        "the sealed value does not open with this --cluster-secret-file (another gateway's \
         file differs, or the value was moved or altered)"
    )]
    Open,
    #[error("no random numbers for a nonce")]
    Random,
}

fn key(secret: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, secret).expect("AES-256-GCM takes a 32-byte key"),
    )
}

/// Seals `plain` for the etcd key `aad`.
pub(crate) fn seal(secret: &[u8; 32], aad: &str, plain: &[u8]) -> Result<Vec<u8>, SealError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| SealError::Random)?;
    let mut body = plain.to_vec();
    key(secret)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_bytes()),
            &mut body,
        )
        .map_err(|_| SealError::Random)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens what [`seal`] made for the etcd key `aad`.
pub(crate) fn open(secret: &[u8; 32], aad: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
    if sealed.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(SealError::Short);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Short)?;
    let mut body = body.to_vec();
    let plain = key(secret)
        .open_in_place(nonce, Aad::from(aad.as_bytes()), &mut body)
        .map_err(|_| SealError::Open)?;
    Ok(plain.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_path() {
        let a = [7u8; 32];
        let b = [8u8; 32];
        let sealed = seal(&a, "/p/acme/certs/d", b"KEY").expect("seal");
        assert_ne!(&sealed[NONCE_LEN..NONCE_LEN + 3], b"KEY", "not in clear");
        let mut flipped = sealed.clone();
        flipped[NONCE_LEN] ^= 1;
        type Case<'a> = (&'a [u8; 32], &'a str, &'a [u8], Result<Vec<u8>, SealError>);
        let cases: Vec<Case<'_>> = vec![
            (&a, "/p/acme/certs/d", &sealed, Ok(b"KEY".to_vec())),
            (&b, "/p/acme/certs/d", &sealed, Err(SealError::Open)),
            (&a, "/p/acme/certs/e", &sealed, Err(SealError::Open)),
            (&a, "/p/acme/certs/d", &flipped, Err(SealError::Open)),
            (&a, "/p/acme/certs/d", &sealed[..20], Err(SealError::Short)),
        ];
        for (secret, aad, input, want) in cases {
            assert_eq!(open(secret, aad, input), want, "{aad}");
        }
        assert_ne!(
            seal(&a, "x", b"k"),
            seal(&a, "x", b"k"),
            "fresh nonce each time"
        );
    }
}
