"""Checkpoints and training states: written atomically, verified, loaded safely and strictly.

Our checkpoints are a dict ``{"state_dict", "config", "metrics", "scoring", "model", "dataset",
"version", "checksum"}`` (plain data, loadable with ``weights_only=True``). A bare
``state_dict`` as the reference's users have them is accepted too: its
``v_preference``/``t_preference`` aliases are dropped as the reference's resume path does,
``result_embed`` is ignored, and every other key must match the model exactly (the reference
ignored mismatches silently).

**Verification.** Every file mgrec writes with ``save``/``seal`` (checkpoints and training
states) carries ``"checksum": "sha256:<hex>"``: the SHA-256 of everything else in the file, in
a canonical encoding (each tensor's dtype, shape and raw bytes; every plain value by type;
mappings in sorted key order). ``load_file`` recomputes it after loading and refuses a file
whose contents no longer match it (one line: the file is damaged).

The checksum lives *inside* the file, not in a manifest beside it, because:

- the file is written in one atomic rename, so the file and its checksum can never disagree
  after a crash or a full disk (a manifest would be a second write that can fail on its own);
- a checkpoint copied elsewhere, or sent to a colleague, stays verifiable on its own;
- it covers what is actually loaded (every tensor and value), which is what must be intact; a
  change to the bytes that does not change any loaded value is harmless, and structural damage
  that stops loading is reported as truncated or damaged.

A file with no checksum (a released reference state_dict, a checkpoint of an older mgrec) loads
as before, marked unverified (``read`` returns ``"verified": False``); when it is a zip archive
(torch's format) its records' CRC-32s are still checked, which catches changed bytes. Loading
always uses ``weights_only=True``: a file that asks for anything but tensors and plain data
(a pickle that would run code) is refused before any of it runs.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgrec import atomic
from mgrec.errors import UserError
from mgrec.version import __version__

DROPPED_ALIASES = ("v_preference", "t_preference")
IGNORED_KEYS = ("result_embed",)
CHECKSUM_KEY = "checksum"
CHECKSUM_PREFIX = "sha256:"
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_2 = b"\x80\x02"  # how torch's legacy (pre-zip) format starts


class UnreadableFile(UserError):
    """A checkpoint or training state that cannot be used; the message says why, in words."""


class DamagedFile(UnreadableFile):
    """A file whose contents do not match the checksum written into it."""


# --- the checksum -------------------------------------------------------------------------------


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` to ``digest`` in a canonical, type-tagged, length-prefixed encoding."""

    def atom(tag: bytes, data: bytes) -> None:
        digest.update(tag + struct.pack("<Q", len(data)) + data)

    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.layout != torch.strided:
            raise TypeError(f"cannot checksum a {tensor.layout} tensor")
        tensor = tensor.to("cpu").contiguous()
        atom(b"T", f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        data = tensor.reshape(-1).view(torch.uint8) if tensor.numel() else None
        digest.update(struct.pack("<Q", 0 if data is None else data.numel()))
        if data is not None:
            digest.update(data.numpy())  # the raw bytes, without a copy
    elif isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            encoded = hashlib.sha256()
            _feed(encoded, key)
            items.append((encoded.digest(), item))
        atom(b"D", struct.pack("<Q", len(items)))
        for key_digest, item in sorted(items, key=lambda pair: pair[0]):
            digest.update(key_digest)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        atom(b"L", struct.pack("<Q", len(value)))
        for item in value:
            _feed(digest, item)
    elif value is None:
        atom(b"N", b"")
    elif isinstance(value, bool):
        atom(b"B", b"\x01" if value else b"\x00")
    elif isinstance(value, int):
        atom(b"I", str(value).encode())
    elif isinstance(value, float):
        atom(b"F", struct.pack("<d", value) if not math.isnan(value) else b"nan")
    elif isinstance(value, str):
        atom(b"S", value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, bytes):
        atom(b"Y", value)
    elif isinstance(value, torch.dtype):
        atom(b"t", str(value).encode())
    else:
        raise TypeError(f"cannot checksum a {type(value).__name__}")


def content_checksum(payload: Mapping[str, Any]) -> str:
    """``"sha256:<hex>"`` of every entry of ``payload`` but the checksum itself."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != CHECKSUM_KEY})
    return CHECKSUM_PREFIX + digest.hexdigest()


def seal(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` with its checksum added (tensors moved to the CPU once: what is hashed is
    what is written)."""
    plain = _to_cpu(dict(payload))
    plain.pop(CHECKSUM_KEY, None)
    plain[CHECKSUM_KEY] = content_checksum(plain)
    return plain


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return type(value)((k, _to_cpu(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_cpu(v) for v in value)
    return value


# --- writing and reading ------------------------------------------------------------------------


def save(path: Path, payload: Mapping[str, Any]) -> None:
    """Write ``payload`` (with the project version and its checksum) to ``path`` atomically; a
    failed write raises its ``OSError`` and leaves an older file of that name untouched."""
    atomic.save_torch(seal({**payload, "version": __version__}), Path(path))


def _not_a_file(path: Path, what: str) -> str | None:
    """What is wrong with ``path`` before it is even opened, in words; None if it is a file."""
    if path.is_dir():
        inside = sorted(p.name for p in path.glob("*.pth"))
        hint = f" (it holds {', '.join(inside[:3])}{', ...' if len(inside) > 3 else ''})"
        return f"is a directory, not a {what} file{hint if inside else ''}"
    if not path.exists():
        return f"{what} file not found"
    if not path.is_file():
        return f"is not a regular file, so not a {what}"
    return None


def _head(path: Path) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(4)


def _why_not_loaded(path: Path, exc: BaseException, what: str) -> str:
    """Why ``torch.load`` failed on ``path``, in words (never an exception class name)."""
    if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
        return (
            "refused: it holds Python objects other than tensors and plain data, and loading "
            f"them could run code (mgrec reads a {what} with weights_only=True)"
        )
    head = _head(path)
    if head.startswith(ZIP_MAGIC[:2]):
        if not zipfile.is_zipfile(path):
            return (
                "is truncated: its archive ends before its table of contents (a copy or a "
                "write that was cut short?)"
            )
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError):
            return "is damaged: its archive cannot be read"
        if not any(name.endswith("data.pkl") for name in names):
            return f"is a zip archive but not a PyTorch {what}"
        if bad is not None:
            return f"is damaged: its record {bad} fails its CRC check (changed bytes)"
        return f"is damaged: its records are intact, but they do not make a PyTorch {what}"
    if not head.startswith(PICKLE_PROTOCOL_2):
        return f"is not a {what}: not a file written by torch.save"
    text = str(exc).lower()
    if isinstance(exc, EOFError) or "ran out of input" in text or "eof" in text:
        return "is truncated: it ends in the middle of its data"
    return f"is damaged or truncated: PyTorch cannot read it as a {what}"


def load_file(path: Path, what: str = "checkpoint") -> tuple[Any, bool]:
    """Load a file written by ``torch.save`` safely (tensors and plain data only) and verify it.

    Returns ``(contents, verified)``: ``verified`` is True when the file carries a checksum and
    its contents match it (the checksum entry is removed from the contents), False when it
    carries none (a file from elsewhere). Raises ``UnreadableFile`` saying in words what is
    wrong (not found, a directory, unreadable, empty, truncated, not a checkpoint, refused,
    damaged); ``DamagedFile`` when the contents do not match the checksum.
    """
    path = Path(path)
    problem = _not_a_file(path, what)
    if problem is not None:
        raise UnreadableFile(f"{path}: {problem}")
    try:
        if path.stat().st_size == 0:
            raise UnreadableFile(
                f"{path}: is empty (0 bytes): not a {what} (a write that was cut short?)"
            )
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except UnreadableFile:
        raise
    except PermissionError as exc:
        raise UnreadableFile(f"{path}: cannot be read (permission denied)") from exc
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        try:
            why = _why_not_loaded(path, exc, what)
        except OSError as read_error:
            why = f"cannot be read ({read_error.strerror or read_error})"
        raise UnreadableFile(f"{path}: {why}") from exc
    if not isinstance(payload, dict) or CHECKSUM_KEY not in payload:
        if _head(path) == ZIP_MAGIC:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise DamagedFile(
                    f"{path}: is damaged: its record {bad} fails its CRC check (changed bytes); "
                    "nothing was read from it"
                )
        return payload, False
    expected = payload.pop(CHECKSUM_KEY)
    try:
        actual = content_checksum(payload)
    except TypeError:
        actual = None
    if actual != expected:
        raise DamagedFile(
            f"{path}: is damaged: its contents do not match the checksum written with it "
            "(changed since mgrec saved it); nothing was read from it"
        )
    return payload, True


def read(path: Path) -> dict[str, Any]:
    """Load and verify a checkpoint file (tensors and plain data only).

    Returns ``{"state_dict": ..., "config": dict | None, "verified": bool, ...}``: an mgrec
    checkpoint's payload, or a bare state_dict with ``config`` None. ``verified`` says whether
    its checksum was checked (False: a file from elsewhere, which carries none).
    """
    path = Path(path)
    payload, verified = load_file(path)
    if not isinstance(payload, dict):
        raise UnreadableFile(
            f"{path}: is not a checkpoint: it holds a {type(payload).__name__}, not a state_dict "
            "(a mapping of names to tensors)"
        )
    if "state_dict" in payload and isinstance(payload["state_dict"], dict):
        return {"config": None, **payload, "verified": verified}
    if not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise UnreadableFile(f"{path}: is not a state_dict: some values are not tensors")
    return {"state_dict": payload, "config": None, "verified": verified}


def load_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> list[str]:
    """Load ``state_dict`` into ``model``; any missing, unexpected or mis-shaped key is an error.

    Returns notes on what was dropped or ignored (for the log).
    """
    state = dict(state_dict)
    notes = []
    own = model.state_dict()
    for alias, canonical in getattr(model, "state_aliases", {}).items():
        if canonical in state:  # the alias is the same tensor: the canonical key decides
            state[alias] = state[canonical]
    for key, warning in getattr(model, "optional_state", {}).items():
        if key not in state and key in own:
            state[key] = own[key]
            notes.append(f"warning: {key} is missing: {warning}")
    if "v_preference" in state and "v_preference" not in own:
        for key in DROPPED_ALIASES:
            state.pop(key, None)
        notes.append("dropped the v_preference/t_preference aliases (as the reference does)")
    for key in IGNORED_KEYS:
        if key in state and key not in own:
            state.pop(key)
            notes.append(f"ignored '{key}' (a cache, recomputed from the parameters)")
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    misshaped = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped keys: {', '.join(misshaped)}")
    if problems:
        raise UserError(
            f"{source}: does not fit {type(model).__name__} with this config ({'; '.join(problems)}); "
            "check --model and the size settings (e.g. --embedding_size=...)"
        )
    model.load_state_dict(state, strict=True)
    return notes
