"""Oryx's rule: the layers meet only on topics and shared storage. streams/, batch/ and serving/
never import each other; all of them may import schemas/ (contracts), infra/ and lambdarec.settings."""

from __future__ import annotations

import ast

import pytest

from lambdarec.settings import PROJECT_ROOT

LAYERS = ("streams", "batch", "serving")


def _imports(path) -> set[str]:  # type: ignore[no-untyped-def]
    tree = ast.parse(path.read_text(), filename=str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("layer", LAYERS)
def test_layer_does_not_import_other_layers(layer: str) -> None:
    others = set(LAYERS) - {layer}
    offenders = {
        str(p.relative_to(PROJECT_ROOT)): sorted(_imports(p) & others)
        for p in (PROJECT_ROOT / layer).rglob("*.py")
        if _imports(p) & others
    }
    assert not offenders, f"{layer}/ imports another layer: {offenders}"


def test_schemas_import_no_layer() -> None:
    offenders = {
        str(p.relative_to(PROJECT_ROOT)): sorted(_imports(p) & set(LAYERS))
        for p in (PROJECT_ROOT / "schemas").rglob("*.py")
        if _imports(p) & set(LAYERS)
    }
    assert not offenders, offenders
