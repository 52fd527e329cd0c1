"""``evaluate --eval_retrievers``: P@1 of the same captions under retrievers the captioner was not trained against.

Spec parsing; the feature-cache key of open_clip weights; the open_clip branch of the missing-file check; and, end
to end on the tiny synthetic world with tiny OpenAI-CLIP, open_clip and SigLIP retrievers, a P@1 column per
retriever that equals an independent computation (the captions of captions.jsonl scored by each model through its
own library, the strict rule over the same candidate sets), the main retriever's column unchanged."""

import json
import os
import types

import pytest
import torch
import torch.nn.functional as F

from egg.zoo.discriminative_captioner import evaluate
from egg.zoo.discriminative_captioner.data.base import retrieval_batches
from egg.zoo.discriminative_captioner.experiment import encoder_models, retriever_cache_role
from egg.zoo.discriminative_captioner.options.parse import config_of
from egg.zoo.discriminative_captioner.retrievers.specs import parse_retriever, parse_retrievers
from egg.zoo.discriminative_captioner.runtime.errors import UsageError
from egg.zoo.discriminative_captioner.runtime.preflight import retriever_missing

from ..tiny_models import register_tiny_open_clip, save_open_clip, save_openai_clip, save_siglip

# ---------------------------------------------------------------------------------------------- spec parsing


@pytest.mark.parametrize(
    "text, label, backend, model, pretrained",
    [
        ("openai:ViT-L/14", "openai:ViT-L/14", "openai", "ViT-L/14", None),
        ("vitl=openai:ViT-L/14", "vitl", "openai", "ViT-L/14", None),
        ("transformers:google/siglip-base-patch16-224", "transformers:google/siglip-base-patch16-224",
         "transformers", "google/siglip-base-patch16-224", None),
        ("open_clip:ViT-B-32:laion2b_s34b_b79k", "open_clip:ViT-B-32:laion2b_s34b_b79k", "open_clip", "ViT-B-32",
         "laion2b_s34b_b79k"),
        ("oc=open_clip:ViT-B-32:/some/dir/weights.pt", "oc", "open_clip", "ViT-B-32", "/some/dir/weights.pt"),
        ("open_clip:local-dir:/models/oc", "open_clip:local-dir:/models/oc", "open_clip", "local-dir:/models/oc",
         None),
        ("hub=open_clip:hf-hub:timm/ViT-B-16-SigLIP", "hub", "open_clip", "hf-hub:timm/ViT-B-16-SigLIP", None),
    ],
)  # fmt: skip
def test_specs_name_backend_model_weights_and_label(text, label, backend, model, pretrained):
    spec = parse_retriever(text)
    assert (spec.label, spec.backend, spec.model, spec.pretrained) == (label, backend, model, pretrained)
    options = spec.options(config_of(["--clip_model", "x"]))
    assert (options.clip_backend, options.clip_model, options.clip_pretrained) == (backend, model, pretrained)


def test_a_local_file_labels_the_column_by_its_name(tmp_path):
    weights = tmp_path / "clip.pt"
    weights.write_bytes(b"")
    assert parse_retriever(f"openai:{weights}").label == "openai:clip.pt"
    assert parse_retriever(f"open_clip:ViT-B-32:{weights}").label == "open_clip:ViT-B-32:clip.pt"


@pytest.mark.parametrize(
    "texts, message",
    [
        (["ViT-L/14"], r"--eval_retrievers ViT-L/14: no BACKEND:; give \[LABEL=\]BACKEND:MODEL\[:PRETRAINED\]"),
        (["clip:ViT-L/14"], r"'clip' is not a backend; give .*BACKEND one of open_clip, openai, transformers"),
        (["openai:"], "no MODEL after openai:"),
        (["open_clip:ViT-B-32"], "open_clip needs its weights: open_clip:MODEL:PRETRAINED"),
        (["open_clip:ViT-B-32:"], "open_clip needs its weights"),
        (["open_clip:local-dir:"], "nothing after local-dir:"),
        (["openai:ViT-B/32:laion"], "the openai backend takes no PRETRAINED"),
        (["=openai:ViT-B/32"], "the LABEL before '=' is empty"),
        (["a|b=openai:ViT-B/32"], r"cannot hold '\|'"),
        (["x=openai:ViT-B/32", "x=openai:ViT-L/14"], "x named twice; give each retriever its own LABEL="),
        (["openai:ViT-B/32", "openai:ViT-B/32"], "openai:ViT-B/32 named twice"),
    ],
)
def test_bad_specs_are_one_line_usage_errors(texts, message):
    with pytest.raises(UsageError, match=message) as error:
        parse_retrievers(texts)
    assert "\n" not in str(error.value)


def test_a_bad_spec_stops_evaluate_before_any_model_loads(tmp_path):
    out = tmp_path / "eval"
    with pytest.raises(UsageError, match="'nope' is not a backend"):
        evaluate.main(["--eval_retrievers", "nope:x", "--output_dir", str(out)])
    assert not out.exists()


# ------------------------------------------------------------------------------------ feature-cache key


def retriever_options(backend="openai", model="ViT-B/32", pretrained=None, precision="fp32", download_root=None):
    return config_of().replace(clip_backend=backend, clip_model=model, clip_pretrained=pretrained,
                               retriever_precision=precision, clip_download_root=download_root,
                               captioner_clip_model="ViT-B/32")  # fmt: skip


def test_open_clip_weights_are_part_of_the_cache_key_and_other_keys_stay_as_they_were(tmp_path, monkeypatch):
    assert encoder_models(retriever_options())["retriever"] == "openai ViT-B/32 fp32"  # as before: caches valid
    hf = retriever_options("transformers", "google/siglip-base-patch16-224", precision="fp16")
    assert encoder_models(hf)["retriever"] == "transformers google/siglip-base-patch16-224 fp16"
    laion = encoder_models(retriever_options("open_clip", "ViT-B-32", "laion2b_s34b_b79k"))["retriever"]
    openai = encoder_models(retriever_options("open_clip", "ViT-B-32", "openai"))["retriever"]
    assert laion != openai and laion == "open_clip ViT-B-32 fp32 pretrained=laion2b_s34b_b79k"
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert encoder_models(retriever_options("open_clip", "ViT-B-32", "w.pt"))["retriever"].endswith(
        f"pretrained={weights}"  # a local file by its absolute path
    )
    # another retriever's cache: its own directory, unless it is the run's own encoder
    main = retriever_options("open_clip", "ViT-B-32", "laion2b_s34b_b79k")
    assert retriever_cache_role(retriever_options("open_clip", "ViT-B-32", "laion2b_s34b_b79k"), main) == "retriever"
    other = retriever_cache_role(retriever_options("open_clip", "ViT-B-32", "openai"), main)
    assert other.startswith("retriever-") and other != retriever_cache_role(retriever_options(), main)


# ------------------------------------------------------------------------------- missing-file check


def fake_hub_file(cache_dir, repo, filename):
    """A file as huggingface_hub's cache holds a download (refs/main -> snapshots/<commit>/<file>)."""
    folder = os.path.join(cache_dir, "models--" + repo.replace("/", "--"))
    os.makedirs(os.path.join(folder, "refs"), exist_ok=True)
    with open(os.path.join(folder, "refs", "main"), "w") as f:
        f.write("0" * 40)
    os.makedirs(os.path.join(folder, "snapshots", "0" * 40), exist_ok=True)
    with open(os.path.join(folder, "snapshots", "0" * 40, filename), "wb") as f:
        f.write(b"weights")


def missing(opts, **kwargs):
    return [m for m in retriever_missing(opts, **kwargs) if m is not None]


def test_open_clip_weights_a_file_that_must_exist_and_names_are_not_openai_clip_names(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    weights = tmp_path / "open_clip.pt"
    weights.write_bytes(b"")
    # ViT-B-32 is open_clip's spelling, no OpenAI CLIP name: it must not be looked for as a CLIP .pt file
    assert missing(retriever_options("open_clip", "ViT-B-32", str(weights))) == []
    assert missing(retriever_options("open_clip", "ViT-B-32", None)) == []  # the loader lists the model's tags
    [m] = missing(retriever_options("open_clip", "ViT-B-32", str(tmp_path / "nope.pt")))
    assert m.flag == "--clip_pretrained" and "nope.pt (not found)" in m.looked and "open_clip ViT-B-32" in m.what
    [m] = missing(retriever_options("open_clip", "ViT-B-32", str(tmp_path)))
    assert "a directory is there, not a file" in m.looked


def test_open_clip_tags_count_as_missing_offline_unless_cached(tmp_path, monkeypatch):
    import open_clip

    cache = tmp_path / "hub"
    opts = retriever_options("open_clip", "ViT-B-32", "laion2b_s34b_b79k", download_root=str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert missing(opts) == []  # online: open_clip downloads it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    [m] = missing(opts)
    assert m.flag == "--clip_pretrained FILE" and "'laion2b_s34b_b79k'" in m.looked and "offline" in m.looked
    repo, filename = os.path.split(open_clip.get_pretrained_cfg("ViT-B-32", "laion2b_s34b_b79k")["hf_hub"])
    fake_hub_file(str(cache), repo, filename or "open_clip_model.safetensors")
    assert missing(opts) == []  # in the cache: found offline
    [m] = missing(retriever_options("open_clip", "ViT-B-32", "nosuchtag", download_root=str(cache)))
    assert "not a tag of the model, nor a file" in m.looked


def test_open_clip_local_directories_need_their_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    [m] = missing(retriever_options("open_clip", f"local-dir:{tmp_path / 'none'}"))
    assert "(not found)" in m.looked and m.flag == "--clip_model local-dir:DIRECTORY"
    [m] = missing(retriever_options("open_clip", f"local-dir:{tmp_path}"))
    assert "without open_clip_config.json" in m.looked
    (tmp_path / "open_clip_config.json").write_text("{}")
    assert missing(retriever_options("open_clip", f"local-dir:{tmp_path}")) == []
    [m] = missing(retriever_options("open_clip", "hf-hub:nobody/nothing"))  # offline, not cached
    assert "'nobody/nothing'" in m.looked


def test_every_missing_retriever_file_is_listed_before_any_captioning(tiny_world_args, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    specs = [f"a=openai:{tmp_path / 'clip.pt'}", f"b=open_clip:ViT-B-32:{tmp_path / 'oc.pt'}",
             "c=open_clip:ViT-B-32:laion2b_s34b_b79k", f"d=transformers:{tmp_path / 'siglip'}",
             f"e=open_clip:local-dir:{tmp_path / 'oc_dir'}"]  # fmt: skip
    out = tmp_path / "eval"
    args = tiny_world_args + ["--clip_download_root", str(tmp_path / "downloads"), "--output_dir", str(out)]
    with pytest.raises(UsageError, match="5 files this run needs are missing") as error:
        evaluate.main(args + ["--no-nlg", "--hard_sets", "0", "--eval_retrievers", *specs])
    report = str(error.value)
    for expected in [f"--eval_retrievers a CLIP\n      looked for: {tmp_path / 'clip.pt'} (not found)",
                     "pass a path with: --eval_retrievers a=openai:PATH",
                     "pass a path with: --eval_retrievers b=open_clip:ViT-B-32:FILE",
                     "--eval_retrievers c (open_clip ViT-B-32 weights)",
                     "pass a path with: --eval_retrievers c=open_clip:ViT-B-32:FILE",
                     "--eval_retrievers d CLIP (transformers)",
                     "pass a path with: --eval_retrievers e=open_clip:local-dir:DIRECTORY"]:  # fmt: skip
        assert expected in report
    assert not out.exists()
    with pytest.raises(UsageError) as error:  # a spec without a label is suggested without one
        evaluate.main(args + ["--no-nlg", "--hard_sets", "0", "--eval_retrievers", "openai:/missing/file.pt"])
    assert "pass a path with: --eval_retrievers openai:PATH" in str(error.value)
    assert "=openai:" not in str(error.value)


# ------------------------------------------------------------------------ end to end, tiny retrievers

# the validation splits (200 images each: two candidate sets) keep the captioning short
SPLIT = "validation"
EVAL = ["--no-nlg", "--hard_sets", "0", "--split", SPLIT, "--models", "pretrained", "--datasets", "synthetic",
        "synthetic_descriptive"]  # fmt: skip


@pytest.fixture(scope="module")
def retriever_files(tmp_path_factory):
    """Tiny OpenAI CLIP, open_clip and SigLIP retrievers in their on-disk formats, and their in-memory models."""
    root = tmp_path_factory.mktemp("eval_retrievers")
    name = register_tiny_open_clip(str(root))
    files = {"clip": str(root / "clip.pt"), "open_clip": str(root / "open_clip.pt"), "siglip": str(root / "siglip")}
    save_openai_clip(files["clip"], seed=1)
    save_open_clip(files["open_clip"], name, seed=2)
    save_siglip(files["siglip"], seed=3)
    return types.SimpleNamespace(open_clip_name=name, **files)


@pytest.fixture(scope="module")
def evaluations(world_cache, retriever_files, tmp_path_factory):
    """The same evaluation without and with --eval_retrievers (the world's own retriever as one of them)."""
    from egg.zoo.discriminative_captioner.synthetic import world_directory

    root = tmp_path_factory.mktemp("evaluations")
    run_args = ["--synthetic_world", "tiny", "--cache_dir", world_cache, "--max_len", "6", "--num_beams", "2"]
    world_retriever = os.path.join(world_directory(world_cache, "tiny"), "retriever.pt")
    specs = [f"tiny=openai:{retriever_files.clip}",
             f"oc=open_clip:{retriever_files.open_clip_name}:{retriever_files.open_clip}",
             f"siglip=transformers:{retriever_files.siglip}", f"world=openai:{world_retriever}"]  # fmt: skip
    plain = evaluate.main(run_args + EVAL + ["--output_dir", str(root / "plain")])
    extra = evaluate.main(run_args + EVAL + ["--output_dir", str(root / "extra"), "--eval_retrievers", *specs])
    return types.SimpleNamespace(plain=plain, extra=extra, root=root, run_args=run_args, world_cache=world_cache)


class Scorer:
    """A retriever as its own library computes it: ``images(pil) -> [N, D]``, ``texts(list) -> [N, D]``."""

    def __init__(self, images, texts):
        self.images, self.texts = images, texts


def _pooled(output):  # transformers >= 5 returns a model output, 4.x the embedding
    return getattr(output, "pooler_output", output)


def scorers(files):
    """Each tiny retriever loaded by its own library, not through the plugin's retrievers."""
    import open_clip
    from transformers import AutoTokenizer, SiglipImageProcessor, SiglipModel

    from egg.zoo.discriminative_captioner.runtime.clip_loading import clip, clip_transform

    from ..tiny_models import tiny_clip

    clip_model, clip_pre = tiny_clip(seed=1), clip_transform(32)
    oc_model, _, oc_pre = open_clip.create_model_and_transforms(files.open_clip_name, pretrained=files.open_clip)
    oc_tokenizer = open_clip.get_tokenizer(files.open_clip_name)
    siglip = SiglipModel.from_pretrained(files.siglip).eval()
    siglip_tokenizer = AutoTokenizer.from_pretrained(files.siglip)
    siglip_pre = SiglipImageProcessor.from_pretrained(files.siglip)

    def siglip_texts(texts):
        ids = siglip_tokenizer(texts, padding="max_length", max_length=64, truncation=True, return_tensors="pt")
        return _pooled(siglip.get_text_features(input_ids=ids.input_ids))

    return {
        "tiny": Scorer(lambda pil: clip_model.encode_image(torch.stack([clip_pre(i) for i in pil])),
                       lambda texts: clip_model.encode_text(clip.tokenize(texts, context_length=16, truncate=True))),
        "oc": Scorer(lambda pil: oc_model.encode_image(torch.stack([oc_pre(i) for i in pil])),
                     lambda texts: oc_model.encode_text(oc_tokenizer(texts))),
        "siglip": Scorer(lambda pil: _pooled(siglip.get_image_features(
                             pixel_values=siglip_pre(images=pil, return_tensors="pt").pixel_values)),
                         siglip_texts),
    }  # fmt: skip


@torch.no_grad()
def strict_p_at_1(scorer, images, captions, targets, candidates=100, seed=0):
    """P@1 of one caption per image, the target strictly above every distractor of its set (a tie a miss)."""
    image_embeddings = torch.cat([F.normalize(scorer.images(images[i : i + 100]).float(), dim=-1)
                                  for i in range(0, len(images), 100)])  # fmt: skip
    image_embeddings = image_embeddings.half().float()  # as the feature cache stores them (fp16)
    text_embeddings = F.normalize(scorer.texts(list(captions)).float(), dim=-1)
    hits = {}
    for set_targets, fillers in retrieval_batches(len(images), candidates, seed):
        scores = text_embeddings[set_targets] @ image_embeddings[set_targets + fillers].T  # [T, C], targets first
        for row, target in enumerate(set_targets):
            distractors = torch.cat([scores[row, :row], scores[row, row + 1 :]])
            hits[target] = bool(scores[row, row] > distractors.max())
    counted = [hits[i] for i in range(len(images)) if targets[i]]
    return sum(counted) / len(counted)


def test_main_retriever_column_and_captions_are_unchanged_by_more_retrievers(evaluations):
    keys = ("model", "dataset", "n_images", "p_at_1", "p_at_1_references")
    assert [{k: r[k] for k in keys} for r in evaluations.extra] == [{k: r[k] for k in keys} for r in evaluations.plain]
    assert all("p_at_1_retrievers" not in r for r in evaluations.plain)
    plain, extra = evaluations.root / "plain", evaluations.root / "extra"
    assert (plain / "captions.jsonl").read_text() == (extra / "captions.jsonl").read_text()
    main_table = (plain / "tables.md").read_text().split("\n\nNLG metrics")[0]
    assert main_table.split("\n", 1)[1] in (extra / "tables.md").read_text()  # the P@1 table, as it was
    # the world's own retriever as an "other" retriever is the main one: the same column, from the same cache
    for r in evaluations.extra:
        assert r["p_at_1_retrievers"]["world"] == r["p_at_1"]
        assert r["p_at_1_references_retrievers"]["world"] == r["p_at_1_references"]


def test_each_retriever_column_equals_an_independent_computation(evaluations, retriever_files):
    from egg.zoo.discriminative_captioner.data import load_dataset
    from egg.zoo.discriminative_captioner.options.parse import get_opts

    rows = [json.loads(line) for line in (evaluations.root / "extra" / "captions.jsonl").read_text().splitlines()]
    by_scorer = scorers(retriever_files)
    for record in evaluations.extra:
        dataset = record["dataset"]
        split = load_dataset(get_opts(evaluations.run_args + ["--dataset", dataset])).split(SPLIT)
        images = [split.images[i] for i in range(len(split))]
        captions = [row["caption"] for row in rows if row["dataset"] == dataset and row["model"] == record["model"]]
        assert [row["image_id"] for row in rows if row["dataset"] == dataset] == list(split.ids)
        humans = [refs[0] if refs else "" for refs in split.references]
        described = [bool(refs) for refs in split.references]
        assert set(record["p_at_1_retrievers"]) == {"tiny", "oc", "siglip", "world"}
        for label, scorer in by_scorer.items():
            expected = strict_p_at_1(scorer, images, captions, [True] * len(images))
            assert record["p_at_1_retrievers"][label] == pytest.approx(expected, abs=1e-9), (dataset, label)
            expected_human = strict_p_at_1(scorer, images, humans, described)
            assert record["p_at_1_references_retrievers"][label] == pytest.approx(expected_human, abs=1e-9)


def test_tables_results_and_summary_carry_a_column_per_retriever(evaluations):
    out = evaluations.root / "extra"
    assert json.loads((out / "results.json").read_text()) == evaluations.extra
    tables = (out / "tables.md").read_text()
    assert "| Model | Data set | main retriever | tiny | oc | siglip | world |" in tables
    for r in evaluations.extra:
        cells = [r["p_at_1"]] + [r["p_at_1_retrievers"][k] for k in ("tiny", "oc", "siglip", "world")]
        assert f"| {r['model']} | {r['dataset']} | " + " | ".join(f"{100 * c:.1f}" for c in cells) + " |" in tables
        human = [r["p_at_1_references"]] + [r["p_at_1_references_retrievers"][k] for k in ("tiny", "oc", "siglip",
                                                                                          "world")]  # fmt: skip
        assert f"| Human captions | {r['dataset']} | " + " | ".join(f"{100 * c:.1f}" for c in human) in tables
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["eval_retrievers"]) == ["tiny", "oc", "siglip", "world"]
    assert summary["eval_retrievers"]["oc"]["backend"] == "open_clip" and "--eval_retrievers" in summary["protocol"]
    # each retriever's image embeddings in a feature cache of its own (the world's: the main retriever's)
    features = os.path.join(evaluations.world_cache, "features")
    for dataset in ("synthetic", "synthetic_descriptive"):
        [folder] = [f for f in os.listdir(features) if f.startswith(dataset + "-")]
        roles = sorted(os.listdir(os.path.join(features, folder, SPLIT)))
        assert "retriever" in roles and len([r for r in roles if r.startswith("retriever-")]) >= 3, roles
