"""An allow-list unpickler for published StyleGAN2 network pickles.

Official network pickles are code, not data: a stylegan2-ada-pytorch / stylegan3 pickle carries the
source of its network module (``module_src``) and asks ``torch_utils.persistence`` to ``exec`` it; a
TF-era pickle carries ``build_module_src`` that ``dnnlib.tflib.network.Network.__setstate__`` execs.
Plain ``pickle.load`` would therefore run whatever a downloaded file contains. This unpickler never
resolves a global by importing it: ``find_class`` answers from a fixed table, and every entry is
either a plain-data record class defined here or a small function that checks its arguments and
builds a tensor / array / container itself. Anything else stops the load with one line that names
the global.
"""

from __future__ import annotations

import collections
import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genexp.errors import UserError, first_line


class _Frozen(type):
    """Metaclass of the record classes handed to the unpickler: a pickle's BUILD opcode may set
    attributes on any object it can name, and a class-level attribute would outlive this load."""

    def __setattr__(cls, name, value):
        raise pickle.UnpicklingError(f"pickle tries to set {cls.__name__}.{name}")


class EasyDictRecord(dict, metaclass=_Frozen):
    """``dnnlib.util.EasyDict`` as a plain dict (attribute access is not needed to read kwargs)."""

    def __setstate__(self, state):
        # EasyDict keeps everything in the dict itself; a __dict__ state carries nothing we need.
        pass


@dataclass
class PersistentRecord:
    """What ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` would have rebuilt, kept
    as data: the class name, the (never executed) module source and the object's ``__dict__``."""

    class_name: str
    module_src: str
    version: Any
    state: dict

    def submodule(self, name: str) -> PersistentRecord | None:
        mods = self.state.get("_modules") or {}
        child = mods.get(name)
        return child if isinstance(child, PersistentRecord) else None


class TFNetworkRecord(metaclass=_Frozen):
    """``dnnlib.tflib.network.Network`` as data: its ``__getstate__`` dict (version, name,
    static_kwargs, components, build_module_src, build_func_name, variables)."""

    __slots__ = ("state",)

    def __setstate__(self, state):
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("TF network state is not a dict")
        self.state = state


class _PendingArray(metaclass=_Frozen):
    """The object numpy's ``_reconstruct`` returns; the array itself is made from the BUILD state,
    after checking that its dtype is plain numbers (an object dtype would hold pickled objects)."""

    __slots__ = ("array",)

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) == 5):
            raise pickle.UnpicklingError("numpy array state has an unexpected form")
        _version, shape, dtype, is_fortran, raw = state
        dtype = _check_dtype(dtype)
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("numpy array data is not raw bytes")
        shape = _shape(shape)
        arr = np.frombuffer(bytes(raw), dtype=dtype, count=int(np.prod(shape, dtype=np.int64)))
        self.array = arr.reshape(shape, order="F" if is_fortran else "C")


_NUMERIC_KINDS = "biufc"


def _shape(shape) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise pickle.UnpicklingError("numpy array shape is not a tuple of non-negative ints")
    return tuple(shape)


def _check_dtype(dtype) -> np.dtype:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or dtype.kind not in _NUMERIC_KINDS or dtype.fields:
        raise pickle.UnpicklingError(f"numpy dtype {dtype!r} is not a plain number type")
    return dtype


class _Safe:
    """A callable handed to the unpickler in place of a real global. Slots and a refusing
    __setstate__ keep BUILD from changing it."""

    __slots__ = ("_fn", "_label")

    def __init__(self, fn, label):
        self._fn = fn
        self._label = label

    def __call__(self, *args):
        return self._fn(*args)

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"pickle tries to modify {self._label}")

    def __repr__(self):
        return f"<allowed {self._label}>"


class _Marker:
    """Stands for a class that may only appear as an argument (torch.Tensor, numpy.ndarray):
    not a type, so NEWOBJ refuses it, and not callable, so REDUCE does too."""

    __slots__ = ("_label",)

    def __init__(self, label):
        self._label = label

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"pickle tries to modify {self._label}")

    def __repr__(self):
        return f"<marker {self._label}>"


_NDARRAY = _Marker("numpy.ndarray")
_TENSOR_TYPES = (_Marker("torch.Tensor"), _Marker("torch.nn.parameter.Parameter"))


# --- torch ------------------------------------------------------------------------------------

def _load_storage(data):
    # A storage pickled by torch is a small legacy-format torch.save file; torch's own
    # weights_only loader reads it under torch's allow-list.
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("storage payload is not bytes")
    storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError("storage payload does not hold a storage")
    return storage


def _ints(values, what):
    if not isinstance(values, (tuple, list, torch.Size)) or not all(isinstance(v, int) for v in values):
        raise pickle.UnpicklingError(f"tensor {what} is not a tuple of ints")
    return tuple(values)


def _rebuild_tensor(storage, offset, size, stride, *_ignored):
    # requires_grad, backward hooks and metadata are dropped on purpose: a state dict needs none.
    if isinstance(storage, torch.UntypedStorage):
        storage = torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.uint8, _internal=True)
    if not isinstance(storage, torch.storage.TypedStorage):
        raise pickle.UnpicklingError("tensor is not backed by a storage")
    if not isinstance(offset, int):
        raise pickle.UnpicklingError("tensor offset is not an int")
    return torch._utils._rebuild_tensor(storage, offset, _ints(size, "size"), _ints(stride, "stride"))


def _rebuild_parameter(data, *_ignored):
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("parameter data is not a tensor")
    return data


def _rebuild_from_type(func, new_type, args, _state=None):
    if new_type not in _TENSOR_TYPES or func not in (_SAFE_TENSOR, _SAFE_PARAMETER):
        raise pickle.UnpicklingError("tensor subclass record names an unexpected type")
    return func(*args)


_SAFE_TENSOR = _Safe(_rebuild_tensor, "torch._utils._rebuild_tensor_v2")
_SAFE_PARAMETER = _Safe(_rebuild_parameter, "torch._utils._rebuild_parameter")


# --- numpy ------------------------------------------------------------------------------------

def _np_dtype(obj, align=False, copy=False):
    if not isinstance(obj, str):
        raise pickle.UnpicklingError("numpy dtype is not given by a type string")
    # copy=True always: np.dtype('f4') is a process-wide singleton and the BUILD opcode that follows
    # calls __setstate__ on whatever we return.
    return _check_dtype(np.dtype(obj, False, True))


def _np_reconstruct(cls, shape, typecode):
    if cls is not _NDARRAY:
        raise pickle.UnpicklingError("numpy _reconstruct names a class other than ndarray")
    return _PendingArray()


def _np_scalar(dtype, data=None):
    dtype = _check_dtype(dtype)
    if not isinstance(data, (bytes, bytearray)) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("numpy scalar data has the wrong size")
    return np.frombuffer(bytes(data), dtype=dtype)[0]


def _np_frombuffer(buf, dtype, shape, order):
    dtype = _check_dtype(dtype)
    shape = _shape(shape)
    arr = np.frombuffer(bytes(buf), dtype=dtype, count=int(np.prod(shape, dtype=np.int64)))
    return arr.reshape(shape, order="F" if order == "F" else "C")


def _codecs_encode(text, encoding="utf-8"):
    # Protocol-2 pickles spell bytes as _codecs.encode(str, 'latin1').
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("unexpected _codecs.encode call")
    return text.encode(encoding)


# --- dnnlib / torch_utils ---------------------------------------------------------------------

def _persistent_obj(meta):
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError("persistent object meta is not a dict")
    src, name, state = meta.get("module_src"), meta.get("class_name"), meta.get("state")
    if meta.get("type") != "class" or not isinstance(src, str) or not isinstance(name, str):
        raise pickle.UnpicklingError("persistent object meta lacks type/module_src/class_name")
    # The source is kept as a string for format detection; it is never compiled or executed.
    return PersistentRecord(class_name=name, module_src=src, version=meta.get("version"),
                            state=dict(state) if isinstance(state, dict) else {})


def _reconstructor(cls, base, state=None):
    # copyreg._reconstructor: how protocols 0/1 spell "object of class cls"; only for our records.
    if cls is EasyDictRecord and base is dict:
        return EasyDictRecord(state or {})
    if cls in (TFNetworkRecord, EasyDictRecord) and base is object and state is None:
        return cls.__new__(cls)
    raise pickle.UnpicklingError("copyreg._reconstructor names an unexpected class")


def _ordered_dict(*args):
    return collections.OrderedDict(*args)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _Safe(_ordered_dict, "collections.OrderedDict"),
    ("builtins", "set"): _Safe(set, "builtins.set"),
    ("builtins", "frozenset"): _Safe(frozenset, "builtins.frozenset"),
    ("builtins", "bytearray"): _Safe(bytearray, "builtins.bytearray"),
    ("builtins", "object"): object,
    ("builtins", "dict"): dict,
    ("__builtin__", "set"): _Safe(set, "__builtin__.set"),
    ("__builtin__", "object"): object,
    ("__builtin__", "dict"): dict,
    ("_codecs", "encode"): _Safe(_codecs_encode, "_codecs.encode"),
    ("copy_reg", "_reconstructor"): _Safe(_reconstructor, "copy_reg._reconstructor"),
    ("copyreg", "_reconstructor"): _Safe(_reconstructor, "copyreg._reconstructor"),
    ("torch._utils", "_rebuild_tensor_v2"): _SAFE_TENSOR,
    ("torch._utils", "_rebuild_tensor"): _SAFE_TENSOR,
    ("torch._utils", "_rebuild_parameter"): _SAFE_PARAMETER,
    ("torch._utils", "_rebuild_parameter_with_state"): _SAFE_PARAMETER,
    ("torch._utils", "_rebuild_from_type_v2"): _Safe(_rebuild_from_type, "torch._utils._rebuild_from_type_v2"),
    ("torch", "Tensor"): _TENSOR_TYPES[0],
    ("torch.nn.parameter", "Parameter"): _TENSOR_TYPES[1],
    ("torch.storage", "_load_from_bytes"): _Safe(_load_storage, "torch.storage._load_from_bytes"),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Safe(_np_dtype, "numpy.dtype"),
    ("torch_utils.persistence", "_reconstruct_persistent_obj"):
        _Safe(_persistent_obj, "torch_utils.persistence._reconstruct_persistent_obj"),
    ("dnnlib.util", "EasyDict"): EasyDictRecord,
    ("dnnlib", "EasyDict"): EasyDictRecord,
    ("dnnlib.tflib.network", "Network"): TFNetworkRecord,
}
for _np_mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_np_mod, "_reconstruct")] = _Safe(_np_reconstruct, f"{_np_mod}._reconstruct")
    _ALLOWED[(_np_mod, "scalar")] = _Safe(_np_scalar, f"{_np_mod}.scalar")
for _np_mod in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_np_mod, "_frombuffer")] = _Safe(_np_frombuffer, f"{_np_mod}._frombuffer")


class _Refused(Exception):
    def __init__(self, name):
        super().__init__(name)
        self.name = name


class SafeUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come only from the table above."""

    def find_class(self, module, name):
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid):
        # Plain network pickles have no persistent ids; torch.save files are read by torch.load.
        raise pickle.UnpicklingError("unexpected persistent id (a torch.save file read as a plain pickle?)")


def load_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` with the allow-list; any refusal or damage is one UserError line."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f).load()
    except _Refused as exc:
        raise UserError(f"file {path} names {exc.name}, which is not on genexp's allow-list: not loaded") from None
    except UserError:
        raise
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - a damaged file can raise almost anything while unpickling
        raise UserError(f"{path} is not a StyleGAN2 network file genexp can read: truncated or damaged pickle "
                        f"({first_line(exc)})") from None


def unwrap(obj: Any) -> Any:
    """Turn loader records into plain Python: EasyDict -> dict, pending numpy arrays -> arrays."""
    if isinstance(obj, _PendingArray):
        return getattr(obj, "array", None)
    if isinstance(obj, dict):
        return {k: unwrap(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unwrap(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(unwrap(v) for v in obj)
    return obj
