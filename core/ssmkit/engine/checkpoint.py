"""Checkpoints: safetensors weights plus a JSON training state, written atomically, verified on load.

A checkpoint is a folder ``checkpoints/step_<N>/`` holding

- ``model.safetensors``: the model's weights;
- ``state.safetensors``: every other tensor of the training state (optimizer moments, RNG states);
- ``state.json``: step/epoch/position, optimizer and scheduler scalars, Python/numpy RNG states,
  the resolved config, and the SHA-256 and size of both tensor files.

It is written to a hidden temporary folder, fsynced, then renamed into place, so a crash never
leaves a half-written ``step_<N>`` behind. A checkpoint damaged later (truncated, bit flips) fails
its checksum; :func:`latest_checkpoint` then falls back to the newest good one. Nothing is ever
unpickled: safetensors and JSON only, and foreign ``.pt``/``.pth`` weights go through
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ssmkit.engine.files import (
    ChecksumError,
    atomic_path,
    fsync_path,
    sha256_file,
    verify_sidecar,
    write_sidecar,
)
from ssmkit.errors import UserError

FORMAT_VERSION = 1


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, corrupt or does not fit the model."""


def _contiguous_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage (tied weights); each tensor is saved as its own copy and
    # loaded back with strict=False on the duplicates only.
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    for k, v in model.state_dict().items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if v.numel() and key in seen:
            continue
        seen.add(key)
        out[k] = v.detach().to("cpu").contiguous().clone()
    return out


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Atomically write ``model``'s weights as safetensors, with a ``<file>.json`` SHA-256 sidecar.

    Every weights file the engine writes goes through here, so every one is verified on load.
    """
    p = Path(path)
    with atomic_path(p) as tmp:
        save_file(_contiguous_state(model), str(tmp))
    write_sidecar(p)


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict without executing code: a checkpoint folder, ``.safetensors`` (checked
    against its ``.json`` sidecar when there is one), or a foreign ``.pt``/``.pth``/``.bin``
    through ``torch.load(weights_only=True)``."""
    p = Path(path)
    if p.is_dir():
        verify_checkpoint(p)
        p = p / "model.safetensors"
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if p.suffix == ".safetensors":
        try:
            verify_sidecar(p)
        except ChecksumError as err:
            raise CheckpointError(f"checkpoint {err}") from None
        try:
            return load_file(str(p))
        except (SafetensorError, OSError, ValueError) as err:
            raise CheckpointError(f"checkpoint {str(p)!r} is truncated or corrupt ({err})") from None
    if p.suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError for code-carrying pickles, RuntimeError for bad zips
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CheckpointError(
                f"refusing to load {str(p)!r}: it is not a plain tensor file loadable with "
                f"weights_only=True ({first})"
            ) from None
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise CheckpointError(f"{str(p)!r} does not hold a state dict of tensors")
        return obj
    raise CheckpointError(f"unknown checkpoint format {p.suffix!r} for {str(p)!r}; expected a checkpoint "
                          "folder, .safetensors, or .pt/.pth/.bin")


def load_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load weights from ``path`` into ``model``, with a clear error on mismatched keys/shapes."""
    state = load_weights(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    # Tied weights are saved once; a missing key whose tensor shares storage with a loaded one is fine.
    missing = [k for k in missing if not any(own[k] is own[j] or own[k].data_ptr() == own[j].data_ptr()
                                              for j in own if j in state)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}")
        if shapes:
            parts.append(f"shape mismatch {shapes[:3]}")
        raise CheckpointError(f"checkpoint {str(path)!r} does not fit the model: " + "; ".join(parts))
    model.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------- training state


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON part, tensor part) of every RNG the training loop may draw from."""
    py = random.getstate()
    npst = np.random.get_state()
    js = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
    }
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = s
    return js, tensors


def set_rng_state(js: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    v, internal, gauss = js["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = js["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        states = [tensors[f"rng/cuda/{i}"] for i in range(len(cuda))]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])


def _json_default(o: Any) -> Any:
    if isinstance(o, (tuple, set)):
        return list(o)
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, torch.Tensor) and o.numel() == 1:
        return o.item()
    if callable(o):
        return None
    raise TypeError(f"cannot store {type(o).__name__} in a checkpoint's JSON state")


def _split_optimizer(name: str, sd: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state_js: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        entry: dict[str, Any] = {}
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim/{name}/{idx}/{k}"] = v.detach().to("cpu").contiguous().clone()
                entry[k] = {"__tensor__": f"optim/{name}/{idx}/{k}"}
            else:
                entry[k] = v
        state_js[str(idx)] = entry
    return {"state": state_js, "param_groups": sd["param_groups"]}


def _join_optimizer(js: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for idx, entry in js["state"].items():
        state[int(idx)] = {k: tensors[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else v
                           for k, v in entry.items()}
    return {"state": state, "param_groups": js["param_groups"]}


def save_checkpoint(
    ckpt_dir: str | Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    position: dict[str, Any],
    config: dict[str, Any],
    keep: int = 2,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``ckpt_dir/step_<N>/`` atomically and delete all but the newest ``keep`` checkpoints.

    ``position`` must hold ``step`` (and whatever else the loop needs to resume: epoch, batch).
    """
    root = Path(ckpt_dir)
    root.mkdir(parents=True, exist_ok=True)
    step = int(position["step"])
    final = root / f"step_{step:08d}"
    tmp = root / f".tmp-step_{step:08d}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    rng_js, rng_t = rng_state()
    tensors.update(rng_t)
    tensors.update(extra_tensors or {})  # e.g. the weight EMA's shadow copy, "ema/<key>"
    opt_js = {n: _split_optimizer(n, o.state_dict(), tensors) for n, o in optimizers.items()}
    sched_js = {n: s.state_dict() for n, s in schedulers.items()}
    save_file(_contiguous_state(model), str(tmp / "model.safetensors"))
    save_file(tensors, str(tmp / "state.safetensors"))
    files = {f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size}
             for f in ("model.safetensors", "state.safetensors")}
    state = {"format": FORMAT_VERSION, "position": position, "optimizers": opt_js, "schedulers": sched_js,
             "rng": rng_js, "config": config, "files": files}
    (tmp / "state.json").write_text(json.dumps(state, default=_json_default))
    for f in tmp.iterdir():
        fsync_path(f)
    if final.exists():  # re-saving the same step (e.g. the final checkpoint after an epoch-end one)
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(root)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Checkpoint folders, oldest first (temporary folders of interrupted saves excluded)."""
    root = Path(ckpt_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step_"))


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Return the parsed state.json of checkpoint folder ``path``; raise if anything is damaged."""
    p = Path(path)
    sj = p / "state.json"
    if not sj.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} has no state.json (incomplete or not a checkpoint)")
    try:
        state = json.loads(sj.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {str(p)!r}: state.json is truncated or corrupt ({err})") from None
    if not isinstance(state, dict) or "files" not in state or "position" not in state:
        raise CheckpointError(f"checkpoint {str(p)!r}: state.json lacks 'files'/'position'")
    for name, meta in state["files"].items():
        f = p / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {str(p)!r}: {name} is missing")
        size = f.stat().st_size
        if size != meta["bytes"]:
            raise CheckpointError(f"checkpoint {str(p)!r}: {name} is {size} bytes, expected {meta['bytes']} "
                                  "(truncated)")
        if sha256_file(f) != meta["sha256"]:
            raise CheckpointError(f"checkpoint {str(p)!r}: {name} fails its SHA-256 check (corrupt)")
    return state


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    """The newest checkpoint that verifies; damaged newer ones are reported and skipped (kept on disk)."""
    for p in reversed(list_checkpoints(ckpt_dir)):
        try:
            verify_checkpoint(p)
            return p
        except CheckpointError as err:
            warnings.warn(f"skipping damaged checkpoint: {err}", stacklevel=2)
    return None


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizers: dict[str, torch.optim.Optimizer],
    schedulers: dict[str, Any],
    restore_rng: bool = True,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote; returns the saved ``position``.

    ``extra_tensors``, when given, is filled with the state tensors that are neither optimizer
    nor RNG state (what ``save_checkpoint``'s ``extra_tensors`` stored)."""
    p = Path(path)
    state = verify_checkpoint(p)
    load_model_weights(model, p / "model.safetensors")
    try:
        tensors = load_file(str(p / "state.safetensors"))
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"checkpoint {str(p)!r}: state.safetensors is corrupt ({err})") from None
    if set(state["optimizers"]) != set(optimizers):
        raise CheckpointError(f"checkpoint {str(p)!r} has optimizers {sorted(state['optimizers'])}, "
                              f"the app builds {sorted(optimizers)}")
    for name, opt in optimizers.items():
        opt.load_state_dict(_join_optimizer(state["optimizers"][name], tensors))
    for name, sched in schedulers.items():
        if name in state["schedulers"]:
            sched.load_state_dict(state["schedulers"][name])
    if restore_rng:
        set_rng_state(state["rng"], tensors)
    if extra_tensors is not None:
        extra_tensors.update({k: v for k, v in tensors.items() if not k.startswith(("optim/", "rng/"))})
    return state["position"]


__all__ = [
    "CheckpointError", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
    "load_model_weights", "load_weights", "save_checkpoint", "save_weights", "verify_checkpoint",
]
