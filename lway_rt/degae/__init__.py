"""Stage 1 of LWay: the degradation encoder E and the reconstructor R (DegAE design).

Light on purpose: importing this package loads the two networks and the checkpoint reader, not
the training code or the degradation synthesis. Typical use::

    from lway_rt.degae import load_stage1
    s1 = load_stage1()                       # the shipped checkpoint
    e = s1.encoder(lr_up)                    # (B, s1.embed_dim)
    prepared = s1.reconstructor.prepare(e)   # once per image
    x_hat = s1.reconstructor.apply(sr, prepared)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lway_rt.degae.nets import MIN_ENCODER_SIDE, DegradationEncoder, Reconstructor
from lway_rt.degae.trunk import DEFAULT_TRUNK, TrunkSpec, build_trunk
from lway_rt.errors import ModelError

__all__ = ["Stage1", "load_stage1", "save_stage1", "stage1_bytes", "default_checkpoint_path", "unfinished_note", "MIN_ENCODER_SIDE", "FORMAT"]

FORMAT = "lway_rt.degae/1"
_CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
DEFAULT_CHECKPOINT = "stage1_default.safetensors"
#: ``state_dict_sha256`` of the shipped checkpoint's tensors (written before checkpoints recorded their own hash)
SHIPPED_SHA256 = "01f368ccab61159b6e299d2527e46b9c5b53dfa35b3c53cb1e3882b869aad006"


def default_checkpoint_path() -> Path:
    return _CHECKPOINT_DIR / DEFAULT_CHECKPOINT


@dataclass
class Stage1:
    """A stage-1 pair (encoder, reconstructor) plus the facts about how it was built and trained."""

    encoder: DegradationEncoder
    reconstructor: Reconstructor
    meta: dict = field(default_factory=dict)

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    @classmethod
    def fresh(cls, embed_dim: int = 512, width: int = 64, blocks: int = 4, *, skip: bool = False,
              trunk: TrunkSpec = DEFAULT_TRUNK,
              head_widths: Sequence[int] = (128, 256, 512), seed: int | None = 0, device: str = "cpu") -> "Stage1":
        """Freshly initialised E (on the real pretrained trunk) and R, in training mode, trainable."""
        if embed_dim < 1 or width < 1 or blocks < 1:
            raise ValueError("embed_dim, width and blocks must be positive")
        trunk_net, channels, digest = build_trunk(trunk, device=device)
        if seed is not None:
            torch.manual_seed(seed)
        enc = DegradationEncoder(trunk_net, channels, embed_dim, head_widths).to(device)
        rec = Reconstructor(embed_dim, width, blocks, skip).to(device)
        meta = {
            "format": FORMAT, "embed_dim": embed_dim, "width": width, "blocks": blocks, "skip": skip,
            "head_widths": list(head_widths), "trunk_model": trunk.model, "trunk_layers": trunk.layers,
            "trunk_sha256": digest, "trunk_channels": channels,
        }
        return cls(enc, rec, meta)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Trainable tensors only (the trunk comes from the model store)."""
        state = {f"encoder.{k}": v for k, v in self.encoder.trainable_state_dict().items()}
        state.update({f"reconstructor.{k}": v for k, v in self.reconstructor.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load what ``state_dict`` returned (trainable tensors); the frozen trunk stays as it is."""
        enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        enc.update({k: v for k, v in self.encoder.state_dict().items() if k.startswith("trunk.")})
        self.encoder.load_state_dict(enc, strict=True)
        self.reconstructor.load_state_dict(
            {k[len("reconstructor."):]: v for k, v in state.items() if k.startswith("reconstructor.")}, strict=True)

    def freeze(self) -> "Stage1":
        for m in (self.encoder, self.reconstructor):
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)
        return self


def _meta_to_str(meta: Mapping) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


def _meta_from_str(raw: Mapping[str, str]) -> dict:
    out = {}
    for k, v in raw.items():
        try:
            out[k] = json.loads(v)
        except (TypeError, ValueError):
            out[k] = v
    return out


def stage1_metadata(path: str | Path) -> dict:
    """A stage-1 checkpoint's metadata (its recipe, segments ...), from the file's header alone: no weights read and
    no trunk built (a run whose --trunk file moved still tells its settings). Raises where the file has no readable
    header."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return _meta_from_str(f.metadata() or {})


def unfinished_note(stage1: Stage1, shown: str) -> str | None:
    """A one-line note when ``stage1`` was written part-way through its training (a run stopped, or still going):
    it works, but its embeddings are not what the finished run gives."""
    done, planned = stage1.meta.get("iterations"), (stage1.meta.get("recipe") or {}).get("iters")
    if isinstance(done, int) and isinstance(planned, int) and done < planned:
        return (f"note: the stage-1 checkpoint {shown} was written at iteration {done} of {planned}: a run that had "
                "not finished (it may still be going); its embeddings are not final")
    return None


def stage1_bytes(stage1: Stage1, extra_meta: Mapping | None = None) -> bytes:
    """The bytes ``save_stage1`` writes (safetensors, sorted metadata); ModelError on a NaN/inf weight."""
    from lway_rt.io.weights import safetensors_bytes, state_dict_sha256

    state = stage1.state_dict()
    meta = dict(stage1.meta)
    meta.update(extra_meta or {})
    meta["weights_sha256"] = state_dict_sha256(state)  # load_stage1 checks it: a damaged file is refused, not used
    return safetensors_bytes(state, _meta_to_str(meta))


def save_stage1(dest: Path, stage1: Stage1, extra_meta: Mapping | None = None) -> None:
    """Write the trainable tensors and metadata atomically (refuses NaN weights)."""
    from lway_rt.io.weights import atomic_write_bytes

    atomic_write_bytes(Path(dest), stage1_bytes(stage1, extra_meta))


def load_stage1(path: str | Path | None = None, device: str = "cpu", *, embed_dim: int | None = None,
                trainable: bool = False, trunk_file: str | Path | None = None) -> Stage1:
    """Load a stage-1 checkpoint (None: the shipped default). Eval mode and frozen unless ``trainable``.

    ``embed_dim``, when given, is checked against the checkpoint's embedding width. A checkpoint trained on a trunk
    from a file (``train-degae --trunk FILE``) reads it there; where it has moved, ``trunk_file`` (train-degae
    --resume --trunk NEWPATH), else a file of that name beside the checkpoint, is read instead, and must hold the
    same trunk (its recorded hash).
    """
    from lway_rt.io.weights import load_state_file

    if path is None:
        path = default_checkpoint_path()
        if not path.is_file():
            raise ModelError(f"no shipped stage-1 checkpoint yet at {path}; train one with 'lwayrt train-degae' "
                             "and pass it with --stage1 / load_stage1(path)")
    path = Path(path)
    if not path.exists():  # (the weights loader would call it a model file)
        raise ModelError(f"stage-1 checkpoint {path} does not exist: give the .safetensors file 'lwayrt train-degae' "
                         "wrote, or leave the option out for the shipped one")
    if path.name.endswith(".safetensors.resume.pt"):
        raise ModelError(f"{path} is the resume state (optimiser and progress) of a 'lwayrt train-degae' run: its "
                         f"checkpoint is {path.name[:-len('.resume.pt')]} beside it")
    if path.suffix.lower() != ".safetensors":
        raise ModelError(f"{path}: a stage-1 checkpoint is a .safetensors file written by 'lwayrt train-degae'")
    state, raw = load_state_file(path)
    meta = _meta_from_str(raw)
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path} is not a stage-1 (DegAE) checkpoint (format {meta.get('format', 'missing')!r}, "
                         f"expected {FORMAT!r}); pass a file written by 'lwayrt train-degae'")
    shipped = path.resolve() == default_checkpoint_path().resolve()
    recorded = SHIPPED_SHA256 if shipped else meta.get("weights_sha256")
    if recorded:
        from lway_rt.io.weights import state_dict_sha256

        if state_dict_sha256(state) != recorded:
            raise ModelError(f"{path} does not hold the weights it was written with (their hash differs from the "
                             + ("one shipped): reinstall lway_rt" if shipped else "weights_sha256 it records: damaged or "
                                "changed since): train it again or use another checkpoint"))
    try:
        ed, width, blocks = int(meta["embed_dim"]), int(meta["width"]), int(meta["blocks"])
        head_widths = [int(w) for w in meta["head_widths"]]
        trunk = TrunkSpec(str(meta["trunk_model"]), int(meta["trunk_layers"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: stage-1 metadata incomplete ({exc}); retrain it with 'lwayrt train-degae'") from exc
    if embed_dim is not None and embed_dim != ed:
        raise ModelError(f"{path} has embedding width {ed}, but {embed_dim} was asked for; pass a matching checkpoint "
                         f"or --embed-dim {ed}")
    file = Path(trunk.model).expanduser()
    if (file.suffix or len(file.parts) > 1) and not file.exists():  # a trunk trained from a file, not a store name
        moved = [Path(trunk_file).expanduser()] if trunk_file else []
        found = next((q for q in [*moved, path.parent / file.name] if q.is_file()), None)
        if found is None or not meta.get("trunk_sha256"):  # (another file is taken only where the hash can check it)
            raise ModelError(f"{path} reads its encoder trunk from {file}, which does not exist (moved or deleted): put "
                             f"the file back there or beside the checkpoint ({path.parent / file.name})")
        trunk = TrunkSpec(str(found.absolute()), trunk.layers)  # (checked against trunk_sha256 as it is built)
        meta = {**meta, "trunk_model": trunk.model}  # what a checkpoint written from this one records
    trunk_net, channels, _ = build_trunk(trunk, expect_sha256=meta.get("trunk_sha256"), device=device)
    enc = DegradationEncoder(trunk_net, channels, ed, head_widths)
    rec = Reconstructor(ed, width, blocks, bool(meta.get("skip", False)))
    enc_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    rec_state = {k[len("reconstructor."):]: v for k, v in state.items() if k.startswith("reconstructor.")}
    enc_state.update({f"trunk.{k}": v for k, v in trunk_net.state_dict().items()})
    for name, module, sd in (("encoder", enc, enc_state), ("reconstructor", rec, rec_state)):
        try:
            module.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(f"{path}: the {name} weights do not match the architecture in its metadata ({first}); "
                             "the file is damaged or from another version") from exc
    s1 = Stage1(enc.to(device), rec.to(device), meta)
    if trainable:
        enc.train()
        rec.train()
        return s1
    return s1.freeze()
