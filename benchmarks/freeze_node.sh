#!/usr/bin/env bash
# For `load_test.py --during`: the node listening on PORT stops answering AFTER_S seconds into
# the measured run, for FOR_S seconds (SIGSTOP: a hung node, whose port takes connections and
# never answers, the outage that costs callers most), then answers again (SIGCONT).
#   usage: benchmarks/freeze_node.sh PORT [AFTER_S=15] [FOR_S=30]
set -euo pipefail
port=${1:?usage: freeze_node.sh PORT [AFTER_S] [FOR_S]}
after=${2:-15}
for_s=${3:-30}
pid=$(ss -ltnpH "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
[[ -n $pid ]] || { echo "freeze_node: nothing listens on port $port" >&2; exit 1; }
sleep "$after"
kill -STOP "$pid"
trap 'kill -CONT "$pid"' EXIT  # never leave the node frozen
echo "freeze_node: node $pid frozen at ${after} s" >&2
sleep "$for_s"
echo "freeze_node: node $pid answers again at $((after + for_s)) s" >&2
