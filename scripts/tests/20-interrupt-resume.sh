#!/usr/bin/env bash
# SIGTERM during training writes a checkpoint and exits non-zero; --resume finishes the run with
# the same final loss as an uninterrupted one.
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
args=(train --model "$TINY" --data "$TEXT" --steps 40 --batch 4 --seq 16 --micro-batch 1 --checkpoint-every 0 --eval-tokens 32 --json)
"$SQUEEZE" "${args[@]}" --out "$WORK/full" > "$WORK/full.log" 2>&1 || fail "uninterrupted run"
"$SQUEEZE" "${args[@]}" --out "$WORK/cut" > "$WORK/cut.log" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q '"step":3' "$WORK/cut.log" 2>/dev/null && break; sleep 0.2; done
kill -TERM $pid
status=0; wait $pid || status=$?
((status != 0)) || fail "interrupted run exited 0"
grep -q "interrupted at step" "$WORK/cut.log" || { cat "$WORK/cut.log"; fail "no interruption message"; }
[[ -f $WORK/cut/checkpoint/state.json ]] || fail "no checkpoint after SIGTERM"
"$SQUEEZE" "${args[@]}" --out "$WORK/cut" --resume > "$WORK/resume.log" 2>&1 || { cat "$WORK/resume.log"; fail "resume"; }
a=$(grep '"step":40' "$WORK/full.log" | json_field loss); b=$(grep '"step":40' "$WORK/resume.log" | json_field loss)
[[ $a == "$b" ]] || fail "final loss after resume $b differs from the uninterrupted run's $a"
echo "ok: SIGTERM checkpointed at $(grep -o 'interrupted at step [0-9]*' "$WORK/cut.log"); resumed run ends at loss $b like the uninterrupted one"
