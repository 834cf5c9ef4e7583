"""MaskGIT prior: config, transformer, mask schedule / scheduler, and a memorisation check."""

import math

import pytest
import torch
from _helpers_maskgit import tiny_pipeline, tiny_prior
from transformers import AutoConfig, AutoModel

from coda_hf.maskgit import MASK_SCHEDULES, MaskGitConfig, MaskGitScheduler, MaskGitTransformer
from coda_hf.training.maskgit_trainer import drop_class_labels, maskgit_loss

LEVELS = ((1, 1), (2, 2), (4, 4))  # 21 tokens


# ----------------------------------------------------------------------------------------- config / model
def test_config_layout_and_validation():
    cfg = MaskGitConfig(
        level_shapes=[[1, 1], [2, 3]], codebook_size=16, num_classes=4, hidden_size=32, num_attention_heads=4
    )
    assert cfg.num_tokens == 7 and cfg.mask_token_id == 16 and cfg.null_class_id == 4
    assert cfg.intermediate_size == 128
    with pytest.raises(ValueError, match="level_shapes"):
        MaskGitConfig(level_shapes=[[0, 2]])
    odd = MaskGitConfig(hidden_size=30, num_attention_heads=4)  # the config defers this check to the model
    with pytest.raises(ValueError, match="divisible"):
        MaskGitTransformer(odd)
    with pytest.raises(ValueError, match="codebook_size"):
        MaskGitConfig(codebook_size=1)


def test_config_options_reach_modules():
    model = tiny_prior(
        LEVELS, intermediate_size=24, layer_norm_eps=1e-3, initializer_range=0.5, num_hidden_layers=3
    )
    assert len(model.blocks) == 3 and model.blocks[0].mlp[0].out_features == 24
    assert model.final_norm.eps == 1e-3 and model.blocks[0].norm1.eps == 1e-3
    assert 0.3 < model.token_embedding.weight.std() < 0.6  # truncated normal (+-2) of std 0.5
    assert tiny_prior(LEVELS, initializer_range=0.02).token_embedding.weight.std() < 0.05


def test_transformer_output_shapes_and_loss():
    model = tiny_prior(LEVELS)
    ids = torch.randint(0, 17, (3, 21))
    out = model(input_ids=ids, class_labels=torch.tensor([0, 3, 4]))
    assert out.logits.shape == (3, 21, 16) and out.loss is None
    labels = torch.full_like(ids, -100)
    labels[:, :5] = 2
    out = model(input_ids=ids, class_labels=torch.tensor([0, 1, 2]), labels=labels)
    ref = torch.nn.functional.cross_entropy(out.logits[:, :5].reshape(-1, 16), labels[:, :5].reshape(-1))
    torch.testing.assert_close(out.loss, ref)


def test_transformer_rejects_bad_inputs():
    model = tiny_prior(LEVELS)
    with pytest.raises(ValueError, match=r"input_ids must be \(B, 21\)"):
        model(input_ids=torch.zeros(2, 20, dtype=torch.long), class_labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids must lie in \[0, 16\]"):
        model(input_ids=torch.full((2, 21), 17), class_labels=torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 4\]"):
        model(input_ids=torch.zeros(2, 21, dtype=torch.long), class_labels=torch.tensor([0, 5]))


def test_positional_embeddings_are_per_level():
    model = tiny_prior(LEVELS)
    assert model.position_embedding.shape == (21, 32)
    assert model.level_embedding.num_embeddings == 3
    assert model.level_ids().tolist() == [0] + [1] * 4 + [2] * 16
    # Level embedding row l is added exactly at level l's positions.
    with torch.no_grad():
        model.level_embedding.weight.zero_()
        model.position_embedding.zero_()
        model.level_embedding.weight[1] = 1.0
    pos = model.position_embedding + model.level_embedding(model.level_ids())
    assert pos[1:5].eq(1).all() and pos[0].eq(0).all() and pos[5:].eq(0).all()


def test_auto_classes_and_save_load(tmp_path):
    model = tiny_prior(LEVELS)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(tmp_path).model_type == "coda_maskgit"
    loaded = AutoModel.from_pretrained(tmp_path)
    assert isinstance(loaded, MaskGitTransformer)
    assert loaded.config.level_shapes == [[1, 1], [2, 2], [4, 4]]
    ids = torch.randint(0, 17, (2, 21))
    labels = torch.tensor([1, 4])
    torch.testing.assert_close(loaded.eval()(ids, labels).logits, model(ids, labels).logits)


def test_dropout_config_is_used():
    model = tiny_prior(LEVELS, hidden_dropout_prob=0.5, attention_dropout_prob=0.5).train()
    ids, labels = torch.randint(0, 17, (2, 21)), torch.tensor([0, 1])
    assert not torch.equal(model(ids, labels).logits, model(ids, labels).logits)
    model.eval()
    assert torch.equal(model(ids, labels).logits, model(ids, labels).logits)


# ----------------------------------------------------------------------------------------- schedule
@pytest.mark.parametrize("schedule", MASK_SCHEDULES)
def test_mask_schedule_endpoints_and_monotonic(schedule):
    sched = MaskGitScheduler(mask_schedule=schedule)
    r = torch.linspace(0, 1, 101)
    g = sched.mask_ratio(r)
    assert float(g[0]) == 1.0 and float(g[-1]) == 0.0
    assert (g[1:] <= g[:-1]).all() and (g[1:-1] < g[:-2]).all()  # strictly decreasing


def test_mask_schedule_values():
    expected = {"cosine": math.cos(math.pi / 4), "linear": 0.5, "square": 0.75, "arccos": 2 / 3}
    for name, value in expected.items():
        assert float(MaskGitScheduler(mask_schedule=name).mask_ratio(0.5)) == pytest.approx(value)
    with pytest.raises(ValueError, match="mask_schedule"):
        MaskGitScheduler(mask_schedule="exp")


@pytest.mark.parametrize("schedule", MASK_SCHEDULES)
def test_mask_tokens_follows_schedule(schedule):
    sched = MaskGitScheduler(mask_schedule=schedule)
    ids = torch.randint(0, 16, (4, 100))
    r = torch.tensor([0.0, 0.3, 0.7, 0.999])
    out = sched.mask_tokens(ids, mask_token_id=16, timesteps=r, generator=torch.Generator().manual_seed(0))
    expected = torch.ceil(sched.mask_ratio(r) * 100).long().clamp(1, 100)
    assert out.mask.sum(1).tolist() == expected.tolist()
    assert (out.masked_ids[out.mask] == 16).all() and torch.equal(out.masked_ids[~out.mask], ids[~out.mask])
    again = sched.mask_tokens(ids, 16, timesteps=r, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.mask, out.mask)


def test_mask_tokens_random_timesteps_cover_range():
    out = MaskGitScheduler().mask_tokens(torch.zeros(512, 50, dtype=torch.long), 16)
    assert out.timesteps.min() >= 0 and out.timesteps.max() < 1
    ratios = out.mask.float().mean(1)
    assert ratios.min() < 0.1 and ratios.max() > 0.9 and (out.mask.sum(1) >= 1).all()


@pytest.mark.parametrize("steps", [1, 4, 8, 30])
def test_step_unmasks_to_completion_following_schedule(steps):
    sched = MaskGitScheduler()
    sched.set_timesteps(steps)
    n, k = 21, 16
    sample = torch.full((3, n), k)
    gen = torch.Generator().manual_seed(0)
    for i in sched.timesteps.tolist():
        before = (sample == k).sum(1)
        logits = torch.randn(3, n, k, generator=gen)
        out = sched.step(logits, i, sample, generator=gen)
        kept = sample != k
        assert torch.equal(out.prev_sample[kept], sample[kept])  # decided tokens never change
        sample = out.prev_sample
        after = (sample == k).sum(1)
        assert (after < before).all() or (before == 0).all()
        expected = min(sched.num_masked_after(i, n), int(before[0]) - 1)
        assert after.tolist() == [max(expected, 0)] * 3
    assert (sample < k).all()


def test_step_keeps_most_confident_without_noise():
    sched = MaskGitScheduler(choice_temperature=0.0)
    sched.set_timesteps(2)  # after step 0: floor(cos(pi/4) * 4) = 2 tokens stay masked
    logits = torch.full((1, 4, 3), -20.0)
    logits[0, 0, 1] = logits[0, 2, 2] = 20.0  # confident at positions 0 and 2, flat at 1 and 3
    logits[0, 1] = logits[0, 3] = 0.0
    out = sched.step(logits, 0, torch.full((1, 4), 3), generator=torch.Generator().manual_seed(0))
    assert out.prev_sample.tolist() == [[1, 3, 2, 3]]
    prev, pred = sched.step(
        logits, 0, torch.full((1, 4), 3), generator=torch.Generator().manual_seed(0), return_dict=False
    )
    assert torch.equal(prev, out.prev_sample) and torch.equal(pred, out.pred_original_sample)
    assert (pred < 3).all() and pred[0, 0] == 1 and pred[0, 2] == 2


def test_step_samples_codes_with_softmax_probabilities():
    """The sampled code of a masked token follows softmax(logits); a code of probability 0 never comes."""
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.0])
    logits = probs.log().expand(20000, 1, 5).clone()  # 20,000 one-token samples; code 4 has logit -inf
    sched = MaskGitScheduler()
    sched.set_timesteps(1)
    out = sched.step(logits, 0, torch.full((20000, 1), 5), generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(out.prev_sample.flatten(), minlength=5).double() / 20000
    assert freq[4] == 0
    assert torch.allclose(freq, probs.double(), atol=0.015), freq  # 4.3 std of a binomial at p = 0.4
    again = sched.step(logits[:3], 0, torch.full((3, 1), 5), generator=[torch.Generator().manual_seed(i) for i in range(3)])
    alone = [sched.step(logits[:1], 0, torch.full((1, 1), 5), generator=[torch.Generator().manual_seed(i)]) for i in range(3)]
    assert again.prev_sample.flatten().tolist() == [int(a.prev_sample) for a in alone]  # one generator per sample


def test_choice_temperature_adds_randomness():
    logits = torch.randn(1, 64, 8, generator=torch.Generator().manual_seed(0))
    # Peaked logits: the sampled code is the argmax whatever the seed, so only the Gumbel choice noise varies.
    peaked = logits + 50.0 * torch.nn.functional.one_hot(logits.argmax(-1), 8)
    for temperature, same in ((0.0, True), (100.0, False)):
        sched = MaskGitScheduler(choice_temperature=temperature)
        sched.set_timesteps(4)
        masks = [
            sched.step(
                peaked, 0, torch.full((1, 64), 8), generator=torch.Generator().manual_seed(s)
            ).prev_sample.eq(8)
            for s in range(2)
        ]
        assert torch.equal(*masks) is same


def test_step_errors():
    sched = MaskGitScheduler()
    with pytest.raises(ValueError, match="set_timesteps"):
        sched.step(torch.zeros(1, 4, 3), 0, torch.full((1, 4), 3))
    sched.set_timesteps(2)
    with pytest.raises(ValueError, match="step_index"):
        sched.step(torch.zeros(1, 4, 3), 2, torch.full((1, 4), 3))
    with pytest.raises(ValueError, match="num_inference_steps"):
        sched.set_timesteps(0)
    with pytest.raises(ValueError, match="choice_temperature"):
        MaskGitScheduler(choice_temperature=-1.0)


def test_scheduler_config_round_trip(tmp_path):
    MaskGitScheduler(mask_schedule="arccos", choice_temperature=2.0).save_pretrained(tmp_path)
    loaded = MaskGitScheduler.from_pretrained(tmp_path)
    assert loaded.config.mask_schedule == "arccos" and loaded.config.choice_temperature == 2.0


# ----------------------------------------------------------------------------------------- training objective
def test_drop_class_labels():
    labels = torch.zeros(1000, dtype=torch.long)
    dropped = drop_class_labels(labels, 0.3, null_class_id=4, generator=torch.Generator().manual_seed(0))
    assert set(dropped.unique().tolist()) == {0, 4} and 0.25 < dropped.eq(4).float().mean() < 0.35
    assert torch.equal(drop_class_labels(labels, 0.0, 4), labels)
    with pytest.raises(ValueError, match="class_drop_prob"):
        drop_class_labels(labels, 1.5, 4)


def test_maskgit_loss_counts_only_masked_positions():
    model = tiny_prior(LEVELS)
    ids = torch.randint(0, 16, (4, 21))
    out = maskgit_loss(
        model,
        MaskGitScheduler(),
        ids,
        torch.arange(4),
        class_drop_prob=0.0,
        generator=torch.Generator().manual_seed(0),
    )
    masking = MaskGitScheduler().mask_tokens(ids, 16, generator=torch.Generator().manual_seed(0))
    logits = model(masking.masked_ids, torch.arange(4)).logits
    ref = torch.nn.functional.cross_entropy(logits[masking.mask], ids[masking.mask])
    torch.testing.assert_close(out.loss, ref)
    assert 0 < float(out.mask_ratio) <= 1 and 0 <= float(out.masked_accuracy) <= 1


def test_memorisation_class_conditional_generation():
    """A tiny prior trained on one fixed token map per class regenerates them at 8 steps (>= 90% tokens)."""
    pipe = tiny_pipeline(hidden_size=64, num_hidden_layers=2)
    model, sched = pipe.transformer, pipe.scheduler
    gen = torch.Generator().manual_seed(0)
    maps = torch.randint(0, 16, (4, 21), generator=gen)  # class c -> maps[c]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(200):
        labels = torch.randint(0, 4, (16,), generator=gen)
        loss = maskgit_loss(model, sched, maps[labels], labels, class_drop_prob=0.2, generator=gen).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    labels = torch.tensor([0, 1, 2, 3] * 4)
    for guidance_scale in (1.0, 2.0):
        tokens = pipe(
            class_labels=labels.tolist(),
            num_inference_steps=8,
            guidance_scale=guidance_scale,
            generator=torch.Generator().manual_seed(1),
            output_type="latent",
        ).tokens
        accuracy = (tokens == maps[labels]).float().mean().item()
        print(f"memorisation token accuracy (guidance {guidance_scale}): {accuracy:.3f}")
        assert accuracy >= 0.9
    # An untrained prior does not "memorise" by chance.
    fresh = tiny_pipeline(hidden_size=64, num_hidden_layers=2)
    tokens = fresh(
        class_labels=labels.tolist(), generator=torch.Generator().manual_seed(1), output_type="latent"
    ).tokens
    assert (tokens == maps[labels]).float().mean().item() < 0.5
