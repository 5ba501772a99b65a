"""Report-sentence tokenizer, size placeholders and terminology-constrained decoding.

Sentences are split into words and punctuation; every number is replaced by a typed placeholder
naming the measurement it states (``<size>`` the long axis, ``<size2>`` the short axis,
``<solid>`` the solid component, ``<vol>`` the volume, ``<hu>`` the mean attenuation). The
decoder never sees or emits a digit: placeholders are filled from the finding's measurements,
formatted exactly as :func:`napari_ctreport.report.writer.describe_finding` formats them.

Decoding is constrained: kind, side and zone words (and lobe words) are allowed only when the
grounded sentence of the same finding uses them, so the decoder cannot name another kind, side
or zone than the finding's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from ..report.findings import Finding
from ..report.lexicon import EFFUSION_GRADES, KINDS, SHAPES, SIDES, ZONES

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
#: Placeholder token -> the Finding quantity it stands for.
SLOTS: dict[str, str] = {
    "<size>": "diameter_mm",
    "<size2>": "short_axis_mm",
    "<solid>": "solid_diameter_mm",
    "<vol>": "volume_ml",
    "<hu>": "mean_hu",
}
#: A number in a sentence that matches no measurement of its finding (never generated).
NUM = "<num>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, UNK, NUM, *SLOTS)

_WORD_RE = re.compile(r"-?\d+(?:\.\d+)?|[A-Za-z]+(?:[-'][A-Za-z]+)*|[^\sA-Za-z\d]")
_NUM_RE = re.compile(r"^-?\d+(?:\.\d+)?$")

#: Words that name a kind, side or zone (or lobe); allowed only where the finding's own grounded
#: sentence uses them.
TERM_WORDS: frozenset[str] = frozenset(
    w.lower()
    for w in (
        *(p for k in KINDS for p in k.split()),
        *SIDES,
        *ZONES,
        *SHAPES,
        *(g for g, _ in EFFUSION_GRADES),
        "granuloma",
        "malignancy",
        "suspicious",
        "bilaterally",
        "nodules",
        "masses",
        "effusions",
        "solid",
        "lobe",
        "lobes",
        "lingula",
        "lingular",
        "apical",
        "basal",
        "bases",
        "apex",
        "apices",
        "both",
        "lungs",
        "lung",
        "pleural",
        "hemithorax",
        "central",
        "perihilar",
        "mediastinal",
    )
)


#: Term words whose suppression means the decoder meant another finding (kind, side, zone words).
CORE_WORDS: frozenset[str] = frozenset(
    w.lower()
    for w in (
        *(p for k in KINDS for p in k.split()),
        *SIDES,
        *ZONES,
        "bilaterally",
        "mass",
        "masses",
    )
) - {"nodule"}


def words(text: str) -> list[str]:
    """Split a sentence into words, numbers and punctuation marks."""
    return _WORD_RE.findall(text)


def detokenize(tokens: Sequence[str]) -> str:
    """Join word tokens back into a sentence (no space before punctuation)."""
    out = ""
    for tok in tokens:
        if not out:
            out = tok
        elif tok in {".", ",", ";", ":", ")", "%"} or out.endswith(("(", "-")) and tok.isdigit():
            out += tok
        elif out.endswith("("):
            out += tok
        else:
            out += " " + tok
    return out


def _slot_values(finding: Finding) -> dict[str, float]:
    vals: dict[str, float] = {}
    for slot, name in SLOTS.items():
        v = getattr(finding, name, None)
        if v is None:
            v = finding.attributes.get(name)
        if v is not None and float(v) != 0.0:
            vals[slot] = float(v)
    return vals


def _matches(text: str, value: float) -> bool:
    """Whether a printed number could be ``value`` (any rounding the writer uses)."""
    x = float(text)
    decimals = len(text.split(".")[1]) if "." in text else 0
    tol = 0.5 * 10.0**-decimals + 1e-6
    return abs(x - value) <= tol


def template(sentence: str, finding: Finding) -> tuple[list[str], dict[str, str]]:
    """Word tokens of ``sentence`` with numbers replaced by placeholders.

    Returns the tokens and the slot -> printed-number map found in the sentence. A number that
    matches none of the finding's measurements becomes :data:`NUM`.
    """
    vals = _slot_values(finding)
    out: list[str] = []
    printed: dict[str, str] = {}
    for tok in words(sentence):
        if _NUM_RE.match(tok):
            slot = next((s for s, v in vals.items() if s not in printed and _matches(tok, v)), None)
            if slot is None:
                slot = next((s for s, v in vals.items() if _matches(tok, v)), None)
            if slot is None:
                out.append(NUM)
            else:
                printed.setdefault(slot, tok)
                out.append(slot)
        else:
            out.append(tok)
    return out, printed


def grounded_sentence(finding: Finding) -> str:
    """The report writer's own (deterministic) sentence for ``finding``."""
    from ..report.writer import describe_finding

    return describe_finding(finding)


def build_tokenizer(sentences: Iterable[list[str]]):  # -> PreTrainedTokenizerFast
    """A word-level tokenizer over the tokens of ``sentences`` (lists of words) + specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    extra = {w for k in KINDS for w in k.split()} | set(SIDES) | set(ZONES) | {".", ","}
    seen: set[str] = set(extra)
    for toks in sentences:
        seen.update(toks)
    for tok in sorted(seen):
        if tok not in vocab and not _NUM_RE.match(tok):
            vocab[tok] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return wrap_tokenizer(tk)


def wrap_tokenizer(tk):  # -> PreTrainedTokenizerFast
    """Wrap a ``tokenizers.Tokenizer`` with the special tokens set."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )


def encode_words(tokenizer, toks: Sequence[str], max_len: int) -> list[int]:
    """Token ids ``[BOS] + toks + [EOS]``, truncated to ``max_len``."""
    ids = tokenizer.convert_tokens_to_ids(list(toks))
    ids = [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
    return ids[:max_len]


class TermConstraint:
    """A ``transformers`` LogitsProcessor: forbids term words a finding does not carry, raw
    numbers, unknown tokens, and placeholders whose value the finding lacks.

    Parameters
    ----------
    tokenizer
        The decoder's tokenizer.
    allowed_terms
        Per batch row, the term words (lower case) that row's finding may use.
    allowed_slots
        Per batch row, the placeholders that row's finding can fill.
    """

    def __init__(
        self,
        tokenizer,
        allowed_terms: Sequence[set[str]],
        allowed_slots: Sequence[set[str]],
    ) -> None:
        vocab: dict[str, int] = tokenizer.get_vocab()
        n = len(vocab)
        self.masks = []
        for terms, slots in zip(allowed_terms, allowed_slots, strict=True):
            m = np.zeros(n, dtype=bool)
            for tok, i in vocab.items():
                low = tok.lower()
                if (
                    tok in (PAD, BOS, UNK, NUM)
                    or _NUM_RE.match(tok)
                    or (tok not in SLOTS and any(c.isdigit() for c in tok))
                ):
                    m[i] = True
                elif tok in SLOTS and tok not in slots:
                    m[i] = True
                elif low in TERM_WORDS and low not in terms:
                    m[i] = True
            self.masks.append(torch.from_numpy(m))
        core = np.zeros(n, dtype=bool)
        for tok, i in vocab.items():
            if tok in SLOTS or tok == NUM or tok.lower() in CORE_WORDS:
                core[i] = True
        self.core = torch.from_numpy(core)

    def hard_violation(self, wanted: torch.Tensor) -> torch.Tensor:
        """Per row, whether the decoder's first choice ``wanted`` (ids) is a forbidden *core* token:
        a measurement placeholder, or a kind, side or zone word (optional descriptors such as a
        shape are just masked)."""
        mask = torch.stack(self.masks).to(wanted.device)[: wanted.shape[0]]
        rows = torch.arange(wanted.shape[0], device=wanted.device)
        return mask[rows, wanted] & self.core.to(wanted.device)[wanted]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.stack(self.masks).to(scores.device)[: scores.shape[0]]
        return scores.masked_fill(mask, float("-inf"))


def constraints_for(finding: Finding, *, variants: int = 8) -> tuple[set[str], set[str]]:
    """The term words and placeholders ``finding``'s sentence may use: those of the writer's own
    grounded sentences for it (the deterministic one and ``variants`` phrasings)."""
    terms: set[str] = set()
    _, printed = template(grounded_sentence(finding), finding)
    for sent in reference_sentences(
        finding, n=variants, seed=0, extra=[grounded_sentence(finding)]
    ):
        toks, _ = template(sent, finding)
        terms |= {t.lower() for t in toks if t.lower() in TERM_WORDS}
    return terms, set(printed)


def fill(tokens: Sequence[str], finding: Finding) -> str | None:
    """Replace placeholders by the finding's measurements as the writer prints them.

    Returns ``None`` when a placeholder has no value in the finding's grounded sentence.
    """
    from ..report.writer import indefinite_article

    _, printed = template(grounded_sentence(finding), finding)
    out = []
    for tok in tokens:
        if tok in SLOTS:
            if tok not in printed:
                return None
            if out and out[-1].lower() in ("a", "an"):
                # the article goes with the number filled in: "an 8.2 mm", "a 12 mm"
                art = indefinite_article(printed[tok])
                out[-1] = art.capitalize() if out[-1][0].isupper() else art
            out.append(printed[tok])
        elif tok == NUM:
            return None
        else:
            out.append(tok)
    return detokenize(out)


def reference_sentences(
    finding: Finding, *, n: int, seed: int, extra: Sequence[str] = ()
) -> list[str]:
    """Varied reference sentences for ``finding`` from the writer (``describe_finding`` with an rng)."""
    from ..report.writer import describe_finding

    rng = np.random.default_rng(seed)
    out = list(extra)
    for _ in range(n):
        out.append(describe_finding(finding, rng=rng))
    return out


def tokenizer_files(tokenizer) -> dict[str, Any]:
    """The vocabulary (token -> id) of ``tokenizer``, for checks."""
    return tokenizer.get_vocab()
