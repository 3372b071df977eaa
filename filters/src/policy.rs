//! Per-remote access control and immutable/mutable classification.
//!
//! The model is the reference system's (seeds 003/004):
//! - a path matching a *mutable* pattern (the remote's own plus the built-in
//!   defaults of its package type) is always allowed and expires after
//!   `mutable_ttl`;
//! - otherwise a path matching an *immutable* pattern is allowed and kept
//!   until flushed;
//! - otherwise it is denied (403), unless the remote lists no immutable
//!   patterns at all, in which case every path is allowed as immutable.

pub use crate::ecosystem::ArtifactClass;
use crate::ecosystem::Ecosystem;
use crate::pattern::{PatternError, PatternSet};

/// The access decision for one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed(ArtifactClass),
    /// No pattern allows this path: answer 403 without contacting the upstream.
    Denied,
}

/// A pattern list of a remote that failed to compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}[{}]: {source}", source.index)]
pub struct PolicyError {
    /// `immutable_patterns` or `mutable_patterns`.
    pub field: &'static str,
    #[source]
    pub source: PatternError,
}

/// The compiled access and classification policy of one remote.
#[derive(Debug, Clone)]
pub struct RemotePolicy {
    ecosystem: Ecosystem,
    immutable: PatternSet,
    user_mutable: PatternSet,
    default_mutable: PatternSet,
}

impl RemotePolicy {
    /// Compiles a remote's pattern lists; errors name the list and index.
    pub fn new<S: AsRef<str>>(
        ecosystem: Ecosystem,
        immutable_patterns: &[S],
        mutable_patterns: &[S],
    ) -> Result<Self, PolicyError> {
        let immutable = PatternSet::new(immutable_patterns).map_err(|source| PolicyError {
            field: "immutable_patterns",
            source,
        })?;
        let user_mutable = PatternSet::new(mutable_patterns).map_err(|source| PolicyError {
            field: "mutable_patterns",
            source,
        })?;
        let default_mutable = PatternSet::new(ecosystem.default_mutable_patterns())
            .expect("built-in default patterns compile");
        Ok(RemotePolicy {
            ecosystem,
            immutable,
            user_mutable,
            default_mutable,
        })
    }

    /// The remote's package format.
    pub fn ecosystem(&self) -> Ecosystem {
        self.ecosystem
    }

    /// Whether an image may be pulled (docker remotes, seed 001): allowed
    /// when the remote lists no `immutable_patterns` (`include_patterns`) or
    /// one of them matches any of `candidates` (the image name, its first
    /// two segments and the full path). Unlike [`Self::classify`], mutable
    /// files get no exemption: patterns restrict whole images.
    pub fn allows_image(&self, candidates: &[&str]) -> bool {
        self.immutable.is_empty() || candidates.iter().any(|c| self.immutable.is_match(c))
    }

    /// Whether one of the remote's own `mutable_patterns` matches `path`.
    pub fn user_mutable(&self, path: &str) -> bool {
        self.user_mutable.is_match(path)
    }

    /// Decides access and class for a decoded artifact path.
    pub fn classify(&self, path: &str) -> Access {
        if self.user_mutable.is_match(path) {
            return Access::Allowed(ArtifactClass::Mutable { user_defined: true });
        }
        if self.default_mutable.is_match(path) {
            return Access::Allowed(ArtifactClass::Mutable {
                user_defined: false,
            });
        }
        if self.immutable.is_empty() || self.immutable.is_match(path) {
            return Access::Allowed(ArtifactClass::Immutable);
        }
        Access::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MUTABLE_USER: Access = Access::Allowed(ArtifactClass::Mutable { user_defined: true });
    const MUTABLE_DEFAULT: Access = Access::Allowed(ArtifactClass::Mutable {
        user_defined: false,
    });
    const IMMUTABLE: Access = Access::Allowed(ArtifactClass::Immutable);

    fn policy(ecosystem: Ecosystem, immutable: &[&str], mutable: &[&str]) -> RemotePolicy {
        RemotePolicy::new(ecosystem, immutable, mutable).unwrap()
    }

    #[test]
    fn npm_look_ahead_example_classifies_tarballs_and_documents() {
        let p = policy(Ecosystem::Npm, &["\\.tgz$"], &["^(?!.*\\.tgz$).*"]);
        assert_eq!(p.classify("foo.tgz"), IMMUTABLE);
        assert_eq!(p.classify("foo"), MUTABLE_USER);
        assert_eq!(p.classify("left-pad/-/left-pad-1.3.0.tgz"), IMMUTABLE);
    }

    #[test]
    fn unmatched_path_is_denied_when_immutable_patterns_exist() {
        let p = policy(Ecosystem::Generic, &[r"lxc/incus/.*\.tar\.gz$"], &[]);
        assert_eq!(p.classify("lxc/incus/releases/v1/incus.tar.gz"), IMMUTABLE);
        assert_eq!(
            p.classify("lxc/incus/releases/v1/incus.zip"),
            Access::Denied
        );
    }

    #[test]
    fn no_immutable_patterns_allows_everything() {
        let p = policy(Ecosystem::Generic, &[], &[]);
        assert_eq!(p.classify("any/thing"), IMMUTABLE);
    }

    #[test]
    fn mutable_wins_over_immutable_and_bypasses_acl() {
        let p = policy(
            Ecosystem::Generic,
            &[r".*\.tgz$"],
            &[r"index\.yaml$", r"latest\.tgz$"],
        );
        assert_eq!(p.classify("index.yaml"), MUTABLE_USER);
        assert_eq!(p.classify("charts/latest.tgz"), MUTABLE_USER);
        assert_eq!(p.classify("charts/a-1.0.tgz"), IMMUTABLE);
    }

    #[test]
    fn package_defaults_are_mutable_without_configuration() {
        let alpine = policy(Ecosystem::Alpine, &[r".*/x86_64/.*\.apk$"], &[]);
        assert_eq!(
            alpine.classify("v3.20/main/x86_64/APKINDEX.tar.gz"),
            MUTABLE_DEFAULT
        );
        assert_eq!(alpine.classify("v3.20/main/x86_64/musl-1.2.apk"), IMMUTABLE);
        assert_eq!(
            alpine.classify("v3.20/main/aarch64/musl-1.2.apk"),
            Access::Denied
        );

        let rpm = policy(Ecosystem::Rpm, &[r".*/x86_64/.*\.rpm$"], &[]);
        assert_eq!(
            rpm.classify("9/BaseOS/x86_64/os/repodata/repomd.xml"),
            MUTABLE_DEFAULT
        );
        assert_eq!(
            rpm.classify("9/os/repodata/abc-primary.xml.gz"),
            MUTABLE_DEFAULT
        );
        assert_eq!(
            rpm.classify("9/os/repodata/abc-primary.sqlite.zst"),
            MUTABLE_DEFAULT
        );
        assert_eq!(rpm.classify("9/os/x86_64/Packages/bash.rpm"), IMMUTABLE);

        let docker = policy(Ecosystem::Docker, &[], &[]);
        assert_eq!(
            docker.classify("library/nginx/manifests/latest"),
            MUTABLE_DEFAULT
        );
        assert_eq!(docker.classify("library/nginx/tags/list"), MUTABLE_DEFAULT);
        assert_eq!(
            docker.classify("library/nginx/manifests/sha256:abcd"),
            IMMUTABLE
        );
        assert_eq!(
            docker.classify("library/nginx/blobs/sha256:abcd"),
            IMMUTABLE
        );

        let pypi = policy(Ecosystem::Pypi, &[r"packages/.*\.whl$"], &[]);
        assert_eq!(pypi.classify("simple/requests/"), MUTABLE_DEFAULT);
        assert_eq!(
            pypi.classify("packages/ab/requests-2.0-py3-none-any.whl"),
            IMMUTABLE
        );

        let helm = policy(Ecosystem::Helm, &[r"\.tgz$"], &[]);
        assert_eq!(helm.classify("index.yaml"), MUTABLE_DEFAULT);
        assert_eq!(helm.classify("vault-0.28.0.tgz"), IMMUTABLE);

        let generic = policy(Ecosystem::Generic, &[r"\.deb$"], &[]);
        assert_eq!(generic.classify("dists/stable/InRelease"), Access::Denied);
    }

    #[test]
    fn image_acl_matches_name_or_path_without_exemption() {
        let p = policy(Ecosystem::Docker, &["^library/"], &[]);
        assert!(p.allows_image(&[
            "library/nginx",
            "library/nginx",
            "library/nginx/manifests/1"
        ]));
        assert!(!p.allows_image(&["evil/app", "evil/app", "evil/app/manifests/latest"]));
        assert!(policy(Ecosystem::Docker, &[], &[]).allows_image(&["any/thing"]));
        let p = policy(Ecosystem::Docker, &[], &["/manifests/edge$"]);
        assert!(p.user_mutable("a/manifests/edge"));
        assert!(!p.user_mutable("a/manifests/v1"));
    }

    #[test]
    fn every_package_default_compiles() {
        for ecosystem in Ecosystem::ALL {
            PatternSet::new(ecosystem.default_mutable_patterns()).unwrap();
        }
        assert!("maven"
            .parse::<Ecosystem>()
            .unwrap_err()
            .contains("generic"));
    }

    #[test]
    fn bad_pattern_names_field_and_index() {
        let err =
            RemotePolicy::new(Ecosystem::Generic, &["ok"], &["fine", "(unclosed"]).unwrap_err();
        assert_eq!(err.field, "mutable_patterns");
        assert_eq!(
            err.to_string().split(':').next().unwrap(),
            "mutable_patterns[1]"
        );
    }
}
