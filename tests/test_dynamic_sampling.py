"""Dynamic sampling: exactly the groups at or below epsilon are dropped, and the batch is refilled."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl import GRPOTrainer

from srl_platform.sampling import SamplingStats, group_std, groups_with_signal
from srl_platform.trainer import SRLGRPOTrainer


def test_group_std_is_exact_for_identical_rewards():
    assert group_std([0.1] * 8) == 0.0
    assert group_std([0.0, 1.0]) == pytest.approx(0.5)


def test_drops_exactly_groups_at_or_below_epsilon():
    eps = 0.25  # binary fractions below: every std is exact, so the boundary case is truly at eps
    rewards = [
        0.5, 0.5, 0.5, 0.5,  # std 0: dropped
        0.25, 0.75, 0.25, 0.75,  # std exactly 0.25: at epsilon, dropped
        0.0, 1.0, 0.0, 1.0,  # std 0.5: kept
        -1.0, -1.0, -1.0, -1.0,  # all format violations: dropped
        0.0, 0.0, 0.0, 1.0,  # std ~0.433: kept
        0.125, 0.625, 0.125, 0.625,  # std exactly 0.25 again: dropped
    ]
    assert group_std([0.25, 0.75, 0.25, 0.75]) == eps
    assert groups_with_signal(rewards, 4, eps) == [False, False, True, False, True, False]
    # A hair above epsilon is kept.
    assert groups_with_signal([0.25, 0.75 + 1e-9, 0.25, 0.75], 4, eps) == [True]


def test_epsilon_zero_keeps_any_spread_and_drops_all_equal():
    assert groups_with_signal([1, 1, 1, 1, 0, 0, 0, 1], 4, 0.0) == [False, True]


def test_bad_group_shapes_are_errors():
    with pytest.raises(ValueError, match="do not split"):
        groups_with_signal([1.0, 2.0, 3.0], 2, 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        groups_with_signal([1.0], 1, 0.0)


class _FakeTokenizer:
    pad_token_id = 0


def _trainer(rewards_by_prompt: dict[str, list[float]], dataset: list[dict], max_refill_rounds=4,
             rank=0, world=1):
    """An SRLGRPOTrainer whose generation step (TRL's) is replaced by scripted rewards."""
    trainer = SRLGRPOTrainer.__new__(SRLGRPOTrainer)
    trainer.accelerator = SimpleNamespace(process_index=rank, num_processes=world, device="cpu")
    trainer.other_ranks_rewards = []  # rewards TRL would gather from the ranks before this one
    trainer.num_generations = 4
    trainer.epsilon = 1e-4
    trainer.max_refill_rounds = max_refill_rounds
    trainer.sampling = SamplingStats()
    trainer.train_dataset = dataset
    trainer._refill_order = list(range(len(dataset)))
    trainer._refill_cursor = 0
    trainer._metrics = {"train": defaultdict(list)}
    trainer._tokenizer = _FakeTokenizer()
    trainer.model = torch.nn.Linear(1, 1)
    trainer.rewards_by_prompt = rewards_by_prompt
    return trainer


def _scripted_generation(self, inputs):
    """Mimics TRL's output: left-padded prompts, right-padded completions of per-call lengths."""
    prompts = [row["prompt"] for row in inputs]
    rewards = [r for p in prompts[:: self.num_generations] for r in self.rewards_by_prompt[p]]
    self._last_rewards = torch.tensor(self.other_ranks_rewards + rewards)
    n = len(prompts)
    width = 2 + len(self._calls)  # each round has a different completion length
    self._calls.append(prompts[:: self.num_generations])
    ids = torch.tensor([[ord(p[0])] * width for p in prompts])
    return {
        "prompt_ids": torch.ones(n, 3, dtype=torch.long),
        "prompt_mask": torch.ones(n, 3, dtype=torch.long),
        "completion_ids": ids,
        "completion_mask": torch.ones(n, width, dtype=torch.long),
        "advantages": torch.tensor(rewards) - torch.tensor(rewards).mean(),
        "num_items_in_batch": torch.tensor(n * width),
    }


def test_refills_dropped_groups_with_fresh_prompts(monkeypatch):
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", _scripted_generation)
    flat, varied = [0.2] * 4, [0.1, 0.9, 0.5, 0.3]
    dataset = [{"prompt": "c"}, {"prompt": "d"}, {"prompt": "e"}]
    trainer = _trainer({"a": varied, "b": flat, "c": flat, "d": varied, "e": varied}, dataset)
    trainer._calls = []
    batch = [{"prompt": "a"}] * 4 + [{"prompt": "b"}] * 4

    out = trainer._generate_and_score_completions(batch)

    # Round 1 keeps a, drops b; refill c (flat, dropped); refill d (kept) fills the batch.
    assert trainer._calls == [["a", "b"], ["c"], ["d"]]
    assert out["completion_ids"].shape == (8, 4)  # padded to the longest round
    assert [chr(int(row[0])) for row in out["completion_ids"][::4]] == ["a", "d"]
    assert out["completion_mask"][:4].sum().item() == 4 * 2  # round-1 rows keep their true length
    assert out["num_items_in_batch"].item() == 4 * 2 + 4 * 4
    assert trainer.sampling.groups_seen == 4 and trainer.sampling.groups_dropped == 2
    assert trainer.sampling.drop_rate == 0.5
    assert trainer.sampling.unfilled_steps == 0
    assert trainer._metrics["train"]["dynamic_sampling/refill_rounds"] == [2.0]


def test_gives_up_after_max_refill_rounds_and_counts_unfilled(monkeypatch):
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", _scripted_generation)
    flat = [0.7] * 4
    trainer = _trainer({"a": flat, "b": flat, "c": flat}, [{"prompt": "c"}], max_refill_rounds=2)
    trainer._calls = []

    out = trainer._generate_and_score_completions([{"prompt": "a"}] * 4 + [{"prompt": "b"}] * 4)

    assert len(trainer._calls) == 3  # the batch + 2 refills
    assert trainer.sampling.unfilled_steps == 1
    assert torch.allclose(out["advantages"], torch.zeros(8), atol=1e-6)  # no signal: zero gradient


def test_a_rank_keeps_its_own_groups_of_the_gathered_rewards(monkeypatch):
    """Under torchrun TRL gathers every rank's rewards (rank 0's first) while the output is this
    rank's: rank 1 must judge its own group, not rank 0's, and refill from its own turn of the order."""
    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", _scripted_generation)
    flat, varied = [0.2] * 4, [0.1, 0.9, 0.5, 0.3]
    dataset = [{"prompt": "c"}, {"prompt": "d"}, {"prompt": "e"}, {"prompt": "f"}]
    trainer = _trainer({"b": flat, "c": varied, "d": varied, "e": varied, "f": varied}, dataset,
                       rank=1, world=2)
    trainer.other_ranks_rewards = varied  # rank 0's group has signal
    trainer._calls = []

    out = trainer._generate_and_score_completions([{"prompt": "b"}] * 4)

    # b (this rank's) is flat: refill, taking order index 1 (rank 1's turn), d, not c.
    assert trainer._calls == [["b"], ["d"]]
    assert [chr(int(row[0])) for row in out["completion_ids"][::4]] == ["d"]
    assert trainer.sampling.groups_seen == 4 and trainer.sampling.groups_dropped == 1
