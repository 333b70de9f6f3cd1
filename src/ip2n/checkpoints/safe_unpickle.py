"""Restricted unpickling of untrusted checkpoint files.

Official InstructPix2NeRF, PREIM3D and EG3D checkpoints are pickles. A pickle is a small program:
it may import any callable and call it with any arguments, which is why `pickle.load` on a
downloaded file can run arbitrary code. This module reads them with an unpickler that never imports
a module and never calls anything a file names, except the few functions in `ALLOWED_GLOBALS`
(tensor and numpy rebuilders, containers, and inert stand-ins written here):

- every other global becomes an INERT record class (`ObjectRecord` subclass named after the
  global): "calling" it or creating an instance of it only stores the arguments and state the file
  gives. Real checkpoints written by training runs hold such objects (paths, optimizer and
  augmentation objects, classes of the official code); they never block reading the weights beside
  them. A tensor that would need the result of such a call is refused, naming the global;
- globals of modules whose only use in a pickle is to run code or touch the system (`os`,
  `subprocess`, `builtins.eval`, ...: `CODE_RUNNING_MODULES`) make the whole file refused at once:
  no training run pickles them, so a file that names them was made to attack;
- `torch_utils.persistence._reconstruct_persistent_obj` keeps the class name and state and drops
  `module_src`, the source text the official loader would execute;
- the BUILD opcode may touch only records, `OrderedDict`s, arrays and dtypes made here, so a file
  cannot rewire attributes of the allowed functions themselves.

The module doubles as a `pickle_module` for `torch.load` (it exposes `Unpickler` and `load`), which
is how torch zip archives are read: torch then handles the zip records and storages while every
global of `data.pkl` still goes through `Unpickler.find_class` below.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import pathlib
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from typing import IO, Any, ClassVar

import numpy as np
import torch

__all__ = [
    "ALLOWED_GLOBALS",
    "CheckpointError",
    "EasyDictRecord",
    "ModuleRecord",
    "NamespaceRecord",
    "ObjectRecord",
    "PersistentRecord",
    "PickledObject",
    "Unpickler",
    "UnsafeCheckpointError",
    "load",
    "load_checkpoint",
    "loads",
    "sniff_checkpoint",
]

logger = logging.getLogger(__name__)

# torch's legacy (pre-1.6, non-zip) format starts with this number pickled on its own.
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_TORCH_MAGIC_BYTES = b"\x8a\x0a" + _LEGACY_TORCH_MAGIC.to_bytes(10, "little")  # opcode LONG1


class CheckpointError(Exception):
    """A checkpoint file cannot be used; the message names the file and says what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file asks for something outside ip2n's allow-list (a global, or a state change)."""

    def __init__(self, action: str, source: str | os.PathLike | None = None) -> None:
        self.action = action
        self.source = None if source is None else str(source)
        where = "this checkpoint" if source is None else str(source)
        super().__init__(
            f"refusing to load {where}: it asks to {action}, which is not on ip2n's allow-list of "
            "data types; this file may be malicious or is not an official checkpoint"
        )

    def for_file(self, source: str | os.PathLike) -> UnsafeCheckpointError:
        """The same refusal, naming the file (torch builds the unpickler, so it cannot know the path)."""
        return UnsafeCheckpointError(self.action, source)


# --- inert records ---------------------------------------------------------------------------


class PickledObject:
    """Stand-in for an instance of a class named by a checkpoint: it only stores what the file says.

    `args` holds the constructor arguments the pickle passed (NEWOBJ / REDUCE), `state` what BUILD
    set (for a torch module: its `__dict__` with `_parameters`, `_buffers`, `_modules`, ...), and
    `items` / `list_items` what the pickle added as to a dict or a list (subclasses of dict and
    list pickle their contents that way).
    """

    class_path: ClassVar[str] = "builtins.object"
    args: tuple[Any, ...]
    state: Any
    items: dict[Any, Any]
    list_items: list[Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> PickledObject:
        record = super().__new__(cls)
        record.args = args + ((kwargs,) if kwargs else ())
        record.state = None
        record.items = {}
        record.list_items = []
        return record

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.list_items.append(value)

    def extend(self, values: Any) -> None:
        self.list_items.extend(values)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.class_path}>"


class ObjectRecord(PickledObject):
    """An object of a class (or the result of a function) that ip2n does not know.

    Nothing of the named global is imported or run: `class_path` is its dotted name, `args` what
    the file would have called it with. Such objects are kept so that the rest of the file can be
    read; a tensor that needs one is refused (`record_in`).
    """

    def describe(self) -> str:
        """'a <class_path> object' for messages."""
        return f"a {self.class_path} object"


class ModuleRecord(PickledObject):
    """A torch.nn.Module pickled by class reference; `state` is the module's `__dict__`."""


class NamespaceRecord(PickledObject):
    """An `argparse.Namespace` (the DiT training `args`); `state` holds its attributes."""

    class_path = "argparse.Namespace"


class EasyDictRecord(dict):
    """A `dnnlib.util.EasyDict`: a dict whose items the official code also reads as attributes."""

    class_path: ClassVar[str] = "dnnlib.util.EasyDict"

    def __setstate__(self, state: Any) -> None:
        # A real EasyDict keeps its data in the items; attribute state, if any, belongs there too.
        if isinstance(state, dict):
            self.update(state)


class PersistentRecord:
    """An object of an EG3D `@persistent_class`: class name, persistence version and `__dict__`.

    The official `module_src` (source text that the official loader executes) is deliberately not
    kept.
    """

    def __init__(self, class_name: str, version: int | None, state: dict[str, Any]) -> None:
        self.class_name = class_name
        self.version = version
        self.state = state

    def __repr__(self) -> str:
        return f"<PersistentRecord of {self.class_name}>"


def _module_record_class(class_path: str) -> type[ModuleRecord]:
    name = class_path.rsplit(".", 1)[-1] + "Record"
    return type(name, (ModuleRecord,), {"class_path": class_path, "__module__": __name__})


def _object_record_class(class_path: str) -> type[ObjectRecord]:
    name = _printable(class_path).rsplit(".", 1)[-1] + "Record"
    return type(name, (ObjectRecord,), {"class_path": class_path, "__module__": __name__})


def record_in(value: Any, depth: int = 2) -> ObjectRecord | None:
    """The first `ObjectRecord` in `value` or its containers (up to `depth` levels), else None."""
    if isinstance(value, ObjectRecord):
        return value
    if depth > 0 and isinstance(value, (tuple, list)):
        for item in value:
            found = record_in(item, depth - 1)
            if found is not None:
                return found
    if depth > 0 and isinstance(value, dict):
        for item in value.values():
            found = record_in(item, depth - 1)
            if found is not None:
                return found
    return None


# Top-level modules whose callables, in a pickle, exist only to run code or reach the system.
# No checkpoint written by a training run names them; a file that does is refused outright.
CODE_RUNNING_MODULES = frozenset(
    {
        "__builtin__",
        "_io",
        "_pickle",
        "_posixsubprocess",
        "_thread",
        "asyncio",
        "bdb",
        "builtins",
        "code",
        "codeop",
        "commands",
        "ctypes",
        "distutils",
        "ensurepip",
        "functools",
        "imp",
        "importlib",
        "inspect",
        "io",
        "marshal",
        "multiprocessing",
        "nt",
        "operator",
        "os",
        "pdb",
        "pickle",
        "pip",
        "platform",
        "posix",
        "pty",
        "runpy",
        "setuptools",
        "shutil",
        "signal",
        "site",
        "socket",
        "subprocess",
        "sys",
        "sysconfig",
        "tempfile",
        "threading",
        "timeit",
        "types",
        "urllib",
        "webbrowser",
        "zipimport",
    }
)


# Classes that official checkpoints pickle by reference (non-persistent modules of the generator).
_MODULE_CLASS_PATHS = (
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.activation.Softplus",
    "training.triplane.OSGDecoder",
    "training.volumetric_rendering.renderer.ImportanceRenderer",
    "training.volumetric_rendering.ray_sampler.RaySampler",
    "training.volumetric_rendering.ray_marcher.MipRayMarcher2",
)


# --- replacements for the allowed callables ---------------------------------------------------


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise UnsafeCheckpointError("rebuild a persistent object from something other than a class record")
    class_name, state = meta.get("class_name"), meta.get("state")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise UnsafeCheckpointError("rebuild a persistent object without a class name and a state dict")
    return PersistentRecord(class_name, meta.get("version"), state)


def _storage_from_legacy_bytes(data: Any) -> torch.storage.TypedStorage:
    """`torch.storage._load_from_bytes`: a storage serialized as a nested legacy torch file.

    torch's own version runs a full `torch.load(weights_only=False)` on the bytes; here the nested
    load is torch's weights-only unpickler, which an explicit `weights_only=True` keeps in force.
    """
    if not isinstance(data, bytes):
        raise UnsafeCheckpointError(f"load a storage from a {type(data).__name__} instead of bytes")
    try:
        storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        action = f"run a nested storage blob that torch's weights-only loader refused ({reason})"
        raise UnsafeCheckpointError(action) from exc
    if not isinstance(storage, torch.storage.TypedStorage):
        raise UnsafeCheckpointError(f"use a {type(storage).__name__} where a tensor storage belongs")
    return storage


def _numpy_dtype(spec: Any, align: Any = False, _copy: Any = False) -> np.dtype:
    # Always a copy, whatever the file asks: BUILD then sets state on it, which must never reach
    # numpy's shared dtype singletons.
    if not isinstance(spec, str):
        raise UnsafeCheckpointError(f"build a numpy dtype from a {type(spec).__name__}")
    dtype = np.dtype(spec, align=bool(align), copy=True)
    _check_plain_dtype(dtype)
    return dtype


def _check_plain_dtype(dtype: np.dtype) -> None:
    if dtype.hasobject or dtype.fields is not None or dtype.kind not in "biufc":
        raise UnsafeCheckpointError(f"use the numpy dtype {dtype!r} (only plain numbers are allowed)")


def _numpy_scalar(dtype: Any, data: Any = None) -> np.generic:
    if not isinstance(dtype, np.dtype) or not isinstance(data, bytes):
        raise UnsafeCheckpointError("build a numpy scalar from something other than (dtype, bytes)")
    _check_plain_dtype(dtype)
    if len(data) != dtype.itemsize:
        raise UnsafeCheckpointError(f"build a {dtype} scalar from {len(data)} bytes")
    return np.frombuffer(data, dtype=dtype)[0]


def _latin1_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol 2 (torch.save's default) spells bytes objects as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError("call _codecs.encode with anything but (str, 'latin1')")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    # Protocol 2 pickles b"" as a call of bytes() without arguments.
    if args:
        raise UnsafeCheckpointError("call bytes with arguments")
    return b""


def _refuse_records(function_name: str, args: tuple[Any, ...]) -> None:
    record = record_in(args)
    if record is not None:
        raise UnsafeCheckpointError(
            f"build a tensor ({function_name}) from the result of calling {_printable(record.class_path)}, "
            "which ip2n never runs"
        )


def _rebuild_tensor(*args: Any) -> torch.Tensor:
    _refuse_records("_rebuild_tensor_v2", args)
    return torch._utils._rebuild_tensor_v2(*args)


def _rebuild_parameter(*args: Any) -> torch.Tensor:
    _refuse_records("_rebuild_parameter", args)
    return torch._utils._rebuild_parameter(*args)


def _rebuild_parameter_with_state(data: Any, requires_grad: Any, hooks: Any, state: Any) -> torch.Tensor:
    # The state (attributes set on the Parameter) is dropped: a weight is its values.
    _refuse_records("_rebuild_parameter_with_state", (data, requires_grad))
    return torch._utils._rebuild_parameter(data, requires_grad, hooks)


def _numpy_reconstruct(cls: Any, shape: Any = (0,), dtype_code: Any = b"b") -> np.ndarray:
    # numpy pickles an array (protocols 2-4) as an empty array that BUILD then fills from bytes;
    # `Unpickler.load_build` checks that state before numpy sees it.
    if cls is not np.ndarray:
        raise UnsafeCheckpointError("rebuild a numpy array of a class other than numpy.ndarray")
    return np.empty(0, dtype=np.int8)


def _check_array_state(state: Any) -> None:
    if not (isinstance(state, tuple) and len(state) == 5):
        raise UnsafeCheckpointError("fill a numpy array from an unexpected state")
    _version, shape, dtype, fortran_order, data = state
    _array_from_bytes(data, dtype, shape, "F" if fortran_order else "C")


def _numpy_frombuffer(data: Any, dtype: Any, shape: Any, order: Any = "C") -> np.ndarray:
    # Protocol 5 arrays: the raw bytes, dtype, shape and memory order.
    if isinstance(data, pickle.PickleBuffer):
        data = bytes(data.raw())
    return _array_from_bytes(data, dtype, shape, order)


def _array_from_bytes(data: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, np.dtype) or not isinstance(data, (bytes, bytearray)):
        raise UnsafeCheckpointError("rebuild a numpy array from something other than (bytes, plain dtype)")
    _check_plain_dtype(dtype)
    if not (isinstance(shape, tuple) and all(isinstance(size, int) and size >= 0 for size in shape)):
        raise UnsafeCheckpointError("rebuild a numpy array with a malformed shape")
    count = 1
    for size in shape:
        count *= size
    if count * dtype.itemsize != len(data) or order not in ("C", "F"):
        raise UnsafeCheckpointError(f"rebuild a numpy array of shape {shape} from {len(data)} bytes")
    return np.frombuffer(bytes(data), dtype=dtype).reshape(shape, order=order).copy(order="C")


def _pure_path(*parts: Any) -> pathlib.PurePath:
    # Paths in training options (`args`, `opts`) are data: a pure path touches no file system.
    if not all(isinstance(part, str) for part in parts):
        raise UnsafeCheckpointError("build a path from something other than strings")
    return pathlib.PurePosixPath(*parts)


def _frozenset(items: Any = ()) -> frozenset:
    if not isinstance(items, (list, tuple, set, frozenset)):
        raise UnsafeCheckpointError(f"build a frozenset from a {type(items).__name__}")
    return frozenset(items)


def _complex(real: Any = 0.0, imag: Any = 0.0) -> complex:
    if not all(isinstance(part, (int, float)) for part in (real, imag)):
        raise UnsafeCheckpointError("build a complex number from something other than numbers")
    return complex(real, imag)


def _build_allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("__builtin__", "set"): set,
        ("builtins", "frozenset"): _frozenset,
        ("__builtin__", "frozenset"): _frozenset,
        ("builtins", "complex"): _complex,
        ("__builtin__", "complex"): _complex,
        ("builtins", "bytes"): _empty_bytes,
        ("__builtin__", "bytes"): _empty_bytes,
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "dtype"): _numpy_dtype,
        ("numpy", "ndarray"): np.ndarray,  # only ever passed to _numpy_reconstruct, which checks it
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch.storage", "_load_from_bytes"): _storage_from_legacy_bytes,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("dnnlib.util", "EasyDict"): EasyDictRecord,
        ("argparse", "Namespace"): NamespaceRecord,
    }
    for numpy_core in ("numpy.core", "numpy._core"):
        allowed[(f"{numpy_core}.multiarray", "scalar")] = _numpy_scalar
        allowed[(f"{numpy_core}.multiarray", "_reconstruct")] = _numpy_reconstruct
        allowed[(f"{numpy_core}.numeric", "_frombuffer")] = _numpy_frombuffer
    for path_class in ("Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"):
        allowed[("pathlib", path_class)] = _pure_path
        allowed[("pathlib._local", path_class)] = _pure_path  # Python 3.13 moved the classes
    for class_path in _MODULE_CLASS_PATHS:
        module_name, name = class_path.rsplit(".", 1)
        allowed[(module_name, name)] = _module_record_class(class_path)
    return allowed


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = _build_allowed_globals()

# What BUILD may set state on: our records, state dicts' OrderedDicts (their `_metadata`), the
# dtype copies made by `_numpy_dtype` and the empty arrays made by `_numpy_reconstruct`. Functions
# and classes are excluded on purpose.
_BUILD_TARGETS = (PickledObject, EasyDictRecord, collections.OrderedDict, np.dtype, np.ndarray)


def _printable(text: str) -> str:
    # Damaged or hostile files can name globals with control characters; keep messages readable.
    text = text if text.isprintable() else ascii(text)
    return text if len(text) <= 120 else text[:117] + "..."


def _is_plain_attribute_dict(state: Any) -> bool:
    return isinstance(state, dict) and all(isinstance(key, str) and not key.startswith("__") for key in state)


class Unpickler(pickle._Unpickler):
    """`pickle.Unpickler` that resolves globals to `ALLOWED_GLOBALS` or inert record classes.

    Built on the pure-Python unpickler because only its opcode table can be extended: the C one
    offers no hook for BUILD. Checkpoint pickles hold few opcodes (tensor data lives in storages),
    so the speed difference does not matter.
    """

    dispatch = dict(pickle._Unpickler.dispatch)
    stack: list[Any]  # the pure-Python unpickler's value stack (not in the type stubs)

    def __init__(self, file: IO[bytes], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._record_classes: dict[str, type[ObjectRecord]] = {}

    def find_class(self, module: str, name: str) -> Any:
        if not (isinstance(module, str) and isinstance(name, str)):
            raise UnsafeCheckpointError("name a global with something other than text")
        allowed = ALLOWED_GLOBALS.get((module, name))
        if allowed is not None:
            return allowed
        if module.split(".", 1)[0] in CODE_RUNNING_MODULES:
            raise UnsafeCheckpointError(f"call {_printable(f'{module}.{name}')}")
        # Anything else is kept as an inert record class: calling it only stores the arguments.
        path = f"{module}.{name}"
        if path not in self._record_classes:
            self._record_classes[path] = _object_record_class(path)
        return self._record_classes[path]

    def load_build(self) -> None:
        target, state = self.stack[-2], self.stack[-1]
        if not isinstance(target, _BUILD_TARGETS):
            raise UnsafeCheckpointError(f"set the state of a {type(target).__qualname__} object")
        if isinstance(target, collections.OrderedDict) and not _is_plain_attribute_dict(state):
            # A state dict's OrderedDict carries `_metadata`; anything else would be a setattr.
            raise UnsafeCheckpointError("set special attributes on an OrderedDict")
        if isinstance(target, np.ndarray):
            _check_array_state(state)
        super().load_build()  # type: ignore[misc]  # pure-Python internals, not in the type stubs
        if isinstance(target, np.dtype):
            _check_plain_dtype(target)

    dispatch[pickle.BUILD[0]] = load_build  # type: ignore[assignment]  # the stubs type it for the base


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """`pickle.load` with the restricted `Unpickler` (the `pickle_module` interface torch.load uses)."""
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs: Any) -> Any:
    """`pickle.loads` with the restricted `Unpickler`."""
    return load(io.BytesIO(data), **kwargs)


# --- reading files ----------------------------------------------------------------------------

_IMAGE_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"RIFF": "a RIFF (WebP/WAV/AVI) file",
}


def sniff_checkpoint(path: str | os.PathLike) -> str:
    """Classify a checkpoint file by its bytes: "torch_zip", "torch_legacy", "pickle" or "safetensors".

    Raises `CheckpointError` (naming the file) when the file is missing, empty, truncated, an
    image, a TorchScript archive or any other non-checkpoint. Nothing is unpickled here.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(
            f"checkpoint not found: {path}. Check the path (see docs/checkpoints.md for the files ip2n "
            "reads)."
        )
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file; pass the checkpoint file itself.")
    with path.open("rb") as handle:
        head = handle.read(32)
    if not head:
        raise CheckpointError(f"{path} is empty (an interrupted download?); download it again.")
    for magic, what in _IMAGE_MAGIC.items():
        if head.startswith(magic):
            raise CheckpointError(
                f"{path} is {what}, not a checkpoint; check that you passed the right file."
            )
    if path.suffix == ".safetensors":
        return "safetensors"
    if head.startswith(b"PK"):
        return _sniff_zip(path)
    if head.startswith(b"\x80"):
        return "torch_legacy" if _LEGACY_TORCH_MAGIC_BYTES in head else "pickle"
    raise CheckpointError(
        f"{path} is not a checkpoint ip2n can read: expected a PyTorch file (torch.save), a pickle or "
        "a .safetensors file. Check that you passed the right file, or download it again."
    )


def _sniff_zip(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        raise CheckpointError(
            f"{path} is a damaged or truncated archive (an interrupted download?); download it again."
        ) from None
    if any(name.endswith("constants.pkl") or "/code/" in name for name in names):
        raise CheckpointError(
            f"{path} is a TorchScript archive (torch.jit.save), which contains executable code; ip2n "
            "does not load TorchScript. Use the original torch.save checkpoint instead."
        )
    if not any(name.endswith("data.pkl") for name in names):
        raise CheckpointError(
            f"{path} is a zip archive but not a PyTorch checkpoint; check that you passed the right file."
        )
    return "torch_zip"


def load_checkpoint(path: str | os.PathLike, *, mmap: bool = True) -> Any:
    """Unpickle a checkpoint file without running any code from it.

    Reads NVIDIA network pickles (plain pickles), `torch.save` zip archives and torch's legacy
    format. Official classes come back as inert records (`PersistentRecord`, `ModuleRecord`,
    `NamespaceRecord`, `EasyDictRecord`), tensors as CPU tensors. With `mmap`, tensors of a zip
    archive are memory-mapped instead of read (multi-GB DiT checkpoints).

    Raises `UnsafeCheckpointError` when the file asks for anything outside the allow-list and
    `CheckpointError` when it is missing, damaged or not a checkpoint.
    """
    kind = sniff_checkpoint(path)
    if kind == "safetensors":
        raise CheckpointError(f"{path} is a safetensors file; read it with ip2n.checkpoints.load_weights.")
    try:
        if kind == "torch_zip":
            return _torch_load_restricted(path, mmap=mmap)
        if kind == "torch_legacy":
            return _torch_load_restricted(path, mmap=False)
        with open(path, "rb") as handle:
            return load(handle)
    except UnsafeCheckpointError as exc:
        raise exc.for_file(path) from None
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to parse an untrusted file means "unreadable"
        raise _unreadable_error(path, exc) from exc


def _torch_load_restricted(path: str | os.PathLike, *, mmap: bool) -> Any:
    if os.getenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        # torch then rejects any pickle_module, even this restricted one.
        raise CheckpointError(
            f"{path} needs ip2n's restricted unpickler, but TORCH_FORCE_WEIGHTS_ONLY_LOAD is set, which "
            "makes torch refuse it; unset that variable (ip2n's loader never runs code from the file)."
        )
    logger.debug("reading %s with torch.load and ip2n's restricted unpickler", path)
    # This module is the pickle_module: torch subclasses its `Unpickler` for data.pkl.
    restricted = sys.modules[__name__]
    with warnings.catch_warnings():
        # Legacy files carry the source of pickled torch.nn classes for a consistency check that
        # cannot apply to records; the warning about it would only confuse.
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code for container")
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted, mmap=mmap)


def _unreadable_error(path: str | os.PathLike, exc: BaseException) -> CheckpointError:
    """The `CheckpointError` for a file whose parsing failed with `exc`."""
    reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    if isinstance(exc, MemoryError) and not reason:
        reason = "it declares more data than fits in memory"
    detail = f"{type(exc).__name__}: {reason}" if reason else type(exc).__name__
    return CheckpointError(
        f"cannot read {path} ({detail}). The file is damaged, truncated or not a checkpoint; download "
        "it again or check that you passed the right file."
    )
