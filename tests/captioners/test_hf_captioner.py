"""``--captioner hf``: any transformers image-to-text model, on tiny random models of each family saved in the
real on-disk formats (model, processor, tokenizer) and loaded through the real loader, offline.

For each family: the sampler's per-token log-probabilities (``generate``'s raw logits) are the scoring pass's,
one training step changes the trainable parameters and nothing else, saving and reloading gives the same
captions, and LoRA trains the adapters alone.
"""

import os

import pytest
import torch

from egg.zoo.discriminative_captioner.captioners import base
from egg.zoo.discriminative_captioner.captioners.fused import BANNED
from egg.zoo.discriminative_captioner.captioners.hf_loading import load_hf_captioner
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..tiny_hf_captioners import hf_opts, pixels_of

FAMILIES = ["vit_gpt2", "git", "blip2", "florence2", "paligemma", "idefics3", "qwen2_vl"]  # tiny_hf_captioners.BUILDERS


def parameters(captioner):
    return {name: p.detach().clone() for name, p in captioner.named_parameters(remove_duplicate=False)}


@pytest.mark.parametrize("family", FAMILIES)
def test_the_sampler_draws_from_the_distribution_the_scoring_pass_scores(family, saved):
    captioner = load_hf_captioner(hf_opts(saved(family)))
    pixels = pixels_of(captioner)
    torch.manual_seed(0)
    out = captioner._generate(pixels, sample=True, output_logits=True, return_dict_in_generate=True)
    new = out.sequences[:, out.sequences.shape[1] - len(out.logits) :]  # [B, T] the generated tokens
    logits = torch.stack(out.logits, 1)  # [B, T, V] the model's raw logits
    if captioner.ban is not None:  # image placeholders are banned from captions: the draws saw them removed
        assert torch.isin(captioner.ban, torch.tensor([0.0, BANNED])).all() and (captioner.ban == BANNED).any()
        logits = logits + captioner.ban
    mask = base.caption_mask(new, captioner.stop_ids)
    sampled = (torch.log_softmax(logits.float(), -1).gather(-1, new[..., None])[..., 0] * mask).sum(1)
    scored, _ = captioner.score(pixels, base.pad_to(new, captioner.max_len, captioner.pad_id))
    torch.testing.assert_close(scored, sampled, atol=1e-4, rtol=1e-4)
    # a rollout's caption is the generated continuation: the prompt and the image tokens are never in it
    rollout = captioner.rollout(pixels)
    assert rollout.message.shape == (3, captioner.max_len)
    torch.testing.assert_close(rollout.log_prob, captioner.score(pixels, rollout.message)[0], atol=1e-4, rtol=1e-4)


def reinforce_step(captioner, pixels):
    optimizer = torch.optim.Adam(captioner.trainable_parameters(), lr=1e-2)
    rollout = captioner.rollout(pixels)
    (-(rollout.log_prob * torch.tensor([1.0, -1.0, 0.5])).mean()).backward()
    optimizer.step()


@pytest.mark.parametrize("family", FAMILIES)
def test_a_training_step_changes_the_trainable_parameters_only_and_the_saved_model_reloads(family, saved, tmp_path):
    info = saved(family)
    captioner = load_hf_captioner(hf_opts(info))
    trainable = {name for name, p in captioner.named_parameters(remove_duplicate=False) if p.requires_grad}
    assert trainable and len(trainable) < len(list(captioner.parameters()))  # the vision tower is frozen
    assert not any(part in name.split(".") for name in trainable for part in ("vision_tower", "vision_model"))
    before = parameters(captioner)
    pixels = pixels_of(captioner)
    torch.manual_seed(1)
    reinforce_step(captioner, pixels)
    after = parameters(captioner)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and changed <= trainable
    # checkpoints hold what trains
    assert set(captioner.state_dict()) <= trainable | {n for n, _ in captioner.named_buffers()}

    greedy = captioner.generate(pixels, num_beams=1)
    path = captioner.save_pretrained(str(tmp_path))
    reloaded = load_hf_captioner(hf_opts(info, hf_model=path))
    again = reloaded.generate(pixels_of(reloaded), num_beams=1)
    assert torch.equal(again.message, greedy.message) and again.text == greedy.text
    torch.testing.assert_close(reloaded.score(pixels, greedy.message)[0], captioner.score(pixels, greedy.message)[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_trains_the_adapters_alone_and_saves_them_for_peft(family, saved, tmp_path):
    info = saved(family)
    captioner = load_hf_captioner(hf_opts(info, lora_rank=2))
    trainable = {name for name, p in captioner.named_parameters(remove_duplicate=False) if p.requires_grad}
    assert trainable and all("lora_" in name for name in trainable)
    assert set(captioner.state_dict()) <= trainable | {n for n, _ in captioner.named_buffers()}
    pixels = pixels_of(captioner)
    base_before = {k: v for k, v in parameters(captioner).items() if k not in trainable}
    untrained = captioner.generate(pixels, num_beams=1)
    with captioner.adapters_off():  # LoRA's B starts at zero: the adapted model is the base model
        assert torch.equal(captioner.generate(pixels, num_beams=1).message, untrained.message)
    for _ in range(3):
        reinforce_step(captioner, pixels)
    after = parameters(captioner)
    assert all(torch.equal(value, after[name]) for name, value in base_before.items())  # the base is untouched
    assert any("lora_B" in name and after[name].abs().sum() > 0 for name in trainable)
    trained = captioner.generate(pixels, num_beams=1)

    path = captioner.save_pretrained(str(tmp_path))
    assert os.path.isfile(os.path.join(path, "adapter_config.json"))
    assert not os.path.exists(os.path.join(path, "model.safetensors"))  # the adapters alone
    reloaded = load_hf_captioner(hf_opts(info, hf_model=path))  # the base with the adapters merged
    assert torch.equal(reloaded.generate(pixels_of(reloaded), num_beams=1).message, trained.message)

    captioner.merge_lora = True
    merged = captioner.save_pretrained(str(tmp_path / "merged"))
    assert not os.path.exists(os.path.join(merged, "adapter_config.json"))
    reloaded = load_hf_captioner(hf_opts(info, hf_model=merged))
    assert torch.equal(reloaded.generate(pixels_of(reloaded), num_beams=1).message, trained.message)


def test_the_kl_reference_shares_the_frozen_base(saved):
    from egg.zoo.discriminative_captioner.archs import FrozenReference

    captioner = load_hf_captioner(hf_opts(saved("git"), lora_rank=2))
    reference = FrozenReference(captioner)
    own = {id(p) for p in captioner.parameters()}
    copied = [name for name, p in reference.captioner.named_parameters() if id(p) not in own]
    assert copied and all("lora_" in name for name in copied)  # only the adapters are copied
    pixels = pixels_of(captioner)
    tokens = captioner.rollout(pixels).message
    torch.testing.assert_close(reference(pixels, tokens), captioner.score(pixels, tokens)[0].detach())


def test_a_model_that_cannot_load_names_the_flag(tmp_path):
    with pytest.raises(UsageError, match="--hf_model"):
        load_hf_captioner(hf_opts({"directory": str(tmp_path / "absent")}))
    with pytest.raises(UsageError, match="--hf_model"):
        load_hf_captioner(hf_opts({"directory": "someone/no-such-captioner"}))


def test_gradient_checkpointing_recomputes_the_layers_and_gives_the_same_gradients(saved):
    def gradients(checkpointing):
        captioner = load_hf_captioner(hf_opts(saved("git"), gradient_checkpointing=checkpointing)).train()
        layer = captioner.model.git.encoder.layer[0]  # the text decoder's first layer
        # a module inside it: transformers checkpoints a layer's forward, leaving the layer's own hooks outside
        linear = next(module for module in layer.modules() if isinstance(module, torch.nn.Linear))
        runs = []
        linear.register_forward_hook(lambda *_: runs.append(1))
        pixels = pixels_of(captioner)
        tokens = torch.tensor([[5, 6, 7, 3], [8, 3, 0, 0], [9, 10, 11, 12]])
        log_prob = captioner.score(pixels, tokens)[0]
        in_the_forward = len(runs)
        log_prob.sum().backward()
        # checkpointed, the forward keeps none of the layer's activations and the backward runs it again
        assert len(runs) - in_the_forward == (1 if checkpointing else 0)
        return {name: p.grad for name, p in captioner.named_parameters() if p.requires_grad}

    plain, checkpointed = gradients(False), gradients(True)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, msg=name)


def test_evaluate_and_caption_take_transformers_directories_and_hub_ids(saved, tmp_path):
    from egg.zoo.discriminative_captioner.evaluation.models import parse_model

    assert parse_model("hf:Salesforce/blip2-opt-2.7b").kind == "hf"
    assert parse_model("hf:Salesforce/blip2-opt-2.7b").path == "Salesforce/blip2-opt-2.7b"
    spec = parse_model(f"mine={saved('git')['directory']}")
    assert (spec.label, spec.kind) == ("mine", "hf")
    run = tmp_path / "run"
    captioner = load_hf_captioner(hf_opts(saved("vit_gpt2"), lora_rank=2))
    captioner.save_pretrained(str(run))
    (run / "opts.json").write_text("{}")
    spec = parse_model(str(run))
    assert (spec.kind, spec.path) == ("hf", str(run / "hf"))  # the run's adapters
    with pytest.raises(UsageError, match="no config.json or adapter_config.json"):
        parse_model(str(tmp_path))


@pytest.mark.parametrize("lora_rank", [0, 2])
def test_a_checkpoints_state_holds_what_trains_and_restores_it_strictly(lora_rank, saved):
    info = saved("git")
    trained = load_hf_captioner(hf_opts(info, lora_rank=lora_rank))
    pixels = pixels_of(trained)
    torch.manual_seed(2)
    reinforce_step(trained, pixels)
    state = trained.state_dict()
    fresh = load_hf_captioner(hf_opts(info, lora_rank=lora_rank))
    fresh.load_state_dict(state, strict=True)  # the frozen base comes from --hf_model, the rest from the state
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), state.values()))
    assert torch.equal(fresh.generate(pixels, num_beams=1).message, trained.generate(pixels, num_beams=1).message)
    with pytest.raises(RuntimeError, match="Missing key"):
        fresh.load_state_dict({key: value for key, value in list(state.items())[1:]}, strict=True)


def test_a_bf16_checkpoint_trains_in_fp32(saved, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(saved("git")["directory"])
    model.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    AutoProcessor.from_pretrained(saved("git")["directory"]).save_pretrained(tmp_path / "bf16")
    captioner = load_hf_captioner(hf_opts({"directory": str(tmp_path / "bf16")}))
    assert {p.dtype for p in captioner.parameters()} == {torch.float32}  # Adam's 1e-7 steps would vanish in bf16


@pytest.mark.parametrize("family", ["git", "qwen2_vl"])
def test_k_rollouts_per_image_share_the_image_and_are_scored_as_sampled(family, saved):
    captioner = load_hf_captioner(hf_opts(saved(family)))
    pixels = pixels_of(captioner)
    torch.manual_seed(3)
    rollout = captioner.rollout(pixels, per_image=2)  # image i's rollouts at rows 2i, 2i + 1
    assert rollout.message.shape == (6, captioner.max_len)
    rows = pixels.repeat_interleave(2, dim=0)
    torch.testing.assert_close(rollout.log_prob, captioner.score(rows, rollout.message)[0], atol=1e-4, rtol=1e-4)
