//! The artifact firewall at run time: the rules in force, judging each
//! artifact request by them, and revoking what a new rule refuses.
//!
//! The rules ([`filters::firewall`]) are compiled from the configuration,
//! the policy file and the feeds ([`crate::config::firewall`]) and swapped
//! whole; each swap bumps the configuration generation, which ends the
//! fast path's memo ([`App::config_generation`]), so a hit on something newly refused
//! is refused at once. Every request for a release is judged before the
//! cache is asked: a cached copy of a refused release is never served.
//!
//! The files are looked at every `firewall.refresh`; a changed set is
//! compiled and, when it compiles, put in force, after which the releases
//! that rules with `purge: true` refuse are deleted from storage. A file
//! that does not compile is logged and counted; the rules in force stay.

pub mod feeds;
pub mod rules;

use crate::app::App;
use crate::config::firewall as settings;
use crate::metrics::{FirewallAction, ReloadResult};
use crate::proxy::artifact::Artifact;
use crate::reply::Reply;
use filters::ecosystem::PackageVersion;
use filters::firewall::{Finding, Mode, Policy, Query, ReleaseJudge, Shown, Verdict};
use filters::Ecosystem;
use http::StatusCode;
use std::sync::Arc;
use std::time::SystemTime;

/// The message a refusal and an index give for a refused release.
fn refusal_message(package: &str, version: &str, finding: &Finding) -> String {
    format!(
        "{package}@{version} is refused by artifactd {}: {}",
        finding.label(),
        finding.reason
    )
}

/// Marks a response that a dry-run firewall rule would have refused.
pub const POLICY_HEADER: &str = "x-artifact-policy";

/// The rule name that metrics and logs give a withdrawn release's refusal.
pub const WITHDRAWN_RULE: &str = "on_upstream_removed";

/// A request the firewall refuses.
pub struct Refused {
    pub reply: Reply,
    /// The rule, and the message (for the log line and metrics, which
    /// the request phase writes once).
    pub why: (String, String),
}

/// Judges an artifact request: `Err` is the refusal to send; otherwise
/// the artifact carries what the later phases apply (a minimum age, a
/// dry-run mark, what its index shows). Without side effects: the fast
/// path judges the requests it then leaves to the phases.
pub fn judge(app: &App, artifact: &mut Artifact) -> Result<(), Box<Refused>> {
    artifact.judged.generation = app.config_generation();
    let policy = app.firewall.policy();
    if policy.is_empty() && !artifact.remote.refuse_withdrawn {
        return Ok(());
    }
    let remote = artifact.remote.clone();
    let ecosystem = remote.ecosystem;
    let Some(path) = artifact.key_parts.first().cloned() else {
        return Ok(());
    };
    if let Some(document) = artifact.document() {
        let package = ecosystem.package_of_document(document, &path);
        let limit = policy.min_age(
            &remote.name,
            ecosystem,
            package.as_deref().unwrap_or(""),
            None,
        );
        let hides = limit.as_ref().is_some_and(|limit| {
            limit.mode == Mode::Enforce
                && (remote.quarantine_hide || limit.rule != settings::quarantine_rule(&remote.name))
        });
        let hide_after = limit
            .filter(|_| hides)
            .and_then(|limit| SystemTime::now().checked_sub(limit.age));
        artifact.judged.shown = Shown {
            hide_after,
            refused: package
                .map(|package| release_judge(policy.clone(), &remote.name, ecosystem, package)),
        };
        return Ok(());
    }
    // An image's release is its repository and the tag or digest asked for.
    let release = artifact.release();
    if let Some(release) = &release {
        let query = Query {
            remote: &remote.name,
            ecosystem,
            package: &release.name,
            version: &release.version,
        };
        match policy.decide(&query) {
            Verdict::Refuse(finding) => return Err(refused(ecosystem, release, finding)),
            Verdict::DryRun(finding) => artifact.judged.dry_run = Some(finding),
            Verdict::Allow => {}
        }
        if remote.refuse_withdrawn
            && app
                .checksums
                .withdrawn(&remote.name, &release.name, &release.version)
        {
            let message = format!(
                "{}@{} was withdrawn upstream (its index no longer lists it), and remote '{}' refuses withdrawn releases (on_upstream_removed: refuse)",
                release.name, release.version, remote.name
            );
            return Err(Box::new(Refused {
                reply: refusal(ecosystem, &message),
                why: (WITHDRAWN_RULE.to_string(), message),
            }));
        }
    }
    let (package, version) = match &release {
        Some(release) => (release.name.as_str(), Some(release.version.as_str())),
        None => (path.as_str(), None),
    };
    artifact.judged.min_age = policy
        .min_age(&remote.name, ecosystem, package, version)
        .filter(|limit| limit.mode == Mode::Enforce)
        .map(|limit| limit.age);
    Ok(())
}

/// Judges a response by the release it resolved the request to (an image
/// tag by its manifest's digest, [`Artifact::resolved_release`]): `Err`
/// when a rule refuses that release; a dry-run rule marks `resp`.
pub fn judge_resolved(
    app: &App,
    artifact: &Artifact,
    resp: &mut pingora::http::ResponseHeader,
) -> Result<(), Box<Refused>> {
    let policy = app.firewall.policy();
    if policy.is_empty() {
        return Ok(());
    }
    let Some(release) = artifact.resolved_release(resp) else {
        return Ok(());
    };
    let remote = &artifact.remote;
    let query = Query {
        remote: &remote.name,
        ecosystem: remote.ecosystem,
        package: &release.name,
        version: &release.version,
    };
    match policy.decide(&query) {
        Verdict::Refuse(finding) => Err(refused(remote.ecosystem, &release, finding)),
        Verdict::DryRun(finding) => {
            account(app, &remote.name, artifact.path(), None, Some(&finding));
            // A header that cannot be added only loses the mark.
            let _ = resp.insert_header(POLICY_HEADER, finding.dry_run_mark());
            Ok(())
        }
        Verdict::Allow => Ok(()),
    }
}

/// The refusal of `release` by the rule `finding` names.
fn refused(ecosystem: Ecosystem, release: &PackageVersion, finding: Finding) -> Box<Refused> {
    let message = refusal_message(&release.name, &release.version, &finding);
    Box::new(Refused {
        reply: refusal(ecosystem, &message),
        why: (finding.rule, message),
    })
}

/// Logs and counts what the firewall did to a request: a refusal (`why`
/// from [`Refused`]) or a dry-run mark.
pub fn account(
    app: &App,
    remote: &str,
    path: &str,
    refused: Option<&(String, String)>,
    dry_run: Option<&Finding>,
) {
    if let Some((rule, message)) = refused {
        app.metrics.firewall(remote, rule, FirewallAction::Refused);
        log::info!("remote '{remote}': {path}: {message}");
    }
    if let Some(finding) = dry_run {
        app.metrics
            .firewall(remote, &finding.rule, FirewallAction::DryRun);
        log::info!(
            "remote '{remote}': {path}: served under a dry-run {}: {}",
            finding.label(),
            finding.reason
        );
    }
}

/// Says which releases of `package` an index of `remote` shows, by the
/// policy it was judged under.
fn release_judge(
    policy: Arc<Policy>,
    remote: &str,
    ecosystem: Ecosystem,
    package: String,
) -> ReleaseJudge {
    let remote = remote.to_string();
    Arc::new(move |version: &str| {
        let query = Query {
            remote: &remote,
            ecosystem,
            package: &package,
            version,
        };
        match policy.decide(&query) {
            Verdict::Refuse(finding) => Some(refusal_message(&package, version, &finding)),
            Verdict::DryRun(_) | Verdict::Allow => None,
        }
    })
}

/// A 403 in the language of the format's clients, with the message as
/// the status line's reason too (pip prints that).
fn refusal(ecosystem: Ecosystem, message: &str) -> Reply {
    let refusal = ecosystem.refusal(message);
    Reply {
        status: StatusCode::FORBIDDEN,
        content_type: refusal.content_type,
        body: refusal.body.into(),
        headers: Vec::new(),
        reason: None,
    }
    .reason(&format!("Forbidden: {message}"))
}

/// How long changed rule files must stay unchanged before they are read.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

/// Looks at the rule files every `firewall.refresh` and puts a changed
/// set in force, then purges what it refuses.
pub async fn watch(app: Arc<App>) {
    loop {
        let refresh = app.config().server.firewall.refresh;
        tokio::time::sleep(refresh).await;
        let Some(changed) = app.firewall.files_changed() else {
            continue;
        };
        // A file written in place is empty for a moment (and an empty
        // policy file is a valid one): only files that stay as they are
        // for a moment are read.
        tokio::time::sleep(SETTLE).await;
        if settings::current_fingerprint(&changed) != changed {
            continue;
        }
        let config = app.config();
        match app.firewall.reload(&config) {
            Ok(()) => {
                app.metrics.firewall_loaded(ReloadResult::Applied);
                app.firewall_changed();
                purge(&app).await;
            }
            Err(e) => {
                app.metrics.firewall_loaded(ReloadResult::Refused);
                log::error!(
                    "firewall: the changed rules are refused, the rules in force stay: {e}"
                );
                // Not tried again until the files change once more.
                *app.firewall.fingerprint.lock() = changed;
            }
        }
    }
}

/// Deletes the cached releases that enforcing rules with `purge: true`
/// refuse, remote by remote from the catalog.
pub async fn purge(app: &App) {
    let policy = app.firewall.policy().clone();
    if !policy
        .rules()
        .iter()
        .any(|r| r.purge && r.mode == Mode::Enforce)
    {
        return;
    }
    let remotes: Vec<_> = app.config().remotes.values().cloned().collect();
    for remote in remotes {
        let entries = match app.catalog.entries_of(&remote.name, None).await {
            Ok(entries) => entries,
            Err(e) => {
                log::warn!(
                    "firewall: cannot list remote '{}' to purge: {e}",
                    remote.name
                );
                continue;
            }
        };
        for (id, path) in entries {
            let Some(release) = remote.ecosystem.package_of(&path) else {
                continue;
            };
            let query = Query {
                remote: &remote.name,
                ecosystem: remote.ecosystem,
                package: &release.name,
                version: &release.version,
            };
            let Verdict::Refuse(finding) = policy.decide(&query) else {
                continue;
            };
            if !finding.purge {
                continue;
            }
            match app.storage.remove_entry(&remote.name, id).await {
                Ok(true) => {
                    log::info!(
                        "firewall: purged {path} of remote '{}': {}",
                        remote.name,
                        refusal_message(&release.name, &release.version, &finding)
                    );
                    app.metrics
                        .firewall(&remote.name, &finding.rule, FirewallAction::Purged);
                }
                Ok(false) => {}
                Err(e) => log::warn!(
                    "firewall: cannot purge {path} of remote '{}': {e}",
                    remote.name
                ),
            }
        }
    }
}
