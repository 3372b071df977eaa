# artifactd: `make run` to build and serve with conf/, `make test` to run
# every test. Both install what they need first (scripts/install-deps.sh).

CARGO ?= cargo
CONFIG ?= conf/artifactd.yaml
PREFIX ?= /usr/local

.PHONY: all deps bench-deps test-deps build release image run check-config test lint deny unit it it-cluster fuzz bench bench-instructions bench-audit bench-cluster bench-large bench-smoke chaos chaos-smoke soak install clean

all: build

deps:
	@scripts/install-deps.sh

bench-deps:
	@scripts/install-deps.sh bench

test-deps:
	@scripts/install-deps.sh test

build: deps
	$(CARGO) build

release: deps
	$(CARGO) build --release

## The container image artifactd:latest (podman; from the release binary
## and this machine's glibc and CA bundle, FROM scratch: nothing pulled).
image: deps release
	scripts/image.sh

## Build (release) and serve on conf/ with the embedded default:
## filesystem storage, embedded state and SQLite under var/.
run: release
	./target/release/artifactd --config $(CONFIG) check-config
	RUST_LOG=$${RUST_LOG:-info} ./target/release/artifactd --config $(CONFIG) serve

check-config: build
	./target/debug/artifactd --config $(CONFIG) check-config

## Everything CI runs: formatting, lints, unit and integration tests, and
## one QUICK pass of the benchmark harness (checks the harness, not ratios)
## and of the chaos harness (fails on a wrong byte or a limit not held).
## The image is built first, so its test runs what `make image` makes.
test: test-deps lint deny bench-smoke chaos-smoke image
	$(CARGO) test --workspace
	$(MAKE) --no-print-directory it-cluster

## The foundation, large-object, resilience, OCI and firewall suites again, against the cluster
## shape: S3 (SeaweedFS), Redis and PostgreSQL started by the tests. (A
## bucket's eviction is the cluster's own: tests/it/cluster.rs.)
CLUSTER_SUITES ?= cache:: fill:: large:: local:: security:: resilience:: oci:: firewall::
it-cluster: test-deps
	ARTIFACTD_TEST_SHAPE=cluster $(CARGO) test --test it -- $(CLUSTER_SUITES)

## artifactd vs nginx proxy_cache on loopback; writes benches/results/.
## QUICK=1 shrinks every scenario (under 3 minutes).
bench: bench-deps release
	python3 benches/run.py $(if $(QUICK),--quick)
	$(if $(QUICK),,$(CARGO) bench -p filters -- --warm-up-time 1 --measurement-time 3)

## Only scenario 11, the audit trail on vs off; writes benches/results/audit.*.
bench-audit: bench-deps release
	python3 benches/run.py --audit-only $(if $(QUICK),--quick)

## Instructions per fast-path hit under callgrind, at 1e3 and 1e6 objects:
## a figure timing noise does not move; writes benches/results/instructions.*.
bench-instructions: bench-deps release
	python3 benches/instructions.py

## Only scenario 12, large objects; writes benches/results/large.*.
bench-large: bench-deps release
	python3 benches/run.py --large-only $(if $(QUICK),--quick)

## Only scenario 8, the cluster shape; writes benches/results/cluster.*.
bench-cluster: bench-deps release
	python3 benches/run.py --cluster-only $(if $(QUICK),--quick)

## Faults under a mixed load, every body checked: kill -9, a full disk,
## broken upstreams, abusive clients, hostile configuration (needs root);
## writes benches/results/chaos.*. QUICK=1: the short pass `make test` runs.
chaos: bench-deps release
	python3 benches/chaos.py $(if $(QUICK),--quick)

chaos-smoke: bench-deps build
	python3 benches/chaos.py --quick --binary target/debug/artifactd

## 30 minutes of mixed load (MINUTES=N to change), sampling RSS,
## descriptors and threads; writes benches/results/soak.*.
soak: bench-deps release
	python3 benches/soak.py $(if $(MINUTES),--minutes $(MINUTES))

bench-smoke: bench-deps build
	python3 benches/run.py --quick --binary target/debug/artifactd --out target/bench-smoke

## Dependencies: banned crates, licenses and sources (deny.toml). The
## advisories need a database these machines cannot fetch: checked only
## when one is present (cargo deny fetch, elsewhere).
deny: test-deps
	$(CARGO) deny check bans licenses sources
	@if [ -d "$${CARGO_HOME:-$$HOME/.cargo}/advisory-dbs" ]; then \
		$(CARGO) deny check --disable-fetch advisories; \
	else echo "cargo deny: no advisory database here; advisories not checked"; fi

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/import-cycles.py src filters/src

unit: deps
	$(CARGO) test --workspace --lib --bins

it: test-deps
	$(CARGO) test --test it

## The property tests of filters/ with many more cases than `make test`
## runs (FUZZ_CASES, default 200000 per property).
FUZZ_CASES ?= 200000
fuzz: deps
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release -p filters --test properties

## Installs the binary, an example config (kept if present; readable by
## root and the service's group only, as remotes.yaml may hold upstream
## passwords), the systemd unit, random admin and write tokens (root-only
## files the unit passes as credentials; kept if present) and creates the
## service user.
install: release
	id -u artifactd >/dev/null 2>&1 || useradd --system --home-dir /var/lib/artifactd --shell /usr/sbin/nologin artifactd
	install -Dm755 target/release/artifactd $(DESTDIR)$(PREFIX)/bin/artifactd
	install -d $(DESTDIR)/etc/artifactd
	[ -e $(DESTDIR)/etc/artifactd/artifactd.yaml ] || install -m640 -g artifactd systemd/artifactd.yaml $(DESTDIR)/etc/artifactd/artifactd.yaml
	[ -e $(DESTDIR)/etc/artifactd/remotes.yaml ] || install -m640 -g artifactd conf/remotes.yaml $(DESTDIR)/etc/artifactd/remotes.yaml
	install -Dm644 systemd/artifactd.service $(DESTDIR)/etc/systemd/system/artifactd.service
	install -Dm644 README.md $(DESTDIR)$(PREFIX)/share/doc/artifactd/README.md
	install -Dm644 -t $(DESTDIR)$(PREFIX)/share/doc/artifactd/docs docs/*.md
	for token in admin write; do \
	  f=$(DESTDIR)/etc/artifactd/$$token.token; \
	  [ -e $$f ] || (umask 077; head -c 32 /dev/urandom | base64 | tr -d '=+/\n' > $$f; echo >> $$f); \
	done

clean:
	$(CARGO) clean
