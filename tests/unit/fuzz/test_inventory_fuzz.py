"""Fuzz the inventory loader: any text or bytes load or give one ``InputError`` line naming the
file; never another exception. Bound: 300 examples, 2 s each, 60 s per test."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from estate.errors import InputError
from estate.loader import load_inventory
from skydd.lab import LAB_INVENTORY

from .runner import YAML_ALPHABET, fuzz_settings, mutations

LAB = LAB_INVENTORY.read_text()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("inventory-fuzz")


def _load(folder: Path, data: bytes) -> None:
    path = folder / "inv.yaml"
    path.write_bytes(data)
    try:
        load_inventory(path, home=folder)
    except InputError as err:
        msg = str(err)
        assert msg.startswith(f"{path}") and "\n" not in msg.strip(), msg


@st.composite
def mutated_lab(draw) -> bytes:
    text = mutations(draw, LAB, YAML_ALPHABET, steps=6)
    return text.encode("utf-8", "surrogatepass")


@pytest.mark.timeout(60)
@fuzz_settings(150)
@given(data=mutated_lab())
def test_mutations_of_the_lab_inventory(folder: Path, data: bytes) -> None:
    _load(folder, data)


@pytest.mark.timeout(60)
@fuzz_settings(150)
@given(data=st.one_of(st.binary(max_size=300),
                      st.text(st.sampled_from(YAML_ALPHABET), max_size=300).map(
                          lambda t: t.encode("utf-8", "surrogatepass"))))
def test_arbitrary_bytes_and_yaml_punctuation(folder: Path, data: bytes) -> None:
    _load(folder, data)
