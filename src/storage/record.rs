//! Record framing shared by every file Lepus writes: an 8-byte header (payload
//! length, CRC-32C of the payload, both little-endian) and the payload.
//!
//! The checksum is computed when the record is built, checked again just
//! before the bytes are handed to the kernel, and checked after every read.
//! A header of zeros ends the data in a preallocated file: no valid record has
//! an empty payload.

/// Bytes before a record's payload.
pub const RECORD_HEADER_BYTES: usize = 8;

/// Largest payload a record may carry: a 512 MiB body (the configurable
/// maximum) plus its routing data and content header.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 513 * 1024 * 1024;

/// The CRC-32C (Castagnoli) of `bytes`; hardware-accelerated where the CPU has it.
#[inline]
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Appends one record to `buf`: `write` puts the payload after the header,
/// then the header is filled in. Returns the record's offset in `buf`.
pub fn append(buf: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEADER_BYTES]);
    write(buf);
    let payload = &buf[start + RECORD_HEADER_BYTES..];
    assert!(!payload.is_empty() && payload.len() <= RECORD_PAYLOAD_BYTES_MAX, "record payload size");
    let len = payload.len() as u32;
    let crc = checksum(payload);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    start
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, intact record: its payload and its length with the header.
    Record(&'a [u8], usize),
    /// A header of zeros: the end of the data (or of the buffer).
    End,
    /// The buffer ends inside the record, which needs `needed` bytes in all.
    Incomplete(usize),
    /// The header or the checksum is wrong.
    Corrupt(Corruption),
}

/// How a record is damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The length is beyond [`RECORD_PAYLOAD_BYTES_MAX`] (or zero with a
    /// non-zero checksum).
    BadLength(u32),
    /// The payload does not match its checksum.
    BadChecksum,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::BadLength(len) => write!(f, "impossible record length {len}"),
            Corruption::BadChecksum => f.write_str("checksum mismatch"),
        }
    }
}

/// Reads the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Decoded<'_> {
    let Some(header) = buf.get(..RECORD_HEADER_BYTES) else {
        return if buf.iter().all(|&b| b == 0) {
            Decoded::End
        } else {
            Decoded::Incomplete(RECORD_HEADER_BYTES)
        };
    };
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 {
        return if crc == 0 { Decoded::End } else { Decoded::Corrupt(Corruption::BadLength(0)) };
    }
    if len as usize > RECORD_PAYLOAD_BYTES_MAX {
        return Decoded::Corrupt(Corruption::BadLength(len));
    }
    let total = RECORD_HEADER_BYTES + len as usize;
    let Some(payload) = buf.get(RECORD_HEADER_BYTES..total) else {
        return Decoded::Incomplete(total);
    };
    if checksum(payload) != crc {
        return Decoded::Corrupt(Corruption::BadChecksum);
    }
    Decoded::Record(payload, total)
}

/// The payload the header at the start of `buf` frames, if its length is
/// possible and `buf` holds all of it; its checksum is not checked (a
/// search for the next intact record tries this at every byte first).
pub fn framed_payload(buf: &[u8]) -> Option<&[u8]> {
    let header = buf.get(..RECORD_HEADER_BYTES)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len == 0 || len > RECORD_PAYLOAD_BYTES_MAX {
        return None;
    }
    buf.get(RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + len)
}

/// Checks every record in `buf` (built by [`append`]) against its checksum:
/// the check before the write. Returns the offset of the first bad record.
pub fn verify_all(buf: &[u8]) -> Result<(), usize> {
    let mut at = 0;
    while at < buf.len() {
        match decode(&buf[at..]) {
            Decoded::Record(_, total) => at += total,
            _ => return Err(at),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_flipped_bits_are_caught() {
        let mut buf = Vec::new();
        append(&mut buf, |b| b.extend_from_slice(b"hello"));
        append(&mut buf, |b| b.extend_from_slice(&[7; 300]));
        assert_eq!(verify_all(&buf), Ok(()));
        let Decoded::Record(first, total) = decode(&buf) else { panic!("first record") };
        assert_eq!(first, b"hello");
        assert_eq!(decode(&buf[total..]), Decoded::Record(&[7; 300][..], 308));
        for bit in 0..(buf.len() * 8) {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(verify_all(&bad).is_err(), "flipping bit {bit} went unnoticed");
        }
    }

    #[test]
    fn zeros_end_the_data_and_short_buffers_are_incomplete() {
        assert_eq!(decode(&[0; 16]), Decoded::End);
        assert_eq!(decode(&[]), Decoded::End);
        let mut buf = Vec::new();
        append(&mut buf, |b| b.extend_from_slice(b"abc"));
        assert_eq!(decode(&buf[..5]), Decoded::Incomplete(8));
        assert_eq!(decode(&buf[..9]), Decoded::Incomplete(11));
        let mut huge = [0u8; 8];
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), Decoded::Corrupt(Corruption::BadLength(u32::MAX)));
    }
}
