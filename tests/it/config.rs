//! Configuration loading through the real binary: the seed examples load
//! unchanged, every broken config fails naming file, remote and field, and
//! a config from before the rename keeps its meaning.

use crate::cache::source;
use crate::harness::{
    client, generic_remote, get_text, pattern_bytes, Artifactd, Origin, OriginFile,
};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn check_config(dir: &Path, remotes: &str) -> (bool, String, String) {
    std::fs::write(dir.join("remotes.yaml"), remotes).unwrap();
    std::fs::write(
        dir.join("artifactd.yaml"),
        "remotes: remotes.yaml\nstorage: fs://store\n",
    )
    .unwrap();
    let out = run_check_config(Command::new(env!("CARGO_BIN_EXE_artifactd")), dir);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// `command` (artifactd, or a wrapper that runs it) on `dir/artifactd.yaml`.
fn run_check_config(mut command: Command, dir: &Path) -> std::process::Output {
    command
        .arg("--config")
        .arg(dir.join("artifactd.yaml"))
        .arg("check-config")
        .env_remove("ARTIFACTD_CONFIG")
        .output()
        .expect("run artifactd")
}

#[test]
fn every_seed_example_loads_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = include_str!("../fixtures/remotes-examples.yaml");
    let (ok, stdout, stderr) = check_config(dir.path(), fixture);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("ok (12 remotes"), "{stdout}");
}

#[test]
fn broken_regex_names_remote_field_and_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let remotes = "remotes:\n  good:\n    base_url: \"http://127.0.0.1:9\"\n  bad:\n    base_url: \"http://127.0.0.1:9\"\n    immutable_patterns:\n      - 'ok\\.tgz$'\n      - 'broken(['\n";
    let (ok, _, stderr) = check_config(dir.path(), remotes);
    assert!(!ok);
    assert!(stderr.contains("remotes.yaml"), "{stderr}");
    assert!(stderr.contains("remote 'bad'"), "{stderr}");
    assert!(stderr.contains("immutable_patterns[1]"), "{stderr}");
    assert!(stderr.contains("broken(["), "{stderr}");
    assert!(!stderr.contains("remote 'good'"), "{stderr}");
}

/// A YAML alias bomb: ten levels of ten aliases, 10^10 strings expanded.
fn alias_bomb() -> String {
    let mut lines = vec!["a0: &a0 [x, x, x, x, x, x, x, x, x, x]".to_string()];
    for level in 1..10 {
        let refs = vec![format!("*a{}", level - 1); 10].join(", ");
        lines.push(format!("a{level}: &a{level} [{refs}]"));
    }
    lines.join("\n") + "\n"
}

/// Hostile configuration is refused at load, quickly and in bounded
/// memory, with the file and (where it has one) the remote and field.
#[test]
fn hostile_configs_are_refused_within_a_second_naming_where() {
    let dir = tempfile::tempdir().unwrap();
    let remote = "remotes:\n  gen:\n    base_url: \"http://127.0.0.1:9\"\n";
    let many: String = (0..100_000)
        .map(|i| format!("      - '^pkg{i}/'\n"))
        .collect();
    let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases = [
        (
            format!("{}{remote}    bomb: *a9\n", alias_bomb()),
            vec!["remotes.yaml", "repetition limit exceeded"],
        ),
        (
            format!("{remote}    immutable_patterns:\n{many}"),
            vec![
                "remote 'gen'",
                "immutable_patterns[1000]",
                "100000 patterns",
            ],
        ),
        (
            format!("{remote}    nested: {deep}\n"),
            vec!["remotes.yaml"],
        ),
    ];
    for (remotes, named) in cases {
        let started = std::time::Instant::now();
        let (ok, _, stderr) = check_config(dir.path(), &remotes);
        let took = started.elapsed();
        assert!(!ok, "accepted");
        assert!(took < Duration::from_secs(1), "{took:?}: {stderr}");
        assert!(
            stderr.len() < 2000,
            "a bounded message: {} bytes",
            stderr.len()
        );
        for word in named {
            assert!(stderr.contains(word), "{word}: {stderr}");
        }
    }
    let (ok, text) =
        check_server_config(dir.path(), &format!("{}cache: *a9\n", alias_bomb()), None);
    assert!(!ok && text.contains("artifactd.yaml"), "{text}");
}

#[test]
fn missing_base_url_and_bad_values_are_all_reported() {
    let dir = tempfile::tempdir().unwrap();
    let remotes = "remotes:\n  nourl:\n    type: remote\n    package: generic\n  weird:\n    base_url: \"http://127.0.0.1:9\"\n    package: maven\n";
    let (ok, _, stderr) = check_config(dir.path(), remotes);
    assert!(!ok);
    assert!(
        stderr.contains("remote 'nourl': field 'base_url'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("remote 'weird': field 'package'"),
        "{stderr}"
    );
}

#[test]
fn single_backslash_in_double_quotes_names_line_remote_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let remotes = "remotes:\n  npm:\n    base_url: \"http://127.0.0.1:9\"\n    package: npm\n    immutable_patterns:\n      - \"\\.tgz$\"\n";
    let (ok, _, stderr) = check_config(dir.path(), remotes);
    assert!(!ok);
    assert!(stderr.contains("remotes.yaml:6:"), "{stderr}");
    assert!(stderr.contains("remote 'npm'"), "{stderr}");
    assert!(stderr.contains("single quotes"), "{stderr}");
}

#[test]
fn unknown_server_setting_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("remotes.yaml"), "remotes: {}\n").unwrap();
    std::fs::write(
        dir.path().join("artifactd.yaml"),
        "limits:\n  max_upload: 5\n",
    )
    .unwrap();
    let out = run_check_config(Command::new(env!("CARGO_BIN_EXE_artifactd")), dir.path());
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("artifactd.yaml") && stderr.contains("max_upload"),
        "{stderr}"
    );
}

/// Runs `check-config` on `server` (with an empty `remotes.yaml`) in `dir`.
fn check_server_config(dir: &Path, server: &str, user: Option<&str>) -> (bool, String) {
    std::fs::write(dir.join("remotes.yaml"), "remotes: {}\n").unwrap();
    std::fs::write(dir.join("artifactd.yaml"), server).unwrap();
    let command = match user {
        // setpriv: the unit runs artifactd as its own user, where root's
        // reading of any file proves nothing.
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.args(["--reuid", user, "--regid", user, "--clear-groups", "--"]);
            c.arg(env!("CARGO_BIN_EXE_artifactd"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_artifactd")),
    };
    let out = run_check_config(command, dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), format!("{stdout}{stderr}"))
}

#[test]
fn check_config_refuses_a_catalog_folder_that_cannot_be_created() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    std::fs::create_dir(root.join("locked")).unwrap();
    let _locked = crate::harness::Immutable::set(&root.join("locked"));
    std::fs::write(root.join("plain"), "a file, not a folder\n").unwrap();

    let (ok, out) = check_server_config(
        &root,
        "storage: fs://store\ncatalog: sqlite://locked/new/catalog.db\n",
        None,
    );
    assert!(!ok, "{out}");
    let locked = root.join("locked");
    assert!(out.contains("field 'catalog'"), "{out}");
    assert!(
        out.contains(&format!("cannot create {}/new", locked.display())),
        "{out}"
    );
    assert!(
        out.contains("not writable: Operation not permitted"),
        "{out}"
    );

    let (ok, out) = check_server_config(&root, "storage: fs://plain/objects\n", None);
    assert!(!ok, "{out}");
    assert!(out.contains("field 'storage'"), "{out}");
    assert!(
        out.contains(&format!("{} is not a folder", root.join("plain").display())),
        "{out}"
    );
    assert!(
        !root.join("store").exists(),
        "check-config created a folder"
    );

    let (ok, out) = check_server_config(&root, "storage: fs://store\n", None);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "catalog sqlite://{}/store/catalog.db",
            root.display()
        )),
        "{out}"
    );
    assert!(
        !root.join("store").exists(),
        "check-config created a folder"
    );
}

#[test]
fn check_config_refuses_a_certificate_its_user_cannot_read() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let ca = crate::harness::tls::TestCa::new(&root.join("ca"));
    let (cert, key) = ca.issue("localhost");
    for (path, mode) in [
        (&root, 0o755),
        (&root.join("ca"), 0o755),
        (&cert, 0o600),
        (&key, 0o644),
    ] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let store = root.join("store");
    std::fs::create_dir(&store).unwrap();
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o777)).unwrap();
    let server = format!(
        "storage: fs://store\nprocess:\n  upgrade_socket: store/upgrade.sock\nlisten:\n  - address: \"127.0.0.1:8443\"\n    tls: {{cert: {}, key: {}}}\n",
        cert.display(),
        key.display()
    );
    let (ok, out) = check_server_config(&root, &server, Some("65534"));
    assert!(!ok, "{out}");
    assert!(out.contains("field 'listen'"), "{out}");
    assert!(out.contains(&cert.display().to_string()), "{out}");
    assert!(out.contains("Permission denied"), "{out}");
    // The same files, readable: ok.
    std::fs::set_permissions(&cert, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, out) = check_server_config(&root, &server, Some("65534"));
    assert!(ok, "{out}");
}

/// A `remotes.yaml` written before the rename (`include_patterns`,
/// `index_patterns`, `cache.index_ttl`) keeps its meaning: the index file
/// expires and is fetched again, the artifact stays, other paths are
/// denied, and the log says which names to use now.
#[tokio::test]
async fn a_config_from_before_the_rename_keeps_its_mutable_paths() {
    let origin = Origin::start().await;
    origin.put("/r/index.yaml", OriginFile::new("entries: {}\n"));
    origin.put("/r/a.tgz", OriginFile::new(pattern_bytes(5_000, 3)));
    origin.put("/r/a.zip", OriginFile::new("not listed"));
    let dir = tempfile::tempdir().unwrap();
    let remotes = generic_remote(
        &origin,
        "    include_patterns: ['\\.tgz$']\n    index_patterns: ['index\\.yaml$']\n    cache:\n      index_ttl: 3\n",
    );
    let ad = Artifactd::start(dir.path(), &remotes, "").await;
    let http = client();
    for _ in 0..2 {
        assert_eq!(
            get_text(&http, ad.artifact("gen", "r/index.yaml")).await,
            "entries: {}\n"
        );
        let resp = http
            .get(ad.artifact("gen", "r/a.tgz"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.bytes().await.unwrap(), pattern_bytes(5_000, 3));
    }
    assert_eq!(origin.hits("/r/index.yaml"), 1, "fresh for its index_ttl");
    tokio::time::sleep(Duration::from_millis(3300)).await;
    let resp = http
        .get(ad.artifact("gen", "r/index.yaml"))
        .send()
        .await
        .unwrap();
    assert_eq!(source(&resp), "remote", "expired after index_ttl");
    resp.bytes().await.unwrap();
    let resp = http
        .get(ad.artifact("gen", "r/a.tgz"))
        .send()
        .await
        .unwrap();
    assert_eq!(source(&resp), "cache");
    assert_eq!(origin.hits("/r/index.yaml"), 2);
    assert_eq!(origin.hits("/r/a.tgz"), 1);
    let denied = http
        .get(ad.artifact("gen", "r/a.zip"))
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    let log = ad.log_text();
    assert!(
        log.contains("'index_patterns' is deprecated, read as 'mutable_patterns'"),
        "{log}"
    );
    assert!(log.contains("'cache.index_ttl' is deprecated"), "{log}");
}
