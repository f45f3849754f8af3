"""The README's quick-start snippet runs and does what its comments say."""

import re
from pathlib import Path

import torch
from torch.nn.utils import prune as torch_prune

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quick_start_runs(capsys):
    text = README.read_text(encoding="utf-8")
    code = re.search(r"## prunekit in one minute\n\n```python\n(.*?)```", text, re.S).group(1)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    model, masks = ns["model"], ns["masks"]
    n = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == round(0.9 * n)
    assert not torch_prune.is_pruned(model)          # remove_masks ran
    weights = dict(model.named_parameters())
    for name, m in masks.items():
        assert torch.all(weights[name][~m] == 0)   # zeros survived fine-tuning
    accuracy = float(capsys.readouterr().out.strip().splitlines()[-1])
    assert accuracy > 0.9
