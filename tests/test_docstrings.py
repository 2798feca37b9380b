"""Every docstring example in the package runs and prints what it says (doctest)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest
import torch

import ntkmonitor

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(ntkmonitor.__path__, prefix="ntkmonitor.") if name != "ntkmonitor.cli"
)


@pytest.mark.parametrize("module_name", ["ntkmonitor", *MODULES])
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    torch.manual_seed(0)
    public = {name: getattr(ntkmonitor, name) for name in ntkmonitor.__all__}
    globs = {"torch": torch, "ntkmonitor": ntkmonitor, **public, **vars(module)}
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module_name, globs=globs):
        if test.lineno is None:  # re-exported objects are tested in their own module
            continue
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"
