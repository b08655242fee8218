#!/usr/bin/env bash
# Ranks on two "hosts": network namespaces joined by a bridge, Open MPI over TCP only, its daemons
# started in each namespace by a small rsh agent (as ssh would on a cluster). Checks an all-reduce
# across the hosts and that distillation gives the same losses as two local ranks.
source "$(dirname "${BASH_SOURCE[0]}")/common.bash"
[[ $(id -u) -eq 0 ]] || fail "needs root to create network namespaces (ip netns); run the test script as root"
command -v ip >/dev/null || fail "needs iproute2 (ip)"
tag=$$
NET=10.$((80 + tag % 100)).$(((tag / 100) % 250)).0
BR=sqb$tag
hosts=()
cleanup() {
    for i in 1 2; do ip netns del "sq$tag-$i" 2>/dev/null || true; done
    ip link del "$BR" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip link add "$BR" type bridge
ip addr add "${NET%.0}.254/24" dev "$BR"
ip link set "$BR" up
for i in 1 2; do
    ns=sq$tag-$i
    ip netns add "$ns"
    ip link add "sqv$tag$i" type veth peer name "sqp$tag$i"
    ip link set "sqp$tag$i" netns "$ns"
    ip link set "sqv$tag$i" master "$BR"
    ip link set "sqv$tag$i" up
    ip netns exec "$ns" ip addr add "${NET%.0}.$i/24" dev "sqp$tag$i"
    ip netns exec "$ns" ip link set "sqp$tag$i" up
    ip netns exec "$ns" ip link set lo up
    hosts+=("${NET%.0}.$i")
done
cat > "$WORK/rsh" <<RSH
#!/bin/bash
# rsh agent: "rsh HOST CMD..." runs CMD inside HOST's network namespace.
host=\$1; shift
case \$host in ${hosts[0]}) ns=sq$tag-1 ;; ${hosts[1]}) ns=sq$tag-2 ;; *) echo "unknown host \$host" >&2; exit 1 ;; esac
exec ip netns exec "\$ns" /bin/sh -c "\$*"
RSH
chmod +x "$WORK/rsh"
printf '%s slots=1\n' "${hosts[@]}" > "$WORK/hostfile"
remote=(mpirun --hostfile "$WORK/hostfile" -np 2 --mca plm_rsh_agent "$WORK/rsh" --mca oob_tcp_if_include "$NET/24"
        --mca btl_tcp_if_include "$NET/24" --mca btl self,tcp --mca pml ob1
        -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM -x OPENBLAS_NUM_THREADS -x SQUEEZE_CACHE)
# Each rank really is on its own host (namespace with one address).
addrs=$(timeout 60 "${remote[@]}" /bin/sh -c 'ip -4 -o addr show | grep -o "inet [0-9.]*" | grep -v 127.0.0.1' | sort | tr '\n' ' ')
[[ $addrs == "inet ${hosts[0]} inet ${hosts[1]} " ]] || fail "ranks did not run in the two namespaces: $addrs"
timeout 120 "${remote[@]}" "$SQUEEZE" bench allreduce --bytes 4000000 --json > "$WORK/ar.json" || fail "all-reduce across hosts"
[[ $(json_field correct < "$WORK/ar.json") == True ]] || fail "all-reduce sum wrong across hosts"
args=(train --model "$TINY" --data "$TEXT" --steps 6 --batch 4 --seq 16 --micro-batch 1 --checkpoint-every 0 --eval-tokens 32 --json)
timeout 300 "${remote[@]}" "$SQUEEZE" "${args[@]}" --out "$WORK/remote" > "$WORK/remote.log" 2>&1 || { tail "$WORK/remote.log"; fail "training across hosts"; }
mpirun -np 2 "$SQUEEZE" "${args[@]}" --out "$WORK/local" > "$WORK/local.log" 2>&1 || fail "local training"
a=$(grep '"step":6' "$WORK/remote.log" | json_field loss); b=$(grep '"step":6' "$WORK/local.log" | json_field loss)
python3 -c "import sys; sys.exit(0 if abs($a - $b) <= 1e-6 * abs($b) else 1)" || fail "loss across hosts $a vs local $b"
echo "ok: ranks on ${hosts[*]} (network namespaces, TCP); all-reduce correct; 6-step loss $a equals two local ranks' $b"
