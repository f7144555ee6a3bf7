"""Strict JSON records: every results.json, report.json and config.json the commands write goes through
``atomic_write_json``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from lway_rt.io.weights import atomic_write_json


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


def test_atomic_write_json_writes_strict_json_and_replaces_whole(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('{"earlier": 1}')
    atomic_write_json(path, {"psnr": {"identical": math.inf, "nan": float("nan"), "np": np.float32(23.5)},
                             "n": np.int64(3), "ok": np.bool_(True), "file": Path("a/b.png"), "list": (1.0, -math.inf)})
    data = _strict(path.read_text())
    assert data == {"psnr": {"identical": None, "nan": None, "np": 23.5}, "n": 3, "ok": True, "file": "a/b.png",
                    "list": [1.0, None]}
    assert path.read_text().endswith("}\n") and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_long_lists_in_messages_name_the_first_and_count_the_rest(tmp_path):
    """One NaN tensor read "(body.0.weight and 0 more)"; the listing helper names what there is."""
    import pytest
    import torch

    from lway_rt.errors import ModelError, listing
    from lway_rt.io.weights import save_safetensors

    assert listing(["a", "b", "c", "d"], 2) == "a, b and 2 more" and listing(["a"], 1) == "a" and listing([], 3) == ""
    assert listing(range(3), 3, "; ") == "0; 1; 2"
    with pytest.raises(ModelError) as info:
        save_safetensors(tmp_path / "w.safetensors", {"body.0.weight": torch.tensor([float("nan")]), "body.0.bias": torch.zeros(1)})
    assert str(info.value) == "refusing to save weights with NaN/inf values (body.0.weight)"
    assert not (tmp_path / "w.safetensors").exists()


def test_a_cut_safetensors_file_whose_header_length_starts_0x80_is_named_as_cut(tmp_path):
    """A safetensors header length's low byte of 0x80 read as a pickle's first byte: a cut checkpoint was called "a
    PyTorch checkpoint named .safetensors: rename it to .pth"."""
    import pytest
    import torch

    from lway_rt.errors import DamagedFileError
    from lway_rt.io.weights import load_state_file, safetensors_bytes

    for pad in range(300):  # metadata of a length that puts 0x80 in the header length's low byte
        blob = safetensors_bytes({"w": torch.zeros(4096)}, {"note": "x" * pad})
        if blob[0] == 0x80:
            break
    assert blob[0] == 0x80
    cut = tmp_path / "run.safetensors"
    cut.write_bytes(blob[:60])  # cut inside its header
    with pytest.raises(DamagedFileError, match="is not a readable safetensors file"):
        load_state_file(cut)
    pth = tmp_path / "named.safetensors"  # a real pickle-zip under the wrong name is still named as such
    torch.save({"w": torch.zeros(2)}, pth)
    from lway_rt.errors import ModelError

    with pytest.raises(ModelError, match="is a PyTorch checkpoint named .safetensors"):
        load_state_file(pth)


def test_odd_destinations_are_one_line_refusals_and_links_stay_links(tmp_path):
    """A link that loops was replaced by a regular file, a link into a missing folder made that folder tree, and a path
    longer than the system allows escaped as a bare OSError (the link and device checks ran outside the try)."""
    import os

    import pytest

    from lway_rt.errors import OutputError

    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    with pytest.raises(OutputError, match="cannot write .*a: Too many levels of symbolic links; name another file"):
        atomic_write_json(tmp_path / "a", {"x": 1})
    assert (tmp_path / "a").is_symlink()
    (tmp_path / "dangling").symlink_to("no/such/f.json")
    with pytest.raises(OutputError, match="whose folder does not exist"):
        atomic_write_json(tmp_path / "dangling", {"x": 1})
    assert not (tmp_path / "no").exists()
    (tmp_path / "later").symlink_to("made.json")  # a link to a file not made yet, in a folder that exists: written
    atomic_write_json(tmp_path / "later", {"x": 1})
    assert (tmp_path / "later").is_symlink() and json.loads((tmp_path / "made.json").read_text()) == {"x": 1}
    deep = tmp_path.joinpath(*["d" * 200] * (os.pathconf("/", "PC_PATH_MAX") // 200 + 2), "r.json")
    with pytest.raises(OutputError, match="File name too long"):
        atomic_write_json(deep, {"x": 1})


def test_atomic_write_through_a_link_and_dotdot_goes_where_the_os_takes_the_path(tmp_path):
    """``LINK/../out/x.json`` (LINK a link to far/sub) is far/out/x.json to the OS, whose folder is made there; the
    temporary file was made under the path read lexically (./out, missing), so the write failed."""
    import os

    from lway_rt.io.weights import atomic_write_json

    (tmp_path / "far" / "sub").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "far" / "sub")
    atomic_write_json(os.path.join(tmp_path / "link", "..", "out", "x.json"), {"a": 1})
    assert json.loads((tmp_path / "far" / "out" / "x.json").read_text()) == {"a": 1}
    assert not (tmp_path / "out").exists() and os.listdir(tmp_path / "far" / "out") == ["x.json"]


def test_a_replacing_write_reaches_the_disk_before_and_after_its_rename(tmp_path, monkeypatch):
    """The new file's bytes are synced before the rename, and its folder after it (review 47K K6: a power cut
    after the rename could bring the old file back); a new name replaces nothing and waits for neither."""
    import os
    import stat

    synced = []
    real = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        synced.append("folder" if stat.S_ISDIR(st.st_mode) else "file")
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    path = tmp_path / "results.json"
    atomic_write_json(path, {"a": 1})
    assert synced == []
    atomic_write_json(path, {"a": 2})
    assert synced == ["file", "folder"] and _strict(path.read_text()) == {"a": 2}


def test_a_temporary_file_of_another_process_id_namespace_is_not_swept_as_its_writers(tmp_path, monkeypatch):
    """Two containers sharing a host name and a folder: a process ID gone in this one may be a live writer in the
    other, whose temporary file was swept (review 47F F8). Only this namespace's dead writers' files go at once."""
    import os

    from lway_rt.io import weights

    dead = 4_000_000  # above any pid_max: no process here has it
    here, boot = os.readlink("/proc/self/ns/pid"), weights._boot_id()
    assert boot  # (Linux)
    names = {}
    # another namespace; another machine of the same host name, whose first namespace has this one's number (54F F4)
    for folder, space, booted in (("same", here, boot), ("other", "pid:[1]", boot), ("machine", here, "another boot")):
        (tmp_path / folder).mkdir()
        with monkeypatch.context() as m:
            m.setattr(os, "getpid", lambda: dead)
            m.setattr(os, "readlink", lambda path: space)
            m.setattr(weights, "_boot_id", lambda: booted)
            names[folder] = name = f"{weights.temp_prefix('out.png')}x.tmp"
        (tmp_path / folder / name).write_bytes(b"half")
        weights.sweep_stale_temps(tmp_path / folder, ".out.png.", ".tmp")
    assert not any((tmp_path / "same").iterdir())  # its writer is gone: swept
    for folder in ("other", "machine"):  # another namespace's or machine's: left to the day-old rule
        assert [p.name for p in (tmp_path / folder).iterdir()] == [names[folder]], folder
