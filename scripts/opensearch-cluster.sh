#!/usr/bin/env bash
# A throwaway three-node OpenSearch cluster on loopback for the `opensearch_cluster` tests
# (issue 27): shards, replicas, a node killed mid-run and bulk 429 back-pressure.
#
#   scripts/opensearch-cluster.sh start [N...]  assemble (first time), start the nodes that are
#                                              not running (all three, or node N), wait for green
#                                              with three nodes, print the URLs (comma-separated)
#   scripts/opensearch-cluster.sh stop [N...]   stop the nodes (SIGTERM, then SIGKILL)
#   scripts/opensearch-cluster.sh kill N        SIGKILL node N at once (what the tests do to it)
#   scripts/opensearch-cluster.sh status        one line per node; exit 0 when all three run
#   scripts/opensearch-cluster.sh urls          the URLs, comma-separated (exit 3 if none runs)
#   scripts/opensearch-cluster.sh check         exit 0 if this machine can start the nodes, else
#                                              name what is missing on one line (exit 4)
#
# The installation is the one scripts/opensearch-node.sh assembles from Maven Central
# (`opensearch-node.sh assemble`, k-NN by default: TWINBERT_OPENSEARCH_PLUGINS); all three nodes
# run from that one home, each with a config directory of its own (OPENSEARCH_PATH_CONF) and
# its own data, logs and tmp. Nodes 0, 1, 2 are named twinbert-c0..c2, all cluster-manager
# eligible and listed in cluster.initial_cluster_manager_nodes; discovery.seed_hosts are their
# transport ports on 127.0.0.1. Node 2 has a write thread pool of one thread and a queue of
# TWINBERT_CLUSTER_WRITE_QUEUE (1): a bulk request that reaches several of its primaries at once
# is partly refused with 429, as a busy production node refuses it.
#
#   $TWINBERT_NODE_CACHE/opensearch-cluster-<v>/node-<N>/{config,data,logs,tmp,run}
# data/ is wiped when `start` finds no node running (a fresh cluster); a node started again
# while the others run keeps its data and rejoins.
#
# Environment:
#   TWINBERT_CLUSTER_HTTP_PORT       node 0's HTTP port (default 9280; nodes 1, 2: +1, +2)
#   TWINBERT_CLUSTER_TRANSPORT_PORT  node 0's transport port (default 9580; +1, +2)
#   TWINBERT_CLUSTER_HEAP            JVM heap per node (default 512m)
#   TWINBERT_CLUSTER_WRITE_QUEUE     node 2's write queue (default 1)
#   TWINBERT_CLUSTER_START_TIMEOUT   seconds to wait for green (default 300)
#   TWINBERT_OPENSEARCH_VERSION, TWINBERT_OPENSEARCH_PLUGINS, TWINBERT_NODE_CACHE,
#   TWINBERT_MAVEN_REPO, OPENSEARCH_JAVA_HOME: as for scripts/opensearch-node.sh
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly NODE_SCRIPT=$HERE/opensearch-node.sh
readonly VERSION=${TWINBERT_OPENSEARCH_VERSION:-2.19.1}
readonly CACHE=${TWINBERT_NODE_CACHE:-$HOME/.cache/twinbert-search/nodes}
readonly HTTP_PORT=${TWINBERT_CLUSTER_HTTP_PORT:-9280}
readonly TRANSPORT_PORT=${TWINBERT_CLUSTER_TRANSPORT_PORT:-9580}
readonly HEAP=${TWINBERT_CLUSTER_HEAP:-512m}
readonly WRITE_QUEUE=${TWINBERT_CLUSTER_WRITE_QUEUE:-1}
readonly START_TIMEOUT=${TWINBERT_CLUSTER_START_TIMEOUT:-300}
readonly STOP_TIMEOUT=60
readonly NODES=(0 1 2)
readonly TINY_WRITE_NODE=2
readonly CLUSTER_DIR=$CACHE/opensearch-cluster-$VERSION
export TWINBERT_OPENSEARCH_VERSION=$VERSION TWINBERT_NODE_CACHE=$CACHE
export TWINBERT_OPENSEARCH_PLUGINS=${TWINBERT_OPENSEARCH_PLUGINS:-knn}

log() { printf 'opensearch-cluster: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

node_dir() { printf '%s/node-%s' "$CLUSTER_DIR" "$1"; }
http_port() { printf '%s' $((HTTP_PORT + $1)); }
url_of() { printf 'http://127.0.0.1:%s' "$(http_port "$1")"; }

check_node() {
  [[ $1 =~ ^[012]$ ]] || die "no node '$1' (the nodes are 0, 1 and 2)"
}

# The JDK the node script would pick: OPENSEARCH_JAVA_HOME, JAVA_HOME, java on PATH, then
# /usr/lib/jvm/*, the first whose feature version OpenSearch 2.x runs on (11..23).
pick_java() {
  local candidate version candidates=("${OPENSEARCH_JAVA_HOME:-}" "${JAVA_HOME:-}")
  if command -v java >/dev/null; then
    candidate=$(readlink -f "$(command -v java)")
    candidates+=("${candidate%/bin/java}")
  fi
  candidates+=(/usr/lib/jvm/*)
  for candidate in "${candidates[@]}"; do
    [[ -n $candidate && -x $candidate/bin/java && -f $candidate/release ]] || continue
    version=$(sed -n 's/^JAVA_VERSION="\(1\.\)\{0,1\}\([0-9]*\).*/\2/p' "$candidate/release")
    if [[ -n $version ]] && ((version >= 11 && version <= 23)); then
      printf '%s' "$candidate"
      return 0
    fi
  done
  die "no JDK 11..23 found for OpenSearch $VERSION (set OPENSEARCH_JAVA_HOME)"
}

# The pid of node N, or failure (a stale pid file or a reused pid is not the node).
running_pid() {
  local pid file
  file=$(node_dir "$1")/run/opensearch.pid
  [[ -f $file ]] || return 1
  pid=$(<"$file")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  grep -q 'org.opensearch.bootstrap.OpenSearch' "/proc/$pid/cmdline" 2>/dev/null || return 1
  printf '%s' "$pid"
}

port_in_use() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
  local node=$1 home=$2 dir
  dir=$(node_dir "$node")
  rm -rf "$dir/config"
  cp -r "$home/config" "$dir/config"
  rm -f "$dir/config/jvm.options.d"/twinbert-*.options
  local seeds='' managers='' n
  for n in "${NODES[@]}"; do
    seeds+="${seeds:+, }\"127.0.0.1:$((TRANSPORT_PORT + n))\""
    managers+="${managers:+, }twinbert-c$n"
  done
  cat >"$dir/config/opensearch.yml" <<EOF
# Written by scripts/opensearch-cluster.sh: node $node of a three-node test cluster on loopback.
cluster.name: twinbert-search-cluster
node.name: twinbert-c$node
network.host: 127.0.0.1
http.port: $(http_port "$node")
transport.port: $((TRANSPORT_PORT + node))
discovery.seed_hosts: [$seeds]
cluster.initial_cluster_manager_nodes: [$managers]
path.data: $dir/data
path.logs: $dir/logs
cluster.routing.allocation.disk.threshold_enabled: false
EOF
  if ((node == TINY_WRITE_NODE)); then
    printf 'thread_pool.write.size: 1\nthread_pool.write.queue_size: %s\n' "$WRITE_QUEUE" \
      >>"$dir/config/opensearch.yml"
  fi
  printf -- '-Xms%s\n-Xmx%s\n' "$HEAP" "$HEAP" >"$dir/config/jvm.options.d/twinbert-heap.options"
}

# start_node N HOME JAVA: launch node N in the background (as opensearch-node.sh does).
start_node() {
  local node=$1 home=$2 java_home=$3 dir port
  dir=$(node_dir "$node")
  port=$(http_port "$node")
  port_in_use "$port" && die "port $port (node $node) is in use"
  port_in_use $((TRANSPORT_PORT + node)) && die "port $((TRANSPORT_PORT + node)) (node $node) is in use"
  rm -rf "$dir/tmp"
  mkdir -p "$dir/data" "$dir/logs" "$dir/tmp" "$dir/run"
  write_config "$node" "$home"
  local launcher=()
  if (($(id -u) == 0)); then # OpenSearch refuses root: uid 1000 in a user namespace
    launcher=(unshare --user --map-user=1000 --map-group=1000 --)
  fi
  (
    exec 9>&-
    cd "$home"
    export OPENSEARCH_JAVA_HOME=$java_home OPENSEARCH_TMPDIR=$dir/tmp OPENSEARCH_PATH_CONF=$dir/config
    unset OPENSEARCH_JAVA_OPTS JAVA_TOOL_OPTIONS
    exec setsid "${launcher[@]}" bin/opensearch >"$dir/logs/console.log" 2>&1 </dev/null
  ) &
  printf '%s\n' "$!" >"$dir/run/opensearch.pid"
  log "starting node $node (twinbert-c$node) on $(url_of "$node"), pid $!"
}

# The cluster's status through any running node, waiting up to 5 s for green with three nodes.
health() {
  local node body
  for node in "${NODES[@]}"; do
    running_pid "$node" >/dev/null || continue
    body=$(curl -fsS --max-time 10 \
      "$(url_of "$node")/_cluster/health?wait_for_status=green&wait_for_nodes=3&timeout=5s" \
      2>/dev/null) || continue
    sed -n 's/.*"status":"\([a-z]*\)".*"number_of_nodes":\([0-9]*\).*/\1 \2/p' <<<"$body"
    return 0
  done
}

urls() {
  local node out=''
  for node in "${NODES[@]}"; do
    running_pid "$node" >/dev/null && out+="${out:+,}$(url_of "$node")"
  done
  [[ -n $out ]] || {
    log "not running"
    return 3
  }
  printf '%s\n' "$out"
}

start() {
  local wanted=("$@") node started=$SECONDS home java_home any=0
  ((${#wanted[@]})) || wanted=("${NODES[@]}")
  for node in "${wanted[@]}"; do check_node "$node"; done
  home=$("$NODE_SCRIPT" assemble | tail -n 1) || die "assembling OpenSearch failed"
  [[ -x $home/bin/opensearch ]] || die "no OpenSearch at '$home'"
  java_home=$(pick_java)
  for node in "${NODES[@]}"; do
    running_pid "$node" >/dev/null && any=1
  done
  if ((!any)); then # a fresh cluster: no node keeps the data of an earlier one
    for node in "${NODES[@]}"; do rm -rf "$(node_dir "$node")/data"; done
  fi
  for node in "${wanted[@]}"; do
    running_pid "$node" >/dev/null || start_node "$node" "$home" "$java_home"
  done
  local state=''
  while ((SECONDS - started < START_TIMEOUT)); do
    state=$(health)
    [[ $state == "green 3" ]] && break
    for node in "${wanted[@]}"; do
      # bin/opensearch is still a shell for a moment: the pid is alive before it is the JVM
      if ! kill -0 "$(<"$(node_dir "$node")/run/opensearch.pid")" 2>/dev/null; then
        tail -n 40 "$(node_dir "$node")/logs/console.log" >&2 || true
        die "node $node exited during start-up (logs in $(node_dir "$node")/logs)"
      fi
    done
    sleep 1
  done
  [[ $state == "green 3" ]] || die "no green health with three nodes within $START_TIMEOUT s (got '${state:-no answer}')"
  log "green with three nodes in $((SECONDS - started)) s"
  urls
}

stop() {
  local wanted=("$@") node pid waited
  ((${#wanted[@]})) || wanted=("${NODES[@]}")
  for node in "${wanted[@]}"; do
    check_node "$node"
    pid=$(running_pid "$node") || {
      rm -f "$(node_dir "$node")/run/opensearch.pid"
      continue
    }
    kill -TERM "$pid"
    waited=0
    while kill -0 "$pid" 2>/dev/null && ((waited < STOP_TIMEOUT)); do
      sleep 1
      waited=$((waited + 1))
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    rm -f "$(node_dir "$node")/run/opensearch.pid"
    log "stopped node $node (pid $pid)"
  done
}

kill_node() {
  local pid
  check_node "$1"
  pid=$(running_pid "$1") || die "node $1 is not running"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$(node_dir "$1")/run/opensearch.pid"
  log "killed node $1 (pid $pid)"
}

status() {
  local node pid all=0
  for node in "${NODES[@]}"; do
    if pid=$(running_pid "$node"); then
      printf 'node %s running %s pid=%s\n' "$node" "$(url_of "$node")" "$pid"
    else
      printf 'node %s stopped\n' "$node"
      all=3
    fi
  done
  printf 'health %s\n' "$(health || true)"
  return $all
}

with_lock() {
  mkdir -p "$CLUSTER_DIR"
  exec 9>"$CLUSTER_DIR/.lock"
  flock 9
  "$@"
}

command=${1:-}
shift || true
case $command in
  start) with_lock start "$@" ;;
  stop) with_lock stop "$@" ;;
  kill) kill_node "${1:?which node}" ;;
  status) status ;;
  urls) urls ;;
  check) "$NODE_SCRIPT" check ;;
  *)
    sed -n '4,13s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
