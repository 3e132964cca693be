//! Pure key logic: token and key-id minting, Go-style durations, and the
//! expiry/rotation schedule. No I/O and no Kubernetes types, so all of it is
//! table- and property-tested in isolation.

pub mod duration;
pub mod plan;
pub mod schedule;
pub mod signature;
pub mod token;

pub use duration::{
    DURATION_PATTERN, DurationError, MAX_DURATION, MAX_DURATION_STR, format_duration,
    parse_duration,
};
pub use schedule::{
    ExpiryError, ExpiryPolicy, Predecessor, grace_ends_at, key_expiry, recompute_expiry,
    renewal_time, spread_renewal, truncate_to_second,
};
pub use token::{
    DEFAULT_ENTROPY_BITS, MAX_ENTROPY_BITS, MIN_ENTROPY_BITS, Token, TokenError, is_valid_key_id,
    is_valid_prefix, mint_token_with, new_key_id_with, sha256_bytes_hex, sha256_hex,
    try_mint_token, try_new_key_id, verify_checksum,
};
