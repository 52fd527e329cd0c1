"""The data scripts a newcomer runs first: check_data.py, download.py, download_conceptual.py and
convert_clip_to_transformers.py, on empty data directories and the tiny fixtures of tests/data_fixtures.py."""

import os
import re
import shlex
import subprocess
import sys

import pytest

from egg.zoo.discriminative_captioner.data.files import DEFAULT_DIRECTORIES
from egg.zoo.discriminative_captioner.runtime import downloads
from egg.zoo.discriminative_captioner.runtime.errors import UsageError

from ..data_fixtures import GOOD, WRITERS, write_conceptual_tsv
from ..paths import ROOT, load_script

SPLITS = ("train", "validation", "test")
SCRIPTS = os.path.join(ROOT, "data_scripts")


def script(name):
    """A data script loaded as a module (so that a test can replace one of its functions)."""
    return load_script("data_scripts", f"{name}.py")


def exit_status(main, argv):
    with pytest.raises(SystemExit) as status:
        main(argv)
    return status.value.code


@pytest.fixture
def data_base(tmp_path, monkeypatch):
    """An empty $DISCRITUNE_DATA."""
    base = tmp_path / "data"
    base.mkdir()
    monkeypatch.setenv("DISCRITUNE_DATA", str(base))
    monkeypatch.delenv("DISCRITUNE_MODELS", raising=False)
    return base


# --- check_data.py --------------------------------------------------------------------------------------------


def test_check_data_checks_only_the_real_data_sets():
    check_data = script("check_data")
    assert set(check_data.REAL) == set(DEFAULT_DIRECTORIES)
    assert not [name for name in check_data.REAL if "synthetic" in name]


def test_check_data_without_arguments_on_an_empty_data_directory_is_one_line_per_data_set(data_base):
    result = subprocess.run([sys.executable, os.path.join(SCRIPTS, "check_data.py")], capture_output=True, text=True,
                            env={**os.environ, "DISCRITUNE_DATA": str(data_base)}, timeout=300)  # fmt: skip
    lines = result.stdout.splitlines()
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 + len(DEFAULT_DIRECTORIES) + 1  # header, one per data set, "no data set found"
    assert all("not downloaded" in line for line in lines[1:-1]) and "no data set found" in lines[-1]
    assert "synthetic" not in result.stdout


@pytest.mark.parametrize("name", ["conceptual", "coco"])
def test_check_data_on_a_named_absent_data_set_exits_1(name, data_base, capsys):
    assert exit_status(script("check_data").main, [name]) == 1
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 1 and rows[0].startswith(name) and "not available" in rows[0] and "not found" in rows[0]


def test_check_data_on_a_directory_with_nothing_readable_exits_1(tmp_path, capsys):
    (tmp_path / "Images").mkdir()
    (tmp_path / "Images" / "1.jpg").write_bytes(b"not an image")
    (tmp_path / "dataset_flickr30k.json").write_text(
        '{"images": [{"filename": "1.jpg", "imgid": 0, "split": "test", "sentences": [{"raw": "x"}]}]}'
    )
    assert exit_status(script("check_data").main, ["flickr", "--data_root", str(tmp_path)]) == 1
    assert "has no readable image" in capsys.readouterr().out


def test_check_data_without_arguments_reports_what_is_there_and_passes(data_base, capsys):
    WRITERS["imagecode"](str(data_base / DEFAULT_DIRECTORIES["imagecode"]))
    assert exit_status(script("check_data").main, []) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in lines if line.startswith("imagecode")] == list(SPLITS)
    assert sum("not downloaded" in line for line in lines) == len(DEFAULT_DIRECTORIES) - 1


def test_check_data_without_arguments_fails_on_a_present_but_broken_data_set(data_base, capsys):
    WRITERS["imagecode"](str(data_base / DEFAULT_DIRECTORIES["imagecode"]))
    (data_base / "coco").mkdir()  # a directory without its annotation file
    assert exit_status(script("check_data").main, []) == 1
    coco = [line for line in capsys.readouterr().out.splitlines() if line.startswith("coco")]
    assert len(coco) == 1 and "dataset_coco.json not found" in coco[0]


def test_check_data_reports_an_unexpected_failure_in_one_line_and_checks_the_rest(data_base, monkeypatch, capsys):
    WRITERS["imagecode"](str(data_base / DEFAULT_DIRECTORIES["imagecode"]))
    (data_base / "coco").mkdir()
    check_data = script("check_data")
    real_check = check_data.check

    def check(name, *args):
        if name == "coco":
            raise RuntimeError("cannot parse\nsecond line")
        return real_check(name, *args)

    monkeypatch.setattr(check_data, "check", check)
    assert exit_status(check_data.main, []) == 1
    out = capsys.readouterr().out
    assert [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("coco")] == [
        "not available: RuntimeError: cannot parse second line"
    ]
    assert [line.split()[1] for line in out.splitlines() if line.startswith("imagecode")] == list(SPLITS)


# --- download_conceptual.py -----------------------------------------------------------------------------------


def test_download_conceptual_dry_run_without_the_tsvs_names_the_file_and_where_to_get_it(tmp_path):
    with pytest.raises(SystemExit) as error:
        script("download_conceptual").main(["--data_root", str(tmp_path), "--dry_run"])
    message = str(error.value.code)
    assert message.startswith("error: ") and "\n" not in message
    assert os.path.join(str(tmp_path), "Train_GCC-training.tsv") in message
    assert "https://ai.google.com/research/ConceptualCaptions/download" in message


def test_download_conceptual_dry_run_prints_commands_that_run_as_printed(tmp_path, capsys):
    write_conceptual_tsv(str(tmp_path))
    script("download_conceptual").main(["--data_root", str(tmp_path), "--dry_run"])
    commands = [shlex.split(line) for line in capsys.readouterr().out.splitlines() if not line.startswith("#")]
    assert [command[0] for command in commands] == [sys.executable, "img2dataset", "img2dataset"]
    assert not list(tmp_path.glob("*_urls_with_header.tsv"))  # the dry run wrote nothing
    subprocess.run(commands[0], check=True, capture_output=True, timeout=300)  # step 1, as printed
    for command in commands[1:]:
        url_list = command[command.index("--url_list") + 1]
        with open(url_list) as f:
            rows = f.read().splitlines()
        split = os.path.basename(command[command.index("--output_folder") + 1])
        assert url_list == str(tmp_path / f"{split}_urls_with_header.tsv")
        assert rows[:2] == ["caption\turl", f"caption 0 of the {split} set\thttp://example.com/{split}/0.jpg"]
        assert len(rows) == 1 + GOOD + 3
        assert command[command.index("--incremental_mode") + 1] == "incremental"  # a rerun resumes


def test_download_conceptual_header_copy_is_atomic(tmp_path):
    download = script("download_conceptual")
    output = tmp_path / "train_urls_with_header.tsv"
    output.write_text("an earlier copy\n")
    broken = tmp_path / "t.tsv"
    broken.write_bytes(b"a caption\thttp://x/0.jpg\n" * 10000 + b"\xff\n")  # not UTF-8 after 10,000 rows
    with pytest.raises(UnicodeDecodeError):
        download.with_header(str(broken), str(output))
    assert output.read_text() == "an earlier copy\n" and sorted(os.listdir(tmp_path)) == ["t.tsv", output.name]
    (tmp_path / "t.tsv").write_text('a "quoted" caption\thttp://x/1.jpg\nno url\n')
    download.with_header(str(tmp_path / "t.tsv"), str(output))
    assert output.read_text() == 'caption\turl\n"a ""quoted"" caption"\thttp://x/1.jpg\n'
    assert sorted(os.listdir(tmp_path)) == ["t.tsv", output.name]


# --- download.py models and the downloads module ---------------------------------------------------------------


def test_download_models_gives_every_url_flag_and_place(data_base, capsys):
    import clip.clip

    script("download").main(["models"])
    out = capsys.readouterr().out
    for name in ("ViT-B/32", "RN50x4"):
        assert clip.clip._MODELS[name] in out
    for drive_id in ("14pXWwB4Zm82rsDdvbGguLfx9F8aM7ovT", "1IdaBtMSvtyzF0ByVaBHtvM0JYSXRExRX",
                     "1GYPToCqFREwi285wPLhuVExlz7DDUDfJ"):  # fmt: skip
        assert f"https://drive.google.com/file/d/{drive_id}/view" in out
    for url in ("https://huggingface.co/gpt2", "https://huggingface.co/Salesforce/blip-image-captioning-base"):
        assert url in out
    for flag in ("--clipcap_checkpoint", "--clip_model", "--captioner_clip_model", "--clip_download_root",
                 "--language_model", "--blip_model"):  # fmt: skip
        assert flag in out
    assert os.path.join(str(data_base), "models", "conceptual_weights.pt") in out


def test_prerequisites_name_real_options_and_the_models_directory(tmp_path, monkeypatch):
    import clip.clip

    from egg.zoo.discriminative_captioner.options.parse import build_parser

    monkeypatch.setenv("DISCRITUNE_MODELS", str(tmp_path))
    entries = downloads.prerequisites()
    assert entries["ViT-B-32.pt"].url == clip.clip._MODELS["ViT-B/32"]
    assert entries["RN50x4.pt"].url == clip.clip._MODELS["RN50x4"]
    assert entries["coco_weights.pt"] == (
        "https://drive.google.com/file/d/1IdaBtMSvtyzF0ByVaBHtvM0JYSXRExRX/view?usp=sharing",
        "--clipcap_checkpoint",
        os.path.join(str(tmp_path), "coco_weights.pt"),
    )
    assert entries[downloads.BLIP].where.startswith(os.path.join(str(tmp_path), "blip-image-captioning-base"))
    options = build_parser()._option_string_actions
    for name, entry in entries.items():
        flags = re.findall(r"--[a-z_]+", entry.flag)
        assert flags and all(flag in options for flag in flags), name
        assert entry.url.startswith("https://") and name in downloads.describe(name, entry)


def test_downloads_module_needs_neither_torch_nor_transformers_nor_clip(tmp_path):
    code = ("import sys; from egg.zoo.discriminative_captioner.runtime import downloads as d; "
            f"d.prerequisites({str(tmp_path)!r}); d.download_command('ViT-B-32.pt'); "
            "print(sorted(m for m in ('torch', 'transformers', 'clip', 'numpy') if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("name", ["download.py", "convert_clip_to_transformers.py", "check_data.py"])
def test_help_does_not_import_torch(name):
    code = ("import runpy, sys\nsys.argv = ['script', '--help']\ntry:\n"
            f"    runpy.run_path({os.path.join(SCRIPTS, name)!r}, run_name='__main__')\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "usage:" in result.stdout and result.stdout.splitlines()[-1] == "False", result.stderr


# --- convert_clip_to_transformers.py --------------------------------------------------------------------------


def test_convert_clip_refuses_a_non_empty_output_and_replaces_it_with_overwrite(tiny_files, tmp_path):
    convert = script("convert_clip_to_transformers")
    output = tmp_path / "converted"
    output.mkdir()
    (output / "earlier.txt").write_text("an earlier conversion")
    with pytest.raises(UsageError, match="--overwrite"):
        convert.main([tiny_files["clip"], str(output)])
    assert os.listdir(output) == ["earlier.txt"]
    convert.main([tiny_files["clip"], str(output), "--overwrite"])
    assert "config.json" in os.listdir(output) and "earlier.txt" not in os.listdir(output)
    assert sorted(os.listdir(tmp_path)) == ["converted"]  # no staging directory left behind


def test_convert_clip_interrupted_leaves_no_output(tiny_files, tmp_path, monkeypatch):
    from egg.zoo.discriminative_captioner.retrievers import clip_conversion

    def interrupted(state_dict, directory):
        open(os.path.join(directory, "config.json"), "w").close()
        raise KeyboardInterrupt

    monkeypatch.setattr(clip_conversion, "save_as_transformers", interrupted)
    with pytest.raises(KeyboardInterrupt):
        script("convert_clip_to_transformers").main([tiny_files["clip"], str(tmp_path / "converted")])
    assert os.listdir(tmp_path) == []
