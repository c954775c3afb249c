//! Primitive field readers and writers shared by the codecs. A [`Reader`] never reads past
//! the body it was given and never allocates more than the bytes actually present.

use bytes::{BufMut, BytesMut};

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("unknown message type 0x{0:02x}")]
    UnknownType(u8),
    #[error("unsupported stream header version {0}")]
    UnknownVersion(u8),
    #[error("unknown stream kind {0}")]
    UnknownKind(u8),
    #[error("unknown address family {0}")]
    UnknownFamily(u8),
    #[error("frame ends inside field `{0}`")]
    Truncated(&'static str),
    #[error("{0} trailing bytes after the last field")]
    Trailing(usize),
    #[error("field `{0}` is not valid UTF-8")]
    Utf8(&'static str),
    #[error("invalid route name: {0}")]
    Name(#[from] crate::name::NameError),
    #[error("field `{0}` is not a valid peer id")]
    BadPeerId(&'static str),
    #[error("field `{0}` is empty")]
    Empty(&'static str),
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("field `{field}` is {len} bytes, at most {max} fit")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("encoded frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("invalid route name: {0}")]
    Name(#[from] crate::name::NameError),
    #[error("field `{0}` must not be empty")]
    Empty(&'static str),
}

/// Cursor over one frame body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(field));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.bytes(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.bytes(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A string with a u16 length prefix.
    pub(crate) fn str16(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u16(field)?);
        self.utf8(len, field)
    }

    /// A string with a u8 length prefix.
    pub(crate) fn str8(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = usize::from(self.u8(field)?);
        self.utf8(len, field)
    }

    fn utf8(&mut self, len: usize, field: &'static str) -> Result<String, DecodeError> {
        let raw = self.bytes(len, field)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8(field))
    }

    /// A list of u16-prefixed strings with a u16 count. The count is not trusted for
    /// allocation: each item must actually be present.
    pub(crate) fn str_list(&mut self, field: &'static str) -> Result<Vec<String>, DecodeError> {
        let count = self.u16(field)?;
        let mut out = Vec::new();
        for _ in 0..count {
            out.push(self.str16(field)?);
        }
        Ok(out)
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.buf.len() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

pub(crate) fn put_str16(
    dst: &mut BytesMut,
    s: &str,
    field: &'static str,
) -> Result<(), EncodeError> {
    let len = u16::try_from(s.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: s.len(),
        max: usize::from(u16::MAX),
    })?;
    dst.put_u16(len);
    dst.put_slice(s.as_bytes());
    Ok(())
}

pub(crate) fn put_str8(
    dst: &mut BytesMut,
    s: &str,
    field: &'static str,
) -> Result<(), EncodeError> {
    let len = u8::try_from(s.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: s.len(),
        max: usize::from(u8::MAX),
    })?;
    dst.put_u8(len);
    dst.put_slice(s.as_bytes());
    Ok(())
}

pub(crate) fn put_str_list(
    dst: &mut BytesMut,
    items: &[String],
    field: &'static str,
) -> Result<(), EncodeError> {
    let count = u16::try_from(items.len()).map_err(|_| EncodeError::FieldTooLong {
        field,
        len: items.len(),
        max: usize::from(u16::MAX),
    })?;
    dst.put_u16(count);
    for item in items {
        put_str16(dst, item, field)?;
    }
    Ok(())
}
