"""Safe artifacts: no code path can unpickle or evaluate text (a scan of the source, which is
shown to catch each pattern), a weights file carrying a pickled object is refused without
running it, a version whose files do not match its manifest is refused by name, and a
manifest or `current` link cannot lead a reader outside the artifacts."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import torch

from embeddings.checkpoint import WEIGHTS, load_state_dict
from engine.jobs.artifacts import CURRENT, VERSIONS, current_version, verify, write_manifest
from pipelines.errors import ArtifactError
from serving import Recommender
from tests.conftest import tally

REPO = Path(__file__).resolve().parents[1]
SCANNED = ("pipelines", "embeddings", "engine", "serving", "bench", "tests")
PICKLE_MODULES = {
    "pickle",
    "cPickle",
    "_pickle",
    "dill",
    "joblib",
    "shelve",
    "marshal",
    "cloudpickle",
}


def _dotted(node: ast.expr) -> str:
    """`a.b.c` of an attribute chain ('' when it is not one)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else ""
    return ""


def _kw_true(call: ast.Call, name: str) -> bool:
    return any(
        k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True
        for k in call.keywords
    )


def _aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> dotted origin for `import numpy as np`, `from torch import load as l`."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name: a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names}
    return names


def _full(name: str, aliases: dict[str, str]) -> str:
    head, _, rest = name.partition(".")
    origin = aliases.get(head, head)
    return f"{origin}.{rest}" if rest else origin


def _kw_not_false(call: ast.Call, name: str) -> bool:
    return any(
        k.arg == name and not (isinstance(k.value, ast.Constant) and k.value.value is False)
        for k in call.keywords
    )


def unsafe_calls(source: str, filename: str = "<source>") -> list[str]:
    """Every place in `source` that could load a pickle or run text as code: an import of a
    pickle module, `eval`/`exec`/`__import__`, `torch.load` without `weights_only=True`,
    `numpy.load` with `allow_pickle` other than False, `pandas.read_pickle`, `yaml.load`;
    names are followed through import aliases (`import torch as t`)."""
    tree = ast.parse(source, filename)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        where = f"{filename}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [
                f"{where} import {a.name}"
                for a in node.names
                if a.name.split(".")[0] in PICKLE_MODULES
            ]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in PICKLE_MODULES:
                found.append(f"{where} from {node.module} import")
        elif isinstance(node, ast.Call):
            name = _full(_dotted(node.func), aliases)
            if name in ("eval", "exec", "__import__", "builtins.eval", "builtins.exec"):
                found.append(f"{where} {name}(")
            elif name == "torch.load" and not _kw_true(node, "weights_only"):
                found.append(f"{where} torch.load( without weights_only=True")
            elif name == "numpy.load" and _kw_not_false(node, "allow_pickle"):
                found.append(f"{where} numpy.load(allow_pickle=...)")
            elif name in ("pandas.read_pickle", "yaml.load", "yaml.unsafe_load"):
                found.append(f"{where} {name}(")
    return found


PLANTED = {
    "import pickle\n": "import pickle",
    "import joblib as jl\n": "import joblib",
    "from pickle import loads\n": "from pickle import",
    "import torch\ntorch.load('m.pt')\n": "without weights_only",
    "import torch as t\nt.load('m.pt', weights_only=False)\n": "without weights_only",
    "from torch import load\nload('m.pt')\n": "without weights_only",
    "eval('1 + 1')\n": "eval(",
    "exec(code)\n": "exec(",
    "__import__('os')\n": "__import__(",
    "import builtins\nbuiltins.eval(s)\n": "builtins.eval(",
    "import numpy as np\nnp.load('a.npy', allow_pickle=True)\n": "allow_pickle",
    "from numpy import load\nload('a.npy', allow_pickle=flag)\n": "allow_pickle",
    "import pandas as pd\npd.read_pickle('f')\n": "read_pickle",
    "import yaml\nyaml.load(text)\n": "yaml.load(",
}
SAFE = (
    "import torch\nimport numpy as np\nimport polars as pl\n"
    "torch.load(p, map_location='cpu', weights_only=True)\n"
    "model.eval()\n"
    "pl.col('x').list.eval(pl.element())\n"
    "np.load('a.npy')\nnp.load('a.npy', allow_pickle=False)\n"
    "s = 'pickle.load(f) and eval(x) inside a string'\n"
)


@pytest.mark.parametrize("code", sorted(PLANTED))
def test_the_scan_catches_each_pattern(code: str) -> None:
    found = unsafe_calls(code)
    assert len(found) == 1 and PLANTED[code] in found[0], found


def test_the_scan_passes_safe_code() -> None:
    assert unsafe_calls(SAFE) == []


def test_no_source_file_can_load_a_pickle_or_evaluate_text() -> None:
    files = [p for top in SCANNED for p in sorted((REPO / top).rglob("*.py"))]
    assert len(files) > 50  # the scan reads the real tree
    found = [
        hit
        for p in files
        for hit in unsafe_calls(p.read_text(encoding="utf-8"), str(p.relative_to(REPO)))
    ]
    assert found == []
    tally("security: source files scanned", len(files))


class _Payload:
    """Unpickling this would run a command; a weights-only load must refuse it."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, ("touch " + str(Path(os.environ["RECENGINE_PWNED"])),)


def test_a_weights_file_with_a_pickled_object_is_refused_unrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pwned = tmp_path / "pwned"
    monkeypatch.setenv("RECENGINE_PWNED", str(pwned))
    torch.save({"w": torch.zeros(2), "x": _Payload()}, tmp_path / WEIGHTS)
    with pytest.raises(ArtifactError, match="weights-only") as info:
        load_state_dict(tmp_path)
    assert str(tmp_path / WEIGHTS) in str(info.value)
    assert not pwned.exists()


def _version(root: Path, name: str = "v1") -> Path:
    folder = root / VERSIONS / name
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "weights.bin").write_bytes(b"\x00" * 64)
    (folder / "lists.parquet").write_bytes(b"PAR1")
    write_manifest(folder, {"version": name})
    return folder


def test_a_file_that_does_not_match_the_manifest_is_refused(tmp_path: Path) -> None:
    folder = _version(tmp_path)
    verify(folder)
    (folder / "model" / "weights.bin").write_bytes(b"\x01" + b"\x00" * 63)
    with pytest.raises(ArtifactError, match="checksum does not match") as info:
        verify(folder)
    assert str(folder / "model" / "weights.bin") in str(info.value)
    with pytest.raises(ArtifactError, match="checksum does not match"):
        Recommender.load(folder)  # the online API checks before it loads anything
    (folder / "model" / "weights.bin").unlink()
    with pytest.raises(ArtifactError, match="missing"):
        verify(folder)


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path: Path) -> None:
    folder = _version(tmp_path)
    (folder / "model" / "extra.txt").write_text("slipped in after publishing")
    with pytest.raises(ArtifactError, match="not listed in the manifest") as info:
        verify(folder)
    assert str(folder / "model" / "extra.txt") in str(info.value)


@pytest.mark.parametrize("rel", ["../outside.bin", "/etc/hostname", "model/../../outside.bin"])
def test_a_manifest_cannot_point_outside_its_version(tmp_path: Path, rel: str) -> None:
    folder = _version(tmp_path)
    (tmp_path / VERSIONS / "outside.bin").write_bytes(b"x")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][rel] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="outside the version"):
        verify(folder)


def test_current_cannot_point_outside_the_versions_folder(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    _version(root)
    elsewhere = _version(tmp_path / "elsewhere", "v9")
    (root / CURRENT).symlink_to(elsewhere)
    with pytest.raises(ArtifactError, match="outside"):
        current_version(root)
    with pytest.raises(ArtifactError, match="outside"):
        Recommender.load(root)
