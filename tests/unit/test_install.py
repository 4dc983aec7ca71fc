"""The install is the tested install: every dependency pinned in constraints.txt, which `make install` applies
to each pip call, within pyproject.toml's ranges (which still admit the GPU machine's torch 2.11 and
transformers 5.17), and this environment is the pinned one."""
import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def pins() -> dict[str, Version]:
    out = {}
    for n, line in enumerate((ROOT / "constraints.txt").read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
        assert m, f"constraints.txt:{n}: not a 'name==version' pin: {line!r}"
        out[canonicalize_name(m[1])] = Version(m[2])
    return out


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]


def test_every_dependency_is_pinned_within_its_range():
    pinned = pins()
    for req in requirements():
        name = canonicalize_name(req.name)
        assert name in pinned, f"{req.name} is not pinned in constraints.txt"
        assert req.specifier.contains(pinned[name], prereleases=True), f"{name}=={pinned[name]} is outside {req}"
    ranges = {canonicalize_name(r.name): r.specifier for r in requirements()}
    assert ranges["torch"].contains("2.11.0") and ranges["transformers"].contains("5.17.0")  # the GPU stack
    assert pinned["torch"] == Version("2.13.0")  # the CPU wheel on disk (its +cpu label is left off the pin)


def test_make_install_applies_the_constraints_to_every_pip_call():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(STAMP): pyproject.toml $(LOCK)\n", 1)[1].split("\n\n", 1)[0]
    installs = [line for line in recipe.splitlines() if "pip install" in line]
    assert len(installs) == 3 and all("-c $(LOCK)" in line for line in installs), installs
    assert "LOCK   := constraints.txt" in makefile and "\nlock:\n" in makefile


def test_this_environment_is_the_pinned_one():
    pinned = pins()
    for req in requirements():
        name = canonicalize_name(req.name)
        installed = Version(metadata.version(req.name))
        assert Version(installed.public) == pinned[name], (  # public: without a local label such as +cpu
            f"{name} {installed} is installed, constraints.txt pins {pinned[name]}: run `make install`")
