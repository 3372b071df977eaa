//! Micro-benchmarks of the per-request policy: routing, path validation,
//! classification as a remote's pattern list grows, and OCI path parsing
//! (`cargo bench -p filters`).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use filters::{Ecosystem, RemotePolicy};

fn routing(c: &mut Criterion) {
    c.bench_function("route/artifact", |b| {
        b.iter(|| filters::route(black_box("/api/v1/remote/github/prometheus/node_exporter/releases/download/v1.8.2/node_exporter-1.8.2.linux-amd64.tar.gz")))
    });
    c.bench_function("route/admin", |b| {
        b.iter(|| filters::route(black_box("/metrics")))
    });
}

fn path_validation(c: &mut Criterion) {
    c.bench_function("path/plain", |b| {
        b.iter(|| filters::validate_artifact_path(black_box("prometheus/node_exporter/releases/download/v1.8.2/node_exporter-1.8.2.linux-amd64.tar.gz"), 2048))
    });
    c.bench_function("path/encoded", |b| {
        b.iter(|| {
            filters::validate_artifact_path(
                black_box("packages/ab/cd/some%20package%2B1.0-py3-none-any.whl"),
                2048,
            )
        })
    });
    c.bench_function("path/traversal", |b| {
        b.iter(|| filters::validate_artifact_path(black_box("a/b/%2e%2e/%2e%2e/etc/passwd"), 2048))
    });
}

/// A remote with `n` immutable patterns like a large allow-list, plus the
/// npm look-ahead mutable pattern that needs the fallback engine.
fn policy_with(n: usize) -> RemotePolicy {
    let immutable: Vec<String> = (0..n)
        .map(|i| format!("^org{i}/project{i}/.*\\.tar\\.gz$"))
        .collect();
    let mutable = vec!["index\\.yaml$".to_string()];
    RemotePolicy::new(Ecosystem::Generic, &immutable, &mutable).expect("patterns compile")
}

fn classification(c: &mut Criterion) {
    let mut group = c.benchmark_group("classify");
    for n in [10usize, 100, 1000] {
        let policy = policy_with(n);
        let allowed = format!("org{}/project{}/releases/v1/x.tar.gz", n - 1, n - 1);
        group.bench_with_input(BenchmarkId::new("allowed_last", n), &allowed, |b, path| {
            b.iter(|| policy.classify(black_box(path)))
        });
        group.bench_with_input(
            BenchmarkId::new("denied", n),
            &"nobody/nothing/x.zip",
            |b, path| b.iter(|| policy.classify(black_box(path))),
        );
    }
    let npm = RemotePolicy::new(Ecosystem::Npm, &["\\.tgz$"], &["^(?!.*\\.tgz$).*"])
        .expect("npm example");
    group.bench_function("npm_look_ahead/document", |b| {
        b.iter(|| npm.classify(black_box("@scope/pkg")))
    });
    group.bench_function("npm_look_ahead/tarball", |b| {
        b.iter(|| npm.classify(black_box("pkg/-/pkg-1.0.0.tgz")))
    });
    group.finish();
}

/// OCI `/v2/` parsing: a deep blob path, a tag manifest on a mirror route,
/// and the `Accept` class of a containerd manifest request.
fn oci(c: &mut Criterion) {
    let is_remote = |s: &str| s == "hub" || s == "ghcr";
    c.bench_function("oci/route_blob", |b| {
        b.iter(|| {
            filters::ecosystem::oci::route(
                black_box("/hub/org/team/app/blobs/sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
                None,
                is_remote,
            )
        })
    });
    c.bench_function("oci/route_mirror_tag", |b| {
        b.iter(|| {
            filters::ecosystem::oci::route(
                black_box("/library/nginx/manifests/1.27-alpine"),
                Some("docker.io"),
                is_remote,
            )
        })
    });
    c.bench_function("oci/accept_class", |b| {
        b.iter(|| {
            filters::ecosystem::oci::AcceptClass::from_accept([black_box(
                "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, */*",
            )])
        })
    });
}

criterion_group!(benches, routing, path_validation, classification, oci);
criterion_main!(benches);
