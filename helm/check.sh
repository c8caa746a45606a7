#!/usr/bin/env bash
# Renders helm/lextral without helm (not packaged here) and checks the result:
# builds helm/render (Go text/template + sprig, as Helm renders) from
# Debian's golang-go, golang-github-masterminds-sprig-dev and
# golang-gopkg-yaml.v3-dev, then renders the chart with the default values
# and with each file in helm/lextral/ci/, checking every object
# (render -check: apiVersion/kind/name, selectors, probe ports, resources,
# security contexts, references). As root it installs the packages if absent.
set -euo pipefail
cd "$(dirname "$0")/.."
GOCODE=/usr/share/gocode
if ! command -v go >/dev/null 2>&1 || [ ! -d "$GOCODE/src/github.com/Masterminds/sprig" ] || [ ! -d "$GOCODE/src/gopkg.in/yaml.v3" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "helm-check: installing golang-go and the sprig/yaml packages"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev >/dev/null
  else
    echo "helm-check: needs golang-go golang-github-masterminds-sprig-dev golang-gopkg-yaml.v3-dev" >&2
    exit 1
  fi
fi
work="${CARGO_TARGET_DIR:-$HOME/.cache/lextral/target}/helm-render"
# Debian ships sprig and semver without their /v3 module paths: link them
# into a GOPATH of our own so the v3 import paths resolve offline.
mkdir -p "$work/gopath/src/github.com/Masterminds/sprig" "$work/gopath/src/github.com/Masterminds/semver"
ln -sfn "$GOCODE/src/github.com/Masterminds/sprig" "$work/gopath/src/github.com/Masterminds/sprig/v3"
ln -sfn "$GOCODE/src/github.com/Masterminds/semver" "$work/gopath/src/github.com/Masterminds/semver/v3"
GO111MODULE=off GOPATH="$work/gopath:$GOCODE" GOCACHE="$work/cache" GOFLAGS= \
  go build -o "$work/render" ./helm/render
status=0
for values in "" helm/lextral/ci/*.yaml; do
  label="${values:-default values}"
  if out=$("$work/render" -check ${values:+-f "$values"} helm/lextral 2>&1); then
    echo "helm-check: $label: $out"
  else
    echo "helm-check: $label FAILED:"; echo "$out"; status=1
  fi
done
exit $status
