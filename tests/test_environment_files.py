"""The install descriptions (conda environment files, Makefile) against the versions constraints.txt pins.

No conda is available where the tests run, so this is a static check: it reads the YAML files the way
``conda env create`` does (conda dependencies, channels, and the ``pip:`` lines conda writes into a
requirements file and hands to pip) and checks them against constraints.txt and pyproject.toml. It
cannot prove that the conda solve or the pip downloads succeed; it does catch an environment that
would install other versions than the tested ones, as a file taking torch from the ``pytorch`` channel
did (that channel stopped at torch 2.5.1).

constraints.txt serves every supported Python: a package whose tested release does not install on one
of them has one line per range of Pythons, split by ``python_version`` markers. The checks below make
sure that each supported Python gets exactly one pin of every package (the pip resolve and downloads
under each interpreter are checked by really installing, as the README says).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from support import REPO

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYPI_INDEX = "https://pypi.org/simple"
ENV_FILES = {"environment.yml": "cuda", "environment-cpu.yml": "cpu"}
# Conda channels that ship their own torch builds; their packages mix badly with conda-forge's.
FORBIDDEN_CHANNELS = {"pytorch", "nvidia", "pytorch-nightly", "defaults"}
TORCH_PACKAGES = {"torch", "pytorch", "torchvision", "pytorch-cuda", "pytorch-cpu", "cpuonly"}
# The Python minor versions make install is run with (README); the lowest is pyproject's requires-python.
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def python_environment(python: str) -> dict[str, str]:
    """The marker environment of CPython ``python`` (``'3.10'``) for evaluating ``python_version`` markers."""
    return {"python_version": python, "python_full_version": python + ".0"}


def marker_variables(marker: Marker) -> set[str]:
    """The environment names a marker reads: ``python_version >= "3.11"`` -> ``{'python_version'}``."""
    unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", " ", str(marker))
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_.]*", unquoted)) - {"and", "or", "not", "in"}


def constraint_lines(text: str, where: str = "constraints.txt") -> list[tuple[int, Requirement]]:
    """Every pin of a constraints file with its line number; each must be ``name==version``, optionally
    with a marker on ``python_version`` alone (so which line a Python takes does not depend on the host)."""
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        specs = list(requirement.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", f"{where}:{number}: expected name==version, got {line!r}"
        assert not requirement.extras and not requirement.url, f"{where}:{number}: a pin takes no extras or URL"
        if requirement.marker is not None:
            variables = marker_variables(requirement.marker)
            assert variables == {"python_version"}, (
                f"{where}:{number}: a pin's marker may test python_version only, found {sorted(variables)}"
            )
        lines.append((number, requirement))
    return lines


def coverage_problems(lines: list[tuple[int, Requirement]], pythons=SUPPORTED_PYTHONS) -> list[str]:
    """Each package must have exactly one pin for each supported Python: one line without a marker, or
    lines whose markers split the supported Pythons between them without a gap or an overlap."""
    by_name: dict[str, list[tuple[int, Requirement]]] = {}
    for number, requirement in lines:
        by_name.setdefault(canonicalize_name(requirement.name), []).append((number, requirement))
    problems = []
    for name, pins in sorted(by_name.items()):
        for python in pythons:
            applying = [
                number for number, requirement in pins
                if requirement.marker is None or requirement.marker.evaluate(python_environment(python))
            ]
            if len(applying) != 1:
                found = f"lines {applying}" if applying else "no line"
                problems.append(f"{name}: Python {python} gets {found}, expected exactly one pin")
    return problems


def read_constraints(
    path: Path = REPO / "constraints.txt", python: str | None = None
) -> tuple[dict[str, Version], str]:
    """The ``name==version`` pins of constraints.txt (canonical names) that apply to Python ``python``
    (default: the tested Python), and the tested Python version its header names."""
    text = path.read_text()
    tested_python = re.search(r"Python (\d+\.\d+)", text)
    assert tested_python, f"{path}: the header must name the tested Python version (e.g. 'Python 3.11')"
    environment = python_environment(python or tested_python.group(1))
    pins: dict[str, Version] = {}
    for number, requirement in constraint_lines(text, str(path)):
        if requirement.marker is None or requirement.marker.evaluate(environment):
            name = canonicalize_name(requirement.name)
            assert name not in pins, f"{path}:{number}: a second pin of {name} for {environment}"
            pins[name] = Version(next(iter(requirement.specifier)).version)
    return pins, tested_python.group(1)


def read_pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def conda_spec(dependency: str) -> tuple[str, str]:
    """``'python=3.11'`` -> ``('python', '3.11')``; ``'pip'`` -> ``('pip', '')``."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*", dependency)
    assert match, f"unreadable conda dependency {dependency!r}"
    return match.group(1), match.group(2)


def pip_lines(environment: dict) -> list[list[str]]:
    """The ``pip:`` section, each line split like pip splits a requirements-file line."""
    sections = [d["pip"] for d in environment["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(sections) == 1, "expected exactly one 'pip:' section"
    return [shlex.split(line) for line in sections[0]]


def option_values(lines: list[list[str]], *names: str) -> list[str]:
    values = []
    for words in lines:
        for index, word in enumerate(words):
            if word in names and index + 1 < len(words):
                values.append(words[index + 1])
            for name in names:
                if name.startswith("--") and word.startswith(name + "="):
                    values.append(word.split("=", 1)[1])
    return values


def environment_problems(environment: dict, variant: str, env_dir: Path) -> list[str]:
    """Everything in a conda environment description that would not give the tested versions."""
    pins, tested_python = read_constraints()  # the pins for the tested Python, the one the file must take
    requires_python = SpecifierSet(read_pyproject().get("requires-python", ""))
    problems = []

    channels = environment.get("channels") or []
    for channel in channels:
        if channel in FORBIDDEN_CHANNELS:
            problems.append(f"channel {channel!r}: packages come from conda-forge and pip only")
    if "conda-forge" not in channels:
        problems.append("channel 'conda-forge' missing")

    conda_deps = [conda_spec(d) for d in environment.get("dependencies", []) if isinstance(d, str)]
    names = [name for name, _ in conda_deps]
    if "pip" not in names:
        problems.append("conda dependency 'pip' missing: the pip section needs the environment's own pip")
    for name, spec in conda_deps:
        if name == "python":
            version = spec.lstrip("=")
            if version != tested_python:
                problems.append(f"python {spec!r}: constraints.txt was tested with Python {tested_python}")
            if not requires_python.contains(version + ".0"):
                problems.append(f"python {spec!r} is outside pyproject's requires-python {requires_python}")
        elif name in TORCH_PACKAGES:
            problems.append(f"conda dependency {name!r}: torch and torchvision must come from pip with constraints.txt")
        elif canonicalize_name(name) in pins and spec.lstrip("=") != str(pins[canonicalize_name(name)]):
            problems.append(
                f"conda dependency {name}{spec}: constraints.txt pins {name}=={pins[canonicalize_name(name)]}"
            )
    if "python" not in names:
        problems.append("conda dependency 'python' missing")

    lines = pip_lines(environment)
    constraint_files = option_values(lines, "-c", "--constraint")
    if constraint_files != ["constraints.txt"]:
        problems.append(f"pip section must use '-c constraints.txt' once, found {constraint_files}")
    elif not (env_dir / "constraints.txt").is_file():
        problems.append(f"constraints.txt is not next to the environment file in {env_dir}")
    editable = option_values(lines, "-e", "--editable")
    if len(editable) != 1 or not re.fullmatch(r"\.(\[[\w,-]+\])?", editable[0]):
        problems.append(f"pip section must install the project itself ('-e .[test]'), found {editable}")
    bare = [words for words in lines if words and not words[0].startswith("-")]
    if bare:
        problems.append(f"pip section lines other than options and the project: {bare} (add them to pyproject.toml)")

    index = option_values(lines, "-i", "--index-url")
    extra = option_values(lines, "--extra-index-url")
    if variant == "cpu":
        if index != [CPU_INDEX] or extra != [PYPI_INDEX]:
            problems.append(
                f"CPU variant must take torch from {CPU_INDEX} and the rest from {PYPI_INDEX}; "
                f"found index {index}, extra {extra}"
            )
    elif index or extra:
        problems.append(f"CUDA variant takes every package from PyPI; found index {index}, extra {extra}")
    return problems


@pytest.mark.parametrize("file_name, variant", sorted(ENV_FILES.items()))
def test_environment_file_gives_the_tested_versions(file_name, variant):
    path = REPO / file_name
    environment = yaml.safe_load(path.read_text())
    assert environment_problems(environment, variant, path.parent) == []


def test_environment_names_differ():
    names = [yaml.safe_load((REPO / f).read_text())["name"] for f in ENV_FILES]
    assert len(set(names)) == len(names), names


def test_check_catches_the_pytorch_channel_file():
    # The shape of the file the check replaces: torch from the pytorch channel, unpinned.
    old = {
        "name": "mtl-ablate",
        "channels": ["pytorch", "nvidia", "conda-forge"],
        "dependencies": [
            "python=3.11", "pytorch=2.*", "torchvision=0.*", "pytorch-cuda=12.4", "numpy=2.*", "pip",
            {"pip": ["wandb>=0.18", "-e .[test]"]},
        ],
    }
    problems = "\n".join(environment_problems(old, "cuda", REPO))
    for expected in ("channel 'pytorch'", "channel 'nvidia'", "'pytorch'", "'torchvision'", "'pytorch-cuda'",
                     "constraints.txt pins numpy==", "-c constraints.txt", "wandb>=0.18"):
        assert expected in problems, (expected, problems)


def test_constraints_pin_every_package_once_for_each_supported_python():
    lines = constraint_lines((REPO / "constraints.txt").read_text())
    assert coverage_problems(lines) == []


def test_coverage_check_catches_gaps_overlaps_and_host_dependent_markers():
    def problems(text: str) -> list[str]:
        return coverage_problems(constraint_lines(text))

    assert problems('numpy==2.4.6; python_version >= "3.11"\nnumpy==2.2.6; python_version < "3.11"\nsix==1.17.0') == []
    # The 3.10 line missing: the failure make install had on Python 3.10.
    assert problems('numpy==2.4.6; python_version >= "3.11"') == [
        "numpy: Python 3.10 gets no line, expected exactly one pin"
    ]
    # Overlapping ranges, and an unmarked pin next to a marked one.
    assert problems('numpy==2.4.6; python_version >= "3.11"\nnumpy==2.2.6; python_version < "3.12"') == [
        "numpy: Python 3.11 gets lines [1, 2], expected exactly one pin"
    ]
    assert len(problems('numpy==2.4.6\nnumpy==2.2.6; python_version < "3.11"')) == 1
    # A gap in the middle: 3.12 gets nothing.
    assert problems('scipy==1.17.1; python_version == "3.11" or python_version >= "3.13"\n'
                    'scipy==1.15.3; python_version < "3.11"') == [
        "scipy: Python 3.12 gets no line, expected exactly one pin"
    ]
    # Markers on anything but python_version would make the chosen pin depend on the machine.
    with pytest.raises(AssertionError, match="python_version only"):
        constraint_lines('numpy==2.2.6; sys_platform == "linux"')
    with pytest.raises(AssertionError, match="python_version only"):
        constraint_lines('numpy==2.2.6; python_full_version < "3.11"')
    with pytest.raises(AssertionError, match="expected name==version"):
        constraint_lines("numpy>=2.2")


def test_supported_pythons_are_the_ones_pyproject_and_the_readme_name():
    requires_python = SpecifierSet(read_pyproject()["requires-python"])
    lowest = Version(SUPPORTED_PYTHONS[0])
    assert not requires_python.contains(f"{lowest.major}.{lowest.minor - 1}.0"), requires_python
    for python in SUPPORTED_PYTHONS:
        assert requires_python.contains(python + ".0"), (python, requires_python)
    _, tested_python = read_constraints()
    assert tested_python in SUPPORTED_PYTHONS
    assert f"Python {SUPPORTED_PYTHONS[0]} to {SUPPORTED_PYTHONS[-1]}" in (REPO / "README.md").read_text()


@pytest.mark.parametrize("python", SUPPORTED_PYTHONS)
def test_constraints_satisfy_pyproject_and_pin_torch(python):
    pins, _ = read_constraints(python=python)
    project = read_pyproject()
    environment = python_environment(python)
    requirements = [(dependency, "") for dependency in project["dependencies"]]
    requirements += [(dependency, extra) for extra, dependencies in project.get("optional-dependencies", {}).items()
                     for dependency in dependencies]
    for dependency, extra in requirements:
        requirement = Requirement(dependency)
        if requirement.marker is not None and not requirement.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"constraints.txt does not pin {requirement.name} for Python {python}"
        assert requirement.specifier.contains(pins[name]), (
            f"{name}=={pins[name]} (Python {python}) does not satisfy {dependency!r}"
        )
    assert pins["torch"] == Version("2.14.1") and pins["torchvision"] == Version("0.29.1")


def test_cpu_wheel_labels_satisfy_the_pins_and_win_over_pypi():
    # PyTorch's CPU index labels its wheels 2.14.1+cpu: PEP 440 lets a local label match ==2.14.1, and
    # the labelled version sorts above PyPI's plain 2.14.1, so pip picks the CPU build with both indexes.
    pins, _ = read_constraints()
    for name in ("torch", "torchvision"):
        cpu = Version(f"{pins[name]}+cpu")
        assert SpecifierSet(f"=={pins[name]}").contains(cpu)
        assert cpu > pins[name]


def make_install_commands(tmp_path: Path, **variables: str) -> str:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "TORCH_INDEX_URL")}
    args = ["make", "-n", "-B", "install", f"VENV={tmp_path / 'venv'}"] + [f"{k}={v}" for k, v in variables.items()]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, check=True).stdout


def test_make_install_keeps_pips_own_indexes_by_default(tmp_path):
    commands = make_install_commands(tmp_path)
    install = [line for line in commands.splitlines() if "-c constraints.txt" in line]
    assert len(install) == 1, commands
    assert "--index-url" not in install[0] and "--extra-index-url" not in install[0]


def test_make_install_with_torch_index_url_adds_pypi_for_the_rest(tmp_path):
    commands = make_install_commands(tmp_path, TORCH_INDEX_URL=CPU_INDEX)
    install = [line for line in commands.splitlines() if "-c constraints.txt" in line]
    assert len(install) == 1, commands
    words = shlex.split(install[0])
    assert words[words.index("--index-url") + 1] == CPU_INDEX
    assert words[words.index("--extra-index-url") + 1] == PYPI_INDEX
