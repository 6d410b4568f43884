"""The one method registry: names by family, aliases, named errors, import errors pass through."""

import pytest

from ppltk import _methods
from ppltk.errors import ArgumentError


def test_registry_families_and_aliases():
    assert _methods.method_names("mcmc") == ["hmc", "mh", "nuts"]
    assert _methods.method_names("smc") == ["smc", "tempered_smc"]
    entry, fixed = _methods.get_method("tempered", "smc")
    assert entry.__name__ == "tempered_smc" and fixed == {}
    assert _methods.get_method("nuts")[1] == {"kernel": "nuts"}
    with pytest.raises(ArgumentError, match="tempered"):
        _methods.get_method("nuts", "smc")


def test_registered_method_import_errors_pass_through(monkeypatch):
    monkeypatch.setattr(_methods, "_REGISTRY", dict(_methods._REGISTRY))
    _methods.register_method("broken", "ppltk_no_such_module", "run", "smc")
    with pytest.raises(ModuleNotFoundError):
        _methods.get_method("broken")
