//! A bounds-checked reader for the byte formats in `docs/PROTOCOL.md`.
//!
//! Every read checks the remaining length first and returns [`Error::Truncated`] instead of
//! panicking; nothing is allocated from a length field before that length is checked. Other mesh
//! crates use the same reader for their own formats.

use crate::Error;

/// Reads fixed-layout fields from a byte slice, front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, positioned at its start.
    pub const fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub const fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Bytes read so far.
    pub const fn position(&self) -> usize {
        self.pos
    }

    /// The next `n` bytes.
    ///
    /// # Errors
    /// [`Error::Truncated`] if fewer than `n` bytes remain.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Error> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(Error::Truncated {
                needed: n,
                remaining,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// The next `N` bytes as an array.
    ///
    /// # Errors
    /// [`Error::Truncated`] if fewer than `N` bytes remain.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    /// One byte.
    ///
    /// # Errors
    /// [`Error::Truncated`] at the end of the input.
    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    /// A little-endian `u16`.
    ///
    /// # Errors
    /// [`Error::Truncated`] if fewer than 2 bytes remain.
    pub fn u16_le(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A little-endian `u32`.
    ///
    /// # Errors
    /// [`Error::Truncated`] if fewer than 4 bytes remain.
    pub fn u32_le(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A little-endian `u64`.
    ///
    /// # Errors
    /// [`Error::Truncated`] if fewer than 8 bytes remain.
    pub fn u64_le(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A `u32` little-endian length followed by that many bytes, refused above `max` before the
    /// bytes are touched.
    ///
    /// # Errors
    /// [`Error::TooLarge`] above `max`, [`Error::Truncated`] if the bytes are not all there.
    pub fn len_prefixed(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], Error> {
        let len = usize::try_from(self.u32_le()?).unwrap_or(usize::MAX);
        if len > max {
            return Err(Error::TooLarge { what, len, max });
        }
        self.bytes(len)
    }

    /// Succeeds only if every byte was read.
    ///
    /// # Errors
    /// [`Error::TrailingBytes`] if input is left over.
    pub fn finish(self) -> Result<(), Error> {
        match self.remaining() {
            0 => Ok(()),
            trailing => Err(Error::TrailingBytes { trailing }),
        }
    }
}

/// Appends `bytes` with a `u32` little-endian length prefix.
///
/// # Errors
/// [`Error::TooLarge`] if `bytes` is longer than `u32::MAX`.
pub fn put_len_prefixed(out: &mut Vec<u8>, what: &'static str, bytes: &[u8]) -> Result<(), Error> {
    let len = u32::try_from(bytes.len()).map_err(|_| Error::TooLarge {
        what,
        len: bytes.len(),
        max: u32::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_in_order_and_detects_truncation() {
        let data = [1u8, 2, 0, 3, 0, 0, 0, 9];
        let mut r = Reader::new(&data);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16_le().unwrap(), 2);
        assert_eq!(r.u32_le().unwrap(), 3);
        assert_eq!(r.position(), 7);
        assert_eq!(
            r.u16_le(),
            Err(Error::Truncated {
                needed: 2,
                remaining: 1
            })
        );
        // A failed read consumes nothing.
        assert_eq!(r.remaining(), 1);
        assert_eq!(
            r.clone().finish(),
            Err(Error::TrailingBytes { trailing: 1 })
        );
        assert_eq!(r.u8().unwrap(), 9);
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn length_prefix_is_checked_before_reading() {
        let mut buf = Vec::new();
        put_len_prefixed(&mut buf, "field", b"hello").unwrap();
        assert_eq!(
            Reader::new(&buf).len_prefixed("field", 5).unwrap(),
            b"hello"
        );
        assert_eq!(
            Reader::new(&buf).len_prefixed("field", 4),
            Err(Error::TooLarge {
                what: "field",
                len: 5,
                max: 4
            })
        );
        // A huge declared length with no bytes behind it is refused, not allocated.
        let huge = u32::MAX.to_le_bytes();
        assert!(matches!(
            Reader::new(&huge).len_prefixed("field", usize::MAX),
            Err(Error::Truncated { .. })
        ));
    }
}
