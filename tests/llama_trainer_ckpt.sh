#!/usr/bin/env bash
# The trainer's checkpoints end to end: a run stopped and resumed ends
# byte for byte where an uninterrupted one does (weights, optimizer state,
# trainer state, config); --save-dtype is what the file and config.json
# say; a --save target holding a file that is not a checkpoint's, a FIFO
# in place of the trainer state, and a --seq past the model's context
# are refused before any training step, leaving everything as it was.
# Usage: llama_trainer_ckpt.sh LLAMA_EXE
set -euo pipefail
llama=$(realpath "$1") # the script works in a temporary directory
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "FAIL: $*" >&2; exit 1; }
quick=(--steps 12 --batch 4 --seq 32 --eval-batches 1 --calib-batches 2
       --eval-every 6 --log-every 6 --rank 4 --update-gap 5)

# 1. Stopped at step 5 and resumed: the same bytes as 12 straight steps.
"$llama" "${quick[@]}" --save full >full.log
"$llama" "${quick[@]}" --save run --save-every 3 --stop-at 5 >a.log
grep -q "saved step 5 to run" a.log || fail "no save at step 5"
"$llama" "${quick[@]}" --save run --resume run >b.log
grep -q "resumed run at step 5" b.log || fail "did not resume at step 5"
for f in model.safetensors optimizer.state trainer.txt config.json; do
    cmp "full/$f" "run/$f" || fail "$f differs after a resume"
done
[ "$(ls run | tr '\n' ' ')" = "config.json model.safetensors optimizer.state trainer.txt " ] ||
    fail "run holds $(ls run | tr '\n' ' ')"
ls -d run.saving-* run.old-* 2>/dev/null && fail "staging left behind"

# 2. --save-dtype bf16: the file's tensors and config.json say so.
"$llama" "${quick[@]}" --steps 2 --save b16 --save-dtype bf16 >/dev/null
head -c 4096 b16/model.safetensors | grep -q '"dtype":"BF16"' ||
    fail "bf16 weights not stored as BF16"
head -c 4096 b16/model.safetensors | grep -q '"F32"' &&
    fail "an F32 tensor in a bf16 save"
grep -q '"torch_dtype": "bfloat16"' b16/config.json ||
    fail "config.json does not say bfloat16"

# 3. A target with a file no checkpoint owns: refused before training.
mkdir keep
echo "notes" >keep/README.md
if "$llama" "${quick[@]}" --save keep >keep.log 2>&1; then
    fail "--save into a directory with README.md was accepted"
fi
grep -q "README.md" keep.log || fail "the refusal does not name README.md"
grep -q "^step" keep.log && fail "training ran before the refusal"
[ "$(cat keep/README.md)" = notes ] || fail "README.md was touched"

# 4. A FIFO as the trainer state: refused at once, not waited on.
cp -r run fifo
rm fifo/trainer.txt
mkfifo fifo/trainer.txt
set +e
timeout 60 "$llama" "${quick[@]}" --resume fifo >fifo.log 2>&1
rc=$?
set -e
[ $rc -eq 124 ] && fail "the trainer hung on a FIFO trainer.txt"
[ $rc -ne 0 ] || fail "a FIFO trainer.txt was accepted"
grep -q "not a regular file (a FIFO)" fifo.log || fail "$(cat fifo.log)"

# 5. --seq longer than the checkpoint's context (32, from the run above).
if "$llama" "${quick[@]}" --seq 64 --model full >ctx.log 2>&1; then
    fail "--seq 64 on a 32-token context was accepted"
fi
grep -q "longer than the context length" ctx.log || fail "$(cat ctx.log)"
echo "trainer checkpoints: all checks passed"
