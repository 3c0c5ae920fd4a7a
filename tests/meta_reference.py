"""Run Meta's own Llama 3.2 Vision reference code, for parity tests only.

The reference lives in the installed `llama_models` wheel (0.3.0):
`llama_models/llama3/multimodal/{model,image_transform,encoder_utils}.py` and
`llama_models/llama3/model.py`. It imports `fairscale` and `torchvision`, neither of
which is installed here (fairscale's build pulls a CUDA torch; PyPI torchvision does not
import beside this CPU torch). This module supplies small, faithful stand-ins for the
few names the reference uses, puts them in `sys.modules` only while the reference is
being imported, and then takes them out again, so no other code sees a fake
`torchvision` or `fairscale`. The reference modules keep their own references to the
stand-ins.

Public API
----------
    meta_modules()                                   -> SimpleNamespace of Meta's modules
    stand_in_modules()                               context manager: stand-ins in sys.modules
    meta_default_dtype(dtype)                        context manager: torch default dtype
    meta_args(args)                                  -> Meta's llama3.args.ModelArgs
    build_meta_model(args, dtype=fp32, device="cpu") -> Meta's CrossAttentionTransformer
    meta_image_transform(args, pil_image, dtype)     -> (chunks [c,3,R,R], (rows, cols))
    meta_chat_format()                               -> Meta's ChatFormat(Tokenizer.get_instance())
    create_vision_mask                               Meta's chat_format.create_vision_mask
    randomize_meta_params_(model, seed=0)            fill every parameter, gates included

Everything the reference does with the default dtype (vision-input cast, `_pad_masks`,
`_stack_images`, the image transform's canvas arithmetic) happens at *call* time, so run
Meta's `compute_vision_tokens_masks` / `forward` inside `meta_default_dtype(dtype)` too.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import math
import sys
import types
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

_REPO_ROOT = Path(__file__).resolve().parents[1]
if str(_REPO_ROOT) not in sys.path:  # so `model.args` imports however pytest was started
    sys.path.insert(0, str(_REPO_ROOT))

# Meta's hard-coded vision encoder sizes (llama_models 0.3.0,
# llama3/multimodal/model.py, CrossAttentionTransformerVision.__init__ and the
# VisionEncoder defaults). The 11B/90B presets of model.args equal these.
META_VISION = dict(
    width=1280,
    layers=32,
    heads=16,
    n_global_layers=8,
    patch_size=14,
    max_num_tiles=4,
    mlp_ratio=4.0,
    return_intermediate=(3, 7, 15, 23, 30),
)
META_N_LEARNABLE_EMBEDDINGS = 8  # max(model-parallel world size, 8) at world size 1


# =====================================================================================
# fairscale stand-in (model-parallel world size 1)
# =====================================================================================
#
# Real fairscale (fairscale/nn/model_parallel/layers.py) creates each weight with
# torch.Tensor(...) in the default dtype, runs `init_method` on a master copy, and zeros
# the bias of Column/RowParallelLinear. At world size 1 their forwards are plain
# F.linear / F.embedding (the gather / all-reduce are identities). Meta passes
# `init_method=lambda x: x` everywhere, which leaves fairscale's weights uninitialised;
# these stand-ins keep torch's default init instead (finite, seeded by torch.manual_seed)
# and zero the bias as fairscale does. Parity tests copy weights in anyway.


def get_model_parallel_world_size() -> int:
    return 1


def get_model_parallel_rank() -> int:
    return 0


def get_model_parallel_group():
    return None


class ColumnParallelLinear(nn.Linear):
    """`nn.Linear(in, out)`; parameters `weight` [out, in] and `bias` [out] (None if bias=False)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, gather_output: bool = True,
                 init_method=None, stride: int = 1, keep_master_weight_for_test: bool = False, **kwargs) -> None:
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.gather_output = gather_output
        _fairscale_init_(self, init_method)


class RowParallelLinear(nn.Linear):
    """`nn.Linear(in, out)`; parameters `weight` [out, in] and `bias` [out] (None if bias=False)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, input_is_parallel: bool = False,
                 init_method=None, stride: int = 1, keep_master_weight_for_test: bool = False, **kwargs) -> None:
        super().__init__(in_features, out_features, bias=bias, **kwargs)
        self.input_is_parallel = input_is_parallel
        _fairscale_init_(self, init_method)


class VocabParallelEmbedding(nn.Embedding):
    """`nn.Embedding(num_embeddings, embedding_dim)`; parameter `weight`."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx=None, max_norm=None,
                 norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False,
                 init_method=None, keep_master_weight_for_test: bool = False, **kwargs) -> None:
        super().__init__(num_embeddings, embedding_dim, padding_idx=padding_idx, max_norm=max_norm,
                         norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse, **kwargs)
        _fairscale_init_(self, init_method)


def _fairscale_init_(module: nn.Module, init_method) -> None:
    with torch.no_grad():
        if init_method is not None:
            init_method(module.weight)
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()


# =====================================================================================
# torchvision stand-in: torchvision 0.20 semantics for what image_transform.py uses
# =====================================================================================
#
# Checked against torchvision 0.20.1 (git 3ac97aa9120137381ed1060f37237e44485ac2aa),
# read from the PyPI wheel's sources (the search index holds no v0.20-era copy of
# pytorch/vision; its stored copies are older or newer):
#  * transforms/transforms.py L126-137: ToTensor.__call__(pic) -> F.to_tensor(pic).
#  * transforms/functional.py L127-178 (to_tensor), PIL path:
#      default_float_dtype = torch.get_default_dtype()                  (L147)
#      img = from_numpy(np.array(pic, uint8, copy=True)) for 8-bit modes (L167-168)
#      mode "1": img = 255 * img                                         (L170-171)
#      img.view(H, W, len(getbands())).permute(2, 0, 1).contiguous()     (L172-174)
#      uint8 -> img.to(dtype=default_float_dtype).div(255)               (L175-176)
#    modes I / I;16 / F give int32 / int16 / float32 and are not scaled.
#  * transforms/transforms.py L262-277: Normalize(mean, std, inplace=False) is an
#    nn.Module; forward -> F.normalize(tensor, mean, std, inplace).
#  * functional.py L327-350: normalize -> _functional_tensor.normalize.
#  * _functional_tensor.py L905-928: float tensor, ndim >= 3; clone unless inplace;
#    mean/std = torch.as_tensor(x, dtype=tensor.dtype, device=tensor.device); error if any
#    std == 0 after that cast; 1-D -> .view(-1, 1, 1); return tensor.sub_(mean).div_(std).
#    (So under a bf16 default dtype mean/std are rounded to bf16 before the subtraction.)
#  * functional.py L23-36: InterpolationMode(Enum) BILINEAR = "bilinear", ...;
#    L53-61 pil_modes_mapping: BILINEAR -> 2 (PIL.Image.BILINEAR); ints are accepted too
#    (L447-448, _interpolation_modes_from_int).
#  * functional.py L387-479 (resize): a 2-sequence size is (h, w);
#    _compute_resized_output_size (L353-384) returns [h, w] for it; if
#    [image_height, image_width] == [h, w] the *same* image object is returned (L470-471);
#    else for PIL, _functional_pil.resize(img, [h, w], 2) (L473-477).
#  * _functional_pil.py L239-250: resize -> img.resize(tuple(size[::-1]), interpolation),
#    i.e. img.resize((w, h), PIL.Image.BILINEAR), Pillow's own (antialiased) filter; the
#    `antialias` argument only matters for tensors (L474-475 warn if False).
# No numpy is needed: a PIL 8-bit image's tobytes() is the same row-major H x W x C uint8
# buffer that np.array(pic, np.uint8) holds.


class InterpolationMode(Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


# PIL.Image resampling constants: NEAREST 0, LANCZOS 1, BILINEAR 2, BICUBIC 3, BOX 4, HAMMING 5
_PIL_MODE = {
    InterpolationMode.NEAREST: 0, InterpolationMode.NEAREST_EXACT: 0, InterpolationMode.BILINEAR: 2,
    InterpolationMode.BICUBIC: 3, InterpolationMode.BOX: 4, InterpolationMode.HAMMING: 5,
    InterpolationMode.LANCZOS: 1,
}
_MODE_FROM_PIL_INT = {0: InterpolationMode.NEAREST, 2: InterpolationMode.BILINEAR, 3: InterpolationMode.BICUBIC,
                      4: InterpolationMode.BOX, 5: InterpolationMode.HAMMING, 1: InterpolationMode.LANCZOS}


def _is_pil_image(img) -> bool:
    from PIL import Image

    return isinstance(img, Image.Image)


def to_tensor(pic) -> torch.Tensor:
    """PIL image -> [C, H, W]; 8-bit modes become default-dtype floats divided by 255."""
    if not _is_pil_image(pic):
        raise TypeError(f"stand-in to_tensor takes a PIL image (numpy is not used here); got {type(pic)}")
    if pic.mode in ("I", "I;16", "I;16B", "F"):
        raise NotImplementedError(f"stand-in to_tensor: PIL mode {pic.mode!r} is not needed by the reference")
    default_float_dtype = torch.get_default_dtype()
    width, height = pic.size
    channels = len(pic.getbands())
    data = pic.tobytes() if pic.mode != "1" else pic.convert("L").point(lambda v: 1 if v else 0).tobytes()
    img = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if pic.mode == "1":
        img = 255 * img
    img = img.view(height, width, channels).permute((2, 0, 1)).contiguous()
    return img.to(dtype=default_float_dtype).div(255)


def normalize(tensor: torch.Tensor, mean: Sequence[float], std: Sequence[float], inplace: bool = False) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"img should be Tensor Image. Got {type(tensor)}")
    if not tensor.is_floating_point():
        raise TypeError(f"Input tensor should be a float tensor. Got {tensor.dtype}.")
    if tensor.ndim < 3:
        raise ValueError(
            f"Expected tensor to be a tensor image of size (..., C, H, W). Got tensor.size() = {tensor.size()}"
        )
    if not inplace:
        tensor = tensor.clone()
    mean_t = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device)
    std_t = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device)
    if (std_t == 0).any():
        raise ValueError(f"std evaluated to zero after conversion to {tensor.dtype}, leading to division by zero.")
    if mean_t.ndim == 1:
        mean_t = mean_t.view(-1, 1, 1)
    if std_t.ndim == 1:
        std_t = std_t.view(-1, 1, 1)
    return tensor.sub_(mean_t).div_(std_t)


def resize(img, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
    """PIL path of torchvision 0.20 `functional.resize` for a (h, w) size."""
    if isinstance(interpolation, int):
        interpolation = _MODE_FROM_PIL_INT[interpolation]
    elif not isinstance(interpolation, InterpolationMode):
        raise TypeError(
            "Argument interpolation should be a InterpolationMode or a corresponding Pillow integer constant"
        )
    if not _is_pil_image(img):
        raise NotImplementedError("stand-in resize handles PIL images only (the reference resizes PIL images)")
    if not (isinstance(size, (list, tuple)) and len(size) == 2) or max_size is not None:
        raise NotImplementedError("stand-in resize handles an explicit (h, w) size only")
    out_h, out_w = int(size[0]), int(size[1])
    width, height = img.size
    if [height, width] == [out_h, out_w]:
        return img
    return img.resize((out_w, out_h), _PIL_MODE[interpolation])


class ToTensor:
    def __call__(self, pic) -> torch.Tensor:
        return to_tensor(pic)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}()"


class Normalize(nn.Module):
    def __init__(self, mean, std, inplace: bool = False) -> None:
        super().__init__()
        self.mean = mean
        self.std = std
        self.inplace = inplace

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return normalize(tensor, self.mean, self.std, self.inplace)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(mean={self.mean}, std={self.std})"


# =====================================================================================
# Installing the stand-ins and importing the reference
# =====================================================================================

STAND_IN_MARK = "__llama_trace_stand_in__"


def _module(name: str, is_package: bool, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name, f"llama-trace test stand-in for {name}")
    mod.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=is_package)
    if is_package:
        mod.__path__ = []
    setattr(mod, STAND_IN_MARK, True)
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def _build_stand_ins() -> dict[str, types.ModuleType]:
    fs_initialize = _module(
        "fairscale.nn.model_parallel.initialize", False,
        get_model_parallel_world_size=get_model_parallel_world_size,
        get_model_parallel_rank=get_model_parallel_rank,
        get_model_parallel_group=get_model_parallel_group,
        # imported by generation.py, only called by Llama3.build (which the tests never call)
        initialize_model_parallel=lambda *a, **k: None,
        model_parallel_is_initialized=lambda: True,
    )
    fs_layers = _module(
        "fairscale.nn.model_parallel.layers", False,
        ColumnParallelLinear=ColumnParallelLinear,
        RowParallelLinear=RowParallelLinear,
        VocabParallelEmbedding=VocabParallelEmbedding,
    )
    fs_mp = _module("fairscale.nn.model_parallel", True, initialize=fs_initialize, layers=fs_layers)
    fs_nn = _module("fairscale.nn", True, model_parallel=fs_mp)
    fs = _module("fairscale", True, nn=fs_nn)

    tv_functional = _module(
        "torchvision.transforms.functional", False,
        InterpolationMode=InterpolationMode, to_tensor=to_tensor, normalize=normalize, resize=resize,
    )
    tv_transforms = _module(
        "torchvision.transforms", True,
        ToTensor=ToTensor, Normalize=Normalize, InterpolationMode=InterpolationMode, functional=tv_functional,
    )
    tv = _module("torchvision", True, transforms=tv_transforms, __version__="0.20.1+stand-in")
    return {m.__name__: m for m in (fs, fs_nn, fs_mp, fs_initialize, fs_layers, tv, tv_transforms, tv_functional)}


@contextlib.contextmanager
def stand_in_modules() -> Iterator[dict[str, types.ModuleType]]:
    """Put the fairscale / torchvision stand-ins in `sys.modules`; restore it on exit.

    A name already present in `sys.modules` (a real package someone imported) is left
    alone. Yields the stand-in modules by name.
    """
    stand_ins = _build_stand_ins()
    added = []
    try:
        for name, mod in stand_ins.items():
            if name not in sys.modules:
                sys.modules[name] = mod
                added.append(name)
        yield stand_ins
    finally:
        for name in added:
            if sys.modules.get(name) is stand_ins[name]:
                del sys.modules[name]


def _identity(input_):
    return input_


_META_MODULE_NAMES = dict(
    args="llama_models.llama3.args",
    text="llama_models.llama3.model",
    encoder_utils="llama_models.llama3.multimodal.encoder_utils",
    image_transform="llama_models.llama3.multimodal.image_transform",
    model="llama_models.llama3.multimodal.model",
)


@lru_cache(maxsize=None)
def meta_modules() -> types.SimpleNamespace:
    """Import Meta's reference modules (once) with the stand-ins in place.

    Afterwards `reduce_from_tensor_model_parallel_region` and
    `gather_from_tensor_model_parallel_region` in the multimodal model module (which call
    torch.distributed functional collectives) are identities, as at world size 1.
    """
    with stand_in_modules():
        mods = {key: importlib.import_module(name) for key, name in _META_MODULE_NAMES.items()}
    model = mods["model"]
    model.reduce_from_tensor_model_parallel_region = _identity
    model.gather_from_tensor_model_parallel_region = _identity
    return types.SimpleNamespace(**mods)


# =====================================================================================
# Building and running the reference
# =====================================================================================


def meta_default_dtype(dtype: torch.dtype):
    """Set torch's default dtype for the block; always restore the previous one (our model's
    helper: it touches no model code)."""
    from model.build import default_dtype

    return default_dtype(dtype)


_META_ARG_FIELDS = (
    "dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of", "ffn_dim_multiplier",
    "norm_eps", "rope_theta", "use_scaled_rope", "max_batch_size", "max_seq_len",
    "vision_chunk_size", "vision_max_num_chunks", "vision_num_cross_attention_layers",
)


def meta_args(args):
    """Our `model.args.ModelArgs` -> Meta's `llama_models.llama3.args.ModelArgs`."""
    meta = meta_modules().args.ModelArgs(**{name: getattr(args, name) for name in _META_ARG_FIELDS})
    for name in _META_ARG_FIELDS:  # Meta's __init__ silently drops names it lacks; make sure none was
        if getattr(meta, name) != getattr(args, name):
            raise AssertionError(f"Meta ModelArgs.{name} = {getattr(meta, name)!r}, ours = {getattr(args, name)!r}")
    return meta


def _vision_overrides(args) -> dict:
    return dict(
        width=args.vision_width,
        layers=args.vision_layers,
        heads=args.vision_heads,
        n_global_layers=args.vision_global_layers,
        patch_size=args.vision_patch_size,
        max_num_tiles=args.vision_max_num_tiles,
        mlp_ratio=args.vision_mlp_ratio,
        return_intermediate=tuple(args.vision_return_intermediate),
    )


def build_meta_model(args, dtype: torch.dtype = torch.float32, device="cpu"):
    """Meta's `CrossAttentionTransformer` for our `ModelArgs`, with `setup_cache` done.

    Built under `torch.set_default_dtype(dtype)` (restored afterwards) and
    `torch.device(device)`, as `Llama3.build` builds it under a default dtype and device.
    When the vision sizes differ from the ones Meta hard-codes (the `tiny` preset), Meta's
    `VisionEncoder` is constructed with ours, through a factory put in place of the
    `VisionEncoder` name in Meta's module for the duration of the build; then
    `vision_input_dim` / `patch_size` are fixed and `vision_projection` is re-created with
    (len(taps) + 1) * width in-features. The 11B/90B sizes need none of that.
    """
    mods = meta_modules()
    mm = mods.model
    margs = meta_args(args)
    ours = _vision_overrides(args)
    patch_vision = ours != META_VISION
    original_encoder = mm.VisionEncoder

    def vision_encoder_factory(**kwargs):
        kwargs.update(ours, return_intermediate=list(ours["return_intermediate"]))
        return original_encoder(**kwargs)

    with meta_default_dtype(dtype), torch.device(device):
        if patch_vision:
            mm.VisionEncoder = vision_encoder_factory
        try:
            model = mm.CrossAttentionTransformer(margs)
        finally:
            mm.VisionEncoder = original_encoder

        vision = model.vision_model
        if patch_vision:
            vision.patch_size = ours["patch_size"]
            in_dim = (len(ours["return_intermediate"]) + 1) * ours["width"]
            if vision.vision_input_dim != in_dim:
                vision.vision_input_dim = in_dim
                vision.vision_projection = ColumnParallelLinear(in_dim, args.dim, bias=True, init_method=lambda x: x)
        n_learn = getattr(args, "n_learnable_embeddings", META_N_LEARNABLE_EMBEDDINGS)
        if n_learn != META_N_LEARNABLE_EMBEDDINGS:
            model.text_model.learnable_embedding = VocabParallelEmbedding(n_learn, args.dim, init_method=lambda x: x)
        model.setup_cache(args.max_batch_size, torch.device(device), dtype)
    return model


def meta_image_transform(args, pil_image, dtype: torch.dtype = torch.float32):
    """Meta's `VariableSizeImageTransform(size=R)(image, max_num_chunks=...)` under `dtype`.

    Returns (chunks [c, 3, R, R] in `dtype`, (rows, cols)), exactly Meta's (image, ar).
    """
    it = meta_modules().image_transform
    with meta_default_dtype(dtype):
        transform = it.VariableSizeImageTransform(size=args.vision_chunk_size)
        chunks, ar = transform(pil_image, max_num_chunks=args.vision_max_num_chunks)
    return chunks, tuple(ar)


def meta_chat_format():
    """Meta's `ChatFormat(Tokenizer.get_instance())` (tiktoken + pydantic only)."""
    from llama_models.llama3.chat_format import ChatFormat
    from llama_models.llama3.tokenizer import Tokenizer

    return ChatFormat(Tokenizer.get_instance())


def __getattr__(name: str):  # PEP 562: import chat_format only when asked for
    if name == "create_vision_mask":
        from llama_models.llama3.chat_format import create_vision_mask

        return create_vision_mask
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def randomize_meta_params_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fill every parameter from a seeded generator so that every path matters.

    Meta zero-initialises all gates (vision `gated_positional_embedding_gate`, tile
    `gate`s, global-layer `gate_attn`/`gate_ffn`, cross-attention `gate_attn`/`gate_ffwd`);
    with tanh(0) = 0 those paths would contribute nothing. Here: gates +-U(0.3, 0.9);
    norm weights 1 + 0.1 N; biases 0.02 N; everything else N / sqrt(last dim).
    Parameters are visited in sorted-name order, so the result depends only on `seed`.
    """
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            leaf = name.rsplit(".", 1)[-1]
            shape = tuple(p.shape)
            if p.numel() == 1 and "gate" in name:
                mag = 0.3 + 0.6 * torch.rand(shape, generator=gen, dtype=torch.float32)
                sign = torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0).to(torch.float32)
                value = mag * sign
            elif leaf == "weight" and p.ndim == 1:  # RMSNorm / LayerNorm
                value = 1.0 + 0.1 * torch.randn(shape, generator=gen, dtype=torch.float32)
            elif leaf == "bias":
                value = 0.02 * torch.randn(shape, generator=gen, dtype=torch.float32)
            else:
                value = torch.randn(shape, generator=gen, dtype=torch.float32) / math.sqrt(shape[-1])
            p.copy_(value.to(p.dtype))
    return model


def meta_generator(model):
    """Meta's `Llama3` object (generation.py) around an already built reference model, without
    `Llama3.build` (no process group, no checkpoint): its `generate` is Meta's decoding loop."""
    with stand_in_modules():
        generation = importlib.import_module("llama_models.llama3.generation")
        chat_format = importlib.import_module("llama_models.llama3.chat_format")
        tokenizer = importlib.import_module("llama_models.llama3.tokenizer")
    llama = generation.Llama3.__new__(generation.Llama3)
    llama.args = model.params
    llama.model = model
    llama.tokenizer = tokenizer.Tokenizer.get_instance()
    llama.formatter = chat_format.ChatFormat(llama.tokenizer)
    return llama
