"""The README's Python examples run as written (with a shorter training and the test data root)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)


def test_the_readme_has_the_functional_and_the_facade_example() -> None:
    blocks = python_blocks()
    assert any("make_train_step" in b for b in blocks) and any("LotteryTicket" in b for b in blocks)


@pytest.mark.slow
def test_functional_api_example_runs(data_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (block,) = [b for b in python_blocks() if "make_train_step" in b]
    assert "2000)" in block and '"../shared/data"' in block
    code = block.replace("2000)", "30)").replace('"../shared/data"', repr(str(data_root)))
    code = code.replace(
        "ltfunc.make_train_step(model, opt)", "ltfunc.make_train_step(model, opt, compile=False)"
    )
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    state, new_mask = namespace["state"], namespace["new_mask"]
    assert state.iteration == 30  # type: ignore[attr-defined]
    assert "acc" in namespace and 0.5 < namespace["acc"] <= 1.0  # type: ignore[operator]
    ticket = namespace["ticket"]
    assert all(bool((ticket[k][~m] == 0).all()) for k, m in new_mask.items())  # type: ignore[attr-defined,index]
    assert "fc1.weight" in capsys.readouterr().out


def test_facade_example_runs() -> None:
    (block,) = [b for b in python_blocks() if "LotteryTicket(" in b]
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)
    )
    gen = torch.Generator().manual_seed(0)
    loader = [
        (torch.randn(8, 1, 28, 28, generator=gen), torch.randint(0, 10, (8,), generator=gen))
        for _ in range(3)
    ]
    namespace: dict[str, object] = {
        "model": model,
        "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3),
        "criterion": torch.nn.CrossEntropyLoss(),
        "init_state_dict": {k: v.clone() for k, v in model.state_dict().items()},
        "train_loader": loader,
        "test_loader": loader,
    }
    exec(compile(block, "README.md", "exec"), namespace)
    loss, acc = namespace["LT"].eval_all(loader)  # type: ignore[attr-defined]
    assert loss > 0 and 0.0 <= acc <= 1.0
