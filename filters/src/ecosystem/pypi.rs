//! PyPI's simple repository API (PEP 503 HTML, PEP 691 JSON) and the JSON
//! API of `/pypi/{project}/json`: which document a path names, which form a
//! client asks for, and the rewriting that sends file downloads back
//! through the remote while keeping every attribute resolvers rely on
//! (`#sha256=`, `data-requires-python`, PEP 658/714 metadata, yanked).
//!
//! The HTML rewriter streams: it holds back at most one unfinished tag
//! between chunks, so a document of any size costs the largest tag in
//! memory (plus the list of file links, kept only when asked for). JSON
//! documents are rewritten whole; the proxy bounds their size.

use crate::firewall::Shown;
use crate::links::{LinkMap, Mapped};
use serde_json::{json, Map, Value};

use super::{Request, Routed};

/// Built-in mutable patterns: the simple index, and the JSON API of
/// `/pypi/{project}/json`.
pub const MUTABLE_PATTERNS: &[&str] = &[r"(^|/)simple(/|$)", r"^pypi/[^/]+/([^/]+/)?json$"];

/// A non-normalised project name gets the normalised page; the simple
/// API's forms are keyed apart.
pub fn route(request: &Request<'_>) -> Routed {
    let Some(doc) = document(request.path) else {
        return Routed::file(request);
    };
    let path = doc.canonical_path();
    let form = negotiate(request.accept);
    let (document, key_parts) = match doc {
        Document::RootIndex => (
            super::Document::PypiSimple {
                project: None,
                form,
            },
            vec![path.clone(), format!("form={}", form.as_str())],
        ),
        Document::Project { name } => (
            super::Document::PypiSimple {
                project: Some(name),
                form,
            },
            vec![path.clone(), format!("form={}", form.as_str())],
        ),
        Document::JsonApi { .. } => (super::Document::PypiJsonApi, vec![path.clone()]),
    };
    Routed::document(path, key_parts, request, document)
}

/// PEP 691 media types.
pub const JSON_TYPE: &str = "application/vnd.pypi.simple.v1+json";
pub const HTML_TYPE: &str = "application/vnd.pypi.simple.v1+html";

/// An unfinished tag longer than this is passed on unchanged rather than
/// held: it is not a link a resolver reads, and memory stays bounded.
pub const MAX_HELD_TAG: usize = 64 * 1024;

/// PEP 503 name normalisation: lower case, runs of `-`, `_`, `.` as one `-`.
///
/// ```
/// assert_eq!(filters::ecosystem::pypi::normalize("Foo.Bar__baz"), "foo-bar-baz");
/// ```
pub fn normalize(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut in_separator = false;
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !in_separator {
                out.push('-');
            }
            in_separator = true;
        } else {
            out.push(c.to_ascii_lowercase());
            in_separator = false;
        }
    }
    out
}

/// What a path of a PyPI remote names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Document {
    /// `simple/`: every project.
    RootIndex,
    /// `simple/{project}/`, with the name normalised.
    Project { name: String },
    /// `pypi/{project}/json` (and `pypi/{project}/{version}/json`).
    JsonApi {
        name: String,
        version: Option<String>,
    },
}

impl Document {
    /// The canonical remote path of this document (what is fetched and
    /// keyed), so `simple/Foo.Bar` and `simple/foo-bar/` share one entry.
    pub fn canonical_path(&self) -> String {
        match self {
            Document::RootIndex => "simple/".into(),
            Document::Project { name } => format!("simple/{name}/"),
            Document::JsonApi {
                name,
                version: None,
            } => format!("pypi/{name}/json"),
            Document::JsonApi {
                name,
                version: Some(v),
            } => format!("pypi/{name}/{v}/json"),
        }
    }
}

/// The index document a (decoded) remote path names; `None` for a file.
pub fn document(path: &str) -> Option<Document> {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["simple"] | ["simple", ""] => Some(Document::RootIndex),
        ["simple", name] | ["simple", name, ""] if !name.is_empty() => Some(Document::Project {
            name: normalize(name),
        }),
        ["pypi", name, "json"] if !name.is_empty() => Some(Document::JsonApi {
            name: normalize(name),
            version: None,
        }),
        ["pypi", name, version, "json"] if !name.is_empty() && !version.is_empty() => {
            Some(Document::JsonApi {
                name: normalize(name),
                version: Some((*version).to_string()),
            })
        }
        _ => None,
    }
}

/// The form of a simple-API document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Html,
    Json,
}

impl Form {
    /// A short name for cache keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Html => "html",
            Form::Json => "json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Form::Html => HTML_TYPE,
            Form::Json => JSON_TYPE,
        }
    }
}

/// PEP 691 content negotiation: the form with the highest `q` in `Accept`
/// (JSON on a tie, as the PEP prefers); HTML without an `Accept`.
///
/// ```
/// use filters::ecosystem::pypi::{negotiate, Form};
/// let pip = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
/// assert_eq!(negotiate(Some(pip)), Form::Json);
/// assert_eq!(negotiate(Some("text/html")), Form::Html);
/// assert_eq!(negotiate(None), Form::Html);
/// ```
pub fn negotiate(accept: Option<&str>) -> Form {
    let Some(accept) = accept else {
        return Form::Html;
    };
    let ranges = crate::accept::ranges(accept);
    let json = crate::accept::best_q(
        &ranges,
        &[
            "application/vnd.pypi.simple.v1+json",
            "application/vnd.pypi.simple.latest+json",
        ],
    );
    let html = crate::accept::best_q(
        &ranges,
        &[
            "application/vnd.pypi.simple.v1+html",
            "application/vnd.pypi.simple.latest+html",
            "text/html",
            "*/*",
        ],
    );
    if json > 0.0 && json >= html {
        Form::Json
    } else {
        Form::Html
    }
}

/// The `Accept` sent upstream for a form: JSON where the index offers it,
/// HTML otherwise (artifactd converts), so one request serves either way.
pub fn upstream_accept(form: Form) -> &'static str {
    match form {
        Form::Json => "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1",
        Form::Html => "application/vnd.pypi.simple.v1+html, text/html;q=0.9",
    }
}

/// Whether a `Content-Type` is a PEP 691 JSON document.
pub fn is_json_type(content_type: &str) -> bool {
    let media = content_type.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case(JSON_TYPE)
        || media.eq_ignore_ascii_case("application/vnd.pypi.simple.latest+json")
        || media.eq_ignore_ascii_case("application/json")
}

/// A file (or project) link of a simple page, after rewriting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileLink {
    /// The client's URL, fragment included.
    pub url: String,
    /// The decoded remote path the link comes back to, if it does.
    pub remote_path: Option<String>,
    /// The last path segment, decoded: the file (or project) name.
    pub filename: String,
    /// `(algorithm, hex)` from the URL fragment or JSON `hashes`.
    pub hashes: Vec<(String, String)>,
    pub requires_python: Option<String>,
    /// `Some("")`: yanked without a reason.
    pub yanked: Option<String>,
    /// PEP 658/714: `true`, or `algorithm=hex` of the metadata file.
    pub core_metadata: Option<String>,
    /// PEP 700 `upload-time` (JSON form only), as written.
    pub upload_time: Option<String>,
}

impl FileLink {
    /// The digest a download of this file must have, as `sha256:hex`
    /// (or `sha512:`), when the index publishes one.
    pub fn expected_digest(&self) -> Option<String> {
        preferred_digest(self.hashes.iter().map(|(a, h)| (a.as_str(), h.as_str())))
    }

    /// The digest of the PEP 658 metadata file, when published.
    pub fn metadata_digest(&self) -> Option<String> {
        let (algorithm, hex) = self.core_metadata.as_deref()?.split_once('=')?;
        preferred_digest([(algorithm, hex)].into_iter())
    }
}

/// `sha256:hex` (preferred) or `sha512:hex` from published hashes.
fn preferred_digest<'a>(hashes: impl Iterator<Item = (&'a str, &'a str)>) -> Option<String> {
    let mut best: Option<String> = None;
    for (algorithm, hex) in hashes {
        let algorithm = algorithm.to_ascii_lowercase();
        let valid = |len: usize| hex.len() == len && hex.bytes().all(|b| b.is_ascii_hexdigit());
        match algorithm.as_str() {
            "sha256" if valid(64) => return Some(format!("sha256:{}", hex.to_ascii_lowercase())),
            "sha512" if valid(128) => best = Some(format!("sha512:{}", hex.to_ascii_lowercase())),
            _ => {}
        }
    }
    best
}

/// Rewrites a PEP 503 page chunk by chunk; see the module docs.
pub struct HtmlRewriter {
    map: LinkMap,
    shown: Shown,
    carry: Vec<u8>,
    links: Vec<FileLink>,
}

impl HtmlRewriter {
    /// A rewriter whose links come back through `map`, with the releases
    /// `shown` refuses marked yanked.
    pub fn new(map: LinkMap, shown: Shown) -> HtmlRewriter {
        HtmlRewriter {
            map,
            shown,
            carry: Vec::new(),
            links: Vec::new(),
        }
    }

    /// Rewrites what of `input` can be, appending to `out`.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<u8>) {
        self.carry.extend_from_slice(input);
        let data = std::mem::take(&mut self.carry);
        let mut at = 0;
        while at < data.len() {
            let Some(open) = find(&data[at..], b'<').map(|i| at + i) else {
                out.extend_from_slice(&data[at..]);
                at = data.len();
                break;
            };
            out.extend_from_slice(&data[at..open]);
            let Some(close) = find(&data[open..], b'>').map(|i| open + i) else {
                if data.len() - open > MAX_HELD_TAG {
                    out.extend_from_slice(&data[open..]);
                    at = data.len();
                } else {
                    at = open;
                }
                break;
            };
            self.tag(&data[open..=close], out);
            at = close + 1;
        }
        self.carry = data[at..].to_vec();
    }

    /// Ends the document: an unfinished tag is passed on as it was.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.carry);
    }

    /// The links rewritten so far.
    pub fn links(&self) -> &[FileLink] {
        &self.links
    }

    pub fn into_links(self) -> Vec<FileLink> {
        self.links
    }

    /// One complete tag `<…>`: an anchor gets its `href` rewritten.
    fn tag(&mut self, tag: &[u8], out: &mut Vec<u8>) {
        let is_anchor =
            tag.len() > 3 && tag[1].eq_ignore_ascii_case(&b'a') && tag[2].is_ascii_whitespace();
        if !is_anchor {
            out.extend_from_slice(tag);
            return;
        }
        let text = String::from_utf8_lossy(tag);
        let attrs = attributes(&text[2..text.len() - 1]);
        let Some(href) = attrs.iter().find(|a| a.name.eq_ignore_ascii_case("href")) else {
            out.extend_from_slice(tag);
            return;
        };
        let mapped = self.map.map(&unescape(href.value));
        let attr = |name: &str| {
            attrs
                .iter()
                .find(|a| a.name.eq_ignore_ascii_case(name))
                .map(|a| unescape(a.value))
        };
        let filename = filename_of(&mapped);
        let refused = attr("data-yanked")
            .is_none()
            .then(|| refused_file(&self.shown, &filename))
            .flatten();
        let link = FileLink {
            yanked: attr("data-yanked").or_else(|| refused.clone()),
            filename,
            hashes: fragment_hashes(&mapped.url),
            requires_python: attr("data-requires-python"),
            core_metadata: attr("data-core-metadata").or_else(|| attr("data-dist-info-metadata")),
            upload_time: None,
            remote_path: mapped.remote_path.as_deref().map(decode),
            url: mapped.url,
        };
        // The tag as it was, with only the href value replaced (offsets
        // are into `text`, which is `tag` unless it was not UTF-8).
        let start = 2 + href.value_start;
        let end = start + href.value.len();
        let mut rewritten = String::with_capacity(text.len() + 64);
        match &refused {
            Some(why) => {
                rewritten.push_str(&text[..2]);
                rewritten.push_str(&format!(" data-yanked=\"{}\"", escape(why)));
                rewritten.push_str(&text[2..start]);
            }
            None => rewritten.push_str(&text[..start]),
        }
        if href.quoted {
            rewritten.push_str(&escape(&link.url));
        } else {
            rewritten.push('"');
            rewritten.push_str(&escape(&link.url));
            rewritten.push('"');
        }
        rewritten.push_str(&text[end..]);
        out.extend_from_slice(rewritten.as_bytes());
        self.links.push(link);
    }
}

/// Why the firewall refuses the release a distribution file belongs to.
fn refused_file(shown: &Shown, filename: &str) -> Option<String> {
    shown.refused.as_ref()?;
    shown.refused(&package_of(filename)?.version)
}

fn find(haystack: &[u8], needle: u8) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

/// One attribute of a tag; `value_start` is its offset in the attribute text.
struct Attribute<'t> {
    name: &'t str,
    value: &'t str,
    value_start: usize,
    quoted: bool,
}

/// The attributes of a tag's inside (after the tag name, before `>`).
fn attributes(inside: &str) -> Vec<Attribute<'_>> {
    let bytes = inside.as_bytes();
    let mut attrs = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_ascii_whitespace() || bytes[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < bytes.len() && !bytes[i].is_ascii_whitespace() && !b"=/".contains(&bytes[i]) {
            i += 1;
        }
        let name = &inside[name_start..i];
        if name.is_empty() {
            i += 1;
            continue;
        }
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] != b'=' {
            attrs.push(Attribute {
                name,
                value: "",
                value_start: i,
                quoted: true,
            });
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let (value_start, value_end, quoted) = match bytes.get(i) {
            Some(&q @ (b'"' | b'\'')) => {
                let start = i + 1;
                let end = find(&bytes[start..], q).map_or(bytes.len(), |e| start + e);
                i = (end + 1).min(bytes.len());
                (start, end, true)
            }
            _ => {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                (start, i, false)
            }
        };
        attrs.push(Attribute {
            name,
            value: &inside[value_start..value_end],
            value_start,
            quoted,
        });
    }
    attrs
}

/// The character references simple pages use.
fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Escapes text for a double-quoted attribute value.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

fn decode(path: &str) -> String {
    percent_encoding::percent_decode_str(path)
        .decode_utf8_lossy()
        .into_owned()
}

/// The last non-empty path segment of a link, decoded.
fn filename_of(mapped: &Mapped) -> String {
    let url = mapped.url.split(['#', '?']).next().unwrap_or("");
    let segment = url
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    decode(segment)
}

/// `#sha256=…` (and any `#algo=hex`) of a link.
fn fragment_hashes(url: &str) -> Vec<(String, String)> {
    let Some((_, fragment)) = url.split_once('#') else {
        return Vec::new();
    };
    fragment
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(a, h)| (a.to_string(), h.to_string()))
        .collect()
}

/// A JSON document that was not what its type said.
#[derive(Debug, thiserror::Error)]
#[error("not a PyPI JSON document: {0}")]
pub struct JsonError(String);

/// Rewrites a PEP 691 JSON document (project page or root index): every
/// `files[].url` through the remote; returns the file links found. With
/// `shown.hide_after`, files uploaded (PEP 700 `upload-time`) after that
/// instant are left out (files without an upload time stay); files of
/// releases the firewall refuses are yanked with its reason (PEP 592:
/// resolvers skip them, an exact pin shows the reason).
pub fn rewrite_simple_json(
    doc: &[u8],
    map: &LinkMap,
    shown: &Shown,
) -> Result<(Vec<u8>, Vec<FileLink>), JsonError> {
    let mut value: Value = serde_json::from_slice(doc).map_err(|e| JsonError(e.to_string()))?;
    let mut links = Vec::new();
    if let (Some(files), Some(cutoff)) = (
        value.get_mut("files").and_then(Value::as_array_mut),
        shown.hide_after,
    ) {
        files.retain(|file| {
            let uploaded = file
                .get("upload-time")
                .and_then(Value::as_str)
                .and_then(|t| humantime::parse_rfc3339_weak(t.trim_end_matches('Z')).ok());
            uploaded.is_none_or(|t| t <= cutoff)
        });
    }
    if let Some(files) = value.get_mut("files").and_then(Value::as_array_mut) {
        for file in files.iter_mut() {
            let filename = file.get("filename").and_then(Value::as_str);
            let refused = filename.and_then(|name| refused_file(shown, name));
            if let (Some(why), Some(entry)) = (refused, file.as_object_mut()) {
                if entry.get("yanked").is_none_or(|y| y == &Value::Bool(false)) {
                    entry.insert("yanked".into(), Value::String(why));
                }
            }
            if let Some(link) = rewrite_file_entry(file, "url", "hashes", map) {
                links.push(link);
            }
        }
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| JsonError(e.to_string()))?;
    Ok((bytes, links))
}

/// Rewrites a `/pypi/{project}/json` document: `urls[]` and every
/// `releases.*[]` entry; files of releases the firewall refuses are
/// marked yanked with its reason.
pub fn rewrite_json_api(
    doc: &[u8],
    map: &LinkMap,
    shown: &Shown,
) -> Result<(Vec<u8>, Vec<FileLink>), JsonError> {
    let mut value: Value = serde_json::from_slice(doc).map_err(|e| JsonError(e.to_string()))?;
    let mut links = Vec::new();
    let mut rewrite_list = |list: &mut Value| {
        for file in list.as_array_mut().into_iter().flatten() {
            let filename = file.get("filename").and_then(Value::as_str);
            let refused = filename.and_then(|name| refused_file(shown, name));
            if let (Some(why), Some(entry)) = (refused, file.as_object_mut()) {
                entry.insert("yanked".into(), Value::Bool(true));
                entry.insert("yanked_reason".into(), Value::String(why));
            }
            if let Some(link) = rewrite_file_entry(file, "url", "digests", map) {
                links.push(link);
            }
        }
    };
    if let Some(urls) = value.get_mut("urls") {
        rewrite_list(urls);
    }
    if let Some(releases) = value.get_mut("releases").and_then(Value::as_object_mut) {
        releases.values_mut().for_each(&mut rewrite_list);
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| JsonError(e.to_string()))?;
    Ok((bytes, links))
}

/// Rewrites `entry[url_field]` in place and reads the entry's hashes.
fn rewrite_file_entry(
    entry: &mut Value,
    url_field: &str,
    hashes_field: &str,
    map: &LinkMap,
) -> Option<FileLink> {
    let object = entry.as_object_mut()?;
    let mapped = map.map(object.get(url_field)?.as_str()?);
    object.insert(url_field.into(), Value::String(mapped.url.clone()));
    let hashes = object
        .get(hashes_field)
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .filter_map(|(a, v)| Some((a.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let text = |field: &str| {
        object
            .get(field)
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let core_metadata = match object
        .get("core-metadata")
        .or(object.get("data-dist-info-metadata"))
    {
        Some(Value::Object(h)) => h
            .iter()
            .find_map(|(a, v)| Some(format!("{a}={}", v.as_str()?))),
        Some(Value::Bool(true)) => Some("true".into()),
        _ => None,
    };
    Some(FileLink {
        filename: text("filename").unwrap_or_else(|| filename_of(&mapped)),
        remote_path: mapped.remote_path.as_deref().map(decode),
        url: mapped.url,
        hashes,
        requires_python: text("requires-python").or_else(|| text("requires_python")),
        yanked: match object.get("yanked") {
            Some(Value::String(reason)) => Some(reason.clone()),
            Some(Value::Bool(true)) => Some(
                object
                    .get("yanked_reason")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            ),
            _ => None,
        },
        core_metadata,
        upload_time: text("upload-time").or_else(|| text("upload_time_iso_8601")),
    })
}

/// Renders a PEP 691 project page from the links of an HTML page.
pub fn project_json(name: &str, links: &[FileLink]) -> Vec<u8> {
    let files: Vec<Value> = links
        .iter()
        .map(|link| {
            let mut file = Map::new();
            file.insert("filename".into(), link.filename.clone().into());
            file.insert("url".into(), link.url.clone().into());
            let hashes: Map<String, Value> = link
                .hashes
                .iter()
                .map(|(a, h)| (a.clone(), Value::String(h.clone())))
                .collect();
            file.insert("hashes".into(), Value::Object(hashes));
            if let Some(requires) = &link.requires_python {
                file.insert("requires-python".into(), requires.clone().into());
            }
            if let Some(reason) = &link.yanked {
                let yanked = if reason.is_empty() {
                    Value::Bool(true)
                } else {
                    Value::String(reason.clone())
                };
                file.insert("yanked".into(), yanked);
            }
            if let Some(metadata) = &link.core_metadata {
                let value = match metadata.split_once('=') {
                    Some((a, h)) => json!({ a: h }),
                    None => Value::Bool(true),
                };
                file.insert("core-metadata".into(), value.clone());
                file.insert("dist-info-metadata".into(), value);
            }
            if let Some(time) = &link.upload_time {
                file.insert("upload-time".into(), time.clone().into());
            }
            Value::Object(file)
        })
        .collect();
    let doc = json!({"meta": {"api-version": "1.0"}, "name": name, "files": files});
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// Renders a PEP 503 project page from links (of a JSON document served to
/// a client that asked for HTML).
pub fn project_html(name: &str, links: &[FileLink]) -> Vec<u8> {
    let name = escape(name);
    let mut out = format!(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.0\">\n    <title>Links for {name}</title>\n  </head>\n  <body>\n    <h1>Links for {name}</h1>\n"
    );
    for link in links {
        out.push_str("    <a href=\"");
        out.push_str(&escape(&link.url));
        out.push('"');
        if !link.url.contains('#') {
            if let Some(digest) = link.expected_digest() {
                // The fragment carries the hash in HTML (PEP 503).
                let (algorithm, hex) = digest.split_once(':').unwrap_or_default();
                out.truncate(out.len() - 1);
                out.push_str(&format!("#{algorithm}={hex}\""));
            }
        }
        let mut attribute = |name: &str, value: &str| {
            out.push_str(&format!(" {name}=\"{}\"", escape(value)));
        };
        if let Some(requires) = &link.requires_python {
            attribute("data-requires-python", requires);
        }
        if let Some(reason) = &link.yanked {
            attribute("data-yanked", reason);
        }
        if let Some(metadata) = &link.core_metadata {
            attribute("data-dist-info-metadata", metadata);
            attribute("data-core-metadata", metadata);
        }
        out.push_str(&format!(">{}</a><br/>\n", escape(&link.filename)));
    }
    out.push_str("  </body>\n</html>\n");
    out.into_bytes()
}

/// Renders the PEP 691 root index from the project links of an HTML page.
pub fn root_json(links: &[FileLink]) -> Vec<u8> {
    let projects: Vec<Value> = links
        .iter()
        .map(|link| json!({"name": link.filename}))
        .collect();
    serde_json::to_vec(&json!({"meta": {"api-version": "1.0"}, "projects": projects}))
        .unwrap_or_default()
}

/// The normalised project a distribution file belongs to, from its name
/// (wheels: `{name}-{version}-…whl` with `_` for separators; sdists:
/// `{name}-{version}.tar.gz` or `.zip`).
///
/// ```
/// assert_eq!(filters::ecosystem::pypi::project_of_file("Demo_App-1.0-py3-none-any.whl").as_deref(), Some("demo-app"));
/// assert_eq!(filters::ecosystem::pypi::project_of_file("demo-app-1.0.tar.gz").as_deref(), Some("demo-app"));
/// assert_eq!(filters::ecosystem::pypi::project_of_file("README.md"), None);
/// ```
pub fn project_of_file(filename: &str) -> Option<String> {
    if let Some(stem) = filename.strip_suffix(".whl") {
        let (name, _) = stem.split_once('-')?;
        return Some(normalize(name));
    }
    let stem = filename
        .strip_suffix(".tar.gz")
        .or_else(|| filename.strip_suffix(".zip"))
        .or_else(|| filename.strip_suffix(".tar.bz2"))?;
    Some(normalize(&stem[..version_start(stem)?]))
}

/// The project and version of a distribution file's path (a wheel, an
/// sdist, or the PEP 658 metadata file of either), by the last segment.
///
/// ```
/// let found = filters::ecosystem::pypi::package_of("packages/ab/Acc_Demo-1.1.0-py3-none-any.whl.metadata").unwrap();
/// assert_eq!((found.name.as_str(), found.version.as_str()), ("acc-demo", "1.1.0"));
/// let found = filters::ecosystem::pypi::package_of("f/acc-demo-2.0rc1.tar.gz").unwrap();
/// assert_eq!(found.version, "2.0rc1");
/// ```
pub fn package_of(path: &str) -> Option<super::PackageVersion> {
    let filename = path.rsplit('/').next()?;
    let filename = filename.strip_suffix(".metadata").unwrap_or(filename);
    let name = project_of_file(filename)?;
    let version = if let Some(stem) = filename.strip_suffix(".whl") {
        stem.split('-').nth(1)?
    } else {
        let stem = [".tar.gz", ".zip", ".tar.bz2"]
            .iter()
            .find_map(|suffix| filename.strip_suffix(suffix))?;
        &stem[version_start(stem)? + 1..]
    };
    Some(super::PackageVersion {
        name,
        version: version.to_string(),
    })
}

/// The versions a project's PEP 691 page (by its files) or JSON API
/// document (by its `releases`) lists, as the upstream sent it.
pub fn listed_versions(doc: &[u8]) -> Option<Vec<String>> {
    let value: Value = serde_json::from_slice(doc).ok()?;
    if let Some(releases) = value.get("releases").and_then(Value::as_object) {
        return Some(releases.keys().cloned().collect());
    }
    let files = value.get("files")?.as_array()?;
    Some(
        files
            .iter()
            .filter_map(|f| package_of(f.get("filename")?.as_str()?))
            .map(|release| release.version)
            .collect(),
    )
}

/// Where the version of an sdist's stem starts: its last `-` followed by
/// a digit.
fn version_start(stem: &str) -> Option<usize> {
    stem.char_indices()
        .filter(|&(i, c)| c == '-' && stem[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
        .map(|(i, _)| i)
        .next_back()
}

/// Merges PEP 691 project pages of a virtual repository's members, in
/// order: a file (by name) comes from the first member listing it.
pub fn merge_project_json(name: &str, pages: &[Value]) -> Value {
    let mut seen = std::collections::HashSet::new();
    let mut files = Vec::new();
    for page in pages {
        for file in page["files"].as_array().into_iter().flatten() {
            let filename = file["filename"].as_str().unwrap_or_default().to_string();
            if seen.insert(filename) {
                files.push(file.clone());
            }
        }
    }
    json!({"meta": {"api-version": "1.0"}, "name": name, "files": files})
}

/// Merges PEP 691 root indexes: every project of every member, once.
pub fn merge_root_json(indexes: &[Value]) -> Value {
    let mut seen = std::collections::HashSet::new();
    let mut projects = Vec::new();
    for index in indexes {
        for project in index["projects"].as_array().into_iter().flatten() {
            let name = project["name"].as_str().unwrap_or_default();
            if seen.insert(normalize(name)) {
                projects.push(json!({"name": name}));
            }
        }
    }
    json!({"meta": {"api-version": "1.0"}, "projects": projects})
}

/// The file links of a PEP 691 project page, as they are.
pub fn links_of_json(page: &Value) -> Vec<FileLink> {
    let mut page = page.clone();
    let mut links = Vec::new();
    let identity = LinkMap::new(
        "http://artifactd.invalid/",
        Vec::new(),
        "http://artifactd.invalid/",
    );
    let Ok(identity) = identity else {
        return links;
    };
    for file in page["files"].as_array_mut().into_iter().flatten() {
        if let Some(link) = rewrite_file_entry(file, "url", "hashes", &identity) {
            links.push(link);
        }
    }
    links
}

/// The root index as HTML, from project names.
pub fn root_html(names: &[&str]) -> Vec<u8> {
    let mut out = String::from(
        "<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" content=\"1.0\">\n    <title>Simple index</title>\n  </head>\n  <body>\n",
    );
    for name in names {
        let name = escape(name);
        out.push_str(&format!(
            "    <a href=\"{}/\">{name}</a><br/>\n",
            normalize(&name)
        ));
    }
    out.push_str("  </body>\n</html>\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::Upstream;

    #[test]
    fn members_merge_first_file_wins() {
        let a = json!({"name": "x", "files": [{"filename": "x-1.0.whl", "url": "http://a/x-1.0.whl", "hashes": {}}]});
        let b = json!({"name": "x", "files": [
            {"filename": "x-1.0.whl", "url": "http://b/x-1.0.whl", "hashes": {}},
            {"filename": "x-0.9.whl", "url": "http://b/x-0.9.whl", "hashes": {"sha256": "aa"}}
        ]});
        let merged = merge_project_json("x", &[a, b]);
        let urls: Vec<&str> = merged["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["url"].as_str().unwrap())
            .collect();
        assert_eq!(urls, ["http://a/x-1.0.whl", "http://b/x-0.9.whl"]);
        let links = links_of_json(&merged);
        assert_eq!(links[1].url, "http://b/x-0.9.whl");
        assert_eq!(links[1].hashes, [("sha256".to_string(), "aa".to_string())]);
        let roots = merge_root_json(&[
            json!({"projects": [{"name": "A.b"}]}),
            json!({"projects": [{"name": "a-b"}, {"name": "c"}]}),
        ]);
        assert_eq!(roots["projects"].as_array().unwrap().len(), 2);
        assert!(String::from_utf8(root_html(&["A.b"]))
            .unwrap()
            .contains("href=\"a-b/\""));
    }

    const PAGE: &str = include_str!("../../../tests/fixtures/pypi/pypiserver-tiny-dep.html");
    const ROOT: &str = include_str!("../../../tests/fixtures/pypi/pypiserver-root.html");
    const ATTRS: &str = include_str!("../../../tests/fixtures/pypi/attributes.html");
    const JSON_PAGE: &str = include_str!("../../../tests/fixtures/pypi/pep691-project.json");

    fn map(page: &str) -> LinkMap {
        let upstream = Upstream::new("http://127.0.0.1:38111", &[]).unwrap();
        LinkMap::new(
            &format!("http://127.0.0.1:38111/{page}"),
            vec![upstream],
            "http://cache:8080/api/v1/remote/pypi/",
        )
        .unwrap()
    }

    fn refusing(version: &'static str) -> Shown {
        Shown {
            hide_after: None,
            refused: Some(std::sync::Arc::new(move |v: &str| {
                (v == version).then(|| "refused by rule 'm' (MAL-1)".to_string())
            })),
        }
    }

    #[test]
    fn refused_releases_are_yanked_with_the_reason() {
        let page = r#"<a href="/f/acc_demo-1.0.0.tar.gz">a</a><a href="/f/acc_demo-1.1.0-py3-none-any.whl#sha256=00">b</a>"#;
        let mut rewriter = HtmlRewriter::new(map("simple/acc-demo/"), refusing("1.1.0"));
        let mut out = Vec::new();
        rewriter.push(page.as_bytes(), &mut out);
        rewriter.finish(&mut out);
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains(r#"<a data-yanked="refused by rule &#39;m&#39; (MAL-1)" href="#)
                || out.contains(r#"<a data-yanked="refused by rule 'm' (MAL-1)" href="#),
            "{out}"
        );
        assert_eq!(out.matches("data-yanked").count(), 1, "{out}");
        let links = rewriter.into_links();
        assert_eq!(links[0].yanked, None);
        assert_eq!(
            links[1].yanked.as_deref(),
            Some("refused by rule 'm' (MAL-1)")
        );
        let doc = br#"{"meta": {"api-version": "1.1"}, "name": "acc-demo", "files": [
            {"filename": "acc_demo-1.1.0.tar.gz", "url": "/f/acc_demo-1.1.0.tar.gz", "hashes": {}},
            {"filename": "acc_demo-1.0.0.tar.gz", "url": "/f/acc_demo-1.0.0.tar.gz", "hashes": {}}]}"#;
        let (json, _) =
            rewrite_simple_json(doc, &map("simple/acc-demo/"), &refusing("1.1.0")).unwrap();
        let json: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["files"][0]["yanked"], "refused by rule 'm' (MAL-1)");
        assert!(json["files"][1].get("yanked").is_none());
        let api = br#"{"info": {"version": "1.1.0"}, "urls": [{"filename": "acc_demo-1.1.0.tar.gz", "url": "/f/a"}],
            "releases": {"1.0.0": [{"filename": "acc_demo-1.0.0.tar.gz", "url": "/f/b"}]}}"#;
        let (json, _) =
            rewrite_json_api(api, &map("pypi/acc-demo/json"), &refusing("1.1.0")).unwrap();
        let json: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(json["urls"][0]["yanked"], true);
        assert!(json["releases"]["1.0.0"][0].get("yanked").is_none());
    }

    fn rewrite_in_chunks(page: &str, doc: &str, chunk: usize) -> (String, Vec<FileLink>) {
        let mut rewriter = HtmlRewriter::new(map(page), Shown::default());
        let mut out = Vec::new();
        for piece in doc.as_bytes().chunks(chunk) {
            rewriter.push(piece, &mut out);
        }
        rewriter.finish(&mut out);
        (String::from_utf8(out).unwrap(), rewriter.into_links())
    }

    #[test]
    fn pypiserver_project_page_links_come_back_through_the_remote() {
        let (out, links) = rewrite_in_chunks("simple/tiny-dep/", PAGE, 4096);
        assert!(!out.contains("href=\"/packages"), "{out}");
        assert_eq!(
            out.matches("http://cache:8080/api/v1/remote/pypi/packages/")
                .count(),
            2
        );
        assert_eq!(links.len(), 2);
        assert_eq!(links[0].filename, "tiny_dep-1.0-py3-none-any.whl");
        assert_eq!(
            links[0].remote_path.as_deref(),
            Some("packages/tiny_dep-1.0-py3-none-any.whl")
        );
        assert_eq!(
            links[0].expected_digest().unwrap(),
            "sha256:3ee889b5d9a017e760998d61419d72ff49d5c7be4e148c9181a439920003efd8"
        );
        // Everything but the hrefs is untouched.
        let original_rest = PAGE.replace("href=\"/packages/", "href=\"");
        let rewritten_rest = out.replace(
            "href=\"http://cache:8080/api/v1/remote/pypi/packages/",
            "href=\"",
        );
        assert_eq!(original_rest, rewritten_rest);
    }

    #[test]
    fn every_chunk_boundary_gives_the_same_document() {
        let (whole, whole_links) = rewrite_in_chunks("simple/tiny-dep/", PAGE, PAGE.len());
        for size in 1..64 {
            let (out, links) = rewrite_in_chunks("simple/tiny-dep/", PAGE, size);
            assert_eq!(out, whole, "chunks of {size}");
            assert_eq!(links, whole_links);
        }
        let (whole, _) = rewrite_in_chunks("simple/demo/", ATTRS, ATTRS.len());
        for size in [1, 2, 3, 7, 13, 50] {
            assert_eq!(rewrite_in_chunks("simple/demo/", ATTRS, size).0, whole);
        }
    }

    #[test]
    fn resolver_attributes_survive_and_are_read() {
        let (out, links) = rewrite_in_chunks("simple/demo/", ATTRS, 5);
        assert!(out.contains("data-requires-python=\"&gt;=3.8\""), "{out}");
        assert!(out.contains("data-yanked=\"broken build\""));
        assert!(out.contains("data-core-metadata=\"sha256=4f2c"));
        assert!(out.contains(
            "HREF='http://cache:8080/api/v1/remote/pypi/packages/ab/demo-1.0.tar.gz?a=1&amp;b=2#sha256="
        ));
        let wheel = &links[0];
        assert_eq!(wheel.requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(wheel.yanked, None);
        assert!(wheel.metadata_digest().unwrap().starts_with("sha256:4f2c"));
        let sdist = &links[1];
        assert_eq!(sdist.yanked.as_deref(), Some("broken build"));
        assert_eq!(
            sdist.remote_path.as_deref(),
            Some("packages/ab/demo-1.0.tar.gz")
        );
        // An unquoted href is quoted on the way out; a foreign one kept.
        assert!(
            out.contains("href=\"http://cache:8080/api/v1/remote/pypi/packages/cd/demo-0.9.zip\"")
        );
        assert!(out.contains("href=\"https://elsewhere.example/demo-0.1.zip\""));
        assert_eq!(links[3].remote_path, None);
        assert_eq!(links[3].expected_digest(), None);
    }

    #[test]
    fn an_endless_tag_is_passed_on_not_held() {
        let mut rewriter = HtmlRewriter::new(map("simple/x/"), Shown::default());
        let mut out = Vec::new();
        let big = vec![b'x'; MAX_HELD_TAG + 10];
        rewriter.push(b"<a href=\"", &mut out);
        rewriter.push(&big, &mut out);
        assert_eq!(out.len(), MAX_HELD_TAG + 19);
    }

    #[test]
    fn root_index_links_stay_relative_to_the_proxy_and_render_as_json() {
        let (out, links) = rewrite_in_chunks("simple/", ROOT, 7);
        assert!(out.contains("href=\"http://cache:8080/api/v1/remote/pypi/simple/demo-app/\""));
        let json: Value = serde_json::from_slice(&root_json(&links)).unwrap();
        assert_eq!(json["projects"][1]["name"], "tiny-dep");
    }

    #[test]
    fn html_page_renders_as_pep691_json() {
        let (_, links) = rewrite_in_chunks("simple/demo/", ATTRS, 4096);
        let json: Value = serde_json::from_slice(&project_json("demo", &links)).unwrap();
        assert_eq!(json["name"], "demo");
        assert_eq!(json["meta"]["api-version"], "1.0");
        let files = json["files"].as_array().unwrap();
        assert_eq!(files[0]["requires-python"], ">=3.8");
        assert_eq!(
            files[0]["core-metadata"]["sha256"].as_str().unwrap().len(),
            64
        );
        assert_eq!(files[1]["yanked"], "broken build");
        assert_eq!(files[2]["yanked"], Value::Null, "not yanked");
        assert!(files[0]["url"]
            .as_str()
            .unwrap()
            .starts_with("http://cache:8080/"));
        assert_eq!(files[0]["hashes"]["sha256"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn json_links_render_as_an_html_page_a_resolver_reads_the_same() {
        let (_, links) = rewrite_simple_json(
            JSON_PAGE.as_bytes(),
            &map("simple/demo/"),
            &Shown::default(),
        )
        .unwrap();
        let html = String::from_utf8(project_html("demo", &links)).unwrap();
        let (_, reread) = rewrite_in_chunks("simple/demo/", &html, 9);
        assert_eq!(reread.len(), 2);
        assert_eq!(
            reread[0].url,
            format!("{}#sha256={}", links[0].url, links[0].hashes[0].1)
        );
        assert_eq!(reread[0].requires_python.as_deref(), Some(">=3.8"));
        assert_eq!(reread[0].metadata_digest(), links[0].metadata_digest());
        assert_eq!(reread[1].expected_digest(), links[1].expected_digest());
    }

    #[test]
    fn pep691_json_is_rewritten_in_place() {
        let (out, links) = rewrite_simple_json(
            JSON_PAGE.as_bytes(),
            &map("simple/demo/"),
            &Shown::default(),
        )
        .unwrap();
        let json: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            json["files"][0]["url"],
            "http://cache:8080/api/v1/remote/pypi/packages/aa/demo-2.0-py3-none-any.whl"
        );
        assert_eq!(
            json["files"][0]["upload-time"],
            "2026-11-29T10:00:00.000000Z"
        );
        assert_eq!(json["versions"][1], "2.0", "unknown fields are kept");
        assert_eq!(
            links[0].upload_time.as_deref(),
            Some("2026-11-29T10:00:00.000000Z")
        );
        assert!(links[0].expected_digest().unwrap().starts_with("sha256:"));
        assert!(rewrite_simple_json(b"<html>", &map("simple/demo/"), &Shown::default()).is_err());
        // Quarantine leaves out what was uploaded after the cutoff.
        let cutoff = humantime::parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
        let (out, links) = rewrite_simple_json(
            JSON_PAGE.as_bytes(),
            &map("simple/demo/"),
            &Shown::published_before(Some(cutoff)),
        )
        .unwrap();
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].filename, "demo-1.0-py3-none-any.whl");
        assert!(!String::from_utf8(out).unwrap().contains("demo-2.0"));
    }

    #[test]
    fn json_api_urls_and_releases_are_rewritten() {
        let doc = br#"{"info":{"version":"1.1"},"urls":[{"url":"http://127.0.0.1:38111/packages/t-1.1.whl","digests":{"sha256":"aa"}}],"releases":{"1.0":[{"url":"http://127.0.0.1:38111/packages/t-1.0.whl"}]}}"#;
        let (out, links) = rewrite_json_api(doc, &map("pypi/t/json"), &Shown::default()).unwrap();
        let json: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            json["releases"]["1.0"][0]["url"],
            "http://cache:8080/api/v1/remote/pypi/packages/t-1.0.whl"
        );
        assert_eq!(links.len(), 2);
    }

    #[test]
    fn paths_name_documents_with_normalised_projects() {
        assert_eq!(document("simple/"), Some(Document::RootIndex));
        assert_eq!(document("simple"), Some(Document::RootIndex));
        let project = document("simple/Demo.App").unwrap();
        assert_eq!(project.canonical_path(), "simple/demo-app/");
        assert_eq!(document("simple/demo_app/").unwrap(), project);
        assert_eq!(
            document("pypi/Foo/json").unwrap().canonical_path(),
            "pypi/foo/json"
        );
        assert_eq!(
            document("pypi/foo/1.0/json").unwrap().canonical_path(),
            "pypi/foo/1.0/json"
        );
        assert_eq!(document("packages/demo-1.0.whl"), None);
        assert_eq!(document("simple/a/b"), None);
    }

    #[test]
    fn negotiation_follows_q_values() {
        assert_eq!(
            negotiate(Some("text/html, application/vnd.pypi.simple.v1+json;q=0.5")),
            Form::Html
        );
        assert_eq!(
            negotiate(Some("application/vnd.pypi.simple.latest+json")),
            Form::Json
        );
        assert_eq!(negotiate(Some("*/*")), Form::Html);
    }
}
