//! Property tests: invariants of the pure policy over generated input.
//!
//! Each property states what must hold for *every* input (no panic, a
//! decoder inverts its encoder, an accepted path never leaves its root, a
//! satisfiable range lies inside the object), so a counterexample is a bug.
//! `cargo test` runs proptest's default 256 cases per property; `make fuzz`
//! sets `PROPTEST_CASES` far higher.

use filters::breaker::{Admit, Breaker, State};
use filters::ecosystem::oci::{self, Operation, Reference, V2Route};
use filters::ecosystem::{npm, pypi};
use filters::policy::{Access, ArtifactClass, RemotePolicy};
use filters::range::{single_range, RangeReply};
use filters::route::{route, CacheApiRoute, Route};
use filters::Ecosystem;
use filters::{cache_key, links, size, stale, validate_artifact_path};
use proptest::prelude::*;
use std::path::{Component, Path};
use std::time::{Duration, SystemTime};

/// Text that stresses parsers: URL syntax, percent escapes, dots, slashes,
/// control characters and non-ASCII.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("%".to_string()),
        Just("%2e".to_string()),
        Just("%2F".to_string()),
        Just("%5c".to_string()),
        Just("%00".to_string()),
        Just("\\".to_string()),
        Just("-".to_string()),
        Just(":".to_string()),
        Just("@".to_string()),
        "[a-z0-9]{1,6}",
        any::<char>().prop_map(String::from),
        "%[0-9a-fA-F]{2}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9._+~-]{0,12}"
}

proptest! {
    #[test]
    fn range_replies_lie_inside_the_object(header in ".{0,40}", size in any::<u64>()) {
        match single_range(Some(&header), size) {
            RangeReply::Partial { start, end } => {
                prop_assert!(start < end, "{header:?} on {size}: {start}..{end}");
                prop_assert!(end <= size, "{header:?} on {size}: {start}..{end}");
            }
            RangeReply::Full | RangeReply::Unsatisfiable => {}
        }
    }

    #[test]
    fn numeric_ranges_clamp_to_the_end(
        size in 1..u64::MAX,
        first in any::<u64>(),
        last in any::<u64>(),
    ) {
        let reply = single_range(Some(&format!("bytes={first}-{last}")), size);
        let expected = if first >= size {
            RangeReply::Unsatisfiable
        } else if last < first {
            RangeReply::Full
        } else {
            RangeReply::Partial { start: first, end: last.saturating_add(1).min(size) }
        };
        prop_assert_eq!(reply, expected);
    }

    #[test]
    fn suffix_ranges_never_exceed_the_object(size in any::<u64>(), suffix in any::<u64>()) {
        match single_range(Some(&format!("bytes=-{suffix}")), size) {
            RangeReply::Partial { start, end } => {
                prop_assert_eq!(end, size);
                prop_assert_eq!(end - start, suffix.min(size));
            }
            other => prop_assert!(suffix == 0 || size == 0, "{other:?}"),
        }
    }

    #[test]
    fn cache_keys_decode_to_their_parts(parts in prop::collection::vec(".{0,20}", 0..6)) {
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let encoded = cache_key::encode(&parts);
        if parts.is_empty() {
            prop_assert_eq!(encoded, "");
        } else {
            prop_assert_eq!(cache_key::decode(&encoded), Some(parts));
        }
    }

    #[test]
    fn cache_keys_have_one_spelling(text in "[0-9:|+a-z]{0,30}") {
        if let Some(parts) = cache_key::decode(&text) {
            prop_assert_eq!(cache_key::encode(&parts), text);
        }
    }

    #[test]
    fn accepted_paths_stay_inside_their_root(raw in hostile_text(), max in 0usize..200) {
        let Ok(path) = validate_artifact_path(&raw, max) else { return Ok(()) };
        prop_assert!(raw.len() <= max);
        prop_assert!(!path.decoded.contains('\\'));
        prop_assert!(!path.decoded.chars().any(char::is_control));
        let relative = Path::new(&path.decoded);
        prop_assert!(
            relative.components().all(|c| matches!(c, Component::Normal(_))),
            "{raw:?} decoded to {:?}", path.decoded
        );
        let joined = Path::new("/cache/root").join(relative);
        prop_assert!(joined.starts_with("/cache/root"));
    }

    #[test]
    fn plain_paths_are_accepted_unchanged(segments in prop::collection::vec(segment(), 1..6)) {
        let raw = segments.join("/");
        prop_assume!(segments.iter().all(|s| s != "." && s != ".."));
        let path = validate_artifact_path(&raw, 4096).expect("plain path");
        prop_assert_eq!(path.decoded, raw);
    }

    #[test]
    fn encoded_paths_decode_back(segments in prop::collection::vec("[^/\\\\\\p{Cc}]{1,8}", 1..5)) {
        prop_assume!(segments.iter().all(|s| s != "." && s != ".."));
        let decoded = segments.join("/");
        let encoded = links::encode_path(&decoded);
        let path = validate_artifact_path(&encoded, 1 << 16).expect("encoded path is valid");
        prop_assert_eq!(path.decoded, decoded);
    }

    #[test]
    fn routes_split_at_the_remote(path in hostile_text()) {
        let path = format!("/{path}");
        match route(&path) {
            Route::Artifact { remote, raw_path } => {
                prop_assert!(!remote.is_empty() && !remote.contains('/'));
                let rebuilt = [format!("/api/v1/remote/{remote}/{raw_path}"), format!("/api/{remote}/{raw_path}")];
                prop_assert!(rebuilt.contains(&path), "{path:?}");
            }
            Route::ArtifactList { remote } => prop_assert!(!remote.contains('/')),
            Route::V2 { after_v2 } => prop_assert!(after_v2.is_empty() || after_v2.starts_with('/')),
            Route::CacheApi(api) => {
                let rebuilt = match api {
                    CacheApiRoute::List => "/api/v1/cache".to_string(),
                    CacheApiRoute::Usage => "/api/v1/cache/usage".to_string(),
                    CacheApiRoute::Verify => "/api/v1/cache/verify".to_string(),
                    CacheApiRoute::Artifact { remote, raw_path } => {
                        prop_assert!(!remote.contains('/'));
                        format!("/api/v1/cache/{remote}/{raw_path}")
                    }
                };
                prop_assert_eq!(rebuilt.trim_end_matches('/'), path.trim_end_matches('/'));
            }
            Route::Job { id } => prop_assert!(!id.is_empty() && !id.contains('/')),
            Route::Admin(_) | Route::NotFound => {}
        }
    }

    #[test]
    fn oci_routes_name_valid_repositories(after in hostile_text(), remote in "[a-z]{1,4}") {
        let after_v2 = format!("/{after}");
        if let Ok(V2Route::Repository { name, op, .. }) =
            oci::route(&after_v2, None, |first| first == remote)
        {
            prop_assert!(oci::valid_name(name), "{name:?}");
            prop_assert!(after_v2.contains(name));
            if let Operation::Manifest(Reference::Tag(tag)) = op {
                prop_assert!(oci::valid_tag(tag));
            }
        }
    }

    #[test]
    fn oci_blob_paths_round_trip(
        components in prop::collection::vec("[a-z0-9]{1,6}", 1..4),
        hex in "[0-9a-f]{64}",
    ) {
        let name = components.join("/");
        let digest = format!("sha256:{hex}");
        let after_v2 = format!("/hub/{name}/blobs/{digest}");
        let routed = oci::route(&after_v2, None, |first| first == "hub").expect("valid blob path");
        let V2Route::Repository { name: routed_name, op: Operation::Blob(d), .. } = routed else {
            return Err(TestCaseError::fail(format!("{routed:?}")));
        };
        prop_assert_eq!(routed_name, name.as_str());
        prop_assert_eq!(d.text, digest.as_str());
    }

    #[test]
    fn classification_follows_the_pattern_lists(
        path in hostile_text(),
        literal in "[a-z]{1,5}",
        package in prop::sample::select(vec![Ecosystem::Generic, Ecosystem::Npm, Ecosystem::Pypi, Ecosystem::Docker]),
    ) {
        let open = RemotePolicy::new(package, &[] as &[&str], &[]).unwrap();
        prop_assert!(open.classify(&path) != Access::Denied, "no immutable list denies nothing");
        let user = RemotePolicy::new(package, &["^nothing$"], &[regex_escape(&literal).as_str()]).unwrap();
        let with_literal = format!("{path}{literal}");
        prop_assert_eq!(
            user.classify(&with_literal),
            Access::Allowed(ArtifactClass::Mutable { user_defined: true })
        );
    }

    #[test]
    fn sizes_parse_their_own_rendering(n in any::<u32>()) {
        prop_assert_eq!(size::parse(&n.to_string()), Ok(u64::from(n)));
        prop_assert_eq!(size::parse(&format!("{n}KiB")), Ok(u64::from(n) << 10));
        prop_assert_eq!(size::parse(&format!("{n} MB")), Ok(u64::from(n) * 1_000_000));
    }

    #[test]
    fn size_parsing_never_panics(text in ".{0,24}") {
        let _ = size::parse(&text);
    }

    #[test]
    fn stale_copies_are_served_only_within_the_period(
        fresh in any::<u32>(), now in any::<u32>(), period in any::<u64>(),
    ) {
        let epoch = SystemTime::UNIX_EPOCH;
        let verdict = stale::decide(
            epoch + Duration::from_secs(fresh.into()),
            epoch + Duration::from_secs(now.into()),
            Duration::from_secs(period),
        );
        if let stale::Stale::Serve { stale_for } = verdict {
            prop_assert!(stale_for <= Duration::from_secs(period));
            prop_assert!(period > 0);
        }
    }

    #[test]
    fn breakers_never_panic_and_open_after_the_threshold(
        threshold in 0u32..8,
        backoff_ms in any::<u64>(),
        steps in prop::collection::vec((any::<bool>(), any::<u64>()), 0..40),
    ) {
        let breaker = Breaker { threshold, backoff_ms };
        let mut state = State::default();
        let mut consecutive_failures = 0u32;
        for (success, now_ms) in steps {
            let (admit, next) = breaker.admit(state, now_ms);
            state = next;
            if matches!(admit, Admit::No { .. }) {
                continue;
            }
            let was_closed = matches!(state, State::Closed { .. });
            state = breaker.record(state, admit, success, now_ms);
            consecutive_failures = if success { 0 } else { consecutive_failures + 1 };
            if threshold > 0 && was_closed && consecutive_failures >= threshold {
                prop_assert!(!state.is_up(), "{consecutive_failures} failures left it up");
            }
            if threshold == 0 {
                prop_assert!(state.is_up());
            }
            if !state.is_up() {
                consecutive_failures = 0;
            }
        }
    }

    #[test]
    fn accept_q_values_are_in_range(accept in ".{0,60}") {
        for (_, q) in filters::accept::ranges(&accept) {
            prop_assert!((0.0..=1.0).contains(&q), "{accept:?} gave q={q}");
        }
    }

    #[test]
    fn pypi_normalisation_is_idempotent(name in ".{0,30}") {
        let once = pypi::normalize(&name);
        prop_assert_eq!(pypi::normalize(&once), once.clone());
        prop_assert!(!once.contains("--"));
    }

    #[test]
    fn npm_scoped_names_unescape_to_one_separator(scope in "[a-z0-9-]{1,8}", name in "[a-z0-9.-]{1,8}", upper in any::<bool>()) {
        let raw = format!("@{scope}%{}{name}", if upper { "2F" } else { "2f" });
        let unescaped = npm::unescape_scope(&raw);
        prop_assert_eq!(unescaped.as_ref(), format!("@{scope}/{name}"));
        let _ = npm::classify(&unescaped);
    }
}

fn regex_escape(literal: &str) -> String {
    literal
        .chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}
