"""The words that name each of the 80 COCO object categories, written for this project.

Built from the category names and their common variants in COCO captions (the idea follows
Rohrbach et al., EMNLP 2018; the lists are this project's own). :func:`phrase_table` turns them
into a ``{token tuple: category}`` table that :func:`captioning.evaluation.grounding.chair.find_mentions`
matches longest phrase first, so two-word names win over their last word.

Choices, for words that can mean more than one thing:

- Multi-word names are objects of their own: "hot dog" is never a dog, "teddy bear" never a
  bear, "microwave oven" never an oven, "toilet bowl" never a bowl, "computer mouse" a mouse,
  "computer monitor" a tv, "motor bike" / "dirt bike" a motorcycle, "train car" a train.
- Places named after an object are no mention at all (:data:`NON_OBJECTS`): "bus stop",
  "bus station", "train station", "train track(s)", "ski slope", "ski lift", "ski resort".
- :data:`MODIFIERS` ("orange", "baby", "mother") are not counted when the next word starts
  another object name: "an orange cat" names a cat, "a baby elephant" an elephant; "an orange
  and an apple" and "a baby in a crib" still count orange and person.
- Sport names are not objects: "baseball", "tennis", "football", "soccer" alone map to nothing
  ("baseball player" is a person, "baseball bat" a bat, "soccer ball" a sports ball).
- "glass" and "seat" alone map to nothing (glass tables, car seats); "wine glass", "glass of
  wine" are wine glasses. "bat" is a baseball bat, "glove" / "mitt" a baseball glove, "table" /
  "desk" a dining table, "computer" a laptop, "monitor" a tv, "meter" a parking meter, "van" /
  "taxi" a car: the readings that COCO images almost always mean.
- Plurals come from :func:`plural` (``man`` -> ``men``, ``bus`` -> ``buses``, ``knife`` ->
  ``knives``, ``sheep`` and ``skis`` unchanged); "people" names person.

Categories not in :data:`COCO_SYNONYMS` (a data set with its own instance files) are named by
their category name and its plural.
"""

from __future__ import annotations

from collections.abc import Iterable

from captioning.text import tokenize

__all__ = ["COCO_CATEGORIES", "COCO_SYNONYMS", "MODIFIERS", "NON_OBJECTS", "phrase_table"]
__all__ += ["plural"]

Phrase = tuple[str, ...]

# Singular forms; plurals are added by phrase_table. The first entry is the category name.
# fmt: off
COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("person", "people", "man", "woman", "boy", "girl", "child", "kid", "baby",
               "toddler", "infant", "guy", "lady", "gentleman", "adult", "teenager", "teen",
               "player", "skier", "surfer", "skateboarder", "snowboarder", "skater", "rider",
               "biker", "cyclist", "bicyclist", "pedestrian", "crowd", "worker", "chef", "cop",
               "policeman", "policewoman", "officer", "soldier", "catcher", "pitcher", "batter",
               "umpire", "spectator", "tourist", "bride", "groom", "student", "doctor",
               "mother", "father", "son", "daughter", "brother", "sister", "husband", "wife",
               "friend", "customer", "vendor", "driver", "someone", "somebody"),
    "bicycle": ("bicycle", "bike"),
    "car": ("car", "automobile", "sedan", "taxi", "cab", "suv", "van", "minivan", "jeep",
            "limo", "limousine", "hatchback"),
    "motorcycle": ("motorcycle", "motorbike", "motor bike", "motor cycle", "dirt bike",
                   "scooter", "moped"),
    "airplane": ("airplane", "plane", "aeroplane", "airliner", "jet", "jetliner", "aircraft"),
    "bus": ("bus", "busses", "double decker"),
    "train": ("train", "locomotive", "tram", "trolley", "streetcar", "train car"),
    "truck": ("truck", "pickup", "lorry", "firetruck"),
    "boat": ("boat", "ship", "yacht", "canoe", "kayak", "sailboat", "ferry", "raft", "rowboat",
             "speedboat"),
    "traffic light": ("traffic light", "traffic signal", "stop light", "stoplight"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter", "meter"),
    "bench": ("bench",),
    "bird": ("bird", "pigeon", "seagull", "gull", "duck", "goose", "parrot", "owl", "eagle",
             "hawk", "crow", "sparrow", "swan", "hen", "rooster", "penguin", "flamingo",
             "pelican", "heron"),
    "cat": ("cat", "kitten", "kitty"),
    "dog": ("dog", "puppy", "pup", "doggy"),
    "horse": ("horse", "pony", "foal", "stallion", "mare"),
    "sheep": ("sheep", "lamb", "ram", "ewe"),
    "cow": ("cow", "cattle", "bull", "calf", "ox", "heifer"),
    "elephant": ("elephant",),
    "bear": ("bear",),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack", "back pack", "knapsack", "rucksack"),
    "umbrella": ("umbrella", "parasol"),
    "handbag": ("handbag", "hand bag", "purse"),
    "tie": ("tie", "necktie", "bow tie"),
    "suitcase": ("suitcase", "suit case", "luggage"),
    "frisbee": ("frisbee",),
    "skis": ("skis", "ski"),
    "snowboard": ("snowboard",),
    "sports ball": ("sports ball", "ball"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat", "bat"),
    "baseball glove": ("baseball glove", "glove", "mitt", "baseball mitt", "catcher s mitt"),
    "skateboard": ("skateboard", "skate board"),
    "surfboard": ("surfboard", "surf board"),
    "tennis racket": ("tennis racket", "racket", "racquet", "tennis racquet"),
    "bottle": ("bottle",),
    "wine glass": ("wine glass", "wineglass", "champagne glass", "glass of wine",
                   "glasses of wine"),
    "cup": ("cup", "mug", "teacup", "tea cup", "coffee cup"),
    "fork": ("fork",),
    "knife": ("knife",),
    "spoon": ("spoon",),
    "bowl": ("bowl",),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "sub", "burger", "hamburger", "cheeseburger", "panini"),
    "orange": ("orange",),
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog", "hotdog", "chili dog", "corn dog"),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut"),
    "cake": ("cake", "cupcake", "cheesecake"),
    "chair": ("chair", "armchair", "stool", "recliner", "high chair", "highchair"),
    "couch": ("couch", "sofa", "loveseat", "love seat"),
    "potted plant": ("potted plant", "plant", "houseplant", "house plant"),
    "bed": ("bed",),
    "dining table": ("dining table", "table", "desk"),
    "toilet": ("toilet", "urinal", "commode", "toilet bowl", "toilet seat"),
    "tv": ("tv", "television", "monitor", "computer monitor"),
    "laptop": ("laptop", "computer", "notebook computer", "netbook"),
    "mouse": ("mouse", "computer mouse"),
    "remote": ("remote", "remote control", "controller"),
    "keyboard": ("keyboard", "computer keyboard"),
    "cell phone": ("cell phone", "cellphone", "phone", "mobile phone", "smartphone",
                   "smart phone", "telephone", "iphone"),
    "microwave": ("microwave", "microwave oven"),
    "oven": ("oven", "stove", "stovetop", "stove top"),
    "toaster": ("toaster", "toaster oven"),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge"),
    "book": ("book",),
    "clock": ("clock",),
    "vase": ("vase",),
    "scissors": ("scissors", "scissor"),
    "teddy bear": ("teddy bear", "teddy", "teddybear", "stuffed animal", "stuffed bear"),
    "hair drier": ("hair drier", "hair dryer", "hairdryer", "blow dryer", "blowdryer"),
    "toothbrush": ("toothbrush", "tooth brush"),
}
# fmt: on
COCO_CATEGORIES: tuple[str, ...] = tuple(COCO_SYNONYMS)  # the 80 names, in COCO id order
NON_OBJECTS: tuple[str, ...] = (
    "bus stop",
    "bus station",
    "train station",
    "train track",
    "ski slope",
    "ski lift",
    "ski resort",
)
MODIFIERS: frozenset[str] = frozenset({"orange", "baby", "mother"})

_SAME_PLURAL = {"sheep", "skis", "scissors", "people", "cattle", "broccoli", "luggage", "busses"}
_SAME_PLURAL |= {"someone", "somebody", "aircraft", "wine"}
_IRREGULAR = {"person": "people", "child": "children", "mouse": "mice", "knife": "knives"}
_IRREGULAR |= {"calf": "calves", "ox": "oxen", "goose": "geese", "bus": "buses"}


def plural(word: str) -> str:
    """The plural of one English noun from the lists above (not a general inflector).

    Args:
        word: A singular noun, e.g. ``"bench"``.

    Returns:
        e.g. ``"benches"``, ``"men"`` for ``"man"``, ``"puppies"``, ``"sheep"``.
    """
    if word in _SAME_PLURAL:
        return word
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("man"):
        return word[:-3] + "men"
    if word.endswith(("s", "sh", "ch", "x", "z")):
        return word + "es"
    if word.endswith("y") and word[-2:-1] not in ("a", "e", "i", "o", "u"):
        return word[:-1] + "ies"
    return word + "s"


def _forms(phrase: str) -> list[Phrase]:
    """The phrase's tokens and, with its last word pluralised, its plural tokens."""
    words = tuple(tokenize(phrase))
    return [words, (*words[:-1], plural(words[-1]))]


def phrase_table(categories: Iterable[str] = COCO_CATEGORIES) -> dict[Phrase, str | None]:
    """Every phrase naming one of ``categories`` (singular and plural) -> the category.

    Args:
        categories: Category names, e.g. the ``name`` fields of an instances file; names not in
            :data:`COCO_SYNONYMS` are named by themselves.

    Returns:
        ``{("hot", "dogs"): "hot dog", ("men",): "person", ("bus", "stop"): None, ...}``; a
        ``None`` category marks a phrase that names no object (:data:`NON_OBJECTS`).

    Raises:
        ValueError: two categories claim the same phrase (a bug in the lists).
    """
    table: dict[Phrase, str | None] = {}
    for phrase in NON_OBJECTS:
        table.update(dict.fromkeys(_forms(phrase)))
    for category in categories:
        for synonym in COCO_SYNONYMS.get(category, (category,)):
            for words in _forms(synonym):
                if table.get(words, category) != category:
                    raise ValueError(f"{' '.join(words)!r} names {table[words]} and {category}")
                table[words] = category
    return table
