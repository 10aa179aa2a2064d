"""The MNIST / Fashion-MNIST raw IDX files: their official checksums and a header/size check.

torchvision reads these files without checking them; :func:`check_idx_files` does, before
``ltfunc.data.load_dataset`` lets torchvision read them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["MNIST_MD5", "check_idx_files"]

MNIST_MD5: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
"""MD5s of the *uncompressed* official MNIST / Fashion-MNIST files (what torchvision reads).
torchvision's ``MNIST.resources`` / ``FashionMNIST.resources`` list the ``.gz`` files' MD5s
only; these were computed from copies whose ``.gz`` files match those official MD5s
(torchvision 0.29), decompressed by torchvision."""

_IDX_DTYPES = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}  # IDX type code -> item size


def check_idx_files(name: str, folder: Path, verify: bool) -> None:
    """Check the raw IDX files that exist: size against header, then (``verify``) the official MD5.

    Missing files are left to torchvision (and its download, which checks the ``.gz`` MD5s).
    """
    import hashlib

    cls_dir = "MNIST" if name == "mnist" else "FashionMNIST"
    for fname, expected in MNIST_MD5[name].items():
        path = folder / cls_dir / "raw" / fname
        if not path.is_file():
            continue
        fix = "delete it and download it again (download=True; CLI --download)"
        with open(path, "rb") as fh:
            head = fh.read(4)
            ndim = head[3] if len(head) == 4 else 0
            dims = fh.read(4 * ndim)
        size = path.stat().st_size
        if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_DTYPES or len(dims) < 4 * ndim:
            raise ValueError(f"load_dataset: {path} is not an IDX file (bad header): {fix}")
        n = 1
        for i in range(ndim):
            n *= int.from_bytes(dims[4 * i : 4 * i + 4], "big")
        want = 4 + 4 * ndim + n * _IDX_DTYPES[head[2]]
        if size != want:
            raise ValueError(
                f"load_dataset: {path} is truncated or corrupt ({size} bytes, its header promises "
                f"{want}): {fix}"
            )
        if verify:
            got = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
            if got != expected:
                raise ValueError(
                    f"load_dataset: {path} has MD5 {got}, expected the official {expected}: the file "
                    f"is corrupt or not the official one. Fix: {fix}; or pass verify=False to "
                    "load_dataset to skip the MD5 check (e.g. for hand-made test files)."
                )
