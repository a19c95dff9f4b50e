"""Packages whose public names are imported from their modules on first use (PEP 562)."""

import importlib
import sys


def attributes(package, names, modules=()):
    """`(__getattr__, __dir__)` for `package` (its `__name__`): `names` maps each public
    name to the module of the package that defines it; `modules` are submodules given
    as attributes. A module's names are bound all at once when it is first imported."""

    def __getattr__(name):
        namespace = vars(sys.modules[package])
        if name in names:
            module = importlib.import_module(f"{package}.{names[name]}")
            for each, home in names.items():
                if home == names[name]:
                    namespace[each] = getattr(module, each)
            return namespace[name]
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(names) | set(modules))

    return __getattr__, __dir__
