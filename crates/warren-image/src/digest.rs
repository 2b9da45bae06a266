//! SHA-256 digests: validation of `sha256:<hex>` strings and hashing readers/writers.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

use crate::error::ImageError;

/// Returns the 64-character hex part of a `sha256:<hex>` digest, refusing anything else.
///
/// The hex part is used to build paths, so this is also what keeps digests from the outside
/// (index.json, manifests) from naming files outside the store.
pub(crate) fn sha256_hex(digest: &str) -> Result<&str, ImageError> {
    match digest.strip_prefix("sha256:") {
        Some(hex)
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(ImageError::BadDigest {
            digest: digest.to_string(),
        }),
    }
}

/// `sha256:<hex>` of a byte slice.
pub(crate) fn digest_bytes(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A reader that hashes and counts everything read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Reads the rest of the stream, then returns `(sha256:<hex>, bytes read)`.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        ))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A writer that hashes and counts everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Returns the inner writer and `(sha256:<hex>, bytes written)`.
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.count,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_sha256_digests_are_accepted() {
        let good = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(sha256_hex(&good).unwrap(), "ab".repeat(32));
        for bad in [
            "sha256:../../etc/passwd".to_string(),
            format!("sha512:{}", "ab".repeat(32)),
            format!("sha256:{}", "AB".repeat(32)),
            format!("sha256:{}", "ab".repeat(31)),
            "ab".repeat(32),
        ] {
            assert!(sha256_hex(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashing_reader_matches_known_digest() {
        let r = HashingReader::new(&b"hello"[..]);
        let (d, n) = r.finish().unwrap();
        assert_eq!(
            d,
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert_eq!(n, 5);
        assert_eq!(d, digest_bytes(b"hello"));
    }
}
