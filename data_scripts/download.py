"""Prints what to download for each data set (and the released models), from where, and where to put it.

    python data_scripts/download.py coco            # one data set
    python data_scripts/download.py models          # every model file: URL, where it goes, the flag for a local path
    python data_scripts/download.py all             # everything, with the directory each goes to

Most of these downloads need a browser, a form or a licence, so this script only prints instructions; the
Conceptual Captions images are fetched by data_scripts/download_conceptual.py.  Files go under
$DISCRITUNE_DATA (default ~/data), or wherever --data_root points at train time.
"""

import argparse

from egg.zoo.discriminative_captioner.runtime import downloads

INSTRUCTIONS = {
    "conceptual": """\
Conceptual Captions (Sharma et al. 2018), https://ai.google.com/research/ConceptualCaptions/download
  1. Download Train_GCC-training.tsv and Validation_GCC-1.1.0-Validation.tsv (caption <TAB> URL, no header)
     into {root}/
  2. Fetch the images with img2dataset into webdataset shards (about 15% of the URLs are dead):
       python data_scripts/download_conceptual.py --data_root {root}
     -> {root}/train/*.tar and {root}/validation/*.tar ({{key}}.jpg, {{key}}.txt, {{key}}.json)
  (Alternatively, images already downloaded as {root}/train/{{row:08d}}.jpg next to the TSVs are read as is.)""",
    "coco": """\
MS COCO with Karpathy's splits
  1. Images: http://images.cocodataset.org/zips/train2014.zip and val2014.zip, unzipped into
     {root}/train2014/ and {root}/val2014/
  2. Karpathy's split file dataset_coco.json (in caption_datasets.zip,
     https://cs.stanford.edu/people/karpathy/deepimagesent/) into {root}/dataset_coco.json""",
    "flickr": """\
Flickr30k with Karpathy's splits
  1. Images: request them at https://shannon.cs.illinois.edu/DenotationGraph/ (a form), unpack into {root}/Images/
     (a folder named flickr30k-images/ is read too)
  2. dataset_flickr30k.json (in caption_datasets.zip, https://cs.stanford.edu/people/karpathy/deepimagesent/)
     into {root}/""",
    "nocaps": """\
nocaps validation, https://nocaps.org/download
  1. nocaps_val_4500_captions.json into {root}/
  2. The validation images (Open Images ids, listed in the JSON's coco_url fields) into {root}/validation/
     --dataset nocaps_near and nocaps_out both read this directory, split by each image's "domain".""",
    "concadia": """\
Concadia, https://github.com/elisakreiss/concadia
  1. wiki_split.json into {root}/
  2. The resized images into {root}/images/
     --dataset concadia_captions and concadia_descriptions both read this directory.""",
    "imagecode": """\
ImageCoDe, https://github.com/McGill-NLP/imagecode
  1. data/valid_data.json into {root}/
  2. The image sets (image-sets.zip, linked from its README) unpacked into {root}/image-sets/<set>/img<X>.jpg""",
}
DIRECTORY_OF = {"conceptual": "conceptual", "coco": "coco", "flickr": "flickr", "nocaps": "nocaps_near",
                "concadia": "concadia_captions", "imagecode": "imagecode"}  # fmt: skip


ALIASES = {"nocaps_near": "nocaps", "nocaps_out": "nocaps", "concadia_captions": "concadia",
           "concadia_descriptions": "concadia"}  # fmt: skip


def models_instructions(models_directory):
    """Every released model file: what it is, its URL, where it is looked for, the flag for a local path."""
    lines = [f"Released models (game files name the ClipCap files; those are looked for in {models_directory}, "
             f"or $DISCRITUNE_MODELS)"]  # fmt: skip
    for name, entry in downloads.prerequisites(models_directory).items():
        lines += [f"  - {name}: {downloads.DESCRIPTIONS[name]}", f"      url:    {entry.url}",
                  f"      where:  {entry.where}", f"      or:     a local path with {entry.flag}"]  # fmt: skip
        if name in downloads.HUB_FILES and downloads.HUB_FILES[name]:
            lines.append(f"      files:  {', '.join(downloads.HUB_FILES[name])} (not the weights)")
        command = downloads.download_command(name, models_directory)
        if command:
            lines.append(f"      fetch:  {command}")
        else:
            lines.append(f"      fetch:  open the url in a browser and save the file there, or (pip install gdown) "
                         f"gdown {downloads.CLIPCAP_FILES[name][0]} -O {entry.where}")  # fmt: skip
    lines.append(f"  (ClipCap's links are in {downloads.CLIPCAP_README}; hf is huggingface_hub's command line)")
    return "\n".join(lines)


def instructions(name):
    """The instructions of one data set (or "models"), with its directory filled in."""
    from egg.zoo.discriminative_captioner.data.files import default_data_root, models_directory

    if name == "models":
        return models_instructions(models_directory())
    return INSTRUCTIONS[name].format(root=default_data_root(DIRECTORY_OF[name]))


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.replace("``", ""),  # reST quotes, not for a terminal
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    topics = list(INSTRUCTIONS) + ["models"]
    parser.add_argument(
        "what",
        choices=sorted(topics) + ["all"] + sorted(ALIASES),
        help="a data set (as --dataset names it, or nocaps / concadia), 'models', or 'all'",
    )
    args = parser.parse_args(argv)
    names = topics if args.what == "all" else [ALIASES.get(args.what, args.what)]
    print("\n\n".join(instructions(name) for name in names))


if __name__ == "__main__":
    main()
