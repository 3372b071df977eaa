//! YAML read with a bound on how deeply flow collections nest.
//!
//! Why: the YAML parser behind `serde_yaml_ng` refuses nesting past 128
//! levels, but only after scanning the whole run of brackets, and that scan
//! grows with the square of the depth: 100,000 `[` take a minute of CPU
//! before the error. A configuration file is hostile input too, and a Helm
//! index comes from an upstream. So the text is checked first, in one
//! linear pass, and anything nested past [`MAX_FLOW_DEPTH`] is refused at
//! once. (Alias bombs are refused by the parser itself: "repetition limit
//! exceeded".)

use serde::de::DeserializeOwned;

/// Flow collections (`[…]`, `{…}`) nested deeper than this are refused;
/// real documents nest a handful.
pub const MAX_FLOW_DEPTH: usize = 256;

/// Where nesting first went past [`MAX_FLOW_DEPTH`] (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("collections nested deeper than {MAX_FLOW_DEPTH} levels at line {line} column {column}")]
pub struct TooDeep {
    pub line: usize,
    pub column: usize,
}

/// Checks that flow collections in `text` nest at most
/// [`MAX_FLOW_DEPTH`] deep. Brackets inside quoted scalars and comments do
/// not count; an unbalanced one in a plain scalar counts, which only a
/// document of hundreds of them could notice.
pub fn check_depth(text: &[u8]) -> Result<(), TooDeep> {
    #[derive(PartialEq)]
    enum In {
        Plain,
        Single,
        Double,
        Comment,
    }
    let (mut state, mut depth, mut line, mut line_start) = (In::Plain, 0usize, 1, 0);
    let mut previous = b'\n';
    let mut escaped = false;
    for (at, &byte) in text.iter().enumerate() {
        match (&state, byte) {
            (_, b'\n') => {
                if state == In::Comment {
                    state = In::Plain;
                }
                line += 1;
                line_start = at + 1;
            }
            (In::Comment, _) => {}
            (In::Single, b'\'') => state = In::Plain,
            (In::Double, b'"') if !escaped => state = In::Plain,
            (In::Single | In::Double, _) => {}
            (In::Plain, b'\'') => state = In::Single,
            (In::Plain, b'"') => state = In::Double,
            (In::Plain, b'#') if previous.is_ascii_whitespace() => state = In::Comment,
            (In::Plain, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    let column = at - line_start + 1;
                    return Err(TooDeep { line, column });
                }
            }
            (In::Plain, b']' | b'}') => depth = depth.saturating_sub(1),
            (In::Plain, _) => {}
        }
        escaped = state == In::Double && byte == b'\\' && !escaped;
        previous = byte;
    }
    Ok(())
}

/// Parses `doc` after [`check_depth`]; the error as text.
pub fn from_slice<T: DeserializeOwned>(doc: &[u8]) -> Result<T, String> {
    check_depth(doc).map_err(|e| e.to_string())?;
    serde_yaml_ng::from_slice(doc).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_nesting_is_refused_in_linear_time_with_its_place() {
        let deep = format!("a: 1\nb: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let started = std::time::Instant::now();
        let error = check_depth(deep.as_bytes()).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!((error.line, error.column), (2, 3 + MAX_FLOW_DEPTH + 1));
        assert!(from_slice::<serde_yaml_ng::Value>(deep.as_bytes()).is_err());
    }

    #[test]
    fn brackets_in_quotes_and_comments_do_not_count() {
        let many = "[".repeat(MAX_FLOW_DEPTH + 1);
        let text = format!(
            "a: '{many}'\nb: \"{many} \\\" {many}\"\nc: x # {many}\nd: [[1], {{e: [2]}}]\n"
        );
        assert_eq!(check_depth(text.as_bytes()), Ok(()));
        let parsed: serde_yaml_ng::Value = from_slice(text.as_bytes()).unwrap();
        assert_eq!(parsed["d"][1]["e"][0], serde_yaml_ng::Value::from(2));
        let nested = format!(
            "{}{}",
            "[".repeat(MAX_FLOW_DEPTH),
            "]".repeat(MAX_FLOW_DEPTH)
        );
        assert_eq!(check_depth(nested.as_bytes()), Ok(()));
    }
}
