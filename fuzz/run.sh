#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), or RUNS executions each with `-r RUNS`:
#   fuzz/run.sh 600          # ten minutes per target
#   fuzz/run.sh -r 1000000   # one million executions per target
# Needs the nightly toolchain and cargo-fuzz (rustup toolchain install nightly; cargo install
# cargo-fuzz). Each target starts from fuzz/seeds/<target> and grows fuzz/corpus/<target> (not
# committed); a crash, hang (> 10 s), or allocation of more than 512 MB at once stops it with the
# input saved under fuzz/artifacts/<target>/ and this script exits non-zero. A summary line per
# target (executions, seconds, corpus size) ends the output; fuzz/logs/<target>.log holds the rest.
set -euo pipefail
cd "$(dirname "$0")"
limit=(-max_total_time="${1:-60}")
if [[ "${1:-}" == "-r" ]]; then
    limit=(-runs="${2:?-r needs a number of runs}")
fi
targets=(npy labels csv config checkpoint)
mkdir -p logs
summary=()
status=0
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    start=$(date +%s)
    if cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- "${limit[@]}" \
        -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 -print_final_stats=1 \
        >"logs/$t.log" 2>&1; then
        result=ok
    else
        result="FAILED (see fuzz/logs/$t.log and fuzz/artifacts/$t/)"
        status=1
    fi
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    summary+=("$(printf '%-11s %12s executions in %5s s, corpus %5s files: %s' "$t" "${execs:-?}" \
        "$(($(date +%s) - start))" "$(ls "corpus/$t" | wc -l)" "$result")")
done
printf '%s\n' "${summary[@]}"
exit $status
