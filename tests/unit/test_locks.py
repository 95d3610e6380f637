"""The locks in locks/ agree with the requirements files they are resolved from (`make lock`), carry
hashes, and agree with each other, for every environment the project supports."""
from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
# each lock and the requirements files it is resolved from (scripts/lock.sh)
LOCKS = {
    "runtime.txt": ("requirements.txt",),
    "dev.txt": ("requirements.txt", "requirements-dev.txt"),
    "chatterbox.txt": ("requirements.txt", "requirements-chatterbox.txt"),
    "all.txt": ("requirements.txt", "requirements-dev.txt", "requirements-chatterbox.txt"),
    "chatterbox-tts.txt": ("requirements-chatterbox-tts.txt",),
}
PLATFORMS = ({"sys_platform": "linux", "platform_machine": "x86_64", "platform_system": "Linux"},
             {"sys_platform": "linux", "platform_machine": "aarch64", "platform_system": "Linux"},
             {"sys_platform": "darwin", "platform_machine": "arm64", "platform_system": "Darwin"})
PYTHONS = ("3.10", "3.11", "3.12")


def environments() -> list[dict[str, str]]:
    return [{**platform, "python_version": py, "python_full_version": f"{py}.0",
             "implementation_name": "cpython", "platform_python_implementation": "CPython"}
            for platform in PLATFORMS for py in PYTHONS]


def declared(name: str) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in (ROOT / name).read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def lock_entries(name: str) -> list[tuple[Requirement, list[str]]]:
    """(pinned requirement, its hashes) for each entry of a lock: `pkg==1.0 ; marker \\` + hash lines."""
    entries: list[tuple[Requirement, list[str]]] = []
    for line in (ROOT / "locks" / name).read_text().splitlines():
        stripped = line.strip().rstrip("\\").strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("--hash="):
            entries[-1][1].append(stripped.removeprefix("--hash="))
        else:
            entries.append((Requirement(stripped), []))
    return entries


def pins(name: str, env: dict[str, str]) -> dict[str, str]:
    """The version each package gets from a lock in one environment."""
    found = {}
    for req, _ in lock_entries(name):
        if req.marker is None or req.marker.evaluate(env):
            (spec,) = req.specifier
            assert spec.operator == "==", f"{name}: {req} is not an exact pin"
            found[canonicalize_name(req.name)] = spec.version
    return found


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_every_locked_package_is_pinned_with_hashes(lock):
    entries = lock_entries(lock)
    assert entries
    for req, hashes in entries:
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", req
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), req


@pytest.mark.parametrize("lock", sorted(LOCKS))
@pytest.mark.parametrize("env", environments(), ids=lambda e: f"{e['sys_platform']}-{e['platform_machine']}-"
                                                            f"py{e['python_version']}")
def test_lock_satisfies_what_its_requirements_declare(lock, env):
    pinned = pins(lock, env)
    for source in LOCKS[lock]:
        for req in declared(source):
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            name = canonicalize_name(req.name)
            assert name in pinned, f"{source}: {req} is missing from locks/{lock} (run make lock)"
            assert req.specifier.contains(pinned[name], prereleases=True), (
                f"{source}: {req} but locks/{lock} pins {pinned[name]} (run make lock)")


@pytest.mark.parametrize("env", environments()[:3], ids=lambda e: f"py{e['python_version']}")
def test_locks_agree_where_they_overlap(env):
    """make test installs runtime, dev and chatterbox into one virtualenv: one version each."""
    everything = pins("all.txt", env)
    for lock in ("runtime.txt", "dev.txt", "chatterbox.txt"):
        for name, version in pins(lock, env).items():
            assert everything.get(name) == version, f"locks/{lock}: {name}=={version}, all.txt: {everything.get(name)}"
    runtime = pins("runtime.txt", env)
    for lock in ("dev.txt", "chatterbox.txt"):
        assert runtime.items() <= pins(lock, env).items(), f"locks/{lock} does not hold the runtime's pins"


def test_torch_and_torchaudio_are_locked_as_one_release():
    for env in environments():
        pinned = pins("chatterbox.txt", env)
        assert pinned["torch"] == pinned["torchaudio"], pinned["torchaudio"]


def test_supported_pythons_are_the_locked_ones():
    """setup.cfg's python_requires and the environments make lock resolves for say the same thing."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    supported = SpecifierSet(config["options"]["python_requires"])
    assert [py for py in ("3.9", *PYTHONS, "3.13") if supported.contains(f"{py}.0")] == list(PYTHONS)
    tomllib = pytest.importorskip("tomllib")         # Python 3.11+
    resolved = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["uv"]["environments"]
    for env in environments():
        assert any(Marker(marker).evaluate(env) for marker in resolved), env
