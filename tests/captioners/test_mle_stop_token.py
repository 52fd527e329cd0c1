"""ClipCap's maximum-likelihood loss teaches the stop token the captioner stops on."""

from egg.zoo.discriminative_captioner.captioners.clipcap import ClipCapCaptioner, ClipCapConfig, ClipCapModel

from ..tiny_models import gpt2_tokenizer, tiny_gpt2


def test_reference_captions_end_with_the_single_period_token_of_gpt2_bpe():
    tokenizer = gpt2_tokenizer()  # byte-level BPE, as GPT-2's: " ." and "." are different tokens
    model = ClipCapModel(ClipCapConfig(prefix_length=2, prefix_size=8), tiny_gpt2(len(tokenizer)))
    captioner = ClipCapCaptioner(model, tokenizer, image_encoder=None, max_len=20)
    period = tokenizer.convert_tokens_to_ids(".")
    assert tokenizer(" .")["input_ids"] != [period]
    rows = captioner.reference_tokens(["a red circle", "a red circle.", "  a red circle . "])
    expected = tokenizer("a red circle.")["input_ids"]  # the sentence as GPT-2 encodes it, full stop included
    assert rows == [expected] * 3 and expected[-1] == period and period in captioner.stop_ids
