"""Start from open weights: a PixArt-α pipeline (diffusers format) -> a GenTron text-to-image pipeline.

PixArt-α's transformer is GenTron-T2I-XL/2 with three switches our model already has:

- ``timestep_modulation="adaln_single"``: one shared SiLU+Linear(D, 6D) (``t_block``) plus a learned
  (6, D) table per block, instead of a modulation MLP per block; the final layer adds the *embedded
  timestep* (the timestep MLP's output, before ``t_block``) to a learned (2, D) table, as ours does.
- ``cross_attention_norm=False``: PixArt has no norm before cross-attention.
- ``gelu_approximate="tanh"``: tanh-GELU in the MLPs and the caption projection.

Positions use PixArt's grid scaling (``pos_embed_base_size = sample_size // patch_size`` and its
interpolation scale); both codes put the w coordinate's sin-cos half first. The cross-attention mask
means the same in both (True/1 = a real T5 token). Checked against diffusers' code by the tests
(tests/test_convert.py): the converted model's noise prediction equals PixArt's to float rounding.

Two differences are resolved at conversion time, never silently:

- **Learned sigma.** The released PixArt-α checkpoints predict epsilon and a variance interpolation
  (``out_channels = 2 * in_channels``; channel is the fastest axis of ``proj_out``'s rows, layout
  ``(p q c)``). Our model predicts epsilon only, and diffusers' PixArtAlphaPipeline also keeps only
  the epsilon half (``noise_pred.chunk(2, dim=1)[0]``), so we keep the epsilon rows of ``proj_out``.
- **Micro-conditions.** The 1024px models (``use_additional_conditions``, sample_size 128) add
  resolution and aspect-ratio embeddings to the timestep embedding. Our model has no such input, so
  the converter refuses them unless ``resolution=(height, width)`` is given: the embedding of that one
  size is then a constant vector, folded exactly into the timestep MLP's last bias. The converted
  model then behaves as PixArt does at that size (and is conditioned on that size at every other).

    python -m gentron convert --from-pixart PixArt-alpha/PixArt-XL-2-512x512 --out runs/pixart-t2i
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from .diffusion import SCHEDULE, make_scheduler
from .model import GenTronTransformer

MAX_T5_TOKENS = 120  # PixArt-α reads at most 120 T5 tokens (its pipeline's max_sequence_length)
SOURCE_PIPELINES = ("PixArtAlphaPipeline",)
PICKLED = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".msgpack", ".h5", ".ot", ".onnx")
VARIANTS = (".fp16.", ".bf16.", ".fp16-", ".bf16-")


# ---- the transformer ----------------------------------------------------------------------------
def pixart_to_gentron_config(pixart) -> dict[str, Any]:
    """The GenTronTransformer arguments equivalent to ``pixart``'s config; ValueError for what has no match."""
    c = pixart.config
    inner = c.num_attention_heads * c.attention_head_dim
    unsupported = []

    def need(ok: bool, what: str) -> None:
        if not ok:
            unsupported.append(what)

    need(c.norm_type == "ada_norm_single", f"norm_type={c.norm_type!r} (needs 'ada_norm_single')")
    need(c.activation_fn == "gelu-approximate", f"activation_fn={c.activation_fn!r} (needs 'gelu-approximate': "
         "the caption projection is tanh-GELU and our model uses one GELU for both)")
    need(bool(c.attention_bias), "attention_bias=False (our attention projections have biases)")
    need(not c.norm_elementwise_affine, "norm_elementwise_affine=True (our block norms have no affine)")
    need(abs(c.norm_eps - 1e-6) < 1e-12, f"norm_eps={c.norm_eps} (ours is 1e-6)")
    need(c.caption_channels is not None, "caption_channels=None (no caption projection)")
    need(c.cross_attention_dim == inner, f"cross_attention_dim={c.cross_attention_dim} != width {inner}")
    need(c.attention_type == "default", f"attention_type={c.attention_type!r}")
    need(c.out_channels in (None, c.in_channels, 2 * c.in_channels),
         f"out_channels={c.out_channels} (needs in_channels, or 2*in_channels for learned sigma)")
    pe = pixart.pos_embed
    need(pe.pos_embed_max_size is None and pe.pos_embed is not None and not pe.layer_norm,
         "a patch embedding other than PixArt-α's (cropped, learned or normalised positions)")
    if unsupported:
        raise ValueError("this PixArt transformer cannot be converted exactly: " + "; ".join(unsupported))
    ff = pixart.transformer_blocks[0].ff.net[0].proj.out_features if c.num_layers else 4 * inner
    return dict(in_channels=c.in_channels, patch_size=c.patch_size, hidden_size=inner, depth=c.num_layers,
                num_heads=c.num_attention_heads, mlp_hidden_size=ff, text_dim=c.caption_channels,
                text_conditioning="cross_attention", timestep_modulation="adaln_single", temporal=False,
                gelu_approximate="tanh", cross_attention_norm=False, pos_embed_base_size=int(pe.base_size),
                pos_embed_interpolation_scale=float(pe.interpolation_scale))


@torch.no_grad()
def _size_embedding(pixart, resolution: tuple[int, int]) -> torch.Tensor:
    """PixArt's resolution + aspect-ratio embedding for one (height, width) in pixels: (D,), as its pipeline
    computes it (``resolution=[h, w]``, ``aspect_ratio=h/w``), to be added to the timestep embedding."""
    emb = pixart.adaln_single.emb
    h, w = resolution
    dtype = emb.timestep_embedder.linear_2.weight.dtype
    res = emb.resolution_embedder(emb.additional_condition_proj(torch.tensor([float(h), float(w)])).to(dtype))
    ar = emb.aspect_ratio_embedder(emb.additional_condition_proj(torch.tensor([h / w])).to(dtype))
    return torch.cat([res.reshape(-1), ar.reshape(-1)])


def convert_pixart_transformer(pixart, resolution: tuple[int, int] | None = None) -> GenTronTransformer:
    """A GenTronTransformer computing what ``pixart`` (a diffusers PixArtTransformer2DModel) computes.

    Every source tensor is consumed and every target tensor filled, or ValueError lists the keys.
    ``resolution`` (height, width in pixels) is required for, and only allowed with, PixArt models that
    use resolution/aspect-ratio micro-conditions; it folds that size's embedding into a bias.
    """
    cfg = pixart_to_gentron_config(pixart)
    micro = bool(getattr(pixart, "use_additional_conditions", False))
    if micro and resolution is None:
        raise ValueError("this PixArt model is conditioned on the image size (use_additional_conditions: the 1024px "
                         "PixArt-α models); GenTron has no such input. Pass resolution=(height, width) "
                         "(CLI: --resolution 1024x1024) to fix the size it is conditioned on, or convert a "
                         "512px model such as PixArt-alpha/PixArt-XL-2-512x512")
    if not micro and resolution is not None:
        raise ValueError("resolution is only for PixArt models with size micro-conditions; this one has none")
    src = {k: v.detach() for k, v in pixart.state_dict().items()}
    used: set[str] = set()

    def take(key: str) -> torch.Tensor:
        if key not in src:
            raise ValueError(f"the PixArt checkpoint has no {key!r}")
        used.add(key)
        return src[key].clone()

    def cat(*keys: str) -> torch.Tensor:
        return torch.cat([take(k) for k in keys], dim=0)

    out: dict[str, torch.Tensor] = {
        "x_embedder.weight": take("pos_embed.proj.weight"), "x_embedder.bias": take("pos_embed.proj.bias"),
        "t_block.1.weight": take("adaln_single.linear.weight"), "t_block.1.bias": take("adaln_single.linear.bias"),
        "final_scale_shift_table": take("scale_shift_table"),
    }
    for i, j in ((0, 1), (2, 2)):
        for kind in ("weight", "bias"):
            out[f"t_embedder.mlp.{i}.{kind}"] = take(f"adaln_single.emb.timestep_embedder.linear_{j}.{kind}")
            out[f"text_proj.fc{j}.{kind}"] = take(f"caption_projection.linear_{j}.{kind}")
    if micro:  # constant for a fixed size: exactly a bias on the timestep embedding
        out["t_embedder.mlp.2.bias"] += _size_embedding(pixart, resolution).to(out["t_embedder.mlp.2.bias"].dtype)
        used.update(k for k in src if k.startswith(("adaln_single.emb.resolution_embedder.",
                                                     "adaln_single.emb.aspect_ratio_embedder.")))
    for n in range(cfg["depth"]):
        s, d = f"transformer_blocks.{n}.", f"blocks.{n}."
        out[d + "scale_shift_table"] = take(s + "scale_shift_table")
        for kind in ("weight", "bias"):
            out[d + f"attn.qkv.{kind}"] = cat(*(s + f"attn1.to_{x}.{kind}" for x in "qkv"))
            out[d + f"attn.proj.{kind}"] = take(s + f"attn1.to_out.0.{kind}")
            out[d + f"cross.q.{kind}"] = take(s + f"attn2.to_q.{kind}")
            out[d + f"cross.kv.{kind}"] = cat(s + f"attn2.to_k.{kind}", s + f"attn2.to_v.{kind}")
            out[d + f"cross.proj.{kind}"] = take(s + f"attn2.to_out.0.{kind}")
            out[d + f"mlp.fc1.{kind}"] = take(s + f"ff.net.0.proj.{kind}")
            out[d + f"mlp.fc2.{kind}"] = take(s + f"ff.net.2.{kind}")
    # proj_out rows are (p, q, c) with c fastest; with learned sigma keep the epsilon channels c < C.
    c_in, c_out = cfg["in_channels"], pixart.out_channels
    weight, bias = take("proj_out.weight"), take("proj_out.bias")
    keep = torch.arange(weight.shape[0]) % c_out < c_in
    out["proj_out.weight"], out["proj_out.bias"] = weight[keep], bias[keep]

    with torch.device("meta"):
        model = GenTronTransformer(**cfg)
    want = model.state_dict()
    unused = sorted(set(src) - used)
    missing = sorted(set(want) - set(out))
    extra = sorted(set(out) - set(want))
    shapes = sorted(f"{k}: {tuple(out[k].shape)} vs {tuple(want[k].shape)}"
                    for k in set(out) & set(want) if out[k].shape != want[k].shape)
    if unused or missing or extra or shapes:
        raise ValueError(f"PixArt -> GenTron mapping is incomplete: unused PixArt tensors {unused}; unfilled GenTron "
                         f"tensors {missing}; unknown targets {extra}; shape mismatches {shapes}")
    model.load_state_dict({k: v.contiguous() for k, v in out.items()}, assign=True)
    return model.eval()


# ---- the pipeline folder ------------------------------------------------------------------------
def _source_folder(path_or_id: str) -> Path:
    """A local PixArt pipeline folder, downloading a hub id's safetensors files first."""
    root = Path(path_or_id).expanduser()
    if root.exists():
        if not root.is_dir():
            raise ValueError(f"{root} is a file; --from-pixart needs a diffusers PixArt-α pipeline folder")
        return root
    if path_or_id.startswith((".", "/", "~")) or path_or_id.count("/") != 1 or "\\" in path_or_id:
        raise FileNotFoundError(f"PixArt folder {path_or_id} does not exist; give a diffusers PixArt-α pipeline "
                                "folder or a hub id such as PixArt-alpha/PixArt-XL-2-512x512")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(path_or_id, allow_patterns=[
            "model_index.json", "scheduler/*", "tokenizer/*", "transformer/*.json", "transformer/*.safetensors",
            "text_encoder/*.json", "text_encoder/*.safetensors", "vae/*.json", "vae/*.safetensors"],
            ignore_patterns=[f"*{v}*" for v in VARIANTS]))
    except Exception as e:
        raise ValueError(f"{path_or_id} is not a local folder and could not be downloaded as a hub id "
                         f"({type(e).__name__}: {e}); download the diffusers folder yourself and pass its path") from e


def _copy_component(src: Path, dst: Path, weights: bool) -> None:
    """Copy a component folder as it is, without pickled weights (GenTron loads safetensors only) and
    without precision variants when full-precision files are there."""
    if not src.is_dir():
        raise ValueError(f"the PixArt folder has no {src.name}/ component")
    files = [p for p in src.iterdir() if p.is_file()]
    if weights:
        files = [p for p in files if not p.name.endswith(PICKLED) and ".bin." not in p.name]
        tensors = [p for p in files if p.suffix == ".safetensors"]
        if not tensors:
            raise ValueError(f"{src} holds no .safetensors weights; GenTron loads safetensors only (convert the "
                             "pickled ones with save_pretrained(safe_serialization=True) in a trusted environment)")
        if any(not any(v in p.name for v in VARIANTS) for p in tensors):
            files = [p for p in files if not any(v in p.name for v in VARIANTS)]
    dst.mkdir(parents=True)
    for p in files:
        shutil.copy2(p, dst / p.name)


def _edit_json(path: Path, **changes: Any) -> None:
    d = json.loads(path.read_text())
    d.update(changes)
    path.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n")


def convert_scheduler(config: dict[str, Any]):
    """Our sampler on PixArt's training schedule; ValueError if that is not the schedule GenTron trains on."""
    diff = {k: (config.get(k), v) for k, v in SCHEDULE.items() if config.get(k, v) != v}
    if config.get("trained_betas") is not None:
        diff["trained_betas"] = ("set", None)
    if diff:
        raise ValueError(f"the PixArt scheduler's training schedule differs from GenTron's (field: (PixArt, GenTron)) "
                         f"{diff}; GenTron trains and samples epsilon-prediction on {SCHEDULE}")
    return make_scheduler("dpm++", config)


def convert_pixart_pipeline(path_or_id: str, out: Path, resolution: tuple[int, int] | None = None) -> Path:
    """Write a GenTronPipeline folder at ``out`` from a diffusers PixArt-α pipeline (folder or hub id).

    The transformer is converted (``convert_pixart_transformer``); the T5 encoder and its tokenizer become
    ``text_encoder_2``/``tokenizer_2`` (there is no CLIP tower), copied as they are except the tokenizer's
    ``model_max_length``, set to PixArt's 120 tokens; the VAE is copied as it is except its config's
    ``sample_size``, set to PixArt's native image side so it is the pipeline's default resolution; the
    scheduler becomes our DPM-Solver++ on PixArt's (= GenTron's) training schedule.
    """
    import diffusers
    from diffusers import PixArtTransformer2DModel

    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"--out {out} already exists and is not empty; choose a new folder")
    src = _source_folder(path_or_id)
    index_path = src / "model_index.json"
    if not index_path.is_file():
        raise ValueError(f"{src} is not a diffusers pipeline folder (no model_index.json)")
    index = json.loads(index_path.read_text())
    if index.get("_class_name") not in SOURCE_PIPELINES:
        raise ValueError(f"{src} holds a {index.get('_class_name')!r}; only {SOURCE_PIPELINES} folders convert")
    for name in ("transformer", "text_encoder", "tokenizer", "vae", "scheduler"):
        if not isinstance(index.get(name), list) or index[name][0] is None:
            raise ValueError(f"{src} has no {name} component; a PixArt-α folder needs transformer, text_encoder (T5), "
                             "tokenizer, vae and scheduler")

    try:
        pixart = PixArtTransformer2DModel.from_pretrained(src, subfolder="transformer", use_safetensors=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {src / 'transformer'} as safetensors ({type(e).__name__}: {e})") from e
    transformer = convert_pixart_transformer(pixart, resolution)
    scheduler = json.loads((src / "scheduler" / "scheduler_config.json").read_text())

    tmp = out.with_name(out.name + ".tmp-convert")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        transformer.save_pretrained(tmp / "transformer")
        convert_scheduler(scheduler).save_pretrained(tmp / "scheduler")
        _copy_component(src / "text_encoder", tmp / "text_encoder_2", weights=True)
        _copy_component(src / "tokenizer", tmp / "tokenizer_2", weights=False)
        _copy_component(src / "vae", tmp / "vae", weights=True)
        tok_cfg = tmp / "tokenizer_2" / "tokenizer_config.json"
        if tok_cfg.is_file():
            _edit_json(tok_cfg, model_max_length=MAX_T5_TOKENS)
        else:
            tok_cfg.write_text(json.dumps({"model_max_length": MAX_T5_TOKENS}) + "\n")
        vae_cfg = json.loads((tmp / "vae" / "config.json").read_text())
        vae_factor = 2 ** (len(vae_cfg["block_out_channels"]) - 1)
        native = pixart.config.sample_size * vae_factor
        _edit_json(tmp / "vae" / "config.json", sample_size=native)
        (tmp / "model_index.json").write_text(json.dumps({
            "_class_name": "GenTronPipeline", "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
            "text_encoder": [None, None], "tokenizer": [None, None],
            "text_encoder_2": index["text_encoder"], "tokenizer_2": index["tokenizer"],
            "transformer": ["gentron.model", "GenTronTransformer"], "vae": index["vae"]}, indent=2) + "\n")
        learned_sigma = pixart.out_channels != pixart.config.in_channels
        (tmp / "conversion.json").write_text(json.dumps({
            "from": str(path_or_id), "source_pipeline": index["_class_name"],
            "native_resolution": native, "max_text_tokens": MAX_T5_TOKENS,
            "dropped": ["the learned-sigma half of proj_out (GenTron predicts epsilon only)"] if learned_sigma else [],
            "size_conditioning_fixed_to": list(resolution) if resolution else None}, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
