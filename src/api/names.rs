//! Every name keymint puts on or reads from objects: annotations, labels, the
//! Secret type and its data keys. One place, so the Secret layout, the record,
//! the watches and the docs cannot drift apart.

/// Annotation on a key resource: set it to a new value to rotate the key once.
pub const ROTATE_REQUEST_ANNOTATION: &str = "keymint.dev/rotate-request";

/// Annotation on a key resource: set it to a new value (an incident id, a
/// date) when the key leaked. The key is rotated at once with no grace
/// period, and the leaked key is listed as revoked in its key rings.
pub const COMPROMISED_ANNOTATION: &str = "keymint.dev/compromised";

/// Label on every Secret keymint manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`] on every Secret keymint manages.
pub const MANAGED_BY_VALUE: &str = "keymint";
/// Type of every Secret keymint writes.
pub const SECRET_TYPE: &str = "keymint.dev/key";

/// Secret data key: the token.
pub const SECRET_KEY: &str = "key";
/// Secret data key: the token's id.
pub const SECRET_ID: &str = "id";
/// Secret data key: the previous token, during a grace period.
pub const SECRET_PREVIOUS_KEY: &str = "previous-key";
/// Secret data key: the previous token's id, during a grace period.
pub const SECRET_PREVIOUS_ID: &str = "previous-id";

/// Annotations on a Secret: the record keymint keeps next to the key (never
/// the key itself).
pub mod record {
    /// The owning resource, `Kind/namespace/name` (or `Kind/name`).
    pub const OWNER: &str = "keymint.dev/owner";
    /// UID of the resource the Secret was written for.
    pub const OWNER_UID: &str = "keymint.dev/owner-uid";
    /// Id of the key the Secret holds.
    pub const KEY_ID: &str = "keymint.dev/key-id";
    /// Lowercase hex SHA-256 of the key the Secret holds.
    pub const KEY_SHA256: &str = "keymint.dev/key-sha256";
    /// When the key was minted (RFC 3339).
    pub const CREATED_AT: &str = "keymint.dev/created-at";
    /// When the key state last changed (RFC 3339).
    pub const UPDATED_AT: &str = "keymint.dev/updated-at";
    /// When the key expires (RFC 3339); absent for a key that never expires.
    pub const EXPIRES_AT: &str = "keymint.dev/expires-at";
    /// How many times the key was rotated.
    pub const ROTATIONS: &str = "keymint.dev/rotations";
    /// Id of the previous key, during its grace period.
    pub const PREVIOUS_ID: &str = "keymint.dev/previous-id";
    /// When the previous key is removed.
    pub const PREVIOUS_EXPIRES_AT: &str = "keymint.dev/previous-expires-at";
    /// The last rotate request acted on.
    pub const ROTATE_REQUEST_HANDLED: &str = "keymint.dev/rotate-request-handled";
    /// UID of the object the key is bound to (a ServiceAccount).
    pub const BOUND_UID: &str = "keymint.dev/bound-uid";
    /// The last `keymint.dev/compromised` value acted on.
    pub const COMPROMISE_HANDLED: &str = "keymint.dev/compromise-handled";
    /// HMAC of the record under the operator's key (see `keys::signature`).
    pub const RECORD_SIGNATURE: &str = "keymint.dev/record-signature";
}

/// Annotations on a Secret that tell its consumers about the key.
pub mod about {
    /// A ServiceAccountKey's ServiceAccount.
    pub const SERVICE_ACCOUNT: &str = "keymint.dev/service-account";
    /// An APIKey's permissions, comma-separated.
    pub const PERMISSIONS: &str = "keymint.dev/permissions";
    /// An APIKey's description.
    pub const DESCRIPTION: &str = "keymint.dev/description";
}

/// Prefix of every annotation keymint owns on a Secret.
pub const ANNOTATION_PREFIX: &str = "keymint.dev/";
