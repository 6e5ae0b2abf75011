#!/usr/bin/env bash
# The whole local stack: Pub/Sub emulator + throwaway PostgreSQL.
#
#   eval "$(infra/stack.sh up)"   start both (once) and export their addresses
#   infra/stack.sh down           stop both; succeeds when they are not running
#   eval "$(infra/stack.sh env)"  export the addresses of the running stack;
#                                 exits 3 if part of it is not running
#
# Same environment as infra/emulator.sh and infra/postgres.sh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"

case "${1:-}" in
up)
	"$here/emulator.sh" start
	"$here/postgres.sh" start
	;;
down)
	# Stop both even if the first one fails, and report the failure.
	rc=0
	"$here/postgres.sh" stop || rc=$?
	"$here/emulator.sh" stop || rc=$?
	exit "$rc"
	;;
env)
	rc=0
	"$here/emulator.sh" status || rc=$?
	"$here/postgres.sh" status || rc=$?
	exit "$rc"
	;;
*)
	echo "usage: $0 {up|down|env}" >&2
	exit 2
	;;
esac
