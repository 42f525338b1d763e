//! RabbitMQ's password hashes: `base64(salt:4 ‖ H(salt ‖ utf8 password))`
//! with H one of SHA-256 (`rabbit_password_hashing_sha256`, the default),
//! SHA-512 or MD5 (accepted on import only).
//!
//! ```text
//!  stored (before base64):  | salt: 4 bytes | H(salt ‖ password): 32 / 64 / 16 bytes |
//! ```
//!
//! A password is never kept: only the salted digest. Checking compares the
//! digest in constant time (the time does not tell how many bytes matched).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

use super::{HashAlgorithm, PasswordHash};

/// Salt length, bytes (RabbitMQ's `generate_salt/0`).
pub const SALT_BYTES: usize = 4;

/// Why a stored hash was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HashError {
    /// The algorithm name is not one RabbitMQ defines.
    UnknownAlgorithm(String),
    /// The text is not base64.
    NotBase64,
    /// The decoded hash is not salt + a digest of the algorithm's length.
    WrongLength {
        /// Bytes decoded.
        got: usize,
        /// Bytes the algorithm's hash has.
        expected: usize,
    },
}

impl std::fmt::Display for HashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashError::UnknownAlgorithm(name) => write!(f, "unknown hashing algorithm '{name}'"),
            HashError::NotBase64 => f.write_str("password hash is not base64"),
            HashError::WrongLength { got, expected } => {
                write!(f, "password hash has {got} bytes, expected {expected}")
            }
        }
    }
}

impl std::error::Error for HashError {}

impl HashAlgorithm {
    /// RabbitMQ's module name for it (definitions' `hashing_algorithm`).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
            HashAlgorithm::Md5 => "rabbit_password_hashing_md5",
        }
    }

    /// The algorithm of a RabbitMQ module name.
    pub fn from_name(name: &str) -> Result<HashAlgorithm, HashError> {
        match name {
            "rabbit_password_hashing_sha256" => Ok(HashAlgorithm::Sha256),
            "rabbit_password_hashing_sha512" => Ok(HashAlgorithm::Sha512),
            "rabbit_password_hashing_md5" => Ok(HashAlgorithm::Md5),
            other => Err(HashError::UnknownAlgorithm(other.to_owned())),
        }
    }

    /// Digest length, bytes.
    pub fn digest_bytes(self) -> usize {
        match self {
            HashAlgorithm::Sha256 => 32,
            HashAlgorithm::Sha512 => 64,
            HashAlgorithm::Md5 => 16,
        }
    }

    /// salt ‖ H(salt ‖ password).
    fn salted(self, salt: [u8; SALT_BYTES], password: &[u8]) -> Vec<u8> {
        let mut out = salt.to_vec();
        match self {
            HashAlgorithm::Sha256 => {
                out.extend_from_slice(&Sha256::new().chain_update(salt).chain_update(password).finalize())
            }
            HashAlgorithm::Sha512 => {
                out.extend_from_slice(&Sha512::new().chain_update(salt).chain_update(password).finalize())
            }
            HashAlgorithm::Md5 => {
                out.extend_from_slice(&Md5::new().chain_update(salt).chain_update(password).finalize())
            }
        }
        out
    }
}

impl PasswordHash {
    /// A SHA-256 hash of `password` with a fresh random salt.
    pub fn new_sha256(password: &str) -> PasswordHash {
        let mut salt = [0u8; SALT_BYTES];
        if getrandom::getrandom(&mut salt).is_err() {
            // No entropy source: a salt from the clock and a counter is still
            // unique per call, which is all a salt must be.
            static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32))
                .unwrap_or(0);
            let count = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            salt = (nanos ^ count.rotate_left(16)).to_be_bytes();
        }
        PasswordHash::with_salt(HashAlgorithm::Sha256, salt, password.as_bytes())
    }

    /// A hash of `password` with the given salt (tests, known vectors).
    pub fn with_salt(algorithm: HashAlgorithm, salt: [u8; SALT_BYTES], password: &[u8]) -> PasswordHash {
        PasswordHash { algorithm, salted: algorithm.salted(salt, password) }
    }

    /// Reads a stored hash: base64 text and RabbitMQ's algorithm name.
    pub fn parse(base64_text: &str, algorithm_name: &str) -> Result<PasswordHash, HashError> {
        let algorithm = HashAlgorithm::from_name(algorithm_name)?;
        let salted = BASE64.decode(base64_text.trim()).map_err(|_| HashError::NotBase64)?;
        let expected = SALT_BYTES + algorithm.digest_bytes();
        if salted.len() != expected {
            return Err(HashError::WrongLength { got: salted.len(), expected });
        }
        Ok(PasswordHash { algorithm, salted })
    }

    /// The stored form, base64 (definitions' `password_hash`).
    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.salted)
    }

    /// True if `password` (the bytes the client sent) is the one hashed, in
    /// time that does not depend on where the digests differ.
    pub fn verify(&self, password: &[u8]) -> bool {
        let Some(salt) = self.salted.get(..SALT_BYTES).and_then(|s| <[u8; SALT_BYTES]>::try_from(s).ok())
        else {
            return false;
        };
        constant_time_eq(&self.algorithm.salted(salt, password), &self.salted)
    }
}

/// Equality whose time depends only on the lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmq_documented_vector() {
        // access-control docs: salt 908DC60A, password "test12".
        let hash = PasswordHash::with_salt(HashAlgorithm::Sha256, [0x90, 0x8d, 0xc6, 0x0a], b"test12");
        assert_eq!(hash.to_base64(), "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR");
        let parsed = PasswordHash::parse(
            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
            "rabbit_password_hashing_sha256",
        )
        .unwrap();
        assert_eq!(parsed, hash);
        assert!(parsed.verify(b"test12"));
        assert!(!parsed.verify(b"test13"));
        assert!(!parsed.verify(b""));
    }

    #[test]
    fn every_algorithm_round_trips() {
        for algorithm in [HashAlgorithm::Sha256, HashAlgorithm::Sha512, HashAlgorithm::Md5] {
            let hash = PasswordHash::with_salt(algorithm, [1, 2, 3, 4], "pässword".as_bytes());
            assert_eq!(hash.salted.len(), SALT_BYTES + algorithm.digest_bytes());
            let back = PasswordHash::parse(&hash.to_base64(), algorithm.name()).unwrap();
            assert!(back.verify("pässword".as_bytes()));
            assert!(!back.verify(b"password"));
        }
    }

    #[test]
    fn md5_matches_a_known_digest() {
        // md5(00000000 ‖ "guest"), computed independently (python hashlib).
        let hash = PasswordHash::with_salt(HashAlgorithm::Md5, [0; 4], b"guest");
        assert_eq!(hash.salted[4..], hex("cf2a1e52200a832d9aa600bbe295448f")[..]);
    }

    #[test]
    fn new_salts_differ_and_verify() {
        let a = PasswordHash::new_sha256("secret");
        let b = PasswordHash::new_sha256("secret");
        assert_ne!(a.salted[..4], b.salted[..4]);
        assert!(a.verify(b"secret") && b.verify(b"secret"));
        assert!(!format!("{a:?}").contains("secret"));
    }

    #[test]
    fn bad_stored_hashes_are_refused() {
        assert_eq!(PasswordHash::parse("!!", "rabbit_password_hashing_sha256"), Err(HashError::NotBase64));
        assert!(matches!(
            PasswordHash::parse("AAAA", "rabbit_password_hashing_sha256"),
            Err(HashError::WrongLength { got: 3, expected: 36 })
        ));
        assert!(matches!(PasswordHash::parse("AAAA", "bcrypt"), Err(HashError::UnknownAlgorithm(_))));
        let empty = PasswordHash { algorithm: HashAlgorithm::Sha256, salted: Vec::new() };
        assert!(!empty.verify(b""));
    }

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap()).collect()
    }
}
