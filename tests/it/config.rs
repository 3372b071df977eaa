//! Configuration loading through the real binary: the seed examples load
//! unchanged, and every broken config fails naming file, remote and field.

use std::path::Path;
use std::process::Command;

fn check_config(dir: &Path, remotes: &str) -> (bool, String, String) {
    std::fs::write(dir.join("remotes.yaml"), remotes).unwrap();
    std::fs::write(
        dir.join("artifactd.yaml"),
        "remotes: remotes.yaml\nstorage: fs://store\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_artifactd"))
        .arg("--config")
        .arg(dir.join("artifactd.yaml"))
        .arg("check-config")
        .env_remove("ARTIFACTD_CONFIG")
        .output()
        .expect("run artifactd");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
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
    let out = Command::new(env!("CARGO_BIN_EXE_artifactd"))
        .arg("--config")
        .arg(dir.path().join("artifactd.yaml"))
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("artifactd.yaml") && stderr.contains("max_upload"),
        "{stderr}"
    );
}
