"""tools/check_refactor_equivalence.py: a recorded run checks identical, a changed weight is reported."""

import torch


def test_record_then_check_and_detect_a_change(load_tool, tmp_path, capsys):
    tool = load_tool("check_refactor_equivalence")
    assert tool.main(["record", str(tmp_path), "--only", "none"]) == 0
    assert tool.main(["check", str(tmp_path), "--only", "none"]) == 0
    assert "0 of 2 runs differ" in capsys.readouterr().out
    path = tmp_path / "none-moco.pt"
    weights = torch.load(path)
    name = next(iter(weights))
    weights[name] = weights[name] + 1e-7 * torch.ones_like(weights[name]) if weights[name].is_floating_point() \
        else weights[name] + 1
    torch.save(weights, path)
    assert tool.main(["check", str(tmp_path), "--only", "none"]) == 1
    out = capsys.readouterr().out
    assert f"DIFFERENT: {name}" in out and "1 of 2 runs differ" in out
