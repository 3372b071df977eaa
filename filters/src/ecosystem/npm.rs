//! The npm registry API: which paths are package documents, tarballs or
//! searches, the two document forms, and the rewriting of a package
//! document so its tarballs come back through the remote, with the
//! checksums it publishes and the versions quarantine hides.
//!
//! Package documents are JSON and are rewritten whole; the proxy bounds
//! their size.

use crate::firewall::Shown;
use crate::links::LinkMap;
use serde_json::Value;
use std::borrow::Cow;
use std::time::SystemTime;

use super::{Document, Request, Routed};

/// Built-in mutable patterns: none (package documents are mutable as
/// documents, see [`super::Ecosystem::route`]).
pub const MUTABLE_PATTERNS: &[&str] = &[];

/// `name` and `@scope/name` (asked upstream as `@scope%2fname`), each
/// form keyed apart; with quarantine hiding, the full form only (the
/// abbreviated one may lack the publish times). Search passes its query on.
pub fn route(request: &Request<'_>) -> Routed {
    match classify(request.path) {
        NpmPath::File => Routed::file(request),
        NpmPath::Search => {
            let mut routed = Routed::file(request);
            if let Some(query) = request.query {
                routed.upstream_path = format!("{}?{query}", request.raw_path);
            }
            routed.document = Some(Document::NpmSearch);
            routed
        }
        NpmPath::Document { name } => {
            let form = match request.quarantine_hide {
                true => Form::Full,
                false => negotiate(request.accept),
            };
            let key_parts = vec![name.clone(), format!("form={}", form.as_str())];
            Routed::document(
                document_path(&name),
                key_parts,
                request,
                Document::NpmPackage { form },
            )
        }
    }
}

/// The abbreviated ("corgi") document type npm asks for when installing.
pub const ABBREVIATED_TYPE: &str = "application/vnd.npm.install-v1+json";

/// What a (decoded) path of an npm remote names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpmPath {
    /// A package document: `name` or `@scope/name`.
    Document { name: String },
    /// `-/v1/search`: answered by the upstream, never cached.
    Search,
    /// Anything else: tarballs (`name/-/name-1.0.0.tgz`) and other files.
    File,
}

/// Classifies a decoded path (after [`unescape_scope`]).
///
/// ```
/// use filters::ecosystem::npm::{classify, NpmPath};
/// assert_eq!(classify("@s/a"), NpmPath::Document { name: "@s/a".into() });
/// assert_eq!(classify("a/-/a-1.0.0.tgz"), NpmPath::File);
/// ```
pub fn classify(path: &str) -> NpmPath {
    if path == "-/v1/search" {
        return NpmPath::Search;
    }
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let valid = |s: &str| !s.is_empty() && !s.starts_with('.') && !s.starts_with('-');
    match segments.as_slice() {
        [name] if valid(name) && !name.starts_with('@') => NpmPath::Document {
            name: (*name).to_string(),
        },
        [scope, name] if scope.len() > 1 && scope.starts_with('@') && valid(name) => {
            NpmPath::Document {
                name: format!("{scope}/{name}"),
            }
        }
        _ => NpmPath::File,
    }
}

/// The package and version of a tarball path (`name/-/name-1.0.0.tgz`,
/// `@scope/name/-/name-1.0.0.tgz`).
///
/// ```
/// let found = filters::ecosystem::npm::package_of("@s/a/-/a-1.0.0-rc.1.tgz").unwrap();
/// assert_eq!((found.name.as_str(), found.version.as_str()), ("@s/a", "1.0.0-rc.1"));
/// assert_eq!(filters::ecosystem::npm::package_of("a/-/b-1.0.0.tgz"), None);
/// ```
pub fn package_of(path: &str) -> Option<super::PackageVersion> {
    let (name, file) = path.split_once("/-/")?;
    let NpmPath::Document { name } = classify(name) else {
        return None;
    };
    let unscoped = name.rsplit('/').next()?;
    let version = file
        .strip_suffix(".tgz")?
        .strip_prefix(unscoped)?
        .strip_prefix('-')?;
    (!version.is_empty() && !version.contains('/')).then(|| super::PackageVersion {
        version: version.to_string(),
        name,
    })
}

/// The versions a package document lists (`versions`' keys), as the
/// upstream sent it; `None` for a document that is not one.
pub fn listed_versions(doc: &[u8]) -> Option<Vec<String>> {
    let value: Value = serde_json::from_slice(doc).ok()?;
    Some(
        value
            .get("versions")?
            .as_object()?
            .keys()
            .cloned()
            .collect(),
    )
}

/// npm asks for a scoped document as `@scope%2fname`; the separator is
/// decoded here, before the path is validated (which refuses encoded
/// separators anywhere else).
///
/// ```
/// assert_eq!(filters::ecosystem::npm::unescape_scope("@s%2Fa"), "@s/a");
/// assert_eq!(filters::ecosystem::npm::unescape_scope("a%2fb"), "a%2fb");
/// ```
pub fn unescape_scope(raw: &str) -> Cow<'_, str> {
    if !raw.starts_with('@') {
        return Cow::Borrowed(raw);
    }
    let first = raw.split('/').next().unwrap_or(raw);
    let lower = first.to_ascii_lowercase();
    match lower.find("%2f") {
        Some(at) if lower.matches("%2f").count() == 1 => Cow::Owned(format!(
            "{}/{}{}",
            &first[..at],
            &first[at + 3..],
            &raw[first.len()..]
        )),
        _ => Cow::Borrowed(raw),
    }
}

/// The upstream path of a package document: scoped names with the
/// separator encoded, as npm itself asks.
pub fn document_path(name: &str) -> String {
    name.replacen('/', "%2f", 1)
}

/// The form of a package document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Full,
    Abbreviated,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Full => "full",
            Form::Abbreviated => "abbreviated",
        }
    }

    /// The `Accept` sent upstream for this form.
    pub fn accept(self) -> &'static str {
        match self {
            Form::Full => "application/json",
            Form::Abbreviated => {
                "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8"
            }
        }
    }
}

/// The abbreviated form when `Accept` ranks it at least as high as JSON.
pub fn negotiate(accept: Option<&str>) -> Form {
    let Some(accept) = accept else {
        return Form::Full;
    };
    let ranges = crate::accept::ranges(accept);
    let abbreviated = crate::accept::best_q(&ranges, &[ABBREVIATED_TYPE]);
    let full = crate::accept::best_q(&ranges, &["application/json", "*/*"]);
    if abbreviated > 0.0 && abbreviated >= full {
        Form::Abbreviated
    } else {
        Form::Full
    }
}

/// A tarball a document links, after rewriting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tarball {
    pub version: String,
    /// The decoded remote path the tarball link comes back to, if it does.
    pub remote_path: Option<String>,
    /// `sha512:hex` from `dist.integrity`, else `sha1:hex` from
    /// `dist.shasum`.
    pub digest: Option<String>,
}

/// A document that was not a package document.
#[derive(Debug, thiserror::Error)]
#[error("not an npm package document: {0}")]
pub struct DocumentError(String);

/// What rewriting a document found and did.
#[derive(Debug, Default)]
pub struct Rewritten {
    pub body: Vec<u8>,
    pub tarballs: Vec<Tarball>,
    /// Versions removed by quarantine or the firewall.
    pub hidden: Vec<String>,
}

/// Rewrites a package document: every `versions.*.dist.tarball` through
/// the remote. With `shown.hide_after`, versions published (`time`) after
/// that instant are removed; versions the firewall refuses move to
/// `policyRestrictions`, where npm finds them only to say why it cannot
/// install them. A dist-tag naming a removed version moves to the newest
/// remaining release.
pub fn rewrite(doc: &[u8], map: &LinkMap, shown: &Shown) -> Result<Rewritten, DocumentError> {
    let mut value: Value = serde_json::from_slice(doc).map_err(|e| DocumentError(e.to_string()))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| DocumentError("not a JSON object".into()))?;
    let mut hidden = match shown.hide_after {
        Some(cutoff) => hide_versions(object, cutoff),
        None => Vec::new(),
    };
    if shown.refused.is_some() {
        hidden.extend(restrict_versions(object, shown));
    }
    let mut tarballs = Vec::new();
    if let Some(versions) = object.get_mut("versions").and_then(Value::as_object_mut) {
        for (version, manifest) in versions.iter_mut() {
            let Some(dist) = manifest.get_mut("dist").and_then(Value::as_object_mut) else {
                continue;
            };
            let Some(url) = dist.get("tarball").and_then(Value::as_str) else {
                continue;
            };
            let mapped = map.map(url);
            dist.insert("tarball".into(), Value::String(mapped.url));
            let digest = dist
                .get("integrity")
                .and_then(Value::as_str)
                .and_then(integrity_digest)
                .or_else(|| {
                    let shasum = dist.get("shasum")?.as_str()?;
                    let valid = shasum.len() == 40 && shasum.bytes().all(|b| b.is_ascii_hexdigit());
                    valid.then(|| format!("sha1:{}", shasum.to_ascii_lowercase()))
                });
            tarballs.push(Tarball {
                version: version.clone(),
                remote_path: mapped.remote_path.map(|p| {
                    percent_encoding::percent_decode_str(&p)
                        .decode_utf8_lossy()
                        .into_owned()
                }),
                digest,
            });
        }
    }
    let body = serde_json::to_vec(&value).map_err(|e| DocumentError(e.to_string()))?;
    Ok(Rewritten {
        body,
        tarballs,
        hidden,
    })
}

/// Removes versions published after `cutoff` (by the document's `time`);
/// returns them. Versions without a time stay (fail open, as quarantine
/// does without `Last-Modified`).
fn hide_versions(object: &mut serde_json::Map<String, Value>, cutoff: SystemTime) -> Vec<String> {
    let Some(times) = object.get("time").and_then(Value::as_object) else {
        return Vec::new();
    };
    let hidden: Vec<String> = times
        .iter()
        .filter(|(version, _)| *version != "created" && *version != "modified")
        .filter_map(|(version, time)| {
            let published =
                humantime::parse_rfc3339_weak(time.as_str()?.trim_end_matches('Z')).ok()?;
            (published > cutoff).then(|| version.clone())
        })
        .collect();
    if hidden.is_empty() {
        return hidden;
    }
    if let Some(versions) = object.get_mut("versions").and_then(Value::as_object_mut) {
        for version in &hidden {
            versions.remove(version);
        }
    }
    if let Some(times) = object.get_mut("time").and_then(Value::as_object_mut) {
        for version in &hidden {
            times.remove(version);
        }
    }
    retag(object, &hidden);
    hidden
}

/// Moves the versions the firewall refuses out of `versions` into
/// `policyRestrictions` (npm-pick-manifest's field: such a version is
/// never picked, and asking for it fails with E403 and the message);
/// returns them.
fn restrict_versions(object: &mut serde_json::Map<String, Value>, shown: &Shown) -> Vec<String> {
    let Some(versions) = object.get_mut("versions").and_then(Value::as_object_mut) else {
        return Vec::new();
    };
    let refused: Vec<(String, String)> = versions
        .keys()
        .filter_map(|v| Some((v.clone(), shown.refused(v)?)))
        .collect();
    if refused.is_empty() {
        return Vec::new();
    }
    let mut restricted = serde_json::Map::new();
    for (version, _) in &refused {
        if let Some(manifest) = versions.remove(version) {
            restricted.insert(version.clone(), manifest);
        }
    }
    let message: Vec<String> = refused
        .iter()
        .map(|(version, why)| format!("{version}: {why}"))
        .collect();
    object.insert(
        "policyRestrictions".into(),
        serde_json::json!({ "message": message.join("\n"), "versions": restricted }),
    );
    let hidden: Vec<String> = refused.into_iter().map(|(v, _)| v).collect();
    retag(object, &hidden);
    hidden
}

/// Moves each dist-tag naming a hidden version: `latest` to the newest
/// remaining release, any other tag away.
fn retag(object: &mut serde_json::Map<String, Value>, hidden: &[String]) {
    let remaining: Vec<semver::Version> = object
        .get("versions")
        .and_then(Value::as_object)
        .map(|v| {
            v.keys()
                .filter_map(|k| semver::Version::parse(k).ok())
                .collect()
        })
        .unwrap_or_default();
    let newest_release = remaining.iter().filter(|v| v.pre.is_empty()).max().cloned();
    if let Some(tags) = object.get_mut("dist-tags").and_then(Value::as_object_mut) {
        let stale: Vec<String> = tags
            .iter()
            .filter(|(_, v)| v.as_str().is_some_and(|v| hidden.iter().any(|h| h == v)))
            .map(|(tag, _)| tag.clone())
            .collect();
        for tag in stale {
            match (&newest_release, tag.as_str()) {
                (Some(newest), "latest") => {
                    tags.insert(tag, Value::String(newest.to_string()));
                }
                _ => {
                    tags.remove(&tag);
                }
            }
        }
    }
}

/// One uploaded tarball of a local repository, for [`local_document`].
#[derive(Debug, Clone)]
pub struct LocalVersion {
    /// The tarball's `package/package.json`.
    pub manifest: Value,
    /// The URL clients download it from.
    pub tarball: String,
    pub sha512: Vec<u8>,
    pub sha1: Vec<u8>,
    /// RFC 3339 upload time.
    pub published: String,
}

/// The package document of `name` built from uploaded tarballs: each
/// version's manifest with its `dist`, `time`, and `latest` on the newest
/// release. Tarballs whose manifest names another package or no valid
/// version are left out.
pub fn local_document(name: &str, uploads: Vec<LocalVersion>) -> Option<Value> {
    use base64::Engine;
    let mut versions = serde_json::Map::new();
    let mut times = serde_json::Map::new();
    let mut newest: Option<semver::Version> = None;
    for upload in uploads {
        let mut manifest = upload.manifest;
        if manifest["name"].as_str() != Some(name) {
            continue;
        }
        let Some(version) = manifest["version"]
            .as_str()
            .and_then(|v| semver::Version::parse(v).ok())
        else {
            continue;
        };
        let integrity = format!(
            "sha512-{}",
            base64::engine::general_purpose::STANDARD.encode(&upload.sha512)
        );
        manifest["dist"] = serde_json::json!({
            "tarball": upload.tarball,
            "integrity": integrity,
            "shasum": hex_of(&upload.sha1),
        });
        if version.pre.is_empty() && newest.as_ref().is_none_or(|n| &version > n) {
            newest = Some(version.clone());
        }
        times.insert(version.to_string(), Value::String(upload.published));
        versions.insert(version.to_string(), manifest);
    }
    if versions.is_empty() {
        return None;
    }
    let latest = newest
        .map(|v| v.to_string())
        .or_else(|| versions.keys().next_back().cloned());
    Some(serde_json::json!({
        "name": name,
        "dist-tags": {"latest": latest},
        "versions": versions,
        "time": times,
    }))
}

/// Merges package documents of a virtual repository's members, in order:
/// a version comes from the first member that has it (with its `time`),
/// and a dist-tag from the first member that sets it.
pub fn merge(documents: Vec<Value>) -> Option<Value> {
    let mut documents = documents.into_iter();
    let mut merged = documents.next()?;
    for doc in documents {
        for field in ["versions", "time", "dist-tags"] {
            let (Some(into), Some(from)) = (
                merged.get_mut(field).and_then(Value::as_object_mut),
                doc.get(field).and_then(Value::as_object),
            ) else {
                continue;
            };
            for (key, value) in from {
                if !into.contains_key(key) {
                    into.insert(key.clone(), value.clone());
                }
            }
        }
    }
    Some(merged)
}

/// `sha512:hex` from an SRI `integrity` value (`sha512-BASE64`, possibly
/// several, space-separated); sha512 is preferred, then sha256.
pub fn integrity_digest(integrity: &str) -> Option<String> {
    use base64::Engine;
    let mut best: Option<(u8, String)> = None;
    for item in integrity.split_whitespace() {
        let Some((algorithm, encoded)) = item.split_once('-') else {
            continue;
        };
        let encoded = encoded.split('?').next().unwrap_or(encoded);
        let (rank, len) = match algorithm {
            "sha512" => (2, 64),
            "sha256" => (1, 32),
            _ => continue,
        };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            continue;
        };
        if bytes.len() == len && best.as_ref().is_none_or(|(r, _)| rank > *r) {
            best = Some((rank, format!("{algorithm}:{}", hex_of(&bytes))));
        }
    }
    best.map(|(_, digest)| digest)
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::links::Upstream;
    use std::time::Duration;

    const FULL: &str = include_str!("../../../tests/fixtures/npm/verdaccio-scoped-full.json");
    const ABBREVIATED: &str =
        include_str!("../../../tests/fixtures/npm/verdaccio-dep-abbreviated.json");

    fn map(page: &str) -> LinkMap {
        let upstream = Upstream::new(&verdaccio_base(), &[]).unwrap();
        LinkMap::new(
            &format!("{}/{page}", verdaccio_base()),
            vec![upstream],
            "http://cache:8080/api/v1/remote/npm/",
        )
        .unwrap()
    }

    /// The upstream the fixtures were captured from.
    fn verdaccio_base() -> String {
        let doc: Value = serde_json::from_str(ABBREVIATED).unwrap();
        let tarball = doc["versions"]["1.0.0"]["dist"]["tarball"]
            .as_str()
            .unwrap();
        let end = tarball.find("/tiny-dep/").unwrap();
        tarball[..end].to_string()
    }

    #[test]
    fn paths_name_documents_tarballs_and_search() {
        assert_eq!(
            classify("left-pad"),
            NpmPath::Document {
                name: "left-pad".into()
            }
        );
        assert_eq!(classify("@s/a/-/a-1.0.0.tgz"), NpmPath::File);
        assert_eq!(classify("-/v1/search"), NpmPath::Search);
        assert_eq!(classify("-/ping"), NpmPath::File);
        assert_eq!(classify("@/a"), NpmPath::File);
        assert_eq!(document_path("@s/a"), "@s%2fa");
        assert_eq!(unescape_scope("@s%2fa"), "@s/a");
        assert_eq!(unescape_scope("@s/a/-/a-1.tgz"), "@s/a/-/a-1.tgz");
        assert_eq!(
            unescape_scope("@s%2fa%2fb"),
            "@s%2fa%2fb",
            "one separator only"
        );
    }

    #[test]
    fn members_merge_first_version_wins() {
        let private = serde_json::json!({"name": "x", "dist-tags": {"latest": "2.0.0"},
            "versions": {"2.0.0": {"v": "private"}}, "time": {"2.0.0": "t2"}});
        let public = serde_json::json!({"name": "x", "dist-tags": {"latest": "1.0.0", "next": "3.0.0"},
            "versions": {"1.0.0": {"v": "public"}, "2.0.0": {"v": "public"}}, "time": {"1.0.0": "t1"}});
        let merged = merge(vec![private, public]).unwrap();
        assert_eq!(merged["versions"]["2.0.0"]["v"], "private");
        assert_eq!(merged["versions"]["1.0.0"]["v"], "public");
        assert_eq!(merged["dist-tags"]["latest"], "2.0.0");
        assert_eq!(merged["dist-tags"]["next"], "3.0.0");
        assert_eq!(merged["time"]["1.0.0"], "t1");
        assert!(merge(Vec::new()).is_none());
    }

    #[test]
    fn local_documents_from_uploaded_manifests() {
        let upload = |name: &str, version: &str| LocalVersion {
            manifest: serde_json::json!({"name": name, "version": version, "dependencies": {"a": "^1"}}),
            tarball: format!("http://cache/r/{name}/-/{name}-{version}.tgz"),
            sha512: vec![0; 64],
            sha1: vec![1; 20],
            published: "2026-11-30T00:00:00Z".into(),
        };
        let doc = local_document(
            "p",
            vec![
                upload("p", "1.0.0"),
                upload("p", "2.0.0-rc.1"),
                upload("q", "9.0.0"),
                upload("p", "1.2.0"),
            ],
        )
        .unwrap();
        assert_eq!(doc["dist-tags"]["latest"], "1.2.0");
        assert_eq!(doc["versions"].as_object().unwrap().len(), 3);
        let dist = &doc["versions"]["1.0.0"]["dist"];
        assert_eq!(dist["tarball"], "http://cache/r/p/-/p-1.0.0.tgz");
        assert_eq!(
            integrity_digest(dist["integrity"].as_str().unwrap()).unwrap(),
            format!("sha512:{}", "0".repeat(128))
        );
        assert_eq!(dist["shasum"], "01".repeat(20));
        assert_eq!(doc["versions"]["1.0.0"]["dependencies"]["a"], "^1");
        assert!(local_document("p", vec![upload("q", "1.0.0")]).is_none());
    }

    #[test]
    fn negotiation() {
        let npm = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";
        assert_eq!(negotiate(Some(npm)), Form::Abbreviated);
        assert_eq!(negotiate(Some("application/json")), Form::Full);
        assert_eq!(negotiate(None), Form::Full);
    }

    #[test]
    fn tarballs_come_back_through_the_remote_with_their_integrity() {
        let out = rewrite(FULL.as_bytes(), &map("@demo%2fapp"), &Shown::default()).unwrap();
        let doc: Value = serde_json::from_slice(&out.body).unwrap();
        let tarball = doc["versions"]["1.0.0"]["dist"]["tarball"]
            .as_str()
            .unwrap();
        assert_eq!(
            tarball,
            "http://cache:8080/api/v1/remote/npm/@demo/app/-/app-1.0.0.tgz"
        );
        assert_eq!(out.tarballs.len(), 2);
        let first = out.tarballs.iter().find(|t| t.version == "1.0.0").unwrap();
        assert_eq!(
            first.remote_path.as_deref(),
            Some("@demo/app/-/app-1.0.0.tgz")
        );
        assert!(first.digest.as_deref().unwrap().starts_with("sha512:"));
        assert_eq!(first.digest.as_ref().unwrap().len(), 7 + 128);
        assert!(!String::from_utf8(out.body)
            .unwrap()
            .contains(&verdaccio_base()));
        let out = rewrite(ABBREVIATED.as_bytes(), &map("tiny-dep"), &Shown::default()).unwrap();
        assert_eq!(out.tarballs.len(), 2);
        assert!(rewrite(b"[1]", &map("x"), &Shown::default()).is_err());
    }

    #[test]
    fn quarantine_hides_new_versions_and_moves_latest() {
        let doc: Value = serde_json::from_str(FULL).unwrap();
        let newest = doc["time"]["1.1.0"].as_str().unwrap();
        let newest = humantime::parse_rfc3339_weak(newest.trim_end_matches('Z')).unwrap();
        let out = rewrite(
            FULL.as_bytes(),
            &map("@demo%2fapp"),
            &Shown::published_before(Some(newest - Duration::from_millis(1))),
        )
        .unwrap();
        assert_eq!(out.hidden, ["1.1.0"]);
        let doc: Value = serde_json::from_slice(&out.body).unwrap();
        assert!(doc["versions"].get("1.1.0").is_none());
        assert!(doc["time"].get("1.1.0").is_none());
        assert_eq!(doc["dist-tags"]["latest"], "1.0.0");
        assert_eq!(out.tarballs.len(), 1);
        // Nothing newer than the newest: nothing hidden.
        let out = rewrite(
            FULL.as_bytes(),
            &map("@demo%2fapp"),
            &Shown::published_before(Some(newest)),
        )
        .unwrap();
        assert!(out.hidden.is_empty());
    }

    #[test]
    fn refused_versions_move_to_policy_restrictions() {
        let doc = FULL.as_bytes();
        let all: Value = serde_json::from_slice(doc).unwrap();
        let latest = all["dist-tags"]["latest"].as_str().unwrap().to_string();
        let judged = latest.clone();
        let shown = Shown {
            hide_after: None,
            refused: Some(std::sync::Arc::new(move |v: &str| {
                (v == judged).then(|| "refused by rule 'm' (MAL-1)".to_string())
            })),
        };
        let listed = listed_versions(doc).unwrap();
        assert!(listed.contains(&latest), "{listed:?}");
        let out = rewrite(doc, &map("@demo%2fapp"), &shown).unwrap();
        assert_eq!(out.hidden, std::slice::from_ref(&latest));
        assert_eq!(listed_versions(&out.body).unwrap().len(), listed.len() - 1);
        let doc: Value = serde_json::from_slice(&out.body).unwrap();
        assert!(doc["versions"].get(&latest).is_none());
        let restrictions = &doc["policyRestrictions"];
        assert!(restrictions["versions"].get(&latest).is_some());
        assert_eq!(
            restrictions["message"],
            format!("{latest}: refused by rule 'm' (MAL-1)")
        );
        assert_ne!(doc["dist-tags"]["latest"], Value::String(latest));
        assert!(out.tarballs.iter().all(|t| t.version
            != restrictions["versions"]
                .as_object()
                .unwrap()
                .keys()
                .next()
                .unwrap()
                .as_str()));
    }

    #[test]
    fn integrity_values() {
        let sha512 = format!("sha512-{}", "A".repeat(86) + "==");
        assert_eq!(
            integrity_digest(&sha512).unwrap(),
            format!("sha512:{}", "0".repeat(128))
        );
        let both = format!("sha1-AAAAAAAAAAAAAAAAAAAAAAAAAAA= {sha512}");
        assert!(integrity_digest(&both).unwrap().starts_with("sha512:"));
        assert_eq!(integrity_digest("sha512-notbase64!"), None);
        assert_eq!(integrity_digest("md5-AAAA"), None);
    }
}
