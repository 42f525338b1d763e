//! Server-generated names (`amq.gen-…` queues, `amq.ctag-…` consumer tags):
//! 16 random bytes in URL-safe base64, like RabbitMQ's.

use crate::amqp::field::ShortStr;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// A per-shard random source (xorshift seeded from the OS).
#[derive(Debug)]
pub struct NameSource {
    state: u64,
}

impl NameSource {
    /// Seeds from the OS.
    pub fn new() -> NameSource {
        let mut seed = [0u8; 8];
        if getrandom::getrandom(&mut seed).is_err() {
            seed = 0x9E37_79B9_7F4A_7C15u64.to_le_bytes();
        }
        NameSource { state: u64::from_le_bytes(seed) | 1 }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// `prefix` followed by 22 base64 characters (128 bits).
    pub fn generate(&mut self, prefix: &str) -> ShortStr {
        let mut name = String::with_capacity(prefix.len() + 22);
        name.push_str(prefix);
        let mut bits = [self.next_u64(), self.next_u64()];
        for i in 0..22 {
            let word = &mut bits[i / 11];
            name.push(char::from(ALPHABET[(*word & 63) as usize]));
            *word >>= 6;
        }
        ShortStr::copy_from_str(&name)
    }
}

impl Default for NameSource {
    fn default() -> Self {
        NameSource::new()
    }
}
