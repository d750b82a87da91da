"""The generators' default word lists and templates, from the ACDC authors' repository.

They come from `acdc/ioi/ioi_dataset.py` and `acdc/greaterthan/utils.py` of the ACDC code,
written in this project's template notation (`[A]`, `[B]`, `[PLACE]`, `[OBJECT]`; `[NOUN]`,
`[CC]`, `[YY]`). The bundled task files write the same lists out in full, so that a copy of a
task with edited lists is a new task; these are the defaults of a key left out.
"""

from __future__ import annotations

IOI_NAMES: tuple[str, ...] = (
    "Michael", "Christopher", "Jessica", "Matthew", "Ashley", "Jennifer", "Joshua", "Amanda",
    "Daniel", "David", "James", "Robert", "John", "Joseph", "Andrew", "Ryan", "Brandon",
    "Jason", "Justin", "Sarah", "William", "Jonathan", "Stephanie", "Brian", "Nicole",
    "Nicholas", "Anthony", "Heather", "Eric", "Elizabeth", "Adam", "Megan", "Melissa", "Kevin",
    "Steven", "Thomas", "Timothy", "Christina", "Kyle", "Rachel", "Laura", "Lauren", "Amber",
    "Brittany", "Danielle", "Richard", "Kimberly", "Jeffrey", "Amy", "Crystal", "Michelle",
    "Tiffany", "Jeremy", "Benjamin", "Mark", "Emily", "Aaron", "Charles", "Rebecca", "Jacob",
    "Stephen", "Patrick", "Sean", "Erin", "Jamie", "Kelly", "Samantha", "Nathan", "Sara",
    "Dustin", "Paul", "Angela", "Tyler", "Scott", "Katherine", "Andrea", "Gregory", "Erica",
    "Mary", "Travis", "Lisa", "Kenneth", "Bryan", "Lindsey", "Kristen", "Jose", "Alexander",
    "Jesse", "Katie", "Lindsay", "Shannon", "Vanessa", "Courtney", "Christine", "Alicia",
    "Cody", "Allison", "Bradley", "Samuel",
)
IOI_PLACES: tuple[str, ...] = (
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "station",
)
IOI_OBJECTS: tuple[str, ...] = (
    "ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack",
)
IOI_TEMPLATES: tuple[str, ...] = (
    "When [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to",
    "Then, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [A] and [B] had a lot of fun at the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [A] and [B] were working at the [PLACE]. [B] decided to give a [OBJECT] to",
    "Then, [A] and [B] were thinking about going to the [PLACE]. [B] wanted to give a"
    " [OBJECT] to",
    "Then, [A] and [B] had a long argument, and afterwards [B] said to",
    "After [A] and [B] went to the [PLACE], [B] gave a [OBJECT] to",
    "When [A] and [B] got a [OBJECT] at the [PLACE], [B] decided to give it to",
    "When [A] and [B] got a [OBJECT] at the [PLACE], [B] decided to give the [OBJECT] to",
    "While [A] and [B] were working at the [PLACE], [B] gave a [OBJECT] to",
    "While [A] and [B] were commuting to the [PLACE], [B] gave a [OBJECT] to",
    "After the lunch, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Afterwards, [A] and [B] went to the [PLACE]. [B] gave a [OBJECT] to",
    "Then, [A] and [B] had a long argument. Afterwards [B] said to",
    "The [PLACE] [A] and [B] went to had a [OBJECT]. [B] gave it to",
    "Friends [A] and [B] found a [OBJECT] at the [PLACE]. [B] gave it to",
)

GT_NOUNS: tuple[str, ...] = (
    "abduction", "accord", "affair", "agreement", "appraisal", "assaults", "assessment",
    "attack", "attempts", "campaign", "captivity", "case", "challenge", "chaos", "clash",
    "collaboration", "coma", "competition", "confrontation", "consequence", "conspiracy",
    "construction", "consultation", "contact", "contract", "convention", "cooperation",
    "custody", "deal", "decline", "decrease", "demonstrations", "development", "disagreement",
    "disorder", "dispute", "domination", "dynasty", "effect", "effort", "employment",
    "endeavor", "engagement", "epidemic", "evaluation", "exchange", "existence", "expansion",
    "expedition", "experiments", "fall", "fame", "flights", "friendship", "growth", "hardship",
    "hostility", "illness", "impact", "imprisonment", "improvement", "incarceration",
    "increase", "insurgency", "invasion", "investigation", "journey", "kingdom", "marriage",
    "modernization", "negotiation", "notoriety", "obstruction", "operation", "order",
    "outbreak", "outcome", "overhaul", "patrols", "pilgrimage", "plague", "plan", "practice",
    "process", "program", "progress", "project", "pursuit", "quest", "raids", "reforms",
    "reign", "relationship", "retaliation", "riot", "rise", "rivalry", "romance", "rule",
    "sanctions", "shift", "siege", "slump", "stature", "stint", "strikes", "study", "test",
    "testing", "tests", "therapy", "tour", "tradition", "treaty", "trial", "trip",
    "unemployment", "voyage", "warfare", "work",
)
GT_TEMPLATES: tuple[str, ...] = ("The [NOUN] lasted from the year [CC][YY] to the year [CC]",)
