#!/bin/bash
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Runs each libFuzzer harness ($OUTPUT/fuzz/fuzz_*, built by `make`:
# nk-vhost-vsock's descriptor chains, vsock packets and connection state,
# vhost-user messages; nkd's configuration parser; nkctl's command line)
# for a bounded time and checks that it found no crash, leak or undefined
# behaviour and reached a minimum number of executions.  Prints each
# harness's execution count.  Each starts from the seed inputs of
# ctl/vhost/fuzz_seeds.py (well-formed conversations, configurations,
# command lines) plus its corpus.  The corpus grows across runs in
# $OUTPUT/fuzz/corpus/; a crashing input is kept in $OUTPUT/fuzz/artifacts/.
#
#   NK_FUZZ_SECS=10          seconds per harness (`make fuzz`: FUZZ_SECS, 60)
#   NK_FUZZ_MIN_EXECS=2000   fewer executions than this fails the harness

# shellcheck source=selftests/lib.sh
. "$(dirname "$0")/lib.sh"

SECS=${NK_FUZZ_SECS:-10}
MIN=${NK_FUZZ_MIN_EXECS:-2000}

shopt -s nullglob
harnesses=("$OUTPUT"/fuzz/fuzz_*)
[ ${#harnesses[@]} -gt 0 ] || nk_die "no harness in $OUTPUT/fuzz (run make)"

run_harness()
{
	local bin=$1 name corpus log rc execs
	name=$(basename "$bin")
	corpus=$OUTPUT/fuzz/corpus/$name
	log=$NK_TMP/$name.log
	mkdir -p "$corpus" "$OUTPUT/fuzz/artifacts"
	# well-formed conversations to start from (ctl/vhost/fuzz_seeds.py)
	"$NK_PY" "$NK_SRCDIR/ctl/vhost/fuzz_seeds.py" "$name" "$corpus" ||
		nk_fail "$name: cannot write the seed inputs"
	log_step "$name for ${SECS}s"
	"$bin" -max_total_time="$SECS" -print_final_stats=1 -timeout=10 \
		-rss_limit_mb=2048 -artifact_prefix="$OUTPUT/fuzz/artifacts/$name-" \
		"$corpus" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	log_info "$name: ${execs:-?} executions, $(find "$corpus" -type f | wc -l) corpus inputs," \
		"$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)"
	if [ "$rc" -ne 0 ]; then
		grep -E 'ERROR|SUMMARY|Test unit written|#[0-9]+ in ' "$log" | head -n 20
		nk_fail "$name exited $rc (a crash, leak or timeout; see above)"
		return
	fi
	check_gt "$name executions" "${execs:-0}" "$MIN"
}

for h in "${harnesses[@]}"; do
	run_harness "$h"
done
nk_finish
