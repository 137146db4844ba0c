"""The CLI's help, the OpenAPI document and every saved file format stay as recorded in tests/contracts/
(see tests/public_contracts.py for how to record a change that is meant)."""

from __future__ import annotations

import pytest

from tests.public_contracts import CONTRACTS, snapshot

RECORDED = sorted(p.name for p in CONTRACTS.iterdir())


@pytest.fixture(scope="module")
def current() -> dict[str, str]:
    return snapshot()


def test_every_contract_is_recorded(current: dict[str, str]) -> None:
    assert sorted(current) == RECORDED


@pytest.mark.parametrize("name", RECORDED)
def test_contract_unchanged(name: str, current: dict[str, str]) -> None:
    recorded = (CONTRACTS / name).read_text(encoding="utf-8")
    assert current[name] == recorded, (
        f"{name} changed; if meant, run `.venv/bin/python -m tests.public_contracts --write` and review the diff"
    )
