//! Tokens (the key material) and key ids.
//!
//! A token is `<prefix>_<random><checksum>`:
//!
//! * `prefix` matches `^[a-z][a-z0-9]{0,15}$`, so secret scanners can find
//!   tokens by prefix;
//! * `random` is [`random_len`]`(entropy_bits)` characters drawn uniformly
//!   from [`BASE62_ALPHABET`] using a cryptographically secure RNG (the OS
//!   CSPRNG in production);
//! * `checksum` is the CRC32 of the UTF-8 bytes of `<prefix>_<random>`,
//!   written as exactly [`CHECKSUM_LEN`] base62 digits (most significant
//!   first, left-padded with `0`), so typos are detectable offline by
//!   [`verify_checksum`] without any lookup.
//!
//! Key ids (the seeds' ResourceId) are [`KEY_ID_LEN`] characters from
//! `[A-Z0-9]`, drawn uniformly from the same kind of RNG.

use std::convert::Infallible;
use std::fmt;

use rand::rngs::OsRng;
use rand::{CryptoRng, TryRngCore};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Smallest accepted `format.entropyBits`.
pub const MIN_ENTROPY_BITS: u16 = 128;
/// Largest accepted `format.entropyBits`.
pub const MAX_ENTROPY_BITS: u16 = 512;
/// `format.entropyBits` when the spec does not set it.
pub const DEFAULT_ENTROPY_BITS: u16 = 256;

/// Longest accepted token prefix (the pattern allows 1 + 15 characters).
pub const MAX_PREFIX_LEN: usize = 16;

/// Base62 digits in value order: `0-9`, then `A-Z`, then `a-z`.
///
/// This is also ASCII order, so fixed-width encodings sort like the numbers
/// they encode. The random part uses the same alphabet; for it only the set
/// matters, not the order.
pub const BASE62_ALPHABET: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Number of base62 characters of the CRC32 checksum (62^6 > 2^32).
pub const CHECKSUM_LEN: usize = 6;

/// Length of a key id.
pub const KEY_ID_LEN: usize = 20;

/// Alphabet of key ids: `0-9`, then `A-Z`.
const KEY_ID_ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// Why a token could not be minted or failed the offline check.
///
/// No variant carries any part of the token, so errors are safe to log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// There is no `_` between prefix and body.
    #[error("token has no '_' between prefix and body")]
    MissingSeparator,
    /// The prefix does not match `^[a-z][a-z0-9]{0,15}$`.
    #[error("token prefix must match ^[a-z][a-z0-9]{{0,15}}$")]
    InvalidPrefix,
    /// The body contains a character outside `0-9A-Za-z`.
    #[error("token has a character that is not base62 (0-9A-Za-z) at position {position}")]
    InvalidCharacter {
        /// Zero-based character index in the whole token.
        position: usize,
    },
    /// The body is shorter or longer than any minted body can be.
    #[error("token body has {len} characters; expected {min} to {max}")]
    BodyLength {
        /// Characters in the body (random part plus checksum).
        len: usize,
        /// Body length at [`MIN_ENTROPY_BITS`].
        min: usize,
        /// Body length at [`MAX_ENTROPY_BITS`].
        max: usize,
    },
    /// The structure is fine but the checksum does not match: a typo or a
    /// truncated/altered token.
    #[error("token checksum does not match (typo or altered token)")]
    ChecksumMismatch,
    /// `entropy_bits` outside `MIN_ENTROPY_BITS..=MAX_ENTROPY_BITS`.
    #[error("entropy of {bits} bits is out of range {MIN_ENTROPY_BITS}..={MAX_ENTROPY_BITS}")]
    EntropyOutOfRange {
        /// The rejected value.
        bits: u16,
    },
    /// The OS random number generator failed.
    #[error("the OS random number generator failed: {0}")]
    RandomSource(rand::rand_core::OsError),
}

/// A minted token: the secret itself.
///
/// The buffer is wiped on drop. It has no `Display` or `Serialize` and its
/// `Debug` is redacted, so it cannot end up in a log line or status field by
/// accident; [`Token::expose`] is the one deliberate way to read it.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// The token text, for writing into the Secret and nowhere else.
    pub fn expose(&self) -> &str {
        self.0.as_str()
    }

    /// Lowercase hex SHA-256 of the token (safe to publish).
    pub fn sha256_hex(&self) -> String {
        sha256_hex(self.expose())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Number of random base62 characters needed for `entropy_bits` bits:
/// `ceil(entropy_bits / log2(62))`, i.e. the least `n` with `62^n >= 2^bits`.
///
/// 128 bits -> 22, 256 -> 43, 512 -> 86.
pub fn random_len(entropy_bits: u16) -> usize {
    // log2(62) is irrational, so the quotient is never an exact integer and
    // f64 is precise enough for u16 inputs (checked exactly in the tests).
    let n = (f64::from(entropy_bits) / 62f64.log2()).ceil();
    n as usize
}

/// Shortest token body (random part plus checksum) that can be minted.
pub fn min_body_len() -> usize {
    random_len(MIN_ENTROPY_BITS) + CHECKSUM_LEN
}

/// Longest token body (random part plus checksum) that can be minted.
pub fn max_body_len() -> usize {
    random_len(MAX_ENTROPY_BITS) + CHECKSUM_LEN
}

/// Whether `prefix` matches `^[a-z][a-z0-9]{0,15}$`.
pub fn is_valid_prefix(prefix: &str) -> bool {
    let bytes = prefix.as_bytes();
    match bytes.split_first() {
        Some((first, rest)) => {
            first.is_ascii_lowercase()
                && rest.len() < MAX_PREFIX_LEN
                && rest
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        }
        None => false,
    }
}

/// Mints a token from the OS CSPRNG, checking its inputs.
///
/// This is the variant the controller should use: every failure, including
/// the (practically impossible) failure of the OS random source, is an
/// error rather than a panic.
///
/// # Errors
///
/// [`TokenError::InvalidPrefix`], [`TokenError::EntropyOutOfRange`] or
/// [`TokenError::RandomSource`].
pub fn try_mint_token(prefix: &str, entropy_bits: u16) -> Result<Token, TokenError> {
    if !is_valid_prefix(prefix) {
        return Err(TokenError::InvalidPrefix);
    }
    if !(MIN_ENTROPY_BITS..=MAX_ENTROPY_BITS).contains(&entropy_bits) {
        return Err(TokenError::EntropyOutOfRange { bits: entropy_bits });
    }
    mint(prefix, entropy_bits, &mut |buf| OsRng.try_fill_bytes(buf))
        .map_err(TokenError::RandomSource)
}

/// Mints a token from the given cryptographically secure RNG (for tests and
/// reproducible fixtures). `entropy_bits` is clamped into
/// `MIN_ENTROPY_BITS..=MAX_ENTROPY_BITS`; [`try_mint_token`] checks both instead.
pub fn mint_token_with<R: CryptoRng + ?Sized>(
    rng: &mut R,
    prefix: &str,
    entropy_bits: u16,
) -> Token {
    let bits = entropy_bits.clamp(MIN_ENTROPY_BITS, MAX_ENTROPY_BITS);
    infallible(mint(prefix, bits, &mut |buf: &mut [u8]| {
        rng.fill_bytes(buf);
        Ok(())
    }))
}

/// Offline check of a token's structure and checksum (no lookup needed).
///
/// # Errors
///
/// The first problem found, in order: [`TokenError::MissingSeparator`],
/// [`TokenError::InvalidPrefix`], [`TokenError::InvalidCharacter`],
/// [`TokenError::BodyLength`], [`TokenError::ChecksumMismatch`].
pub fn verify_checksum(token: &str) -> Result<(), TokenError> {
    let (prefix, body) = token.split_once('_').ok_or(TokenError::MissingSeparator)?;
    if !is_valid_prefix(prefix) {
        return Err(TokenError::InvalidPrefix);
    }
    if let Some(i) = body.chars().position(|c| !c.is_ascii_alphanumeric()) {
        // The prefix is ASCII, so its byte length is its character count.
        return Err(TokenError::InvalidCharacter {
            position: prefix.len() + 1 + i,
        });
    }
    let (min, max) = (min_body_len(), max_body_len());
    if !(min..=max).contains(&body.len()) {
        return Err(TokenError::BodyLength {
            len: body.len(),
            min,
            max,
        });
    }
    // All ASCII from here on, so byte offsets are character boundaries.
    let (checked, checksum) = token.split_at(token.len() - CHECKSUM_LEN);
    if checksum.as_bytes() == encode_checksum(crc32fast::hash(checked.as_bytes())) {
        Ok(())
    } else {
        Err(TokenError::ChecksumMismatch)
    }
}

/// Lowercase hex SHA-256 of `token` (64 characters), for the
/// `keymint.dev/key-sha256` annotation and `status.keySHA256`.
pub fn sha256_hex(token: &str) -> String {
    sha256_bytes_hex(token.as_bytes())
}

/// Lower-case hex SHA-256 of any bytes (a Secret's data value).
pub fn sha256_bytes_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hexadecimal.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// A new key id from the OS CSPRNG.
///
/// # Errors
///
/// [`TokenError::RandomSource`] if the OS random source fails.
pub fn try_new_key_id() -> Result<String, TokenError> {
    let mut id = String::with_capacity(KEY_ID_LEN);
    push_random(&mut id, KEY_ID_LEN, KEY_ID_ALPHABET, &mut |buf| {
        OsRng.try_fill_bytes(buf)
    })
    .map_err(TokenError::RandomSource)?;
    Ok(id)
}

/// A new key id from the given cryptographically secure RNG.
pub fn new_key_id_with<R: CryptoRng + ?Sized>(rng: &mut R) -> String {
    let mut id = String::with_capacity(KEY_ID_LEN);
    infallible(push_random(
        &mut id,
        KEY_ID_LEN,
        KEY_ID_ALPHABET,
        &mut |buf: &mut [u8]| {
            rng.fill_bytes(buf);
            Ok(())
        },
    ));
    id
}

/// Whether `s` matches `^[A-Z0-9]{1,20}$`.
pub fn is_valid_key_id(s: &str) -> bool {
    (1..=KEY_ID_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Builds `<prefix>_<random><checksum>` with randomness from `fill`.
fn mint<E>(
    prefix: &str,
    entropy_bits: u16,
    fill: &mut impl FnMut(&mut [u8]) -> Result<(), E>,
) -> Result<Token, E> {
    let n = random_len(entropy_bits);
    // Reserve the final size up front: a reallocation would leave an
    // unwiped copy of the partial secret in freed memory.
    let mut s = Zeroizing::new(String::with_capacity(prefix.len() + 1 + n + CHECKSUM_LEN));
    s.push_str(prefix);
    s.push('_');
    push_random(&mut s, n, BASE62_ALPHABET, fill)?;
    let checksum = encode_checksum(crc32fast::hash(s.as_bytes()));
    s.extend(checksum.iter().copied().map(char::from));
    Ok(Token(s))
}

/// Appends `count` characters drawn uniformly from `alphabet` (at most 64
/// symbols) by rejection sampling 6-bit values, which has no modulo bias.
fn push_random<E>(
    out: &mut String,
    count: usize,
    alphabet: &[u8],
    fill: &mut impl FnMut(&mut [u8]) -> Result<(), E>,
) -> Result<(), E> {
    // The random bytes are key material too, so wipe them afterwards.
    let mut buf = Zeroizing::new([0u8; 64]);
    let mut next = buf.len();
    let mut pushed = 0;
    while pushed < count {
        if next == buf.len() {
            fill(&mut buf[..])?;
            next = 0;
        }
        let v = usize::from(buf[next] >> 2);
        next += 1;
        // Values past the alphabet's end are rejected and redrawn.
        if let Some(&c) = alphabet.get(v) {
            out.push(char::from(c));
            pushed += 1;
        }
    }
    Ok(())
}

/// CRC32 as exactly [`CHECKSUM_LEN`] base62 digits, most significant first.
fn encode_checksum(crc: u32) -> [u8; CHECKSUM_LEN] {
    let mut out = [b'0'; CHECKSUM_LEN];
    let mut v = crc;
    for slot in out.iter_mut().rev() {
        *slot = BASE62_ALPHABET[(v % 62) as usize];
        v /= 62;
    }
    out
}

fn infallible<T>(r: Result<T, Infallible>) -> T {
    match r {
        Ok(t) => t,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    fn seeded(seed: u64) -> StdRng {
        StdRng::seed_from_u64(seed)
    }

    fn token_regex(prefix: &str) -> regex::Regex {
        regex::Regex::new(&format!("^{prefix}_[0-9A-Za-z]+$")).expect("test input is valid")
    }

    /// Decodes a base62 checksum (test-only inverse of `encode_checksum`).
    fn decode_checksum(s: &[u8]) -> u64 {
        s.iter().fold(0u64, |acc, &c| {
            let d = BASE62_ALPHABET
                .iter()
                .position(|&a| a == c)
                .expect("test input is valid") as u64;
            acc * 62 + d
        })
    }

    #[test]
    fn random_len_known_values() {
        assert_eq!(random_len(128), 22);
        assert_eq!(random_len(256), 43);
        assert_eq!(random_len(512), 86);
        assert_eq!(min_body_len(), 28);
        assert_eq!(max_body_len(), 92);
    }

    /// Exact check of `random_len` with a small bignum: `n` is the least
    /// value with `62^n >= 2^bits`, i.e. with bit length of 62^n > bits.
    #[test]
    fn random_len_is_exact_for_every_entropy() {
        // Little-endian u32 limbs of 62^n, with the bit length for each n.
        let mut limbs: Vec<u64> = vec![1];
        let mut bit_len_of_pow = vec![1usize]; // 62^0 = 1 has 1 bit
        for _ in 0..200 {
            let mut carry = 0u64;
            for limb in &mut limbs {
                let v = *limb * 62 + carry;
                *limb = v & 0xffff_ffff;
                carry = v >> 32;
            }
            if carry > 0 {
                limbs.push(carry);
            }
            let top = *limbs.last().expect("test input is valid");
            bit_len_of_pow.push((limbs.len() - 1) * 32 + (64 - top.leading_zeros() as usize));
        }
        for bits in 1..=1024u16 {
            // 62^n is never a power of two (n >= 1), so >= 2^bits means
            // strictly more than `bits` bits.
            let exact = (1..)
                .find(|&n| bit_len_of_pow[n] > usize::from(bits))
                .expect("test input is valid");
            assert_eq!(random_len(bits), exact, "bits = {bits}");
        }
    }

    #[test]
    fn minted_token_has_expected_format_and_length() {
        for (prefix, bits) in [
            ("rk", 128),
            ("sak", 256),
            ("ak", 512),
            ("a", 200),
            ("abcdefghijklmnop", 129),
            ("x9", DEFAULT_ENTROPY_BITS),
        ] {
            let t = try_mint_token(prefix, bits).expect("test input is valid");
            let s = t.expose();
            assert!(
                token_regex(prefix).is_match(s),
                "format for {prefix}/{bits}"
            );
            assert_eq!(
                s.len(),
                prefix.len() + 1 + random_len(bits) + CHECKSUM_LEN,
                "length for {prefix}/{bits}"
            );
            assert_eq!(verify_checksum(s), Ok(()));
        }
    }

    #[test]
    fn checksum_is_crc32_of_prefix_and_random_part() {
        let t = mint_token_with(&mut seeded(1), "ak", 256);
        let s = t.expose();
        let (head, tail) = s.split_at(s.len() - CHECKSUM_LEN);
        assert_eq!(
            decode_checksum(tail.as_bytes()),
            u64::from(crc32fast::hash(head.as_bytes()))
        );
    }

    #[test]
    fn checksum_encoding_edges() {
        assert_eq!(&encode_checksum(0), b"000000");
        assert_eq!(&encode_checksum(61), b"00000z");
        assert_eq!(&encode_checksum(62), b"000010");
        // u32::MAX = 4_294_967_295 = "4gfFC3" in 0-9A-Za-z base62.
        assert_eq!(&encode_checksum(u32::MAX), b"4gfFC3");
        assert_eq!(
            decode_checksum(&encode_checksum(u32::MAX)),
            u64::from(u32::MAX)
        );
    }

    #[test]
    fn known_token_verifies() {
        // Built by hand: the checksum is CRC32("ak_" + 22 x '0') in base62.
        let head = format!("ak_{}", "0".repeat(22));
        let crc = crc32fast::hash(head.as_bytes());
        let token = format!(
            "{head}{}",
            std::str::from_utf8(&encode_checksum(crc)).expect("test input is valid")
        );
        assert_eq!(verify_checksum(&token), Ok(()));
    }

    #[test]
    fn mint_clamps_entropy_instead_of_panicking() {
        let low = mint_token_with(&mut seeded(2), "ak", 0);
        assert_eq!(
            low.expose().len(),
            3 + random_len(MIN_ENTROPY_BITS) + CHECKSUM_LEN
        );
        let high = mint_token_with(&mut seeded(3), "ak", u16::MAX);
        assert_eq!(
            high.expose().len(),
            3 + random_len(MAX_ENTROPY_BITS) + CHECKSUM_LEN
        );
        assert_eq!(verify_checksum(low.expose()), Ok(()));
        assert_eq!(verify_checksum(high.expose()), Ok(()));
        let os = mint_token_with(&mut rand::rngs::OsRng.unwrap_err(), "rk", 1);
        assert_eq!(verify_checksum(os.expose()), Ok(()));
    }

    #[test]
    fn try_mint_rejects_bad_inputs() {
        assert_eq!(
            try_mint_token("ak", 127).unwrap_err(),
            TokenError::EntropyOutOfRange { bits: 127 }
        );
        assert_eq!(
            try_mint_token("ak", 513).unwrap_err(),
            TokenError::EntropyOutOfRange { bits: 513 }
        );
        assert!(try_mint_token("ak", 128).is_ok());
        assert!(try_mint_token("ak", 512).is_ok());
        for bad in ["", "Ak", "1ak", "a_k", "a-k", "abcdefghijklmnopq", "ä"] {
            assert_eq!(
                try_mint_token(bad, 256).unwrap_err(),
                TokenError::InvalidPrefix,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn prefix_validation() {
        for ok in ["a", "rk", "sak", "a0", "z9z9", "abcdefghijklmnop"] {
            assert!(is_valid_prefix(ok), "{ok:?}");
        }
        for bad in ["", "0a", "A", "aB", "a_", "a b", "abcdefghijklmnopq", "é"] {
            assert!(!is_valid_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn thousand_tokens_are_distinct() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let t = try_mint_token("ak", MIN_ENTROPY_BITS).expect("OS randomness");
            assert!(seen.insert(t.expose().to_owned()));
        }
    }

    #[test]
    fn random_part_is_uniform_over_base62() {
        // Chi-squared goodness of fit over 62 symbols (61 degrees of
        // freedom). With a fixed seed this is deterministic; the bound is
        // far in the tail (p < 1e-6 is about 125), so it only fails for a
        // biased sampler.
        let mut rng = seeded(42);
        let mut counts = [0u64; 62];
        let mut total = 0u64;
        for _ in 0..2000 {
            let t = mint_token_with(&mut rng, "ak", MAX_ENTROPY_BITS);
            let s = t.expose();
            for b in s[3..s.len() - CHECKSUM_LEN].bytes() {
                let i = BASE62_ALPHABET
                    .iter()
                    .position(|&a| a == b)
                    .expect("test input is valid");
                counts[i] += 1;
                total += 1;
            }
        }
        let expected = total as f64 / 62.0;
        let chi2: f64 = counts
            .iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum();
        assert!(chi2 < 125.0, "chi2 = {chi2}, counts = {counts:?}");
    }

    #[test]
    fn verify_reports_structural_errors() {
        let good = mint_token_with(&mut seeded(5), "ak", 256);
        let g = good.expose();
        assert_eq!(verify_checksum(""), Err(TokenError::MissingSeparator));
        assert_eq!(
            verify_checksum(&g.replace('_', "")),
            Err(TokenError::MissingSeparator)
        );
        assert_eq!(
            verify_checksum(&g.replacen("ak_", "AK_", 1)),
            Err(TokenError::InvalidPrefix)
        );
        assert_eq!(
            verify_checksum(&format!("_{}", &g[3..])),
            Err(TokenError::InvalidPrefix)
        );
        assert_eq!(
            verify_checksum(&format!("{g}_")),
            Err(TokenError::InvalidCharacter { position: g.len() })
        );
        assert_eq!(
            verify_checksum(&format!("{}-{}", &g[..5], &g[5..])),
            Err(TokenError::InvalidCharacter { position: 5 })
        );
        assert_eq!(
            verify_checksum(&format!("{}é{}", &g[..5], &g[5..])),
            Err(TokenError::InvalidCharacter { position: 5 })
        );
        assert_eq!(
            verify_checksum(&g[..g.len() - 1]),
            Err(TokenError::ChecksumMismatch)
        );
        assert_eq!(
            verify_checksum(&format!("ak_{}", "0".repeat(27))),
            Err(TokenError::BodyLength {
                len: 27,
                min: 28,
                max: 92
            })
        );
        assert_eq!(
            verify_checksum(&format!("ak_{}", "0".repeat(93))),
            Err(TokenError::BodyLength {
                len: 93,
                min: 28,
                max: 92
            })
        );
    }

    #[test]
    fn errors_never_echo_the_token() {
        let t = mint_token_with(&mut seeded(6), "ak", 256);
        let s = t.expose();
        let tampered = format!("{}x", &s[..s.len() - 1]);
        for input in [&tampered[..], &s[..s.len() - 1], &s[3..], &format!("{s}!")] {
            let err = verify_checksum(input).unwrap_err().to_string();
            // No 8-character run of the token appears in the message.
            for w in s.as_bytes().windows(8) {
                assert!(
                    !err.contains(std::str::from_utf8(w).expect("test input is valid")),
                    "{err}"
                );
            }
        }
    }

    #[test]
    fn debug_is_redacted() {
        let t = mint_token_with(&mut seeded(7), "ak", 256);
        let dbg = format!("{t:?}");
        assert_eq!(dbg, "Token(<redacted>)");
        assert!(!dbg.contains(&t.expose()[3..]));
        assert_eq!(format!("{:?}", Some(t.clone())), "Some(Token(<redacted>))");
    }

    #[test]
    fn sha256_known_vectors() {
        assert_eq!(
            sha256_hex(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let t = mint_token_with(&mut seeded(8), "ak", 256);
        let h = t.sha256_hex();
        assert_eq!(h, sha256_hex(t.expose()));
        assert_eq!(h.len(), 64);
        assert!(
            h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    }

    #[test]
    fn key_ids_match_pattern_and_are_distinct() {
        let re = regex::Regex::new("^[A-Z0-9]{20}$").expect("test input is valid");
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let id = try_new_key_id().expect("OS randomness");
            assert!(re.is_match(&id), "{id}");
            assert!(is_valid_key_id(&id));
            assert!(seen.insert(id));
        }
        let id = try_new_key_id().expect("test input is valid");
        assert!(re.is_match(&id));
        let a = new_key_id_with(&mut seeded(9));
        assert_eq!(
            a,
            new_key_id_with(&mut seeded(9)),
            "deterministic with a seed"
        );
        assert!(is_valid_key_id(&a));
    }

    #[test]
    fn key_id_characters_cover_alphabet() {
        let mut rng = seeded(10);
        let mut seen = HashSet::new();
        for _ in 0..200 {
            seen.extend(new_key_id_with(&mut rng).bytes());
        }
        assert_eq!(seen.len(), 36);
    }

    #[test]
    fn key_id_validation() {
        for ok in ["A", "0", "ABC123", "ZZZZZZZZZZZZZZZZZZZZ"] {
            assert!(is_valid_key_id(ok), "{ok:?}");
        }
        for bad in ["", "abc", "AB-C", "A B", "AAAAAAAAAAAAAAAAAAAAA", "Ä"] {
            assert!(!is_valid_key_id(bad), "{bad:?}");
        }
    }

    /// Characters a typo could introduce: base62 plus a few others.
    fn any_char() -> impl Strategy<Value = char> {
        prop_oneof![
            proptest::char::range('0', '9'),
            proptest::char::range('A', 'Z'),
            proptest::char::range('a', 'z'),
            Just('_'),
            Just('-'),
            Just(' '),
        ]
    }

    proptest! {
        #[test]
        fn minted_tokens_always_verify(
            seed in any::<u64>(),
            bits in MIN_ENTROPY_BITS..=MAX_ENTROPY_BITS,
            prefix in "[a-z][a-z0-9]{0,15}",
        ) {
            let t = mint_token_with(&mut seeded(seed), &prefix, bits);
            let s = t.expose();
            prop_assert!(token_regex(&prefix).is_match(s));
            prop_assert_eq!(s.len(), prefix.len() + 1 + random_len(bits) + CHECKSUM_LEN);
            prop_assert_eq!(verify_checksum(s), Ok(()));
        }

        /// CRC32 detects every error burst up to 32 bits, so any single
        /// changed character (prefix, random part or checksum) is caught.
        #[test]
        fn single_changed_character_fails(
            seed in any::<u64>(),
            bits in MIN_ENTROPY_BITS..=MAX_ENTROPY_BITS,
            pos in any::<prop::sample::Index>(),
            replacement in any_char(),
        ) {
            let t = mint_token_with(&mut seeded(seed), "sak", bits);
            let mut chars: Vec<char> = t.expose().chars().collect();
            let i = pos.index(chars.len());
            prop_assume!(chars[i] != replacement);
            chars[i] = replacement;
            let tampered: String = chars.into_iter().collect();
            prop_assert!(verify_checksum(&tampered).is_err());
        }

        /// Swapping two adjacent different characters is also caught.
        #[test]
        fn adjacent_transposition_fails(
            seed in any::<u64>(),
            pos in any::<prop::sample::Index>(),
        ) {
            let t = mint_token_with(&mut seeded(seed), "ak", DEFAULT_ENTROPY_BITS);
            let mut bytes = t.expose().as_bytes().to_vec();
            let i = pos.index(bytes.len() - 1);
            prop_assume!(bytes[i] != bytes[i + 1]);
            bytes.swap(i, i + 1);
            let tampered = String::from_utf8(bytes).expect("test input is valid");
            prop_assert!(verify_checksum(&tampered).is_err());
        }

        #[test]
        fn verify_never_panics(s in "\\PC{0,120}") {
            let _ = verify_checksum(&s);
        }
    }
}
