"""The CLI checks what it is given before it loads a model, and its messages name the flag as typed (or the
--prompts-file line and field)."""
import ast
import json
from pathlib import Path

import pytest

from gentron import loading
from gentron.cli import main

ROOT = Path(__file__).resolve().parent.parent
GOOD = ["--prompt", "a red circle", "--out", "x.png"]


@pytest.fixture
def no_load(monkeypatch, tmp_path):
    """Any model load fails the test: every message below must come before it."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(loading, "load_pipeline", refuse)
    monkeypatch.chdir(tmp_path)


def error_of(capsys, argv) -> str:
    assert main(["generate", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    return captured.err.strip()


@pytest.mark.parametrize("extra,message", [
    (["--resolution", "65"], "error: --resolution must be a multiple of 8 between 8 and 2048 (got 65)"),
    (["--resolution", "0"], "error: --resolution must be a multiple of 8 between 8 and 2048 (got 0)"),
    (["--scheduler", "nosuch"], "error: --scheduler must be one of ddim, dpm++, euler for this epsilon model "
                                "(got 'nosuch')"),
    (["--scheduler", "flow-euler"], "error: --scheduler must be one of ddim, dpm++, euler"),
    (["--steps", "0"], "error: --steps must be an integer from 1 to 500 (got 0)"),
    (["--frames", "0"], "error: --frames must be an integer from 1 to 64 (got 0)"),
    (["--frames", "8"], "error: --frames must be 1 for a .png --out (got 8): write .mp4 or .gif for a video"),
    (["--text-guidance", "-1"], "error: --text-guidance must be a number from 0 to 50 (got -1.0)"),
    (["--motion-guidance", "51"], "error: --motion-guidance must be a number from 0 to 50 (got 51.0)"),
    (["--eta", "0.5", "--scheduler", "euler"], "error: --eta applies to the ddim sampler only (the sampler is "
                                               "euler)"),
    (["--eta", "2"], "error: --eta must be a number from 0"),
    (["--guidance-interval", "0,1200"], "error: --guidance-interval must be LOW,HIGH with 0 <= LOW <= HIGH <= 1000"),
    (["--guidance-interval", "a,b"], "error: --guidance-interval takes two timesteps as LOW,HIGH"),
    (["--fps", "0"], "error: --fps must be a number from 0.5 to 60 (got 0)"),
    (["--quantize", "int4"], "error: --quantize must be one of none, bf16, int8, int8-dynamic, bnb8, bnb4 "
                             "(got 'int4')"),
    (["--quantize-text", "fp8"], "error: --quantize-text must be one of none, bf16"),
    (["--device", "tpu"], "error: --device must be cpu or cuda"),
    (["--negative-prompt", "x\x07"], "error: --negative-prompt contains control characters"),
])
def test_a_bad_flag_is_named_before_the_model_loads(no_load, capsys, extra, message):
    assert error_of(capsys, [*GOOD, *extra]).startswith(message)


def test_the_output_type_and_the_prompt_are_named(no_load, capsys):
    assert error_of(capsys, ["--prompt", "a red circle", "--out", "x.jpg"]).startswith(
        "error: --out must end in .png (an image), .mp4 or .gif (a video) (got 'x.jpg')")
    assert error_of(capsys, ["--prompt", "  ", "--out", "x.png"]).startswith("error: --prompt is empty")


def test_a_flow_model_folder_offers_its_own_samplers(no_load, capsys, tmp_path):
    """The valid --scheduler set is read from the folder's scheduler config, no weights needed."""
    folder = tmp_path / "flow-model"
    (folder / "scheduler").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "GenTronPipeline"}))
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 3.0}))
    err = error_of(capsys, [*GOOD, "--model", str(folder), "--scheduler", "ddim"])
    assert err == "error: --scheduler must be one of flow-dpm++, flow-euler for this flow model (got 'ddim')"


@pytest.mark.parametrize("lines,message", [
    (['{"prompt": "a red circle"}', "not json"], "line 2 is not JSON"),
    (['{"id": "a"}'], 'line 1 needs a "prompt"'),
    (['{"prompt": "a red circle", "frames": 0}'], 'line 1: "frames" must be an integer from 1 to 64 (got 0)'),
    (['{"prompt": "a red circle"}', '', '{"prompt": "a", "seed": "7"}'],
     'line 3: "seed" must be an integer from 0 to 4294967295 (got \'7\')'),
    (['{"prompt": "a", "resolution": 60}'], 'line 1: "resolution" must be a multiple of 8 between 8 and 2048'),
    (['{"prompt": "a", "text_guidance": 99}'], 'line 1: "text_guidance" must be a number from 0 to 50 (got 99)'),
    (['{"prompt": "a", "steps": 3}'], "line 1: unknown field 'steps'"),
    (['{"id": "x", "prompt": "a"}', '{"id": "x", "prompt": "b"}'], "line 2: \"id\" 'x' is already used on line 1"),
    (['{"id": "../x", "prompt": "a"}'], "line 1: \"id\" '../x' may hold only letters, digits, - and _"),
    (['{"prompt": ""}'], 'line 1: "prompt" is empty'),
    ([""], "holds no prompts"),
])
def test_a_bad_prompts_file_line_is_named_by_number_and_field(no_load, capsys, tmp_path, lines, message):
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    err = error_of(capsys, ["--prompts-file", str(path), "--out-dir", str(tmp_path / "out")])
    assert err.startswith(f"error: --prompts-file {path}") and message in err
    assert not (tmp_path / "out").exists()  # nothing made before every line is checked


def test_a_missing_prompts_file_is_named(no_load, capsys, tmp_path):
    err = error_of(capsys, ["--prompts-file", str(tmp_path / "none.jsonl"), "--out-dir", str(tmp_path)])
    assert err == f"error: --prompts-file {tmp_path / 'none.jsonl'} does not exist"


def test_the_library_never_imports_the_cli():
    """The CLI sits on top of the library: inside gentron/ only __main__.py imports gentron.cli."""
    importers = []
    for path in (ROOT / "gentron").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = "." * node.level + (node.module or "")
                names = [a.name for a in node.names]
                if module.endswith("cli") or module in {".", "..", "gentron"} and "cli" in names:
                    importers.append(path.relative_to(ROOT).as_posix())
            elif isinstance(node, ast.Import) and any(a.name == "gentron.cli" for a in node.names):
                importers.append(path.relative_to(ROOT).as_posix())
    assert importers == ["gentron/__main__.py"]
