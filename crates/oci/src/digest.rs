//! Content digests: parsed once, validated, and typed so blob digests and diff IDs cannot be mixed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::io::Write;
use std::str::FromStr;

/// A digest string failed validation.
#[derive(Debug, thiserror::Error)]
#[error("invalid digest `{value}`: {reason}")]
pub struct DigestError {
    /// The rejected input.
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// A validated `sha256:<64 lowercase hex>` content digest of a blob (manifest, config, compressed layer).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Computes the sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Self {
        Digest {
            hex: sha256_hex(data),
        }
    }

    /// Builds a digest from 64 lowercase hex characters.
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        if hex.len() != 64 {
            return Err(DigestError {
                value: hex.to_string(),
                reason: "expected 64 hex characters",
            });
        }
        if !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError {
                value: hex.to_string(),
                reason: "expected lowercase hex",
            });
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }

    /// The hex part (without `sha256:`).
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The algorithm name, always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some(("sha256", hex)) => Digest::from_hex(hex).map_err(|e| DigestError {
                value: s.to_string(),
                reason: e.reason,
            }),
            Some(_) => Err(DigestError {
                value: s.to_string(),
                reason: "only sha256 is supported",
            }),
            None => Err(DigestError {
                value: s.to_string(),
                reason: "missing algorithm prefix",
            }),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The digest of an uncompressed layer tar (an entry of `rootfs.diff_ids`), distinct from a blob digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DiffId(pub Digest);

impl fmt::Display for DiffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for DiffId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "diff:{}", self.0)
    }
}

impl FromStr for DiffId {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(DiffId)
    }
}

/// Returns the lowercase hex sha256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A writer that hashes everything written through it and counts the bytes, forwarding to `inner`.
pub struct Sha256Writer<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Sha256Writer<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Sha256Writer {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Returns the digest of all bytes written, the byte count and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        let hex = hex::encode(self.hasher.finalize());
        (Digest { hex }, self.len, self.inner)
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes everything read through it and counts the bytes (e.g. a layer's diff
/// ID while it is unpacked or stored).
pub struct Sha256Reader<R> {
    inner: R,
    hasher: Sha256,
    len: u64,
}

impl<R: std::io::Read> Sha256Reader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Sha256Reader {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Returns the digest of all bytes read and the byte count.
    pub fn finish(self) -> (Digest, u64) {
        let hex = hex::encode(self.hasher.finalize());
        (Digest { hex }, self.len)
    }
}

impl<R: std::io::Read> std::io::Read for Sha256Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_and_the_writer_hash_alike() {
        use std::io::{Read, Write};
        let data = b"hello layer";
        let mut reader = Sha256Reader::new(&data[..]);
        let mut sink = Vec::new();
        reader.read_to_end(&mut sink).unwrap();
        let mut writer = Sha256Writer::new(Vec::new());
        writer.write_all(data).unwrap();
        let (read_digest, read_len) = reader.finish();
        let (written_digest, written_len, _) = writer.finish();
        assert_eq!((read_digest, read_len), (written_digest, written_len));
        assert_eq!(read_len, data.len() as u64);
    }

    #[test]
    fn parses_and_rejects() {
        let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
            .parse()
            .unwrap();
        assert_eq!(d, Digest::sha256_of(b""));
        assert!(
            "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
                .parse::<Digest>()
                .is_err()
        );
        assert!("md5:abc".parse::<Digest>().is_err());
        assert!("e3b0".parse::<Digest>().is_err());
    }

    #[test]
    fn writer_hashes() {
        let mut w = Sha256Writer::new(Vec::new());
        w.write_all(b"abc").unwrap();
        let (d, n, v) = w.finish();
        assert_eq!(n, 3);
        assert_eq!(v, b"abc");
        assert_eq!(d, Digest::sha256_of(b"abc"));
    }
}
