import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_pipeline():
    from gentron.factory import build_random_pipeline

    return build_random_pipeline("tiny", text="clip+t5", temporal=True, seed=0)


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory, tiny_pipeline):
    path = tmp_path_factory.mktemp("tiny-pipeline")
    tiny_pipeline.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module: the 2 shared cores thrash with more, and multi-process tests
    need a core each. Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
