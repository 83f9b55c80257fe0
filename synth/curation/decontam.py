"""Decontamination: generated rows that copy an item of a benchmark's test set.

A tree that imitates GSM8K- or HumanEval-style problems will now and then write a test
item back, verbatim or lightly edited; training on it inflates the benchmark. The test
sets (`quality.decontaminate`) are indexed ONCE per run (`DecontamIndex.build`), and each
candidate field is then looked up with a few numpy calls. A candidate is contaminated when
its normalised text, against one test text (one field of one test item):

1. **13-gram**: shares a word 13-gram with it; or
2. **8-gram span**: its longest run of consecutive word 8-grams found in that test text
   spans at least half of the test text's words; or
3. **embedding** (only with `quality.decontaminate_cosine` set and the e5 model installed,
   synth/similarity/embedder.py): its question's embedding has at least that cosine with a test question
   (0.94 kept every unrelated GSM8K question out and caught 94 % of heavily edited copies on
   300 items; docs/quality.md).

and, as the degenerate case of 2, when its normalised text **is** the test text's (a
one-line docstring is all names and numbers: none of its n-grams is looked up alone).

Normalised text (`tokens`): unicode NFKC, lowercase, words only (punctuation goes), every
number is `0` (a GSM8K problem with its numbers changed still matches), and every name
the text itself defines as code (`def f(a, b)`, `x = ...`, `for i in`, `lambda k:`,
`class C`, `as m`) is `_id_` wherever it occurs, docstring included (a HumanEval function
with renamed identifiers still matches; prose defines no names and keeps its words).
n-grams are hashed to 64-bit ints (a polynomial over crc32 token codes: stable across
processes, so an index pickled to a Ray replica matches like the one built here).

Test n-grams found in more than `MAX_SHARED` test texts are boilerplate ("def _id_ _id_
_id_ ...", "how much money does she have left"), not evidence of one item, and are left
out. Test texts of fewer than 8 words cannot be matched (counted in `too_short`).
Measured figures (benchmarks/decontam.py, BENCHMARKS.md): recall on exact, renamed and
re-numbered copies, false positives on unrelated sets, throughput.

    index = DecontamIndex.build([TestItem("gsm8k#7", {"question": "..."})])
    match = index.check({"question": "...", "answer": "..."})   # Match or None
"""

from __future__ import annotations

import builtins
import hashlib
import keyword
import re
import unicodedata
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from synth.reject import Reject

LONG_N = 13  # words a shared n-gram needs to be a copy by itself
SPAN_N = 8  # words of the n-grams whose consecutive run makes a span
SPAN_SHARE = 0.5  # share of a test text a span must cover
MAX_SHARED = 20  # test texts an n-gram may occur in before it counts as boilerplate
CONTENT_SHARE = 0.6  # share of an n-gram's words that must say something (not `0`, `_id_`, `def`, `str`, ...)
MIN_DISTINCT = 7  # distinct words a shared 13-gram needs ("the output should be 0 for _id_ 0 the output ...")
ID_TOKEN, NUMBER_TOKEN = "_id_", "0"
_WORD = re.compile(r"\w+")
_NUMBER = re.compile(r"\d+")
_NAME = r"[A-Za-z_]\w*"
_DEFINES = [re.compile(p, re.MULTILINE) for p in (
    rf"\b(?:def|class)\s+({_NAME})",
    rf"^\s*({_NAME}(?:\s*,\s*{_NAME})*)\s*(?:[-+*/%|&^]|//|\*\*)?=(?!=)",
    rf"\bfor\s+\(?({_NAME}(?:\s*,\s*{_NAME})*)\)?\s+in\b",
    rf"\blambda\s+({_NAME}(?:\s*,\s*{_NAME})*)\s*:",
    rf"\bas\s+({_NAME})\s*[:,)\n]",
)]
_PARAMS = re.compile(rf"\bdef\s+{_NAME}\s*\(([^)]*)\)")
_KEEP = frozenset(keyword.kwlist) | frozenset(dir(builtins)) | {"self", "cls"}
_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd: the polynomial's base, arithmetic wraps mod 2**64


def row_names(fields: Mapping[str, Any]) -> set[str]:
    """The code names a whole row defines, over all its fields."""
    return defined_names(unicodedata.normalize("NFKC", "\n".join(str(v) for v in fields.values() if v is not None)))


def defined_names(text: str) -> set[str]:
    """Names the text defines as code, lowercased (builtins and keywords stay themselves).

    >>> sorted(defined_names("def add(a, b: int = 1):\\n    total = a + b\\n"))
    ['a', 'add', 'b', 'total']
    """
    names: set[str] = set()
    for pattern in _DEFINES:
        for found in pattern.findall(text):
            names.update(n.strip() for n in found.split(","))
    for params in _PARAMS.findall(text):
        for param in params.split(","):
            name = re.match(rf"\s*\**({_NAME})", param)
            if name:
                names.add(name.group(1))
    return {n.lower() for n in names if n and n not in _KEEP}


def tokens(text: str, names: set[str] | None = None) -> list[str]:
    """The normalised words of a text; `names`: the code names defined by the row it is part
    of (default: by the text itself), so a field that uses names another field defines
    (a solution using its prompt's parameters) is normalised like the whole.

    >>> tokens("def add(a, b):\\n    '''Add a to b.'''  # 3.5 ")
    ['def', '_id_', '_id_', '_id_', '_id_', '_id_', 'to', '_id_', '0', '0']
    """
    text = unicodedata.normalize("NFKC", str(text))
    names = defined_names(text) if names is None else names
    out: list[str] = []
    for word in _WORD.findall(text.lower()):
        if _NUMBER.fullmatch(word):
            if out and out[-1] == NUMBER_TOKEN:
                continue  # "48/2 = <<48/2=24>>24" is one number: a run of them says nothing
            word = NUMBER_TOKEN
        out.append(ID_TOKEN if word in names else word)
    return out


_CODES: dict[str, int] = {}


def _codes(words: Sequence[str]) -> np.ndarray:
    out = np.empty(len(words), dtype=np.uint64)
    for i, word in enumerate(words):
        code = _CODES.get(word)
        if code is None:
            code = _CODES[word] = zlib.crc32(word.encode()) | 1 << 32  # never 0
        out[i] = code
    return out


# words that say nothing about which item a text is: masked names and numbers, and the words
# of a Python signature ("from typing import list def _id_ _id_ str list int" is boilerplate)
_FILLER = {NUMBER_TOKEN, ID_TOKEN, "def", "import", "from", "typing", "list", "dict", "tuple", "set", "optional",
           "any", "union", "str", "int", "float", "bool", "none", "true", "false", "self", "return", "lambda"}
_MASKED = np.array(sorted({zlib.crc32(w.encode()) | 1 << 32 for w in _FILLER}), dtype=np.uint64)


def content_mask(words: Sequence[str]) -> np.ndarray:
    return np.fromiter((w not in _FILLER for w in words), dtype=bool, count=len(words))


def ngram_hashes(codes: np.ndarray, n: int, content: np.ndarray | None = None) -> np.ndarray:
    """One uint64 per word n-gram, in order (empty when there are fewer than n words); an
    n-gram of mostly `0` and `_id_` ("_id_ 0 true _id_ 0 true ...", a docstring's examples)
    hashes to 0, which is never indexed nor looked up."""
    if len(codes) < n:
        return np.empty(0, dtype=np.uint64)
    width = len(codes) - n + 1
    out = codes[:width].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            out = out * _MULT + codes[k:k + width]
    informative = ~np.isin(codes, _MASKED) if content is None else content
    counts = np.concatenate([[0], np.cumsum(informative)])
    out[(counts[n:] - counts[:width]) < CONTENT_SHARE * n] = 0
    return out


@dataclass(frozen=True)
class TestItem:
    __test__ = False  # a benchmark's item, not a pytest class
    item_id: str  # "<file name>#<id column or line>"
    fields: Mapping[str, Any]  # task field -> text


@dataclass(frozen=True)
class Match:
    item_id: str
    rule: str  # "13-gram", "whole text", "8-gram span" or "embedding"
    field: str  # the candidate's field
    test_field: str
    score: float  # share of the test text covered by the longest span, or the cosine
    evidence: str  # the matched words, or the cosine

    def reject(self) -> Reject:
        return Reject("contaminated", f"test item {self.item_id} ({self.test_field}): {self.rule}, {self.evidence}")


def _whole_hash(codes: np.ndarray) -> int:
    return int.from_bytes(hashlib.blake2b(codes.tobytes(), digest_size=8).digest(), "little")


def _informative(hashes: np.ndarray) -> np.ndarray:
    unique = np.unique(hashes)
    return unique[unique != 0]


def _postings(hashes: list[np.ndarray], owners: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (hash, text) pairs, each hash once per text, boilerplate hashes dropped."""
    if not hashes:
        return np.empty(0, dtype=np.uint64), np.empty(0, dtype=np.int32)
    keys = np.concatenate(hashes)
    own = np.repeat(np.asarray(owners, dtype=np.int32), [len(h) for h in hashes])
    order = np.lexsort((own, keys))
    keys, own = keys[order], own[order]
    _, counts = np.unique(keys, return_counts=True)
    common = np.repeat(counts > MAX_SHARED, counts)
    return keys[~common], own[~common]


@dataclass
class DecontamIndex:
    item_ids: list[str]
    text_item: np.ndarray  # test text -> item
    text_field: list[str]  # test text -> its field
    text_len: np.ndarray  # test text -> normalised words
    keys_long: np.ndarray
    owner_long: np.ndarray
    keys_span: np.ndarray
    owner_span: np.ndarray
    whole: dict[int, int] = field(default_factory=dict)  # hash of a test text's whole normalised words -> text
    too_short: int = 0  # test texts under SPAN_N words: not matchable
    cosine: float | None = None
    vectors: np.ndarray | None = None  # unit rows, one per item with a question (embedding rule)
    vector_item: np.ndarray | None = None
    embed: Callable[[Sequence[str]], np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, items: Sequence[TestItem], cosine: float | None = None, question: str | None = None,
              embed: Callable[[Sequence[str]], np.ndarray] | None = None) -> "DecontamIndex":
        """Index the test items' fields; with `cosine` and `embed`, embed their `question` field too."""
        text_item, text_field, text_len = [], [], []
        long_h: list[np.ndarray] = []
        whole: dict[int, int] = {}
        span_h: list[np.ndarray] = []
        too_short = 0
        for i, item in enumerate(items):
            names = row_names(item.fields)
            for name, value in item.fields.items():
                if value is None or not str(value).strip():
                    continue
                words = tokens(str(value), names)
                codes, content = _codes(words), content_mask(words)
                if len(codes) < SPAN_N:
                    too_short += 1
                    continue
                text_item.append(i)
                text_field.append(name)
                text_len.append(len(codes))
                long_h.append(_informative(ngram_hashes(codes, LONG_N, content)))
                span_h.append(_informative(ngram_hashes(codes, SPAN_N, content)))
                whole.setdefault(_whole_hash(codes), len(text_item) - 1)
        owners = list(range(len(text_item)))
        keys_long, owner_long = _postings(long_h, owners)
        keys_span, owner_span = _postings(span_h, owners)
        index = cls([item.item_id for item in items], np.asarray(text_item, dtype=np.int32), text_field,
                    np.asarray(text_len, dtype=np.int32), keys_long, owner_long, keys_span, owner_span, whole,
                    too_short)
        if cosine is not None and embed is not None and question is not None:
            asked = [(i, str(item.fields[question])) for i, item in enumerate(items) if item.fields.get(question)]
            index.cosine, index.embed = cosine, embed
            index.vector_item = np.asarray([i for i, _ in asked], dtype=np.int32)
            index.vectors = embed([text for _, text in asked]).astype(np.float32)
        return index

    def __len__(self) -> int:
        return len(self.item_ids)

    def __getstate__(self) -> dict[str, Any]:
        # the embedder holds a C model: a replica loads its own (synth.similarity.embedder.get_embedder)
        return {**self.__dict__, "embed": None}

    def check_text(self, text: str, name: str = "text", names: set[str] | None = None) -> Match | None:
        """The strongest lexical match of one candidate field, or None."""
        words = tokens(text, names)
        codes, content = _codes(words), content_mask(words)
        span = ngram_hashes(codes, SPAN_N, content)
        if not len(span):
            return None
        long = ngram_hashes(codes, LONG_N, content)
        if len(long) and len(self.keys_long):
            at = np.minimum(np.searchsorted(self.keys_long, long), len(self.keys_long) - 1)
            p = next((int(p) for p in np.flatnonzero(self.keys_long[at] == long)
                      if len(set(words[p:p + LONG_N]) - _FILLER) >= MIN_DISTINCT), None)
            if p is not None:
                t = int(self.owner_long[at[p]])
                share = self._best_share(span).get(t, 0.0)
                return Match(self.item_ids[self.text_item[t]], f"{LONG_N}-gram", name, self.text_field[t],
                             max(share, min(1.0, LONG_N / self.text_len[t])), repr(" ".join(words[p:p + LONG_N])))
        same = self.whole.get(_whole_hash(codes))
        if same is not None:  # a short test text can be all masked n-grams: its copy is still a copy
            return Match(self.item_ids[self.text_item[same]], "whole text", name, self.text_field[same], 1.0,
                         f"the same {len(words)} normalised words")
        shares = self._best_share(span, words)
        if not shares:
            return None
        t, (share, first, length) = max(shares.items(), key=lambda kv: kv[1][0])
        if share < SPAN_SHARE:
            return None
        return Match(self.item_ids[self.text_item[t]], f"{SPAN_N}-gram span", name, self.text_field[t], share,
                     f"{length} words cover {share:.0%} of it: {' '.join(words[first:first + length])!r}")

    def _best_share(self, span: np.ndarray, words: list[str] | None = None) -> dict[int, Any]:
        """Per test text that shares an 8-gram: the share its longest run of consecutive shared
        8-grams covers (with the run's start and words when `words` is given)."""
        lo = np.searchsorted(self.keys_span, span, "left")
        hi = np.searchsorted(self.keys_span, span, "right")
        counts = hi - lo
        total = int(counts.sum())
        if not total:
            return {}
        # runs go over the informative 8-grams: a masked one ("0 _id_ 0 ...") between two shared
        # ones does not end a span, it is not evidence either way
        informative = np.flatnonzero(span != 0)
        rank = np.full(len(span), -1)
        rank[informative] = np.arange(len(informative))
        pos = np.repeat(rank, counts)
        idx = np.repeat(lo, counts) + np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        text = self.owner_span[idx]
        order = np.lexsort((pos, text))
        pos, text = pos[order], text[order]
        breaks = np.ones(total, dtype=bool)
        breaks[1:] = (text[1:] != text[:-1]) | (pos[1:] != pos[:-1] + 1)
        run = np.cumsum(breaks) - 1
        run_len = np.bincount(run)
        starts = np.flatnonzero(breaks)
        ends = starts + run_len - 1
        run_text, run_start = text[starts], informative[pos[starts]]
        words_in = informative[pos[ends]] - run_start + SPAN_N
        share = np.minimum(1.0, words_in / self.text_len[run_text])
        best: dict[int, Any] = {}
        for r in np.argsort(-share, kind="stable"):
            t = int(run_text[r])
            if t not in best:
                best[t] = float(share[r]) if words is None else (float(share[r]), int(run_start[r]), int(words_in[r]))
        return best

    def check(self, fields: Mapping[str, Any]) -> Match | None:
        """The strongest lexical match over a candidate's fields (a 13-gram first)."""
        names = row_names(fields)
        found = [m for name, value in fields.items() if value is not None
                 for m in [self.check_text(str(value), name, names)] if m is not None]
        return max(found, key=lambda m: (m.rule.startswith(str(LONG_N)), m.score)) if found else None

    def check_many(self, rows: Sequence[Mapping[str, Any]], question: str | None = None) -> list[Match | None]:
        """`check` on each row, then the embedding rule in one batch on the rows still clean."""
        out = [self.check(row) for row in rows]
        if self.cosine is None or self.vectors is None or not len(self.vectors) or question is None:
            return out
        clean = [i for i, m in enumerate(out) if m is None and rows[i].get(question)]
        if not clean:
            return out
        if self.embed is None:
            from synth.similarity.embedder import get_embedder

            self.embed = get_embedder().encode
        sims = self.embed([str(rows[i][question]) for i in clean]).astype(np.float32) @ self.vectors.T
        for i, row_sims in zip(clean, sims):
            j = int(np.argmax(row_sims))
            if row_sims[j] >= self.cosine:
                out[i] = Match(self.item_ids[self.vector_item[j]], "embedding", question, question,
                               float(row_sims[j]), f"cosine {row_sims[j]:.3f} >= {self.cosine}")
        return out
