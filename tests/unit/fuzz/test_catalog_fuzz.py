"""Fuzz the catalog loader: mutated ``control.yaml`` text and arbitrary YAML-shaped values give a
``Catalog`` or one ``CatalogError`` (exit 2); never another exception. Bound: 250 examples, 2 s
each, 60 s per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from policies import CatalogError, load_catalog
from policies.loader import CATALOG_DIR, load_frameworks, parse_control

from .runner import YAML_ALPHABET, fuzz_settings, mutations

EXAMPLE = CATALOG_DIR / "d" / "d.key-files-private" / "control.yaml"
TEXT = EXAMPLE.read_text()
FRAMEWORKS = load_frameworks()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("catalog-fuzz") / "catalog"
    (root / "d" / "d.key-files-private").mkdir(parents=True)
    return root


@st.composite
def mutated_control(draw) -> bytes:
    return mutations(draw, TEXT, YAML_ALPHABET, steps=5).encode("utf-8", "surrogatepass")


@pytest.mark.timeout(60)
@fuzz_settings(150)
@given(data=mutated_control())
def test_mutated_control_files(root: Path, data: bytes) -> None:
    (root / "d" / "d.key-files-private" / "control.yaml").write_bytes(data)
    try:
        load_catalog(root)
    except CatalogError as err:
        assert err.exit_code == 2 and "\n" not in str(err).strip()


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                    st.sampled_from(["d", "d.key-files-private", "high", "eq", "all", "any", "path",
                                     "files_private", "iso27001-2022", "A.5.17", "nis2", "21.2.j"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["op", "path", "value", "all", "any", "not", "python", "evidence",
                                     "when", "playbook", "tags", "disruptive", "x"]), inner, max_size=4)),
    max_leaves=20)


@st.composite
def control_docs(draw) -> dict:
    doc = {k: draw(VALUES) for k in ("id", "level", "title", "description", "rationale", "severity",
                                     "references", "applies_to", "check", "remediation")}
    doc["id"], doc["level"] = "d.key-files-private", "d"
    for key in ("title", "description", "rationale"):
        doc[key] = draw(st.one_of(st.just("Text"), VALUES))
    return doc


@pytest.mark.timeout(60)
@fuzz_settings(150)
@given(doc=control_docs())
def test_arbitrary_values_in_every_field(doc: dict) -> None:
    try:
        parse_control(doc, EXAMPLE, FRAMEWORKS)
    except CatalogError as err:
        assert err.exit_code == 2
