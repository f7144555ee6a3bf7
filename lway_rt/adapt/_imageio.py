"""The inputs of an adaptation run: named images read with ``lway_rt.io.images``.

A grey input is replicated to three channels for the networks and written back grey; an RGBA
input adapts on its colour and gets its alpha upsampled by the adapted model beside the SR output.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lway_rt.errors import InputError, listing
from lway_rt.io.images import (
    IMAGE_SUFFIXES, LoadedImage, broken_link_message, fill_hidden_colour, frames_note, image_subfolders, no_images_message,
    missing_input_message, read_image, unread_files_note,
)

__all__ = ["InputImage", "list_images", "read_inputs", "from_array"]


@dataclass(frozen=True)
class InputImage:
    name: str  # unique within a run; names the SR output file
    image: LoadedImage
    path: Path | None = None

    @property
    def rgb(self) -> np.ndarray:
        return self.image.rgb

    @property
    def size(self) -> tuple[int, int]:
        return self.image.height, self.image.width


def from_array(name: str, rgb: np.ndarray) -> InputImage:
    """An in-memory HxWx3 (uint8 or float [0, 1]) image, for library callers and benchmarks."""
    arr = np.asarray(rgb)
    arr = arr.astype(np.float32) / 255.0 if arr.dtype == np.uint8 else arr.astype(np.float32)
    return InputImage(name, LoadedImage(np.ascontiguousarray(arr)))


def list_images(inputs, notes: list[str] | None = None) -> list[Path]:
    """Expand files and folders (non-recursive, sorted, hidden files skipped) into image paths; a file reached twice
    (named twice, or named and inside a named folder) is taken once. Sub-folders holding images, which are not read,
    are named in ``notes`` (or in the error of a folder that has no image of its own)."""
    from lway_rt.upscale import written_by_upscale

    paths: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            every = [q for q in p.iterdir() if not q.name.startswith(".")]
            listed = sorted(q for q in every if q.suffix.lower() in IMAGE_SUFFIXES)
            for q in listed:
                if q.is_symlink() and not q.exists():
                    raise InputError(broken_link_message(q))
            found = [q for q in listed if q.is_file()]
            made = [q for q in found if written_by_upscale(q)]
            if made and len(made) < len(found):  # upscale's outputs beside the originals (upscale frames -o frames)
                found = [q for q in found if q not in made]
                if notes is not None:
                    notes.append(f"note: {len(made)} image(s) in {p} were written by lwayrt upscale (each records "
                                 f"the run), e.g. {made[0].name}: left out, not adapted on; name such a file to adapt "
                                 "on it anyway")
            nested = image_subfolders(p)
            shown = listing(nested, 3)
            if not found:
                raise InputError(no_images_message(p, f"; its sub-folders {shown} do: name them as inputs (adapt "
                                                      "does not look inside sub-folders)" if nested else ""))
            if notes is not None and (unread := unread_files_note(p, every)):
                notes.append(f"note: {unread}")
            if nested and notes is not None:
                notes.append(f"note: the images in sub-folders of {p} ({shown}) are not read: name those folders as "
                             "inputs to adapt on them too")
        elif p.is_file():
            found = [p]
        else:
            raise InputError(missing_input_message(p))
        for q in found:
            if q.resolve() not in seen:
                seen.add(q.resolve())
                paths.append(q)
    if not paths:
        raise InputError("no input images given")
    return paths


def natural_order(item) -> list:
    """Sort key that reads the numbers in a name as numbers: frame 2 before frame 10 (ffmpeg's ``%d.png``). A path
    by its whole spelling, an ``InputImage`` by its name."""
    text = str(item) if isinstance(item, (str, int, os.PathLike)) else getattr(item, "name", str(item))
    # the odd pieces of the split are the digit runs (str.isdigit also holds for '²', which int() refuses); the run
    # as spelled breaks a tie (frame_010 and frame_10)
    return [(0, int(t), t) if k % 2 else (1, 0, t) for k, t in enumerate(re.split(r"(\d+)", text.casefold()))]


def spread(items: list, n: int | None) -> list:
    """``n`` of ``items`` spread evenly over them in frame order (numbers in names read as numbers: 2 before 10),
    first and last included (all when ``n`` is None or not fewer): the frames of a clip to adapt on, so that its
    whole length is represented. The chosen ones keep their order in ``items``."""
    if n is None or n >= len(items):
        return list(items)
    order = sorted(range(len(items)), key=lambda i: natural_order(items[i]))
    picked = {order[(len(items) - 1) // 2]} if n == 1 else \
        {order[round(i * (len(items) - 1) / (n - 1))] for i in range(n)}
    return [items[i] for i in sorted(picked)]


def read_inputs(inputs, notes: list[str] | None = None, sr_image=None) -> list[InputImage]:
    """Read every input; names are file stems, with the ending added where two inputs share a stem (``photo.jpg`` and
    ``photo.png`` give ``photo_jpg`` and ``photo_png``, so neither output takes the other's name), then a number where
    they still clash. Stems and names are compared without regard to case: ``a/Photo.png`` and ``b/photo.png`` would
    write one file on macOS or Windows (and the run's folder must copy there whole). Colour under fully transparent pixels is filled from the visible pixels around it
    (``fill_hidden_colour``): it must neither teach the network nor bleed into the written images. ``sr_image``: where
    the run writes an input's SR image, by its name (for the notes; default ``sr/NAME.png``)."""
    from lway_rt.upscale import cmyk_note, uncarried_note

    paths = list_images(inputs)
    stems = Counter(p.stem.casefold() for p in paths)
    out: list[InputImage] = []
    seen: set[str] = set()
    unreadable: list[tuple[Path, InputError]] = []
    uncarried: list[tuple[Path, str, tuple[str, ...]]] = []
    for p in paths:
        base = p.stem if stems[p.stem.casefold()] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}"
        name, k = base, 1
        while name.casefold() in seen:
            k += 1
            name = f"{base}_{k}"
        seen.add(name.casefold())
        try:
            img = read_image(p)
        except InputError as exc:  # every frame that cannot be read is named, not one a run (a fix, a rerun each)
            unreadable.append((p, exc))
            continue
        if img.frames > 1 and notes is not None:
            notes.append("note: " + frames_note(p, img.frames, "adapted on and written", damaged=img.frames_damaged))
        where = sr_image(name) if sr_image is not None else f"sr/{name}.png"
        if img.mode == "CMYK" and notes is not None:  # (said as upscale says it: the SR image is written as it does)
            notes.append("note: " + cmyk_note(p, f"its SR image ({where})"))
        if img.uncarried:
            uncarried.append((p, where, img.uncarried))
        if img.alpha is not None:
            img = replace(img, rgb=fill_hidden_colour(img.rgb, img.alpha))
        out.append(InputImage(name, img, p))
    if uncarried and notes is not None:
        notes.append("note: " + uncarried_note(uncarried, "their SR images"))
    if len(unreadable) == 1:
        raise unreadable[0][1]
    if unreadable:
        raise InputError(f"{len(unreadable)} of {len(paths)} inputs cannot be read ({listing([p.name for p, _ in unreadable], 5)}"
                         f"); the first: {unreadable[0][1]}")
    return out
