"""Java checks and JVM artifact resolution from Maven Central into a cache outside the clone.

Resolution uses the Apache Ivy jar that ships inside the pyspark wheel (the same resolver Spark
uses for `spark.jars.packages`), so a user needs only Python and Java, not Maven. Everything lands
under `~/.cache/xact-pipeline` (override with XACT_CACHE_DIR): a second run, and a fresh clone on
the same machine, resolve nothing and work offline.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from xml.sax.saxutils import quoteattr

from pipeline_lib.errors import PipelineError
from pipeline_lib.versions import MIN_JAVA_MAJOR

CACHE_DIR_ENV = "XACT_CACHE_DIR"


class JavaError(PipelineError, RuntimeError):
    """Java is missing or too old."""


class ArtifactResolutionError(PipelineError, RuntimeError):
    """JVM artifacts could not be fetched from Maven Central."""


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_DIR_ENV) or "~/.cache/xact-pipeline").expanduser()


def ivy_home() -> Path:
    """Ivy's home for Spark's `spark.jars.ivy`; its cache/ is shared with the broker resolution."""
    return cache_root() / "ivy"


MAVEN_CENTRAL = "https://repo1.maven.org/maven2/"
MAVEN_REPO_ENV = "XACT_MAVEN_REPO"  # a corporate mirror of Maven Central, if the machine has one


def ivy_settings_file() -> Path:
    """Ivy settings with Maven Central as the only remote, shared by Spark and the broker resolution.

    Spark's default chain also asks spark-packages.org and the local ~/.m2; one remote keeps
    resolution predictable, and a resolved module is read from the cache without the network.
    """
    path = ivy_home() / "ivysettings.xml"
    repo = os.environ.get(MAVEN_REPO_ENV) or MAVEN_CENTRAL
    text = (
        "<ivysettings>\n"
        '  <settings defaultResolver="central"/>\n'
        f'  <caches defaultCacheDir="{ivy_home() / "cache"}"/>\n'
        "  <resolvers>\n"
        f'    <ibiblio name="central" m2compatible="true" root="{repo}"/>\n'
        "  </resolvers>\n"
        "</ivysettings>\n"
    )
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def java_executable() -> str:
    """The `java` of JAVA_HOME if set, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise JavaError(
            f"Java not found: install a JDK {MIN_JAVA_MAJOR} or newer (e.g. `apt-get install openjdk-17-jdk-headless`) "
            "and put it on PATH or set JAVA_HOME"
        )
    return found


def java_major_version(java: str | None = None) -> int:
    java = java or java_executable()
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise JavaError(f"could not run {java} -version: {exc}") from exc
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        raise JavaError(f"could not read the Java version from `{java} -version`: {out.stderr.strip()[:200]}")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def check_java() -> str:
    """Return the java executable, or raise JavaError saying what to install."""
    java = java_executable()
    major = java_major_version(java)
    if major < MIN_JAVA_MAJOR:
        raise JavaError(
            f"{java} is Java {major}; Spark 4 and Kafka 4 need Java {MIN_JAVA_MAJOR} or newer. "
            "Install a newer JDK and set JAVA_HOME to it"
        )
    return java


def ivy_jar() -> Path:
    spec = importlib.util.find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise ArtifactResolutionError("pyspark is not installed: run `make install` first")
    jars = sorted((Path(next(iter(spec.submodule_search_locations))) / "jars").glob("ivy-*.jar"))
    if not jars:
        raise ArtifactResolutionError("no ivy jar inside the pyspark installation; reinstall pyspark")
    return jars[-1]


# What every Spark installation already ships; excluded from Spark packages as Spark's own
# resolver does, so no second Scala library or Spark module lands on the classpath. (The Kafka
# broker is a plain JVM program and needs its Scala library: no exclusions there.)
SPARK_PROVIDED_EXCLUDES = (
    '    <exclude org="org.scala-lang" matcher="exact"/>\n'
    '    <exclude org="org.apache.spark" matcher="regexp" module="spark-(catalyst|core|graphx|kvstore|launcher'
    "|mllib|mllib-local|network-common|network-shuffle|repl|sketch|sql|sql-api|streaming|tags|unsafe"
    '|common-utils|variant|connect.*)_.*"/>\n'
)


def resolve_jars(
    dependencies: list[tuple[str, str, str]], dest: Path, *, excludes: str = "", timeout: float = 900
) -> list[Path]:
    """Fetch the dependencies and their runtime closure into `dest` (once; later calls read the folder).

    Args:
        dependencies: (group, artifact, version) triples.
        dest: the folder that receives the jars; a `.complete` marker records a finished resolution.
        excludes: Ivy <exclude> elements, e.g. SPARK_PROVIDED_EXCLUDES for Spark packages.
    """
    deps = "\n".join(
        f'    <dependency org={quoteattr(g)} name={quoteattr(a)} rev={quoteattr(v)} conf="default->default"/>'
        for g, a, v in dependencies
    )
    module = (
        '<ivy-module version="2.0">\n  <info organisation="xact" module="jars"/>\n'
        '  <configurations><conf name="default"/></configurations>\n'
        f"  <dependencies>\n{deps}\n{excludes}  </dependencies>\n</ivy-module>\n"
    )
    # The marker records which recipe filled the folder: a changed recipe resolves again.
    recipe = hashlib.sha256(module.encode()).hexdigest()
    marker = dest / ".complete"
    if marker.is_file() and marker.read_text().split("\n", 1)[0] == recipe:
        return sorted(dest.glob("*.jar"))
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    ivy_xml = dest / "ivy.xml"
    ivy_xml.write_text(module)
    log = dest / "resolve.log"
    cmd = [
        check_java(),
        "-cp",
        str(ivy_jar()),
        "org.apache.ivy.Main",
        "-ivy",
        str(ivy_xml),
        "-confs",
        "default",
        "-settings",
        str(ivy_settings_file()),
        "-retrieve",
        f"{dest}/[artifact]-[revision](-[classifier]).[ext]",
    ]
    with log.open("w") as out:
        try:
            proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ArtifactResolutionError(
                f"resolving {dependencies} from Maven Central took over {timeout:.0f}s; is the registry "
                f"reachable? Details in {log}"
            ) from None
    text = log.read_text(errors="replace")
    if proc.returncode != 0 or "UNRESOLVED DEPENDENCIES" in text or "unresolved dependency" in text:
        wanted = ", ".join(":".join(d) for d in dependencies)
        raise ArtifactResolutionError(
            f"could not fetch {wanted} from {os.environ.get(MAVEN_REPO_ENV) or MAVEN_CENTRAL}. "
            "The first setup needs access to Maven Central (later runs use the cache in "
            f"{cache_root()}); check the network or proxy. Details in {log}"
        )
    jars = sorted(dest.glob("*.jar"))
    if not jars:
        raise ArtifactResolutionError(f"resolution finished but no jar landed in {dest}; details in {log}")
    marker.write_text(recipe + "\n" + "\n".join(j.name for j in jars) + "\n")
    return jars


def spark_package_jars(packages: list[str]) -> list[Path]:
    """Jars of Maven packages ("group:artifact:version") for `spark.jars`, resolved once into the cache.

    Artifacts that the pyspark installation already ships, in any version, are left out.
    """
    deps = [tuple(p.split(":")) for p in packages]
    if any(len(d) != 3 for d in deps):
        raise ArtifactResolutionError(f"expected group:artifact:version, got {packages}")
    key = "_".join(sorted(p.replace(":", "-") for p in packages))
    jars = resolve_jars(deps, cache_root() / "spark-jars" / key, excludes=SPARK_PROVIDED_EXCLUDES)  # type: ignore[arg-type]
    spec = importlib.util.find_spec("pyspark")
    shipped: set[str] = set()
    if spec is not None and spec.submodule_search_locations:
        jar_dir = Path(next(iter(spec.submodule_search_locations))) / "jars"
        shipped = {artifact_name(j.name) for j in jar_dir.glob("*.jar")}
    # pyspark's copy of an artifact wins over any other version a package asks for.
    return [j for j in jars if artifact_name(j.name) not in shipped]


def artifact_name(jar_file: str) -> str:
    """'jackson-core-2.13.5.jar' -> 'jackson-core'."""
    match = re.match(r"^(.+?)-\d+(?:\.[0-9A-Za-z]+)+(?:-[A-Za-z0-9.]+)?\.jar$", jar_file)
    return match.group(1) if match else jar_file.removesuffix(".jar")
