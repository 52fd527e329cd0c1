"""Installs the plugin as ``egg.zoo.discriminative_captioner``.

The source lives in ``egg_zoo_discriminative_captioner/`` and is mapped into the ``egg.zoo`` namespace.  When
facebookresearch EGG is installed, the package lands inside EGG's own ``egg/zoo/``; without EGG, ``egg`` and
``egg.zoo`` are namespace packages and the plugin runs on its bundled EGG-compatible core.  Next to an EGG
checkout installed in editable mode (whose regular ``egg.zoo`` package does not look in site-packages), a ``.pth``
file and ``egg_zoo_discriminative_captioner_finder`` make the plugin importable all the same.
"""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "egg_zoo_discriminative_captioner.pth"  # imports the finder below at start-up


class BuildWithPth(build_py):
    """Puts the .pth file at the top of the wheel, i.e. in site-packages, next to the finder module."""

    def run(self):
        super().run()
        self.copy_file(PTH, os.path.join(self.build_lib, PTH))

PACKAGE = "egg.zoo.discriminative_captioner"
SOURCE = "egg_zoo_discriminative_captioner"
SUBPACKAGES = ["options", "runtime", "tracking", "captioners", "retrievers", "data", "evaluation", "synthetic", "egg_compat", "study", "hub", "rewards"]

setup(
    name="egg-zoo-discriminative-captioner",
    version="0.1.0",
    description="DiscriTune: discriminative finetuning of image captioners as an EGG game",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",  # transformers 5 needs it
    py_modules=["egg_zoo_discriminative_captioner_finder"],
    cmdclass={"build_py": BuildWithPth},
    packages=[PACKAGE, f"{PACKAGE}.game_files"] + [f"{PACKAGE}.{sub}" for sub in SUBPACKAGES],
    package_dir={
        PACKAGE: SOURCE,
        f"{PACKAGE}.game_files": "games",  # the repository's games/ directory
        **{f"{PACKAGE}.{sub}": f"{SOURCE}/{sub}" for sub in SUBPACKAGES},
    },
    package_data={
        f"{PACKAGE}.game_files": ["*.json", "ablations/*.json"],
        f"{PACKAGE}.study": ["templates/*.html", "static/*"],
    },
    install_requires=[
        "torch>=2.4",  # torch.serialization.add_safe_globals (checkpoints load with weights_only)
        "torchvision",
        "transformers>=5.0",  # the v5 APIs (tokenizer constructors, feature getters) are the ones tested
        "tokenizers",
        "openai-clip",
        "open-clip-torch>=3.0",  # --clip_backend open_clip (tested with 3.3): model names, tags, local-dir:
        "peft",  # LoRA adapters for --captioner hf (--lora_rank)
        "setuptools<81",  # openai-clip imports pkg_resources, removed in setuptools 81
        "ftfy",
        "regex",
        "wcwidth",  # ftfy needs it; openai-clip does not declare it
        "pillow",
        "numpy",
        "tqdm",
        "platformdirs",
        "faiss-cpu",  # nearest neighbours for --hard_distractors (faiss-gpu works as well where installed)
        "pycocoevalcap",  # BLEU, METEOR, ROUGE-L, CIDEr, SPICE in evaluate (needs Java)
        "matplotlib",  # evaluate's and the study's plots
    ],
    extras_require={
        # the human study's web app (python -m egg.zoo.discriminative_captioner.study)
        "study": ["fastapi", "uvicorn", "jinja2", "matplotlib"],
        # --dataset hf: image-caption data sets of the Hugging Face hub, local save_to_disk or parquet directories
        "datasets": ["datasets>=3"],
        # --report_to: live logs and caption tables (tensorboard: its event files and reader)
        "tracking": ["tensorboard", "wandb", "trackio"],
        # DiscriTune's reward in TRL's GRPOTrainer and RLOOTrainer (rewards/, examples/trl_grpo.py)
        "trl": ["trl>=1.0"],
        # httpx: FastAPI's TestClient; selenium: the browser test (Debian's chromium and chromium-driver);
        # the trackers, read back by the tests from their own files; torchmetrics: CLIP-S's reference
        "test": ["pytest", "fastapi", "uvicorn", "jinja2", "matplotlib", "httpx", "selenium", "mkdocs-material",
                 "datasets", "tensorboard", "wandb", "trackio", "trl>=1.0", "torchmetrics"],
    },
)
