//! The artifact firewall's settings and rules as written: the server
//! file's `firewall:` section and the policy file it names, compiled into
//! one [`Policy`] with every remote's `quarantine_new` as a minimum-age
//! rule of its own.
//!
//! The rules are read again while artifactd runs (the policy file and the
//! feeds change without a restart, [`crate::firewall`]), so compiling is a
//! function of the files as they are now; an error names the file, the
//! rule and the field, and a broken edit keeps the rules in force.

use super::units::RawDuration;
use super::{ConfigError, Remote};
use filters::firewall::{osv, Mode, Policy, Rule, RuleKind};
use filters::Ecosystem;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the policy file and the feeds are looked at, by default.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);

/// `firewall:` of the server file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFirewall {
    /// More rules and feeds, in a file read again when it changes.
    pub policy_file: Option<String>,
    /// How often the policy file and the feeds are checked for changes.
    pub refresh: Option<RawDuration>,
    #[serde(flatten)]
    pub rules: RawRules,
}

/// Rules and feeds, as the server file's section and the policy file
/// both write them.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRules {
    #[serde(default)]
    pub feeds: Vec<RawFeed>,
    #[serde(default)]
    pub rules: Vec<RawRule>,
}

/// A feed of known-malicious releases: OSV records in a file (one record
/// or a list, or a zip of records as OSV data sets are published) or a
/// folder of `*.json` files.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFeed {
    pub name: String,
    /// Where the feed is read from (and, with `fetch`, kept).
    pub path: String,
    /// Fetched into `path` through one of artifactd's remotes, on a
    /// schedule.
    pub fetch: Option<RawFetch>,
    #[serde(flatten)]
    pub common: RawCommon,
}

/// Where a fetched feed comes from: a path of a remote, every `every`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawFetch {
    pub remote: String,
    pub path: String,
    pub every: Option<RawDuration>,
}

/// How often a fetched feed is fetched, by default.
pub const DEFAULT_FETCH_EVERY: Duration = Duration::from_secs(3600);

/// A feed fetched through a remote into a local file, which the rules
/// are then read from like any feed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FeedFetch {
    pub feed: String,
    pub remote: String,
    /// The path under the remote (as a client would ask for it).
    pub path: String,
    pub every: Duration,
    /// The local file it is written to.
    pub into: PathBuf,
}

/// What every rule may say.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawCommon {
    /// `enforce` (default) or `dry_run`.
    pub mode: Option<String>,
    /// Delete refused releases from storage too.
    pub purge: Option<bool>,
    /// The remotes it applies to; all when absent.
    pub remotes: Option<Vec<String>>,
}

/// One rule: exactly one of `deny`, `allow` and `min_age`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: String,
    pub deny: Option<Vec<RawEntry>>,
    pub allow: Option<Vec<RawEntry>>,
    pub min_age: Option<RawDuration>,
    /// Packages a `min_age` rule spares.
    pub exempt: Option<Vec<RawEntry>>,
    #[serde(flatten)]
    pub common: RawCommon,
}

/// A package (name or `*` pattern) and the versions it names (all when
/// none), in its format's syntax.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntry {
    pub ecosystem: Option<String>,
    pub package: String,
    #[serde(default)]
    pub versions: Vec<String>,
}

/// The firewall settings of the server file, resolved.
#[derive(Debug, Clone)]
pub struct FirewallSettings {
    pub policy_file: Option<PathBuf>,
    pub refresh: Duration,
    /// The rules written in the server file itself.
    pub inline: RawRules,
    /// The server file, and the folder its relative paths start from.
    pub file: PathBuf,
    pub dir: PathBuf,
}

/// A file the compiled rules were read from, as it was then: a change to
/// any of them (or a file appearing in a feed's folder) is a new policy.
pub type Fingerprint = Vec<(PathBuf, Option<(SystemTime, u64)>)>;

/// What one compile read.
pub struct Compiled {
    pub policy: Policy,
    pub fingerprint: Fingerprint,
    /// The feeds to fetch, each into its file.
    pub fetches: Vec<FeedFetch>,
}

/// Compiles the rules in force: each remote's quarantine, the server
/// file's rules, the policy file's.
pub fn compile(
    settings: &FirewallSettings,
    remotes: &BTreeMap<String, Arc<Remote>>,
) -> Result<Compiled, ConfigError> {
    let mut policy = Policy::default();
    let mut fingerprint = Vec::new();
    let mut fetches = Vec::new();
    add_quarantines(&mut policy, remotes);
    let mut reader = Reader {
        file: &settings.file,
        dir: &settings.dir,
        remotes,
        fingerprint: &mut fingerprint,
        fetches: &mut fetches,
    };
    reader.add(&mut policy, &settings.inline, "firewall.")?;
    if let Some(path) = &settings.policy_file {
        reader.fingerprint.push((path.clone(), stamp(path)));
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path, format!("cannot read the policy file: {e}")))?;
        let rules: RawRules = if text.trim().is_empty() {
            RawRules::default()
        } else {
            super::error::parse_yaml(path, &text)?
        };
        let mut reader = Reader {
            file: path,
            dir: &super::paths::folder_of(path),
            ..reader
        };
        reader.add(&mut policy, &rules, "")?;
    }
    Ok(Compiled {
        policy,
        fingerprint,
        fetches,
    })
}

/// The files a compile read, as they are now.
pub fn current_fingerprint(previous: &Fingerprint) -> Fingerprint {
    previous
        .iter()
        .map(|(path, _)| (path.clone(), stamp(path)))
        .collect()
}

/// The name of the minimum-age rule a remote's `quarantine_new` is.
pub fn quarantine_rule(remote: &str) -> String {
    format!("quarantine_new of remote '{remote}'")
}

/// A remote's `quarantine_new` is a minimum-age rule applying to it.
fn add_quarantines(policy: &mut Policy, remotes: &BTreeMap<String, Arc<Remote>>) {
    for remote in remotes.values() {
        let Some(days) = remote.quarantine_days else {
            continue;
        };
        let at = policy.add_rule(Rule {
            name: quarantine_rule(&remote.name),
            kind: RuleKind::MinAge(Duration::from_secs(u64::from(days) * 86_400)),
            mode: Mode::Enforce,
            purge: false,
            remotes: Some(vec![remote.name.clone()]),
        });
        for package in &remote.quarantine_exempt {
            // Checked when the remotes were read.
            let _ = policy.add_entry(at, Some(remote.ecosystem), package, &[]);
        }
    }
}

/// Modified time and size of a file, `None` when it is missing.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Reads one file's rules and feeds into a policy.
struct Reader<'a> {
    file: &'a Path,
    dir: &'a Path,
    remotes: &'a BTreeMap<String, Arc<Remote>>,
    fingerprint: &'a mut Fingerprint,
    fetches: &'a mut Vec<FeedFetch>,
}

impl Reader<'_> {
    fn err(&self, field: String, message: impl Into<String>) -> ConfigError {
        ConfigError::new(self.file, message).field(field)
    }

    fn add(
        &mut self,
        policy: &mut Policy,
        raw: &RawRules,
        prefix: &str,
    ) -> Result<(), ConfigError> {
        for (i, feed) in raw.feeds.iter().enumerate() {
            let field = format!("{prefix}feeds[{i}]");
            let rule = self.rule(&field, &feed.name, RuleKind::Malicious, &feed.common)?;
            let at = policy.add_rule(rule);
            let advisories = self.feed(&field, feed)?;
            policy.add_advisories(at, advisories);
        }
        for (i, raw_rule) in raw.rules.iter().enumerate() {
            let field = format!("{prefix}rules[{i}]");
            let (kind, entries, list) = match (&raw_rule.deny, &raw_rule.allow, &raw_rule.min_age) {
                (Some(deny), None, None) => (RuleKind::Deny, deny, "deny"),
                (None, Some(allow), None) => (RuleKind::Allow, allow, "allow"),
                (None, None, Some(age)) => {
                    let age = age
                        .duration()
                        .map_err(|m| self.err(format!("{field}.min_age"), m))?;
                    (RuleKind::MinAge(age), &Vec::new(), "exempt")
                }
                _ => {
                    return Err(self.err(
                        field,
                        format!(
                            "rule '{}' must have exactly one of deny, allow and min_age",
                            raw_rule.name
                        ),
                    ))
                }
            };
            if raw_rule.exempt.is_some() && list != "exempt" {
                return Err(self.err(format!("{field}.exempt"), "only a min_age rule exempts"));
            }
            let entries = raw_rule.exempt.as_ref().unwrap_or(entries);
            let rule = self.rule(&field, &raw_rule.name, kind, &raw_rule.common)?;
            let at = policy.add_rule(rule);
            for (j, entry) in entries.iter().enumerate() {
                let entry_field = format!("{field}.{list}[{j}]");
                let ecosystem = match &entry.ecosystem {
                    None => None,
                    Some(name) => Some(
                        name.parse::<Ecosystem>()
                            .map_err(|m| self.err(format!("{entry_field}.ecosystem"), m))?,
                    ),
                };
                policy
                    .add_entry(at, ecosystem, &entry.package, &entry.versions)
                    .map_err(|e| self.err(entry_field, e.0))?;
            }
        }
        Ok(())
    }

    fn rule(
        &self,
        field: &str,
        name: &str,
        kind: RuleKind,
        common: &RawCommon,
    ) -> Result<Rule, ConfigError> {
        if name.trim().is_empty() {
            return Err(self.err(format!("{field}.name"), "a rule needs a name"));
        }
        let mode = match common.mode.as_deref() {
            None => Mode::Enforce,
            Some(text) => text
                .parse()
                .map_err(|m: String| self.err(format!("{field}.mode"), m))?,
        };
        if let Some(names) = &common.remotes {
            if let Some(unknown) = names.iter().find(|n| !self.remotes.contains_key(*n)) {
                return Err(self.err(
                    format!("{field}.remotes"),
                    format!("rule '{name}' names unknown remote '{unknown}'"),
                ));
            }
        }
        Ok(Rule {
            name: name.to_string(),
            kind,
            mode,
            purge: common.purge.unwrap_or(false),
            remotes: common.remotes.clone(),
        })
    }

    /// Every advisory of a feed's file or folder (its `*.json` files).
    fn feed(&mut self, field: &str, feed: &RawFeed) -> Result<Vec<osv::Advisory>, ConfigError> {
        let path = super::paths::resolve(self.dir, &feed.path);
        if let Some(fetch) = &feed.fetch {
            self.fetch(field, feed, fetch, &path)?;
            if !path.exists() {
                // Not fetched yet: empty until it is (its appearing is a
                // change of the files the rules were read from).
                self.fingerprint.push((path, None));
                return Ok(Vec::new());
            }
        }
        let files = if path.is_dir() {
            let listing = std::fs::read_dir(&path).map_err(|e| {
                self.err(
                    format!("{field}.path"),
                    format!("cannot list {}: {e}", path.display()),
                )
            })?;
            let mut files: Vec<PathBuf> = listing
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "json"))
                .collect();
            files.sort();
            // A file added to the folder changes the folder's time.
            self.fingerprint.push((path.clone(), stamp(&path)));
            files
        } else {
            vec![path]
        };
        let mut advisories = Vec::new();
        for file in files {
            self.fingerprint.push((file.clone(), stamp(&file)));
            let found = read_feed_file(&file).map_err(|m| self.err(format!("{field}.path"), m))?;
            advisories.extend(found);
        }
        Ok(advisories)
    }

    /// Checks a feed's `fetch` and notes it to be fetched.
    fn fetch(
        &mut self,
        field: &str,
        feed: &RawFeed,
        fetch: &RawFetch,
        into: &Path,
    ) -> Result<(), ConfigError> {
        if !self.remotes.contains_key(&fetch.remote) {
            return Err(self.err(
                format!("{field}.fetch.remote"),
                format!(
                    "feed '{}' is fetched through unknown remote '{}'",
                    feed.name, fetch.remote
                ),
            ));
        }
        let every = super::units::positive_duration(&fetch.every, DEFAULT_FETCH_EVERY)
            .map_err(|m| self.err(format!("{field}.fetch.every"), m))?;
        self.fetches.push(FeedFetch {
            feed: feed.name.clone(),
            remote: fetch.remote.clone(),
            path: fetch.path.trim_start_matches('/').to_string(),
            every,
            into: into.to_path_buf(),
        });
        Ok(())
    }
}

/// The advisories of one feed file: OSV JSON, or a zip of it when the
/// name ends in `.zip`.
pub fn read_feed_file(file: &Path) -> Result<Vec<osv::Advisory>, String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    parse_feed(file, &bytes).map_err(|m| format!("{}: {m}", file.display()))
}

/// The advisories of a feed file's `bytes`, read as the file's name says.
pub fn parse_feed(file: &Path, bytes: &[u8]) -> Result<Vec<osv::Advisory>, String> {
    if file.extension().is_some_and(|x| x == "zip") {
        zipped_records(bytes)
    } else {
        osv::parse(bytes)
    }
}

/// The advisories of every `*.json` member of a zip archive (how OSV
/// publishes a data set: one record a file).
fn zipped_records(bytes: &[u8]) -> Result<Vec<osv::Advisory>, String> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .map_err(|e| format!("not a zip archive: {e}"))?;
    let mut advisories = Vec::new();
    for at in 0..archive.len() {
        let mut member = archive.by_index(at).map_err(|e| e.to_string())?;
        let name = member.name().map_err(|e| e.to_string())?.into_owned();
        if !member.is_file() || !name.ends_with(".json") {
            continue;
        }
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut member, &mut text).map_err(|e| format!("{name}: {e}"))?;
        advisories.extend(osv::parse(&text).map_err(|m| format!("{name}: {m}"))?);
    }
    Ok(advisories)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, inline: &str, policy_file: Option<&str>) -> FirewallSettings {
        let inline: RawRules = serde_yaml_ng::from_str(inline).unwrap();
        FirewallSettings {
            policy_file: policy_file.map(|name| dir.join(name)),
            refresh: DEFAULT_REFRESH,
            inline,
            file: dir.join("artifactd.yaml"),
            dir: dir.to_path_buf(),
        }
    }

    fn remotes() -> BTreeMap<String, Arc<Remote>> {
        let yaml = "remotes:\n  npm:\n    base_url: http://up.example\n    package: npm\n    quarantine_new: true\n    quarantine_days: 2\n    quarantine_exempt: ['@acme/*']\n";
        let (_, remotes, _) =
            super::super::remotes::parse_remotes(Path::new("remotes.yaml"), yaml).unwrap();
        remotes
            .into_iter()
            .map(|r| (r.name.clone(), Arc::new(r)))
            .collect()
    }

    fn error(dir: &Path, inline: &str) -> String {
        match compile(&settings(dir, inline, None), &remotes()) {
            Ok(_) => panic!("compiled: {inline}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn errors_name_the_file_the_rule_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("artifactd.yaml").display().to_string();
        let both = error(
            dir.path(),
            "rules: [{name: x, deny: [{package: a}], allow: [{package: a}]}]",
        );
        assert!(both.starts_with(&file), "{both}");
        assert!(
            both.contains("field 'firewall.rules[0]'") && both.contains("exactly one"),
            "{both}"
        );
        let version = error(
            dir.path(),
            "rules: [{name: x, deny: [{ecosystem: npm, package: a, versions: ['soon']}]}]",
        );
        assert!(
            version.contains("firewall.rules[0].deny[0]") && version.contains("soon"),
            "{version}"
        );
        let remote = error(
            dir.path(),
            "rules: [{name: x, deny: [{package: a}], remotes: [pypi]}]",
        );
        assert!(remote.contains("unknown remote 'pypi'"), "{remote}");
        let mode = error(
            dir.path(),
            "rules: [{name: x, deny: [{package: a}], mode: warn}]",
        );
        assert!(mode.contains("firewall.rules[0].mode"), "{mode}");
        let feed = error(dir.path(), "feeds: [{name: f, path: missing.json}]");
        assert!(
            feed.contains("firewall.feeds[0].path") && feed.contains("missing.json"),
            "{feed}"
        );
        std::fs::write(dir.path().join("bad.json"), "{\"id\": 1}").unwrap();
        let record = error(dir.path(), "feeds: [{name: f, path: bad.json}]");
        assert!(record.contains("not an OSV record"), "{record}");
    }

    #[test]
    fn a_fetched_feed_names_a_remote_and_is_empty_until_fetched() {
        let dir = tempfile::tempdir().unwrap();
        let unknown = error(
            dir.path(),
            "feeds: [{name: f, path: f.zip, fetch: {remote: osv, path: all.zip}}]",
        );
        assert!(
            unknown.contains("firewall.feeds[0].fetch.remote") && unknown.contains("'osv'"),
            "{unknown}"
        );
        let every = error(
            dir.path(),
            "feeds: [{name: f, path: f.zip, fetch: {remote: npm, path: all.zip, every: 0s}}]",
        );
        assert!(every.contains("firewall.feeds[0].fetch.every"), "{every}");

        let inline = "feeds: [{name: f, path: feeds/f.zip, fetch: {remote: npm, path: /osv/all.zip, every: 10m}}]";
        let compiled = compile(&settings(dir.path(), inline, None), &remotes()).unwrap();
        let into = dir.path().join("feeds/f.zip");
        assert_eq!(
            compiled.fetches,
            [FeedFetch {
                feed: "f".into(),
                remote: "npm".into(),
                path: "osv/all.zip".into(),
                every: Duration::from_secs(600),
                into: into.clone(),
            }]
        );
        assert!(compiled.fingerprint.contains(&(into.clone(), None)));
        let before = compiled.policy.entry_count();

        // A zip of records, as fetched.
        std::fs::create_dir_all(into.parent().unwrap()).unwrap();
        let mut writer = zip::ZipWriter::new(std::fs::File::create(&into).unwrap());
        writer
            .start_file("MAL-1.json", zip::write::SimpleFileOptions::default())
            .unwrap();
        let record = r#"{"id": "MAL-1", "affected": [{"package": {"ecosystem": "npm", "name": "x"}, "versions": ["1.0.0"]}]}"#;
        std::io::Write::write_all(&mut writer, record.as_bytes()).unwrap();
        writer.finish().unwrap();
        let compiled = compile(&settings(dir.path(), inline, None), &remotes()).unwrap();
        assert_eq!(compiled.policy.entry_count(), before + 1);
    }

    #[test]
    fn the_policy_file_and_feed_folders_are_fingerprinted() {
        let dir = tempfile::tempdir().unwrap();
        let feed = dir.path().join("osv");
        std::fs::create_dir_all(&feed).unwrap();
        std::fs::write(
            dir.path().join("policy.yaml"),
            "feeds: [{name: mal, path: osv}]\nrules: [{name: old, min_age: 1d}]\n",
        )
        .unwrap();
        let settings = settings(dir.path(), "", Some("policy.yaml"));
        let compiled = compile(&settings, &remotes()).unwrap();
        // The remote's quarantine, the feed, the age rule.
        assert_eq!(compiled.policy.rules().len(), 3);
        assert_eq!(compiled.policy.rules()[0].name, quarantine_rule("npm"));
        let exempt = compiled
            .policy
            .min_age("npm", Ecosystem::Npm, "@acme/ui", None);
        assert_eq!(exempt.map(|l| l.rule), Some("old".to_string()));
        assert_eq!(
            current_fingerprint(&compiled.fingerprint),
            compiled.fingerprint
        );
        std::fs::write(
            feed.join("MAL-1.json"),
            r#"{"id": "MAL-1", "affected": [{"package": {"ecosystem": "npm", "name": "x"}}]}"#,
        )
        .unwrap();
        assert_ne!(
            current_fingerprint(&compiled.fingerprint),
            compiled.fingerprint
        );
        let again = compile(&settings, &remotes()).unwrap();
        assert_eq!(
            again.policy.entry_count(),
            compiled.policy.entry_count() + 1
        );
        std::fs::write(dir.path().join("policy.yaml"), "rules: [{name: x}]\n").unwrap();
        let broken = compile(&settings, &remotes()).err().unwrap().to_string();
        assert!(
            broken.contains("policy.yaml") && broken.contains("field 'rules[0]'"),
            "{broken}"
        );
    }
}
