"""A stand-in "device" array module for testing the backend seam without a GPU.

``DeviceArray`` is an ndarray subclass that behaves like a CuPy array in the one way that matters
here: it refuses to compute together with a plain host ndarray (CuPy raises TypeError for
``cupy_array + numpy_array``). ``standin`` mirrors NumPy's namespace but hands out DeviceArrays, so
installed as the backend's ``xp`` (``backend.using``), any library code that allocates with ``np``
instead of ``xp`` produces a host array that fails as soon as it meets device data, and any
result that is not a DeviceArray shows a computation that left the seam.
"""

import types

import numpy as np


def _is_host(x):
    return isinstance(x, np.ndarray) and not isinstance(x, DeviceArray) and x.ndim > 0


def _check(args, where):
    for a in args:
        if isinstance(a, (list, tuple)):
            _check(a, where)
        elif _is_host(a):
            raise TypeError(f"{where}: a host numpy array ({a.shape}, {a.dtype}) met device arrays; "
                            f"allocate with backend.xp, or move it with backend.asarray")


def _to_device(x):
    if isinstance(x, np.ndarray) and not isinstance(x, DeviceArray):
        return x.view(DeviceArray)
    if isinstance(x, tuple):
        return tuple(_to_device(v) for v in x)
    if isinstance(x, list):
        return [_to_device(v) for v in x]
    return x


def _to_plain(x):
    if isinstance(x, DeviceArray):
        return x.view(np.ndarray)
    if isinstance(x, dict):  # keyword arguments (``where=`` of np.copyto)
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_to_plain(v) for v in x)
    return x


class DeviceArray(np.ndarray):
    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _check(inputs + (out or ()), f"np.{ufunc.__name__}")
        if out is not None:
            kwargs["out"] = tuple(_to_plain(o) for o in out)
        result = getattr(ufunc, method)(*_to_plain(inputs), **kwargs)
        return _to_device(result)

    def __array_function__(self, func, types_, args, kwargs):
        _check(args, f"np.{func.__name__}")
        _check(tuple(kwargs.values()), f"np.{func.__name__}")
        return _to_device(func(*_to_plain(args), **_to_plain(kwargs)))

    def get(self):
        """The explicit device-to-host copy (CuPy's name for it)."""
        return np.array(self.view(np.ndarray), copy=True)


class _Wrapped:
    """A NumPy callable (function, ufunc) whose array results come back as DeviceArrays."""

    def __init__(self, fn):
        self._fn = fn

    def __call__(self, *args, **kwargs):
        return _to_device(self._fn(*args, **kwargs))

    def __getattr__(self, name):  # ufunc methods: reduce, reduceat, at, outer
        attr = getattr(self._fn, name)
        return _Wrapped(attr) if callable(attr) else attr


class _Generator:
    def __init__(self, seed):
        self._g = np.random.default_rng(seed)

    def __getattr__(self, name):
        if name.startswith("__") or name == "_g":  # copy.deepcopy probes these before __init__ ran
            raise AttributeError(name)
        return _Wrapped(getattr(self._g, name))


def _make_module():
    mod = types.SimpleNamespace()

    class Namespace(types.SimpleNamespace):
        def __getattr__(self, name):
            attr = getattr(np, name)
            if isinstance(attr, type) or not callable(attr):
                return attr
            return _Wrapped(attr)

    mod = Namespace()
    mod.ndarray = DeviceArray
    mod.random = types.SimpleNamespace(default_rng=lambda seed=None: _Generator(seed))
    mod.asarray = lambda a, dtype=None: _to_device(np.asarray(_to_plain(a), dtype=dtype))
    mod.array = lambda a, dtype=None, copy=True: _to_device(np.array(_to_plain(a), dtype=dtype, copy=copy))
    return mod


standin = _make_module()
