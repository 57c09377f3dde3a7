#!/usr/bin/env bash
# examples/llama/cuda/launch.sh starts one rank per GPU the job may use:
# those nvidia-smi lists, narrowed by CUDA_VISIBLE_DEVICES by CUDA's
# documented rule (entries are indices or GPU-/MIG- UUIDs or their unique
# prefixes, in order, up to the first that names no GPU; an empty value
# hides all). A stand-in nvidia-smi lists four GPUs and a stand-in trainer
# records the rank variables it was started with.
# Usage: test_llama_launch.sh <launch.sh>
set -uo pipefail

launch=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bin"

cat >"$tmp/bin/nvidia-smi" <<'SMI'
#!/usr/bin/env bash
[ "${1:-}" = -L ] || exit 1
echo "GPU 0: NVIDIA Test (UUID: GPU-aaaa0000-0000-0000-0000-000000000000)"
echo "GPU 1: NVIDIA Test (UUID: GPU-bbbb1111-1111-1111-1111-111111111111)"
echo "GPU 2: NVIDIA Test (UUID: GPU-bbbb2222-2222-2222-2222-222222222222)"
echo "GPU 3: NVIDIA Test (UUID: GPU-dddd3333-3333-3333-3333-333333333333)"
SMI
cat >"$tmp/trainer" <<'TRAINER'
#!/usr/bin/env bash
echo "$LLAMA_RANK $LLAMA_WORLD_SIZE $LOCAL_RANK $*" >"$OUT/rank$LLAMA_RANK"
TRAINER
chmod +x "$tmp/bin/nvidia-smi" "$tmp/trainer"

fail=0
# run NAME EXPECTED_RANKS [VAR=VALUE | -u VAR]... -- [launch.sh args]
run() {
    local name=$1 want=$2
    shift 2
    local env_args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        env_args+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    rm -rf "$tmp/out"
    mkdir -p "$tmp/out"
    env -u LLAMA_NPROC "${env_args[@]}" PATH="$tmp/bin:$PATH" LLAMA_BIN="$tmp/trainer" \
        OUT="$tmp/out" LLAMA_LOG_DIR="$tmp/out/logs" \
        bash "$launch" "$@" >"$tmp/log" 2>&1
    local rc=$?
    local got
    got=$(find "$tmp/out" -maxdepth 1 -name 'rank*' | wc -l)
    if [ "$want" -eq 0 ]; then
        if [ "$rc" -ne 2 ] || [ "$got" -ne 0 ]; then
            echo "FAIL: $name: expected a refusal (status 2, no rank), got" \
                 "status $rc and $got rank(s)"
            sed 's/^/    /' "$tmp/log"
            fail=1
            return
        fi
        echo "ok: $name: refused ($(tail -n 1 "$tmp/log"))"
        return
    fi
    if [ "$rc" -ne 0 ] || [ "$got" -ne "$want" ]; then
        echo "FAIL: $name: expected $want rank(s), got $got (status $rc)"
        sed 's/^/    /' "$tmp/log"
        fail=1
        return
    fi
    # Every rank r of N: LLAMA_RANK r, world N, LOCAL_RANK r.
    for ((r = 0; r < want; r++)); do
        read -r rank world local_rank _ <"$tmp/out/rank$r"
        if [ "$rank $world $local_rank" != "$r $want $r" ]; then
            echo "FAIL: $name: rank $r started with rank $rank, world" \
                 "$world, local rank $local_rank"
            fail=1
            return
        fi
    done
    echo "ok: $name: $want rank(s)"
}

run "no CUDA_VISIBLE_DEVICES" 4 -u CUDA_VISIBLE_DEVICES --
run "two of four" 2 CUDA_VISIBLE_DEVICES=1,3 --
run "reordered" 3 CUDA_VISIBLE_DEVICES=3,0,2 --
run "an index past the last GPU ends the list" 1 CUDA_VISIBLE_DEVICES=2,7,1 --
run "a repeated index ends the list" 2 CUDA_VISIBLE_DEVICES=0,1,0,2 --
run "a UUID" 1 CUDA_VISIBLE_DEVICES=GPU-dddd3333-3333-3333-3333-333333333333 --
run "a unique UUID prefix and an index" 2 CUDA_VISIBLE_DEVICES=GPU-aaaa,3 --
run "an ambiguous UUID prefix ends the list" 1 CUDA_VISIBLE_DEVICES=0,GPU-bbbb,1 --
run "empty hides every GPU" 0 CUDA_VISIBLE_DEVICES= --
run "-1 hides every GPU" 0 CUDA_VISIBLE_DEVICES=-1 --
run "-n overrides the count" 3 CUDA_VISIBLE_DEVICES=1 -- -n 3
run "LLAMA_NPROC overrides the count" 2 CUDA_VISIBLE_DEVICES= LLAMA_NPROC=2 --
exit "$fail"
