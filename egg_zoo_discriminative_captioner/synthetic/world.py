"""The synthetic world: procedurally drawn scenes and three caption styles that describe them.

A scene holds one or two flat objects (shape, colour, size) on a dark or light textured background; a lone object
sits left, right, top, bottom or in the middle, a pair sits side by side.  Captions come in three styles:

- descriptive: plain, complete descriptions ("a large red circle on the left"), the language "GPT-2" and
  "CLIP" learn from;
- partial: descriptions that name a random subset of the attributes, so the retriever learns every level of
  detail a caption might have;
- alt-text: the vague web style of Conceptual Captions ("digital art selected for the #", "an illustration
  of a circle"); like real alt-text, about a quarter of them name the colour, a few the size.

Everything is drawn from one seeded generator, so a world is a pure function of its ``WorldConfig``.
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLOURS = {
    "red": (215, 35, 35),
    "green": (40, 170, 55),
    "blue": (45, 80, 225),
    "yellow": (235, 215, 40),
    "purple": (135, 55, 185),
    "orange": (245, 135, 25),
    "pink": (250, 135, 200),
    "cyan": (50, 205, 215),
}
COLOUR_NAMES = tuple(COLOURS)
SIZES = {"small": 4.5, "large": 7.5}  # half-width in pixels on the 32-pixel canvas
SIZE_NAMES = tuple(SIZES)
POSITIONS = {"left": (9, 16), "right": (23, 16), "top": (16, 9), "bottom": (16, 23), "middle": (16, 16)}
POSITION_NAMES = tuple(POSITIONS)
POSITION_PHRASES = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "middle": "in the middle",
}
BACKGROUNDS = {"dark": 35, "light": 215}
BACKGROUND_NAMES = tuple(BACKGROUNDS)

# Attribute codes per object: (shape, colour, size); per scene: n_objects, position (lone object), background.
NO_OBJECT = -1


@dataclass(frozen=True)
class WorldConfig:
    """Everything that decides a world; its hash names the cache entry."""

    seed: int = 0
    image_size: int = 32
    n_train: int = 20000
    n_validation: int = 1000
    n_test: int = 2000
    p_two_objects: float = 0.35
    references_per_image: int = 1


@dataclass(frozen=True)
class RenderStyle:
    """Image statistics: colour tint and pixel noise (standard deviations), a lighting gradient across the
    canvas (peak-to-peak grey levels) and a scale on the objects' colours.  The default is the main world's."""

    tint: float = 8.0
    noise: float = 6.0
    gradient: float = 0.0
    saturation: float = 1.0


@dataclass
class Scenes:
    """Attribute codes of N scenes; object 1 is ``NO_OBJECT`` in one-object scenes."""

    shape: np.ndarray  # [N, 2] int
    colour: np.ndarray  # [N, 2] int
    size: np.ndarray  # [N, 2] int
    position: np.ndarray  # [N] int, index into POSITION_NAMES (lone objects only)
    background: np.ndarray  # [N] int
    n_objects: np.ndarray  # [N] int, 1 or 2

    def __len__(self):
        return len(self.n_objects)

    def subset(self, index):
        """The scenes at ``index`` (an int array, slice or mask)."""
        return Scenes(*(getattr(self, field.name)[index] for field in dataclasses.fields(self)))

    def objects(self, i):
        """Names of the objects in scene ``i``: a list of (size, colour, shape)."""
        return [
            (SIZE_NAMES[self.size[i, k]], COLOUR_NAMES[self.colour[i, k]], SHAPES[self.shape[i, k]])
            for k in range(self.n_objects[i])
        ]


def sample_scenes(rng, n, p_two_objects):
    """Draws ``n`` scenes with uniformly distributed attributes."""
    n_objects = 1 + (rng.random(n) < p_two_objects)
    shape = rng.integers(len(SHAPES), size=(n, 2))
    colour = rng.integers(len(COLOURS), size=(n, 2))
    size = rng.integers(len(SIZES), size=(n, 2))
    single = n_objects == 1
    for codes in (shape, colour, size):
        codes[single, 1] = NO_OBJECT
    # Two objects side by side must not look identical, or "left" and "right" would be ambiguous.
    same = (~single) & (shape[:, 0] == shape[:, 1]) & (colour[:, 0] == colour[:, 1])
    colour[same, 1] = (colour[same, 0] + 1 + rng.integers(len(COLOURS) - 1, size=same.sum())) % len(COLOURS)
    return Scenes(
        shape=shape,
        colour=colour,
        size=size,
        position=rng.integers(len(POSITIONS), size=n),
        background=rng.integers(len(BACKGROUNDS), size=n),
        n_objects=n_objects,
    )


def _shape_mask(shape, dx, dy, r):
    """Boolean mask of a shape with half-width ``r`` on offset grids ``dx``, ``dy`` (pixels from its centre)."""
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return np.maximum(abs(dx), abs(dy)) <= r * 0.85
    if shape == "triangle":  # pointing up, base at the bottom
        return (dy <= r * 0.8) & (dy >= -r) & (abs(dx) <= (dy + r) * 0.6)
    if shape == "diamond":
        return abs(dx) + abs(dy) <= r * 1.1
    if shape == "cross":
        return (np.maximum(abs(dx), abs(dy)) <= r) & (np.minimum(abs(dx), abs(dy)) <= r * 0.35)
    raise ValueError(shape)


def render(scenes, image_size, rng, style=None):
    """Draws the scenes as uint8 RGB images ``[N, S, S, 3]`` with textured backgrounds and jittered objects.

    ``style`` (a ``RenderStyle``) sets the image statistics; the default is the main world's.
    """
    style = style or RenderStyle()
    n = len(scenes)
    grid = np.arange(image_size, dtype=np.float32) + 0.5
    ys, xs = np.meshgrid(grid, grid, indexing="ij")  # [S, S]
    scale = image_size / 32
    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    for i in range(n):
        base = BACKGROUNDS[BACKGROUND_NAMES[scenes.background[i]]]
        tint = rng.normal(0, style.tint, size=3)
        canvas = base + tint + rng.normal(0, style.noise, size=(image_size, image_size, 3))
        if style.gradient:  # a light falling across the canvas from a random side
            ramp = (xs if rng.random() < 0.5 else ys) / image_size - 0.5  # [S, S] in [-0.5, 0.5]
            canvas += (style.gradient * rng.choice((-1, 1)) * ramp)[..., None]
        if scenes.n_objects[i] == 1:
            centres = [POSITIONS[POSITION_NAMES[scenes.position[i]]]]
        else:
            centres = [(9, 16), (23, 16)]
        for k, (cx, cy) in enumerate(centres):
            cx, cy = (np.array([cx, cy]) + rng.uniform(-1.5, 1.5, size=2)) * scale
            r = SIZES[SIZE_NAMES[scenes.size[i, k]]] * scale * rng.uniform(0.9, 1.1)
            mask = _shape_mask(SHAPES[scenes.shape[i, k]], xs - cx, ys - cy, r)
            rgb = np.array(COLOURS[COLOUR_NAMES[scenes.colour[i, k]]]) * style.saturation + rng.normal(0, 10, size=3)
            canvas[mask] = rgb + rng.normal(0, 5 * style.noise / 6, size=(mask.sum(), 3))
        images[i] = np.clip(canvas, 0, 255).astype(np.uint8)
    return images


# ---------------------------------------------------------------------------------------------------------------
# Caption styles.  Every caption is rendered from a Mention (what it states), so the world can tell exactly which
# scenes a caption fits; only the retriever's contrastive pretraining uses that.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mention:
    """What a caption states: up to two objects (size, colour, shape; None = unsaid) and scene facts."""

    objects: tuple = ()
    relation: str = None  # two objects: "left" (first is left of second) or "and" (either order)
    position: str = None  # lone object only
    background: str = None
    n_objects: int = None


def _object_text(size, colour, shape):
    words = [w for w in (size, colour, shape or "shape") if w]
    return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)


def _kept(rng, p):
    return rng.random() < p


def describe(scenes, i, rng, complete=True):
    """A plain description of scene ``i`` and its Mention: complete, or naming a random subset of attributes."""
    p_size, p_colour, p_extra = (1.0, 1.0, 1.0) if complete else (0.5, 0.6, 0.5)
    objects = [
        (size if _kept(rng, p_size) else None, colour if _kept(rng, p_colour) else None, shape)
        for size, colour, shape in scenes.objects(i)
    ]
    position = relation = None
    if len(objects) == 1:
        position = POSITION_NAMES[scenes.position[i]] if _kept(rng, p_extra) else None
    elif not complete and rng.random() < 0.3:  # only one of the two objects
        objects = [objects[rng.integers(2)]]
    else:
        relation = "left" if rng.random() < 0.6 else "and"
        if relation == "and" and rng.random() < 0.5:
            objects.reverse()
    background = BACKGROUND_NAMES[scenes.background[i]] if _kept(rng, p_extra * 0.5) else None
    mention = Mention(tuple(objects), relation, position, background)
    return render_text(mention, rng), mention


def render_text(mention, rng):
    """The descriptive sentence of a mention."""
    objects = [_object_text(*obj) for obj in mention.objects]
    if mention.relation == "left":
        text = f"{objects[0]} left of {objects[1]}" if rng.random() < 0.5 else f"{objects[1]} right of {objects[0]}"
    elif mention.relation == "and":
        text = f"{objects[0]} and {objects[1]}"
    else:
        text = objects[0]
        if mention.position:
            text += " " + POSITION_PHRASES[mention.position]
    if mention.background:
        text += f" on a {mention.background} background"
    return text


ALT_TEXT_VAGUE = (
    "digital art selected for the #",
    "abstract geometric background",
    "logo design",
    "a simple geometric composition",
    "vector illustration",
    "geometric shapes for your design",
)
ALT_TEXT_SHAPE = (
    "an illustration of a {shape}",
    "{shape} icon in flat style",
    "a {shape} on a {background} background",
    "the {shape} is a symbol of the brand",
    "illustration of a {shape}",
)
ALT_TEXT_COLOUR = (
    "an illustration of a {colour} {shape}",
    "vector illustration of a {colour} {shape}",
    "{colour} {shape} icon",
)
ALT_TEXT_SIZE = ("a {size} {shape} on a {background} background", "an illustration of a {size} {shape}")
ALT_TEXT_DETAILED = (
    "a {size} {colour} {shape} on a {background} background",
    "{size} {colour} {shape} on a {background} background",
)
ALT_TEXT_PAIR = ("two geometric shapes", "a pair of shapes")

# How often each alt-text style is drawn: real alt-text is mostly vague, sometimes names a colour, and now and
# then is a plain description.
ALT_TEXT_STYLES = (
    (ALT_TEXT_VAGUE, 0.20),
    (ALT_TEXT_SHAPE, 0.40),
    (ALT_TEXT_COLOUR, 0.25),
    (ALT_TEXT_SIZE, 0.08),
    (ALT_TEXT_DETAILED, 0.07),
)


def alt_text(scenes, i, rng):
    """A Conceptual-Captions-like alt-text for scene ``i`` and its Mention: vague, about one object at most."""
    objects = scenes.objects(i)
    if len(objects) == 2 and rng.random() < 0.15:
        return ALT_TEXT_PAIR[rng.integers(len(ALT_TEXT_PAIR))], Mention(n_objects=2)
    size, colour, shape = objects[rng.integers(len(objects))]
    templates, weights = zip(*ALT_TEXT_STYLES)
    style = templates[rng.choice(len(templates), p=np.array(weights) / sum(weights))]
    template = style[rng.integers(len(style))]
    background = BACKGROUND_NAMES[scenes.background[i]]
    text = template.format(shape=shape, colour=colour, size=size, background=background)
    said = lambda slot, value: value if "{" + slot + "}" in template else None  # noqa: E731
    mention = Mention(
        objects=((said("size", size), said("colour", colour), shape),) if "{shape}" in template else (),
        background=said("background", background),
    )
    return text, mention


def _code(names, value):
    return names.index(value) if value is not None else None


def _object_matches(scenes, obj, slot):
    """[N] bool: the object in ``slot`` exists and has every attribute ``obj`` states."""
    size, colour, shape = obj
    match = scenes.shape[:, slot] != NO_OBJECT
    for codes, names, value in (
        (scenes.size, SIZE_NAMES, size),
        (scenes.colour, COLOUR_NAMES, colour),
        (scenes.shape, SHAPES, shape),
    ):
        if value is not None:
            match &= codes[:, slot] == _code(names, value)
    return match


def matches(mention, scenes):
    """[N] bool: which scenes the mention fits."""
    fit = np.ones(len(scenes), dtype=bool)
    if mention.n_objects is not None:
        fit &= scenes.n_objects == mention.n_objects
    if mention.background is not None:
        fit &= scenes.background == _code(BACKGROUND_NAMES, mention.background)
    if mention.position is not None:
        fit &= (scenes.n_objects == 1) & (scenes.position == _code(POSITION_NAMES, mention.position))
    objects = mention.objects
    if len(objects) == 1:
        fit &= _object_matches(scenes, objects[0], 0) | _object_matches(scenes, objects[0], 1)
    elif len(objects) == 2:
        in_order = _object_matches(scenes, objects[0], 0) & _object_matches(scenes, objects[1], 1)
        if mention.relation == "and":
            in_order |= _object_matches(scenes, objects[1], 0) & _object_matches(scenes, objects[0], 1)
        fit &= in_order
    return fit


def vocabulary():
    """Every word any caption style can use, for the word-level tokenizer."""
    words = set(SHAPES) | set(COLOURS) | set(SIZES) | set(BACKGROUNDS)
    texts = list(POSITION_PHRASES.values()) + ["a an and left of right of on background shape"]
    for style in (ALT_TEXT_VAGUE, ALT_TEXT_SHAPE, ALT_TEXT_COLOUR, ALT_TEXT_SIZE, ALT_TEXT_DETAILED, ALT_TEXT_PAIR):
        texts += [t.format(shape="", colour="", size="", background="") for t in style]
    for text in texts:
        words |= set(text.split())
    return sorted(words)
