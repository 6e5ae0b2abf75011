#!/usr/bin/env bash
# Offline checks for terraform/ (no providers, no GCP):
#   1. `tofu fmt -check -recursive terraform/` when .tools/tofu exists, or after building it (--install);
#   2. the Go check module terraform/check: the HCL agrees with queues.yaml and IAM stays least-privilege.
#
# Usage: terraform/check.sh [--install] [--fmt-only|--go-only]
#   --install   build OpenTofu into .tools/tofu from the Go module proxy if missing (~4 min, cached)
# Env: TOFU_VERSION (default v1.10.10), GO_TEST_FLAGS (default "-race -count=1").
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tofu="$root/.tools/tofu"
tofu_version="${TOFU_VERSION:-v1.10.10}"
install=0 fmt=1 gocheck=1
for arg in "$@"; do
	case "$arg" in
	--install) install=1 ;;
	--fmt-only) gocheck=0 ;;
	--go-only) fmt=0 ;;
	-h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}"; exit 0 ;;
	*) echo "check.sh: unknown argument $arg" >&2; exit 2 ;;
	esac
done

# A TF_CLI_CONFIG_FILE pointing to a missing file makes tofu print warnings; it is not needed offline.
if [[ -n "${TF_CLI_CONFIG_FILE:-}" && ! -f "$TF_CLI_CONFIG_FILE" ]]; then
	unset TF_CLI_CONFIG_FILE
fi

install_tofu() {
	local work dir start
	start=$SECONDS
	work="$(mktemp -d)"
	trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' RETURN
	echo "check.sh: building OpenTofu $tofu_version into $tofu (takes minutes; cached afterwards)" >&2
	# go install refuses modules with replace directives, so build from a writable copy of the module.
	dir="$(cd "$work" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "github.com/opentofu/opentofu@$tofu_version" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
	if [[ -z "$dir" || ! -d "$dir" ]]; then
		echo "check.sh: go mod download of opentofu@$tofu_version failed" >&2
		return 1
	fi
	cp -r "$dir" "$work/src"
	chmod -R u+w "$work/src"
	mkdir -p "$(dirname "$tofu")"
	(cd "$work/src" && GOWORK=off GOFLAGS=-buildvcs=false go build -trimpath \
		-ldflags "-X github.com/opentofu/opentofu/version.dev=no" -o "$tofu.tmp" ./cmd/tofu)
	mv "$tofu.tmp" "$tofu"
	echo "check.sh: built $("$tofu" version | head -1) in $((SECONDS - start))s" >&2
}

status=0

if ((fmt)); then
	if [[ ! -x "$tofu" && $install -eq 1 ]]; then
		install_tofu
	fi
	if [[ -x "$tofu" ]]; then
		echo "check.sh: tofu fmt -check -recursive terraform/" >&2
		if ! (cd "$root" && "$tofu" fmt -check -diff -recursive terraform/); then
			echo "check.sh: terraform/ is not formatted; run: .tools/tofu fmt -recursive terraform/" >&2
			status=1
		fi
	else
		echo "check.sh: skipping tofu fmt (.tools/tofu missing; run terraform/check.sh --install)" >&2
	fi
fi

if ((gocheck)); then
	echo "check.sh: go test ./terraform/check" >&2
	# shellcheck disable=SC2086 # GO_TEST_FLAGS is a list of flags
	if ! (cd "$root/terraform/check" && go test ${GO_TEST_FLAGS:--race -count=1} ./...); then
		status=1
	fi
fi

exit "$status"
