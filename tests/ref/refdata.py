"""Writer for the reference-data files the C tests read (tests/common/refdata.c).

Format (little-endian): the 8 bytes b"OWLREF1\n", then records of
  u32 name length, name (UTF-8), u32 kind (0 = f64, 1 = i64), u32 ndim,
  u64 dims[ndim], then prod(dims) values.
Every array is stored as f64 or i64 whatever its source dtype, so the C side
compares against exactly what PyTorch computed.
"""
import struct

import numpy as np


class RefWriter:
    def __init__(self, path):
        self.f = open(path, "wb")
        self.f.write(b"OWLREF1\n")
        self.names = set()

    def add(self, name, array, kind="f64"):
        if name in self.names:
            raise ValueError(f"duplicate reference name {name}")
        self.names.add(name)
        if hasattr(array, "detach"):
            array = array.detach().cpu()
            array = array.double().numpy() if kind == "f64" else array.long().numpy()
        a = np.ascontiguousarray(np.asarray(array, dtype=np.float64 if kind == "f64" else np.int64))
        nb = name.encode()
        self.f.write(struct.pack("<I", len(nb)))
        self.f.write(nb)
        self.f.write(struct.pack("<II", 0 if kind == "f64" else 1, a.ndim))
        self.f.write(struct.pack(f"<{a.ndim}Q", *a.shape))
        self.f.write(a.astype("<f8" if kind == "f64" else "<i8").tobytes())

    def close(self):
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
