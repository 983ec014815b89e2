"""vdir:// through fsspec and pandas, as a data scientist uses it."""

from __future__ import annotations

import fsspec
import pandas as pd

from vdir.core import VDir


def test_fsspec_protocol_round_trip(vd: VDir) -> None:
    fs = fsspec.filesystem("vdir", vd=vd, skip_instance_cache=True)
    fs.pipe("vdir:///data/a.bin", b"0123456789")
    assert fs.cat("vdir:///data/a.bin") == b"0123456789"
    assert fs.cat_file("/data/a.bin", start=2, end=5) == b"234"
    assert fs.cat_file("/data/a.bin", start=-3) == b"789"
    assert fs.ls("/data", detail=False) == ["/data/a.bin"]
    info = fs.info("/data/a.bin")
    assert info["size"] == 10 and info["type"] == "file" and info["replicas"] == ["local"]
    with fs.open("/data/b.txt", "wb") as f:
        f.write(b"written through fsspec")
    assert vd.cat("/data/b.txt") == b"written through fsspec"
    fs.mv("/data/b.txt", "/data/c.txt")
    assert sorted(fs.ls("/data", detail=False)) == ["/data/a.bin", "/data/c.txt"]
    fs.rm("/data", recursive=True)
    assert not fs.exists("/data")


def test_pandas_reads_and_writes_vdir_urls(vd: VDir) -> None:
    df = pd.DataFrame({"x": [1, 2, 3], "name": ["a", "b", "ü"]})
    opts = {"vd": vd, "skip_instance_cache": True}
    df.to_csv("vdir:///frames/df.csv", index=False, storage_options=opts)
    assert vd.stat("/frames/df.csv").hash is not None
    back = pd.read_csv("vdir:///frames/df.csv", storage_options=opts)
    assert back.equals(df)
