"""Group a folder's inputs by how they are degraded, so each group can get its own adapted model.

Footage from several sources (a phone's sharpened JPEGs, a downscaled screen capture, a blurred
camera) is degraded in several ways, and one model adapted over all of it has to serve them all.
Stage 1's encoder E reads each input's degradation into one embedding (``embed.compute_embeddings``);
``group_embeddings`` clusters those embeddings with k-means (k-means++ seeding, several restarts,
a fixed random seed, so the same inputs always give the same groups) on the unit sphere (each
embedding divided by its length). ``adapt --mode per-group`` then runs one folder adaptation per group.
Each group's centre (the unit-length mean of its members) is kept with the adaptation, so ``lwayrt upscale``
can send a new image to the group whose centre its embedding is nearest (``nearest_group``).

The number of groups is the user's, or ``auto``: every k from 2 to ``MAX_AUTO_GROUPS`` whose groups
all hold at least ``min_size`` images is scored by its mean silhouette (Rousseeuw 1987), and the best
k is kept only when its silhouette reaches ``AUTO_MIN_SILHOUETTE`` (0.25, below which Kaufman and
Rousseeuw read "no substantial structure"); otherwise the folder stays one group. ``min_size``
keeps a group from shrinking towards one image, which adapts worse (one model per crop: +0.28 dB,
worst crop -0.82 on the quality benchmark, against +0.50 over the mixed folder).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from lway_rt.errors import InputError

__all__ = ["Grouping", "group_embeddings", "group_centres", "nearest_group", "reach_ratio", "MAX_AUTO_GROUPS", "AUTO_MIN_SILHOUETTE",
           "MIN_GROUP_SIZE"]

MAX_AUTO_GROUPS = 6
AUTO_MIN_SILHOUETTE = 0.25
MIN_GROUP_SIZE = 4  # images; ``auto`` only
_RESTARTS = 10
_MAX_ROUNDS = 100


@dataclass(frozen=True)
class Grouping:
    """``labels[i]`` is image i's group (0-based, groups numbered by their first image)."""

    labels: tuple[int, ...]
    silhouettes: dict[int, float] = field(default_factory=dict)  # auto: k -> mean silhouette of the k tried
    centres: tuple[tuple[float, ...], ...] = field(default=(), compare=False)  # per group, unit length
    floors: tuple[float, ...] = field(default=(), compare=False)  # per group: its members' lowest cosine to the centre
    # the (N, D) embeddings the grouping read, where its caller keeps them (adapt: each group's run reuses its rows)
    embeddings: torch.Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def count(self) -> int:
        return len(set(self.labels))

    def members(self) -> list[list[int]]:
        """The images of each group, in group order."""
        return [[i for i, g in enumerate(self.labels) if g == k] for k in range(self.count)]


def _unit(emb) -> np.ndarray:
    x = emb.detach().cpu().double().numpy() if isinstance(emb, torch.Tensor) else np.asarray(emb, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0:
        raise InputError(f"grouping needs an (N, D) array of embeddings, got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances between the rows of ``a`` and of ``b``, from inner products: (N, M) memory, not the
    (N, M, D) of a broadcast difference (a folder of 1000 512-D embeddings would need 4 GB)."""
    return np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T, 0)


def _kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Labels of the lowest-inertia run of ``_RESTARTS`` k-means++ runs (Lloyd's iterations) on the unit sphere."""
    rng = np.random.default_rng(seed)
    d2_all = _sq_dists(x, x)
    best, best_labels = np.inf, None
    for _ in range(_RESTARTS):
        centres = [int(rng.integers(len(x)))]
        for _ in range(k - 1):
            d2 = d2_all[:, centres].min(1)
            if d2.sum() <= 0:  # fewer distinct points than k
                break
            centres.append(int(rng.choice(len(x), p=d2 / d2.sum())))
        c = x[centres]
        labels = np.zeros(len(x), dtype=int)
        for _ in range(_MAX_ROUNDS):
            labels = _sq_dists(x, c).argmin(1)
            new = np.stack([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(len(c))])
            # unit-length centres (spherical k-means): the rows of x are unit vectors, so the nearest unit centre is
            # the one of highest cosine, the rule ``nearest_group`` routes by with the centres ``group_centres``
            # stores; with raw means an image near a boundary could be adapted in one group and routed to another
            new /= np.maximum(np.linalg.norm(new, axis=1, keepdims=True), 1e-12)
            if np.allclose(new, c):
                break
            c = new
        inertia = ((x - c[labels]) ** 2).sum()
        if inertia < best - 1e-12:
            best, best_labels = inertia, labels
    return best_labels


def _silhouette(x: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette (Euclidean distance); an image alone in its group scores 0."""
    dist = np.sqrt(_sq_dists(x, x))
    ks = sorted(set(labels.tolist()))
    if len(ks) < 2:
        return 0.0
    scores = []
    for i in range(len(x)):
        same = labels == labels[i]
        if same.sum() <= 1:
            scores.append(0.0)
            continue
        a = dist[i, same].sum() / (same.sum() - 1)
        b = min(dist[i, labels == k].mean() for k in ks if k != labels[i])
        scores.append((b - a) / max(a, b) if max(a, b) > 0 else 0.0)
    return float(np.mean(scores))


def _renumber(labels: np.ndarray) -> tuple[int, ...]:
    order: dict[int, int] = {}
    for g in labels.tolist():
        order.setdefault(g, len(order))
    return tuple(order[g] for g in labels.tolist())


def group_centres(emb, labels) -> tuple[np.ndarray, np.ndarray]:
    """Each group's centre, the unit-length mean of its members' unit-length embeddings (G, D), and the lowest
    cosine similarity of a member to its group's centre (G,): how far from the centre the group reaches."""
    x, labels = _unit(emb), np.asarray(labels)
    centres = np.stack([x[labels == g].mean(0) for g in range(int(labels.max()) + 1)])
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    floors = np.array([min(1.0, float((x[labels == g] @ centres[g]).min())) for g in range(len(centres))])  # (a
    # cosine, never above 1: copies of one image gave 1.0000000000000004)
    return centres, floors


def nearest_group(emb, centres) -> tuple[np.ndarray, np.ndarray]:
    """For each of N embeddings (N, D): the group whose centre (G, D) is nearest on the unit sphere, and the cosine
    similarity to that centre."""
    sims = _unit(emb) @ _unit(centres).T
    best = sims.argmax(1)
    return best, sims[np.arange(len(best)), best]


def reach_ratio(similarity, floor):
    """How far an embedding lies from a group's centre (1 - cosine ``similarity``) over how far the group's own
    farthest member does (1 - ``floor``): above 1, farther than every image the group was made of."""
    return (1 - np.asarray(similarity)) / np.maximum(1 - np.asarray(floor), 1e-12)


def _grouping(x: np.ndarray, labels, silhouettes=None) -> Grouping:
    labels = tuple(labels)
    centres, floors = group_centres(x, labels)
    return Grouping(labels, silhouettes or {}, tuple(tuple(map(float, c)) for c in centres),
                    tuple(float(f) for f in floors))


def group_embeddings(emb, groups: int | str = "auto", *, min_size: int = MIN_GROUP_SIZE, seed: int = 0) -> Grouping:
    """Group N images by their stage-1 embeddings ``emb`` (N, D): ``groups`` = a count, or ``auto``."""
    x = _unit(emb)
    n = len(x)
    if groups == "auto":
        tried = {}
        for k in range(2, min(MAX_AUTO_GROUPS, n // max(min_size, 1)) + 1):
            labels = _kmeans(x, k, seed)
            if np.bincount(labels, minlength=k).min() >= min_size:
                tried[k] = (_silhouette(x, labels), labels)
        silhouettes = {k: round(s, 4) for k, (s, _) in tried.items()}
        best = max(tried, key=lambda k: tried[k][0], default=None)
        if best is None or tried[best][0] < AUTO_MIN_SILHOUETTE:
            return _grouping(x, (0,) * n, silhouettes)
        return _grouping(x, _renumber(tried[best][1]), silhouettes)
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise InputError(f"groups must be a positive number of groups or auto, got {groups!r}")
    if groups > n:
        raise InputError(f"{groups} groups asked for {n} image(s): use at most {n} groups, or auto")
    return _grouping(x, (0,) * n if groups == 1 else _renumber(_kmeans(x, groups, seed)))
