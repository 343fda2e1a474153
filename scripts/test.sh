#!/usr/bin/env bash
# The test command: installs what the tests need (Debian packages, the pinned Spark
# runtime), then runs every test. Safe to run again: each step skips what is done.
# Run as root: the tests create Linux users, cgroups and sandboxes.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "scripts/test.sh must run as root: the tests create users, cgroups and sandboxes" >&2
    exit 2
fi

need_pkgs=()
command -v bwrap >/dev/null || need_pkgs+=(bubblewrap)
command -v pgrep >/dev/null || need_pkgs+=(procps)
# iproute2 and nftables make every task's own network (and guard shared-network ports).
command -v nft >/dev/null || need_pkgs+=(nftables)
command -v ip >/dev/null || need_pkgs+=(iproute2)
# nsenter (util-linux): tests look into a task's network as root.
command -v nsenter >/dev/null || need_pkgs+=(util-linux)
# javac builds the JVM test application.
command -v javac >/dev/null || need_pkgs+=(openjdk-17-jdk-headless)
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import venv, ensurepip' 2>/dev/null || need_pkgs+=(python3-venv)
# A real headless browser for the web console's tests.
command -v chromium >/dev/null || need_pkgs+=(chromium)
command -v chromedriver >/dev/null || need_pkgs+=(chromium-driver)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "==> installing ${need_pkgs[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}"
fi
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

# One Spark runtime shared by every test server (about 900 MB; kept between runs).
export HEARTH_TEST_RUNTIME="${HEARTH_TEST_RUNTIME:-/var/cache/hearth/test-runtime}"
cargo build --quiet -p hearth
./target/debug/hearth runtime install --runtime "$HEARTH_TEST_RUNTIME"

# Port-guard tables left by test servers that were killed (each Hearth instance has one):
# stale guarded port numbers would refuse other tests' loopback connections. Only when no
# Hearth runs on this machine, so a real one's table is never touched.
if ! pgrep -f 'hearth up' >/dev/null; then
    for t in $(nft list tables 2>/dev/null | awk '$2 == "inet" && $3 ~ /^hearth_/ {print $3}'); do
        nft delete table inet "$t" || true
    done
fi

status=0
cargo nextest run --workspace --no-fail-fast "$@" || status=$?

# A run leaves no task cgroup behind, frozen or not (every stop thaws, kills and removes;
# a start sweeps what a killed Hearth left). Checked after a whole run, when no Hearth of
# anyone else's runs here.
if [ $# -eq 0 ] && ! pgrep -f 'hearth (up|server|agent)' >/dev/null; then
    left=$(find /sys/fs/cgroup -mindepth 2 -maxdepth 3 -type d -path '*/hearth/*' 2>/dev/null || true)
    if [ -n "$left" ]; then
        echo "FAILED: the tests left task cgroups behind:" >&2
        for d in $left; do
            state=$(cat "$d/freezer.state" 2>/dev/null || cat "$d/cgroup.freeze" 2>/dev/null || true)
            echo "  $d ${state:+($state)} processes: $(tr '\n' ' ' < "$d/cgroup.procs" 2>/dev/null)" >&2
        done
        status=1
    fi
    # Nor a task's network: its slot, namespace, veth or table (the shim removes them when
    # the task ends; a start sweeps what a killed shim left).
    nets=$(ls /run/hearth/net 2>/dev/null; ls /run/netns 2>/dev/null | grep '^hearth-' || true; ls /sys/class/net | grep '^hh[0-9]' || true)
    if [ -n "$nets" ]; then
        echo "FAILED: the tests left task networks behind:" $nets >&2
        status=1
    fi
    # Nor a Linux account made for a test's users (their homes are under the tests' /tmp
    # directories; a test kills its users' processes, then removes them).
    accounts=$(awk -F: '$6 ~ "^/tmp/(hearth-|closed-)" {print $1}' /etc/passwd)
    if [ -n "$accounts" ]; then
        echo "FAILED: the tests left Linux accounts behind:" $accounts >&2
        status=1
    fi
    # Nor a port guard's nftables table (servers remove theirs when they stop; tests remove
    # their agents').
    tables=$(nft list tables 2>/dev/null | awk '$2 == "inet" && $3 ~ /^hearth_/ {print $3}' || true)
    if [ -n "$tables" ]; then
        echo "FAILED: the tests left nftables tables behind: $tables" >&2
        status=1
    fi
fi
exit "$status"
