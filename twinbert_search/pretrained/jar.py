"""Finding a pretrained tower's jar: given on disk, in the local Maven repository, or fetched
with `mvn dependency:copy` (as `scripts/opensearch-node.sh` fetches OpenSearch); then reading
its members.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

from twinbert_search.errors import InputError, ModelError

DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.6.1"


def local_repository() -> Path:
    """TWINBERT_MAVEN_REPO (as the OpenSearch script reads it), else ~/.m2/repository."""
    repo = os.environ.get("TWINBERT_MAVEN_REPO")
    return Path(repo) if repo else Path.home() / ".m2" / "repository"


def local_jar(coordinates: str) -> Path:
    """Where Maven keeps `group:artifact:version`'s jar in the local repository."""
    group, artifact, version = coordinates.split(":")
    return (
        local_repository()
        / Path(*group.split("."))
        / artifact
        / version
        / f"{artifact}-{version}.jar"
    )


def fetch_jar(coordinates: str, work_dir: Path) -> Path:
    """The artifact's jar: from the local Maven repository, else copied by `mvn`.

    Raises one InputError naming the artifact when neither works.
    """
    cached = local_jar(coordinates)
    if cached.is_file():
        return cached
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InputError(
            f"cannot fetch {coordinates}: Maven (mvn) is not installed and the jar is not in "
            f"{local_repository()}; install Maven or pass --from-jar PATH"
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    cmd = [mvn, "-B", "-q", f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={coordinates}:jar"]
    cmd.append(f"-DoutputDirectory={work_dir}")
    if os.environ.get("TWINBERT_MAVEN_REPO"):
        cmd.append(f"-Dmaven.repo.local={local_repository()}")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    jars = sorted(work_dir.glob("*.jar"))
    if done.returncode != 0 or not jars:
        said = [ln for ln in (done.stdout + done.stderr).splitlines() if "ERROR" in ln]
        why = said[0].strip()[:200] if said else f"mvn exited {done.returncode}"
        raise InputError(f"cannot fetch {coordinates} with Maven ({why}); pass --from-jar PATH")
    return jars[0]


class Jar:
    """A jar's members by name (a zip file), each read at most once."""

    def __init__(self, path: str | Path, *, artifact: str) -> None:
        self.path = Path(path)
        self.artifact = artifact
        if not self.path.is_file():
            raise InputError(f"jar not found: {self.path} (expected {artifact})")
        try:
            with zipfile.ZipFile(self.path) as zf:
                self.names = {Path(n).name: n for n in zf.namelist() if not n.endswith("/")}
        except zipfile.BadZipFile:
            raise ModelError(f"{self.path} is not a jar (zip) file (expected {artifact})") from None

    def require(self, *members: str) -> None:
        missing = [m for m in members if m not in self.names]
        if missing:
            onnx_like = sorted(n for n in self.names if n.endswith((".onnx", ".json")))
            raise ModelError(
                f"{self.path} lacks {', '.join(missing)}: not the jar of {self.artifact} "
                f"(its model files: {', '.join(onnx_like) or 'none'})"
            )

    def extract(self, member: str, dst: Path) -> Path:
        """Copy one member to `dst` (streamed: a graph may be hundreds of MB)."""
        self.require(member)
        dst.parent.mkdir(parents=True, exist_ok=True)
        with (
            zipfile.ZipFile(self.path) as zf,
            zf.open(self.names[member]) as src,
            dst.open("wb") as out,
        ):
            shutil.copyfileobj(src, out, 1 << 20)
        return dst
