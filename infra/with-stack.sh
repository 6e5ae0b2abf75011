#!/usr/bin/env bash
# Runs a command with the local stack (Pub/Sub emulator + throwaway PostgreSQL) up, then stops it,
# whatever the command's outcome. A stack given by the caller (PUBSUB_EMULATOR_HOST and
# PUBQ_TEST_DATABASE_URL both set) is used as is and left running.
#
#   infra/with-stack.sh go test ./pkg/...
#
# The command sees PUBSUB_EMULATOR_HOST, PUBQ_DATABASE_URL and PUBQ_TEST_DATABASE_URL.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

if [[ -n "${PUBSUB_EMULATOR_HOST:-}" && -n "${PUBQ_TEST_DATABASE_URL:-}" ]]; then
	export PUBQ_DATABASE_URL="${PUBQ_DATABASE_URL:-$PUBQ_TEST_DATABASE_URL}"
	exec "$@"
fi
export PUBQ_RUN_DIR="${PUBQ_RUN_DIR:-$(cd "$here/.." && pwd -P)/.run/stack-$$}"
cleanup() {
	local rc=$?
	"$here/stack.sh" down >/dev/null 2>&1 || true
	# Keep the servers' logs when the command failed; they are the first thing to read.
	if [[ $rc -eq 0 ]]; then rm -rf "$PUBQ_RUN_DIR"; else echo "with-stack: logs kept in $PUBQ_RUN_DIR" >&2; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
eval "$("$here/stack.sh" up)"
export PUBQ_TEST_DATABASE_URL="$PUBQ_DATABASE_URL"
"$@"
