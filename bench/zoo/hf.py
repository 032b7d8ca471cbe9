"""transformers architectures built from small configs with random weights, exported by torch.

Nothing is downloaded: every model comes from a config class (``AutoConfig.for_model``) and
``from_config``, with ``HF_HUB_OFFLINE=1`` set before transformers is imported. Each model is
exported with the legacy TorchScript exporter (``dynamo=False``) and with the dynamo exporter,
with the dynamic batch/sequence axes a user would declare, so the zoo sees what users feed
onnx-surgery. The configs are tiny (2 layers, hidden 32–64) to keep the zoo fast on 2 cores;
the graphs keep every op the full-size models have.

This module does not import ``surgery``: the zoo judges the tool from outside.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_TEXT = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 100,
    "max_position_embeddings": 64,
}
_VIT = {
    "image_size": 32,
    "patch_size": 8,
    "num_channels": 3,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


@dataclass(frozen=True)
class Arch:
    """One architecture: how to build it and what a user feeds it."""

    model_type: str
    config: dict[str, Any]
    inputs: dict[str, tuple[str, tuple[int, ...]]]  # name -> (dtype, example shape)
    dynamic: dict[str, dict[int, str]]  # name -> {axis: dim name}
    builder: str = "AutoModel"  # AutoModel, T5EncoderModel, WhisperEncoder
    outputs: tuple[str, ...] = ("last_hidden_state",)
    ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # int inputs: [low, high)


def _text(model_type: str, **extra: Any) -> Arch:
    cfg = {**_TEXT, **extra}
    return Arch(
        model_type,
        cfg,
        {"input_ids": ("int64", (2, 16)), "attention_mask": ("int64", (2, 16))},
        {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
        ranges={"input_ids": (0, 100), "attention_mask": (1, 2)},
    )


def _image(
    model_type: str,
    config: dict[str, Any],
    size: int = 32,
    outputs: tuple[str, ...] = ("last_hidden_state",),
) -> Arch:
    return Arch(
        model_type,
        config,
        {"pixel_values": ("float32", (2, 3, size, size))},
        {"pixel_values": {0: "batch"}},
        outputs=outputs,
    )


ARCHS: dict[str, Arch] = {
    "bert": _text("bert"),
    "distilbert": Arch(
        "distilbert",
        {
            "dim": 32,
            "n_layers": 2,
            "n_heads": 2,
            "hidden_dim": 64,
            "vocab_size": 100,
            "max_position_embeddings": 64,
        },
        {"input_ids": ("int64", (2, 16)), "attention_mask": ("int64", (2, 16))},
        {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
        ranges={"input_ids": (0, 100), "attention_mask": (1, 2)},
    ),
    "roberta": _text("roberta", pad_token_id=1),
    "gpt2": Arch(
        "gpt2",
        {
            "n_embd": 32,
            "n_layer": 2,
            "n_head": 2,
            "vocab_size": 100,
            "n_positions": 64,
            "use_cache": False,
        },
        {"input_ids": ("int64", (2, 16)), "attention_mask": ("int64", (2, 16))},
        {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
        ranges={"input_ids": (0, 100), "attention_mask": (1, 2)},
    ),
    "t5-encoder": Arch(
        "t5",
        {
            "d_model": 32,
            "d_kv": 16,
            "d_ff": 64,
            "num_layers": 2,
            "num_heads": 2,
            "vocab_size": 100,
            "relative_attention_num_buckets": 8,
            "use_cache": False,
        },
        {"input_ids": ("int64", (2, 16)), "attention_mask": ("int64", (2, 16))},
        {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
        builder="T5EncoderModel",
        ranges={"input_ids": (0, 100), "attention_mask": (1, 2)},
    ),
    "vit": _image("vit", dict(_VIT)),
    "deit": _image("deit", dict(_VIT)),
    "mobilevit": _image(
        "mobilevit",
        {
            "image_size": 64,
            "patch_size": 2,
            "hidden_sizes": [32, 48, 64],
            "neck_hidden_sizes": [8, 8, 16, 16, 24, 32, 64],
            "num_attention_heads": 2,
            "num_hidden_layers": 2,
        },
        size=64,
    ),
    "swin": _image(
        "swin",
        {
            "image_size": 32,
            "patch_size": 4,
            "embed_dim": 16,
            "depths": [1, 1],
            "num_heads": [1, 2],
            "window_size": 4,
        },
    ),
    "convnext": _image(
        "convnext", {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "image_size": 32}
    ),
    "resnet": _image(
        "resnet",
        {
            "embedding_size": 8,
            "hidden_sizes": [8, 16, 24, 32],
            "depths": [1, 1, 1, 1],
            "layer_type": "basic",
        },
    ),
    "segformer": _image(
        "segformer",
        {
            "num_encoder_blocks": 2,
            "depths": [1, 1],
            "sr_ratios": [2, 1],
            "hidden_sizes": [16, 32],
            "num_attention_heads": [1, 2],
            "decoder_hidden_size": 32,
            "patch_sizes": [7, 3],
            "strides": [4, 2],
            "mlp_ratios": [2, 2],
        },
        size=64,
        outputs=("logits",),
    ),
    "wav2vec2": Arch(
        "wav2vec2",
        {
            "hidden_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "intermediate_size": 64,
            "conv_dim": (16, 16),
            "conv_stride": (5, 2),
            "conv_kernel": (10, 3),
            "num_conv_pos_embeddings": 16,
            "num_conv_pos_embedding_groups": 2,
        },
        {"input_values": ("float32", (2, 4000))},
        {"input_values": {0: "batch", 1: "samples"}},
    ),
    "whisper-encoder": Arch(
        "whisper",
        {
            "d_model": 32,
            "encoder_layers": 2,
            "encoder_attention_heads": 2,
            "decoder_layers": 1,
            "decoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_ffn_dim": 64,
            "num_mel_bins": 80,
            "max_source_positions": 50,
            "vocab_size": 100,
            "pad_token_id": 0,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "decoder_start_token_id": 1,
        },
        {"input_features": ("float32", (2, 80, 100))},
        {"input_features": {0: "batch"}},
        builder="WhisperEncoder",
    ),
}


def build(arch: Arch):  # -> torch.nn.Module
    """The model in eval mode with random (seeded) weights, returning a tuple of tensors."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.AutoConfig.for_model(arch.model_type, **arch.config)
    if arch.builder == "T5EncoderModel":
        model = transformers.T5EncoderModel(config)
    elif arch.builder == "WhisperEncoder":
        model = transformers.WhisperModel(config).get_encoder()
    else:
        model = (
            transformers.AutoModel.from_config(config)
            if arch.outputs == ("last_hidden_state",)
            else transformers.AutoModelForSemanticSegmentation.from_config(config)
        )
    model.eval()

    class Wrapped(torch.nn.Module):
        """Named inputs in, the selected outputs out (exporters want tensors, not ModelOutput)."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, *args):
            out = self.inner(**dict(zip(arch.inputs, args, strict=True)), return_dict=True)
            return tuple(out[name] for name in arch.outputs)

    return Wrapped().eval()


def example_inputs(arch: Arch) -> tuple:
    import torch

    g = torch.Generator().manual_seed(0)
    tensors = []
    for name, (dtype, shape) in arch.inputs.items():
        if dtype == "int64":
            low, high = arch.ranges.get(name, (0, 10))
            tensors.append(torch.randint(low, high, shape, generator=g, dtype=torch.int64))
        else:
            tensors.append(torch.randn(shape, generator=g))
    return tuple(tensors)


def export(arch_name: str, exporter: str, path: Path) -> Path:
    """Export ``arch_name`` with ``exporter`` ('legacy' or 'dynamo') to ``path``."""
    import torch

    arch = ARCHS[arch_name]
    model = build(arch)
    args = example_inputs(arch)
    names = list(arch.inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        if exporter == "legacy":
            axes: dict[str, dict[int, str]] = {n: dict(a) for n, a in arch.dynamic.items()}
            for _i, out in enumerate(arch.outputs):
                axes[out] = {0: "batch"}
            torch.onnx.export(
                model,
                args,
                str(path),
                dynamo=False,
                opset_version=17,
                input_names=names,
                output_names=list(arch.outputs),
                dynamic_axes=axes,
            )
        elif exporter == "dynamo":
            dims: dict[str, Any] = {}
            shapes = []
            for name in names:
                spec = {}
                for axis, dim_name in arch.dynamic.get(name, {}).items():
                    spec[axis] = dims.setdefault(dim_name, torch.export.Dim.AUTO)
                shapes.append(spec or None)
            program = torch.onnx.export(
                model,
                args,
                dynamo=True,
                input_names=names,
                output_names=list(arch.outputs),
                dynamic_shapes=(tuple(shapes),),
            )
            program.save(str(path))
        else:
            raise ValueError(f"unknown exporter {exporter!r}")
    return path


MAKERS: dict[str, Callable[..., Path]] = {"hf": export}
