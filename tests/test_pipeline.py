"""The pipeline end to end on a tiny random model: determinism, previews, stop, validation, I/O."""
import copy

import numpy as np
import pytest
import torch

from gentron.bench import liven
from gentron.diffusion import SAMPLERS, make_scheduler
from gentron.pipeline import GenTronPipeline, Interrupted
from gentron.text import check_round_trip, encode_text

KW = dict(height=32, num_inference_steps=4)


def test_same_seed_bit_identical_and_seed_matters(tiny_pipeline):
    a = tiny_pipeline("a red circle moving left", frames=3, seed=7, **KW)
    b = tiny_pipeline("a red circle moving left", frames=3, seed=7, **KW)
    c = tiny_pipeline("a red circle moving left", frames=3, seed=8, **KW)
    assert a.frames.shape == (1, 3, 32, 32, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    assert a.settings[0]["seed"] == 7 and a.settings[0]["motion_guidance"] == 1.0


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_every_sampler_runs(tiny_pipeline, sampler):
    out = tiny_pipeline("a blue square", sampler=sampler, **KW)
    assert out.frames.shape == (1, 1, 32, 32, 3)


def test_no_sampler_means_the_one_the_model_folder_ships(tiny_pipeline_dir, monkeypatch):
    """sampler=None samples with the saved scheduler's sampler (DDIM for the built-in model) and records its name."""
    from diffusers import DDIMScheduler

    pipe = GenTronPipeline.from_pretrained(tiny_pipeline_dir)
    assert pipe.default_sampler == "dpm++"  # what gentron.factory builds with
    pipe.scheduler = make_scheduler("ddim", dict(pipe.scheduler.config))
    assert pipe.default_sampler == "ddim"
    calls, step = [], DDIMScheduler.step
    monkeypatch.setattr(DDIMScheduler, "step", lambda self, *a, **k: calls.append(1) or step(self, *a, **k))
    default = pipe("a blue square", seed=2, **KW)
    assert len(calls) == KW["num_inference_steps"] and default.settings[0]["sampler"] == "ddim"
    assert np.array_equal(default.frames, pipe("a blue square", seed=2, sampler="ddim", **KW).frames)
    calls.clear()
    assert pipe("a blue square", seed=2, sampler="dpm++", **KW).settings[0]["sampler"] == "dpm++" and not calls


def test_previews_every_k_steps(tiny_pipeline):
    seen = []
    tiny_pipeline("a red star", frames=2, num_inference_steps=6, height=32, preview_every=2,
                  callback=lambda i, n, p: seen.append((i, n, None if p is None else p.shape)))
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5, 6]
    assert [s for s in seen if s[2] is not None] == [(2, 6, (1, 2, 32, 32, 3)), (4, 6, (1, 2, 32, 32, 3))]


def test_stop_within_one_step(tiny_pipeline):
    steps = []
    with pytest.raises(Interrupted):
        tiny_pipeline("a red star", num_inference_steps=10, height=32, callback=lambda i, n, p: steps.append(i),
                      should_stop=lambda: len(steps) >= 3)
    assert steps == [1, 2, 3]
    assert tiny_pipeline("a red star", **KW).frames.shape[0] == 1  # still usable


def test_compare_motion_strengths_share_noise(tiny_pipeline):
    many = tiny_pipeline("a red circle moving up", frames=2, motion_guidance=[0.0, 1.0, 2.0], seed=3, **KW)
    assert many.frames.shape[0] == 3 and [s["motion_guidance"] for s in many.settings] == [0.0, 1.0, 2.0]
    one = tiny_pipeline("a red circle moving up", frames=2, motion_guidance=2.0, seed=3, **KW)
    assert np.abs(many.frames[2].astype(int) - one.frames[0]).max() <= 1  # batched equals alone


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompt=""), "prompt is empty"),
    (dict(prompt="   "), "prompt is empty"),
    (dict(prompt="a" * 5000), "prompt is 5000 characters"),
    (dict(prompt="red " * 40), "tokens"),
    (dict(prompt="a red\x00 circle"), "control characters"),
    (dict(text_guidance=float("nan")), "text_guidance must be a finite number"),
    (dict(text_guidance=-1.0), "text_guidance"),
    (dict(motion_guidance=float("inf")), "motion_guidance"),
    (dict(seed=-1), "seed must be an integer from 0 to 4294967295"),
    (dict(seed=2**32), "seed"),
    (dict(height=33), "height must be a multiple of 4"),
    (dict(height=4096), "height"),
    (dict(frames=0), "frames must be an integer from 1"),
    (dict(frames=10_000), "frames"),
    (dict(num_inference_steps=0), "steps"),
    (dict(sampler="plms"), "sampler must be one of"),
    (dict(guidance_interval=(900, 100)), "guidance_interval must be two timesteps"),
    (dict(guidance_interval=(0, 2000)), "guidance_interval"),
    (dict(guidance_interval=(0,)), "guidance_interval"),
    (dict(guidance_interval=("0", 900)), "guidance_interval"),
    (dict(guidance_interval=(0, float("nan"))), "guidance_interval"),
    (dict(eta=-0.1), "eta must be a number from 0"),
    (dict(eta=1.5), "eta must be a number from 0"),
    (dict(eta=0.5, sampler="dpm++"), "eta applies to the ddim sampler only"),
])
def test_bad_input_names_the_parameter(tiny_pipeline, kwargs, match):
    args = dict(prompt="a red circle", height=32, num_inference_steps=2) | kwargs
    with pytest.raises(ValueError, match=match):
        tiny_pipeline(**args)


@pytest.fixture(scope="module")
def live_pipeline(tiny_pipeline):
    """The tiny pipeline with its zero-initialised gates given random values, so that guidance changes the sample."""
    pipe = copy.deepcopy(tiny_pipeline)
    liven(pipe.transformer, seed=1)
    return pipe


def test_guidance_interval_guides_only_its_steps(live_pipeline, monkeypatch):
    """Steps outside the interval run the prompt's branch alone: an interval holding no step gives exactly the
    unguided sample (λT = λM = 1), one holding every step the default; the settings record the interval."""
    kw = dict(prompt="a red circle moving up", frames=2, seed=4, text_guidance=7.5, motion_guidance=1.3, **KW)
    full = live_pipeline(**kw)
    assert full.settings[0]["guidance_interval"] == [0.0, 1000.0]  # a model whose folder names none: every step
    assert np.array_equal(full.frames, live_pipeline(**kw, guidance_interval=(0, 1000)).frames)
    none = live_pipeline(**kw, guidance_interval=(0, 0))  # trailing timesteps of 4 steps: 999, 749, 499, 249
    unguided = live_pipeline(**{**kw, "text_guidance": 1.0, "motion_guidance": 1.0})
    assert np.array_equal(none.frames, unguided.frames) and not np.array_equal(none.frames, full.frames)

    batches, forward = [], type(live_pipeline.transformer).forward
    monkeypatch.setattr(type(live_pipeline.transformer), "forward",
                        lambda self, x, *a, **k: batches.append(x.shape[0]) or forward(self, x, *a, **k))
    out = live_pipeline(**kw, guidance_interval=(200, 800))
    assert batches == [1, 3, 3, 3] and out.settings[0]["guidance_interval"] == [200.0, 800.0]


def test_guidance_interval_default_comes_from_the_model_folder(live_pipeline, tmp_path):
    """A folder's model_index.json may name the model's own interval (the built-in model's names none); None uses
    it."""
    live_pipeline.register_to_config(guidance_interval=[0, 800])
    try:
        live_pipeline.save_pretrained(tmp_path)
    finally:
        live_pipeline.register_to_config(guidance_interval=None)
    loaded = GenTronPipeline.from_pretrained(tmp_path)
    assert loaded.default_guidance_interval == (0, 800) and live_pipeline.default_guidance_interval == (0.0, 1000.0)
    default = loaded("a blue square", seed=5, **KW)
    assert default.settings[0]["guidance_interval"] == [0.0, 800.0]
    assert np.array_equal(default.frames, live_pipeline("a blue square", seed=5, guidance_interval=(0, 800), **KW).frames)
    assert not np.array_equal(default.frames, live_pipeline("a blue square", seed=5, **KW).frames)


def test_text_guidance_default_comes_from_the_model_folder(live_pipeline, tmp_path):
    """A flow model's folder names its own λT; a request without one guides with it, one with one overrides it."""
    live_pipeline.register_to_config(text_guidance=4.5)
    try:
        live_pipeline.save_pretrained(tmp_path)
    finally:
        live_pipeline.register_to_config(text_guidance=None)
    loaded = GenTronPipeline.from_pretrained(tmp_path)
    assert loaded.default_text_guidance == 4.5 and live_pipeline.default_text_guidance == 7.5
    default = loaded("a blue square", seed=5, **KW)
    assert default.settings[0]["text_guidance"] == 4.5
    assert np.array_equal(default.frames, live_pipeline("a blue square", seed=5, text_guidance=4.5, **KW).frames)
    assert not np.array_equal(default.frames, live_pipeline("a blue square", seed=5, **KW).frames)
    assert np.array_equal(loaded("a blue square", seed=5, text_guidance=7.5, **KW).frames,
                          live_pipeline("a blue square", seed=5, **KW).frames)


def test_step_count_default_comes_from_the_model_folder(live_pipeline, tmp_path):
    """A folder may name its own sampling steps; a request without a count samples with them, one with a count
    overrides them, and a folder naming none samples 25."""
    pipe = GenTronPipeline(**live_pipeline.components, steps=3)
    pipe.save_pretrained(tmp_path)
    loaded = GenTronPipeline.from_pretrained(tmp_path)
    assert loaded.default_steps == 3 and live_pipeline.default_steps == 25
    steps_seen = []
    default = loaded("a blue square", seed=5, height=32, callback=lambda i, n, _: steps_seen.append(n))
    assert default.settings[0]["steps"] == 3 and set(steps_seen) == {3}
    assert np.array_equal(default.frames, live_pipeline("a blue square", seed=5, height=32,
                                                        num_inference_steps=3).frames)
    assert loaded("a blue square", seed=5, **KW).settings[0]["steps"] == 4


def test_ddim_eta_is_seeded_and_shared_across_motion_strengths(live_pipeline):
    """η = 0 is plain DDIM; η > 0 draws its step noise from the request's generator (a seed reproduces it), one
    noise for every λM of a comparison, as the starting noise is."""
    kw = dict(prompt="a red circle moving up", frames=2, seed=6, sampler="ddim", **KW)
    plain = live_pipeline(**kw)
    assert np.array_equal(plain.frames, live_pipeline(**kw, eta=0.0).frames)
    a, b = live_pipeline(**kw, eta=0.5), live_pipeline(**kw, eta=0.5)
    assert np.array_equal(a.frames, b.frames) and not np.array_equal(a.frames, plain.frames)
    assert a.settings[0]["eta"] == 0.5 and plain.settings[0]["eta"] == 0.0
    many = live_pipeline(**kw, eta=0.5, motion_guidance=[0.0, 1.0])
    assert np.abs(many.frames[1].astype(int) - a.frames[0]).max() <= 1  # batched equals alone


def test_unicode_prompt_is_fine(tiny_pipeline):
    out = tiny_pipeline("ein rotes Quadrat 🟥 — ünïcödé", **KW)  # unknown words become <unk>
    assert out.frames.shape == (1, 1, 32, 32, 3)


def test_save_load_round_trip(tiny_pipeline, tiny_pipeline_dir):
    loaded = GenTronPipeline.from_pretrained(tiny_pipeline_dir)
    a = tiny_pipeline("a red circle moving left", frames=2, seed=1, **KW)
    b = loaded("a red circle moving left", frames=2, seed=1, **KW)
    assert np.array_equal(a.frames, b.frames)
    for tok in (loaded.tokenizer, loaded.tokenizer_2):
        check_round_trip(tok, "a big red circle to the left of a small blue square")


def test_text_towers_combined_and_batched(tiny_pipeline):
    towers = tiny_pipeline.towers
    assert [type(t.encoder).__name__ for t in towers] == ["CLIPTextModel", "T5EncoderModel"]
    emb, mask = encode_text(towers, ["a red circle to the left of a blue square", ""])
    assert emb.shape[-1] == tiny_pipeline.transformer.config.text_dim == sum(t.dim for t in towers)
    one, one_mask = encode_text(towers, ["a red circle to the left of a blue square"])
    assert torch.equal(mask[:1], one_mask) and torch.allclose(emb[:1], one, atol=1e-5)
    assert mask[1].sum() == 3  # "" is bos+eos for CLIP and eos for T5: the empty text is not empty of tokens
    # each tower occupies its own block of features
    d_clip = towers[0].dim
    n_clip = towers[0].tokenizer(["a red circle to the left of a blue square"], return_tensors="pt")["input_ids"].shape[1]
    assert emb[0, :n_clip, d_clip:].abs().max() == 0 and emb[0, n_clip:, :d_clip].abs().max() == 0


def test_towers_load_from_folders_and_build_a_base(tiny_pipeline, tmp_path):
    """Full-size towers load the same way (folder or hub id); here tiny ones saved locally."""
    from gentron.text import load_text_towers
    from gentron.training.assemble import build_base

    tiny_pipeline.vae.save_pretrained(tmp_path / "vae")
    # a tower folder holds the model and its tokenizer together, as on the hub
    for model, tok in (("text_encoder", "tokenizer"), ("text_encoder_2", "tokenizer_2")):
        getattr(tiny_pipeline, model).save_pretrained(tmp_path / model)
        getattr(tiny_pipeline, tok).save_pretrained(tmp_path / model)
    towers = load_text_towers(clip=str(tmp_path / "text_encoder"), t5=str(tmp_path / "text_encoder_2"))
    prompts = ["a red circle above a blue star", ""]
    a, am = encode_text(tiny_pipeline.towers, prompts)
    b, bm = encode_text(towers, prompts)
    assert torch.equal(am, bm) and torch.allclose(a, b)
    out = build_base(tmp_path / "vae", None, "tiny", tmp_path / "base", clip=str(tmp_path / "text_encoder"),
                     t5=str(tmp_path / "text_encoder_2"))
    base = GenTronPipeline.from_pretrained(out)
    assert base.transformer.config.text_dim == sum(t.dim for t in towers)
    assert base("a red circle", **KW).frames.shape == (1, 1, 32, 32, 3)


def test_the_text_mask_handed_to_the_transformer_is_true_exactly_on_real_tokens(tiny_pipeline, monkeypatch):
    """Wrap transformer.prepare (where the pipeline hands the text and its mask over) and check the mask against
    each tower's own token count: a flipped or dropped padding mask changes the image without failing anything
    else."""
    pipe = copy.deepcopy(tiny_pipeline)
    prompt, negative = "a big red circle below a small blue square", "green"
    seen = []
    prepare = pipe.transformer.prepare

    def spy(text, text_mask=None, *args, **kwargs):
        seen.append(text_mask.clone())
        return prepare(text, text_mask, *args, **kwargs)

    monkeypatch.setattr(pipe.transformer, "prepare", spy)
    pipe(prompt, negative_prompt=negative, frames=2, motion_guidance=[0.0, 1.5], **KW)

    def real_tokens(text: str) -> torch.Tensor:  # True on the text's own tokens, False on the padding to the longer
        per_tower = []
        for tower in pipe.towers:
            ids = tower.tokenizer([prompt, negative], padding="longest", return_tensors="pt")["input_ids"]
            n = len(tower.tokenizer(text)["input_ids"])
            per_tower.append(torch.arange(ids.shape[1]) < n)
        return torch.cat(per_tower)

    cond, uncond = real_tokens(prompt), real_tokens(negative)
    assert (~uncond).any()  # the shorter text is padded: there is something for the mask to hide
    assert seen and all(m.dtype == torch.bool for m in seen)
    rows = torch.cat(seen)
    assert all(torch.equal(r, cond) or torch.equal(r, uncond) for r in rows)
    assert any(torch.equal(r, cond) for r in rows) and any(torch.equal(r, uncond) for r in rows)
