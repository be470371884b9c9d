"""Read PyTorch checkpoints (`torch.save` zip archives, Lightning `.ckpt` included) without torch.

A `torch.save` file is a zip archive holding `<folder>/data.pkl` (the pickled object), one raw
little-endian record per storage `<folder>/data/<key>` and, in newer files, `<folder>/byteorder`.
Tensors in the pickle are calls of `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`
on storages that the pickle names through persistent ids; here they become numpy arrays.

Unpickling policy (`_SafeUnpickler.find_class`), decided per global before anything is called:
* allowed, and called: the tensor/parameter rebuild functions and storage types of torch,
  `collections.OrderedDict`, the plain builtin containers and scalars, and `_codecs.encode` as pickle
  protocol 2 uses it for bytes (our own latin-1 only version). These are ours or have no side effects.
* refused: any global of a module that can run code, touch files or processes, or import
  (os, posix, nt, subprocess, sys, shutil, importlib, pickle, socket, runpy, ..., and the Python 2
  names such as `commands` that protocol 2 writes for subprocess) and every other builtin (eval, exec, getattr, __import__, open, ...). The GLOBAL opcode comes before the REDUCE that
  would call it, so such a file fails with CheckpointError before any call happens.
* everything else (Lightning's `argparse.Namespace` hyper-parameters, dtypes, numpy scalars, user
  classes): an inert placeholder class that records its arguments and state; its module is never
  imported and nothing of it runs.
"""
from __future__ import annotations

import builtins
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ... import one_line


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read safely or holds no usable weights."""


# torch dtype name -> numpy dtype. bfloat16 has no numpy dtype: its raw 16-bit halves are widened to float32.
_DTYPES = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16, "bfloat16": "bfloat16",
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
    "uint64": np.uint64, "uint32": np.uint32, "uint16": np.uint16, "uint8": np.uint8, "bool": np.bool_,
    "complex64": np.complex64, "complex128": np.complex128,
}  # fmt: skip
# Legacy typed storage class -> torch dtype name (newer files use UntypedStorage + an explicit dtype).
_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
    "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}  # fmt: skip

_DANGEROUS_MODULES = frozenset(
    "os posix nt subprocess sys shutil importlib pickle _pickle socket runpy code codeop ctypes marshal "
    "multiprocessing threading _thread signal pty platform webbrowser urllib http ftplib smtplib io _io "
    "pathlib tempfile glob zipimport pkgutil inspect types operator functools builtins __builtin__ "
    "_posixsubprocess asyncio selectors ssl pdb timeit cProfile profile trace shelve dbm sqlite3 "
    "zipfile tarfile gc weakref "
    "commands cPickle popen2".split()  # Python 2 names that pickle protocol 2 writes
)
_SAFE_BUILTINS = {
    name: getattr(builtins, name)
    for name in "set frozenset list dict tuple int float complex bool str bytes bytearray slice range".split()
}

# Wrapper prefixes stripped when every key has one; SAM's top-level groups; roots of bare encoder weights.
_WRAPPER_PREFIXES = ("model.", "module.", "_orig_mod.")
_SAM_GROUPS = ("image_encoder.", "prompt_encoder.", "mask_decoder.")
_ENCODER_MARKERS = frozenset({"patch_embed", "layers", "blocks", "stages", "backbone", "features"})
_ENCODER_ROOTS = _ENCODER_MARKERS | {"pos_embed", "neck", "norm"}


def load_weights(path: str | Path) -> dict[str, np.ndarray]:
    """Tensors of a checkpoint file under SAM's key layout (`image_encoder.*`, ...): read + extract + map."""
    path = Path(path)
    try:
        return map_keys(extract_weights(read_checkpoint(path)))
    except CheckpointError as e:
        message = str(e)
        raise CheckpointError(message if str(path) in message else f"{path}: {message}") from None


def read_checkpoint(path: str | Path) -> object:
    """The object a `torch.save` file holds, with every tensor as a numpy array (see the module policy)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            head = f.read(2)
        if head.startswith(b"PK"):
            raise CheckpointError(f"{path}: truncated or corrupt zip archive")
        if head[:1] == b"\x80":
            raise CheckpointError(
                f"{path}: legacy (pre-1.6, non-zip) PyTorch format; re-save it with "
                "torch.save(obj, path, _use_new_zipfile_serialization=True)"
            )
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            return _unpickle_archive(archive, path)
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, pickle.UnpicklingError) as e:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({one_line(e)})") from None
    except (TypeError, ValueError, AttributeError, IndexError, KeyError) as e:
        raise CheckpointError(f"{path}: malformed checkpoint pickle ({one_line(e)})") from None


def extract_weights(obj: object) -> dict[str, np.ndarray]:
    """The tensor dict inside the usual wrappers: `{'state_dict': ...}` (Lightning), `{'model': ...}`, nested."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"expected a dict of tensors, found {type(obj).__name__}")
    for key in ("state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and _holds_tensors(inner):
            return extract_weights(inner)
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, np.ndarray)}
    if not tensors:
        raise CheckpointError("no tensors found in the checkpoint")
    return tensors


def map_keys(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Foreign key layouts -> SAM's, without a model.

    Wrapper prefixes (`model.`, `module.`, `_orig_mod.`) are stripped when every key has one; a
    distillation checkpoint keeps only `student_encoder.*` as `image_encoder.*` (the teacher is
    dropped); bare encoder weights (every key under a known encoder root) get `image_encoder.`.
    """
    stripped = True
    while stripped and state:
        stripped = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    student = "student_encoder."
    if any(k.startswith(student) for k in state):
        return {"image_encoder." + k[len(student) :]: v for k, v in state.items() if k.startswith(student)}
    roots = {k.split(".", 1)[0] for k in state}
    if not any(k.startswith(_SAM_GROUPS) for k in state) and roots <= _ENCODER_ROOTS and roots & _ENCODER_MARKERS:
        return {"image_encoder." + k: v for k, v in state.items()}
    return state


def _holds_tensors(obj: Mapping) -> bool:
    return any(isinstance(v, np.ndarray) or (isinstance(v, Mapping) and _holds_tensors(v)) for v in obj.values())


def _unpickle_archive(archive: zipfile.ZipFile, path: Path) -> object:
    names = archive.namelist()
    pickles = sorted((n for n in names if n == "data.pkl" or n.endswith("/data.pkl")), key=lambda n: n.count("/"))
    if not pickles:
        raise CheckpointError(f"{path}: zip archive without data.pkl (not a torch.save checkpoint)")
    folder = pickles[0][: -len("data.pkl")]
    byteorder = "little"
    if folder + "byteorder" in names:
        byteorder = archive.read(folder + "byteorder").decode("ascii", "replace").strip()
        if byteorder not in ("little", "big"):
            raise CheckpointError(f"{path}: unknown byteorder record {byteorder!r}")
    with archive.open(pickles[0]) as stream:
        return _SafeUnpickler(stream, archive, folder, byteorder, path).load()


class _StorageRef:
    """A storage named by the pickle; read from the archive when a tensor uses it, in that tensor's dtype."""

    def __init__(self, key: str, token) -> None:
        self.key, self.token = key, token


class _DtypeToken:
    """Stands for `torch.FloatStorage`, `torch.float32` etc. in the pickle; never called."""

    def __init__(self, qualified_name: str, dtype: str | None) -> None:
        self.qualified_name, self.dtype = qualified_name, dtype


class _Placeholder(dict):
    """Inert stand-in for an object of a class we do not import: keeps its arguments and state as data.

    A dict subclass so that pickled dict subclasses (e.g. Lightning's AttributeDict) fill it like a dict;
    hashed and compared by identity so it can also serve as a dict key.
    """

    qualified_name = "?"
    __hash__ = object.__hash__
    __eq__ = object.__eq__

    def __new__(cls, *args, **kwargs):  # REDUCE calls the class, NEWOBJ only __new__: both record the arguments
        self = super().__new__(cls)
        self.args, self.kwargs, self.state, self.list_items = args, kwargs, None, []
        return self

    def __init__(self, *_args, **_kwargs) -> None:
        super().__init__()

    def __setstate__(self, state) -> None:
        self.state = state

    def append(self, item) -> None:
        self.list_items.append(item)

    def extend(self, items) -> None:
        self.list_items.extend(items)

    def __repr__(self) -> str:
        return f"<placeholder {self.qualified_name}>"


def _placeholder_class(module: str, name: str) -> type:
    attributes = {"qualified_name": f"{module}.{name}", "__module__": __name__}
    return type(name.rsplit(".", 1)[-1], (_Placeholder,), attributes)


def _codecs_encode(text, encoding="latin1"):
    """Pickle protocol 2 writes bytes as `_codecs.encode(str, 'latin1')`; only that form is honoured."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise ValueError("_codecs.encode is only allowed as pickle's latin-1 bytes form")
    return text.encode("latin1")


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that resolves globals per the module policy and loads storages from the archive."""

    def __init__(self, stream, archive: zipfile.ZipFile, folder: str, byteorder: str, path: Path) -> None:
        super().__init__(stream)
        self.archive, self.folder, self.path = archive, folder, path
        self.endian = "<" if byteorder == "little" else ">"
        self.storages: dict[tuple[str, str], np.ndarray] = {}
        self.allowed = {
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_tensor_v3"): self._rebuild_tensor_v3,
            ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
            ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
            ("collections", "OrderedDict"): OrderedDict,
            ("_codecs", "encode"): _codecs_encode,
        }

    def find_class(self, module: str, name: str):
        if (module, name) in self.allowed:
            return self.allowed[(module, name)]
        if module in ("builtins", "__builtin__") and name in _SAFE_BUILTINS:
            return _SAFE_BUILTINS[name]
        if module.split(".", 1)[0] in _DANGEROUS_MODULES:
            raise CheckpointError(f"{self.path}: refused: the pickle calls {module}.{name} (possibly malicious file)")
        if module in ("torch", "torch.storage") and name.endswith("Storage"):
            return _DtypeToken(f"{module}.{name}", _STORAGE_DTYPES.get(name))
        if module == "torch" and name in _DTYPES:
            return _DtypeToken(f"{module}.{name}", name)
        return _placeholder_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise CheckpointError(f"{self.path}: unsupported persistent id {pid!r:.80}")
        return _StorageRef(str(pid[2]), pid[1])

    def _storage(self, key: str, token) -> np.ndarray:
        """Storage KEY as a 1-D array of TOKEN's dtype, read once per (key, dtype) so shared storages are read once."""
        if not isinstance(token, _DtypeToken) or token.dtype is None:
            raise CheckpointError(f"{self.path}: unsupported dtype {getattr(token, 'qualified_name', repr(token))}")
        if (key, token.dtype) not in self.storages:
            self.storages[(key, token.dtype)] = self._read_storage(key, token.dtype)
        return self.storages[(key, token.dtype)]

    def _read_storage(self, key: str, dtype_name: str) -> np.ndarray:
        """One storage record in native byte order (bfloat16 widened to float32)."""
        record = f"{self.folder}data/{key}"
        try:
            raw = self.archive.read(record)
        except KeyError:
            raise CheckpointError(f"{self.path}: missing storage record {record}") from None
        if dtype_name == "bfloat16":
            halves = np.frombuffer(raw, dtype=self.endian + "u2")
            return (halves.astype(np.uint32) << 16).view(np.float32)
        dtype = np.dtype(_DTYPES[dtype_name]).newbyteorder(self.endian)
        if len(raw) % dtype.itemsize:
            raise CheckpointError(f"{self.path}: storage record {record} is not a whole number of {dtype_name}")
        return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=False)

    def _rebuild_tensor(self, ref, offset, size, stride, *_, dtype=None):
        """A tensor view (offset and strides in elements) of a storage, copied into an array of its own."""
        if not isinstance(ref, _StorageRef):
            raise CheckpointError(f"{self.path}: tensor without a storage")
        storage = self._storage(ref.key, ref.token if dtype is None else dtype)
        size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
        if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size + stride):
            raise CheckpointError(f"{self.path}: invalid tensor layout size={size} stride={stride}")
        if 0 in size:
            return np.empty(size, dtype=storage.dtype)
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise CheckpointError(f"{self.path}: tensor exceeds its storage ({last + 1} > {storage.size} elements)")
        strides = tuple(s * storage.itemsize for s in stride)
        return np.lib.stride_tricks.as_strided(storage[offset:], shape=size, strides=strides, writeable=False).copy()

    def _rebuild_tensor_v3(self, ref, offset, size, stride, _requires_grad, _hooks, dtype, *_):
        """Newer form (dtypes without a typed storage class): an untyped storage plus the tensor's dtype."""
        return self._rebuild_tensor(ref, offset, size, stride, dtype=dtype)


def _rebuild_parameter(data, *_):
    """`nn.Parameter` -> its data; gradient flags and hooks do not matter for inference."""
    return data


def _rebuild_from_type(func, _new_type, args, _state):
    """Tensor subclasses: rebuild the plain tensor with FUNC (itself resolved by find_class)."""
    return func(*args)
