//! Cache key encoding.
//!
//! A cache key is built from several strings (remote name, artifact path,
//! and later an `Accept` class). Joining them with a separator is ambiguous
//! (`a:b` + `c` versus `a` + `b:c`), so every component is length-prefixed.

/// Encodes `parts` as `len:part` pairs joined by `|`, which no two different
/// part lists can share.
pub fn encode(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        // A key is encoded for each request the decision memo does not
        // hold: no `to_string` allocation per part.
        out.push_str(itoa::Buffer::new().format(part.len()));
        out.push(':');
        out.push_str(part);
    }
    out
}

/// Splits a string made by [`encode`] back into its parts; `None` if it
/// was not made by `encode`.
pub fn decode(encoded: &str) -> Option<Vec<&str>> {
    let mut parts = Vec::new();
    let mut rest = encoded;
    loop {
        let (len, after) = rest.split_once(':')?;
        // Only the digits `encode` writes: no sign, no leading zero, so one
        // key has one spelling.
        let canonical = !len.is_empty()
            && len.bytes().all(|b| b.is_ascii_digit())
            && (len == "0" || !len.starts_with('0'));
        if !canonical {
            return None;
        }
        let len: usize = len.parse().ok()?;
        let part = after.get(..len)?;
        parts.push(part);
        rest = &after[len..];
        match rest.strip_prefix('|') {
            Some(next) => rest = next,
            None if rest.is_empty() => return Some(parts),
            None => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{decode, encode};

    #[test]
    fn separators_inside_parts_do_not_collide() {
        assert_ne!(encode(&["a:b", "c"]), encode(&["a", "b:c"]));
        assert_ne!(encode(&["a|1:b"]), encode(&["a", "b"]));
        assert_ne!(encode(&["ab", ""]), encode(&["a", "b"]));
    }

    #[test]
    fn decode_inverts_encode() {
        for parts in [vec!["a:b", "c|d"], vec!["", ""], vec!["github", "x/y.tgz"]] {
            assert_eq!(decode(&encode(&parts)).unwrap(), parts);
        }
        assert_eq!(decode("3:ab"), None);
        assert_eq!(decode("1:a|"), None);
        assert_eq!(decode("x"), None);
        assert_eq!(decode("01:a"), None);
        assert_eq!(decode("+1:a"), None);
    }

    #[test]
    fn encoding_is_stable() {
        assert_eq!(encode(&["github", "x/y.tgz"]), "6:github|7:x/y.tgz");
    }

    #[test]
    fn lengths_are_written_in_decimal() {
        for len in [0, 9, 10, 99, 100, 1234, 65536] {
            let part = "x".repeat(len);
            assert_eq!(encode(&[&part]), format!("{len}:{part}"));
        }
    }
}
