#!/usr/bin/env bash
# A rank killed mid-run makes the whole job exit non-zero within 30 s, naming the rank; no hang.
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
mpirun -np 2 "$SQUEEZE" train --model "$TINY" --data "$TEXT" --out "$WORK/killed" --steps 100000 --batch 4 --seq 16 \
    --micro-batch 1 --checkpoint-every 0 --json > "$WORK/kill.log" 2>&1 &
job=$!
for _ in $(seq 150); do grep -q '"step":2' "$WORK/kill.log" 2>/dev/null && break; sleep 0.2; done
# The ranks: processes running this squeeze binary whose command line names this job's output
# directory (read /proc, no procps needed; independent of the process name and of whether squeeze
# re-executed itself to pick OpenBLAS kernels).
exe=$(readlink -f "$SQUEEZE")
victim=$(for d in /proc/[0-9]*; do
    [[ $(readlink "$d/exe" 2>/dev/null) == "$exe" ]] && tr '\0' ' ' < "$d/cmdline" 2>/dev/null | grep -q -- "--out $WORK/killed" && echo "${d#/proc/}" || true
done | sort -n | tail -1)
names=$(for d in /proc/[0-9]*; do [[ $(readlink "$d/exe" 2>/dev/null) == "$exe" ]] && cat "$d/comm" 2>/dev/null || true; done | sort -u | tr '\n' ' ')
[[ -n $victim ]] || { kill $job; fail "could not find a rank to kill"; }
# A re-executed squeeze keeps its own name (ps, top and mpirun's messages say "squeeze", not "exe").
[[ $names == "squeeze " ]] || { kill $job; fail "the ranks are named '$names', expected 'squeeze'"; }
start=$(date +%s)
kill -KILL "$victim"
status=0
for _ in $(seq 300); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
if kill -0 $job 2>/dev/null; then kill -KILL $job; fail "job still running 30 s after a rank died"; fi
wait $job || status=$?
elapsed=$(( $(date +%s) - start ))
((status != 0)) || fail "job exited 0 after a rank was killed"
grep -qiE "rank [0-9]+|process rank" "$WORK/kill.log" || { tail -20 "$WORK/kill.log"; fail "no message naming the rank"; }
echo "ok: killed pid $victim; job exited with status $status after ${elapsed}s: $(grep -iE -m1 'rank [0-9]+' "$WORK/kill.log")"
