#!/usr/bin/env bash
# Builds the fuzz targets and runs each one for a while, starting from the committed seeds.
#
#   bash fuzz/run.sh [SECONDS] [TARGET...]     (default: 30 seconds, every target)
#
# Stable toolchain only, so no sanitizer (`--sanitizer none`): the targets' own assertions and Rust's
# checks (overflow, bounds, debug assertions) are what catch bugs. One process per target at a time
# (`-workers=1 -jobs=1`). The seeds are copied into a temporary corpus, so the repository is left as it
# was; a crash's input is kept in fuzz/artifacts/<target>/ (git-ignored) and the script fails.
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
seconds="${1:-30}"
shift || true

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked || cargo install cargo-fuzz
fi

cd "$fuzz_dir"
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

echo "== checking the committed seeds"
cargo test --quiet

echo "== building ${targets[*]}"
cargo fuzz build --sanitizer none

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
failed=()
summary=()
for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds}s"
    corpus="$work/corpus/$target"
    mkdir -p "$corpus"
    if [ -d "seeds/$target" ]; then
        cp -r "seeds/$target/." "$corpus/"
    fi
    log="$work/$target.log"
    # libFuzzer's job log (fuzz-0.log) lands in the working directory: keep it out of the repo.
    if (cd "$work" && cargo fuzz run --fuzz-dir "$fuzz_dir" --sanitizer none "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -workers=1 -jobs=1 -print_final_stats=1) \
        >"$log" 2>&1; then
        status=ok
    else
        status=FAILED
        failed+=("$target")
        tail -n 60 "$log"
    fi
    runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1 || true)"
    last="$(grep -E '^#[0-9]+' "$log" | tail -n1 || true)"
    cov="$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)"
    ft="$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)"
    line="$target: $status, ${runs:-?} executions in ${seconds}s, cov ${cov:-?}, ft ${ft:-?}"
    echo "$line"
    summary+=("$line")
done

echo "== summary"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "crashes in: ${failed[*]} (inputs in $fuzz_dir/artifacts/)" >&2
    exit 1
fi
