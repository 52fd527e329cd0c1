"""Each tiny transformers captioner directory loads offline through the Auto classes and generates."""

import os

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from ..tiny_hf_captioners import BUILDERS


def _images(n=2, size=64):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_tiny_captioner_loads_offline_and_generates(family, tmp_path):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    info = BUILDERS[family](tmp_path / family)
    assert {"directory", "prompt_or_instruction", "kind", "chat", "eos_token_ids"} <= set(info)
    directory = info["directory"]
    model = AutoModelForImageTextToText.from_pretrained(directory).eval()
    assert type(model).__name__ == info["model_class"]
    assert sorted(np.atleast_1d(model.generation_config.eos_token_id).tolist()) == sorted(info["eos_token_ids"])

    images = _images()
    if info["model_class"] == "VisionEncoderDecoderModel":  # no joint processor: AutoProcessor gives the tokenizer
        tokenizer = AutoTokenizer.from_pretrained(directory)
        inputs = AutoImageProcessor.from_pretrained(directory)(images=images, return_tensors="pt")
    else:
        processor = AutoProcessor.from_pretrained(directory)
        tokenizer = processor.tokenizer
        text = info["prompt_or_instruction"]
        if info["chat"]:
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
            text = processor.apply_chat_template(messages, add_generation_prompt=True)
        texts = None if text is None else [text] * len(images)
        inputs = processor(images=images, text=texts, return_tensors="pt")
    assert len(tokenizer) <= model.get_output_embeddings().out_features

    torch.manual_seed(0)
    sequences = model.generate(**inputs, max_new_tokens=4, do_sample=True)
    assert sequences.shape[0] == len(images)
    if info["kind"] == "encoder_decoder":
        assert (sequences[:, 0] == info["decoder_start_token_id"]).all()
        new = sequences[:, 1:]
    elif "input_ids" in inputs:  # decoder-only: the prompt comes back in front of the new tokens
        prompt = inputs["input_ids"]
        assert torch.equal(sequences[:, : prompt.shape[1]], prompt)
        if info["num_image_tokens"] is not None:  # Qwen2-VL's count depends on the image size
            assert (prompt == info["image_token_id"]).sum(1).tolist() == [info["num_image_tokens"]] * len(images)
        new = sequences[:, prompt.shape[1] :]
    else:  # GIT captioning from pixels alone starts at bos
        assert (sequences[:, 0] == info["bos_token_id"]).all()
        new = sequences[:, 1:]
    assert 1 <= new.shape[1] <= 4
    if info["image_token_id"] is not None:
        assert not (new == info["image_token_id"]).any()
