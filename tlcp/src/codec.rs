//! Bounds-checked reading and length-prefixed writing of TLCP wire structures.
//!
//! Every read returns [`TlcpError::Decode`] naming the structure instead of panicking, whatever
//! the input.

use crate::error::TlcpError;

/// A cursor over one structure's bytes.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`, which holds a `what` (named in errors).
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, what }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], TlcpError> {
        if n > self.buf.len() {
            return Err(TlcpError::Decode(self.what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, TlcpError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, TlcpError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u24(&mut self) -> Result<usize, TlcpError> {
        let b = self.take(3)?;
        Ok(usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }

    /// An `opaque<0..2^8-1>`.
    pub(crate) fn vec8(&mut self) -> Result<&'a [u8], TlcpError> {
        let n = self.u8()?;
        self.take(n.into())
    }

    /// An `opaque<0..2^16-1>`.
    pub(crate) fn vec16(&mut self) -> Result<&'a [u8], TlcpError> {
        let n = self.u16()?;
        self.take(n.into())
    }

    /// An `opaque<0..2^24-1>`.
    pub(crate) fn vec24(&mut self) -> Result<&'a [u8], TlcpError> {
        let n = self.u24()?;
        self.take(n)
    }

    /// Bytes not read yet.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails unless every byte was read (trailing garbage is a decode error).
    pub(crate) fn finish(self) -> Result<(), TlcpError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(TlcpError::Decode(self.what))
        }
    }
}

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u24(out: &mut Vec<u8>, v: usize) -> Result<(), TlcpError> {
    if v >= 1 << 24 {
        return Err(TlcpError::Config(format!(
            "{v} bytes do not fit a 24-bit length"
        )));
    }
    out.extend_from_slice(&v.to_be_bytes()[size_of::<usize>() - 3..]);
    Ok(())
}

pub(crate) fn put_vec8(out: &mut Vec<u8>, data: &[u8]) -> Result<(), TlcpError> {
    let n = u8::try_from(data.len()).map_err(|_| {
        TlcpError::Config(format!("{} bytes do not fit an 8-bit length", data.len()))
    })?;
    out.push(n);
    out.extend_from_slice(data);
    Ok(())
}

pub(crate) fn put_vec16(out: &mut Vec<u8>, data: &[u8]) -> Result<(), TlcpError> {
    let n = u16::try_from(data.len()).map_err(|_| {
        TlcpError::Config(format!("{} bytes do not fit a 16-bit length", data.len()))
    })?;
    put_u16(out, n);
    out.extend_from_slice(data);
    Ok(())
}

pub(crate) fn put_vec24(out: &mut Vec<u8>, data: &[u8]) -> Result<(), TlcpError> {
    put_u24(out, data.len())?;
    out.extend_from_slice(data);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_are_bounds_checked() {
        let mut r = Reader::new(&[0, 3, 1, 2], "test");
        assert!(matches!(r.vec16(), Err(TlcpError::Decode("test"))));
        let mut r = Reader::new(&[0, 0, 2, 7, 8, 9], "test");
        assert_eq!(r.vec24().unwrap(), &[7, 8]);
        assert!(!r.is_empty());
        assert!(matches!(r.finish(), Err(TlcpError::Decode("test"))));
    }

    #[test]
    fn writes_prefix_lengths() {
        let mut out = Vec::new();
        put_vec24(&mut out, &[1, 2]).unwrap();
        put_vec8(&mut out, &[3]).unwrap();
        assert_eq!(out, [0, 0, 2, 1, 2, 1, 3]);
        let r = put_vec8(&mut out, &[0; 256]);
        assert!(
            matches!(&r, Err(TlcpError::Config(m)) if m == "256 bytes do not fit an 8-bit length"),
            "{r:?}"
        );
    }
}
