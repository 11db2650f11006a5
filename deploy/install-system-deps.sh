#!/usr/bin/env bash
# Installs what the local runtime needs from Debian's packages, only if it is missing:
# Java 17+ (Kafka, Cassandra), Maven (fetches their official artifacts from Maven Central),
# Prometheus with promtool. Everything else comes from PyPI into the project's virtualenv.
set -euo pipefail

missing=()
java_major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1 || true)
if [ -z "${java_major}" ] || [ "${java_major}" -lt 17 ]; then missing+=(openjdk-17-jre-headless); fi
command -v mvn >/dev/null 2>&1 || missing+=(maven)
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  missing+=(prometheus)
fi
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing from Debian's packages: ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
  echo "error: need root (or sudo) to install ${missing[*]}" >&2; exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# The package's own service is not used: `streams dev up` runs Prometheus with the project's config.
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
