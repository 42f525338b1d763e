//! Password hashes in RabbitMQ's format: base64(salt:4 ‖ H(salt ‖ password)),
//! with `hashing_algorithm` naming H.
//!
//! The definitions lane needs only making a SHA-256 hash (the default user
//! on first start) and the text form of the definitions file; checking a
//! password at login is the enforcement lane's.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use super::{HashAlgorithm, PasswordHash};

/// Bytes of salt before the digest.
pub const SALT_BYTES: usize = 4;

impl HashAlgorithm {
    /// RabbitMQ's name for it (`hashing_algorithm` in definitions).
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "rabbit_password_hashing_sha256",
            HashAlgorithm::Sha512 => "rabbit_password_hashing_sha512",
            HashAlgorithm::Md5 => "rabbit_password_hashing_md5",
        }
    }

    /// The algorithm RabbitMQ names `name`.
    pub fn parse(name: &str) -> Option<HashAlgorithm> {
        [HashAlgorithm::Sha256, HashAlgorithm::Sha512, HashAlgorithm::Md5]
            .into_iter()
            .find(|a| a.name() == name)
    }
}

impl PasswordHash {
    /// A SHA-256 hash of `password` with a fresh random salt.
    pub fn new_sha256(password: &[u8]) -> PasswordHash {
        let mut salt = [0u8; SALT_BYTES];
        if getrandom::getrandom(&mut salt).is_err() {
            // No entropy source: a salt from the clock still differs per hash.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            salt = nanos.to_le_bytes();
        }
        PasswordHash::sha256_with_salt(salt, password)
    }

    /// A SHA-256 hash of `password` with `salt` (the documented test vector
    /// uses a fixed one).
    pub fn sha256_with_salt(salt: [u8; SALT_BYTES], password: &[u8]) -> PasswordHash {
        let mut salted = salt.to_vec();
        let mut digest = Sha256::new();
        digest.update(salt);
        digest.update(password);
        salted.extend_from_slice(&digest.finalize());
        PasswordHash { algorithm: HashAlgorithm::Sha256, salted }
    }

    /// Reads RabbitMQ's base64 text (`password_hash`).
    pub fn parse(algorithm: HashAlgorithm, base64_text: &str) -> Option<PasswordHash> {
        let salted = base64::engine::general_purpose::STANDARD.decode(base64_text.trim()).ok()?;
        (salted.len() > SALT_BYTES).then_some(PasswordHash { algorithm, salted })
    }

    /// RabbitMQ's base64 text (`password_hash`).
    pub fn format(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(&self.salted)
    }

    /// Whether `password` is the one hashed (for SHA-256 and SHA-512; an MD5
    /// hash is compared the same way).
    pub fn verifies(&self, password: &[u8]) -> bool {
        let Some((salt, expected)) = self.salted.split_at_checked(SALT_BYTES) else {
            return false;
        };
        let digest: Vec<u8> = match self.algorithm {
            HashAlgorithm::Sha256 => {
                Sha256::new().chain_update(salt).chain_update(password).finalize().to_vec()
            }
            HashAlgorithm::Sha512 => {
                Sha512::new().chain_update(salt).chain_update(password).finalize().to_vec()
            }
            HashAlgorithm::Md5 => return false,
        };
        digest.len() == expected.len()
            && digest.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// How a hash is written in the definitions log: RabbitMQ's algorithm name
/// and base64 text.
#[derive(Serialize, Deserialize)]
struct StoredHash {
    algorithm: String,
    hash: String,
}

impl Serialize for PasswordHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        StoredHash { algorithm: self.algorithm.name().to_owned(), hash: self.format() }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for PasswordHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let stored = StoredHash::deserialize(deserializer)?;
        let algorithm = HashAlgorithm::parse(&stored.algorithm).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown hashing algorithm '{}'", stored.algorithm))
        })?;
        PasswordHash::parse(algorithm, &stored.hash)
            .ok_or_else(|| serde::de::Error::custom("malformed password hash"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmqs_documented_test_vector() {
        let hash = PasswordHash::sha256_with_salt([0x90, 0x8D, 0xC6, 0x0A], b"test12");
        assert_eq!(hash.format(), "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR");
        let parsed = PasswordHash::parse(HashAlgorithm::Sha256, &hash.format()).expect("parse");
        assert!(parsed.verifies(b"test12"));
        assert!(!parsed.verifies(b"test13"));
    }
}
