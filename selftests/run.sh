#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# The NetKernel test runner (in the manner of xdp-tools' test_runner.sh).
# Runs the C unit tests (build/selftests/*_test) and the namespace
# integration tests (selftests/test_*.sh), or only the ones named on the
# command line, each in its own process under a timeout.  Prints one line
# per test: "PASS name (Ns)", "FAIL name (Ns)" followed by the tail of its
# output, or "SKIP name: reason" (exit status 4; the reason is the last line
# the test wrote to stderr), and ends with "N passed, N failed, N skipped".
# Full logs stay in $OUTPUT/selftests/logs/.  Exit status 1 if any test
# failed or none ran.
#
#   selftests/run.sh [TEST...]      TEST: test_tcp_path, test_tcp_path.sh, proto_test
#   NK_TEST_TIMEOUT=300             seconds per test
#   NK_KEEP=1                       keep each test's temporary directory

set -u

SRCDIR=$(cd "$(dirname "$0")/.." && pwd)
OUTPUT=${OUTPUT:-$SRCDIR/build}
export OUTPUT
TIMEOUT=${NK_TEST_TIMEOUT:-300}
TAIL=80
KSFT_SKIP=4
LOGDIR=$OUTPUT/selftests/logs

if [ "$(id -u)" -ne 0 ]; then
	echo "selftests/run.sh: the tests build network namespaces and start daemons: run as root" >&2
	exit 1
fi

if ! mountpoint -q /sys/fs/bpf 2>/dev/null; then
	mount -t bpf bpf /sys/fs/bpf ||
		echo "selftests/run.sh: warning: cannot mount bpffs on /sys/fs/bpf" >&2
fi

# Collect "name<TAB>command" pairs.
tests=()
add_script()
{
	tests+=("$(basename "$1" .sh)	bash $1")
}
add_binary()
{
	tests+=("$(basename "$1")	$1")
}

if [ $# -eq 0 ]; then
	for t in "$OUTPUT"/selftests/*_test; do
		[ -x "$t" ] && add_binary "$t"
	done
	for t in "$SRCDIR"/selftests/test_*.sh; do
		[ -e "$t" ] && add_script "$t"
	done
else
	for arg in "$@"; do
		name=$(basename "$arg" .sh)
		if [ -e "$SRCDIR/selftests/$name.sh" ]; then
			add_script "$SRCDIR/selftests/$name.sh"
		elif [ -x "$OUTPUT/selftests/$name" ]; then
			add_binary "$OUTPUT/selftests/$name"
		else
			echo "selftests/run.sh: no test named '$arg'" >&2
			echo "0 passed, 1 failed, 0 skipped"
			exit 1
		fi
	done
fi

mkdir -p "$LOGDIR"
passed=0
failed=0
skipped=0
failed_names=()

for entry in "${tests[@]}"; do
	name=${entry%%	*}
	cmd=${entry#*	}
	log=$LOGDIR/$name.log
	err=$LOGDIR/$name.stderr
	start=$(date +%s)
	# stdout and stderr both go to the log, stderr also to its own file
	# (for a skip reason); timeout kills the test's whole process group.
	exec 3>"$log"
	# shellcheck disable=SC2086
	NK_TEST_NAME=$name timeout --kill-after=15 "$TIMEOUT" $cmd 2>&1 1>&3 3>&- |
		tee "$err" >&3
	rc=${PIPESTATUS[0]}
	exec 3>&-
	secs=$(($(date +%s) - start))
	case $rc in
	0)
		echo "PASS $name (${secs}s)"
		passed=$((passed + 1))
		;;
	"$KSFT_SKIP")
		reason=$(grep -v '^[[:space:]]*$' "$err" | tail -n 1)
		echo "SKIP $name: ${reason:-no reason given}"
		skipped=$((skipped + 1))
		;;
	*)
		why="exit status $rc"
		[ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && why="timed out after ${TIMEOUT}s"
		echo "FAIL $name (${secs}s, $why; full log: $log)"
		tail -n "$TAIL" "$log" | sed 's/^/    /'
		failed=$((failed + 1))
		failed_names+=("$name")
		;;
	esac
done

if [ "$failed" -gt 0 ]; then
	echo "failed: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
if [ "$failed" -gt 0 ] || [ $((passed + skipped)) -eq 0 ]; then
	exit 1
fi
exit 0
