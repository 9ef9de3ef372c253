"""BankFile: bank checkpoints as a side file plus the rows written since."""

import pytest
import torch

from ifnd.falseneg.bank_file import BankFile
from ifnd.runtime.checkpoint import CheckpointError


def test_split_and_join_restore_the_bank_and_rebase_past_half(tmp_path):
    writer, bank, filled = BankFile(tmp_path, 10), torch.zeros(10, 3), torch.zeros(10, dtype=torch.bool)
    shares = []
    for step, ids in enumerate([[0, 1], [2, 3, 4], [5, 6], [7, 8, 9, 0], [1, 2, 3, 4, 5, 6]]):
        ids = torch.tensor(ids)
        bank[ids], filled[ids] = float(step + 1), True
        writer.mark(ids)
        shares.append((writer.split(bank, filled), bank.clone()))
    # a new base once more than half the rows changed since the last one
    assert [share["base"] for share, _ in shares] == ["bank-1.pt", "bank-1.pt", "bank-1.pt", "bank-2.pt", "bank-3.pt"]
    assert [len(share["ids"]) for share, _ in shares] == [0, 3, 5, 0, 0]  # only rows since the base
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank-2.pt", "bank-3.pt"]  # the two newest bases kept
    shares = shares[3:]
    for share, expected in shares:
        restored, restored_filled = BankFile(tmp_path, 10).join(share)
        assert torch.equal(restored, expected) and torch.equal(restored_filled, filled)


def test_a_missing_base_fails_clearly(tmp_path):
    share = BankFile(tmp_path, 4).split(torch.zeros(4, 2), torch.zeros(4, dtype=torch.bool))
    (tmp_path / share["base"]).unlink()
    with pytest.raises(CheckpointError, match="missing"):
        BankFile(tmp_path, 4).join(share)
