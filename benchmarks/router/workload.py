"""The routing workload: a personal edge assistant's traffic, drawn from real data.

Five kinds of request (the mix is stated in the JSON, and was fixed before
anything was measured):
  taught_fact  the user taught a fact (memory.add kind=fact, or a rating-1
               feedback with a correction) and later asks it in other words;
               the facts are ISO codes from pycountry's data files (ISO 3166-1
               numeric, ISO 4217 currency, ISO 639-3 language codes): nobody
               here wrote them and a 135M model does not know them;
  document     a multi-sentence country profile (built from ISO 3166-1 and
               3166-2 records) was added with memory.add; the question is
               answered by one sentence of it;
  general      general knowledge the model can answer without memory;
  chat         greetings and thanks;
  long_form    "write a paragraph about ...".

Each query carries its own check (``quality_of``): a gold regex for facts,
documents and general knowledge, a reply for chat, an on-topic paragraph for
long-form requests.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import re
from typing import Any, Sequence

from _datasets import iso_tables

TAUGHT_PER_STANDARD = 10
N_DOCUMENTS = 8
TEMPLATES: dict[str, dict[str, Any]] = {
    "iso3166-1": {
        "fact": "The ISO 3166-1 numeric code of {name} is {code}.",
        "question": "What is the ISO numeric country code of {name}?",
        "correction": "{name} has the ISO 3166-1 numeric code {code}.",
        "ask": ["Which three-digit number does the ISO 3166 standard assign to {name}?",
                "Tell me the numeric ISO country code for {name}."],
    },
    "iso4217": {
        "fact": "The ISO 4217 currency code of the {name} is {code}.",
        "question": "What is the ISO 4217 code of the {name}?",
        "correction": "The {name} has the currency code {code}.",
        "ask": ["Which three-letter code stands for the {name} in ISO 4217?",
                "What currency code should I use for the {name}?"],
    },
    "iso639-3": {
        "fact": "The ISO 639-3 code of the {name} language is {code}.",
        "question": "What is the ISO 639-3 code for {name}?",
        "correction": "{name} has the ISO 639-3 language code {code}.",
        "ask": ["Which three-letter ISO 639-3 identifier does the {name} language have?",
                "Give me the language code of {name} in ISO 639-3."],
    },
}
GENERAL: list[tuple[str, str]] = [
    ("What is the capital of France?", r"paris"),
    ("What is the capital city of Japan?", r"tokyo"),
    ("How many days are there in a week?", r"\bseven\b|(?<!\d)7(?!\d)"),
    ("What color is the sky on a clear day?", r"blue"),
    ("What do bees make?", r"honey"),
    ("What is frozen water called?", r"\bice\b"),
    ("Which planet do we live on?", r"earth"),
    ("What is the largest ocean on Earth?", r"pacific"),
    ("How many legs does a spider have?", r"\beight\b|(?<!\d)8(?!\d)"),
    ("What gas do plants take in from the air?", r"carbon dioxide|co2|co₂"),
    ("Who wrote Romeo and Juliet?", r"shakespeare"),
    ("At how many degrees Celsius does water boil?", r"(?<!\d)100(?!\d)|hundred"),
    ("Which animal is known as the king of the jungle?", r"\blions?\b"),
    ("What is the opposite of cold?", r"\bhot\b|\bwarm"),
    ("How many continents are there?", r"\bseven\b|(?<!\d)7(?!\d)"),
    ("What language is mainly spoken in Brazil?", r"portuguese"),
]
CHAT = ["hello!", "hi there", "good morning", "thanks, that was helpful", "how are you today?",
        "thank you so much!", "ok, bye for now", "nice, that works"]
LONG_FORM: list[tuple[str, str]] = [
    ("Write a paragraph about the ocean.", r"ocean|\bseas?\b"),
    ("Write a short paragraph about why sleep is important.", r"sleep"),
    ("Write a paragraph describing a busy city market.", r"market"),
    ("Write a paragraph about the history of the bicycle.", r"bicycle|\bbikes?\b"),
    ("Write a paragraph about autumn.", r"autumn|\bfall\b"),
    ("Write a paragraph explaining how rain forms.", r"\brain"),
]
# A paragraph: at least this many words and on topic (see ``quality_of``).
PARAGRAPH_MIN_WORDS = 60
WORKLOAD_VERSION = "daemon-pipeline-v2-splits"


@dataclasses.dataclass
class Query:
    query: str
    category: str                 # taught_fact | document | general | chat | long_form
    group: str                    # train/held-out split unit (one topic)
    check: dict[str, Any]   # {"regex", "case"} | {"rule": "reply"} | {"rule": "paragraph", "topic"}
    split: str = "dev"      # dev: thresholds, priors and router labels come from here only;
    #                         heldout: reported, never fitted or trained on


def mix(queries: Sequence[Query]) -> dict[str, int]:
    """How many queries of each category."""
    out: dict[str, int] = {}
    for q in queries:
        out[q.category] = out.get(q.category, 0) + 1
    return out


@dataclasses.dataclass
class Workload:
    facts: list[dict[str, str]]   # {"text", "via": memory.add|correction, "question", "standard"}
    documents: list[str]
    queries: list[Query]

    def to_json(self) -> dict[str, Any]:
        return {"facts": self.facts, "documents": self.documents,
                "queries": [dataclasses.asdict(q) for q in self.queries]}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Workload":
        return cls(list(d["facts"]), list(d["documents"]), [Query(**q) for q in d["queries"]])

    def split(self, name: str) -> list[Query]:
        return [q for q in self.queries if q.split == name]

    def fingerprint(self) -> str:
        blob = json.dumps([WORKLOAD_VERSION, self.to_json()], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def memory_fingerprint(self) -> str:
        """What an outcome depends on besides its query: the memory contents (cache key)."""
        blob = json.dumps([WORKLOAD_VERSION, self.facts, self.documents], sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def mix(self) -> dict[str, int]:
        return mix(self.queries)


def build_workload(seed: int = 7) -> Workload:
    """The workload described above, drawn from the ISO tables with a fixed seed."""
    t = iso_tables()
    rng = random.Random(seed)
    pools = {
        "iso3166-1": [{"name": r["name"], "code": r["numeric"]} for r in t["iso3166-1"]],
        "iso4217": [{"name": r["name"], "code": r["alpha_3"]} for r in t["iso4217"]
                    if not r["alpha_3"].startswith("X")],       # X..: funds, metals, test codes
        "iso639-3": [{"name": r["name"], "code": r["alpha_3"]} for r in t["iso639-3"]
                     if r.get("scope") == "I" and r.get("type") == "L"],
    }
    facts: list[dict[str, str]] = []
    queries: list[Query] = []
    used_countries: set[str] = set()
    n = 0
    for std, pool in pools.items():
        tpl = TEMPLATES[std]
        for i, rec in enumerate(rng.sample(pool, TAUGHT_PER_STANDARD)):
            via = "memory.add" if n % 2 == 0 else "correction"
            n += 1
            text = (tpl["fact"] if via == "memory.add" else tpl["correction"]).format(**rec)
            facts.append({"standard": std, "via": via, "text": text,
                          "question": tpl["question"].format(**rec)})
            if std == "iso3166-1":
                used_countries.add(rec["name"])
                check = {"regex": rf"(?<!\d)0*{int(rec['code'])}(?!\d)", "case": False}
            elif std == "iso4217":
                check = {"regex": rf"\b{rec['code']}\b", "case": True}
            else:
                check = {"regex": rf"(?<![a-z]){rec['code']}(?![a-z])", "case": False}
            queries.append(Query(tpl["ask"][i % len(tpl["ask"])].format(**rec), "taught_fact",
                                 f"{std}:{rec['code']}", check))
    subs: dict[str, list[dict[str, str]]] = {}
    for r in t["iso3166-2"]:
        if "parent" not in r:                                   # first-level subdivisions only
            subs.setdefault(r["code"].split("-")[0], []).append(r)
    countries = [c for c in t["iso3166-1"] if c["name"] not in used_countries
                 and 5 <= len(subs.get(c["alpha_2"], [])) <= 40]
    documents: list[str] = []
    for c in rng.sample(countries, N_DOCUMENTS):
        ss = subs[c["alpha_2"]]
        types: dict[str, int] = {}
        for s in ss:
            types[s["type"]] = types.get(s["type"], 0) + 1
        typ, m = max(types.items(), key=lambda kv: (kv[1], kv[0]))
        s1, s2, s3 = rng.sample(ss, 3)
        official = f" Its official name is {c['official_name']}." if c.get("official_name") else ""
        documents.append(
            f"Country profile: {c['name']}.{official} In ISO 3166-1 it has the two-letter code "
            f"{c['alpha_2']} and the three-letter code {c['alpha_3']}. ISO 3166-2 lists "
            f"{len(ss)} first-level subdivisions for {c['name']}; the most common type is "
            f"{typ.lower()} ({m} of them). Three of them are {s1['name']} ({s1['code']}), "
            f"{s2['name']} ({s2['code']}) and {s3['name']} ({s3['code']}).")
        grp = f"doc:{c['alpha_2']}"
        queries.append(Query(f"How many first-level subdivisions does ISO 3166-2 list for "
                             f"{c['name']}?", "document", grp,
                             {"regex": rf"(?<!\d){len(ss)}(?!\d)", "case": False}))
        queries.append(Query(f"What is the ISO 3166-2 code of {s2['name']} in {c['name']}?",
                             "document", grp, {"regex": re.escape(s2["code"]), "case": False}))
    for i, (q, rx) in enumerate(GENERAL):
        queries.append(Query(q, "general", f"general:{i}", {"regex": rx, "case": False}))
    for i, q in enumerate(CHAT):
        queries.append(Query(q, "chat", f"chat:{i}", {"rule": "reply"}))
    for i, (q, rx) in enumerate(LONG_FORM):
        queries.append(Query(q, "long_form", f"long:{i}", {"rule": "paragraph", "topic": rx}))
    return Workload(facts, documents, queries)


def quality_of(q: Query, answer: str) -> float:
    """Benchmark judge, 1 or 0: gold regex for facts, documents and general knowledge;
    at least two words for chat; for long-form, at least PARAGRAPH_MIN_WORDS words that
    mention the topic."""
    text = answer.strip()
    if not text:
        return 0.0
    c = q.check
    if "regex" in c:
        flags = 0 if c.get("case") else re.IGNORECASE
        return 1.0 if re.search(c["regex"], text, flags) else 0.0
    words = re.findall(r"\w+", text)
    if c["rule"] == "reply":
        return 1.0 if len(words) >= 2 else 0.0
    if c["rule"] == "paragraph":
        return 1.0 if (len(words) >= PARAGRAPH_MIN_WORDS
                       and re.search(c["topic"], text, re.IGNORECASE)) else 0.0
    raise ValueError(f"unknown check {c}")


# ---------------------------------------------------------------------------
# Frozen splits and hard negatives (issue 10).
#
# The first-start thresholds (learning/curriculum.py) were calibrated on the
# similarities of ``build_workload(7)``'s queries, so that workload is the
# *dev* split, together with hard negatives about its own entities. The
# *heldout* split is drawn from entities dev never uses, asked in phrasings
# that appear nowhere in TEMPLATES (written once, before any held-out outcome
# was seen, and never used for dev), with its own hard negatives:
#   neg_other_attribute  same entity as a taught fact, another attribute
#                        (taught the numeric code of X; asked X's alpha-3 code);
#   neg_other_entity     same attribute as taught facts, an entity nobody taught.
# The right behaviour on a hard negative is never to return the taught fact.

HELDOUT_PARAPHRASES: dict[str, list[str]] = {
    "iso3166-1": ["I keep forgetting the three-digit number ISO gave {name}. Which was it?",
                  "{name}: numeric country code, please.",
                  "If I fill in a form asking for the ISO numeric code of {name}, what goes there?"],
    "iso4217": ["Paying in the {name} - what are its three letters on an invoice?",
                "Remind me of the alphabetic currency code for the {name}.",
                "The {name} is written how, as a currency code?"],
    "iso639-3": ["{name} speakers: which ISO 639-3 tag marks their language?",
                 "Three-letter language identifier for {name}?",
                 "What did I note down as the 639-3 code of {name}?"],
}
HELDOUT_GENERAL: list[tuple[str, str]] = [
    ("What is the capital of Italy?", r"rome|roma"),
    ("How many hours are in a day?", r"24|twenty-four"),
    ("What is the chemical symbol for gold?", r"\bau\b"),
    ("Which is the largest planet in our solar system?", r"jupiter"),
    ("What do caterpillars turn into?", r"butterfl|moth"),
    ("How many sides does a triangle have?", r"\bthree\b|(?<!\d)3(?!\d)"),
]
HELDOUT_CHAT = ["hey, good evening", "cheers, much appreciated", "see you tomorrow"]
HELDOUT_LONG: list[tuple[str, str]] = [
    ("Write a paragraph about winter mornings.", r"winter|morning"),
    ("Write a paragraph about why people keep gardens.", r"garden"),
]
OTHER_ATTRIBUTE = {
    # taught standard -> (question about another attribute of the same record, record key)
    "iso3166-1": ("What is the ISO 3166-1 alpha-3 code of {name}?", "alpha_3"),
    "iso4217": ("What is the ISO 4217 numeric code of the {name}?", "numeric"),
}
OTHER_ENTITY = {
    "iso3166-1": "What is the ISO 3166-1 numeric code of {name}?",
    "iso4217": "What is the ISO 4217 code of the {name}?",
}


def _check_for(std: str, key: str, code: str) -> dict[str, Any]:
    if key == "numeric":
        return {"regex": rf"(?<!\d)0*{int(code)}(?!\d)", "case": False}
    if std == "iso639-3":
        return {"regex": rf"(?<![a-z]){code}(?![a-z])", "case": False}
    return {"regex": rf"\b{code}\b", "case": True}


def _pools(t: dict[str, list[dict[str, str]]]) -> dict[str, list[dict[str, str]]]:
    return {
        "iso3166-1": list(t["iso3166-1"]),
        "iso4217": [r for r in t["iso4217"] if not r["alpha_3"].startswith("X")],
        "iso639-3": [r for r in t["iso639-3"] if r.get("scope") == "I" and r.get("type") == "L"],
    }


def _code_key(std: str) -> str:
    return "numeric" if std == "iso3166-1" else "alpha_3"


def _negatives(rng: random.Random, pools: dict[str, list[dict[str, str]]],
               taught: dict[str, list[dict[str, str]]], used: set[str], split: str,
               n_each: int) -> list[Query]:
    out: list[Query] = []
    for std, (tpl, key) in OTHER_ATTRIBUTE.items():
        for rec in [r for r in taught.get(std, []) if r.get(key)][:n_each]:
            out.append(Query(tpl.format(**rec), "neg_other_attribute", f"{std}:{rec[key]}:other",
                             _check_for(std, key, rec[key]), split))
    for std, tpl in OTHER_ENTITY.items():
        fresh = [r for r in pools[std] if r["name"] not in used]
        for rec in rng.sample(fresh, n_each):
            used.add(rec["name"])
            code = rec[_code_key(std)]
            out.append(Query(tpl.format(**rec), "neg_other_entity", f"{std}:{code}:untaught",
                             _check_for(std, _code_key(std), code), split))
    return out


def build_split_workload(dev_seed: int = 7, heldout_seed: int = 1001, n_neg: int = 4,
                         heldout_per_standard: int = 5, heldout_documents: int = 4) -> Workload:
    """dev = ``build_workload(dev_seed)`` plus hard negatives on its entities; heldout = fresh
    entities, untemplated phrasings, other general/chat/long-form items, its own negatives.
    One memory holds both splits' facts and documents (as one device would)."""
    dev = build_workload(dev_seed)
    t = iso_tables()
    pools = _pools(t)
    rng = random.Random(heldout_seed)
    dev_names = {r["name"] for std, pool in pools.items() for r in pool
                 if any(r["name"] in f["text"] for f in dev.facts)}
    doc_names = {d.split("Country profile: ")[1].split(".")[0] for d in dev.documents}
    used = set(dev_names) | doc_names
    dev_taught = {std: [r for r in pool if r["name"] in dev_names and any(
        r["name"] in f["text"] and f["standard"] == std for f in dev.facts)]
        for std, pool in pools.items()}
    queries = list(dev.queries)
    queries += _negatives(rng, pools, dev_taught, used, "dev", n_neg)
    facts = list(dev.facts)
    held_taught: dict[str, list[dict[str, str]]] = {}
    n = 0
    for std, pool in pools.items():
        tpl = TEMPLATES[std]
        fresh = [r for r in pool if r["name"] not in used]
        for i, rec in enumerate(rng.sample(fresh, heldout_per_standard)):
            used.add(rec["name"])
            held_taught.setdefault(std, []).append(rec)
            via = "memory.add" if n % 2 == 0 else "correction"
            n += 1
            rec2 = {"name": rec["name"], "code": rec[_code_key(std)]}
            text = (tpl["fact"] if via == "memory.add" else tpl["correction"]).format(**rec2)
            facts.append({"standard": std, "via": via, "text": text,
                          "question": tpl["question"].format(**rec2), "split": "heldout"})
            ask = HELDOUT_PARAPHRASES[std][i % len(HELDOUT_PARAPHRASES[std])]
            queries.append(Query(ask.format(**rec2), "taught_fact", f"h:{std}:{rec2['code']}",
                                 _check_for(std, _code_key(std), rec2["code"]), "heldout"))
    subs: dict[str, list[dict[str, str]]] = {}
    for r in t["iso3166-2"]:
        if "parent" not in r:
            subs.setdefault(r["code"].split("-")[0], []).append(r)
    countries = [c for c in t["iso3166-1"] if c["name"] not in used
                 and 5 <= len(subs.get(c["alpha_2"], [])) <= 40]
    documents = list(dev.documents)
    for c in rng.sample(countries, heldout_documents):
        used.add(c["name"])
        ss = subs[c["alpha_2"]]
        s1, s2 = rng.sample(ss, 2)
        documents.append(
            f"Notes on {c['name']} (alpha-2 {c['alpha_2']}, alpha-3 {c['alpha_3']}): ISO 3166-2 "
            f"gives it {len(ss)} first-level subdivisions, among them {s1['name']} "
            f"({s1['code']}) and {s2['name']} ({s2['code']}).")
        grp = f"hdoc:{c['alpha_2']}"
        queries.append(Query(f"According to my notes, how many top-level subdivisions does "
                             f"{c['name']} have?", "document", grp,
                             {"regex": rf"(?<!\d){len(ss)}(?!\d)", "case": False}, "heldout"))
        queries.append(Query(f"Which subdivision code did I write down for {s1['name']}?",
                             "document", grp, {"regex": re.escape(s1["code"]), "case": False},
                             "heldout"))
    for i, (q, rx) in enumerate(HELDOUT_GENERAL):
        queries.append(Query(q, "general", f"hgeneral:{i}", {"regex": rx, "case": False},
                             "heldout"))
    for i, q in enumerate(HELDOUT_CHAT):
        queries.append(Query(q, "chat", f"hchat:{i}", {"rule": "reply"}, "heldout"))
    for i, (q, rx) in enumerate(HELDOUT_LONG):
        queries.append(Query(q, "long_form", f"hlong:{i}", {"rule": "paragraph", "topic": rx},
                             "heldout"))
    queries += _negatives(rng, pools, held_taught, used, "heldout", n_neg)
    return Workload(facts, documents, queries)
