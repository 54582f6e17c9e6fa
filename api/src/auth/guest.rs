//! Guest tokens: random UUIDs handed out once; only their SHA-256 is stored.

use sha2::{Digest, Sha256};

/// A fresh guest token.
pub fn new_token() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// What is stored for a token: its SHA-256. Tokens carry 122 random bits, so a plain hash (no salt,
/// no stretching) cannot be reversed and still allows an indexed lookup.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_uuids_and_hash_stably() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(&a).is_ok());
        assert_eq!(hash(&a), hash(&a));
        assert_ne!(hash(&a), hash(&b));
        assert_eq!(hash(&a).len(), 32);
    }
}
