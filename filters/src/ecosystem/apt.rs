//! Debian and Ubuntu APT repositories: `dists/{suite}/InRelease` (or
//! `Release`) names every index file of the suite with its size and
//! checksums; `Packages` lists name each `.deb` under `pool/` with its
//! `SHA256`.
//!
//! A suite is consistent only as a snapshot: when the upstream publishes,
//! `InRelease` and the `Packages` files change together, and an apt that
//! gets a new `InRelease` with an old `Packages` (or the reverse) fails
//! with "Hash Sum mismatch". So `InRelease`/`Release` are snapshot
//! indexes ([`snapshot`]): a refreshed one is served only once the package
//! lists it names for the remote's architectures are cached, in the form
//! clients fetch (`by-hash/` when the suite says `Acquire-By-Hash: yes`,
//! else by name). Files under `by-hash/` and `pool/` never change.
//! Signatures pass through untouched: the index's bytes are the
//! upstream's.

use super::{Document, IndexedFile, Request, Routed, Scope, Snapshot};
use crate::ecosystem::ArtifactClass;
use std::collections::BTreeMap;
use std::io::BufRead;

/// Built-in mutable patterns: everything of a suite (`dists/`) changes in
/// place, but for its `by-hash/` files ([`route`]).
pub const MUTABLE_PATTERNS: &[&str] = &[r"(^|/)dists/"];

/// Compressions of a package list, in the order they are read: plain and
/// gzip first (read here without a new decoder), xz last.
const LIST_FORMS: [&str; 5] = ["", ".gz", ".zst", ".xz", ".bz2"];

/// `InRelease`/`Release` are snapshot indexes; `by-hash/` files are named
/// by their content and never change.
pub fn route(request: &Request<'_>) -> Routed {
    let mut routed = Routed::file(request);
    if !request.path.starts_with("dists/") && !request.path.contains("/dists/") {
        return routed;
    }
    if request.path.contains("/by-hash/") {
        routed.class = ArtifactClass::Immutable;
    } else if is_release(request.path) {
        routed.document = Some(Document::AptRelease);
    }
    routed
}

/// Whether a path is a suite's `InRelease` or `Release` (not the detached
/// `Release.gpg`, which goes with `Release`).
pub fn is_release(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    matches!(name, "InRelease" | "Release")
}

/// The fields of a `Release` file that the snapshot needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    pub by_hash: bool,
    pub architectures: Vec<String>,
    /// Per algorithm (`SHA256`, `SHA512`): path below the suite → hex.
    pub sums: BTreeMap<String, BTreeMap<String, String>>,
}

/// The strongest algorithms first: apt fetches `by-hash/` in the first
/// one the suite lists.
const ALGORITHMS: [&str; 2] = ["SHA512", "SHA256"];

/// Reads a `Release` file, or the clear-signed text of an `InRelease`
/// (its signature is left for apt to check).
pub fn parse_release(body: &[u8]) -> Result<Release, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8 text".to_string())?;
    let mut release = Release::default();
    let mut section: Option<String> = None;
    for line in signed_text(text) {
        if let Some(entry) = line.strip_prefix(' ') {
            let Some(algorithm) = &section else { continue };
            let fields: Vec<&str> = entry.split_whitespace().collect();
            let [hex, _size, path] = fields.as_slice() else {
                return Err(format!("bad {algorithm} line {entry:?}"));
            };
            release
                .sums
                .entry(algorithm.clone())
                .or_default()
                .insert((*path).to_string(), hex.to_ascii_lowercase());
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            section = None;
            continue;
        };
        let value = value.trim();
        section = None;
        match field {
            "Acquire-By-Hash" => release.by_hash = value.eq_ignore_ascii_case("yes"),
            "Architectures" => {
                release.architectures = value.split_whitespace().map(String::from).collect()
            }
            name if ALGORITHMS.contains(&name) && value.is_empty() => {
                section = Some(name.to_string())
            }
            _ => {}
        }
    }
    if !release.sums.contains_key("SHA256") {
        return Err("no SHA256 list of files".into());
    }
    Ok(release)
}

/// The lines of a clear-signed message's text (dash-escapes undone), or
/// every line of an unsigned one.
fn signed_text(text: &str) -> impl Iterator<Item = &str> {
    let signed = text.starts_with("-----BEGIN PGP SIGNED MESSAGE-----");
    let mut lines = text.lines();
    if signed {
        // The armor headers end at the first empty line.
        for line in lines.by_ref() {
            if line.is_empty() {
                break;
            }
        }
    }
    lines
        .take_while(move |line| !(signed && line.starts_with("-----BEGIN PGP SIGNATURE-----")))
        .map(|line| line.strip_prefix("- ").unwrap_or(line))
}

/// What the `InRelease`/`Release` at `path` names: the package lists of
/// the scope's architectures (and `all`) in the form clients fetch them,
/// and the checksums of every file it lists.
pub fn snapshot(path: &str, body: &[u8], scope: &Scope<'_>) -> Result<Snapshot, String> {
    let release = parse_release(body)?;
    let suite = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let root = &path[..path.find("dists/").unwrap_or(0)];
    let strongest = ALGORITHMS
        .into_iter()
        .find(|a| release.sums.contains_key(*a))
        .unwrap_or("SHA256");
    let mut checksums = Vec::new();
    for (algorithm, sums) in &release.sums {
        let prefix = algorithm.to_ascii_lowercase();
        for (file, hex) in sums {
            let digest = Some(format!("{prefix}:{hex}"));
            checksums.push(IndexedFile {
                path: format!("{suite}{file}"),
                digest: digest.clone(),
            });
            checksums.push(IndexedFile {
                path: by_hash_path(suite, file, algorithm, hex),
                digest,
            });
        }
    }
    let fetched = |file: &str| -> IndexedFile {
        let hex = &release.sums[strongest][file];
        let digest = Some(format!("{}:{hex}", strongest.to_ascii_lowercase()));
        match release.by_hash {
            true => IndexedFile {
                path: by_hash_path(suite, file, strongest, hex),
                digest,
            },
            false => IndexedFile {
                path: format!("{suite}{file}"),
                digest,
            },
        }
    };
    let mut files = Vec::new();
    let mut package_lists = Vec::new();
    for list in package_list_names(&release, scope) {
        let forms: Vec<String> = LIST_FORMS
            .iter()
            .map(|form| format!("{list}{form}"))
            .filter(|name| release.sums[strongest].contains_key(name))
            .collect();
        let choices: Vec<IndexedFile> = forms.iter().map(|name| fetched(name)).collect();
        files.extend(choices.iter().cloned());
        package_lists.push(choices);
    }
    Ok(Snapshot {
        files,
        checksums,
        package_lists,
        root: root.to_string(),
    })
}

/// `{component}/binary-{arch}/Packages` of every list the release names
/// for the scope's architectures and `all`.
fn package_list_names(release: &Release, scope: &Scope<'_>) -> Vec<String> {
    let wanted = |arch: &str| {
        arch == "all"
            || scope.architectures.is_empty()
            || scope.architectures.iter().any(|a| a == arch)
    };
    let mut lists: Vec<String> = release.sums["SHA256"]
        .keys()
        .filter_map(|file| {
            let list = strip_compression(file);
            let (directory, name) = list.rsplit_once('/')?;
            let arch = directory.rsplit('/').next()?.strip_prefix("binary-")?;
            (name == "Packages" && wanted(arch)).then(|| list.to_string())
        })
        .collect();
    lists.dedup();
    lists
}

fn strip_compression(file: &str) -> &str {
    LIST_FORMS
        .iter()
        .filter(|form| !form.is_empty())
        .find_map(|form| file.strip_suffix(form))
        .unwrap_or(file)
}

/// `{suite}{dir}/by-hash/{algorithm}/{hex}` of `{suite}{dir}/{name}`.
fn by_hash_path(suite: &str, file: &str, algorithm: &str, hex: &str) -> String {
    let directory = file.rsplit_once('/').map_or("", |(d, _)| d);
    match directory {
        "" => format!("{suite}by-hash/{algorithm}/{hex}"),
        d => format!("{suite}{d}/by-hash/{algorithm}/{hex}"),
    }
}

/// The `.deb` files of a (decompressed) `Packages` list of the archive at
/// `root`: `found(path, "sha256:hex")` for each stanza with a `Filename`
/// and a `SHA256`. Memory stays at one stanza.
pub fn read_package_list(
    root: &str,
    reader: &mut dyn BufRead,
    found: &mut dyn FnMut(String, String),
) -> Result<u64, String> {
    let (mut filename, mut sha256): (Option<String>, Option<String>) = (None, None);
    let mut count = 0;
    let mut emit = |filename: &mut Option<String>, sha256: &mut Option<String>| {
        if let (Some(file), Some(hex)) = (filename.take(), sha256.take()) {
            found(format!("{root}{file}"), format!("sha256:{hex}"));
            count += 1;
        }
    };
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            break;
        }
        let text = line.trim_end();
        if text.is_empty() {
            emit(&mut filename, &mut sha256);
        } else if let Some(value) = text.strip_prefix("Filename:") {
            filename = Some(value.trim().to_string());
        } else if let Some(value) = text.strip_prefix("SHA256:") {
            sha256 = Some(value.trim().to_ascii_lowercase());
        }
    }
    emit(&mut filename, &mut sha256);
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = "\
Acquire-By-Hash: yes
Architectures: amd64 arm64
Components: main
Suite: stable
MD5Sum:
 083d3057e33d30b62f6c733be81d2215              128 main/binary-amd64/Packages
SHA256:
 961a5c23c27035a2e920a44df21e8f006fd2c244d8109995ef1efc2b44ecd0dc              912 main/binary-amd64/Packages
 39c1aafb5b67bdfd36db55af0aad657e921303451365ed384920053cb288532d              542 main/binary-amd64/Packages.gz
 a834b80f8022089c5d6aca8485f7a5c50cc9617801324900b4b60dfcce23889e              620 main/binary-amd64/Packages.xz
 1111111111111111111111111111111111111111111111111111111111111111              620 main/binary-arm64/Packages.xz
 2222222222222222222222222222222222222222222222222222222222222222               86 main/Contents-amd64
SHA512:
 aa              912 main/binary-amd64/Packages
 bb              542 main/binary-amd64/Packages.gz
 cc              620 main/binary-amd64/Packages.xz
 dd              620 main/binary-arm64/Packages.xz
 ee               86 main/Contents-amd64
";

    fn amd64() -> Vec<String> {
        vec!["amd64".to_string()]
    }

    #[test]
    fn releases_and_clear_signed_releases_read_alike() {
        let plain = parse_release(RELEASE.as_bytes()).unwrap();
        assert!(plain.by_hash);
        assert_eq!(plain.architectures, ["amd64", "arm64"]);
        assert_eq!(plain.sums["SHA256"].len(), 5);
        assert_eq!(plain.sums["SHA512"]["main/Contents-amd64"], "ee");
        let signed = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{}- -dash-escaped: yes\n-----BEGIN PGP SIGNATURE-----\n\niQ==\n-----END PGP SIGNATURE-----\n",
            RELEASE
        );
        assert_eq!(parse_release(signed.as_bytes()).unwrap(), plain);
        assert!(parse_release(b"Suite: x\n").is_err());
        assert!(parse_release(b"SHA256:\n not-three-fields\n").is_err());
    }

    #[test]
    fn a_by_hash_suite_waits_for_the_strongest_by_hash_lists_of_its_architectures() {
        let architectures = amd64();
        let scope = Scope {
            architectures: &architectures,
        };
        let found = snapshot("debian/dists/stable/InRelease", RELEASE.as_bytes(), &scope).unwrap();
        assert_eq!(found.root, "debian/");
        let files: Vec<&str> = found.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            files,
            [
                "debian/dists/stable/main/binary-amd64/by-hash/SHA512/aa",
                "debian/dists/stable/main/binary-amd64/by-hash/SHA512/bb",
                "debian/dists/stable/main/binary-amd64/by-hash/SHA512/cc",
            ]
        );
        assert_eq!(found.files[0].digest.as_deref(), Some("sha512:aa"));
        assert_eq!(found.package_lists.len(), 1);
        assert_eq!(found.package_lists[0], found.files);
        let sha256_of_plain = IndexedFile {
            path: "debian/dists/stable/main/binary-amd64/Packages.gz".into(),
            digest: Some(
                "sha256:39c1aafb5b67bdfd36db55af0aad657e921303451365ed384920053cb288532d".into(),
            ),
        };
        assert!(found.checksums.contains(&sha256_of_plain));
        let by_hash_contents = IndexedFile {
            path: "debian/dists/stable/main/by-hash/SHA512/ee".into(),
            digest: Some("sha512:ee".into()),
        };
        assert!(found.checksums.contains(&by_hash_contents));
        // Without a scope, every architecture's lists.
        let all = snapshot(
            "dists/stable/Release",
            RELEASE.as_bytes(),
            &Scope::default(),
        )
        .unwrap();
        assert_eq!(all.package_lists.len(), 2);
        assert_eq!(all.root, "");
    }

    #[test]
    fn a_suite_without_by_hash_waits_for_its_lists_by_name() {
        let release = RELEASE
            .replace("Acquire-By-Hash: yes\n", "")
            .replace("SHA512:", "Other:");
        let architectures = amd64();
        let scope = Scope {
            architectures: &architectures,
        };
        let found = snapshot("dists/stable/InRelease", release.as_bytes(), &scope).unwrap();
        let files: Vec<(&str, &str)> = found
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.digest.as_deref().unwrap()))
            .collect();
        assert_eq!(files[0].0, "dists/stable/main/binary-amd64/Packages");
        assert_eq!(files[1].0, "dists/stable/main/binary-amd64/Packages.gz");
        assert!(files[1].1.starts_with("sha256:39c1aafb"));
        assert_eq!(files.len(), 3);
    }

    #[test]
    fn routes_keep_indexes_mutable_and_content_named_files_immutable() {
        let request = |path: &'static str| Request {
            raw_path: path,
            path,
            class: ArtifactClass::Mutable {
                user_defined: false,
            },
            accept: None,
            query: None,
            quarantine_hide: false,
        };
        let release = route(&request("debian/dists/bookworm/InRelease"));
        assert_eq!(release.document, Some(Document::AptRelease));
        let detached = route(&request("dists/bookworm/Release.gpg"));
        assert_eq!(detached.document, None);
        let by_hash = route(&request(
            "dists/bookworm/main/binary-amd64/by-hash/SHA256/ab",
        ));
        assert_eq!(by_hash.class, ArtifactClass::Immutable);
        let elsewhere = route(&request("pool/main/InRelease"));
        assert_eq!(elsewhere.document, None);
    }

    #[test]
    fn package_lists_name_each_deb_with_its_sha256() {
        let list = "\
Package: adtest-dep
Version: 1.0
Filename: pool/main/adtest-dep_1.0_all.deb
Size: 592
SHA256: F8B276E0

Package: no-checksum
Filename: pool/main/no-checksum_1_all.deb

Package: adtest
Filename: pool/main/adtest_1.0_all.deb
SHA256: 30e1866b";
        let mut found = Vec::new();
        let count = read_package_list("debian/", &mut list.as_bytes(), &mut |p, d| {
            found.push((p, d))
        })
        .unwrap();
        assert_eq!(count, 2);
        assert_eq!(
            found,
            [
                (
                    "debian/pool/main/adtest-dep_1.0_all.deb".to_string(),
                    "sha256:f8b276e0".to_string()
                ),
                (
                    "debian/pool/main/adtest_1.0_all.deb".to_string(),
                    "sha256:30e1866b".to_string()
                ),
            ]
        );
    }
}
