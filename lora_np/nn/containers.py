"""Containers that register their members as children: ModuleList ("h.0", "h.1", ...), ModuleDict, ParameterDict."""

from .module import Module


class ModuleList(Module):
    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))


class _NamedDict(Module):
    """A dict whose values are registered under their keys (``setattr``), so that parameter names read
    ``lora_A.default.weight`` or ``lora_embedding_A.default`` as in PEFT. ``_registry`` names the
    Module table the values land in: ``_modules`` or ``_parameters``."""

    _registry = "_modules"

    def __init__(self, members=None):
        super().__init__()
        for name, m in (members or {}).items():
            setattr(self, name, m)

    def _members(self):
        return getattr(self, self._registry)

    def __getitem__(self, name):
        return self._members()[name]

    def __setitem__(self, name, value):
        setattr(self, name, value)

    def __delitem__(self, name):
        delattr(self, name)

    def __contains__(self, name):
        return name in self._members()

    def __len__(self):
        return len(self._members())

    def __iter__(self):
        return iter(list(self._members()))

    def keys(self):
        return list(self._members())

    def items(self):
        return list(self._members().items())

    def values(self):
        return list(self._members().values())


class ModuleDict(_NamedDict):
    """name -> Module."""


class ParameterDict(_NamedDict):
    """name -> Parameter."""

    _registry = "_parameters"
