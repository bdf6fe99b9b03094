"""The pytest plugin of rnnzoo (entry point ``pytest11: rnnzoo``): a cell plugin's
contract test in three lines.

.. code-block:: python

    from my_package import MyCell

    def test_my_cell_keeps_the_contract(check_cell):
        check_cell(MyCell)

The ``check_cell`` fixture is :func:`rnnzoo.testing.check_cell`, failing the test
with the list of broken rules (and no traceback) instead of raising.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def check_cell() -> Callable[..., Any]:
    """``check_cell(CellClass, **settings)``: fail the test, naming every rule of
    the cell contract the cell breaks; return the rules' results when it keeps them.
    Takes the arguments of :func:`rnnzoo.testing.check_cell`."""
    from rnnzoo.testing import CellContractError
    from rnnzoo.testing import check_cell as run

    def check(factory: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return run(factory, **kwargs)
        except CellContractError as exc:
            pytest.fail(str(exc), pytrace=False)

    return check
