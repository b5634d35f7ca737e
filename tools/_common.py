"""Shared by the researcher tools: checkpoint reading, model building, inputs, windows, clips.

The tools see a video exactly as the test split does (``datasets.transforms``: short side resized,
centre crop, ImageNet normalisation) and read the model's configuration from the checkpoint's
``args`` dict, so a fine-tuned checkpoint is all a researcher needs to pass.
"""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # `python tools/x.py` puts tools/, not the repository, on sys.path
    sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import models  # noqa: E402,F401  (registers the models with timm)
from datasets import transforms as T  # noqa: E402
from datasets.sampling import clip_span, short_video_indices, uniform_windows, window_at  # noqa: E402
from datasets.video_io import FRAME_EXTS, natural_key, open_source, read_clips  # noqa: E402
from engine.cli import UserError, run_entry  # noqa: E402
from models.checkpoint import CheckpointMismatchError, checkpoint_args, extract_state_dict, \
    load_checkpoint_file  # noqa: E402

VIDEO_EXTS = (".mp4", ".avi", ".flv", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
PRETRAIN_KEYS = ("decoder.", "encoder_to_decoder.", "mask_token")


def int_list(value):
    return [int(v) for v in str(value).replace(",", " ").split()]


class ToolError(UserError):
    """A problem the user can fix (missing file, wrong checkpoint, bad option): printed without a traceback."""


def run_cli(main, argv=None):
    """Run ``main(argv)``; user mistakes become an ``error:`` line and exit status 2."""
    return run_entry(main, argv)


# -- checkpoints and model configuration --------------------------------------------------------

# What a checkpoint's ``args`` may say about the model and its input, and the CLI flags overriding it.
CONFIG_KEYS = ("model", "embed_dim", "num_heads", "input_size", "num_frames", "sampling_rate", "tubelet_size", "short_side_size",
               "stage_depths", "num_bottleneck_tokens", "temporal_kernel_size", "decoder_depth", "decoder_embed_dim", "decoder_num_heads",
               "data_set", "nb_classes", "task", "num_targets", "use_mean_pooling")
DEFAULTS = {"input_size": 160, "num_frames": 16, "tubelet_size": 2, "use_mean_pooling": True}


def add_model_args(parser, model_default_help="from the checkpoint's args"):
    """Flags that override what the checkpoint's ``args`` say (all default to the checkpoint)."""
    g = parser.add_argument_group("model and input (default: read from the checkpoint's args)")
    g.add_argument("--model", default=None, help=f"registered model name ({model_default_help})")
    g.add_argument("--input_size", type=int, default=None)
    g.add_argument("--num_frames", type=int, default=None)
    g.add_argument("--sampling_rate", type=int, default=None, help="frame stride inside a clip")
    g.add_argument("--tubelet_size", type=int, default=None)
    g.add_argument("--short_side_size", type=int, default=None, help="resize before the centre crop")
    g.add_argument("--stage_depths", type=int_list, default=None, help="e.g. '12 6 3' or 12,6,3")
    g.add_argument("--num_bottleneck_tokens", type=int_list, default=None)
    g.add_argument("--embed_dim", type=int, default=None, help="only for models trained with a custom width")
    g.add_argument("--num_heads", type=int, default=None)
    g.add_argument("--temporal_kernel_size", type=int, default=None)
    g.add_argument("--data_set", default=None, help="registered dataset name (class names), or custom")
    g.add_argument("--nb_classes", type=int, default=None)
    g.add_argument("--task", default=None, choices=["classification", "regression", "clip_classification"])
    g.add_argument("--force_config", action="store_true",
                   help="let these flags override what the checkpoint records (by default a conflict is an error)")
    return g


def read_checkpoint(path):
    """``(checkpoint dict, state dict, args dict)``; a missing or unreadable file is a user error."""
    if not path:
        raise ToolError("no checkpoint given (--checkpoint PATH)")
    ckpt = load_checkpoint_file(path)
    return ckpt, extract_state_dict(ckpt), dict(checkpoint_args(ckpt))


def is_pretrain_state(state_dict):
    return any(k.replace("module.", "", 1).startswith(PRETRAIN_KEYS) for k in state_dict)


def resolve_config(ckpt_args, cli=None):
    """The model/input configuration: the checkpoint's, else the flag, else the default.

    A flag that disagrees with what the checkpoint records is an error unless ``--force_config``
    (then the flag wins): evaluating with other frames or resolution gives other numbers silently.
    """
    cli = vars(cli) if cli is not None and not isinstance(cli, dict) else (cli or {})
    force = bool(cli.get("force_config"))
    cfg, conflicts = dict(DEFAULTS), []
    for key in CONFIG_KEYS:
        recorded, given = ckpt_args.get(key), cli.get(key)
        if key == "model" and recorded is not None:
            import timm
            if not timm.is_model(finetune_name(recorded)):
                recorded = None  # a name of the release's own registry: --model (or the default) decides
        if recorded is not None:
            cfg[key] = recorded
        if given is None:
            continue
        same = recorded is None or (list(recorded) if isinstance(recorded, tuple) else recorded) == given
        if key == "model" and recorded is not None:
            same = finetune_name(recorded) == finetune_name(given)
        if same or force:
            cfg[key] = given
        else:
            conflicts.append(f"--{key} {given} (the checkpoint records {recorded})")
    if conflicts:
        raise CheckpointMismatchError("flags that disagree with the checkpoint: " + "; ".join(conflicts)
                                      + ". Drop them (the checkpoint's values are used), or add --force_config")
    return cfg


def model_kwargs(cfg, pretrain=False):
    """timm.create_model keyword arguments for ``cfg`` (unset values keep the registered defaults)."""
    kw = dict(img_size=cfg["input_size"], tubelet_size=cfg["tubelet_size"], stage_depths=cfg.get("stage_depths"),
              num_bottleneck_tokens=cfg.get("num_bottleneck_tokens"),
              temporal_kernel_size=cfg.get("temporal_kernel_size"))
    # Not run_*.py flags, but a checkpoint of a custom-width model may state them.
    width = dict(embed_dim=cfg.get("embed_dim"), num_heads=cfg.get("num_heads"))
    if pretrain:
        kw.update(num_frames=cfg["num_frames"], decoder_depth=cfg.get("decoder_depth"),
                  decoder_embed_dim=cfg.get("decoder_embed_dim"), decoder_num_heads=cfg.get("decoder_num_heads"),
                  **{"encoder_" + k: v for k, v in width.items()})
    else:
        kw.update(all_frames=cfg["num_frames"], use_mean_pooling=cfg.get("use_mean_pooling", True), **width)
    return {k: v for k, v in kw.items() if v is not None}


def finetune_name(name):
    return name[len("pretrain_"):] if name.startswith("pretrain_") else name


def pretrain_name(name):
    return name if name.startswith("pretrain_") else "pretrain_" + name


def create(name, **kwargs):
    import timm
    try:
        return timm.create_model(name, **kwargs)
    except RuntimeError as e:
        if "Unknown model" in str(e):
            raise ToolError(f"unknown model {name!r}; registered: {', '.join(models.MODEL_NAMES)}") from e
        raise


def compare_state_dicts(own, theirs):
    """Which keys match (name and shape), differ in shape, are missing from ``theirs`` or unexpected."""
    out = {"matched": [], "mismatched": [], "missing": [], "unexpected": []}
    for key, value in own.items():
        if key not in theirs:
            out["missing"].append(key)
        elif tuple(theirs[key].shape) != tuple(value.shape):
            out["mismatched"].append(f"{key}: checkpoint {tuple(theirs[key].shape)}, model {tuple(value.shape)}")
        else:
            out["matched"].append(key)
    out["unexpected"] = [k for k in theirs if k not in own]
    return out


def strip_wrappers(state_dict):
    out = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def load_strict(model, state_dict, what="checkpoint"):
    """``load_state_dict`` that explains a mismatch in a few lines instead of a wall of keys."""
    state_dict = strip_wrappers(state_dict)
    diff = compare_state_dicts(model.state_dict(), state_dict)
    if diff["mismatched"] or diff["missing"] or diff["unexpected"]:
        lines = [f"{what} does not fit the model ({len(diff['matched'])} tensors match):"]
        for kind in ("mismatched", "missing", "unexpected"):
            if diff[kind]:
                lines.append(f"  {len(diff[kind])} {kind}, e.g. " + "; ".join(diff[kind][:4]))
        lines.append("  pick the matching --model / --input_size / --num_frames / --stage_depths, "
                     "or check the file with tools/model_info.py --checkpoint")
        raise CheckpointMismatchError("\n".join(lines))
    model.load_state_dict(state_dict)
    return model


def dataset_names(cfg, num_outputs, class_names=None):
    """``(task, output names)``: from --class_names, else the dataset registry, else numbers."""
    from datasets.registry import get_dataset_info
    task, names = cfg.get("task"), None
    if cfg.get("data_set"):
        try:
            info = get_dataset_info(cfg["data_set"], cfg.get("nb_classes") or num_outputs, task,
                                    cfg.get("num_targets"))
        except ValueError as e:
            raise ToolError(str(e)) from e
        if info.task != "pretrain":
            task, names = info.task, list(info.classes or info.targets)
    task = task or "classification"
    if class_names:
        names = parse_class_names(class_names)
    names = names or [str(i) for i in range(num_outputs)]
    if len(names) != num_outputs:
        raise ToolError(f"{len(names)} class/target names ({', '.join(names[:8])}) for a head with "
                        f"{num_outputs} outputs")
    return task, names


def parse_class_names(value):
    """A comma-separated list, or a text file with one name a line (the demo's classes.txt)."""
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    return [v.strip() for v in value.split(",") if v.strip()]


def build_classifier(state_dict, cfg, class_names=None):
    """The fine-tuned model of a checkpoint with its trained head; ``(model, task, names)``."""
    if is_pretrain_state(state_dict):
        raise ToolError("this is a pre-training checkpoint (it has a decoder and no classifier): predict needs a "
                        "fine-tuned one; use tools/extract_features.py for pre-trained features")
    head = state_dict.get("head.weight", state_dict.get("module.head.weight"))
    if head is None:
        raise ToolError("the checkpoint has no classifier weights (head.weight): it cannot predict")
    num_outputs = int(head.shape[0])
    if cfg.get("nb_classes") and int(cfg["nb_classes"]) != num_outputs:
        raise CheckpointMismatchError(f"--nb_classes/args say {cfg['nb_classes']} outputs but the checkpoint's "
                                      f"head has {num_outputs}")
    task, names = dataset_names(cfg, num_outputs, class_names)
    name = finetune_name(cfg.get("model") or "svfap_base_patch16_160")
    model = create(name, num_classes=num_outputs, **model_kwargs(cfg))
    from models.checkpoint import to_finetune_keys
    load_strict(model, to_finetune_keys(state_dict), f"checkpoint ({name})")
    return model.eval(), task, names


# -- inputs -------------------------------------------------------------------------------------

def is_frame_folder(path):
    return os.path.isdir(path) and any(n.lower().endswith(FRAME_EXTS) for n in os.listdir(path))


def find_inputs(paths):
    """Videos from files, frame folders, and folders of videos / frame folders (searched recursively)."""
    found = []
    for path in paths:
        if os.path.isfile(path):
            found.append(path)
        elif is_frame_folder(path):
            found.append(path)
        elif os.path.isdir(path):
            inside = []
            for root, dirs, files in os.walk(path):
                dirs.sort(key=natural_key)
                if root != path and any(n.lower().endswith(FRAME_EXTS) for n in files):
                    inside.append(root)
                    dirs[:] = []  # a frame folder is one video, whatever it holds below
                    continue
                inside += [os.path.join(root, n) for n in sorted(files, key=natural_key)
                           if n.lower().endswith(VIDEO_EXTS)]
            if not inside:
                raise ToolError(f"{path}: no videos ({', '.join(VIDEO_EXTS)}) or frame folders inside")
            found += inside
        else:
            raise ToolError(f"no such video, frame folder or folder: {path}")
    return found


def count_frames(path, backend="pyav"):
    source = open_source(path, backend)
    try:
        return source.num_frames
    finally:
        source.close()


def video_fps(path):
    """Frames per second of a video file (None for frame folders or when the container does not say)."""
    if os.path.isdir(path):
        return None
    try:
        import av
        with av.open(path) as c:
            rate = c.streams.video[0].average_rate
            return float(rate) if rate else None
    except Exception:  # fps only labels the output; a video that decodes is still predicted
        return None


# -- windows ------------------------------------------------------------------------------------

def sliding_windows(n, num_frames, rate, stride=None):
    """Windows covering every frame of an ``n``-frame video: starts ``stride`` apart (default: one
    clip span, so windows touch), the last one ending on the last frame. A video shorter than one
    span gets the single padded clip the datasets use."""
    span = clip_span(num_frames, rate)
    if n < span:
        return [short_video_indices(n, num_frames, rate)]
    stride = stride or span
    starts = list(range(0, n - span + 1, stride))
    if starts[-1] + span < n:
        starts.append(n - span)
    return [window_at(s, num_frames, rate) for s in starts]


def plan_windows(n, num_frames, rate, mode="sliding", stride=None, num_segments=2):
    """``sliding`` (cover the video), ``uniform`` (the test split's ``num_segments`` evenly placed
    clips) or ``centre`` (the validation split's single clip)."""
    if mode == "sliding":
        return sliding_windows(n, num_frames, rate, stride)
    if mode == "uniform":
        return uniform_windows(n, num_frames, rate, num_segments)
    if mode == "centre":
        return uniform_windows(n, num_frames, rate, 1)
    raise ToolError(f"window mode must be sliding, uniform or centre, not {mode!r}")


def chunk_windows(windows, max_frames):
    """Groups of windows whose decoded frames stay under ``max_frames`` (bounded memory on long videos)."""
    chunks, current, frames = [], [], set()
    for w in windows:
        grown = frames | set(w.tolist())
        if current and len(grown) > max_frames:
            chunks.append(current)
            current, grown = [], set(w.tolist())
        current.append(w)
        frames = grown
    if current:
        chunks.append(current)
    return chunks


# -- clips --------------------------------------------------------------------------------------

@dataclass
class ClipSpec:
    input_size: int = 160
    short_side_size: int | None = None
    face_box: bool = False  # the pre-training fixed upper-centre face box (for 224x224 face tracks)


def eval_clip(frames, spec: ClipSpec):
    """uint8 ``(T, H, W, 3)`` → normalised ``(3, T, S, S)``, as the test split's single crop."""
    clip = T.to_clip_tensor(np.ascontiguousarray(frames))
    if spec.face_box:
        top, left, h, w = T.face_box(*clip.shape[-2:])
        clip = clip[..., top:top + h, left:left + w]
    clip = T.resize_short_side(clip, spec.short_side_size or spec.input_size)
    h, w = clip.shape[-2:]
    size = spec.input_size
    top, left = T.crop_offsets(h, size, 1)[0], T.crop_offsets(w, size, 1)[0]
    return T.to_model_input(clip[..., top:top + size, left:left + size])


def face_crop_frames(frames, crop_cfg):
    """Face-crop RGB frames with the preprocessing's tracker; ``(crops (N,S,S,3) RGB, info)``.

    The frames given are the ones the windows use (every ``sampling_rate``-th frame), so the
    detector runs on each of them and the track is smoothed over them.
    """
    from preprocess.face_crop import crop_faces
    crops, _, info = crop_faces([np.ascontiguousarray(f[..., ::-1]) for f in frames], crop_cfg)
    if crops is None:
        return None, info
    return np.stack([c[..., ::-1] for c in crops]), info


def crop_config(size=224, margin=0.3):
    from preprocess.face_crop import CropConfig
    return CropConfig(size=size, margin=margin, detect_every=1, smooth=3)


@dataclass
class WindowBatch:
    """The clips of some windows of one video, with where each window lies in the video."""
    clips: torch.Tensor                       # (W, 3, T, S, S)
    windows: list = field(default_factory=list)  # frame indices per window
    face: dict | None = None                  # face-crop detection info, when cropping


def load_windows(path, windows, spec: ClipSpec, backend="pyav", crop_cfg=None):
    """Decode the frames ``windows`` need (once each), face-crop them if asked, build the clips."""
    union = sorted(set(np.concatenate(windows).tolist()))
    (frames,) = read_clips(path, lambda n: [union], backend)
    info = None
    if crop_cfg is not None:
        frames, info = face_crop_frames(frames, crop_cfg)
        if frames is None:
            raise ToolError(f"{path}: no face found in {info['frames']} frames (run without --crop?)")
    where = {t: k for k, t in enumerate(union)}
    clips = torch.stack([eval_clip(frames[[where[i] for i in w.tolist()]], spec) for w in windows])
    return WindowBatch(clips, list(windows), info)


def write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def pick_device(name):
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ToolError(f"--device {name}: CUDA is not available here (use --device cpu)")
    return torch.device(name)


def sampling_rate_of(cfg):
    """The clip frame stride: given, else the dataset's default (FERV39k uses 1), else 4."""
    if cfg.get("sampling_rate"):
        return int(cfg["sampling_rate"])
    if cfg.get("data_set"):
        from datasets.registry import get_dataset_info
        try:
            return get_dataset_info(cfg["data_set"], task=cfg.get("task")).sampling_rate
        except ValueError:
            pass
    return 4
