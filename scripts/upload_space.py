"""Upload this repository as a Gradio Space on the Hugging Face Hub (huggingface_hub's ``HfApi.upload_folder``).

    python scripts/upload_space.py --repo-id USER/gentron-studio --dry-run   # what would be sent, nothing sent
    python scripts/upload_space.py --repo-id USER/gentron-studio             # after `hf auth login` (or $HF_TOKEN)

What is sent is the repository folder less what no Space needs: runs/, outputs/ and scratch/ (training runs and
generated results), caches and build output. Before anything is sent the plan is checked: README.md's front matter
parses and says ``sdk: gradio``, its ``app_file`` and requirements.txt are there, the built-in model is there whole,
nothing under runs/ or outputs/ is, and every file over 10 MB matches a .gitattributes LFS pattern (the Hub refuses
it in plain git otherwise). See docs/deploy.md.
"""
from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

import yaml
from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

ROOT = Path(__file__).resolve().parent.parent
MODEL = "assets/gentron-shapes"
NEVER = ("runs/", "outputs/")  # results and training runs: refused even if a pattern below were dropped
IGNORE = [*NEVER, "scratch/", "build/", "dist/", "*.egg-info/*", "__pycache__/*", "*/__pycache__/*", "*.pyc",
          ".pytest_cache/", ".benchmarks/", ".gradio/", ".cache/", ".mypy_cache/", ".ruff_cache/", ".venv/", "venv/"]
LFS_LIMIT = 10 * 1024 * 1024  # the Hub's limit for a file in plain git


def front_matter(readme: Path) -> dict:
    """The YAML between README.md's two leading ``---`` lines (a Space's settings)."""
    lines = readme.read_text(encoding="utf8").splitlines()
    if not lines or lines[0].strip() != "---" or "---" not in (line.strip() for line in lines[1:]):
        raise ValueError(f"{readme} has no front matter: a Space needs its settings between two --- lines on top")
    end = next(i for i, line in enumerate(lines[1:], 1) if line.strip() == "---")
    try:
        meta = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError as e:
        raise ValueError(f"{readme}'s front matter is not valid YAML: {e}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{readme}'s front matter must be a mapping of settings, got {meta!r}")
    return meta


def lfs_patterns(root: Path) -> list[str]:
    path = root / ".gitattributes"
    if not path.is_file():
        return []
    return [line.split()[0] for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#") and "filter=lfs" in line.split()]


def is_lfs(relpath: str, patterns: list[str]) -> bool:
    """Whether git would send ``relpath`` through LFS: a pattern without a slash matches the file's name."""
    name = relpath.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(name if "/" not in p else relpath, p) for p in patterns)


def plan(root: Path = ROOT) -> list[tuple[str, int, bool]]:
    """(path in the Space, bytes, through LFS) for every file the upload would send, in upload_folder's own order
    and with its own filter; raises ValueError naming what makes the folder unfit for a Space."""
    root = root.resolve()
    files = {p.relative_to(root).as_posix(): p for p in sorted(root.glob("**/*")) if p.is_file()}
    sent = list(filter_repo_objects(files, ignore_patterns=IGNORE + DEFAULT_IGNORE_PATTERNS))
    bad = [f for f in sent if f.startswith(NEVER)]
    if bad:
        raise ValueError(f"refusing to send results or runs: {bad[:3]}")
    if "README.md" not in sent:
        raise ValueError(f"{root} has no README.md: a Space reads its settings from its front matter")
    meta = front_matter(root / "README.md")
    if meta.get("sdk") != "gradio":
        raise ValueError(f"README.md's front matter says sdk: {meta.get('sdk')!r}; this app needs sdk: gradio")
    app_file = meta.get("app_file", "app.py")
    for needed in (app_file, "requirements.txt", f"{MODEL}/model_index.json"):
        if needed not in sent:
            raise ValueError(f"{needed} is not in the upload: the Space needs it")
    weights = [f for f in sent if f.startswith(f"{MODEL}/") and f.endswith(".safetensors")]
    if len(weights) < 4:  # transformer, VAE and the two text towers
        raise ValueError(f"the built-in model in {MODEL} is incomplete: weights {weights}")
    patterns = lfs_patterns(root)
    rows = [(f, files[f].stat().st_size, is_lfs(f, patterns)) for f in sent]
    big = [f for f, size, lfs in rows if size > LFS_LIMIT and not lfs]
    if big:
        raise ValueError(f"{big} are over 10 MB but match no LFS pattern in .gitattributes: the Hub would refuse them")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo-id", required=True, help="the Space, e.g. USER/gentron-studio (created if missing)")
    p.add_argument("--dry-run", action="store_true", help="list what would be sent, with sizes; send nothing")
    p.add_argument("--private", action="store_true", help="create the Space private")
    p.add_argument("--token", default=None, help="a Hub token with write access (default: the saved login)")
    p.add_argument("--root", type=Path, default=ROOT, help="the folder to send (default: this repository)")
    args = p.parse_args(argv)
    try:
        rows = plan(args.root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for path, size, lfs in rows:
            print(f"{size:>12,}  {'lfs ' if lfs else '    '}{path}")
        total = sum(size for _, size, _ in rows)
        print(f"{len(rows)} files, {total:,} bytes ({sum(lfs for *_, lfs in rows)} through LFS) "
              f"would go to the Space {args.repo_id}")
        return 0
    from huggingface_hub import HfApi

    api = HfApi(token=args.token)
    api.create_repo(args.repo_id, repo_type="space", space_sdk="gradio", private=args.private, exist_ok=True)
    info = api.upload_folder(repo_id=args.repo_id, repo_type="space", folder_path=args.root,
                             ignore_patterns=IGNORE, commit_message="Upload GenTron Studio")
    print(f"sent {len(rows)} files: {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
