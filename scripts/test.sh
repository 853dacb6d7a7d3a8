#!/usr/bin/env bash
# The test command: installs what the tests need and a fresh machine may lack, then runs
# every test of the workspace. Arguments go to `cargo test`.
#
# The tests signal nodes with kill(1) (procps) and put nodes in network namespaces and
# on veth addresses with ip(8) (iproute2; root). The console's browser tests drive a
# headless Chromium through chromedriver (Debian's chromium and chromium-driver).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
if [ ! -x /usr/bin/kill ] && [ ! -x /bin/kill ]; then need+=(procps); fi
command -v ip >/dev/null || need+=(iproute2)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "test.sh: installing ${need[*]}" >&2
    apt-get update -qq && apt-get install -y -qq "${need[@]}"
  else
    echo "test.sh: MISSING ${need[*]} (install them as root; the tests that need them fail)" >&2
  fi
fi
command -v cargo >/dev/null || { echo "test.sh: cargo is not installed" >&2; exit 1; }
exec cargo test --workspace "$@"
