"""Java checks and artifact resolution fail with messages that say what to do."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipeline_lib.spark import jvm


def fake_java(tmp_path: Path, version_line: str) -> Path:
    home = tmp_path / "jdk"
    (home / "bin").mkdir(parents=True)
    java = home / "bin" / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return home


def test_old_java_is_refused_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path, 'openjdk version "11.0.2" 2019-01-15')))
    with pytest.raises(jvm.JavaError, match="Java 11; Spark 4 and Kafka 4 need Java 17 or newer"):
        jvm.check_java()


def test_java_8_version_scheme_is_read(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(fake_java(tmp_path, 'java version "1.8.0_392"')))
    assert jvm.java_major_version() == 8


def test_missing_java_says_what_to_install(monkeypatch):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(jvm.JavaError, match="Java not found: install a JDK 17"):
        jvm.java_executable()


def test_unreachable_registry_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    # A closed loopback port stands in for an unreachable Maven Central: nothing leaves the machine.
    from pipeline_lib.local.broker import free_port

    monkeypatch.setenv("XACT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(jvm.MAVEN_REPO_ENV, f"http://127.0.0.1:{free_port()}/maven2/")
    with pytest.raises(jvm.ArtifactResolutionError) as err:
        jvm.resolve_jars([("org.example", "nothing", "1.0")], tmp_path / "lib", timeout=120)
    message = str(err.value)
    assert "could not fetch org.example:nothing:1.0" in message and "resolve.log" in message
    assert not (tmp_path / "lib" / ".complete").exists()


@pytest.mark.parametrize(
    ("jar", "artifact"),
    [
        ("jackson-core-2.13.5.jar", "jackson-core"),
        ("spark-sql-kafka-0-10_2.13-4.2.0.jar", "spark-sql-kafka-0-10_2.13"),
        ("zstd-jni-1.5.7-3.jar", "zstd-jni"),
        ("delta-spark_4.2_2.13-4.4.0.jar", "delta-spark_4.2_2.13"),
    ],
)
def test_artifact_names(jar, artifact):
    assert jvm.artifact_name(jar) == artifact


def test_a_cache_folder_from_another_recipe_is_resolved_again(tmp_path, monkeypatch):
    # A stale folder (say, resolved with exclusions that broke the broker) must not be trusted.
    from pipeline_lib.local.broker import free_port

    monkeypatch.setenv("XACT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv(jvm.MAVEN_REPO_ENV, f"http://127.0.0.1:{free_port()}/maven2/")
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "stale-1.0.jar").write_text("")
    (lib / ".complete").write_text("another-recipe\nstale-1.0.jar\n")
    with pytest.raises(jvm.ArtifactResolutionError):
        jvm.resolve_jars([("org.example", "nothing", "1.0")], lib, timeout=120)
    assert not (lib / "stale-1.0.jar").exists()
