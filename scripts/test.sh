#!/usr/bin/env bash
# The test command: installs what the tests need and a fresh machine may lack, then runs
# every test of the workspace. Arguments go to `cargo test`.
#
# The tests signal nodes with kill(1) (procps) and put nodes in network namespaces and
# on veth addresses with ip(8) (iproute2; root). The console's browser tests drive a
# headless Chromium through chromedriver (Debian's chromium and chromium-driver). The
# alertmanager sink's test starts a real Prometheus Alertmanager (its Debian package; the
# package's own service is kept from starting at install). The package test needs
# systemd-analyze, dpkg-deb and cargo-deb.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
if [ ! -x /usr/bin/kill ] && [ ! -x /bin/kill ]; then need+=(procps); fi
command -v ip >/dev/null || need+=(iproute2)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
[ -x /usr/bin/prometheus-alertmanager ] || need+=(prometheus-alertmanager)
# The package test checks the systemd unit (systemd-analyze) and unpacks the .deb.
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v dpkg-deb >/dev/null || need+=(dpkg)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${need[*]}" >&2
    # Packages that bring a service (alertmanager) must not start it here.
    blocker=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      blocker=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' > "$blocker"
      chmod +x "$blocker"
      trap 'rm -f "$blocker"' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    if [ -n "$blocker" ]; then rm -f "$blocker"; trap - EXIT; fi
  else
    echo "test.sh: MISSING ${need[*]} (install them as root; the tests that need them fail)" >&2
  fi
fi
command -v cargo >/dev/null || { echo "test.sh: cargo is not installed" >&2; exit 1; }
# The package test builds the Debian package with cargo-deb.
if ! command -v cargo-deb >/dev/null; then
  echo "test.sh: installing cargo-deb" >&2
  cargo install cargo-deb --locked --quiet
fi
exec cargo test --workspace "$@"
