#!/usr/bin/env bash
# A throwaway single-node Elasticsearch for the `elasticsearch` test marker and local work.
#
#   scripts/elasticsearch-node.sh start    # fetch (first time), configure, start, wait; prints the URL
#   scripts/elasticsearch-node.sh status   # "running pid N URL" (0), "starting-or-unhealthy ..." (1), "stopped" (3)
#   scripts/elasticsearch-node.sh url      # the URL the node serves (running or not)
#   scripts/elasticsearch-node.sh stop     # SIGTERM, wait, remove the pid file (data is kept)
#
# The node is Elasticsearch's integ-test distribution, fetched with Maven from Maven Central as
#   org.elasticsearch.distribution.integ-test-zip:elasticsearch:<version>:zip
# (served: 8.x up to 8.19.21, 9.0.0, 9.1.0, 9.2.0; 9.2.2 and 9.5.6 are not). It carries the
# server (dense_vector, kNN, BM25), transport-netty4, x-pack-core and x-pack-security only:
# no ingest-common (so no set/trim/... processors), no lang-painless (no script processor or
# script_score with Painless), no rank-rrf (no `rrf` retriever), no analysis-common.
# Elasticsearch is SSPL/ELv2: it is fetched into a cache outside the repository, never vendored.
#
# Environment (all optional):
#   TWINBERT_ELASTICSEARCH_VERSION    distribution version            (default 9.2.0)
#   TWINBERT_ELASTICSEARCH_PORT       HTTP port on 127.0.0.1          (default 9260)
#   TWINBERT_ELASTICSEARCH_TRANSPORT_PORT  transport port             (default HTTP port + 100)
#   TWINBERT_ELASTICSEARCH_HEAP       JVM heap, -Xms = -Xmx           (default 512m)
#   TWINBERT_ELASTICSEARCH_LICENSE    self-generated licence: basic | trial (default basic)
#   TWINBERT_ELASTICSEARCH_TIMEOUT    seconds to wait for health      (default 180)
#   TWINBERT_ELASTICSEARCH_JAVA_HOME  JDK to run it (default: the first JDK new enough among
#                                     ES_JAVA_HOME, JAVA_HOME, `java` on PATH, /usr/lib/jvm/*;
#                                     8.x needs Java 17+, 9.x needs Java 21+, 9.0.x at most 24)
#   TWINBERT_ELASTICSEARCH_USER       account the node runs as when this script runs as root
#                                     (Elasticsearch refuses root; default twinbert-es, created
#                                     as a system account if missing)
#   TWINBERT_NODE_CACHE               cache folder (default $HOME/.cache/twinbert-search/nodes;
#                                     as root /var/cache/twinbert-search/nodes, since the
#                                     account above cannot read through /root)
#   MVN                               Maven command (default mvn)
set -euo pipefail

readonly GROUP_ARTIFACT="org.elasticsearch.distribution.integ-test-zip:elasticsearch"
readonly DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

VERSION="${TWINBERT_ELASTICSEARCH_VERSION:-9.2.0}"
PORT="${TWINBERT_ELASTICSEARCH_PORT:-9260}"
TRANSPORT_PORT="${TWINBERT_ELASTICSEARCH_TRANSPORT_PORT:-$((PORT + 100))}"
HEAP="${TWINBERT_ELASTICSEARCH_HEAP:-512m}"
LICENSE_TYPE="${TWINBERT_ELASTICSEARCH_LICENSE:-basic}"
TIMEOUT="${TWINBERT_ELASTICSEARCH_TIMEOUT:-180}"
RUN_USER="${TWINBERT_ELASTICSEARCH_USER:-twinbert-es}"
if ((EUID == 0)); then
  CACHE="${TWINBERT_NODE_CACHE:-/var/cache/twinbert-search/nodes}"
else
  CACHE="${TWINBERT_NODE_CACHE:-${HOME}/.cache/twinbert-search/nodes}"
fi
MVN="${MVN:-mvn}"

URL="http://127.0.0.1:${PORT}"
DOWNLOADS="${CACHE}/downloads"
DIST="${CACHE}/elasticsearch-${VERSION}"                     # unpacked distribution, read-only
INSTANCE="${CACHE}/instances/elasticsearch-${VERSION}-${PORT}" # config, data, logs, tmp
PID_FILE="${INSTANCE}/elasticsearch.pid"

log() { printf '%s\n' "elasticsearch-node: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

usage() {
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# --- the distribution -----------------------------------------------------------------------

# Fetch the zip with Maven (Maven's own local repository caches it too) and unpack it once.
fetch_distribution() {
  [[ -x "${DIST}/bin/elasticsearch" ]] && return 0
  command -v "${MVN}" >/dev/null || die "Maven ('${MVN}') is needed to fetch the distribution"
  command -v unzip >/dev/null || die "unzip is needed to unpack the distribution"
  mkdir -p "${DOWNLOADS}"
  local zip="${DOWNLOADS}/elasticsearch-${VERSION}.zip"
  if [[ ! -s "${zip}" ]]; then
    log "fetching ${GROUP_ARTIFACT}:${VERSION}:zip with Maven"
    if ! "${MVN}" -B -q -Dstyle.color=never "${DEPENDENCY_PLUGIN}:copy" \
      "-Dartifact=${GROUP_ARTIFACT}:${VERSION}:zip" "-DoutputDirectory=${DOWNLOADS}" \
      >"${DOWNLOADS}/maven.log" 2>&1; then
      grep -E 'ERROR' "${DOWNLOADS}/maven.log" | head -n 5 >&2 || true
      die "Maven could not fetch ${GROUP_ARTIFACT}:${VERSION}:zip (is that version published?)"
    fi
  fi
  local staging
  staging="$(mktemp -d "${CACHE}/.unpack.XXXXXX")"
  unzip -q "${zip}" -d "${staging}" || {
    rm -rf "${staging}" "${zip}"
    die "corrupt download removed; run start again"
  }
  mv "${staging}/elasticsearch-${VERSION}" "${DIST}"
  rm -rf "${staging}"
  # Keep the distribution readable (not writable) by the account that runs the node.
  chmod -R go+rX,go-w "${DIST}"
}

has_module() { [[ -d "${DIST}/modules/$1" ]]; }

# --- Java -----------------------------------------------------------------------------------

# Major Java version of a JDK home, from its `release` file ("17.0.15" -> 17, "1.8.0" -> 8).
java_major() {
  local release="$1/release" version
  [[ -r "${release}" && -x "$1/bin/java" ]] || return 1
  version="$(sed -n 's/^JAVA_VERSION="\([^"]*\)".*/\1/p' "${release}")"
  version="${version#1.}"
  printf '%s\n' "${version%%[.+-]*}"
}

# Elasticsearch 9.x needs Java 21+, 8.x needs Java 17+. 9.0.x also fails on Java 25 ("Failed
# entitlement protection self-test"), so it gets a ceiling of 24; 8.19, 9.1 and 9.2 run on 25.
required_java() {
  if ((${VERSION%%.*} >= 9)); then echo 21; else echo 17; fi
}
maximum_java() {
  if [[ "${VERSION}" == 9.0.* ]]; then echo 24; else echo 999; fi
}

find_java_home() {
  local need most candidate major
  need="$(required_java)"
  most="$(maximum_java)"
  if [[ -n "${TWINBERT_ELASTICSEARCH_JAVA_HOME:-}" ]]; then
    major="$(java_major "${TWINBERT_ELASTICSEARCH_JAVA_HOME}")" ||
      die "TWINBERT_ELASTICSEARCH_JAVA_HOME=${TWINBERT_ELASTICSEARCH_JAVA_HOME} is not a JDK"
    ((major >= need && major <= most)) ||
      die "Elasticsearch ${VERSION} needs Java ${need} to ${most}, that JDK is ${major}"
    echo "${TWINBERT_ELASTICSEARCH_JAVA_HOME}"
    return 0
  fi
  local -a candidates=("${ES_JAVA_HOME:-}" "${JAVA_HOME:-}")
  if command -v java >/dev/null; then
    candidates+=("$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")")
  fi
  candidates+=(/usr/lib/jvm/*)
  for candidate in "${candidates[@]}"; do
    [[ -n "${candidate}" ]] || continue
    major="$(java_major "${candidate}")" || continue
    if ((major >= need && major <= most)); then
      echo "${candidate}"
      return 0
    fi
  done
  die "Elasticsearch ${VERSION} needs Java ${need} to ${most}; none found (set TWINBERT_ELASTICSEARCH_JAVA_HOME)"
}

# --- the instance ---------------------------------------------------------------------------

write_config() {
  local conf="${INSTANCE}/config"
  rm -rf "${conf}"
  mkdir -p "${conf}" "${INSTANCE}/data" "${INSTANCE}/logs" "${INSTANCE}/tmp"
  cp -R "${DIST}/config/." "${conf}/"
  {
    echo "# Written by scripts/elasticsearch-node.sh: a single test node on loopback."
    echo "cluster.name: twinbert-test"
    echo "node.name: twinbert-es-${PORT}"
    echo "network.host: 127.0.0.1"
    echo "http.port: ${PORT}"
    echo "transport.port: ${TRANSPORT_PORT}"
    echo "discovery.type: single-node"
    echo "path.data: ${INSTANCE}/data"
    echo "path.logs: ${INSTANCE}/logs"
    echo "xpack.security.enabled: false"
    echo "xpack.license.self_generated.type: ${LICENSE_TYPE}"
    echo "cluster.routing.allocation.disk.threshold_enabled: false"
    # Settings of modules the integ-test zip lacks are unknown settings there: set them only
    # when the module is present (a fuller distribution).
    if has_module x-pack-ml; then echo "xpack.ml.enabled: false"; fi
    if has_module ingest-geoip; then echo "ingest.geoip.downloader.enabled: false"; fi
  } >"${conf}/elasticsearch.yml"
  printf '%s\n' "-Xms${HEAP}" "-Xmx${HEAP}" >"${conf}/jvm.options.d/twinbert-heap.options"
  # jvm.options names gc.log, hs_err and heap dumps by relative paths (gc.log in 8.19/9.1/9.2,
  # logs/gc.log in 9.0): make them absolute, inside the instance.
  sed -i \
    -e "s|file=[^:]*gc\.log:|file=${INSTANCE}/logs/gc.log:|" \
    -e "s|^-XX:ErrorFile=.*|-XX:ErrorFile=${INSTANCE}/logs/hs_err_pid%p.log|" \
    -e "s|^-XX:HeapDumpPath=.*|-XX:HeapDumpPath=${INSTANCE}/data|" \
    "${conf}/jvm.options"
}

pid_alive() {
  local pid
  [[ -s "${PID_FILE}" ]] || return 1
  pid="$(<"${PID_FILE}")"
  [[ "${pid}" =~ ^[0-9]+$ ]] && kill -0 "${pid}" 2>/dev/null
}

healthy() {
  curl -fsS --max-time 5 "${URL}/_cluster/health?wait_for_status=yellow&timeout=2s" >/dev/null 2>&1
}

# Elasticsearch refuses to run as root ("can not run elasticsearch as root", no override): as
# root, run it as a system account that owns the instance folder and can read the distribution.
# Sets the global LAUNCH_PREFIX array (empty when not root).
LAUNCH_PREFIX=()
prepare_run_user() {
  ((EUID == 0)) || return 0
  if ! id -u "${RUN_USER}" >/dev/null 2>&1; then
    log "creating system account ${RUN_USER} to run Elasticsearch (it refuses root)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin "${RUN_USER}"
  fi
  chown -R "${RUN_USER}:" "${INSTANCE}"
  LAUNCH_PREFIX=(setpriv "--reuid=${RUN_USER}" "--regid=${RUN_USER}" --init-groups --)
  "${LAUNCH_PREFIX[@]}" test -r "${DIST}/lib/elasticsearch-${VERSION}.jar" ||
    die "${RUN_USER} cannot read ${DIST}: set TWINBERT_NODE_CACHE to a folder it can reach"
}

start() {
  if pid_alive && healthy; then
    log "already running (pid $(<"${PID_FILE}"))"
    echo "${URL}"
    return 0
  fi
  pid_alive && die "pid $(<"${PID_FILE}") is alive but ${URL} does not answer; run stop first"
  rm -f "${PID_FILE}"
  if curl -s --max-time 2 -o /dev/null "${URL}"; then
    die "something else already answers on ${URL}; set TWINBERT_ELASTICSEARCH_PORT"
  fi

  fetch_distribution
  local java_home started
  java_home="$(find_java_home)"
  write_config
  prepare_run_user

  log "starting Elasticsearch ${VERSION} on ${URL} (Java: ${java_home}, heap ${HEAP})"
  started="${SECONDS}"
  # -d daemonizes, -p writes the pid file; the instance is the working folder (logs/replay_pid*).
  # The launcher echoes the startup log until the node is up: keep it out of stdout (the URL).
  local console="${INSTANCE}/logs/console.log"
  if ! (
    cd "${INSTANCE}"
    exec timeout "${TIMEOUT}" env ES_JAVA_HOME="${java_home}" ES_PATH_CONF="${INSTANCE}/config" \
      ES_TMPDIR="${INSTANCE}/tmp" "${LAUNCH_PREFIX[@]}" "${DIST}/bin/elasticsearch" -d -p "${PID_FILE}"
  ) >"${console}" 2>&1; then
    tail -n 40 "${console}" >&2 || true
    stop >/dev/null 2>&1 || true
    die "Elasticsearch did not start within ${TIMEOUT}s (logs: ${INSTANCE}/logs)"
  fi

  until healthy; do
    if ! pid_alive; then
      tail -n 40 "${INSTANCE}/logs/twinbert-test.log" >&2 || true
      die "Elasticsearch exited while starting (logs: ${INSTANCE}/logs)"
    fi
    if ((SECONDS - started >= TIMEOUT)); then
      stop
      die "no healthy node on ${URL} after ${TIMEOUT}s (logs: ${INSTANCE}/logs)"
    fi
    sleep 1
  done
  log "healthy after $((SECONDS - started))s (pid $(<"${PID_FILE}"))"
  echo "${URL}"
}

stop() {
  if ! pid_alive; then
    rm -f "${PID_FILE}"
    log "not running"
    return 0
  fi
  local pid waited=0
  pid="$(<"${PID_FILE}")"
  kill -TERM "${pid}"
  while kill -0 "${pid}" 2>/dev/null; do
    if ((waited >= 60)); then
      log "pid ${pid} ignored SIGTERM for 60s; sending SIGKILL"
      kill -KILL "${pid}" 2>/dev/null || true
      break
    fi
    sleep 1
    waited=$((waited + 1))
  done
  rm -f "${PID_FILE}"
  log "stopped (pid ${pid})"
}

status() {
  if pid_alive && healthy; then
    echo "running pid $(<"${PID_FILE}") ${URL}"
  elif pid_alive; then
    echo "starting-or-unhealthy pid $(<"${PID_FILE}") ${URL}"
    return 1
  else
    echo "stopped"
    return 3
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) echo "${URL}" ;;
  *) usage ;;
esac
