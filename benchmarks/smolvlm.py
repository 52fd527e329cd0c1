"""SmolVLM-256M (HuggingFaceTB/SmolVLM-256M-Instruct) with random weights, built from its published configuration.

Idefics3: a SigLIP base-patch16-512 vision tower (12 layers, width 768, 1,024 patches of a 512-pixel image), a
pixel-shuffle connector (scale factor 4: 64 image tokens) and SmolLM2-135M (Llama: 30 layers, width 576, 9 heads,
3 key-value heads, a vocabulary of 49,280, an output head of its own).  The tokenizer is a word-level one of the
same size with SmolVLM's special tokens (no downloads here): the benchmark needs the shapes, not the words.  One
512-pixel frame per image (image splitting off), the chat prompt "Describe the image.", captions of
``max_len`` tokens.
"""

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3ImageProcessor,
    Idefics3Processor,
    PreTrainedTokenizerFast,
)

from egg.zoo.discriminative_captioner.captioners.hf import HFCaptioner

VOCAB_SIZE = 49280
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>", "<global-img>",
            "<end_of_utterance>"]  # fmt: skip
IMAGE_SIZE, PATCH_SIZE, SCALE_FACTOR = 512, 16, 4
CHAT_TEMPLATE = (  # SmolVLM's
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

TEXT = dict(model_type="llama", vocab_size=VOCAB_SIZE, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5,
            rope_theta=100000.0)  # fmt: skip
VISION = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)  # fmt: skip


def tokenizer():
    words = {token: i for i, token in enumerate(SPECIALS)}
    words.update({f"w{i}": i for i in range(len(SPECIALS), VOCAB_SIZE)})
    backend = Tokenizer(models.WordLevel(vocab=words, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|im_start|>", eos_token="<end_of_utterance>",
                                   unk_token="<|endoftext|>", pad_token="<|endoftext|>",
                                   extra_special_tokens=SPECIALS[3:6])  # fmt: skip


def build_smolvlm(max_len, lora_rank=0):
    """The captioner (``HFCaptioner``) over a random-weight SmolVLM-256M; ``lora_rank`` > 0 trains adapters."""
    text_tokenizer = tokenizer()
    image_seq_len = (IMAGE_SIZE // PATCH_SIZE // SCALE_FACTOR) ** 2  # 64
    image_processor = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": IMAGE_SIZE},
                                             max_image_size={"longest_edge": IMAGE_SIZE})  # fmt: skip
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=text_tokenizer,
                                  image_seq_len=image_seq_len, chat_template=CHAT_TEMPLATE)  # fmt: skip
    eos, pad = text_tokenizer.eos_token_id, text_tokenizer.pad_token_id
    config = Idefics3Config(text_config=dict(TEXT, bos_token_id=text_tokenizer.bos_token_id, eos_token_id=eos,
                                             pad_token_id=pad),
                            vision_config=VISION, scale_factor=SCALE_FACTOR,
                            image_token_id=text_tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=pad,
                            tie_word_embeddings=False)  # fmt: skip
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = eos, pad
    lora = {"rank": lora_rank} if lora_rank else None
    return HFCaptioner(model, processor, instruction="Describe the image.", max_len=max_len, lora=lora)
