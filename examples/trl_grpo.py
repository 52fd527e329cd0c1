"""DiscriTune's reward in TRL's GRPOTrainer: finetune a chat vision-language model on the built-in world.

TRL's GRPO trains decoder-only models that read the prompt and the completion as one sequence, which the world's
own transformers captioner (a ViT + GPT-2 encoder-decoder) is not.  So the example builds a tiny Qwen2-VL from a
config, with a tokenizer trained on the world's captions, warm-starts it by maximum likelihood on the training
images' alt-text (as the world's captioners are pretrained), then runs GRPO with ``DiscriminativeReward`` and the
world's own retriever.  It reports P@1 on the test images before and after GRPO (greedy captions, each scored
against 100 candidates, the target strictly highest) in ``summary.json``.  Offline, on the CPU, in minutes::

    pip install ".[trl]"
    python examples/trl_grpo.py --output_dir runs/trl_grpo

``--policy`` and ``--retriever`` take other models (a chat VLM and a retriever as ``--clip_model`` names it); the
settings of a real run (Accelerate, DeepSpeed ZeRO-3 or FSDP, vLLM, several nodes) are in docs/trl.md.
"""

import argparse
import json
import os
import time

import numpy as np
import torch

INSTRUCTION = "Describe the image."
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
            "<|video_pad|>"]  # fmt: skip
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_policy(directory, sentences, seed=0, width=64, layers=2, merges=400):
    """A tiny Qwen2-VL chat model (random weights) and its processor, saved in ``directory``: a byte-level BPE
    tokenizer trained on ``sentences`` (so a caption is a few tokens), images of 32 x 32 pixels as 4 tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        Qwen2Tokenizer,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=len(SPECIALS) + 256 + merges, min_frequency=1,
                                  special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    bpe.train_from_iterator(list(sentences) + [INSTRUCTION, "user\nassistant\n"], trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(vocab=state["vocab"], merges=merges, unk_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", extra_special_tokens=SPECIALS[1:],
                               image_token="<|image_pad|>", video_token="<|video_pad|>",
                               vision_bos_token="<|vision_start|>", vision_eos_token="<|vision_end|>")  # fmt: skip
    pixels = dict(patch_size=8, merge_size=2, temporal_patch_size=2,
                  size={"shortest_edge": 32 * 32, "longest_edge": 32 * 32})  # fmt: skip
    processor = Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(**pixels),
                                 video_processor=Qwen2VLVideoProcessor(**pixels), tokenizer=tokenizer,
                                 chat_template=CHAT_TEMPLATE)  # fmt: skip
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIALS}
    rotary = width // 4 // 2  # M-RoPE splits half of each head's dimensions among time, height and width
    sections = [rotary - 2 * (rotary // 3), rotary // 3, rotary // 3]
    pad, eos = ids["<|endoftext|>"], ids["<|im_end|>"]
    config = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256, bos_token_id=pad, eos_token_id=eos, pad_token_id=pad,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": sections}),
        vision_config=dict(depth=2, embed_dim=width, hidden_size=width, num_heads=4, mlp_ratio=2, patch_size=8,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config)
    for c in (model.config, model.config.text_config, model.generation_config):
        c.eos_token_id, c.pad_token_id, c.bos_token_id = eos, pad, pad
    # a sampled placeholder could not be read back with the image's features
    model.generation_config.suppress_tokens = sorted(ids[t] for t in SPECIALS[3:])
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def conversation(image, caption=None):
    """A user turn with the image and the instruction, and the assistant's caption when given."""
    turns = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": INSTRUCTION}]}]
    if caption is not None:
        turns.append({"role": "assistant", "content": [{"type": "text", "text": caption}]})
    return turns


def warm_start(model, processor, images, captions, steps, batch=32, lr=3e-3, seed=0):
    """Maximum likelihood of each image's caption (the assistant's tokens and its end of turn) for ``steps``."""
    if steps <= 0:
        return []
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + np.cos(np.pi * step / steps)))
    processor.tokenizer.padding_side = "right"
    model.train()
    losses = []
    for _ in range(steps):
        rows = rng.choice(len(images), size=min(batch, len(images)), replace=False)
        texts = [processor.apply_chat_template(conversation(None, captions[i])) for i in rows]
        prompt = processor.apply_chat_template(conversation(None), add_generation_prompt=True)
        inputs = processor(text=texts, images=[[images[i]] for i in rows], padding=True, return_tensors="pt")
        prompt_length = len(processor(text=[prompt], images=[[images[rows[0]]]])["input_ids"][0])  # same for all
        labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)  # [B, T]
        labels[:, :prompt_length] = -100  # the caption alone is learnt
        loss = model(**inputs, labels=labels).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def greedy_captions(model, processor, images, max_new_tokens=12, batch=100):
    """Each image's greedy caption."""
    processor.tokenizer.padding_side = "left"
    captions = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        inputs = processor.apply_chat_template([conversation(image) for image in chunk], add_generation_prompt=True,
                                               tokenize=True, return_dict=True, return_tensors="pt",
                                               processor_kwargs={"padding": True})  # fmt: skip
        inputs = {key: value.to(model.device) for key, value in inputs.items()}
        output = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
        new = output[:, inputs["input_ids"].shape[1] :]  # [B, T]
        captions += [text.strip() for text in processor.batch_decode(new, skip_special_tokens=True)]
    return captions


def p_at_1(scorer, images, captions, candidates=100):
    """P@1 of ``captions``: each against its set of ``candidates`` consecutive images (an accuracy reward)."""
    hits = []
    for start in range(0, len(images) - candidates + 1, candidates):
        rows = range(start, start + candidates)
        _, hit = scorer.score([captions[i] for i in rows], [images[i] for i in rows], torch.arange(candidates))
        hits.append(hit[0])
    return torch.cat(hits).mean().item()


def grpo(policy, processor, reward, images, args):
    """TRL's GRPO over the training images with ``reward``; returns the trainer (its model trained)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    prompts = [[{"role": "user", "content": INSTRUCTION}] for _ in images]
    dataset = Dataset.from_dict({"prompt": prompts, "image": list(images)})
    config = GRPOConfig(
        output_dir=os.path.join(args.output_dir, "grpo"), max_steps=args.grpo_steps, learning_rate=args.lr,
        per_device_train_batch_size=args.images_per_step * args.num_generations, num_generations=args.num_generations,
        max_completion_length=args.max_completion_length, temperature=1.0, beta=0.0, logging_steps=1,
        save_strategy="no", report_to="none", seed=args.seed, use_cpu=not torch.cuda.is_available(), bf16=False,
        gradient_checkpointing=False, disable_tqdm=True,
    )  # fmt: skip
    trainer = GRPOTrainer(model=policy, processing_class=processor, reward_funcs=reward, args=config,
                          train_dataset=dataset)  # fmt: skip
    trainer.train()
    return trainer


def parser():
    p = argparse.ArgumentParser(description="GRPO with DiscriTune's reward on the built-in world (TRL)")
    p.add_argument("--output_dir", required=True, help="where the models and summary.json go")
    p.add_argument("--synthetic_world", default="tiny", choices=["tiny", "default"], help="the world's preset")
    p.add_argument("--cache_dir", default=None, help="the world's cache (default: the user cache)")
    p.add_argument("--policy", default=None, help="a chat VLM directory or hub id (default: a tiny Qwen2-VL)")
    p.add_argument("--retriever", default=None, help="the reward's retriever (default: the world's own CLIP)")
    p.add_argument("--sft_steps", type=int, default=1500, help="maximum-likelihood warm-start steps (default 1500)")
    p.add_argument("--grpo_steps", type=int, default=60, help="GRPO steps (default 60)")
    p.add_argument("--images_per_step", type=int, default=16, help="images per GRPO step (default 16)")
    p.add_argument("--num_generations", type=int, default=4, help="completions per image (default 4)")
    p.add_argument("--max_completion_length", type=int, default=12, help="tokens per completion (default 12)")
    p.add_argument("--lr", type=float, default=1e-3, help="GRPO learning rate (default 1e-3)")
    p.add_argument("--eval_images", type=int, default=500, help="test images P@1 is measured on (default 500)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(params=None):
    args = parser().parse_args(params)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from egg.zoo.discriminative_captioner.rewards import DiscriminativeReward
    from egg.zoo.discriminative_captioner.synthetic import load_world

    started = time.time()
    torch.manual_seed(args.seed)
    world = load_world(args.cache_dir, args.synthetic_world, progress=False)
    train, test = world.split("train"), world.split("test")
    train_images = [train.images[i] for i in range(len(train.images))]
    test_images = [test.images[i] for i in range(min(args.eval_images, len(test.images)))]
    alt_text = [references[0] for references in train.references]
    retriever = args.retriever or os.path.join(world.directory, "retriever.pt")
    words = alt_text + list(world.arrays["train_descriptive"])  # the tokenizer's corpus: every word of the world
    policy = args.policy or build_policy(os.path.join(args.output_dir, "policy_init"), words, seed=args.seed)
    model = AutoModelForImageTextToText.from_pretrained(policy)
    processor = AutoProcessor.from_pretrained(policy)
    losses = warm_start(model, processor, train_images, alt_text, args.sft_steps, seed=args.seed)
    accuracy = DiscriminativeReward(retriever, reward="accuracy")
    before = greedy_captions(model, processor, test_images, args.max_completion_length)
    summary = {"p_at_1_before": p_at_1(accuracy, test_images, before), "sft_final_loss": np.mean(losses[-20:])
               if losses else None, "captions_before": before[:5]}  # fmt: skip
    trainer = grpo(model, processor, DiscriminativeReward(retriever), train_images, args)
    after = greedy_captions(trainer.model, processor, test_images, args.max_completion_length)
    history = [entry for entry in trainer.state.log_history if "reward" in entry]
    summary.update(p_at_1_after=p_at_1(accuracy, test_images, after), captions_after=after[:5],
                   train_reward_first=history[0]["reward"] if history else None,
                   train_reward_last=history[-1]["reward"] if history else None,
                   train_p_at_1=[entry.get("discriminative_logprob/p_at_1") for entry in history],
                   seconds=round(time.time() - started, 1), options=vars(args))  # fmt: skip
    trainer.save_model(os.path.join(args.output_dir, "policy"))
    with open(os.path.join(args.output_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(json.dumps({key: summary[key] for key in ("p_at_1_before", "p_at_1_after", "seconds")}))
    return summary


if __name__ == "__main__":
    main()
