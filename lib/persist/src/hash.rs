//! A stable hash for ids derived from text (client tokens, request ids).
//!
//! FNV-1a, 64 bits: the same on every build and platform, unlike std's
//! hasher, which is randomly seeded. Not for anything secret.

/// FNV-1a of `bytes`, its offset basis mixed with `salt` (0 for plain FNV-1a).
pub fn fnv1a64(salt: u64, bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::fnv1a64;

    #[test]
    fn matches_the_reference_values() {
        assert_eq!(fnv1a64(0, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(0, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv1a64(1, b"a"), fnv1a64(2, b"a"));
    }
}
