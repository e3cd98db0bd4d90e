#!/usr/bin/env bash
# Install the Debian packages the test suite starts as real services, only those missing:
#   PostgreSQL server  (feedback store; the MLflow server can use it too)
#   HAProxy            (the load balancer in front of sidecar replicas)
#   a Java 17+ runtime (Spark, for the spark_udf scoring test)
# Idempotent and quiet: when everything is present it runs no apt-get at all (well under a
# second); otherwise one `apt-get update` and one `apt-get install`.  Prints what it did.
#
# HAProxy rather than nginx: the open-source HAProxy has active health checks (a dead replica
# leaves the rotation within one check interval, not after client requests have failed on it),
# layer-7 retries (`retry-on conn-failure empty-response ...` with `option redispatch`, so a
# request whose replica died before answering is re-sent to another one), a runtime socket to
# read each server's state, and a hitless reload in master-worker mode (SIGUSR2).  Open-source
# nginx only has passive checks (`max_fails`), i.e. it learns from failed requests.
#
# Usage: scripts/services/install.sh [--check]   (--check: report only, exit 1 if missing)
set -euo pipefail

check_only=0
[ "${1:-}" = "--check" ] && check_only=1

missing=()
present=()

# PostgreSQL: any major version's server binaries will do (Debian 12 ships 15).
if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null \
    && compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null; then
  newest=$(ls -d /usr/lib/postgresql/*/ | sort -V | tail -1)
  present+=("postgresql $(basename "$newest")")
else
  missing+=(postgresql)
fi

if command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ]; then
  present+=("haproxy")
else
  missing+=(haproxy)
fi

# `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15` (or "1.8.0_392" for 8).
java_major=0
if command -v java >/dev/null 2>&1; then
  version=$(java -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -1)
  major=${version%%.*}
  [ "$major" = "1" ] && major=$(echo "$version" | cut -d. -f2)
  [[ "$major" =~ ^[0-9]+$ ]] && java_major=$major
fi
if [ "$java_major" -ge 17 ]; then
  present+=("java $java_major")
else
  missing+=(default-jre-headless)
fi

if [ ${#missing[@]} -eq 0 ]; then
  echo "services: present: ${present[*]}"
  exit 0
fi
if [ "$check_only" = 1 ]; then
  echo "services: missing: ${missing[*]} (present: ${present[*]:-none})"
  exit 1
fi

sudo=()
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
  else
    echo "services: need root (or sudo) to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "services: installing ${missing[*]} (present: ${present[*]:-none})"
start=$(date +%s)

# The tests start their own throw-away servers; the packages must not create or start system
# ones.  postgresql-common reads create_main_cluster before the server package's postinst
# creates the `main` cluster, and a policy-rc.d that exits 101 tells invoke-rc.d (used by
# every maintainer script) not to start services.  Both are only put in place for this install.
"${sudo[@]}" mkdir -p /etc/postgresql-common
if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
  echo "create_main_cluster = false" | "${sudo[@]}" tee /etc/postgresql-common/createcluster.conf \
    >/dev/null
fi
policy_added=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null
  "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d
  policy_added=1
fi
log=$(mktemp /tmp/services-install.XXXXXX.log)
cleanup() {
  if [ "$policy_added" = 1 ]; then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# confold: keep the createcluster.conf written above when the package brings its own.
apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 apt-get -qq
  -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
# apt and the maintainer scripts are chatty even with -qq (debconf, invoke-rc.d): their output
# goes to a log that is shown only when something fails.
if ! { "${apt[@]}" update && "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; } \
    >"$log" 2>&1; then
  echo "services: apt-get failed (full log: $log):" >&2
  tail -n 20 "$log" >&2
  exit 1
fi
rm -f "$log"

echo "services: installed ${missing[*]} in $(($(date +%s) - start)) s"
