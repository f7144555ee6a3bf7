"""Clean training images for stage 1: a user's folder, or the photos bundled with scikit-image.

Bundled photos are split once into training and held-out sets (the held-out ones are what
``eval-degae`` measures on). Crops are drawn with random flips and 90-degree rotations.

Training holds its photos compactly: an 8-bit photo stays as (3, H, W) uint8 (3 bytes a pixel, not
float32's 12) and only the crops drawn from it become float, with the same values to the bit, so a
folder of phone photos fits in memory and in each batch worker.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from lway_rt.errors import InputError, listing
from lway_rt.io.images import IMAGE_SUFFIXES, bundled_photo, read_image, to_tensor

__all__ = ["BUNDLED_TRAIN", "BUNDLED_HELDOUT", "load_bundled", "load_folder", "load_images", "random_crops", "as_float", "IMAGE_SUFFIXES"]

# scikit-image photos that ship inside the package (no download); the held-out ones never train.
BUNDLED_TRAIN = ("astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "motorcycle_left", "motorcycle_right")
BUNDLED_HELDOUT = ("chelsea", "coffee")


def _to_tensor(arr: np.ndarray, compact: bool = False) -> torch.Tensor:
    """HxWx3 uint8 RGB -> (3, H, W) float in [0, 1], or uint8 as it is with ``compact``."""
    if compact:
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    return to_tensor(arr)[0]


def _held(img, compact: bool) -> torch.Tensor:
    """A ``read_image`` image as (3, H, W): with ``compact``, uint8 when it is exactly an 8-bit image (its crops
    made float by ``as_float`` equal the float image's crops to the bit); else float32."""
    if compact and img.bit_depth == 8:
        q = np.rint(img.rgb * 255.0).astype(np.uint8)
        if np.array_equal(q.astype(np.float32) / 255.0, img.rgb):
            return torch.from_numpy(np.ascontiguousarray(q.transpose(2, 0, 1)))
    return to_tensor(img.rgb)[0]


def as_float(t: torch.Tensor) -> torch.Tensor:
    """A (crop of a) photo held by ``load_images`` as float32 in [0, 1] (uint8 are scaled as ``to_tensor`` does)."""
    return t.to(torch.float32) / 255.0 if t.dtype == torch.uint8 else t


def load_bundled(names: tuple[str, ...], feature: str = "training on the bundled photos",
                 alternative: str = "pass a folder of your own clean photos with --data",
                 compact: bool = False) -> dict[str, torch.Tensor]:
    """Bundled scikit-image photos as (3, H, W) float tensors (uint8 with ``compact``), by name
    (``feature``/``alternative`` word the error when scikit-image is missing)."""
    return {name: _to_tensor(bundled_photo(name, feature=feature, alternative=alternative), compact) for name in names}


def folder_images(folder: Path) -> list[Path]:
    """The image files ``load_folder`` reads from ``folder`` (directly inside it, by ending), in name order."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def same_file(a, b) -> bool:
    """Whether the paths ``a`` and ``b`` (as a run records them: strings) name one existing file or folder."""
    try:
        return isinstance(a, str) and isinstance(b, str) and Path(a).exists() and Path(a).samefile(b)
    except OSError:
        return False


def folder_digest(folder: Path) -> str:
    """sha256 over the names and bytes of the images ``load_folder`` reads from ``folder``: what a run trained on it
    saw, whatever path named the folder (an existing folder; an unreadable file is hashed as its name only)."""
    return folder_digests(folder)[0]


def folder_digests(folder: Path, least_side: int = 0) -> tuple[str, list[str]]:
    """``folder_digest``, and each image's digest by its bytes alone (the first 16 hex digits of its sha256, sorted;
    two files of the same bytes give it twice), from one read of each file. A photo copied or renamed into another
    folder keeps its digest (what ``eval-degae`` counts as seen). ``least_side``: the images whose header gives a side
    under it are left out of the list (not of the folder's digest): those ``eval-degae`` leaves out for its crop."""
    import hashlib

    from lway_rt.export.cache import file_sha256

    h, each = hashlib.sha256(), []
    for p in folder_images(folder):
        h.update(os.fsencode(p.name) + b"\0")
        try:
            one = file_sha256(p)
        except OSError:
            continue
        h.update(one.encode())
        if not (least_side and _side_under(p, least_side)):
            each.append(one[:16])
    return h.hexdigest(), sorted(each)


def _side_under(path: Path, least: int) -> bool:
    """Whether the image's header gives a side under ``least`` px (False where its header cannot be read)."""
    from lway_rt.io.images import image_size

    size = image_size(path)  # (a float TIFF through tifffile, Pillow's warnings quiet, as the reader reads it)
    return size is not None and min(size) < least


_BUNDLED_FILES = {"immunohistochemistry": "ihc"}  # scikit-image's file stems where they differ from the photo's name


def bundled_digests(names) -> list[str] | None:
    """The digests (as ``folder_digests``') of scikit-image's files of the bundled photos ``names``, sorted; None where
    scikit-image or one of the files is missing (what was seen then cannot be told)."""
    from lway_rt.export.cache import file_sha256

    try:
        import skimage.data
    except ImportError:
        return None
    where, each = Path(skimage.data.__file__).parent, []
    for name in names:
        found = sorted(where.glob(f"{_BUNDLED_FILES.get(name, name)}.*"))
        if len(found) != 1:
            return None
        each.append(file_sha256(found[0])[:16])
    return sorted(each)


def load_folder(folder: Path, option: str = "--data", compact: bool = False,
                notes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """All images directly inside ``folder`` (RGB, alpha dropped, grey replicated, EXIF-upright), as (3, H, W)
    float tensors; with ``compact`` 8-bit images are uint8 (see ``as_float``). Images with transparent pixels are
    named in ``notes``: the colour stored under them, which no one sees, is read as photo content.

    ``option`` is the command-line option that named the folder, for the error messages.
    """
    folder = Path(folder)
    if not folder.is_dir():
        why = "" if folder.exists() else " (it does not exist)"
        raise InputError(f"{option} {folder} is not a folder{why}: pass a folder of clean photos, or leave {option} out "
                         "to use the bundled ones")
    from lway_rt.io.images import broken_link_message

    for p in sorted(folder.iterdir()):  # a photo behind a link whose target is gone is named, as adapt names it (it
        # was left out unsaid, where an unreadable photo stops the run)
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_symlink() and not p.exists():
            raise InputError(broken_link_message(p))
    files = folder_images(folder)
    if not files:
        from lway_rt.io.images import image_subfolders

        if subs := image_subfolders(folder):  # only the files directly inside are read
            raise InputError(f"{option} {folder} holds no images directly inside (the photos of a folder are read, not "
                             f"those of its sub-folders); {listing((d.name for d in subs), 3)} hold(s) images: pass "
                             "that folder, or move the photos up")
        raise InputError(f"{option} {folder} holds no images ({', '.join(IMAGE_SUFFIXES)}): put clean photos there, or "
                         f"leave {option} out to use the bundled ones")
    # the project's reader: EXIF orientation applied, 16-bit kept at full precision, grey replicated,
    # alpha dropped; unreadable files raise its one-line InputError naming the file
    import hashlib

    images, clear, seen, twins = {}, [], {}, []
    for p in files:
        img = read_image(p)
        if img.alpha is not None and float(img.alpha.min()) < 1.0:
            clear.append(p.name)
        images[p.name] = held = _held(img, compact)
        key = hashlib.sha256(str(tuple(held.shape)).encode() + held.numpy().tobytes() + (
            b"" if img.alpha is None else b"alpha" + np.asarray(img.alpha).tobytes())).digest()
        if key in seen:
            twins.append(f"{p.name} = {seen[key]}")
        else:
            seen[key] = p.name
    if clear and notes is not None:
        notes.append(f"note: {len(clear)} image(s) in {option} {folder} have transparent pixels ({listing(clear, 3)}): "
                     "the colour stored under them, which no viewer shows, is read as photo content; flatten them "
                     "onto a background, or leave them out")
    if twins and notes is not None:  # (a copy's crops count twice; a pairing that takes "another image" may take it)
        notes.append(f"note: {len(twins)} image(s) in {option} {folder} hold the same pixels as another there "
                     f"({listing(twins, 3)}): each copy is read as one more photo; remove the copies")
    return images


MIN_CROP = 24  # the smallest training crop (TrainConfig: the encoder needs 22 px, crops are multiples of 4)


def load_images(data: str | Path | None, crop: int, notes: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Training images (folder, or bundled training photos when ``data`` is None), checked against ``crop``;
    8-bit ones held as uint8 (``as_float`` makes their crops float)."""
    images = load_bundled(BUNDLED_TRAIN, compact=True) if data is None else \
        load_folder(Path(data), compact=True, notes=notes)
    small = [f"{n} ({t.shape[2]}x{t.shape[1]})" for n, t in images.items() if min(t.shape[1:]) < crop]
    if small:
        least = min(min(t.shape[1:]) for t in images.values())
        fix = f"use --crop {least // 4 * 4} or larger photos" if least >= MIN_CROP else \
            f"remove the images under {MIN_CROP} px (the smallest --crop) from the folder, or use larger photos"
        raise InputError(f"{len(small)} image(s) are smaller than the {crop}-px crop: {', '.join(small[:3])}; {fix}")
    return images


def _texture(c: torch.Tensor) -> float:
    g = c.mean(0)
    return float((g[1:] - g[:-1]).abs().mean() + (g[:, 1:] - g[:, :-1]).abs().mean())


def random_crops(rng: np.random.Generator, images: list[torch.Tensor], n: int, crop: int,
                 avoid: list[int] | None = None, tries: int = 1) -> tuple[torch.Tensor, list[int]]:
    """``n`` random float crops (flip / rot90 augmented); the i-th avoids image ``avoid[i]`` when possible.
    ``images`` may hold float or uint8 photos (``load_images``).

    ``tries > 1`` keeps the most textured of that many candidate positions: flat sky and walls look
    the same under most degradations and teach E and R little.
    """
    out, picks = [], []
    for i in range(n):
        k = int(rng.integers(len(images)))
        if avoid is not None and len(images) > 1 and k == avoid[i]:
            k = (k + 1 + int(rng.integers(len(images) - 1))) % len(images)
        img = images[k]
        h, w = img.shape[1:]
        best, best_t = None, -1.0
        for _ in range(max(1, tries)):
            y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
            c = as_float(img[:, y:y + crop, x:x + crop])
            t = _texture(c) if tries > 1 else 0.0
            if t > best_t:
                best, best_t = c, t
        c = best
        if rng.random() < 0.5:
            c = c.flip(-1)
        c = torch.rot90(c, int(rng.integers(4)), dims=(1, 2))
        out.append(c.contiguous())
        picks.append(k)
    return torch.stack(out), picks
