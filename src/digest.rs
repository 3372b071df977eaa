//! Digests of bodies in the algorithms package indexes and registries
//! publish (`algorithm:hex`), for the checks a body must pass before it
//! is served whole or committed.

use sha2::Digest as _;

pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
    /// npm's `dist.shasum`, for packages published before `integrity`.
    Sha1(sha1::Sha1),
}

impl Hasher {
    pub fn sha256() -> Hasher {
        Hasher::Sha256(sha2::Sha256::new())
    }

    /// The hasher of an `algorithm:hex` digest whose hex has the right
    /// length for its algorithm.
    pub fn for_digest(digest: &str) -> Option<Hasher> {
        let (algorithm, hex) = digest.split_once(':')?;
        let (hasher, len) = match algorithm {
            "sha256" => (Hasher::Sha256(sha2::Sha256::new()), 64),
            "sha512" => (Hasher::Sha512(sha2::Sha512::new()), 128),
            "sha1" => (Hasher::Sha1(sha1::Sha1::new()), 40),
            _ => return None,
        };
        let valid = hex.len() == len && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then_some(hasher)
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
        }
    }

    pub fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
            Hasher::Sha1(h) => format!("sha1:{}", hex::encode(h.finalize())),
        }
    }
}
