#!/usr/bin/env bash
# Starts N ranks of the LLaMa trainer on this machine, one process per GPU,
# for data-parallel training over NCCL (docs/distributed.md):
#
#   examples/llama/cuda/launch.sh [-n N] [--] [llama arguments...]
#
# Each rank runs `build/examples/llama/llama --device cuda ARGS` with
#   LLAMA_RANK=r LLAMA_WORLD_SIZE=N LOCAL_RANK=r (rank r uses GPU r)
#   LLAMA_NCCL_ID_FILE=<fresh folder>/nccl.id (rank 0 writes the NCCL id
#   there, the others read it)
# Rank 0 prints to this terminal; the others write to rank<r>.log in the
# log folder. The script waits for every rank and exits non-zero when any
# fails; then it stops the others, which would otherwise wait in NCCL for
# the rank that is gone, and prints the end of each failed rank's log.
#
# Environment (all optional):
#   LLAMA_BIN      the trainer (default: build/examples/llama/llama)
#   LLAMA_NPROC    N when -n is not given (default: the GPUs this job may
#                  use: those nvidia-smi lists, narrowed by
#                  CUDA_VISIBLE_DEVICES as CUDA narrows them)
#   LLAMA_LOG_DIR  where rank<r>.log go (default: the fresh folder, kept
#                  when a rank fails)
# Across nodes, start one rank per GPU on every node yourself with the same
# variables (LLAMA_RANK global, LOCAL_RANK per node) and an id path on a
# filesystem every node shares; see docs/distributed.md.
set -uo pipefail

# The GPUs a CUDA program started here sees. Without CUDA_VISIBLE_DEVICES,
# every GPU nvidia-smi lists. With it, CUDA's rule: its comma-separated
# entries (indices, or GPU-/MIG- UUIDs or unique prefixes of them), in
# order, up to the first that names no GPU (out of range, unknown, or
# already named); an empty value hides every GPU. Rank r then uses the r-th
# visible GPU (LOCAL_RANK=r), which is what CUDA calls device r.
count_gpus() {
    local listing physical
    listing=$(nvidia-smi -L 2>/dev/null) || listing=
    physical=$(grep -c '^GPU ' <<<"$listing")
    if [ -z "${CUDA_VISIBLE_DEVICES+set}" ]; then
        echo "$physical"
        return
    fi
    local entries entry n=0 seen=" "
    IFS=',' read -ra entries <<<"$CUDA_VISIBLE_DEVICES"
    for entry in "${entries[@]}"; do
        entry=${entry//[[:space:]]/}
        if [[ $entry =~ ^[0-9]+$ ]]; then
            entry=$((10#$entry))
            [ "$entry" -lt "$physical" ] || break
        elif [[ $entry == GPU-* || $entry == MIG-* ]]; then
            [ "$(grep -c "UUID: $entry" <<<"$listing")" -eq 1 ] || break
            entry=$(grep -o "UUID: $entry[^)]*" <<<"$listing")
        else
            break
        fi
        case "$seen" in *" $entry "*) break ;; esac
        seen+="$entry "
        n=$((n + 1))
    done
    echo "$n"
}

root=$(cd "$(dirname "$0")/../../.." && pwd)
bin=${LLAMA_BIN:-$root/build/examples/llama/llama}

n=${LLAMA_NPROC:-}
if [ $# -gt 0 ] && [ "$1" = -n ]; then
    [ $# -ge 2 ] || { echo "launch.sh: -n needs a number" >&2; exit 2; }
    n=$2
    shift 2
fi
[ $# -gt 0 ] && [ "$1" = -- ] && shift
if [ -z "$n" ]; then
    n=$(count_gpus)
fi
if ! [[ "$n" =~ ^[0-9]+$ ]] || [ "$n" -lt 1 ]; then
    echo "launch.sh: number of ranks '$n' is not a positive integer (no GPU" \
         "found, or none visible through CUDA_VISIBLE_DEVICES" \
         "'${CUDA_VISIBLE_DEVICES-}'? pass -n N)" >&2
    exit 2
fi
if [ ! -x "$bin" ]; then
    echo "launch.sh: $bin is not built (ninja -C build examples/llama/llama)" >&2
    exit 2
fi

# A fresh folder per job: the id file must never be one an earlier run
# left behind.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/llama-dist.XXXXXX") || exit 2
logs=${LLAMA_LOG_DIR:-$tmp}
mkdir -p "$logs"
export LLAMA_NCCL_ID_FILE=$tmp/nccl.id
export LLAMA_WORLD_SIZE=$n

pids=()
stop_all() {
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null
    done
}
trap 'stop_all; exit 130' INT TERM

for ((r = 0; r < n; r++)); do
    if [ "$r" -eq 0 ]; then
        LLAMA_RANK=$r LOCAL_RANK=$r "$bin" --device cuda "$@" &
    else
        LLAMA_RANK=$r LOCAL_RANK=$r "$bin" --device cuda "$@" \
            > "$logs/rank$r.log" 2>&1 &
    fi
    pids+=("$!")
done

# Wait for every rank; on the first failure stop the others.
status=()
running=$n
failed=0
while [ "$running" -gt 0 ]; do
    for ((r = 0; r < n; r++)); do
        [ -n "${status[$r]:-}" ] && continue
        if ! kill -0 "${pids[$r]}" 2>/dev/null; then
            wait "${pids[$r]}"
            status[$r]=$?
            running=$((running - 1))
            if [ "${status[$r]}" -ne 0 ] && [ "$failed" -eq 0 ]; then
                failed=1
                echo "launch.sh: rank $r exited with status ${status[$r]};" \
                     "stopping the others" >&2
                stop_all
            fi
        fi
    done
    [ "$running" -gt 0 ] && sleep 0.2
done

rc=0
for ((r = 0; r < n; r++)); do
    if [ "${status[$r]}" -ne 0 ]; then
        rc=1
        if [ "$r" -gt 0 ]; then
            echo "---- rank $r (status ${status[$r]}), end of $logs/rank$r.log" >&2
            tail -n 20 "$logs/rank$r.log" >&2
        fi
    fi
done
# The fresh folder goes unless it holds the logs of a failed run.
if [ "$rc" -eq 0 ] || [ "$logs" != "$tmp" ]; then
    rm -rf "$tmp"
fi
[ "$rc" -ne 0 ] && echo "launch.sh: logs in $logs" >&2

exit $rc
