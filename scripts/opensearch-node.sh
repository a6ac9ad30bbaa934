#!/usr/bin/env bash
# A single, throwaway OpenSearch node for the integration tests (issue 17).
#
#   scripts/opensearch-node.sh start     fetch + assemble (first time), start, wait, print the URL
#   scripts/opensearch-node.sh stop      stop the node (SIGTERM, then SIGKILL after a grace period)
#   scripts/opensearch-node.sh status    "running <url> ..." (exit 0) or "stopped ..." (exit 3)
#   scripts/opensearch-node.sh url       print the URL of the running node (exit 3 when stopped)
#   scripts/opensearch-node.sh assemble  fetch + assemble only (to warm the cache); print the home
#   scripts/opensearch-node.sh check     exit 0 if this machine can start the node, else name
#                                        what is missing on one line (exit 4)
#   scripts/opensearch-node.sh certs     with `security`: print the directory of the node's
#                                        certificates (root-ca.pem: the CA to trust)
#
# Everything comes from Maven Central through `mvn`; nothing else is downloaded:
#   - org.opensearch.distribution.integ-test-zip:opensearch:<v>:zip: the server, no bundled JDK,
#     no security plugin (plain HTTP). The 2.x zip carries only transport-netty4; 3.x, every module.
#   - on 2.x, the modules the project needs, from their published jars and dependencies
#     (org.opensearch.plugin:lang-painless, analysis-common, ingest-common, mapper-extras-client,
#     lang-mustache-client), each given the descriptor (and policy) the full distribution has;
#   - plugins: org.opensearch.plugin:<artifact>:<v>.0:zip, installed with bin/opensearch-plugin.
#     The Maven k-NN zip has no native libraries: only the `lucene` engine works. A faiss or
#     nmslib index is created, but its first refresh kills the node (UnsatisfiedLinkError).
#   - with ML Commons: libtorch (ai.djl.pytorch:pytorch-native-cpu) and DJL's JNI bridge
#     (ai.djl.pytorch:pytorch-jni), which DJL would otherwise download at the first deploy.
#   Central serves every plugin for 2.19.1 (k-NN, job-scheduler, ML Commons, neural-search,
#   security); for 3.5.0, k-NN only.
#
# With `security` in the plugin set (issue 27) the node is a secured one: the opensearch-security
# plugin, TLS on HTTP and transport, HTTP basic auth against the plugin's internal users. The
# certificates are made with the `openssl` CLI, once per node directory, in
# $TWINBERT_NODE_CACHE/opensearch-<v>-<plugins>/certs: root-ca.pem (the node's own CA),
# node.pem (SAN 127.0.0.1 and localhost, for HTTP and transport) and admin.pem (the DN in
# plugins.security.authcz.admin_dn, for the plugin's securityadmin tool), each with its *-key.pem.
# Two internal users, bcrypt-hashed with the plugin's own Hasher at each start and loaded from
# the security YAML at the first start of a wiped data/ (allow_default_init_securityindex):
#   admin    role all_access           password: TWINBERT_OPENSEARCH_ADMIN_PASSWORD (required)
#   reader   role twinbert_read_only   password: TWINBERT_OPENSEARCH_READER_PASSWORD (required)
#            (search and read any index, monitor the cluster; no index or cluster writes)
# Passwords are read from the environment only: they are never printed, logged or put on a
# command line (curl reads them from its standard input). The URL is https://127.0.0.1:<port>;
# `start` waits for it with the CA and the admin's credentials.
#
# Nothing is written inside the repository. One directory per version and plugin set:
#   $TWINBERT_NODE_CACHE/opensearch-<v>-<plugins>/home   the assembled installation
#                                                 /data /logs /tmp   (data/ is wiped at start)
#                                                 /run/opensearch.pid /run/url
# Maven keeps its own copy of what it fetched in ~/.m2/repository (or $TWINBERT_MAVEN_REPO).
#
# Environment:
#   TWINBERT_OPENSEARCH_VERSION   2.19.1 (default; JDK 11-23) or 3.x (JDK 21+; Temurin 25 is found)
#   TWINBERT_OPENSEARCH_PLUGINS   knn (default); ml (ML Commons + job-scheduler); neural (k-NN,
#                                 ML Commons, job-scheduler, neural-search); security (adds the
#                                 security plugin, TLS and users: see above); none. Comma or space.
#   TWINBERT_OPENSEARCH_ADMIN_PASSWORD   with security: the password of the user `admin`
#   TWINBERT_OPENSEARCH_READER_PASSWORD  with security: the password of the user `reader`
#   TWINBERT_OPENSEARCH_PORT      HTTP port; default: the first free one from 9250
#   TWINBERT_OPENSEARCH_HEAP      JVM heap, default 1g
#   TWINBERT_OPENSEARCH_START_TIMEOUT  seconds to wait for yellow or green, default 300
#   TWINBERT_OPENSEARCH_KEEP_DATA 1 keeps data/ from one start to the next
#   TWINBERT_NODE_CACHE           default $HOME/.cache/twinbert-search/nodes
#   TWINBERT_MAVEN_REPO           local Maven repository (default: Maven's own)
#   OPENSEARCH_JAVA_HOME          the JDK to run with (default: chosen by version, see pick_java)
#
# OpenSearch refuses to run as root. Run as root (as CI does), the node runs in a user namespace
# in which it is uid 1000, while its files stay root's.
set -euo pipefail

readonly VERSION=${TWINBERT_OPENSEARCH_VERSION:-2.19.1}
readonly PLUGIN_SET=${TWINBERT_OPENSEARCH_PLUGINS:-knn}
readonly CACHE=${TWINBERT_NODE_CACHE:-$HOME/.cache/twinbert-search/nodes}
readonly HEAP=${TWINBERT_OPENSEARCH_HEAP:-1g}
readonly START_TIMEOUT=${TWINBERT_OPENSEARCH_START_TIMEOUT:-300}
readonly STOP_TIMEOUT=60
readonly DEFAULT_PORT=9250
readonly DEPENDENCY_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.6.1
readonly MAJOR=${VERSION%%.*}

log() { printf 'opensearch-node: %s\n' "$*" >&2; }
die() {
  log "error: $*"
  exit 1
}

# --- plugin set ---------------------------------------------------------------------------------

# PLUGINS: the Maven artifact ids, in installation order (each after the plugins it extends);
# FLAVOR: their short names, joined with '+', for the node's directory.
PLUGINS=()
FLAVOR=
SECURED=0
expand_plugins() {
  local want=" ${PLUGIN_SET//,/ } " word short=()
  for word in $want; do
    case $word in
      knn | ml | neural | job-scheduler | security | none) ;;
      *) die "unknown plugin '$word' in TWINBERT_OPENSEARCH_PLUGINS (knn, ml, neural, job-scheduler, security, none)" ;;
    esac
  done
  case $want in *" neural "*) want+=" knn ml " ;; esac
  case $want in *" ml "*) want+=" job-scheduler " ;; esac
  case $want in *" job-scheduler "*) PLUGINS+=(opensearch-job-scheduler) short+=(job-scheduler) ;; esac
  case $want in *" knn "*) PLUGINS+=(opensearch-knn) short+=(knn) ;; esac
  case $want in *" ml "*) PLUGINS+=(opensearch-ml-plugin) short+=(ml) ;; esac
  case $want in *" neural "*) PLUGINS+=(neural-search) short+=(neural) ;; esac
  case $want in *" security "*) PLUGINS+=(opensearch-security) short+=(security) SECURED=1 ;; esac
  local IFS=+
  FLAVOR=${short[*]:-bare}
}
expand_plugins
readonly PLUGINS FLAVOR SECURED

readonly NODE_DIR=$CACHE/opensearch-$VERSION-$FLAVOR
readonly OS_HOME=$NODE_DIR/home
readonly DATA_DIR=$NODE_DIR/data
readonly LOG_DIR=$NODE_DIR/logs
readonly RUN_DIR=$NODE_DIR/run
readonly PID_FILE=$RUN_DIR/opensearch.pid
readonly URL_FILE=$RUN_DIR/url
readonly CERT_DIR=$NODE_DIR/certs
readonly SCHEME=$( ((SECURED)) && printf https || printf http)

# --- Java and Maven -----------------------------------------------------------------------------

# java_major DIR: the feature version of the JDK in DIR ("17", "25"), or nothing.
java_major() {
  local version
  [[ -x $1/bin/java ]] || return 0
  if [[ -f $1/release ]] && version=$(grep -m1 '^JAVA_VERSION=' "$1/release"); then
    version=${version#JAVA_VERSION=\"}
  else
    version=$("$1/bin/java" -version 2>&1 | sed -n '1s/.*version "\([^"]*\)".*/\1/p')
  fi
  version=${version#1.}
  printf '%s' "${version%%[.+\"-]*}"
}

# OpenSearch 2.x needs the Java security manager, which JDK 24 removed: JDK 11 to 23.
# OpenSearch 3.x needs JDK 21 or newer.
JAVA_MIN=11 JAVA_MAX=23
if ((MAJOR >= 3)); then JAVA_MIN=21 JAVA_MAX=99; fi
readonly JAVA_MIN JAVA_MAX

pick_java() {
  local min=$JAVA_MIN max=$JAVA_MAX candidate major
  local candidates=("${OPENSEARCH_JAVA_HOME:-}" "${JAVA_HOME:-}")
  if command -v java >/dev/null; then
    candidate=$(readlink -f "$(command -v java)")
    candidates+=("${candidate%/bin/java}")
  fi
  candidates+=(/usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*)
  for candidate in "${candidates[@]}"; do
    [[ -n $candidate && -d $candidate ]] || continue
    major=$(java_major "$candidate")
    if [[ -n $major ]] && ((major >= min && major <= max)); then
      printf '%s' "$candidate"
      return 0
    fi
  done
  die "no JDK $min..$max found for OpenSearch $VERSION (set OPENSEARCH_JAVA_HOME)"
}

# Maven, quiet; what it said is shown only when it fails.
mvn_quiet() {
  local args=(-B -q) out
  [[ -n ${TWINBERT_MAVEN_REPO:-} ]] && args+=("-Dmaven.repo.local=$TWINBERT_MAVEN_REPO")
  out=$(mvn "${args[@]}" "$@" 2>&1) || {
    printf '%s\n' "$out" | grep -v '^[[:space:]]*$' | tail -n 20 >&2
    return 1
  }
}

# fetch_artifact G:A:V:TYPE[:CLASSIFIER] DIR: the artifact alone, into DIR.
fetch_artifact() {
  log "fetching $1"
  mvn_quiet "$DEPENDENCY_PLUGIN:copy" "-Dartifact=$1" "-DoutputDirectory=$2"
}

# fetch_with_dependencies G:A:V DIR WORK: the jar and its runtime dependencies, into DIR.
fetch_with_dependencies() {
  local group=${1%%:*} rest=${1#*:}
  local artifact=${rest%%:*} version=${rest#*:}
  mkdir -p "$3"
  cat >"$3/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.twinbert-search</groupId>
  <artifactId>opensearch-module-$artifact</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>$group</groupId>
      <artifactId>$artifact</artifactId>
      <version>$version</version>
    </dependency>
  </dependencies>
</project>
EOF
  log "fetching $1 with its dependencies"
  mvn_quiet -f "$3/pom.xml" "$DEPENDENCY_PLUGIN:copy-dependencies" -DincludeScope=runtime "-DoutputDirectory=$2"
}

# --- assembly -------------------------------------------------------------------------------------

# The modules that the 2.x integ-test zip lacks and the project uses (painless: the ingest
# pipelines' script processor and k-NN's extension; ingest-common: set, trim, remove):
#   name|artifact|extended plugins|security policy grants
readonly MODULES=(
  'lang-painless|lang-painless||permission java.lang.RuntimePermission "createClassLoader"; permission java.lang.RuntimePermission "getClassLoader";'
  'analysis-common|analysis-common|lang-painless|'
  'ingest-common|ingest-common|lang-painless|'
  'mapper-extras|mapper-extras-client||'
  'lang-mustache|lang-mustache-client||permission java.lang.RuntimePermission "accessDeclaredMembers";'
)

# assemble_module HOME WORK SPEC: HOME/modules/<name> from the module's jars, leaving out those
# that the server's lib/ already has (a second copy is jar hell).
assemble_module() {
  local home=$1 work=$2 name artifact extends grants
  IFS='|' read -r name artifact extends grants <<<"$3"
  [[ -d $home/modules/$name ]] && return 0
  local jars=$work/$name-jars dest=$home/modules/$name jar
  fetch_with_dependencies "org.opensearch.plugin:$artifact:$VERSION" "$jars" "$work/$name-pom" \
    || die "Maven could not fetch org.opensearch.plugin:$artifact:$VERSION"
  mkdir -p "$dest"
  for jar in "$jars"/*.jar; do
    [[ -e $home/lib/${jar##*/} ]] || cp "$jar" "$dest/"
  done
  # The plugin class: the one top-level *Plugin class of the module's own jar.
  local class
  class=$(unzip -Z1 "$jars/$artifact-$VERSION.jar" | grep -E '^org/opensearch/([a-z0-9_]+/)+[A-Za-z0-9]*Plugin\.class$' || true)
  [[ -n $class && $class != *$'\n'* ]] || die "cannot tell the plugin class of $artifact: '$class'"
  class=${class%.class}
  cat >"$dest/plugin-descriptor.properties" <<EOF
description=$name module, assembled from org.opensearch.plugin:$artifact:$VERSION
version=$VERSION
name=$name
classname=${class//\//.}
java.version=11
opensearch.version=$VERSION
extended.plugins=$extends
has.native.controller=false
EOF
  if [[ -n $grants ]]; then
    printf 'grant {\n  %s\n};\n' "${grants//; /;$'\n'  }" >"$dest/plugin-security.policy"
  fi
}

# DJL's JNI bridge is published for fewer DJL versions than ML Commons bundles: the nearest one.
jni_fallback() {
  case $1 in
    2.5.1-0.31.1) printf '2.5.1-0.32.0' ;;
  esac
}

# stage_pytorch HOME WORK: ML Commons runs models with DJL, whose ONNX Runtime engine needs PyTorch
# beside it (ML Commons' translator uses NDArray operations ONNX Runtime lacks), and DJL
# downloads libtorch from its own site at the first deploy. Central has both libtorch and the
# JNI bridge: HOME/djl-engines/pytorch/<torch>-cpu-<platform>/ is the layout of DJL's cache.
stage_pytorch() {
  local home=$1 work=$2 engine_jar djl torch platform jni
  engine_jar=$(compgen -G "$home/plugins/opensearch-ml/pytorch-engine-*.jar") || return 0
  djl=${engine_jar##*/pytorch-engine-}
  djl=${djl%.jar}
  torch=$(unzip -p "$engine_jar" pytorch-engine.properties | sed -n 's/^pytorch_version=//p')
  case $(uname -m) in
    x86_64) platform=linux-x86_64 ;;
    aarch64) platform=linux-aarch64 ;;
    *)
      log "no libtorch for $(uname -m): ML Commons will not deploy models"
      return 0
      ;;
  esac
  local dest=$home/djl-engines/pytorch/$torch-cpu-$platform
  mkdir -p "$dest" "$work/djl"
  fetch_artifact "ai.djl.pytorch:pytorch-native-cpu:$torch:jar:$platform" "$work/djl" \
    || die "Maven could not fetch libtorch $torch"
  unzip -q -j "$work/djl/pytorch-native-cpu-$torch-$platform.jar" "pytorch/cpu/$platform/*" -d "$dest"
  for jni in "$torch-$djl" $(jni_fallback "$torch-$djl"); do
    log "fetching ai.djl.pytorch:pytorch-jni:$jni"
    if mvn_quiet "$DEPENDENCY_PLUGIN:copy" "-Dartifact=ai.djl.pytorch:pytorch-jni:$jni" \
      "-DoutputDirectory=$work/djl" 2>/dev/null; then
      unzip -p "$work/djl/pytorch-jni-$jni.jar" "jnilib/$platform/cpu/libdjl_torch.so" >"$dest/$djl-libdjl_torch.so"
      break
    fi
  done
  [[ -s $dest/$djl-libdjl_torch.so ]] || die "no DJL PyTorch JNI bridge for $torch-$djl"
  # ML Commons asks for the pre-C++11-ABI build (PYTORCH_PRECXX11=true), which Central lacks;
  # the C++11 build, loaded with its own JNI bridge, serves.
  ln -s "$torch-cpu-$platform" "$home/djl-engines/pytorch/$torch-cpu-precxx11-$platform"
  printf '%s\n' "$torch" >"$home/djl-engines/pytorch-version"
}

assemble() {
  [[ -d $OS_HOME ]] && return 0
  command -v mvn >/dev/null || die "Maven (mvn) is not installed"
  command -v unzip >/dev/null || die "unzip is not installed"
  local java_home started=$SECONDS
  java_home=$(pick_java)
  local work=$NODE_DIR/assemble.partial
  rm -rf "$work"
  mkdir -p "$work/dist"

  fetch_artifact "org.opensearch.distribution.integ-test-zip:opensearch:$VERSION:zip" "$work/dist" \
    || die "Maven could not fetch OpenSearch $VERSION"
  unzip -q "$work/dist/opensearch-$VERSION.zip" -d "$work"
  local home=$work/opensearch-$VERSION
  [[ -x $home/bin/opensearch ]] || die "unexpected layout in opensearch-$VERSION.zip"

  local spec plugin
  for spec in "${MODULES[@]}"; do
    assemble_module "$home" "$work" "$spec"
  done
  for plugin in "${PLUGINS[@]}"; do
    fetch_artifact "org.opensearch.plugin:$plugin:$VERSION.0:zip" "$work/dist" \
      || die "Maven could not fetch org.opensearch.plugin:$plugin:$VERSION.0:zip"
    log "installing $plugin"
    OPENSEARCH_JAVA_HOME=$java_home "$home/bin/opensearch-plugin" install --batch \
      "file://$work/dist/$plugin-$VERSION.0.zip" >"$work/install-$plugin.log" 2>&1 \
      || { tail -n 20 "$work/install-$plugin.log" >&2; die "installing $plugin failed"; }
  done
  stage_pytorch "$home" "$work"

  mv "$home" "$OS_HOME"
  rm -rf "$work"
  log "assembled $OS_HOME in $((SECONDS - started)) s"
}

# --- security (TWINBERT_OPENSEARCH_PLUGINS with `security`) -----------------------------------

readonly SUBJECT_BASE='/O=twinbert-search/OU=test'
readonly NODE_DN='CN=twinbert-node,OU=test,O=twinbert-search'
readonly ADMIN_DN='CN=twinbert-admin,OU=test,O=twinbert-search'
readonly PASSWORD_ENVS=(TWINBERT_OPENSEARCH_ADMIN_PASSWORD TWINBERT_OPENSEARCH_READER_PASSWORD)

# sign_certificate NAME CN EXTENSIONS: NAME.pem and NAME-key.pem (PKCS#8, as the plugin wants),
# signed by the CA in $CERT_DIR.
sign_certificate() {
  local name=$1 cn=$2 dir=$CERT_DIR
  (umask 077 && openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$dir/$name-key.pem")
  openssl req -new -key "$dir/$name-key.pem" -subj "$SUBJECT_BASE/CN=$cn" -out "$dir/$name.csr"
  printf '%s\n' "$3" >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/root-ca.pem" -CAkey "$dir/root-ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 -extfile "$dir/$name.ext" \
    -out "$dir/$name.pem" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

# make_certificates: the node's own CA, its node and admin certificates (kept from one start to
# the next; made again when missing or within a day of expiring).
make_certificates() {
  command -v openssl >/dev/null || die "openssl is not installed (the secured node's certificates)"
  if [[ -f $CERT_DIR/admin.pem ]] \
    && openssl x509 -checkend 86400 -noout -in "$CERT_DIR/node.pem" >/dev/null 2>&1; then
    return 0
  fi
  log "making a CA, node and admin certificates in $CERT_DIR"
  rm -rf "$CERT_DIR"
  mkdir -p "$CERT_DIR"
  (umask 077 && openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$CERT_DIR/root-ca-key.pem")
  openssl req -x509 -new -key "$CERT_DIR/root-ca-key.pem" -sha256 -days 3650 \
    -subj "$SUBJECT_BASE/CN=twinbert-test-root-ca" \
    -addext 'basicConstraints=critical,CA:TRUE' -addext 'keyUsage=critical,keyCertSign,cRLSign' \
    -out "$CERT_DIR/root-ca.pem"
  local leaf='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment'
  sign_certificate node twinbert-node "$leaf
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost"
  sign_certificate admin twinbert-admin "$leaf
extendedKeyUsage=clientAuth"
}

# require_passwords: die, naming the variables, when a user's password is not set.
require_passwords() {
  local name missing=()
  for name in "${PASSWORD_ENVS[@]}"; do
    [[ -n ${!name:-} ]] || missing+=("$name")
  done
  ((${#missing[@]} == 0)) || die "the secured node needs ${missing[*]} (the users' passwords)"
}

# bcrypt JAVA ENV_NAME: the bcrypt hash of the password in $ENV_NAME, from the security plugin's
# Hasher, which reads it from the environment (never from the command line).
bcrypt() {
  local out hash
  out=$("$1/bin/java" -cp "$OS_HOME/plugins/opensearch-security/*:$OS_HOME/lib/*" \
    org.opensearch.security.tools.Hasher -env "$2" 2>&1) || {
    log "the security plugin's Hasher failed for $2"
    return 1
  }
  hash=$(grep -E '^\$2[aby]\$' <<<"$out" | tail -n 1)
  [[ -n $hash ]] || {
    log "the security plugin's Hasher printed no bcrypt hash for $2"
    return 1
  }
  printf '%s' "$hash"
}

# write_security_config JAVA: TLS settings in opensearch.yml, the certificates beside it, and
# the users and roles that the plugin loads into its index at the first start of a fresh data/.
write_security_config() {
  local config=$OS_HOME/config security=$OS_HOME/config/opensearch-security
  make_certificates
  cp "$CERT_DIR/root-ca.pem" "$CERT_DIR/node.pem" "$CERT_DIR/node-key.pem" "$config/"
  chmod 600 "$config/node-key.pem"
  cat >>"$config/opensearch.yml" <<EOF
plugins.security.ssl.transport.pemcert_filepath: node.pem
plugins.security.ssl.transport.pemkey_filepath: node-key.pem
plugins.security.ssl.transport.pemtrustedcas_filepath: root-ca.pem
plugins.security.ssl.transport.enforce_hostname_verification: false
plugins.security.ssl.http.enabled: true
plugins.security.ssl.http.pemcert_filepath: node.pem
plugins.security.ssl.http.pemkey_filepath: node-key.pem
plugins.security.ssl.http.pemtrustedcas_filepath: root-ca.pem
plugins.security.allow_unsafe_democertificates: false
plugins.security.allow_default_init_securityindex: true
plugins.security.nodes_dn: ['$NODE_DN']
plugins.security.authcz.admin_dn: ['$ADMIN_DN']
plugins.security.audit.type: noop
plugins.security.restapi.roles_enabled: [all_access]
EOF
  local admin_hash reader_hash
  admin_hash=$(bcrypt "$1" TWINBERT_OPENSEARCH_ADMIN_PASSWORD) || die "cannot hash the passwords"
  reader_hash=$(bcrypt "$1" TWINBERT_OPENSEARCH_READER_PASSWORD) || die "cannot hash the passwords"
  cat >"$security/internal_users.yml" <<EOF
# Written by scripts/opensearch-node.sh: the test node's users (passwords from the environment).
_meta:
  type: "internalusers"
  config_version: 2
admin:
  hash: "$admin_hash"
  reserved: true
  description: "all_access (TWINBERT_OPENSEARCH_ADMIN_PASSWORD)"
reader:
  hash: "$reader_hash"
  reserved: false
  description: "reads, never writes (TWINBERT_OPENSEARCH_READER_PASSWORD)"
EOF
  cat >"$security/roles.yml" <<'EOF'
# Written by scripts/opensearch-node.sh: a role that reads any index and writes none (it may
# read templates and pipelines too, for `twinbert-search opensearch status`).
_meta:
  type: "roles"
  config_version: 2
twinbert_read_only:
  reserved: false
  cluster_permissions:
    - "cluster_composite_ops_ro"
    - "cluster_monitor"
    - "indices:admin/index_template/get"
    - "cluster:admin/ingest/pipeline/get"
    - "cluster:admin/search/pipeline/get"
  index_permissions:
    - index_patterns: ["*"]
      allowed_actions:
        - "read"
        - "indices_monitor"
        - "indices:admin/get"
        - "indices:admin/aliases/get"
        - "indices:admin/mappings/get"
EOF
  cat >"$security/roles_mapping.yml" <<'EOF'
# Written by scripts/opensearch-node.sh: admin has every permission, reader reads.
_meta:
  type: "rolesmapping"
  config_version: 2
all_access:
  reserved: false
  users: ["admin"]
twinbert_read_only:
  reserved: false
  users: ["reader"]
EOF
}

# curl_node ARGS: curl to the node; with security, trusting its CA, with the admin's credentials
# handed over on curl's standard input (a config line, not an argument that `ps` would show).
curl_node() {
  if ((SECURED)); then
    local password=${TWINBERT_OPENSEARCH_ADMIN_PASSWORD:-}
    password=${password//\\/\\\\}
    password=${password//\"/\\\"}
    curl --cacert "$CERT_DIR/root-ca.pem" -K - "$@" <<<"user = \"admin:$password\""
  else
    curl "$@"
  fi
}

# --- running ------------------------------------------------------------------------------------

# The pid of the running node, or failure.
running_pid() {
  local pid
  [[ -f $PID_FILE ]] || return 1
  pid=$(<"$PID_FILE")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  # The pid may have been reused by another process since.
  grep -q 'org.opensearch.bootstrap.OpenSearch' "/proc/$pid/cmdline" 2>/dev/null || return 1
  printf '%s' "$pid"
}

port_in_use() { (: <>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() {
  if [[ -n ${TWINBERT_OPENSEARCH_PORT:-} ]]; then
    port_in_use "$TWINBERT_OPENSEARCH_PORT" && die "port $TWINBERT_OPENSEARCH_PORT is in use"
    printf '%s' "$TWINBERT_OPENSEARCH_PORT"
    return 0
  fi
  local port
  for ((port = DEFAULT_PORT; port < DEFAULT_PORT + 50; port++)); do
    if ! port_in_use "$port"; then
      printf '%s' "$port"
      return 0
    fi
  done
  die "no free port in $DEFAULT_PORT..$((DEFAULT_PORT + 49))"
}

# health URL: the cluster's status (green, yellow, red), or nothing while the node does not answer.
health() {
  local body
  body=$(curl_node -fsS --max-time 10 "$1/_cluster/health?wait_for_status=yellow&timeout=5s" 2>/dev/null) || return 0
  sed -n 's/.*"status":"\([a-z]*\)".*/\1/p' <<<"$body"
}

write_config() {
  local port=$1 java_home=$2 options=$OS_HOME/config/jvm.options.d
  cat >"$OS_HOME/config/opensearch.yml" <<EOF
# Written by scripts/opensearch-node.sh: a single test node on loopback, $SCHEME.
cluster.name: twinbert-search-test
node.name: twinbert-node
network.host: 127.0.0.1
http.port: $port
transport.port: 9350-9449
discovery.type: single-node
path.data: $DATA_DIR
path.logs: $LOG_DIR
cluster.routing.allocation.disk.threshold_enabled: false
EOF
  printf -- '-Xms%s\n-Xmx%s\n' "$HEAP" "$HEAP" >"$options/twinbert-heap.options"
  if [[ -d $OS_HOME/plugins/opensearch-ml ]]; then
    cat >>"$OS_HOME/config/opensearch.yml" <<EOF
plugins.ml_commons.only_run_on_ml_node: false
plugins.ml_commons.allow_registering_model_via_local_file: true
plugins.ml_commons.allow_registering_model_via_url: true
plugins.ml_commons.native_memory_threshold: 100
plugins.ml_commons.jvm_heap_memory_threshold: 100
EOF
    # DJL: its engines under data/ (the security manager lets plugins write there only), with
    # the staged PyTorch linked in; no telemetry, no downloads.
    mkdir -p "$DATA_DIR/djl-engines"
    if [[ -d $OS_HOME/djl-engines/pytorch ]]; then
      ln -sfn "$OS_HOME/djl-engines/pytorch" "$DATA_DIR/djl-engines/pytorch"
    fi
    printf -- '-DENGINE_CACHE_DIR=%s\n-DOPT_OUT_TRACKING=true\n-Dai.djl.offline=true\n' \
      "$DATA_DIR/djl-engines" >"$options/twinbert-ml.options"
  fi
  if ((SECURED)); then
    write_security_config "$java_home"
  fi
}

start() {
  local pid url
  ((SECURED)) && require_passwords
  if pid=$(running_pid); then
    url=$(<"$URL_FILE")
    [[ -n $(health "$url") ]] || die "node $pid at $url does not answer (stop it first)"
    log "already running (pid $pid)"
    printf '%s\n' "$url"
    return 0
  fi
  local started=$SECONDS
  assemble
  local java_home port
  java_home=$(pick_java)
  port=$(pick_port)
  url=$SCHEME://127.0.0.1:$port
  [[ ${TWINBERT_OPENSEARCH_KEEP_DATA:-0} == 1 ]] || rm -rf "$DATA_DIR"
  rm -rf "$NODE_DIR/tmp"
  mkdir -p "$DATA_DIR" "$LOG_DIR" "$NODE_DIR/tmp" "$RUN_DIR"
  rm -f "$PID_FILE" "$URL_FILE"
  write_config "$port" "$java_home"

  # As root, the node runs in a user namespace where it is uid 1000 (see the header).
  local launcher=()
  if (($(id -u) == 0)); then
    launcher=(unshare --user --map-user=1000 --map-group=1000 --)
  fi
  # ML Commons pins DJL to PyTorch 1.13.1 with a system property; the environment wins.
  local torch=''
  if [[ -f $OS_HOME/djl-engines/pytorch-version ]]; then
    torch=$(<"$OS_HOME/djl-engines/pytorch-version")
  fi
  log "starting OpenSearch $VERSION ($FLAVOR) with $java_home on $url"
  # setsid, unshare and bin/opensearch all exec, so $! is the JVM's pid. The node runs in the
  # foreground of a session of its own, so that a JVM that dies early is seen at once.
  (
    exec 9>&- # the lock stays with this script, not with the node
    cd "$OS_HOME"
    export OPENSEARCH_JAVA_HOME=$java_home OPENSEARCH_TMPDIR=$NODE_DIR/tmp
    unset OPENSEARCH_JAVA_OPTS JAVA_TOOL_OPTIONS
    if [[ -n $torch ]]; then
      export PYTORCH_VERSION=$torch OPT_OUT_TRACKING=true DJL_OFFLINE=true
    fi
    exec setsid "${launcher[@]}" bin/opensearch >"$LOG_DIR/console.log" 2>&1 </dev/null
  ) &
  pid=$!
  printf '%s\n' "$pid" >"$PID_FILE"
  printf '%s\n' "$url" >"$URL_FILE"

  # the wait counts from the launch: a first assembly (minutes on a busy machine) is no start-up
  local status='' launched=$SECONDS
  while ((SECONDS - launched < START_TIMEOUT)); do
    status=$(health "$url")
    [[ $status == green || $status == yellow ]] && break
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 60 "$LOG_DIR/console.log" >&2 || true
      rm -f "$PID_FILE" "$URL_FILE"
      die "OpenSearch exited during start-up (logs in $LOG_DIR)"
    fi
    sleep 1
  done
  if [[ $status != green && $status != yellow ]]; then
    stop || true
    die "no yellow or green health within $START_TIMEOUT s (logs in $LOG_DIR)"
  fi
  log "up ($status) in $((SECONDS - started)) s, pid $pid"
  printf '%s\n' "$url"
}

stop() {
  local pid waited=0
  if ! pid=$(running_pid); then
    rm -f "$PID_FILE" "$URL_FILE"
    log "not running"
    return 0
  fi
  kill -TERM "$pid"
  while kill -0 "$pid" 2>/dev/null && ((waited < STOP_TIMEOUT)); do
    sleep 1
    waited=$((waited + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "still running after $STOP_TIMEOUT s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE" "$URL_FILE"
  log "stopped (pid $pid)"
}

status() {
  local pid url
  if pid=$(running_pid); then
    url=$(<"$URL_FILE")
    printf 'running %s pid=%s health=%s home=%s\n' "$url" "$pid" "$(health "$url")" "$OS_HOME"
  else
    printf 'stopped home=%s\n' "$OS_HOME"
    return 3
  fi
}

url() {
  if ! running_pid >/dev/null; then
    log "not running"
    return 3
  fi
  cat "$URL_FILE"
}

# What start needs that this machine lacks, on one line (Maven and unzip only to assemble).
check() {
  local missing=() tool
  pick_java >/dev/null 2>&1 || missing+=("a JDK $JAVA_MIN..$JAVA_MAX for OpenSearch $VERSION (or set OPENSEARCH_JAVA_HOME)")
  local tools=(curl flock setsid)
  [[ -d $OS_HOME ]] || tools+=(mvn unzip)
  ((SECURED)) && tools+=(openssl)
  (($(id -u) == 0)) && tools+=(unshare)
  for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  if ((${#missing[@]})); then
    local IFS=,
    printf 'missing: %s\n' "${missing[*]}" | sed 's/,/, /g' >&2
    return 4
  fi
}

# start, stop and assemble hold a lock: two test processes starting the node at once share one.
with_lock() {
  mkdir -p "$NODE_DIR"
  exec 9>"$NODE_DIR/.lock"
  flock 9
  "$@"
}

case ${1:-} in
  start) with_lock start ;;
  stop) with_lock stop ;;
  status) status ;;
  url) url ;;
  assemble) with_lock assemble && printf '%s\n' "$OS_HOME" ;;
  check) check ;;
  certs)
    ((SECURED)) || die "certs: no security in TWINBERT_OPENSEARCH_PLUGINS ($PLUGIN_SET)"
    with_lock make_certificates && printf '%s\n' "$CERT_DIR"
    ;;
  *)
    sed -n '4,12s/^# \{0,1\}//p' "$0" >&2
    exit 2
    ;;
esac
