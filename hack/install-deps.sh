#!/usr/bin/env bash
# Installs the Debian packages the local cluster needs (Prometheus), once.
set -euo pipefail
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The package's service is not started: the local cluster runs its own Prometheus.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
