"""Image-caption data sets of the Hugging Face hub, read with the ``datasets`` library (``--dataset hf``).

``--hf_dataset ID_OR_DIR`` is opened with

- ``datasets.load_from_disk`` when it is a directory written by ``save_to_disk`` (it holds ``dataset_dict.json``
  or ``state.json``);
- ``datasets.load_dataset`` otherwise: a hub id (read from the Hugging Face cache when offline), or a local
  directory of data files named by their split as the hub lays them out (``train-*.parquet``,
  ``data/test-00000-of-00001.parquet``, ...).

Columns (each checked against the data set's own, listed when one is not there):

- images, ``--image_column`` (default ``image``): an ``Image`` feature (its bytes, or its file, decoded only when
  indexed), or a string naming an image file under ``--data_root``; a URL reads as its path there (the ``url`` of
  ``yerevann/coco-karpathy``, ``http://images.cocodataset.org/val2014/X.jpg``, is ``<data_root>/val2014/X.jpg``),
  and nothing is downloaded.  A row without an image, or whose file is absent, counts as missing; an image that
  does not decode, as unreadable (the other readers' counts).
- reference captions, ``--caption_column`` (default: the first of ``CAPTION_COLUMNS`` there): a string, a list of
  strings, or Karpathy's sentence records (``{"raw": ...}``) per row.
- image ids, ``--id_column`` (default: ``<source split>/<row>``): rows that share an id are one image, with the
  captions of all of them (data sets with one row per caption).

Splits (``--hf_splits SPLIT=SOURCE ...``): the data set's split that is each of train, validation and test, or
several joined with ``+`` (``train=train+restval``: COCO's Karpathy training images); by default its ``train``,
``validation`` (or ``val``, ``valid``, ``dev``) and ``test``.  Splits with the same source share their images and
feature cache.  The feature cache is named by the data set's fingerprints (``HubDataset.cache_identity``), which
change with its contents, rather than by where it was read from.

``datasets`` is an optional dependency (``pip install ".[datasets]"``): only ``--dataset hf`` imports it.
"""

import io
import json
import os
from urllib.parse import urlparse

from ..runtime.errors import UsageError
from .files import RealDataset, file_split
from .images import decode_image
from .splits import ImageSplit

SPLIT_NAMES = {"train": ("train",), "validation": ("validation", "val", "valid", "dev"), "test": ("test",)}
DEFAULT_IMAGE_COLUMN = "image"
CAPTION_COLUMNS = ("caption", "captions", "sentences", "text")
CAPTION_KEYS = ("raw", "caption", "text")  # the caption of a sentence record (Karpathy's: raw)
EXTRA = "pip install 'egg-zoo-discriminative-captioner[datasets]'"
LOCAL = "a directory saved with save_to_disk, or of the data set's parquet files"


def import_datasets():
    """The ``datasets`` package, or one line naming the extra that installs it."""
    try:
        import datasets
    except ImportError:
        raise UsageError(f"--dataset hf reads Hugging Face data sets with the datasets package, which is not "
                         f"installed: {EXTRA} (or pip install datasets)") from None  # fmt: skip
    return datasets


def saved_to_disk(path):
    """Whether ``path`` is a directory written by ``save_to_disk`` (a DatasetDict's or a Dataset's)."""
    return any(os.path.isfile(os.path.join(path, name)) for name in ("dataset_dict.json", "state.json"))


def one_line(error):
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def open_splits(name):
    """``{split: datasets.Dataset}`` of ``--hf_dataset name``; what cannot load ends in one line."""
    datasets = import_datasets()
    try:
        if os.path.isdir(name) and saved_to_disk(name):
            loaded = datasets.load_from_disk(name)
        else:
            loaded = datasets.load_dataset(name)
    except ConnectionError:  # a hub id neither cached nor reachable
        offline = "offline: HF_HUB_OFFLINE=1" if datasets.config.HF_HUB_OFFLINE else "no network"
        raise UsageError(f"hf: cannot load the data set {name!r}: it is not in the Hugging Face cache and the hub "
                         f"cannot be reached ({offline}); pass a local copy with --hf_dataset DIR ({LOCAL}), or "
                         "load it once online") from None  # fmt: skip
    except (OSError, ValueError, TypeError) as error:  # not found, no data files, several configurations, ...
        raise UsageError(f"hf: cannot load the data set {name!r} (--hf_dataset: a hub id or {LOCAL}): "
                         f"{one_line(error)}") from None  # fmt: skip
    if isinstance(loaded, datasets.Dataset):  # one split saved on its own
        return {str(loaded.split or "train"): loaded}
    if not isinstance(loaded, datasets.DatasetDict):
        raise UsageError(f"hf: {name!r} loads as {type(loaded).__name__}; --dataset hf reads data sets with random "
                         "access (a DatasetDict)")  # fmt: skip
    return dict(loaded)


def split_sources(spec, available, name):
    """``{split: [source splits]}`` for train, validation and test, from ``--hf_splits`` (checked by the options)
    and the defaults; a source the data set does not have ends in one line listing the ones it has."""
    given = dict(item.split("=", 1) for item in spec or ())
    sources = {}
    for split, defaults in SPLIT_NAMES.items():
        text = given.get(split) or next((source for source in defaults if source in available), defaults[0])
        for source in text.split("+"):
            if source not in available:
                raise UsageError(f"hf: {name} has no split {source!r} (for {split}); its splits: "
                                 f"{', '.join(available)}; choose with --hf_splits {split}=NAME")  # fmt: skip
        sources[split] = text.split("+")
    return sources


def references_of(value, column):
    """A row's reference captions: a string, a list of them, or sentence records (``{"raw": ...}``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value.strip()]
    if isinstance(value, dict) and any(key in value for key in CAPTION_KEYS):
        return references_of(value[next(key for key in CAPTION_KEYS if key in value)], column)
    if isinstance(value, (list, tuple)):
        return [reference for item in value for reference in references_of(item, column)]
    raise UsageError(f"hf: --caption_column {column} holds {type(value).__name__} values, not captions (a string, a "
                     f"list of strings, or records with one of {', '.join(CAPTION_KEYS)})")  # fmt: skip


def check_column(dataset, column, flag, source, name):
    if column not in dataset.column_names:
        raise UsageError(f"hf: {name} split {source!r} has no column {column!r} ({flag}); its columns: "
                         f"{', '.join(dataset.column_names)}")  # fmt: skip


class HubImages:
    """The images of an image column, decoded when indexed: ``images[i]`` reads row ``rows[i] = (part, row)`` of
    ``parts[part]`` (that source split's image column alone, not decoded by ``datasets``)."""

    def __init__(self, parts, rows, column, root):
        self.parts = parts
        self.rows = list(rows)
        self.column = column
        self.root = root  # where relative file paths are (--data_root)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        part, row = self.rows[index]
        value = self.parts[part][row][self.column]
        data = value.get("bytes") if isinstance(value, dict) else value
        if isinstance(data, bytes):
            return decode_image(io.BytesIO(data))
        path = value.get("path") if isinstance(value, dict) else None
        if not path:
            raise OSError(f"row {row}: no image bytes and no file")
        return decode_image(os.path.join(self.root, path) if self.root else path)


def has_image(column):
    """``[N]`` booleans: whether each row of an arrow image column holds an image (bytes or a file name)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    present = pc.invert(column.is_null())
    if pa.types.is_struct(column.type):
        fields = [field.name for field in column.type if field.name in ("bytes", "path")]
        held = [pc.invert(pc.is_null(pc.struct_field(column, field))) for field in fields]
        present = pc.and_(present, held[0] if len(held) == 1 else pc.or_(*held))
    return present.to_pylist()


class Columns:
    """The column options of ``--dataset hf`` and what each reads."""

    def __init__(self, opts):
        self.image = opts.image_column or DEFAULT_IMAGE_COLUMN
        self.caption = opts.caption_column
        self.id = opts.id_column

    def caption_of(self, dataset, source, name):
        """``--caption_column``, or the first of ``CAPTION_COLUMNS`` the split has."""
        if self.caption:
            check_column(dataset, self.caption, "--caption_column", source, name)
            return self.caption
        found = next((column for column in CAPTION_COLUMNS if column in dataset.column_names), None)
        if found is None:
            raise UsageError(f"hf: {name} split {source!r} has none of the caption columns {', '.join(CAPTION_COLUMNS)}"
                             f"; name one with --caption_column (its columns: {', '.join(dataset.column_names)})")
        return found


def read_rows(parts, columns, name):
    """``(rows, ids, references)``: one entry per image, ``rows[i] = (part, row)`` its first row; rows sharing an
    ``--id_column`` value are one image, with their captions in row order."""
    rows, references, index = [], [], {}
    for part, (source, dataset) in enumerate(parts):
        check_column(dataset, columns.image, "--image_column", source, name)
        caption = columns.caption_of(dataset, source, name)
        if columns.id:
            check_column(dataset, columns.id, "--id_column", source, name)
        captions = list(dataset[caption])
        ids = [str(value) for value in dataset[columns.id]] if columns.id else [f"{source}/{row}" for row in
                                                                                  range(len(captions))]  # fmt: skip
        for row, (image_id, value) in enumerate(zip(ids, captions)):
            if image_id not in index:
                index[image_id] = len(rows)
                rows.append((part, row))
                references.append([])
            references[index[image_id]] += references_of(value, caption)
    return rows, list(index), references


def read_split(split, parts, columns, root, name):
    """The ``ImageSplit`` of the source splits ``parts`` (``[(source, datasets.Dataset)]``)."""
    datasets = import_datasets()
    parts = [(source, dataset.with_format(None)) for source, dataset in parts]
    rows, ids, references = read_rows(parts, columns, name)
    feature = parts[0][1].features[columns.image]
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):  # file names, or URLs
        paths = [list(dataset[columns.image]) for _, dataset in parts]
        relative = [image_path(paths[part][row], root, columns.image) for part, row in rows]
        records = [(i, path, refs) for i, path, refs in zip(ids, relative, references) if path is not None]
        found = file_split(split, records, root or "")
        found.missing += len(rows) - len(records)
        return found
    images = [dataset.select_columns([columns.image]) for _, dataset in parts]
    if isinstance(feature, datasets.Image):
        images = [view.cast_column(columns.image, datasets.Image(decode=False)) for view in images]
    present = [has_image(view.with_format("arrow")[columns.image]) for view in images]
    kept = [i for i, (part, row) in enumerate(rows) if present[part][row]]
    return ImageSplit(split, HubImages(images, [rows[i] for i in kept], columns.image, root),
                      [references[i] for i in kept], ids=[ids[i] for i in kept],
                      sources=[f"{parts[rows[i][0]][0]}/{rows[i][1]}" for i in kept],
                      missing=len(rows) - len(kept))  # fmt: skip


def image_path(value, root, column):
    """The file of an image given as a path or URL string (None for an empty value): a URL's path, under
    ``root``; a relative path needs ``--data_root``."""
    if not value:
        return None
    path = urlparse(value).path.lstrip("/") if "://" in value else value
    if not os.path.isabs(path) and root is None:
        raise UsageError(f"hf: --image_column {column} holds image file names ({value!r}): pass --data_root, the "
                         "directory they are under")  # fmt: skip
    return path


class HubDataset(RealDataset):
    """A ``RealDataset`` whose feature cache is named by what it holds (``cache_identity``), not by its place."""

    def __init__(self, name, root, readers, aliases, identity):
        super().__init__(name, root, readers, aliases)
        self.identity = identity

    def cache_identity(self):
        """The data set as the feature cache's directory name sees it: its source splits' fingerprints (new ones
        whenever the data changes), the image column, and where image files are read from."""
        return json.dumps(self.identity, sort_keys=True)


def load_hf(opts):
    """Registry entry for ``--dataset hf``."""
    name = opts.hf_dataset
    if not name:
        raise UsageError("--dataset hf needs --hf_dataset ID_OR_DIR: a hub data set id, or " + LOCAL)
    available = open_splits(name)
    sources = split_sources(opts.hf_splits, list(available), name)
    columns = Columns(opts)
    root = opts.data_root
    aliases = {}
    for split, parts in sources.items():  # a split with an earlier one's sources shares its images (and cache)
        aliases[split] = next(other for other, other_parts in sources.items() if other_parts == parts)
    readers = {split: (lambda split=split: read_split(split, [(s, available[s]) for s in sources[split]], columns,
                                                      root, name))
               for split in sources if aliases[split] == split}  # fmt: skip
    identity = {"fingerprints": {split: [available[s]._fingerprint for s in parts] for split, parts in sources.items()},
                "image_column": columns.image, "data_root": os.path.abspath(root) if root else None}  # fmt: skip
    location = os.path.abspath(name) if os.path.isdir(name) else name
    aliases = {split: source for split, source in aliases.items() if source != split}
    return HubDataset("hf", location, readers, aliases, identity)
