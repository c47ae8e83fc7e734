"""Training: config validation, batch preparation, a short run, exact resume, crash safety, DDP/FSDP2 on CPU.

The data is a tiny in-memory list of random pixels with captions from the tiny vocabulary, so these
tests don't depend on the Shapes World generator. The two multi-process tests are marked ``slow``.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gentron.diffusion import NoiseSchedule, diffusion_loss
from gentron.factory import TINY_WORDS, build_random_pipeline
from gentron.pipeline import GenTronPipeline
from gentron.training import TrainConfig, main, train
from gentron.training import checkpoint as checkpoint_module
from gentron.training.checkpoint import is_complete, latest_checkpoint
from gentron.training.data import (ImageFolder, IndexedSource, Preparation, ReplaySource, StreamSource,
                                   make_source, micro_batches, prepare_batch)
from gentron.training.ema import EMA
from gentron.training.encode import FrozenEncoders

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
RES = 16  # pixels: 8x8 latents, 16 tokens per frame with the tiny VAE (factor 2) and patch 2


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def make_data(n: int, frames: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    words = list(TINY_WORDS)
    return [{"pixels": torch.rand(frames, 3, RES, RES, generator=g) * 2 - 1,
             "caption": " ".join(words[int(i)] for i in torch.randint(len(words), (3,), generator=g))}
            for _ in range(n)]


@pytest.fixture(scope="module")
def init_dir(tmp_path_factory) -> Path:
    """A random tiny T2I pipeline saved to disk: what a previous stage's final/ looks like."""
    path = tmp_path_factory.mktemp("init") / "pipeline"
    build_random_pipeline("tiny", temporal=False, seed=0).save_pretrained(path)
    return path


def tiny(name: str, init_dir: Path, out: Path, **overrides) -> TrainConfig:
    return TrainConfig.from_yaml(CONFIGS / f"{name}.yaml", init_from=str(init_dir), output_dir=str(out),
                                 resolution=RES, **overrides)


def test_config_yaml_round_trip_and_errors(tmp_path):
    for name in ("tiny_t2i", "tiny_t2v"):
        cfg = TrainConfig.from_yaml(CONFIGS / f"{name}.yaml")
        assert cfg.stage == name
        assert TrainConfig.from_dict(yaml_load(cfg.to_yaml())) == cfg
    for path in sorted(CONFIGS.glob("builtin_*.yaml")):  # every shipped stage's config parses and validates
        assert TrainConfig.from_yaml(path).stage.startswith("builtin_"), path
    assert TrainConfig.from_yaml(CONFIGS / "tiny_t2v.yaml").to_video
    with pytest.raises(ValueError, match="p_motion_free must be a probability"):
        TrainConfig(p_motion_free=1.5).validate()
    with pytest.raises(ValueError, match="high_noise_power must be a number in \\[0, 1\\]"):
        TrainConfig(high_noise_power=2).validate()
    with pytest.raises(ValueError, match="unknown training config fields \\['lr_rate'\\]"):
        TrainConfig.from_dict({"lr_rate": 1e-4})
    with pytest.raises(ValueError, match="mixed_precision must be one of"):
        TrainConfig(mixed_precision="fp16").validate()
    with pytest.raises(ValueError, match="data must be 'shapes' or an existing folder"):
        TrainConfig(data=str(tmp_path / "missing")).validate()
    with pytest.raises(SystemExit) as e:  # the CLI turns config errors into usage errors (status 2)
        main(["--config", str(CONFIGS / "tiny_t2i.yaml"), "--set", "text_dropout=1.0"])
    assert e.value.code == 2


def test_learning_rate_warms_up_holds_and_cools_down_to_zero():
    from gentron.training.trainer import learning_rate
    cfg = TrainConfig(lr=1e-3, steps=10, warmup=2, cooldown=4).validate()
    lrs = [learning_rate(cfg, s) for s in range(cfg.steps)]
    assert lrs[:6] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3])
    assert lrs[6:] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])  # last step 1/cooldown; zero would be step 10
    assert learning_rate(cfg.replace(cooldown=0), 9) == pytest.approx(1e-3)  # the paper's constant rate
    with pytest.raises(ValueError, match="warmup \\(2\\) \\+ cooldown \\(9\\) must fit in steps \\(10\\)"):
        cfg.replace(cooldown=9)


def yaml_load(text: str) -> dict:
    import yaml
    return yaml.safe_load(text)


def test_set_values_read_as_yaml_with_plain_exponents():
    from gentron.training.__main__ import parse_value
    assert parse_value("3e-4") == 3e-4 and parse_value("3.0e-4") == 3e-4
    assert parse_value("true") is True and parse_value("[0.9, 0.99]") == [0.9, 0.99] and parse_value("S/2") == "S/2"
    assert parse_value("no") == "no" and parse_value("False") is False  # mixed_precision=no is the word


def test_prepare_batch_motion_free_and_text_dropout():
    videos = make_data(6, frames=4)
    g = torch.Generator().manual_seed(0)
    batch = prepare_batch(videos, frames=4, resolution=RES, text_dropout=0.0, p_motion_free=1.0, generator=g)
    assert batch.pixels.shape == (6, 4, 3, RES, RES)
    assert not batch.motion.any()
    for i, sample in enumerate(videos):  # every frame is the sample's first frame
        assert all(torch.equal(batch.pixels[i, f], sample["pixels"][0]) for f in range(4))
    assert batch.captions == [s["caption"] for s in videos]

    batch = prepare_batch(videos, 4, RES, text_dropout=0.0, p_motion_free=0.0, generator=g)
    assert batch.motion.all() and torch.equal(batch.pixels, torch.stack([s["pixels"] for s in videos]))
    images = make_data(3, frames=1)  # images in a video run are always motion-free pseudo-videos
    batch = prepare_batch(images, 4, RES, text_dropout=0.9999, p_motion_free=0.0, generator=g)
    assert not batch.motion.any() and batch.pixels.shape == (3, 4, 3, RES, RES)
    assert batch.captions == ["", "", ""]
    with pytest.raises(ValueError, match="pixels must be \\(F, 3, 32, 32\\)"):
        prepare_batch(images, 1, 32, 0.0, 0.0, g)
    with pytest.raises(ValueError, match="x / 127.5 - 1"):
        prepare_batch([{"pixels": torch.full((3, RES, RES), 255.0), "caption": "a"}], 1, RES, 0.0, 0.0, g)


def test_indexed_source_is_addressable_and_shards_ranks():
    data = list(range(10))
    a, b = IndexedSource(data, seed=3), IndexedSource(data, seed=3)
    straight = [a.batch(d, r, 2, 2) for d in range(5) for r in range(2)]
    assert sorted(x for batch in straight[:5] for x in batch) == list(range(10))  # one epoch, no repeats
    assert b.batch(4, 1, 2, 2) == straight[9]  # random access equals sequential reading


def test_stream_and_replay_sources_are_addressable():
    def stream(seed: int):  # an endless stream fixed by its seed, like ShapesWorldStream
        g = torch.Generator().manual_seed(seed)
        while True:
            yield int(torch.randint(1000, (1,), generator=g))

    a, b = StreamSource(stream, seed=1), StreamSource(stream, seed=1)
    assert a.batch(7, 1, 2, 3) == b.batch(7, 1, 2, 3) != a.batch(7, 0, 2, 3)
    replay = ReplaySource(range(5))  # any re-iterable: read in order, cycled, restarted when asked for the past
    assert [replay.batch(d, 0, 1, 2) for d in range(3)] == [[0, 1], [2, 3], [4, 0]]
    assert replay.batch(1, 0, 1, 2) == [2, 3]


def test_ema_warmup_and_state_dict():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model.named_parameters(), decay=0.999, warmup=True)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10**9) == 0.999
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model.named_parameters(), step=0)
    assert torch.allclose(ema.shadow["weight"], model.weight - 0.1)
    other = EMA(model.named_parameters(), decay=0.999)
    other.load_state_dict(ema.state_dict())
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"])


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("a red circle\n")
    (tmp_path / "clip").mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "clip" / f"{i:03d}.png")
    (tmp_path / "clip" / "caption.txt").write_text("a blue square moving left")
    folder = ImageFolder(tmp_path, resolution=RES, frames=2)
    items = [folder[i] for i in range(len(folder))]
    assert [tuple(x["pixels"].shape) for x in items] == [(1, 3, RES, RES), (2, 3, RES, RES)]
    assert items[0]["caption"] == "a red circle" and items[0]["pixels"].abs().max() <= 1


@torch.no_grad()
def eval_loss(transformer, pipe: GenTronPipeline, data: list[dict]) -> float:
    """The diffusion loss on fixed data, noise and timesteps: a deterministic yardstick."""
    enc = FrozenEncoders(pipe, torch.device("cpu"))
    pixels = torch.stack([d["pixels"] for d in data])
    losses = []
    for seed in range(4):
        g = torch.Generator().manual_seed(seed)
        latents = enc.latents(pixels, g)
        text, mask = enc.text([d["caption"] for d in data])
        losses.append(float(diffusion_loss(transformer.eval(), NoiseSchedule(), latents, text, mask, None, g)))
    return sum(losses) / len(losses)


def test_short_run_reduces_loss_and_writes_a_loadable_pipeline(init_dir, tmp_path):
    data = make_data(16, frames=1)
    cfg = tiny("tiny_t2i", init_dir, tmp_path / "run", steps=25, checkpoint_every=10, text_dropout=0.0)
    final = train(cfg, data)
    assert final == tmp_path / "run" / "final"
    init = GenTronPipeline.from_pretrained(init_dir)
    trained = GenTronPipeline.from_pretrained(final)
    before, after = eval_loss(init.transformer, init, data), eval_loss(trained.transformer, trained, data)
    assert after < 0.9 * before, (before, after)
    log = [json.loads(line) for line in (tmp_path / "run" / "loss.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 26))
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    assert [p.name for p in sorted((tmp_path / "run" / "checkpoints").iterdir())] == ["step_00000020", "step_00000025"]
    out = trained("a red circle", height=RES, num_inference_steps=2, text_guidance=2.0)
    assert out.frames.shape == (1, 1, RES, RES, 3)


@pytest.mark.parametrize("native", [False, True])
def test_bf16_on_a_cpu_without_native_bf16_warns(init_dir, tmp_path, monkeypatch, native):
    import warnings

    from gentron.training import trainer

    monkeypatch.setattr(trainer, "native_bf16", lambda device: native)
    cfg = tiny("tiny_t2i", init_dir, tmp_path / "run", steps=1, mixed_precision="bf16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, make_data(2, frames=1))
    slow = [w for w in caught if "without AMX or AVX512-BF16" in str(w.message)]
    assert len(slow) == (0 if native else 1)


def test_ablation_fields_build_the_asked_model(init_dir, tmp_path):
    """text_encoders keeps only the named towers and the fresh transformer reads their width;
    text_conditioning swaps cross-attention for adaLN-Zero. Every ablation config parses."""
    for path in sorted((CONFIGS / "ablations").glob("*.yaml")):
        assert TrainConfig.from_yaml(path).stage == f"ablation_{path.stem}"
    cfg = tiny("tiny_t2i", init_dir, tmp_path / "run", steps=2, transformer_preset="tiny", text_encoders="t5",
               text_conditioning="adaln_zero")
    trained = GenTronPipeline.from_pretrained(train(cfg, make_data(4, frames=1)))
    assert trained.text_encoder is None and trained.text_encoder_2 is not None
    assert trained.transformer.config.text_conditioning == "adaln_zero"
    assert trained.transformer.config.text_dim == trained.text_encoder_2.config.d_model
    assert trained("a red circle", height=RES, num_inference_steps=2).frames.shape == (1, 1, RES, RES, 3)
    with pytest.raises(ValueError, match="set transformer_preset too"):
        TrainConfig(text_conditioning="adaln_zero").validate()
    deeper = tiny("tiny_t2i", init_dir, tmp_path / "deep", steps=1, transformer_preset="tiny", transformer_depth=3)
    assert GenTronPipeline.from_pretrained(train(deeper, make_data(4, frames=1))).transformer.config.depth == 3
    with pytest.raises(ValueError, match="transformer_depth must be a positive whole number"):
        TrainConfig(transformer_preset="tiny", transformer_depth=0).validate()
    with pytest.raises(ValueError, match="transformer_depth changes a fresh transformer only"):
        TrainConfig(transformer_depth=4).validate()
    with pytest.raises(ValueError, match="text_encoders must be one of"):
        TrainConfig(text_encoders="clip+bert").validate()
    only_clip = tiny("tiny_t2i", init_dir, tmp_path / "run2", transformer_preset="tiny", text_encoders="clip")
    from gentron.training.trainer import keep_towers, load_init_pipeline
    pipe = load_init_pipeline(only_clip)
    assert pipe.text_encoder is not None and pipe.text_encoder_2 is None
    with pytest.raises(ValueError, match="has no t5 tower"):
        keep_towers(pipe, "clip+t5")


def test_rope_joins_a_trained_init_at_rate_zero_and_trains(init_dir, tmp_path):
    """rope: true gives a trained init rotary positions at rate 0 (with_rope: its function unchanged), which training
    then grows; a fresh preset gets them at rate 1."""
    from gentron.training.trainer import build_transformer, load_init_pipeline

    cfg = tiny("tiny_t2i", init_dir, tmp_path / "run", steps=3, rope=True, lr=1e-2)
    start = build_transformer(cfg, load_init_pipeline(cfg))
    assert start.config.rope and all(float(b.rope_rate.detach().abs().max()) == 0 for b in start.blocks)
    trained = GenTronPipeline.from_pretrained(train(cfg, make_data(4, frames=1)))
    assert trained.transformer.config.rope
    assert all(b.rope_rate.detach().abs().min().item() > 0 for b in trained.transformer.blocks)
    fresh = build_transformer(cfg.replace(transformer_preset="tiny"), load_init_pipeline(cfg))
    assert all(torch.equal(b.rope_rate, torch.ones(2)) for b in fresh.blocks)
    with pytest.raises(ValueError, match="rope must be true or false"):
        TrainConfig(rope="yes").validate()


class CrashingData(list):
    """A dataset that raises after ``budget`` reads: a process killed mid-run."""

    def __init__(self, items: list[dict], budget: int):
        super().__init__(items)
        self.budget = budget

    def __getitem__(self, i):
        self.budget -= 1
        if self.budget < 0:
            raise RuntimeError("simulated crash")
        return super().__getitem__(i)


T2V = dict(steps=6, checkpoint_every=3, frames=2, batch_size=2, grad_accum=2, p_motion_free=0.5, text_dropout=0.3,
           log_every=2)


@pytest.fixture(scope="module")
def straight_t2v(init_dir, tmp_path_factory) -> Path:
    """A T2V stage (grown from the T2I init) trained 6 steps without interruption."""
    out = tmp_path_factory.mktemp("straight") / "run"
    train(tiny("tiny_t2v", init_dir, out, **T2V), make_data(8, frames=2))
    return out


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical final EMA weights, raw weights, AdamW state and loss log."""
    for rel in ("final/transformer/diffusion_pytorch_model.safetensors",
                *(f"checkpoints/step_00000006/{f}.safetensors" for f in ("transformer", "optimizer", "ema"))):
        x, y = load_file(a / rel), load_file(b / rel)
        assert x.keys() == y.keys(), rel
        bad = [k for k in x if not torch.equal(x[k], y[k])]
        assert not bad, (rel, bad[:5])
    assert [json.loads(line)["loss"] for line in (a / "loss.jsonl").read_text().splitlines()] == \
           [json.loads(line)["loss"] for line in (b / "loss.jsonl").read_text().splitlines()]


def test_kill_and_resume_is_bit_exact(init_dir, straight_t2v, tmp_path):
    data = make_data(8, frames=2)
    out = tmp_path / "run"
    reads_per_step = T2V["batch_size"] * T2V["grad_accum"]
    with pytest.raises(RuntimeError, match="simulated crash"):  # dies during step 4, after checkpoint 3
        train(tiny("tiny_t2v", init_dir, out, **T2V), CrashingData(data, budget=3 * reads_per_step + 1))
    assert latest_checkpoint(out / "checkpoints").name == "step_00000003"
    assert not (out / "final").exists()
    train(tiny("tiny_t2v", init_dir, out, **T2V), data)
    assert_same_run(straight_t2v, out)


def test_loader_workers_give_the_same_run(init_dir, straight_t2v, tmp_path):
    """data_workers only moves where batches are made: the run is bit-identical to one without workers."""
    out = tmp_path / "run"
    train(tiny("tiny_t2v", init_dir, out, data_workers=2, **T2V), make_data(8, frames=2))
    assert_same_run(straight_t2v, out)


def test_micro_batches_from_workers_match_shapes_world_stream():
    """Workers render and prepare batch ``draw`` exactly as the training process would."""
    source = make_source("shapes", seed=5, resolution=32, frames=1)
    prepare = Preparation(frames=1, resolution=32, text_dropout=0.5, p_motion_free=0.0, seed=5)
    ahead = list(micro_batches(source, 3, 6, rank=0, world=1, size=4, prepare=prepare, workers=2))
    for draw, batch in zip(range(3, 6), ahead):
        direct = prepare(source.batch(draw, 0, 1, 4), draw, 0)
        assert batch.captions == direct.captions and torch.equal(batch.pixels, direct.pixels)
    assert any(c == "" for b in ahead for c in b.captions)  # text dropout was drawn (p = 0.5 over 12 captions)


def test_data_echo_repeats_each_made_batch():
    """echo=2: micro-batches 2k and 2k+1 share made batch k, also when starting mid-pair (a resume)."""
    source = make_source("shapes", seed=5, resolution=32, frames=1)
    prepare = Preparation(frames=1, resolution=32, text_dropout=0.0, p_motion_free=0.0, seed=5)
    plain = list(micro_batches(source, 0, 3, rank=0, world=1, size=2, prepare=prepare))
    echoed = list(micro_batches(source, 1, 6, rank=0, world=1, size=2, prepare=prepare, echo=2))
    assert [b.captions for b in echoed] == [plain[k].captions for k in (0, 1, 1, 2, 2)]
    assert echoed[1] is echoed[2] and echoed[0] is not echoed[1]


def test_batched_text_encoding_matches_one_caption_at_a_time():
    pipe = build_random_pipeline("tiny", temporal=False, seed=0)
    captions = ["a red circle", "a blue big square", "", "a red circle", "green"]
    one = FrozenEncoders(pipe, torch.device("cpu"))
    many = FrozenEncoders(pipe, torch.device("cpu"), batch_encode=True)
    (e1, m1), (e2, m2) = one.text(captions), many.text(captions)
    assert torch.equal(m1, m2) and torch.allclose(e1, e2, atol=1e-5)
    assert len(many._cache) == 4  # each distinct caption encoded once


def test_half_written_checkpoint_is_ignored(init_dir, straight_t2v, tmp_path, monkeypatch):
    data = make_data(8, frames=2)
    out = tmp_path / "run"
    real_save = checkpoint_module.save_file

    def dying_save(tensors, path):  # the process dies half-way through writing checkpoint 6
        if "step_00000006" in path and path.endswith("ema.safetensors"):
            Path(path).write_bytes(b"\0" * 10)
            raise KeyboardInterrupt("killed while writing")
        real_save(tensors, path)

    monkeypatch.setattr(checkpoint_module, "save_file", dying_save)
    with pytest.raises(KeyboardInterrupt):
        train(tiny("tiny_t2v", init_dir, out, **T2V), data)
    monkeypatch.undo()
    leftovers = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert leftovers == [".tmp-step_00000006", "step_00000003"]
    fake = out / "checkpoints" / "step_00000009"  # a step folder without its state file (non-atomic copy)
    shutil.copytree(out / "checkpoints" / ".tmp-step_00000006", fake)
    assert not is_complete(fake) and latest_checkpoint(out / "checkpoints").name == "step_00000003"
    train(tiny("tiny_t2v", init_dir, out, **T2V), data)
    assert_same_run(straight_t2v, out)
    assert not fake.exists()


# ---- multi-process on CPU (gloo) -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_folder(path: Path, n: int = 8) -> Path:
    from PIL import Image

    path.mkdir(parents=True)
    for i, sample in enumerate(make_data(n, frames=1)):
        arr = ((sample["pixels"][0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        Image.fromarray(arr).save(path / f"{i:03d}.png")
        (path / f"{i:03d}.txt").write_text(sample["caption"])
    return path


def launch(accelerate_config: str, out: Path, init_dir: Path, data: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / accelerate_config),
           "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "gentron.training",
           "--config", str(CONFIGS / "tiny_t2i.yaml"), "--steps", "3", "--output-dir", str(out),
           "--init-from", str(init_dir), "--data", str(data), "--set", f"resolution={RES}", "--set", "batch_size=2",
           "--set", "checkpoint_every=3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


@pytest.fixture(scope="module")
def folder_data(tmp_path_factory) -> Path:
    return write_folder(tmp_path_factory.mktemp("folder") / "data")


@pytest.fixture(scope="module")
def ddp_run(init_dir, folder_data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "run"
    launch("accelerate_ddp.yaml", out, init_dir, folder_data)
    return out


@pytest.mark.slow
def test_ddp_two_processes_keep_replicas_identical(ddp_run):
    ckpt = ddp_run / "checkpoints" / "step_00000003"
    hashes = [(ckpt / f"params_rank{r}.sha256").read_text() for r in (0, 1)]
    assert hashes[0] == hashes[1]
    assert json.loads((ckpt / "trainer_state.json").read_text())["world_size"] == 2
    GenTronPipeline.from_pretrained(ddp_run / "final")


@pytest.mark.slow
def test_fsdp2_on_cpu_matches_ddp(ddp_run, init_dir, folder_data, tmp_path):
    """accelerate runs an FSDP config as plain DDP on CPUs; the trainer shards with torch's FSDP2 instead."""
    out = tmp_path / "run"
    result = launch("accelerate_fsdp.yaml", out, init_dir, folder_data)
    assert "FSDP2 on CPU" in result.stdout + result.stderr
    ckpt = out / "checkpoints" / "step_00000003"
    hashes = [(ckpt / f"params_rank{r}.sha256").read_text() for r in (0, 1)]
    assert hashes[0] != hashes[1]  # each rank holds a different shard
    fsdp = load_file(ckpt / "transformer.safetensors")
    ddp = load_file(ddp_run / "checkpoints" / "step_00000003" / "transformer.safetensors")
    assert fsdp.keys() == ddp.keys()
    for k in ddp:  # same data and draws; only the gradient reduction order differs
        torch.testing.assert_close(fsdp[k], ddp[k], rtol=1e-4, atol=1e-5)
    GenTronPipeline.from_pretrained(out / "final")


def test_time_limit_stops_at_a_log_step_and_resumes_to_the_end(init_dir, straight_t2v, tmp_path):
    """A run out of time checkpoints and writes final/ at the first log step past the limit; resuming without
    the limit finishes the very same run (time_limit only decides where it pauses)."""
    out = tmp_path / "run"
    final = train(tiny("tiny_t2v", init_dir, out, time_limit=1e-9, **T2V), make_data(8, frames=2))
    assert final.is_dir() and latest_checkpoint(out / "checkpoints").name == "step_00000002"
    assert [json.loads(line)["step"] for line in (out / "loss.jsonl").read_text().splitlines()] == [2]
    train(tiny("tiny_t2v", init_dir, out, **T2V), make_data(8, frames=2))
    assert_same_run(straight_t2v, out)


def test_images_continue_a_video_model(tmp_path):
    """frames=1 on a T2V pipeline trains it on images (a one-frame clip: each token attends only to itself,
    as under the identity mask), which is how the GPU recipe adds image steps to the shipped T2V model."""
    init = tmp_path / "t2v"
    build_random_pipeline("tiny", temporal=True, seed=0).save_pretrained(init)
    final = train(TrainConfig(init_from=str(init), output_dir=str(tmp_path / "run"), resolution=RES, frames=1,
                              batch_size=2, steps=2, log_every=1), make_data(4, frames=1))
    assert GenTronPipeline.from_pretrained(final).transformer.config.temporal


def test_image_steps_interleave_evenly_and_resume_in_both_streams():
    """image_steps 0.5: every other step takes its micro-batches from the one-frame image stream, each stream
    numbered by its own steps, so starting at step 3 (a resume) gives exactly the tail of the whole run."""
    from gentron.training.data import image_step_count, step_batches
    assert [image_step_count(s, 0.5) for s in range(6)] == [0, 0, 1, 1, 2, 2]
    assert image_step_count(1000, 0.3) == 300 and image_step_count(7, 0.0) == 0
    clips_src = make_source("shapes", seed=5, resolution=32, frames=2, p_motion_free=0.0)
    images_src = make_source("shapes", seed=6, resolution=32, frames=1)
    clip_prep = Preparation(frames=2, resolution=32, text_dropout=0.0, p_motion_free=0.0, seed=5)
    image_prep = Preparation(frames=1, resolution=32, text_dropout=0.0, p_motion_free=0.0, seed=6)
    clips = lambda first, stop: micro_batches(clips_src, first, stop, 0, 1, 2, clip_prep)
    images = lambda first, stop: micro_batches(images_src, first, stop, 0, 1, 4, image_prep)
    whole = list(step_batches(clips, images, 0, 6, 0.5, grad_accum=2))
    assert [tuple(b.pixels.shape[:2]) for b in whole[::2]] == [(2, 2), (4, 1)] * 3  # clip, image, clip, ...
    assert not any(b.motion.any() for b in whole if b.pixels.shape[1] == 1)  # images are still: identity mask
    tail = list(step_batches(clips, images, 3, 6, 0.5, grad_accum=2))
    assert [b.captions for b in tail] == [b.captions for b in whole[6:]]
    assert all(torch.equal(a.pixels, b.pixels) for a, b in zip(tail, whole[6:]))
    with pytest.raises(ValueError, match="image_steps=0.5 mixes image steps into a video run"):
        TrainConfig(image_steps=0.5, frames=1).validate()
    with pytest.raises(ValueError, match="image_steps must be a share"):
        TrainConfig(image_steps=1.0, frames=8).validate()


def test_image_steps_run_resumes_exactly(init_dir, tmp_path):
    """A T2V run with image steps paused by time_limit and resumed equals the same run straight through."""
    settings = dict(T2V, image_steps=0.5, image_batch_size=3)
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    train(tiny("tiny_t2v", init_dir, straight, **settings), make_data(8, frames=2))
    train(tiny("tiny_t2v", init_dir, paused, time_limit=1e-9, **settings), make_data(8, frames=2))
    assert latest_checkpoint(paused / "checkpoints").name == "step_00000002"
    train(tiny("tiny_t2v", init_dir, paused, **settings), make_data(8, frames=2))
    assert_same_run(straight, paused)


def test_flow_run_learns_ships_its_scheduler_and_resumes_exactly(init_dir, tmp_path):
    """objective: flow trains the velocity (its loss falls), grows zero-initialised frame positions with to_video,
    ships FlowMatchEulerDiscreteScheduler with the run's shift, and a run paused by time_limit resumes bit for bit."""
    from gentron.diffusion import flow_loss

    flow = dict(T2V, objective="flow", flow_shift=4.0, frame_embedding=True)
    data = make_data(8, frames=2)
    straight = train(tiny("tiny_t2v", init_dir, tmp_path / "straight", **flow), data)
    paused = tmp_path / "paused"
    train(tiny("tiny_t2v", init_dir, paused, time_limit=1e-9, **flow), data)
    assert latest_checkpoint(paused / "checkpoints").name == "step_00000002"
    train(tiny("tiny_t2v", init_dir, paused, **flow), data)
    assert_same_run(straight.parent, paused)

    trained = GenTronPipeline.from_pretrained(straight)
    assert trained.objective == "flow" and trained.default_sampler == "flow-euler"
    assert trained.scheduler.config.shift == 4.0 and trained.transformer.config.frame_embedding
    assert float(trained.transformer.frame_embedder.weight.detach().abs().sum()) > 0  # it left zero and trained
    out = trained("a red circle moving left", frames=2, height=RES, num_inference_steps=2, text_guidance=2.0)
    assert out.frames.shape == (1, 2, RES, RES, 3)
    with pytest.raises(ValueError, match="min_snr_gamma and high_noise_power weight the epsilon loss"):
        tiny("tiny_t2v", init_dir, tmp_path / "bad", min_snr_gamma=5.0, **flow)
    with pytest.raises(ValueError, match="apply to objective: flow only"):
        tiny("tiny_t2v", init_dir, tmp_path / "bad", flow_shift=8.0)

    grown = GenTronPipeline.from_pretrained(init_dir).transformer.to_video(frame_embedding=True)
    enc, g = FrozenEncoders(trained, torch.device("cpu")), torch.Generator().manual_seed(0)
    latents = enc.latents(torch.stack([d["pixels"] for d in data]), g)
    text, mask = enc.text([d["caption"] for d in data])
    with torch.no_grad():
        before = flow_loss(grown.eval(), latents, text, mask, None, torch.Generator().manual_seed(1), shift=4.0)
        after = flow_loss(trained.transformer.eval(), latents, text, mask, None, torch.Generator().manual_seed(1),
                          shift=4.0)
    assert after < before
