"""The words that name each of the 80 COCO object categories, as CHAIR (Rohrbach et al., 2018) reads them.

The word lists are those the paper's released code uses (its ``data/synonyms.txt``); the rules
below are this project's own code and give the same mentions, but for the deliberate
differences listed at the end. :func:`phrase_table` turns the lists into a
``{singular token tuple: category}`` table that
:func:`captioning.evaluation.grounding.chair.find_mentions` matches (two-word phrases first) on
the caption's tokens, each brought to its singular by :func:`singular`.

Rules (the released ones):

- Every word is singularised: "giraffes", "men", "wives", "persons", "mice", "knives".
- Two-word names are one mention: "hot dog" is never a dog, "teddy bear"
  never a bear, "laptop computer" one laptop, "toilet seat" a toilet, "bow tie" a tie,
  "street light" a traffic light; "home plate" and "train track(s)" name nothing.
- ``baby`` / ``adult`` + an animal word (:data:`ANIMAL_WORDS`) is that animal ("adult giraffe",
  "baby elephant"; "young giraffe" is a giraffe anyway: "young" names nothing); ``passenger`` +
  ``jet`` / ``train`` is that vehicle. Alone, "baby", "adult" and "passenger" are persons.
- A caption naming a toilet does not count "seat" as a chair ("the seat of the toilet").
- Only the listed words count: "plant(s)" alone is not a potted plant, "glass" alone not a wine
  glass, "glass of wine" nothing; "bow", "pitcher", "sub", "container" count as the released
  list says (tie, person, sandwich, bowl).

Deliberate differences from the released code, each because its output there is an accident:

- Its singulariser (``pattern.en.singularize``) turns "bus", "minibus", "airbus" into "bu",
  "minibu", "airbu", "ties" into "ty", "canoes" into "cano", "magpies" into "magpy", and leaves
  "collies" and "doggies" plural, so those words never count there; :func:`singular` gives
  the English singular, so they count here. "bus stop" and "bus station" still name nothing
  (:data:`NON_OBJECTS`), as there.
- Entries its list holds but can never match: " motor bike" and " cheesecake" (a leading space
  in the file), "iPhone" (captions are lower-cased), "stove top oven" (only pairs are joined):
  here "motor bike" is a motorcycle, "cheesecake" a cake, "iphone" a cell phone ("stove top
  oven" counts one oven either way).
- Tokens are the project's (:func:`captioning.text.tokenize`, the ones captions are decoded
  into) rather than NLTK's ``word_tokenize``: hyphens, slashes and quotes split words, so
  "hot-dog" is a hot dog, "fork/knife" a fork and a knife, '"stop" sign' a stop sign (there,
  "hot-dog" and "fork/knife" are unknown tokens and the quotes keep the pair apart).

On the 19,938 reference captions of ``tests/fixtures/coco-karpathy-test`` (real COCO
captions; 28,428 mentions by the released code) the two differ in 421 captions, all for these
reasons, nearly all of them "bus".

Categories not in :data:`COCO_SYNONYMS` (a data set with its own instance files) are named by
their category name.
"""

from __future__ import annotations

from collections.abc import Iterable

from captioning.text import tokenize

__all__ = ["ANIMAL_WORDS", "COCO_CATEGORIES", "COCO_SYNONYMS", "NON_OBJECTS"]
__all__ += ["phrase_table", "plural", "singular"]

Phrase = tuple[str, ...]

# Singular forms. The first entry is the category name.
# fmt: off
COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": ("person", "girl", "boy", "man", "woman", "kid", "child", "chef", "baker", "people",
               "adult", "rider", "children", "baby", "worker", "passenger", "sister", "biker",
               "policeman", "cop", "officer", "lady", "cowboy", "bride", "groom", "male",
               "female", "guy", "traveler", "mother", "father", "gentleman", "pitcher", "player",
               "skier", "snowboarder", "skater", "skateboarder", "foreigner", "caller",
               "offender", "coworker", "trespasser", "patient", "politician", "soldier",
               "grandchild", "serviceman", "walker", "drinker", "doctor", "bicyclist", "thief",
               "buyer", "teenager", "student", "camper", "driver", "solider", "hunter",
               "shopper", "villager"),
    "bicycle": ("bicycle", "bike", "unicycle", "minibike", "trike"),
    "car": ("car", "automobile", "van", "minivan", "sedan", "suv", "hatchback", "cab", "jeep",
            "coupe", "taxicab", "limo", "taxi"),
    "motorcycle": ("motorcycle", "scooter", "motor bike", "motor cycle", "motorbike", "moped"),
    "airplane": ("airplane", "jetliner", "plane", "air plane", "monoplane", "aircraft", "jet",
                 "airbus", "biplane", "seaplane"),
    "bus": ("bus", "minibus", "trolley"),
    "train": ("train", "locomotive", "tramway", "caboose"),
    "truck": ("truck", "pickup", "lorry", "hauler", "firetruck"),
    "boat": ("boat", "ship", "liner", "sailboat", "motorboat", "dinghy", "powerboat", "speedboat",
             "canoe", "skiff", "yacht", "kayak", "catamaran", "pontoon", "houseboat", "vessel",
             "rowboat", "trawler", "ferryboat", "watercraft", "tugboat", "schooner", "barge",
             "ferry", "sailboard", "paddleboat", "lifeboat", "freighter", "steamboat",
             "riverboat", "battleship", "steamship"),
    "traffic light": ("traffic light", "street light", "traffic signal", "stop light",
                      "streetlight", "stoplight"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter",),
    "bench": ("bench", "pew"),
    "bird": ("bird", "ostrich", "owl", "seagull", "goose", "duck", "parakeet", "falcon", "robin",
             "pelican", "waterfowl", "heron", "hummingbird", "mallard", "finch", "pigeon",
             "sparrow", "seabird", "osprey", "blackbird", "fowl", "shorebird", "woodpecker",
             "egret", "chickadee", "quail", "bluebird", "kingfisher", "buzzard", "willet", "gull",
             "swan", "bluejay", "flamingo", "cormorant", "parrot", "loon", "gosling", "waterbird",
             "pheasant", "rooster", "sandpiper", "crow", "raven", "turkey", "oriole", "cowbird",
             "warbler", "magpie", "peacock", "cockatiel", "lorikeet", "puffin", "vulture",
             "condor", "macaw", "peafowl", "cockatoo", "songbird"),
    "cat": ("cat", "kitten", "feline", "tabby"),
    "dog": ("dog", "puppy", "beagle", "pup", "chihuahua", "schnauzer", "dachshund", "rottweiler",
            "canine", "pitbull", "collie", "pug", "terrier", "poodle", "labrador", "doggie",
            "doberman", "mutt", "doggy", "spaniel", "bulldog", "sheepdog", "weimaraner", "corgi",
            "cocker", "greyhound", "retriever", "brindle", "hound", "whippet", "husky"),
    "horse": ("horse", "colt", "pony", "racehorse", "stallion", "equine", "mare", "foal",
              "palomino", "mustang", "clydesdale", "bronc", "bronco"),
    "sheep": ("sheep", "lamb", "ram", "goat", "ewe"),
    "cow": ("cow", "cattle", "oxen", "ox", "calf", "holstein", "heifer", "buffalo", "bull",
            "zebu", "bison"),
    "elephant": ("elephant",),
    "bear": ("bear", "panda"),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack", "knapsack"),
    "umbrella": ("umbrella",),
    "handbag": ("handbag", "wallet", "purse", "briefcase"),
    "tie": ("tie", "bow", "bow tie"),
    "suitcase": ("suitcase", "suit case", "luggage"),
    "frisbee": ("frisbee",),
    "skis": ("skis", "ski"),
    "snowboard": ("snowboard",),
    "sports ball": ("sports ball", "ball"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat",),
    "baseball glove": ("baseball glove",),
    "skateboard": ("skateboard",),
    "surfboard": ("surfboard", "longboard", "skimboard", "shortboard", "wakeboard"),
    "tennis racket": ("tennis racket", "racket"),
    "bottle": ("bottle",),
    "wine glass": ("wine glass",),
    "cup": ("cup",),
    "fork": ("fork",),
    "knife": ("knife", "pocketknife", "knive"),
    "spoon": ("spoon",),
    "bowl": ("bowl", "container"),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "burger", "sub", "cheeseburger", "hamburger"),
    "orange": ("orange",),
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog",),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut", "bagel"),
    "cake": ("cake", "cheesecake", "cupcake", "shortcake", "coffeecake", "pancake"),
    "chair": ("chair", "seat", "stool"),
    "couch": ("couch", "sofa", "recliner", "futon", "loveseat", "settee", "chesterfield"),
    "potted plant": ("potted plant", "houseplant"),
    "bed": ("bed",),
    "dining table": ("dining table", "table", "desk"),
    "toilet": ("toilet", "urinal", "commode", "lavatory", "potty", "toilet seat"),
    "tv": ("tv", "monitor", "televison", "television"),
    "laptop": ("laptop", "computer", "notebook", "netbook", "lenovo", "macbook",
               "laptop computer"),
    "mouse": ("mouse",),
    "remote": ("remote",),
    "keyboard": ("keyboard",),
    "cell phone": ("cell phone", "mobile phone", "phone", "cellphone", "telephone", "phon",
                   "smartphone", "iphone"),
    "microwave": ("microwave",),
    "oven": ("oven", "stovetop", "stove"),
    "toaster": ("toaster",),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge", "freezer"),
    "book": ("book",),
    "clock": ("clock",),
    "vase": ("vase",),
    "scissors": ("scissors",),
    "teddy bear": ("teddy bear", "teddybear"),
    "hair drier": ("hair drier", "hairdryer"),
    "toothbrush": ("toothbrush",),
}
# fmt: on
COCO_CATEGORIES: tuple[str, ...] = tuple(COCO_SYNONYMS)  # the 80 names, in COCO id order
# Two-word phrases that name no object (the pair is consumed, neither word counts).
NON_OBJECTS: tuple[str, ...] = ("home plate", "train track", "bus stop", "bus station")
# "baby" / "adult" + one of these is that animal ("baby animal", "adult cub": no object).
ANIMAL_WORDS: tuple[str, ...] = (
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
    "animal", "cub",
)  # fmt: skip
_QUALIFIED = {f"{q} {a}": a for q in ("baby", "adult") for a in ANIMAL_WORDS}
_QUALIFIED |= {"passenger jet": "jet", "passenger train": "train"}

_SAME_PLURAL = frozenset({"sheep", "skis", "scissors", "cattle", "broccoli", "luggage", "people"})
_SAME_PLURAL |= {"children", "oxen", "series", "species"}
_IRREGULAR = {"person": "people", "child": "children", "mouse": "mice", "knife": "knives"}
_IRREGULAR |= {"calf": "calves", "ox": "oxen", "goose": "geese", "wife": "wives"}
_IRREGULAR |= {"foot": "feet", "tooth": "teeth", "leaf": "leaves", "wolf": "wolves"}
_IRREGULAR |= {"shelf": "shelves", "half": "halves", "life": "lives", "loaf": "loaves"}
_SINGULAR = {p: s for s, p in _IRREGULAR.items()} | {"persons": "person", "glasses": "glass"}


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


def _candidates(word: str) -> list[str]:
    """The singulars ``word`` may be, most likely first, then the word itself."""
    found = [_SINGULAR[word]] if word in _SINGULAR else []
    if word.endswith("men"):
        found.append(word[:-3] + "man")
    if word.endswith("ies"):
        short = len(word) <= 4  # ties, pies: -ie; puppies, ladies: -y
        found += [word[:-1], word[:-3] + "y"] if short else [word[:-3] + "y", word[:-1]]
    if word.endswith("ves"):
        endings = ("fe", "f") if word.endswith("ives") else ("f", "fe")
        found += [word[:-3] + e for e in endings]
    if word.endswith(("ses", "xes", "zes", "ches", "shes")):
        found += [word[:-2], word[:-1]]
    elif word.endswith("s") and not word.endswith("ss"):
        found.append(word[:-1])  # (taxis, zebus, corgis: only known words are taken)
    return [*found, word]


def singular(word: str, known: Iterable[str] | None = None) -> str:
    """The singular of a lower-case word, as far as object words go.

    Args:
        word: A token, e.g. ``"wives"``, ``"buses"``, ``"puppies"``, ``"glasses"``.
        known: The words that may be meant (those of :func:`phrase_table`'s phrases): the
            first candidate among them wins, so "collies" is "collie" and "puppies" "puppy",
            and a known word stays itself ("skis", "people"). ``None``: the first rule that
            applies.

    Returns:
        e.g. ``"wife"``, ``"bus"``, ``"puppy"``, ``"glass"``; ``word`` itself if no rule
        applies or no candidate is known.
    """
    if known is None:
        return _candidates(word)[0] if word not in _SAME_PLURAL else word
    words = known if isinstance(known, (set, frozenset)) else set(known)
    if word in words:
        return word
    return next((c for c in _candidates(word) if c in words), word)


def phrase_table(categories: Iterable[str] = COCO_CATEGORIES) -> dict[Phrase, str | None]:
    """Every phrase naming one of ``categories``, in singular tokens -> the category.

        Args:
            categories: Category names, e.g. the ``name`` fields of an instances file; names not in
                :data:`COCO_SYNONYMS` are named by themselves.

        Returns:
            ``{("hot", "dog"): "hot dog", ("man",): "person", ("bus", "stop"): None,
            ("baby", "elephant"): "elephant", ...}``: one-word synonyms, the two-word
    the synonyms and qualified animals of ``categories``, and
            :data:`NON_OBJECTS` (``None``). Match it on tokens brought to :func:`singular`.

        Raises:
            ValueError: two categories claim the same phrase (a bug in the lists).
    """
    table: dict[Phrase, str | None] = dict.fromkeys(tuple(p.split()) for p in NON_OBJECTS)
    for category in categories:
        for synonym in COCO_SYNONYMS.get(category, (category,)):
            words = tuple(tokenize(synonym))
            if table.get(words, category) != category:
                raise ValueError(f"{' '.join(words)!r} names {table[words]} and {category}")
            table[words] = category
    for pair, word in _QUALIFIED.items():
        target = next((c for c, s in COCO_SYNONYMS.items() if word in s), None)
        if target in table.values() or target is None:
            table.setdefault(tuple(pair.split()), target)
    return table
