//! The artifact firewall's policy: one set of rules over every format,
//! deciding whether a release of a package may be served.
//!
//! Each format says how a path maps to a package and version
//! ([`crate::Ecosystem::package_of`]); the rules here never ask which
//! format they judge beyond comparing versions in its order. A rule is one
//! of:
//! - **malicious**: the advisories of a feed (OSV records, [`osv`]);
//! - **deny**: package name patterns with version ranges;
//! - **allow**: the same, as waivers: a release an allow rule names passes
//!   every other rule (a known false positive, an internal package);
//! - **min_age**: releases younger than the age are held, except the
//!   packages it exempts (the age itself is judged where the publication
//!   time is known: the upstream's answer and the index).
//!
//! Each rule has a mode: `enforce` refuses (and hides from indexes);
//! `dry_run` serves, but the proxy logs, counts and marks the response.
//! Rules apply to every remote or to the ones they list.
//!
//! Lookups cost one hash probe per request plus the rules written with
//! glob patterns, so a feed of tens of thousands of packages adds nothing
//! to the requests for other packages.

pub mod osv;
pub mod versions;

use crate::ecosystem::Ecosystem;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use versions::{Version, VersionTest};

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Refuse, and hide from indexes.
    Enforce,
    /// Serve, but log, count and mark the response.
    DryRun,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::DryRun => "dry_run",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "enforce" => Ok(Mode::Enforce),
            "dry_run" => Ok(Mode::DryRun),
            other => Err(format!(
                "unknown mode {other:?}, expected enforce or dry_run"
            )),
        }
    }
}

/// The kind of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Malicious,
    Deny,
    Allow,
    MinAge(Duration),
}

impl RuleKind {
    /// The label of refusals and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::Malicious => "malicious",
            RuleKind::Deny => "deny",
            RuleKind::Allow => "allow",
            RuleKind::MinAge(_) => "min_age",
        }
    }
}

/// One rule, without its entries.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    pub mode: Mode,
    /// Delete refused releases from storage, not only refuse them.
    pub purge: bool,
    /// The remotes it applies to; `None`: every remote.
    pub remotes: Option<Vec<String>>,
}

impl Rule {
    fn applies_to(&self, remote: &str) -> bool {
        self.remotes
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == remote))
    }
}

/// Which packages an entry names.
#[derive(Debug, Clone)]
enum NameMatch {
    Exact(String),
    Glob(regex::Regex),
}

/// The advisory behind an entry of a feed.
#[derive(Debug)]
pub struct AdvisoryRef {
    pub id: String,
    pub summary: String,
}

/// One package (pattern) of a rule, with the versions it names.
#[derive(Debug)]
struct Entry {
    rule: usize,
    ecosystem: Option<Ecosystem>,
    name: NameMatch,
    /// Any passing test names the version; empty: every version.
    versions: Vec<VersionTest>,
    advisory: Option<Arc<AdvisoryRef>>,
}

impl Entry {
    fn names_version(&self, version: Option<&Version>) -> bool {
        let every =
            self.versions.is_empty() || self.versions.iter().all(|t| matches!(t, VersionTest::Any));
        match version {
            None => every,
            Some(version) => every || self.versions.iter().any(|t| t.matches(version)),
        }
    }
}

/// What a matching refusal rule found, owned so that it outlives the
/// policy it came from (a reload swaps the policy under a request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub rule: String,
    pub kind: &'static str,
    pub mode: Mode,
    pub purge: bool,
    /// The advisory id (`MAL-…`) for a feed's rule.
    pub advisory: Option<String>,
    /// One line saying why.
    pub reason: String,
}

impl Finding {
    /// `rule 'name' (MAL-…)`: how refusals and logs name it.
    pub fn label(&self) -> String {
        match &self.advisory {
            Some(id) => format!("rule '{}' ({id})", self.rule),
            None => format!("rule '{}'", self.rule),
        }
    }
}

impl Finding {
    /// The `X-Artifact-Policy` value of a response a dry-run rule would
    /// have refused: `dry_run; rule="name"; advisory=MAL-…`.
    pub fn dry_run_mark(&self) -> String {
        let rule: String = self
            .rule
            .chars()
            .map(|c| {
                if c == '"' || !(c == ' ' || c.is_ascii_graphic()) {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        match &self.advisory {
            Some(id) => format!("dry_run; rule=\"{rule}\"; advisory={id}"),
            None => format!("dry_run; rule=\"{rule}\""),
        }
    }
}

/// The verdict on one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Refuse(Finding),
    DryRun(Finding),
}

/// The age a release must reach before it is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgeLimit {
    pub age: Duration,
    pub rule: String,
    pub mode: Mode,
}

/// A release being judged.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub remote: &'a str,
    pub ecosystem: Ecosystem,
    /// In the format's normal form ([`osv::normal_name`]).
    pub package: &'a str,
    pub version: &'a str,
}

/// Says whether an index shows a release (by version) of its package:
/// `Some(why)` for one the firewall refuses.
pub type ReleaseJudge = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What an index document of one package leaves out or marks.
#[derive(Clone, Default)]
pub struct Shown {
    /// Releases published after this are left out (minimum age).
    pub hide_after: Option<std::time::SystemTime>,
    /// Releases the firewall refuses: taken out of resolution in the
    /// format's own way (npm's `policyRestrictions`, PyPI's yank), so an
    /// explicit request for one tells the client why.
    pub refused: Option<ReleaseJudge>,
}

impl Shown {
    /// Hides releases published after `hide_after` only.
    pub fn published_before(hide_after: Option<std::time::SystemTime>) -> Shown {
        Shown {
            hide_after,
            refused: None,
        }
    }

    /// Why the firewall refuses `version`, if it does.
    pub fn refused(&self, version: &str) -> Option<String> {
        self.refused.as_ref().and_then(|judge| judge(version))
    }
}

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shown")
            .field("hide_after", &self.hide_after)
            .field("refused", &self.refused.is_some())
            .finish()
    }
}

/// The compiled rules.
#[derive(Debug, Default)]
pub struct Policy {
    rules: Vec<Rule>,
    entries: Vec<Entry>,
    by_name: HashMap<(Ecosystem, String), Vec<usize>>,
    /// Entries whose name is a pattern, or that name no format.
    scanned: Vec<usize>,
    age_rules: Vec<usize>,
}

/// A package name pattern of a rule that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EntryError(pub String);

impl Policy {
    /// Adds a rule; its entries follow with [`Policy::add_entry`].
    pub fn add_rule(&mut self, rule: Rule) -> usize {
        let at = self.rules.len();
        if matches!(rule.kind, RuleKind::MinAge(_)) {
            self.age_rules.push(at);
        }
        self.rules.push(rule);
        at
    }

    /// Adds a package (`*` globs allowed) of rule `rule`, with the versions
    /// it names in the format's native syntax (none: every version).
    pub fn add_entry(
        &mut self,
        rule: usize,
        ecosystem: Option<Ecosystem>,
        package: &str,
        versions: &[String],
    ) -> Result<(), EntryError> {
        let Some(ecosystem_for_versions) = ecosystem.or(if versions.is_empty() {
            Some(Ecosystem::Generic)
        } else {
            None
        }) else {
            return Err(EntryError(
                "versions need an ecosystem to compare them in".into(),
            ));
        };
        let mut tests = Vec::new();
        for spec in versions {
            tests.extend(VersionTest::parse(ecosystem_for_versions, spec).map_err(EntryError)?);
        }
        if package.trim().is_empty() {
            return Err(EntryError("an empty package name".into()));
        }
        let name = match (package.contains('*'), ecosystem) {
            (true, _) => NameMatch::Glob(versions::glob(package)),
            (false, Some(e)) => NameMatch::Exact(osv::normal_name(e, package)),
            (false, None) => NameMatch::Exact(package.to_string()),
        };
        self.push(Entry {
            rule,
            ecosystem,
            name,
            versions: tests,
            advisory: None,
        });
        Ok(())
    }

    /// Adds the advisories of a feed to rule `rule`.
    pub fn add_advisories(&mut self, rule: usize, advisories: Vec<osv::Advisory>) {
        let mut refs: HashMap<String, Arc<AdvisoryRef>> = HashMap::new();
        for advisory in advisories {
            let reference = refs
                .entry(advisory.id.clone())
                .or_insert_with(|| {
                    Arc::new(AdvisoryRef {
                        id: advisory.id.clone(),
                        summary: advisory.summary.clone(),
                    })
                })
                .clone();
            self.push(Entry {
                rule,
                ecosystem: Some(advisory.ecosystem),
                name: NameMatch::Exact(advisory.name),
                versions: advisory.versions,
                advisory: Some(reference),
            });
        }
    }

    fn push(&mut self, entry: Entry) {
        let at = self.entries.len();
        match (&entry.name, entry.ecosystem) {
            (NameMatch::Exact(name), Some(ecosystem)) => self
                .by_name
                .entry((ecosystem, name.clone()))
                .or_default()
                .push(at),
            _ => self.scanned.push(at),
        }
        self.entries.push(entry);
    }

    /// Whether there are no rules at all (the proxy skips the lookup).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether a minimum-age rule applies to `remote`.
    pub fn has_min_age(&self, remote: &str) -> bool {
        self.age_rules
            .iter()
            .any(|&i| self.rules[i].applies_to(remote))
    }

    /// The rules, in the order they were added.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The number of package entries (a feed's advisories included).
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The entries naming `package` of `ecosystem` in rules that apply to
    /// `remote`.
    fn matching<'a>(
        &'a self,
        remote: &'a str,
        ecosystem: Ecosystem,
        package: &'a str,
    ) -> impl Iterator<Item = &'a Entry> + 'a {
        let exact = self
            .by_name
            .get(&(ecosystem, package.to_string()))
            .into_iter()
            .flatten();
        exact
            .chain(self.scanned.iter())
            .map(|&i| &self.entries[i])
            .filter(move |e| e.ecosystem.is_none_or(|x| x == ecosystem))
            .filter(move |e| match &e.name {
                NameMatch::Exact(name) => name == package,
                NameMatch::Glob(pattern) => pattern.is_match(package),
            })
            .filter(move |e| self.rules[e.rule].applies_to(remote))
    }

    /// The verdict of the deny, allow and malicious rules on a release: an
    /// allow rule naming it wins; else the first enforcing rule refuses;
    /// else the first dry-run rule marks it.
    pub fn decide(&self, query: &Query<'_>) -> Verdict {
        if self.rules.is_empty() {
            return Verdict::Allow;
        }
        let version = Version::parse(query.ecosystem, query.version);
        let mut dry_run = None;
        let mut refused = None;
        for entry in self.matching(query.remote, query.ecosystem, query.package) {
            let rule = &self.rules[entry.rule];
            if matches!(rule.kind, RuleKind::MinAge(_)) || !entry.names_version(Some(&version)) {
                continue;
            }
            if rule.kind == RuleKind::Allow {
                return Verdict::Allow;
            }
            let slot = match rule.mode {
                Mode::Enforce => &mut refused,
                Mode::DryRun => &mut dry_run,
            };
            if slot.is_none() {
                *slot = Some(self.finding(entry, query));
            }
        }
        match (refused, dry_run) {
            (Some(finding), _) => Verdict::Refuse(finding),
            (None, Some(finding)) => Verdict::DryRun(finding),
            (None, None) => Verdict::Allow,
        }
    }

    fn finding(&self, entry: &Entry, query: &Query<'_>) -> Finding {
        let rule = &self.rules[entry.rule];
        let reason = match (&entry.advisory, rule.kind) {
            (Some(advisory), _) if !advisory.summary.is_empty() => advisory.summary.clone(),
            (_, RuleKind::Malicious) => {
                format!("{} {} is known malicious", query.package, query.version)
            }
            _ => format!("{} {} is denied", query.package, query.version),
        };
        Finding {
            rule: rule.name.clone(),
            kind: rule.kind.as_str(),
            mode: rule.mode,
            purge: rule.purge,
            advisory: entry.advisory.as_ref().map(|a| a.id.clone()),
            reason,
        }
    }

    /// The longest minimum age that applies to `package` on `remote`
    /// (enforcing rules before dry-run ones), unless the rule exempts the
    /// package or an allow rule names it (with `version`, when known).
    pub fn min_age(
        &self,
        remote: &str,
        ecosystem: Ecosystem,
        package: &str,
        version: Option<&str>,
    ) -> Option<AgeLimit> {
        if self.age_rules.is_empty() {
            return None;
        }
        let version = version.map(|v| Version::parse(ecosystem, v));
        let named: Vec<&Entry> = self
            .matching(remote, ecosystem, package)
            .filter(|e| e.names_version(version.as_ref()))
            .collect();
        if named
            .iter()
            .any(|e| self.rules[e.rule].kind == RuleKind::Allow)
        {
            return None;
        }
        self.age_rules
            .iter()
            .map(|&i| (i, &self.rules[i]))
            .filter(|(i, rule)| rule.applies_to(remote) && !named.iter().any(|e| e.rule == *i))
            .filter_map(|(_, rule)| match rule.kind {
                RuleKind::MinAge(age) => Some(AgeLimit {
                    age,
                    rule: rule.name.clone(),
                    mode: rule.mode,
                }),
                _ => None,
            })
            .max_by_key(|limit| (limit.mode == Mode::Enforce, limit.age))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, kind: RuleKind, mode: Mode) -> Rule {
        Rule {
            name: name.into(),
            kind,
            mode,
            purge: false,
            remotes: None,
        }
    }

    fn query<'a>(ecosystem: Ecosystem, package: &'a str, version: &'a str) -> Query<'a> {
        Query {
            remote: "r",
            ecosystem,
            package,
            version,
        }
    }

    fn feed() -> Policy {
        let mut policy = Policy::default();
        let at = policy.add_rule(rule("malicious", RuleKind::Malicious, Mode::Enforce));
        let advisories = osv::parse(
            br#"{"id": "MAL-2026-1", "summary": "Malicious code in acc-demo",
                 "affected": [{"package": {"ecosystem": "PyPI", "name": "acc_demo"}, "versions": ["1.1.0"]}]}"#,
        )
        .unwrap();
        policy.add_advisories(at, advisories);
        policy
    }

    #[test]
    fn a_feed_refuses_the_versions_it_names() {
        let policy = feed();
        let Verdict::Refuse(finding) = policy.decide(&query(Ecosystem::Pypi, "acc-demo", "1.1"))
        else {
            panic!("not refused");
        };
        assert_eq!(finding.advisory.as_deref(), Some("MAL-2026-1"));
        assert_eq!(finding.label(), "rule 'malicious' (MAL-2026-1)");
        assert_eq!(finding.reason, "Malicious code in acc-demo");
        assert_eq!(
            policy.decide(&query(Ecosystem::Pypi, "acc-demo", "1.0.0")),
            Verdict::Allow
        );
        assert_eq!(
            policy.decide(&query(Ecosystem::Npm, "acc-demo", "1.1.0")),
            Verdict::Allow
        );
    }

    #[test]
    fn allow_waives_deny_and_dry_run_only_marks() {
        let mut policy = feed();
        let deny = policy.add_rule(rule("no-evil", RuleKind::Deny, Mode::DryRun));
        policy
            .add_entry(deny, Some(Ecosystem::Npm), "evil-*", &[">=2.0.0".into()])
            .unwrap();
        let allow = policy.add_rule(rule("waiver", RuleKind::Allow, Mode::Enforce));
        policy
            .add_entry(allow, Some(Ecosystem::Pypi), "acc-demo", &["1.1.0".into()])
            .unwrap();
        assert_eq!(
            policy.decide(&query(Ecosystem::Pypi, "acc-demo", "1.1.0")),
            Verdict::Allow
        );
        let Verdict::DryRun(finding) = policy.decide(&query(Ecosystem::Npm, "evil-x", "2.1.0"))
        else {
            panic!("not marked");
        };
        assert_eq!((finding.rule.as_str(), finding.kind), ("no-evil", "deny"));
        assert_eq!(
            policy.decide(&query(Ecosystem::Npm, "evil-x", "1.9.0")),
            Verdict::Allow
        );
    }

    #[test]
    fn rules_apply_to_the_remotes_they_list() {
        let mut policy = Policy::default();
        let mut scoped = rule("deny", RuleKind::Deny, Mode::Enforce);
        scoped.remotes = Some(vec!["other".into()]);
        let at = policy.add_rule(scoped);
        policy.add_entry(at, None, "x", &[]).unwrap();
        assert_eq!(
            policy.decide(&query(Ecosystem::Npm, "x", "1.0.0")),
            Verdict::Allow
        );
        let on_other = Query {
            remote: "other",
            ..query(Ecosystem::Npm, "x", "1.0.0")
        };
        assert!(matches!(policy.decide(&on_other), Verdict::Refuse(_)));
    }

    #[test]
    fn min_age_spares_what_it_exempts_and_what_is_allowed() {
        let mut policy = Policy::default();
        let day = Duration::from_secs(86_400);
        let age = policy.add_rule(rule("fresh", RuleKind::MinAge(day), Mode::Enforce));
        policy
            .add_entry(age, Some(Ecosystem::Npm), "@acme/*", &[])
            .unwrap();
        let limit = policy.min_age("r", Ecosystem::Npm, "left-pad", Some("1.0.0"));
        assert_eq!(limit.map(|l| l.age), Some(day));
        assert_eq!(policy.min_age("r", Ecosystem::Npm, "@acme/ui", None), None);
        let allow = policy.add_rule(rule("ok", RuleKind::Allow, Mode::Enforce));
        policy
            .add_entry(allow, Some(Ecosystem::Npm), "left-pad", &[])
            .unwrap();
        assert_eq!(policy.min_age("r", Ecosystem::Npm, "left-pad", None), None);
        assert_eq!(
            policy.decide(&query(Ecosystem::Npm, "left-pad", "1.0.0")),
            Verdict::Allow
        );
    }

    #[test]
    fn entries_report_what_does_not_compile() {
        let mut policy = Policy::default();
        let at = policy.add_rule(rule("deny", RuleKind::Deny, Mode::Enforce));
        let error = policy
            .add_entry(at, Some(Ecosystem::Npm), "x", &["soon".into()])
            .unwrap_err();
        assert!(error.0.contains("soon"), "{error}");
        assert!(policy.add_entry(at, None, "x", &["1.0".into()]).is_err());
        assert!(policy
            .add_entry(at, Some(Ecosystem::Npm), " ", &[])
            .is_err());
    }
}
