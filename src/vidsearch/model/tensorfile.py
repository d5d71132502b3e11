"""PyTorch's pickled tensor files, read without executing code and without allocating what the file does not hold.

Three containers share one pickle dialect (a state dict of `_rebuild_tensor_v2` calls over persistent storages):
- the zip archive of `torch.save` (`archive/data.pkl` + one record per storage in `archive/data/`);
- an OpenAI TorchScript archive (the same, plus `constants.pkl` and code; modules are `__torch__.*` objects);
- the legacy `torch.save` stream (magic number, protocol, system info, the pickle, storage keys, raw storages).

The pickle is read by a restricted unpickler that builds *descriptions* (dtype, shape, strides, offset, storage
size) and nothing else. Every description is checked before one byte of tensor data is allocated: a view must lie
inside its storage and hold no more elements than it (no zero-stride or overlapping blow-ups), a storage must match
the size of the record that backs it, and all records together must fit in the file (compressed records may not
inflate past their declared size, and all declared sizes together are capped by the file's size). Tensors are then
materialised from the real bytes, one storage at a time.
"""

from __future__ import annotations

import io
import math
import pickle
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import torch

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Records of real weights files are stored, not deflated; a compressed one may decompress to at most this many
# times the file's size (deflate reaches ~1000x on constant data: that is the bomb this refuses).
MAX_INFLATION = 2
_SLACK_BYTES = 1 << 20
MAX_PICKLE_BYTES = 64 << 20
_MAX_DIMS = 16
_MAX_EXTENT = 1 << 48


class TensorFileError(ValueError):
    """The file is refused: one line saying what is wrong with it."""


@dataclass(frozen=True)
class StorageRef:
    key: str
    dtype: torch.dtype
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * _itemsize(self.dtype)


@dataclass(frozen=True)
class TensorRef:
    """A tensor as the file declares it; `shape` lets it be checked like a tensor before it exists."""

    storage: StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.size)

    def numel(self) -> int:
        return math.prod(self.size)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


class ScriptModule:
    """Stands for a TorchScript module object: it only keeps the attributes the pickle gives it."""

    def __init__(self, *args: Any) -> None:
        self.attributes: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("unexpected TorchScript module state")
        self.attributes = state


class _OrderedDict(dict):
    """`collections.OrderedDict` of a state dict; a subclass so that the `_metadata` attribute can be set on it."""


def _as_list(values: Any) -> list:
    return list(values)


def _tensor_ref(storage: Any, offset: Any, size: Any, stride: Any, *rest: Any) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("a tensor whose storage is not a storage record")
    size, stride = _int_tuple(size, "shape"), _int_tuple(stride, "strides")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < _MAX_EXTENT:
        raise pickle.UnpicklingError(f"tensor offset {offset!r} is not a non-negative integer")
    if len(size) != len(stride):
        raise pickle.UnpicklingError(f"tensor shape {list(size)} and strides {list(stride)} disagree")
    ref = TensorRef(storage, offset, size, stride)
    numel = ref.numel()
    if numel == 0:
        return ref
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.numel:
        raise pickle.UnpicklingError(f"tensor of shape {list(size)} at offset {offset} with strides {list(stride)} "
                                     f"reaches element {last} of a storage of {storage.numel}: out of bounds")
    if numel > storage.numel:
        raise pickle.UnpicklingError(f"tensor of shape {list(size)} has {numel} elements but its storage only "
                                     f"{storage.numel} (zero or overlapping strides {list(stride)})")
    return ref


def _int_tuple(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or len(values) > _MAX_DIMS or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v < _MAX_EXTENT for v in values):
        raise pickle.UnpicklingError(f"tensor {what} {str(values)[:80]} is not a short tuple of non-negative integers")
    return tuple(values)


def _parameter(data: Any, *rest: Any) -> Any:
    return data


class _DescribingUnpickler(pickle.Unpickler):
    """Admits tensor rebuilding, storages, (Ordered)dicts and lists, and, in TorchScript archives, module stand-ins."""

    def __init__(self, data: bytes | BinaryIO, *, torchscript: bool = False):
        super().__init__(io.BytesIO(data) if isinstance(data, bytes) else data)
        self.torchscript = torchscript
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if self.torchscript and module.startswith("__torch__."):
            return ScriptModule
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _tensor_ref
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return _parameter
        if (module, name) == ("collections", "OrderedDict"):
            return _OrderedDict
        if self.torchscript and module == "torch.jit._pickle" and name.startswith("build_") and name.endswith("list"):
            return _as_list
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weights file")

    def persistent_load(self, pid: Any) -> StorageRef:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], torch.dtype) and isinstance(pid[2], str) and isinstance(pid[4], int)
                and not isinstance(pid[4], bool) and 0 <= pid[4] < _MAX_EXTENT and (len(pid) == 5 or pid[5] is None)):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]}")
        ref = StorageRef(pid[2], pid[1], pid[4])
        if self.storages.setdefault(ref.key, ref) != ref:
            raise pickle.UnpicklingError(f"storage {ref.key} is declared twice with different types or sizes")
        return ref


def _describe(data: bytes | BinaryIO, *, torchscript: bool = False) -> tuple[Any, dict[str, StorageRef]]:
    unpickler = _DescribingUnpickler(data, torchscript=torchscript)
    try:
        return unpickler.load(), unpickler.storages
    except TensorFileError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, MemoryError, RecursionError) as error:
        raise TensorFileError(_first_line(error)) from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def tensor_refs(obj: Any) -> Iterator[TensorRef]:
    """Every tensor description inside what a pickle built (dicts, lists, module stand-ins)."""
    if isinstance(obj, TensorRef):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from tensor_refs(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensor_refs(value)
    elif isinstance(obj, ScriptModule):
        yield from tensor_refs(obj.attributes)


# --- containers -----------------------------------------------------------------------------------------------------


@dataclass
class DescribedFile:
    """What a tensor file's pickle declares, and how to get each storage's bytes once everything is checked."""

    root: Any
    storages: dict[str, StorageRef]
    read_storage: Callable[[StorageRef], bytearray]
    close: Callable[[], None]


def describe_zip(path: Path, archive: zipfile.ZipFile, *, torchscript: bool) -> DescribedFile:
    """A `torch.save` zip or a TorchScript archive: the pickle described, every record's size checked (the archive
    is closed when this fails, else by the description's `close`)."""
    try:
        return _describe_zip(path, archive, torchscript=torchscript)
    except BaseException:
        archive.close()
        raise


def _describe_zip(path: Path, archive: zipfile.ZipFile, *, torchscript: bool) -> DescribedFile:
    names = archive.namelist()
    data_name = next((n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")), None)
    if data_name is None:
        raise TensorFileError("zip archive without data.pkl")
    prefix = data_name.rsplit("/", 1)[0]
    root, storages = _describe(bytes(_read_member(archive, archive.getinfo(data_name), MAX_PICKLE_BYTES)),
                               torchscript=torchscript)
    records = {key: _record(archive, f"{prefix}/data/{key}", ref) for key, ref in storages.items()}
    _check_total(path, sum(info.file_size for info in records.values()))
    return DescribedFile(root, storages, lambda ref: _read_member(archive, records[ref.key], ref.nbytes),
                         archive.close)


def _record(archive: zipfile.ZipFile, name: str, ref: StorageRef) -> zipfile.ZipInfo:
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise TensorFileError(f"storage {ref.key} has no record in the archive") from None
    if info.file_size != ref.nbytes:
        raise TensorFileError(f"storage {ref.key} declares {ref.nbytes} bytes but its record holds {info.file_size}")
    return info


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytearray:
    """A record's bytes, never more than its declared size nor `limit` (zipfile stops inflating at the former)."""
    if info.file_size > limit:
        raise TensorFileError(f"record {info.filename} declares {info.file_size} bytes, more than the {limit} allowed")
    with archive.open(info) as handle:
        return _read_exact(handle, info.file_size, info.filename)


def _read_exact(handle: BinaryIO, nbytes: int, what: str) -> bytearray:
    """Exactly `nbytes` into one buffer (no intermediate copy), or an error saying the data is truncated."""
    buffer = bytearray(nbytes)
    view, done = memoryview(buffer), 0
    while done < nbytes:
        got = handle.readinto(view[done:])
        if not got:
            raise TensorFileError(f"{what} is truncated")
        done += got
    return buffer


def _check_total(path: Path, declared: int) -> None:
    real = path.stat().st_size
    if declared > MAX_INFLATION * real + _SLACK_BYTES:
        raise TensorFileError(f"its storages declare {declared} bytes but the file holds only {real} "
                              "(forged sizes, or records compressed to inflate)")


def describe_legacy(path: Path) -> DescribedFile:
    """A legacy `torch.save` stream: storages follow the pickle, each an 8-byte element count then its bytes."""
    handle = open(path, "rb")
    try:
        return _describe_legacy(path, handle)
    except BaseException:
        handle.close()
        raise


def _describe_legacy(path: Path, handle: BinaryIO) -> DescribedFile:
    magic, protocol, sys_info = (_describe(handle)[0] for _ in range(3))
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
        raise TensorFileError("not a torch.save file (wrong magic number or protocol)")
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise TensorFileError("only little-endian torch.save files are supported")
    root, storages = _describe(handle)
    keys = _describe(handle)[0]
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise TensorFileError("the storage list does not match the storages the pickle declares")
    _check_total(path, sum(ref.nbytes for ref in storages.values()))
    size = path.stat().st_size
    offsets: dict[str, int] = {}
    position = handle.tell()
    for key in keys:
        handle.seek(position)
        count = int.from_bytes(handle.read(8), "little")
        if count != storages[key].numel:
            raise TensorFileError(f"storage {key} declares {storages[key].numel} elements but its data {count}")
        offsets[key], position = position + 8, position + 8 + storages[key].nbytes
        if position > size:
            raise TensorFileError(f"storage {key} needs {storages[key].nbytes} bytes past the end of the file: "
                                  "truncated or forged")

    def read(ref: StorageRef) -> bytearray:
        handle.seek(offsets[ref.key])
        return _read_exact(handle, ref.nbytes, f"storage {ref.key}")

    return DescribedFile(root, storages, read, handle.close)


# --- materialising ----------------------------------------------------------------------------------------------------


def materialise(described: DescribedFile, refs: dict[str, TensorRef]) -> dict[str, torch.Tensor]:
    """Real tensors for `refs` (already checked), reading one storage at a time; each tensor owns its memory."""
    by_storage: dict[str, list[str]] = {}
    for name, ref in refs.items():
        by_storage.setdefault(ref.storage.key, []).append(name)
    out: dict[str, torch.Tensor] = {}
    for key, names in by_storage.items():
        ref = described.storages[key]
        raw = described.read_storage(ref)
        storage = torch.frombuffer(raw, dtype=ref.dtype) if raw else torch.empty(0, dtype=ref.dtype)
        for name in names:
            view = refs[name]
            tensor = torch.as_strided(storage, view.size, view.stride, view.offset)
            whole = len(names) == 1 and view.numel() == ref.numel and tensor.is_contiguous()
            out[name] = tensor if whole else tensor.clone()  # a view sharing a storage gets its own memory
    return out
