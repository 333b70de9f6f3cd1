"""EG3D generator files written the way EG3D's training loop and InstructPix2NeRF write them.

The official networks are objects of EG3D's `@persistent_class`es: pickle stores each as a call of
`torch_utils.persistence._reconstruct_persistent_obj` with a dict (type, version, module_src,
class_name, state), and the renderer's plain modules by class reference. The project cannot run
the official code, so these writers start from the official fixture (`eg3d_pickle/
network-snapshot-small.pkl`, read into inert records by ip2n's own safe loader), change it the way a
training run does, and pickle the records back with the same globals and layout:

- the training loop registers `dataset_label_std` (the spread of the data set's camera labels, 25
  numbers) on G *before* `G_ema = copy.deepcopy(G)`, so G and G_ema both carry it as a buffer;
- a snapshot is `pickle.dump(dict(training_set_kwargs=..., G=..., D=..., G_ema=...,
  augment_pipe=...))`, protocol 4, with an `AugmentPipe` when training used ADA;
- InstructPix2NeRF's `G_ema.pkl` is `torch.save(G_ema)` (a zip archive, protocol 2).

While a file is written, stand-ins are registered in `sys.modules` under the official module paths
(`torch_utils.persistence`, `training.triplane`, `dnnlib.util`, ...) so that pickle names the same
globals the official objects do; they are removed afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ip2n.checkpoints.safe_unpickle import EasyDictRecord, ModuleRecord, PersistentRecord, load_checkpoint

LABEL_STD = torch.linspace(0.05, 0.6, 25)
_PERSISTENCE = "torch_utils.persistence"
_SOURCE_FILES = {
    "TriPlaneGenerator": "training/triplane.py",
    "DualDiscriminator": "training/dual_discriminator.py",
    "AugmentPipe": "training/augment.py",
}


def snapshot_records(fixtures_dir: Path) -> dict[str, Any]:
    """The official fixture snapshot (training_set_kwargs, G, D, G_ema, augment_pipe) as records."""
    return load_checkpoint(fixtures_dir / "eg3d_pickle" / "network-snapshot-small.pkl")


def register_label_std(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The training loop's `G.register_buffer("dataset_label_std", ...)`, then `G_ema = deepcopy(G)`.

    On the records: G gets the buffer, and G_ema, a deep copy of G at that moment, gets its own copy.
    """
    snapshot = dict(snapshot)
    for name in ("G", "G_ema"):
        record = copy.copy(snapshot[name])
        record.state = dict(record.state)
        record.state["_buffers"] = dict(record.state["_buffers"]) | {"dataset_label_std": LABEL_STD.clone()}
        snapshot[name] = record
    return snapshot


def augment_pipe() -> PersistentRecord:
    """An ADA `AugmentPipe` (training.augment) as a snapshot holds it: a few buffers, its options."""
    state = {
        "training": False,
        "_parameters": {},
        "_buffers": {"p": torch.tensor(0.23), "Hz_geom": torch.randn(12)},
        "_non_persistent_buffers_set": set(),
        "_modules": {},
        "_init_args": (),
        "_init_kwargs": EasyDictRecord(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1),
        "xflip": 1.0,
        "rotate90": 1.0,
    }
    return PersistentRecord("AugmentPipe", 6, state)


def write_snapshot(
    fixtures_dir: Path, path: Path, *, label_std: bool = True, augment: bool = True, extra: dict | None = None
) -> Path:
    """`network-snapshot-*.pkl` as EG3D's training loop writes it (plus the `extra` top-level entries)."""
    snapshot = snapshot_records(fixtures_dir) | (extra or {})
    if label_std:
        snapshot = register_label_std(snapshot)
    if augment:
        snapshot["augment_pipe"] = augment_pipe()
    snapshot = _as_official(snapshot)
    with _official_globals(), path.open("wb") as handle:
        _OfficialPickler(handle, protocol=4).dump(snapshot)
    return path


def write_torch_save(fixtures_dir: Path, path: Path, *, label_std: bool = True) -> Path:
    """InstructPix2NeRF's `G_ema.pkl`: `torch.save(G_ema)` of a generator from a training snapshot."""
    snapshot = snapshot_records(fixtures_dir)
    if label_std:
        snapshot = register_label_std(snapshot)
    generator = _as_official(snapshot["G_ema"])
    with _official_globals():
        torch.save(generator, path, pickle_module=_PICKLE_MODULE)
    return path


def write_discriminator(fixtures_dir: Path, path: Path) -> Path:
    """`torch.save(D)`: a file holding only the discriminator (what a user may mistake for G_ema)."""
    discriminator = _as_official(snapshot_records(fixtures_dir)["D"])
    with _official_globals():
        torch.save(discriminator, path, pickle_module=_PICKLE_MODULE)
    return path


# --- pickling records back under the official names --------------------------------------------------


def _reconstruct_persistent_obj(meta: dict) -> Any:  # pragma: no cover - only its name is pickled
    raise RuntimeError("a stand-in: never called")


_stand_ins: dict[str, Any] = {f"{_PERSISTENCE}._reconstruct_persistent_obj": _reconstruct_persistent_obj}


def _stand_in_class(class_path: str, base: type = object) -> type:
    if class_path not in _stand_ins:
        module, name = class_path.rsplit(".", 1)
        _stand_ins[class_path] = type(name, (base,), {"__module__": module, "__qualname__": name})
    return _stand_ins[class_path]


@contextlib.contextmanager
def _official_globals() -> Iterator[None]:
    """Register the stand-ins under their official module paths while a file is pickled."""
    _stand_in_class("dnnlib.util.EasyDict", dict)  # a dict subclass: pickled as NEWOBJ + SETITEMS
    added = []
    for class_path, stand_in in _stand_ins.items():
        module_path, name = class_path.rsplit(".", 1)
        stand_in.__module__, stand_in.__qualname__ = module_path, name
        parts = module_path.split(".")
        for depth in range(1, len(parts) + 1):
            module_name = ".".join(parts[:depth])
            if module_name not in sys.modules:
                sys.modules[module_name] = types.ModuleType(module_name)
                added.append(module_name)
        setattr(sys.modules[module_path], name, stand_in)
    try:
        yield
    finally:
        for module_name in added:
            del sys.modules[module_name]


def _as_official(value: Any) -> Any:
    """Records inside `value` → instances of the stand-in classes (persistent records stay records,
    with their state converted: `_OfficialPickler` reduces those itself)."""
    if isinstance(value, PersistentRecord):
        return PersistentRecord(value.class_name, value.version, _as_official(value.state))
    if isinstance(value, ModuleRecord):
        instance = object.__new__(_stand_in_class(value.class_path))
        instance.__dict__.update(_as_official(value.state))
        return instance
    if isinstance(value, EasyDictRecord):
        return _stand_in_class("dnnlib.util.EasyDict", dict)(
            {key: _as_official(item) for key, item in value.items()}
        )
    if isinstance(value, dict):
        return type(value)((key, _as_official(item)) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(_as_official(item) for item in value)
    return value


class _OfficialPickler(pickle.Pickler):
    """Pickles ip2n's records of EG3D's persistent objects as the official persistence module does."""

    def reducer_override(self, obj: Any) -> Any:
        if not isinstance(obj, PersistentRecord):
            return NotImplemented
        source = _SOURCE_FILES.get(obj.class_name, "training/networks_stylegan2.py")
        meta = {
            "type": "class",
            "version": obj.version,
            "module_src": f"# source omitted ({source})",
            "class_name": obj.class_name,
            "state": obj.state,
        }
        return _stand_ins[f"{_PERSISTENCE}._reconstruct_persistent_obj"], (meta,)


_PICKLE_MODULE = types.SimpleNamespace(Pickler=_OfficialPickler, __name__="official_pickle")
