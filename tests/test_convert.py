"""PixArt-α -> GenTron conversion: same noise prediction, same image, and a T2V stage can start from it.

Everything is tiny and random (no hub access): a PixArtTransformer2DModel built from a config with
every parameter randomised (so PixArt's zero-initialised branches are live too), a tiny T5 with a
word-level tokenizer, a tiny VAE. The reference is diffusers' own PixArt code.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel

from gentron.cli import main
from gentron.convert import MAX_T5_TOKENS, convert_pixart_transformer
from gentron.diffusion import SCHEDULE, make_scheduler
from gentron.factory import TINY_WORDS, build_vae
from gentron.loading import load_pipeline
from gentron.pipeline import GenTronPipeline
from gentron.text import build_t5_tower, build_word_tokenizer
from gentron.training import TrainConfig, train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TEXT = 16  # T5 width = PixArt caption_channels
RES = 16  # pixels; the tiny VAE halves them: 8x8 latents = PixArt sample_size 8
PROMPT = "a big red circle moving left"


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter random and O(1) in effect: weights ~ N(0, 1/fan_in), vectors and tables ~ N(0, 0.3²)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        std = 0.3 if p.dim() < 2 or "scale_shift_table" in name else p[0].numel() ** -0.5
        p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def tiny_pixart(out_channels: int = 8, head_dim: int = 8, seed: int = 0, **config) -> PixArtTransformer2DModel:
    model = PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=head_dim, in_channels=4,
                                     out_channels=out_channels, num_layers=2, cross_attention_dim=2 * head_dim,
                                     caption_channels=TEXT, sample_size=8, patch_size=2, **config)
    return randomise(model, seed).eval()


def inputs(h: int, w: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(2, 4, h, w, generator=g)
    t = torch.tensor([17, 901])
    text = torch.randn(2, 6, TEXT, generator=g)  # padded positions hold garbage: only the mask may hide them
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]])
    return latents, t, text, mask


@pytest.mark.parametrize("out_channels,config", [
    (8, {}),  # learned sigma, as the released checkpoints; interpolation scale from sample_size
    (4, {"interpolation_scale": 2}),  # epsilon only; PixArt's position scaling away from 1
])
@torch.no_grad()
def test_converted_transformer_predicts_pixart_noise(out_channels, config, tmp_path):
    tiny_pixart(out_channels, **config).save_pretrained(tmp_path / "pixart")
    pixart = PixArtTransformer2DModel.from_pretrained(tmp_path / "pixart").eval()
    ours = convert_pixart_transformer(pixart)
    assert ours.config.timestep_modulation == "adaln_single" and not ours.config.cross_attention_norm
    assert ours.config.pos_embed_base_size == 4
    assert ours.config.pos_embed_interpolation_scale == float(config.get("interpolation_scale", 1))
    for h, w in ((8, 8), (12, 8)):  # native grid, and a non-square one the positions must be rescaled for
        latents, t, text, mask = inputs(h, w)
        ref = pixart(latents, encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask).sample[:, :4]
        got = ours(latents, t, text, mask)
        diff = (got - ref).abs().max().item()
        assert diff <= 1e-5, (h, w, diff)
        print(f"out_channels={out_channels} {config} latents {h}x{w}: max |GenTron - PixArt| = {diff:.2e}")


@torch.no_grad()
def test_size_conditioned_pixart_needs_a_fixed_resolution():
    pixart = tiny_pixart(8, head_dim=12, use_additional_conditions=True)  # width 24: divisible by 3 like 1152
    with pytest.raises(ValueError, match="conditioned on the image size.*--resolution"):
        convert_pixart_transformer(pixart)
    ours = convert_pixart_transformer(pixart, resolution=(16, 24))
    latents, t, text, mask = inputs(8, 12)
    size = {"resolution": torch.tensor([[16.0, 24.0]] * 2), "aspect_ratio": torch.tensor([[16 / 24]] * 2)}
    ref = pixart(latents, encoder_hidden_states=text, timestep=t, encoder_attention_mask=mask,
                 added_cond_kwargs=size).sample[:, :4]
    diff = (ours(latents, t, text, mask) - ref).abs().max().item()
    print(f"size-conditioned PixArt at 16x24: max |GenTron - PixArt| = {diff:.2e}")
    assert diff <= 1e-5, diff
    with pytest.raises(ValueError, match="only for PixArt models with size micro-conditions"):
        convert_pixart_transformer(tiny_pixart(8), resolution=(16, 16))


def test_nothing_is_skipped_silently():
    with pytest.raises(ValueError, match="activation_fn='gelu'"):
        convert_pixart_transformer(tiny_pixart(8, activation_fn="gelu"))
    pixart = tiny_pixart(8)
    pixart.transformer_blocks[0].register_parameter("stray", torch.nn.Parameter(torch.zeros(3)))
    with pytest.raises(ValueError, match=r"unused PixArt tensors \['transformer_blocks.0.stray'\]"):
        convert_pixart_transformer(pixart)


# ---- the whole pipeline -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pixart_dir(tmp_path_factory) -> Path:
    """A tiny PixArt-α pipeline folder as diffusers writes it: T5 + tokenizer, VAE, DPM-Solver, transformer."""
    path = tmp_path_factory.mktemp("pixart") / "pixart-alpha"
    torch.manual_seed(0)
    t5 = build_t5_tower(build_word_tokenizer(list(TINY_WORDS), "t5"), TEXT, 1, 2)
    vae = build_vae()  # factor 2, 4 latent channels
    # A random transformer is no denoiser: its final latents are O(1000). Scaling them down to O(1) keeps the
    # decoded image off the clamp, so comparing images is not trivially comparing saturated pixels.
    vae.register_to_config(scaling_factor=300.0)
    scheduler = DPMSolverMultistepScheduler(**SCHEDULE, algorithm_type="dpmsolver++", solver_order=2)  # PixArt's
    PixArtAlphaPipeline(tokenizer=t5.tokenizer, text_encoder=t5.encoder, vae=vae, transformer=tiny_pixart(8),
                        scheduler=scheduler).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def converted_dir(pixart_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("converted") / "gentron"
    assert main(["convert", "--from-pixart", str(pixart_dir), "--out", str(out)]) == 0
    return out


def test_cli_writes_a_gentron_folder_and_explains_errors(converted_dir, tmp_path, capsys):
    index = json.loads((converted_dir / "model_index.json").read_text())
    assert index["_class_name"] == "GenTronPipeline" and index["text_encoder"] == [None, None]
    notes = json.loads((converted_dir / "conversion.json").read_text())
    assert notes["native_resolution"] == RES and notes["dropped"]  # the learned-sigma half
    pipe = load_pipeline(str(converted_dir))  # the loader the CLI and the app use
    assert pipe.text_encoder is None and [t.max_length for t in pipe.towers] == [MAX_T5_TOKENS]
    assert pipe.default_resolution == RES
    capsys.readouterr()
    assert main(["convert", "--from-pixart", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["convert", "--from-pixart", str(converted_dir), "--out", str(tmp_path / "y")]) == 2
    assert "only ('PixArtAlphaPipeline',) folders convert" in capsys.readouterr().err
    assert main(["convert", "--from-pixart", str(converted_dir), "--out", str(converted_dir)]) == 2
    assert "already exists" in capsys.readouterr().err


@torch.no_grad()
def test_same_image_as_pixart_pipeline(pixart_dir, converted_dir, monkeypatch):
    """Same seed, sampler, steps and guidance -> the same latents and image from both pipelines.

    What differs between the two and why the comparison is still like for like: PixArt pads T5 input to
    120 tokens, we pad to the longest prompt; both mask the padding (in T5 and in cross-attention), so
    the real tokens' embeddings and the attention over them are the same. PixArt's caption cleaning
    is off (it needs bs4/ftfy; our tokenizer lowercases as its cleaning would). The empty negative
    prompt is encoded by both as T5("") (one </s> token). Both draw the initial noise with one
    torch.randn of the same shape from the seeded CPU generator, so the seed alone fixes the noise.
    PixArt's scheduler is replaced by ours (the sampler our pipeline builds from the converted folder).
    """
    ours = GenTronPipeline.from_pretrained(converted_dir)
    final = []
    decode = ours.decode
    monkeypatch.setattr(ours, "decode", lambda z: (final.append(z), decode(z))[1])
    out = ours(PROMPT, height=RES, width=RES, num_inference_steps=4, text_guidance=4.5, seed=3, sampler="dpm++")

    pixart = PixArtAlphaPipeline.from_pretrained(pixart_dir)
    pixart.scheduler = make_scheduler("dpm++", dict(ours.scheduler.config))
    kw = dict(negative_prompt="", num_inference_steps=4, guidance_scale=4.5, height=RES, width=RES,
              clean_caption=False, use_resolution_binning=False, max_sequence_length=MAX_T5_TOKENS)
    ref_latents = pixart(PROMPT, generator=torch.Generator().manual_seed(3), output_type="latent", **kw).images
    ref_image = pixart(PROMPT, generator=torch.Generator().manual_seed(3), output_type="np", **kw).images

    scale = ref_latents.abs().max().item()
    latent_diff = (final[-1][:, :, 0] - ref_latents).abs().max().item()
    ref_uint8 = torch.from_numpy(ref_image * 255).round().to(torch.uint8)
    ours_uint8 = torch.from_numpy(out.frames[:, 0])
    pixel_diff = (ours_uint8.int() - ref_uint8.int()).abs().max().item()
    unsaturated = ((ref_uint8 > 0) & (ref_uint8 < 255)).float().mean().item()
    print(f"pipeline: latents up to {scale:.1f}, max |diff| = {latent_diff:.2e} ({latent_diff / scale:.1e} relative); "
          f"image: max |pixel diff| = {pixel_diff}/255, {(ours_uint8 != ref_uint8).float().mean().item():.1%} of "
          f"values differ; {unsaturated:.0%} of values unsaturated")
    # fp32 rounding, amplified by the sampler's 1/sqrt(alpha) steps on a random model's O(1000) latents
    assert latent_diff <= 1e-5 * max(1.0, scale)
    assert pixel_diff <= 1 and unsaturated > 0.5  # uint8 rounding of the same float image may differ at .5


@torch.no_grad()
def test_converted_model_grows_to_video_exactly(converted_dir):
    image = GenTronPipeline.from_pretrained(converted_dir).transformer.eval()
    video = image.to_video().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 3, 8, 8, generator=g)
    t = torch.tensor([5, 700])
    text, mask = torch.randn(2, 5, TEXT, generator=g), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    out = video(x, t, text, mask)
    per_frame = torch.stack([image(x[:, :, f], t, text, mask) for f in range(3)], dim=2)
    diff = (out - per_frame).abs().max().item()
    print(f"to_video at step 0: max |video - image per frame| = {diff:.2e}")
    assert torch.equal(out, per_frame) or diff < 1e-6


def test_t2v_stage_starts_from_the_converted_folder(converted_dir, tmp_path):
    g = torch.Generator().manual_seed(0)
    data = [{"pixels": torch.rand(2, 3, RES, RES, generator=g) * 2 - 1, "caption": c}
            for c in ("a red circle moving left", "two blue squares", "a small star spinning", "")]
    cfg = TrainConfig.from_yaml(CONFIGS / "tiny_t2v.yaml", init_from=str(converted_dir),
                                output_dir=str(tmp_path / "t2v"), resolution=RES, frames=2, batch_size=2, steps=1,
                                checkpoint_every=1, log_every=1)
    final = train(cfg, data)
    video = GenTronPipeline.from_pretrained(final)
    assert video.transformer.config.temporal and video.transformer.config.timestep_modulation == "adaln_single"
    loss = json.loads((tmp_path / "t2v" / "loss.jsonl").read_text().splitlines()[0])["loss"]
    assert loss == loss and loss > 0  # finite, trained one step
