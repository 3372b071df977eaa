//! Configuration errors that point at their source: file, remote and field.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// `line:column` when the YAML parser knows it.
    pub location: Option<(usize, usize)>,
    /// The remote the problem is in, when it is in one.
    pub remote: Option<String>,
    /// The field path, e.g. `mutable_patterns[2]` or `cache.mutable_ttl`.
    pub field: Option<String>,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            location: None,
            remote: None,
            field: None,
            message: message.into(),
        }
    }

    pub fn remote(mut self, remote: &str) -> Self {
        self.remote = Some(remote.to_string());
        self
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.location {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(remote) = &self.remote {
            write!(f, ": remote '{remote}'")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field '{field}'")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in one load, so a user fixes them all in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

/// Parses a configuration file's `source`, refusing first what would make
/// the parser itself slow ([`filters::yaml::check_depth`]).
pub fn parse_yaml<T: serde::de::DeserializeOwned>(
    file: &Path,
    source: &str,
) -> Result<T, ConfigError> {
    if let Err(deep) = filters::yaml::check_depth(source.as_bytes()) {
        return Err(ConfigError {
            file: file.to_path_buf(),
            location: Some((deep.line, deep.column)),
            remote: remote_at_line(source, deep.line),
            field: None,
            message: deep.to_string(),
        });
    }
    serde_yaml_ng::from_str(source).map_err(|e| yaml_error(file, source, &e))
}

/// Turns a YAML parse error into a [`ConfigError`] that also names the
/// remote the bad line belongs to, and explains the most common mistake: a
/// single backslash inside a double-quoted pattern.
pub fn yaml_error(file: &Path, source: &str, error: &serde_yaml_ng::Error) -> ConfigError {
    let location = error.location().map(|l| (l.line(), l.column()));
    let mut message = error.to_string();
    if message.contains("unknown escape character") || message.contains("invalid escape") {
        message.push_str(
            "; inside double quotes a regex backslash must be doubled (\"\\\\.tgz$\") \
             or the pattern written in single quotes ('\\.tgz$')",
        );
    }
    let remote = location.and_then(|(line, _)| remote_at_line(source, line));
    ConfigError {
        file: file.to_path_buf(),
        location,
        remote,
        field: None,
        message,
    }
}

/// Finds the remote whose block contains 1-based `line`: the nearest key
/// above it that sits one level below `remotes:`.
fn remote_at_line(source: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    let remotes_line = lines.iter().position(|l| l.trim_end() == "remotes:")?;
    let mut candidate = None;
    for text in lines
        .iter()
        .take(line.min(lines.len()))
        .skip(remotes_line + 1)
    {
        let indent = text.len() - text.trim_start().len();
        let trimmed = text.trim();
        if indent == 0 && !trimmed.is_empty() && !trimmed.starts_with('#') {
            candidate = None;
        }
        if indent > 0 && !trimmed.starts_with('#') && trimmed.ends_with(':') {
            let is_top = candidate
                .as_ref()
                .map(|(i, _): &(usize, String)| indent <= *i)
                .unwrap_or(true);
            if is_top {
                let key = trimmed.trim_end_matches(':').trim_matches(['"', '\'']);
                candidate = Some((indent, key.to_string()));
            }
        }
    }
    candidate.map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_is_found_above_the_error_line() {
        let src = "remotes:\n  a:\n    base_url: x\n  npm:\n    cache:\n      immutable_ttl: 0\n    immutable_patterns:\n      - \"\\.tgz$\"\n";
        assert_eq!(remote_at_line(src, 8).as_deref(), Some("npm"));
        assert_eq!(remote_at_line(src, 3).as_deref(), Some("a"));
    }

    #[test]
    fn display_names_every_part() {
        let e = ConfigError::new(Path::new("r.yaml"), "bad")
            .remote("npm")
            .field("mutable_patterns[0]");
        assert_eq!(
            e.to_string(),
            "r.yaml: remote 'npm': field 'mutable_patterns[0]': bad"
        );
    }
}
