//! Route names are DNS labels: `[a-z0-9-]{1,63}`, not starting or ending with `-`. They become
//! the first label of the public host name, so anything else could never be routed.

/// Why a route name is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    /// The name's length in bytes (the limit counts bytes, like DNS).
    #[error("name is {0} bytes long, at most 63 are allowed")]
    TooLong(usize),
    #[error("name contains `{0}`; only lowercase letters, digits and `-` are allowed")]
    BadChar(char),
    #[error("name starts or ends with `-`")]
    Hyphen,
}

/// Checks that `name` is a valid route name.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > 63 {
        return Err(NameError::TooLong(name.len()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::BadChar(c));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err(NameError::Hyphen);
    }
    Ok(())
}
