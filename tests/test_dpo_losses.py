"""DPO, IPO, hinge, BoNBoN and SimPO losses against hand-computed values (log-probs given), and
DPOModule's reference-free (SimPO) and length-normalised (IPO) paths."""

import math

import pytest
import torch

from lightning_rlhf.errors import ConfigError
from lightning_rlhf.rl.dpo import bonbon_margin, dpo_loss, sequence_logprobs

# two pairs: h = (pc - rc) - (pr - rr) = (−3 + 4) − (−5 + 4) = 2 and (−6 + 5) − (−2 + 3) = −2
PC, PR = torch.tensor([-3.0, -6.0]), torch.tensor([-5.0, -2.0])
RC, RR = torch.tensor([-4.0, -5.0]), torch.tensor([-4.0, -3.0])


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_sigmoid_loss_and_implicit_rewards():
    out = dpo_loss(PC, PR, RC, RR, beta=0.5)
    assert out.loss.item() == pytest.approx(-(log_sigmoid(1.0) + log_sigmoid(-1.0)) / 2)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.5, -0.5]))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-0.5, 0.5]))


def test_label_smoothing():
    out = dpo_loss(PC, PR, RC, RR, beta=0.5, label_smoothing=0.1)
    pair1 = -0.9 * log_sigmoid(1.0) - 0.1 * log_sigmoid(-1.0)
    pair2 = -0.9 * log_sigmoid(-1.0) - 0.1 * log_sigmoid(1.0)
    assert out.loss.item() == pytest.approx((pair1 + pair2) / 2)


def test_ipo_and_hinge():
    # IPO: (h − 1/(2·0.5))² = (2 − 1)², (−2 − 1)²; hinge: max(0, 1 − 0.5·h) = 0, 2
    assert dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="ipo").loss.item() == pytest.approx((1 + 9) / 2)
    assert dpo_loss(PC, PR, RC, RR, beta=0.5, loss_type="hinge").loss.item() == pytest.approx((0 + 2) / 2)


def test_the_gradient_pushes_chosen_up_and_rejected_down():
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    dpo_loss(pc, pr, RC, RR, beta=0.5).loss.backward()
    # d/dpc of −log σ(β h) / 2 = −β σ(−β h) / 2
    torch.testing.assert_close(pc.grad, torch.tensor([-0.25 / (1 + math.e), -0.25 / (1 + math.exp(-1))]))
    torch.testing.assert_close(pr.grad, -pc.grad)


def test_sequence_logprobs_ignore_prompt_and_padding():
    token = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -9.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    torch.testing.assert_close(sequence_logprobs(token, mask), torch.tensor([-3.0, -0.5]))


@pytest.mark.parametrize("kw, message", [
    (dict(loss_type="kto"), "loss_type must be one of"),
    (dict(label_smoothing=0.5), r"label_smoothing must be in \[0, 0.5\)"),
    (dict(loss_type="ipo", label_smoothing=0.1), "sigmoid loss only"),
    (dict(loss_type="bonbon", bon_n=8, label_smoothing=0.1), "sigmoid loss only"),
    (dict(loss_type="bonbon"), "the bonbon loss needs bon_n"),
    (dict(loss_type="bonbon", bon_n=1), "n >= 2"),
    (dict(loss_type="bonbon", bon_n=8, bonbon_alpha=1.5), r"bonbon_alpha must be in \[0, 1\]"),
])
def test_bad_settings(kw, message):
    with pytest.raises(ConfigError, match=message):
        dpo_loss(PC, PR, RC, RR, **kw)


def test_bonbon_margin_by_hand():
    # m_n = (n − 1) H_{n−1}: 1·1 = 1; 2·(1 + 1/2) = 3; 3·(1 + 1/2 + 1/3) = 3·11/6 = 5.5;
    # 7·H_7 = 7·363/140 = 363/20 = 18.15, so β* = 1/(2·18.15) = 0.0275482 (the official README's beta)
    assert bonbon_margin(2) == 1.0 and bonbon_margin(3) == 3.0 and bonbon_margin(4) == pytest.approx(5.5)
    assert bonbon_margin(8) == pytest.approx(18.15, abs=1e-12)
    assert 1 / (2 * bonbon_margin(8)) == pytest.approx(0.0275482094, abs=1e-10)
    for n in (1, 0, 2.5, True):
        with pytest.raises(ConfigError, match="n >= 2"):
            bonbon_margin(n)


@pytest.mark.parametrize("n", [2, 3, 8, 16])
def test_bonbon_margin_is_the_digamma_gap_and_the_best_worst_log_cdf_gap(n):
    # (n − 1)(ψ(n) − ψ(1)), the derivation's form
    digamma = torch.special.digamma(torch.tensor([float(n), 1.0], dtype=torch.float64))
    assert bonbon_margin(n) == pytest.approx((n - 1) * (digamma[0] - digamma[1]).item(), rel=1e-12)
    # under π_BoN, h = (n − 1)(log F(y_best) − log F(y_worst)) with F of n reference samples i.i.d.
    # uniform: its Monte Carlo mean (200k draws; sd(log U_(1)) < 1.3, so the standard error is
    # below 0.003·(n − 1)) is m_n
    u = torch.rand(200_000, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    h = (n - 1) * (u.max(-1).values.log() - u.min(-1).values.log())
    assert h.mean().item() == pytest.approx(bonbon_margin(n), abs=0.015 * (n - 1))


def test_bonbon_loss_by_hand():
    # h = 2, −2 as above; −log π_c = 3, 6 (SFT mean 4.5)
    # n = 2, m = 1, α = 0.5: IPO (2 − 1)² = 1, (−2 − 1)² = 9 (mean 5); loss 0.5·4.5 + 0.5·5 = 4.75
    out = dpo_loss(PC, PR, RC, RR, loss_type="bonbon", bon_n=2, bonbon_alpha=0.5)
    assert out.loss.item() == pytest.approx(4.75)
    assert out.sft_loss.item() == pytest.approx(4.5) and out.ipo_loss.item() == pytest.approx(5.0)
    # implicit rewards at β* = 1/(2·1) = 0.5, whatever beta says: 0.5·(pc − rc), 0.5·(pr − rr)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([0.5, -0.5]))
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-0.5, 0.5]))
    # n = 3, m = 3, α = 0.005 (default): IPO (2 − 3)² = 1, (−2 − 3)² = 25 (mean 13);
    # loss 0.005·4.5 + 0.995·13 = 0.0225 + 12.935 = 12.9575
    out = dpo_loss(PC, PR, RC, RR, beta=123.0, loss_type="bonbon", bon_n=3)
    assert out.loss.item() == pytest.approx(12.9575)
    assert out.sft_loss.item() == pytest.approx(4.5) and out.ipo_loss.item() == pytest.approx(13.0)
    # α = 1: SFT on the best only; α = 0: IPO at β* only
    assert dpo_loss(PC, PR, RC, RR, loss_type="bonbon", bon_n=3, bonbon_alpha=1.0).loss.item() == pytest.approx(4.5)
    assert dpo_loss(PC, PR, RC, RR, loss_type="bonbon", bon_n=3, bonbon_alpha=0.0).loss.item() == pytest.approx(13.0)
    assert dpo_loss(PC, PR, RC, RR, loss_type="sigmoid").sft_loss is None


def test_bonbon_gradient_by_hand():
    # n = 2 (m = 1), α = 0.5, mean over b = 2 pairs:
    # d/dpc = (−α + (1 − α)·2(h − m)) / 2: (−0.5 + 1) / 2 = 0.25; (−0.5 − 3) / 2 = −1.75
    # d/dpr = −(1 − α)·2(h − m) / 2: −1 / 2 = −0.5; 3 / 2 = 1.5 (the SFT term does not touch rejected)
    pc, pr = PC.clone().requires_grad_(), PR.clone().requires_grad_()
    dpo_loss(pc, pr, RC, RR, loss_type="bonbon", bon_n=2, bonbon_alpha=0.5).loss.backward()
    torch.testing.assert_close(pc.grad, torch.tensor([0.25, -1.75]))
    torch.testing.assert_close(pr.grad, torch.tensor([-0.5, 1.5]))


# SimPO: length-averaged policy log-probs ā_c = −1, −2 and ā_r = −1.5, −1; β = 2, γ = 0.5:
# z = β (ā_c − ā_r) − γ = 2·0.5 − 0.5 = 0.5 and 2·(−1) − 0.5 = −2.5
AC, AR = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])


def test_simpo_loss_rewards_and_gradient_by_hand():
    ac, ar = AC.clone().requires_grad_(), AR.clone().requires_grad_()
    out = dpo_loss(ac, ar, None, None, beta=2.0, loss_type="simpo", simpo_gamma=0.5)
    assert out.loss.item() == pytest.approx(-(log_sigmoid(0.5) + log_sigmoid(-2.5)) / 2)
    torch.testing.assert_close(out.chosen_rewards, torch.tensor([-2.0, -4.0]))  # β ā
    torch.testing.assert_close(out.rejected_rewards, torch.tensor([-3.0, -2.0]))
    out.loss.backward()
    # d/dā_c of −log σ(z) / 2 = −β σ(−z) / 2 = −σ(−z)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    torch.testing.assert_close(ac.grad, torch.tensor([-sig(-0.5), -sig(2.5)]))
    torch.testing.assert_close(ar.grad, -ac.grad)


def test_simpo_label_smoothing_and_gamma():
    out = dpo_loss(AC, AR, None, None, beta=2.0, loss_type="simpo", simpo_gamma=0.5, label_smoothing=0.1)
    pair1 = -0.9 * log_sigmoid(0.5) - 0.1 * log_sigmoid(-0.5)
    pair2 = -0.9 * log_sigmoid(-2.5) - 0.1 * log_sigmoid(2.5)
    assert out.loss.item() == pytest.approx((pair1 + pair2) / 2)
    # γ = 0 is a reference-free DPO on averaged log-probs: z = 1 and −2
    plain = dpo_loss(AC, AR, None, None, beta=2.0, loss_type="simpo", simpo_gamma=0.0)
    assert plain.loss.item() == pytest.approx(-(log_sigmoid(1.0) + log_sigmoid(-2.0)) / 2)


def test_length_normalised_ipo_by_hand():
    # chosen 2 tokens, rejected 3 tokens (the third column is padding for chosen)
    mask_c, mask_r = torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([[1.0, 1.0, 1.0]])
    pc, pr = torch.tensor([[-1.0, -3.0, -9.0]]), torch.tensor([[-2.0, -2.0, -5.0]])
    rc, rr = torch.tensor([[-1.5, -3.5, -9.0]]), torch.tensor([[-3.0, -3.0, -3.0]])
    avg = [sequence_logprobs(x, m, average=True) for x, m in ((pc, mask_c), (pr, mask_r), (rc, mask_c), (rr, mask_r))]
    torch.testing.assert_close(torch.cat(avg), torch.tensor([-2.0, -3.0, -2.5, -3.0]))
    # averaged: h = (−2 + 2.5) − (−3 + 3) = 0.5, (0.5 − 1/(2·0.5))² = 0.25;
    # summed: h = (−4 + 5) − (−9 + 9) = 1, (1 − 1)² = 0
    assert dpo_loss(*avg, beta=0.5, loss_type="ipo").loss.item() == pytest.approx(0.25)
    summed = [sequence_logprobs(x, m) for x, m in ((pc, mask_c), (pr, mask_r), (rc, mask_c), (rr, mask_r))]
    assert dpo_loss(*summed, beta=0.5, loss_type="ipo").loss.item() == pytest.approx(0.0)


@pytest.mark.parametrize("loss_type, refs, message", [
    ("simpo", True, "loss_type 'simpo' takes no reference log-probs"),
    ("sigmoid", False, "loss_type 'sigmoid' needs the reference's log-probs"),
    ("bonbon", False, "needs the reference's log-probs"),
])
def test_reference_log_probs_go_with_the_loss(loss_type, refs, message):
    with pytest.raises(ConfigError, match=message):
        dpo_loss(PC, PR, RC if refs else None, RR if refs else None, loss_type=loss_type, bon_n=2)


def test_simpo_module_loads_and_runs_no_reference(tiny_gpt2, tokenizer_dir, tmp_path, monkeypatch):
    import lightning as L
    from helpers import make_dpo, make_preference_dm, preference_pairs

    import lightning_rlhf.modules.dpo as dpo_module

    module = make_dpo(tiny_gpt2, tokenizer_dir, loss_type="simpo", beta=2.0, simpo_gamma=0.5)
    plain = make_dpo(tiny_gpt2, tokenizer_dir)
    assert module.ref_model is None and plain.ref_model is not None
    assert sum(p.numel() for p in module.parameters()) == sum(p.numel() for p in plain.policy.parameters()), \
        "no reference weights in memory"
    calls = []
    original = dpo_module.response_logprobs
    monkeypatch.setattr(dpo_module, "response_logprobs", lambda model, *a, **k: calls.append(model) or original(
        model, *a, **k))
    trainer = L.Trainer(max_steps=12, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        limit_val_batches=2)
    trainer.fit(module, make_preference_dm(preference_pairs(tmp_path), tokenizer_dir))
    assert calls and all(m is module.policy for m in calls), "every forward is the policy's"
    assert len(calls) == 12 + 2, "one forward per training and per validation batch"
    metrics = trainer.callback_metrics
    assert metrics["val/rewards/accuracies"].item() == 1.0 and metrics["val/rewards/margins"].item() > 0


def test_ipo_length_normalize_averages_policy_and_reference(tiny_gpt2, tokenizer_dir, tmp_path):
    from helpers import make_dpo, make_preference_dm, preference_pairs

    dm = make_preference_dm(preference_pairs(tmp_path), tokenizer_dir)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    summed = make_dpo(tiny_gpt2, tokenizer_dir, loss_type="ipo")._logprobs(batch)
    averaged = make_dpo(tiny_gpt2, tokenizer_dir, loss_type="ipo", ipo_length_normalize=True)._logprobs(batch)
    lengths = torch.cat([batch["chosen_mask"].sum(-1), batch["rejected_mask"].sum(-1)]).float()
    for s, a in zip(summed, averaged, strict=True):
        torch.testing.assert_close(a, s / lengths)


@pytest.mark.parametrize("kw, message", [
    (dict(loss_type="simpo", ref_name_or_path="some/reference"), "uses no reference model; remove ref_name_or_path"),
    (dict(loss_type="simpo", precompute_ref_logprobs=True), "remove precompute_ref_logprobs"),
    (dict(loss_type="sigmoid", ipo_length_normalize=True), "ipo_length_normalize applies to loss_type ipo only"),
    (dict(loss_type="hinge", label_smoothing=0.1), "sigmoid loss only"),
])
def test_module_bad_settings(tiny_gpt2, tokenizer_dir, kw, message):
    from helpers import make_dpo

    with pytest.raises(ConfigError, match=message):
        make_dpo(tiny_gpt2, tokenizer_dir, **kw)
