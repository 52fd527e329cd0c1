"""TRL's GRPOTrainer with the discriminative reward, on the CPU: one step moves a tiny chat VLM along the
advantages of the reward's values, and the example runs on the built-in world."""

import json
import os

import numpy as np
import pytest
import torch

from egg.zoo.discriminative_captioner.rewards import DiscriminativeReward

from ..paths import load_script
from ..tiny_models import save_openai_clip

trl = pytest.importorskip("trl", reason="TRL is an optional extra: pip install '.[trl]'")
example = load_script("examples", "trl_grpo.py")

SENTENCES = ["a red circle on a dark background", "a small blue square", "an illustration of a green triangle",
             "a large cyan diamond left of a small pink cross"]  # fmt: skip
IMAGES, GENERATIONS = 4, 4


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return example.build_policy(str(tmp_path_factory.mktemp("policy")), SENTENCES * 5, width=32, layers=1)


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("retriever") / "clip.pt")
    save_openai_clip(path)
    return path


def grpo_step(policy, reward, output_dir):
    """One GRPO update of ``policy`` over 4 images x 4 completions; the advantages are the rewards minus their
    image's mean (no scaling, no KL), the loss TRL's default (token-level, "dapo")."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(IMAGES)]
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": example.INSTRUCTION}]] * IMAGES,
                                 "image": [example_image(image) for image in images]})  # fmt: skip
    config = GRPOConfig(output_dir=output_dir, max_steps=1, learning_rate=1e-3, per_device_train_batch_size=16,
                        num_generations=GENERATIONS, max_completion_length=6, beta=0.0, scale_rewards="none",
                        loss_type="dapo", use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                        gradient_checkpointing=False, disable_tqdm=True, seed=0)  # fmt: skip
    trainer = GRPOTrainer(model=policy, reward_funcs=reward, args=config, train_dataset=dataset)
    trainer.train()
    return trainer


def example_image(array):
    from PIL import Image

    return Image.fromarray(array)


def completion_log_probs(model, processor, prompts, completion_ids):
    """Each completion's summed log-probability given its prompt (the image and the instruction), as TRL scores it:
    the chat template's generation prompt, then the completion's tokens (its end of turn included)."""
    totals = []
    for prompt, ids in zip(prompts, completion_ids):
        inputs = processor.apply_chat_template([prompt], add_generation_prompt=True, tokenize=True, return_dict=True,
                                               return_tensors="pt")  # fmt: skip
        prompt_length = inputs["input_ids"].shape[1]
        inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([ids])], dim=1)  # [1, P + C]
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        if "mm_token_type_ids" in inputs:  # which tokens are the image's: none of the completion's
            image_tokens = inputs["mm_token_type_ids"]
            inputs["mm_token_type_ids"] = torch.cat([image_tokens, image_tokens.new_zeros(1, len(ids))], dim=1)
        with torch.no_grad():
            logits = model(**inputs).logits[0, prompt_length - 1 : -1].float()  # [C, V]
        totals.append(torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids).view(-1, 1)).sum().item())
    return torch.tensor(totals, dtype=torch.float64)


@pytest.mark.parametrize("sign", [1, -1])
def test_a_grpo_step_moves_the_policy_along_the_rewards_advantages(policy, clip_file, tmp_path, sign):
    """To first order an update raises sum_i A_i log p(completion_i): with the reward negated, the same completions'
    log-probabilities move the other way, so the direction comes from the reward's values."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    scorer, calls = DiscriminativeReward(clip_file), []

    def reward(prompts, completions, completion_ids, **columns):
        rewards = [sign * value for value in scorer(prompts, completions, completion_ids, **columns)]
        calls.append((prompts, completion_ids, rewards, scorer.last["candidates"]))
        return rewards

    trainer = grpo_step(policy, reward, str(tmp_path))
    assert len(calls) == 1
    prompts, completion_ids, rewards, candidates = calls[0]
    assert candidates == IMAGES  # each image's 4 completions share one target among the 4 images
    rewards = torch.tensor(rewards, dtype=torch.float64).view(IMAGES, GENERATIONS)
    advantage = (rewards - rewards.mean(dim=1, keepdim=True)).view(-1)  # [16]
    assert advantage.abs().sum() > 0
    processor = AutoProcessor.from_pretrained(policy)
    before = completion_log_probs(AutoModelForImageTextToText.from_pretrained(policy), processor, prompts,
                                  completion_ids)  # fmt: skip
    after = completion_log_probs(trainer.model.eval(), processor, prompts, completion_ids)
    assert (advantage * (after - before)).sum() > 0
    assert "discriminative_logprob/p_at_1" in trainer.state.log_history[0]


def test_rloo_takes_the_reward_too(policy, clip_file, tmp_path):
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    rng = np.random.default_rng(1)
    images = [example_image(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(IMAGES)]
    dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": example.INSTRUCTION}]] * IMAGES,
                                 "image": images})  # fmt: skip
    config = RLOOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=8, num_generations=2,
                        max_completion_length=4, use_cpu=True, bf16=False, report_to="none", save_strategy="no",
                        gradient_checkpointing=False, disable_tqdm=True, seed=0)  # fmt: skip
    scorer = DiscriminativeReward(clip_file, reward="accuracy")
    trainer = RLOOTrainer(model=policy, reward_funcs=scorer, args=config, train_dataset=dataset)
    trainer.train()
    assert scorer.last["candidates"] == 4  # 8 completions, 2 per image
    logged = trainer.state.log_history[0]
    assert logged["rewards/discriminative_accuracy/mean"] == pytest.approx(logged["discriminative_accuracy/p_at_1"])


def test_the_example_runs_on_the_built_in_world(world_cache, tmp_path):
    output = str(tmp_path / "run")
    summary = example.main(["--output_dir", output, "--cache_dir", world_cache, "--sft_steps", "3",
                            "--grpo_steps", "2", "--images_per_step", "4", "--num_generations", "2",
                            "--max_completion_length", "4", "--eval_images", "100"])  # fmt: skip
    with open(os.path.join(output, "summary.json")) as f:
        assert json.load(f)["p_at_1_before"] == summary["p_at_1_before"]
    for key in ("p_at_1_before", "p_at_1_after"):
        assert 0.0 <= summary[key] <= 1.0 and summary[key] * 100 == pytest.approx(round(summary[key] * 100))
    assert len(summary["train_p_at_1"]) == 2 and all(value is not None for value in summary["train_p_at_1"])
    assert os.path.isfile(os.path.join(output, "policy", "config.json"))
