//! The Kubernetes manifests (`deploy/kubernetes/`): every overlay renders
//! with `kubectl kustomize` (Debian's kubernetes-client, unpacked by
//! `make test-deps`) and validates strictly with `kubernetes-validate`
//! against [`KUBERNETES`]; the workloads probe `/livez` and `/readyz`, run
//! as non-root on a read-only root, and the Services select their pods.
//! The shipped server file loads, and the DaemonSet's arguments write
//! working `hosts.toml` files.

use serde::Deserialize;
use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Kubernetes version the manifests are validated against.
const KUBERNETES: &str = "1.31.0";
const OVERLAYS: [&str; 3] = ["single-node", "cluster", "containerd-mirror"];

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The overlay rendered, as its YAML documents.
fn render(overlay: &str, dir: &Path) -> Vec<Value> {
    let kubectl = repo("target/tools/kubernetes-client/usr/bin/kubectl");
    assert!(
        kubectl.exists(),
        "no {}: run make test-deps",
        kubectl.display()
    );
    let out = Command::new(&kubectl)
        .arg("kustomize")
        .arg(repo(&format!("deploy/kubernetes/{overlay}")))
        .output()
        .unwrap();
    let rendered = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.join(format!("{overlay}.yaml"));
    std::fs::write(&file, &rendered).unwrap();
    let validated = Command::new(repo("target/tools/venv/bin/kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", KUBERNETES])
        .arg(&file)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&validated.stdout).to_string();
    assert!(
        validated.status.success(),
        "{overlay} against {KUBERNETES}:\n{report}"
    );
    let documents: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&rendered)
        .map(|document| Value::deserialize(document).unwrap())
        .collect();
    // Every document was validated, none skipped.
    assert_eq!(
        report.matches(" passed for resource ").count(),
        documents.len(),
        "{report}"
    );
    documents
}

fn of_kind<'a>(documents: &'a [Value], kind: &str) -> Vec<&'a Value> {
    documents
        .iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn text<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(value, |v, key| v.get(*key))?.as_str()
}

/// Whether `selector` (a label map) picks pods labelled `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_mapping().expect("a selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The artifactd workload of an overlay: its probes and security context.
fn check_artifactd_workload(overlay: &str, workload: &Value) {
    let pod = &workload["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true),
        "{overlay}"
    );
    assert!(
        pod["securityContext"]["runAsUser"]
            .as_u64()
            .is_some_and(|uid| uid > 0),
        "{overlay}"
    );
    let container = &pod["containers"][0];
    assert_eq!(
        text(container, &["livenessProbe", "httpGet", "path"]),
        Some("/livez"),
        "{overlay}"
    );
    assert_eq!(
        text(container, &["readinessProbe", "httpGet", "path"]),
        Some("/readyz"),
        "{overlay}"
    );
    let security = &container["securityContext"];
    assert_eq!(
        security["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "{overlay}"
    );
    assert_eq!(
        security["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "{overlay}"
    );
    assert_eq!(
        security["capabilities"]["drop"][0].as_str(),
        Some("ALL"),
        "{overlay}"
    );
    assert!(
        container["resources"]["requests"]["cpu"].as_str().is_some(),
        "{overlay}"
    );
    assert!(
        container["resources"]["requests"]["memory"]
            .as_str()
            .is_some(),
        "{overlay}"
    );
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    assert!(
        selects(&workload["spec"]["selector"]["matchLabels"], labels),
        "{overlay}"
    );
}

#[test]
fn every_manifest_renders_validates_and_runs_non_root_with_probes() {
    let dir = tempfile::tempdir().unwrap();
    let rendered: Vec<(&str, Vec<Value>)> = OVERLAYS
        .iter()
        .map(|o| (*o, render(o, dir.path())))
        .collect();
    let pods_of = |overlay: &str, kind: &str| {
        let (_, documents) = rendered.iter().find(|(o, _)| *o == overlay).unwrap();
        let workload = of_kind(documents, kind)[0].clone();
        workload["spec"]["template"]["metadata"]["labels"].clone()
    };

    for (overlay, kind) in [("single-node", "StatefulSet"), ("cluster", "Deployment")] {
        let (_, documents) = rendered.iter().find(|(o, _)| *o == overlay).unwrap();
        let workloads = of_kind(documents, kind);
        assert_eq!(workloads.len(), 1, "{overlay}");
        check_artifactd_workload(overlay, workloads[0]);
        let labels = pods_of(overlay, kind);
        for service in of_kind(documents, "Service") {
            assert!(
                selects(&service["spec"]["selector"], &labels),
                "{overlay}: {service:?}"
            );
        }
    }
    let (_, single) = &rendered[0];
    let claim = &of_kind(single, "StatefulSet")[0]["spec"]["volumeClaimTemplates"][0];
    assert!(claim["spec"]["resources"]["requests"]["storage"]
        .as_str()
        .is_some());

    let (_, cluster) = &rendered[1];
    assert_eq!(of_kind(cluster, "PodDisruptionBudget").len(), 1);
    assert!(of_kind(cluster, "Service")
        .iter()
        .any(|s| text(s, &["spec", "clusterIP"]) == Some("None")));
    let replicas = of_kind(cluster, "Deployment")[0]["spec"]["replicas"].as_u64();
    assert!(replicas.is_some_and(|n| n >= 2), "{replicas:?}");

    // The DaemonSet: no capability, read-only root; its NodePort reaches
    // the single node's pods.
    let (_, mirror) = &rendered[2];
    let daemon = of_kind(mirror, "DaemonSet")[0];
    let container = &daemon["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
        Some(true)
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"][0].as_str(),
        Some("ALL")
    );
    let node_port = of_kind(mirror, "Service")[0];
    assert!(selects(
        &node_port["spec"]["selector"],
        &pods_of("single-node", "StatefulSet")
    ));

    // Its arguments, run here: a hosts.toml per registry.
    let hosts = dir.path().join("certs.d");
    let args: Vec<String> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("$(NODE_IP)", "127.0.0.1"))
        .filter(|a| a != "--keep-running")
        .map(|a| match a.strip_prefix("--dir=") {
            Some(_) => format!("--dir={}", hosts.display()),
            None => a,
        })
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_artifactd"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let registries: Vec<&String> = args
        .iter()
        .filter(|a| !a.starts_with("--") && *a != "containerd-hosts")
        .collect();
    assert!(!registries.is_empty());
    for registry in registries {
        let host = registry.split('=').next().unwrap();
        let toml = std::fs::read_to_string(hosts.join(host).join("hosts.toml")).unwrap();
        assert!(toml.contains("[host.\"http://127.0.0.1:30080"), "{toml}");
    }
}

#[test]
fn the_single_node_server_file_and_remotes_load() {
    let dir = tempfile::tempdir().unwrap();
    let documents = render("single-node", dir.path());
    let data = |prefix: &str, key: &str| {
        let map = of_kind(&documents, "ConfigMap")
            .into_iter()
            .find(|c| text(c, &["metadata", "name"]).is_some_and(|n| n.starts_with(prefix)))
            .unwrap();
        text(map, &["data", key]).unwrap().to_string()
    };
    std::fs::write(
        dir.path().join("artifactd.yaml"),
        data("artifactd-server", "artifactd.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("remotes.yaml"),
        data("artifactd-remotes", "remotes.yaml"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_artifactd"))
        .arg("--config")
        .arg(dir.path().join("artifactd.yaml"))
        .arg("check-config")
        .env_remove("ARTIFACTD_CONFIG")
        // The pod's mounts, here: the remotes file and the volume.
        .env("ARTIFACTD_REMOTES", dir.path().join("remotes.yaml"))
        .env(
            "ARTIFACTD_STORAGE",
            format!("fs://{}/objects", dir.path().display()),
        )
        .env("ARTIFACTD_ADMIN_TOKEN", "an-admin-token")
        .env("ARTIFACTD_WRITE_TOKEN", "a-write-token")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    assert!(said.contains("ok (3 remotes"), "{said}");
    assert!(said.contains("listening on http://0.0.0.0:8080"), "{said}");
}
