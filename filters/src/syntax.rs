//! Whether an index document is well-formed in its syntax, before it is
//! kept.
//!
//! Why: a document the upstream garbled (cut short behind a proxy, an
//! error page with a 200, a compressed body nobody asked for) would be
//! cached and served for its whole TTL, passed on as is by the rewriter.
//! Checked while it arrives and refused at its end, it is never committed,
//! and the client's transfer fails instead of completing with garbage.

/// The syntax of a document artifactd checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Json,
    Yaml,
    Xml,
}

impl Syntax {
    pub fn as_str(self) -> &'static str {
        match self {
            Syntax::Json => "JSON",
            Syntax::Yaml => "YAML",
            Syntax::Xml => "XML",
        }
    }

    /// Whether `doc` is well-formed; the parser's complaint if not.
    pub fn check(self, doc: &[u8]) -> Result<(), String> {
        match self {
            Syntax::Json => serde_json::from_slice::<serde::de::IgnoredAny>(doc)
                .map(drop)
                .map_err(|e| e.to_string()),
            Syntax::Yaml => crate::yaml::from_slice::<serde::de::IgnoredAny>(doc).map(drop),
            Syntax::Xml => check_xml(doc),
        }
    }
}

/// Reads every event: quick-xml reports what is not well-formed (unclosed
/// or mismatched tags, bad syntax), and a document needs a root element.
fn check_xml(doc: &[u8]) -> Result<(), String> {
    let mut reader = quick_xml::Reader::from_reader(doc);
    reader.config_mut().check_end_names = true;
    let mut buf = Vec::new();
    let (mut depth, mut elements) = (0usize, 0usize);
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(quick_xml::events::Event::Start(_)) => {
                depth += 1;
                elements += 1;
            }
            Ok(quick_xml::events::Event::Empty(_)) => elements += 1,
            Ok(quick_xml::events::Event::End(_)) => depth = depth.saturating_sub(1),
            Ok(quick_xml::events::Event::Eof) if depth == 0 && elements > 0 => return Ok(()),
            Ok(quick_xml::events::Event::Eof) => {
                return Err("document ends inside an element, or has none".into())
            }
            Ok(_) => {}
            Err(e) => return Err(format!("at byte {}: {e}", reader.buffer_position())),
        }
        buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_formed_documents_pass_and_garbled_ones_say_why() {
        assert_eq!(
            Syntax::Json.check(br#"{"name": "a", "versions": {}}"#),
            Ok(())
        );
        assert!(Syntax::Json.check(br#"{"name": "a", "versio"#).is_err());
        assert!(Syntax::Json.check(b"\x1f\x8b\x08\x00gzip").is_err());
        assert!(Syntax::Json.check(b"<html>503</html>").is_err());
        assert_eq!(
            Syntax::Yaml.check(b"entries:\n  a:\n  - {version: 1.0.0}\n"),
            Ok(())
        );
        assert!(Syntax::Yaml.check(b"entries:\n  a: [1, 2\n").is_err());
        let deep = format!("a: {}", "[".repeat(10_000));
        assert!(Syntax::Yaml.check(deep.as_bytes()).is_err());
        assert_eq!(
            Syntax::Xml.check(b"<?xml version=\"1.0\"?><repomd><data/></repomd>"),
            Ok(())
        );
        assert!(Syntax::Xml.check(b"<repomd><data></repomd>").is_err());
        assert!(Syntax::Xml.check(b"<repomd><data/>").is_err());
        assert!(Syntax::Xml.check(b"just text").is_err());
    }
}
