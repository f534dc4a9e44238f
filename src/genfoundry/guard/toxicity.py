"""Toxicity: a lexicon of insults, threats, hate, sexual content and self-harm, matched fast.

Words and phrases are matched on word boundaries after undoing common
obfuscation (``1d10t``, ``f*ck``, ``s.t.u.p.i.d``), and each match is scored
by how unambiguous the phrase is. Phrases that only look violent in ordinary
work ("kill the process", "shoot me an email", "this deal is a killer") are
left alone, and words are never matched inside others ("Scunthorpe",
"assessment"). A few milliseconds on a 500-token text, no model.

Example::

    ToxicityDetector().check("you are a worthless idiot")
    # [Finding(rail='toxicity', kind='insult', score=0.7, ...)]
"""

from __future__ import annotations

import re

from genfoundry.guard.types import Finding

__all__ = ["LEXICON", "ToxicityDetector"]

# category -> (score, phrases). Phrases are lower case; "*" ends a prefix ("fuck*" matches "fucking").
LEXICON: dict[str, tuple[float, list[str]]] = {
    "insult": (0.7, [
        "idiot*", "moron*", "imbecile*", "stupid", "dumbass*", "dumb ass", "retard*", "loser*", "scumbag*",
        "worthless", "pathetic", "piece of shit", "piece of garbage", "shut up", "asshole*", "bastard*", "jerk",
        "dickhead*", "douchebag*", "twat*", "wanker*", "prick*", "cretin*", "halfwit*", "nitwit*", "pig-headed",
        "you suck", "go to hell", "ugly cow", "fat pig", "bitch*",
    ]),
    "profanity": (0.5, ["fuck*", "motherfuck*", "shit", "shitty", "bullshit", "crap", "damn you", "goddamn*",
                        "cunt*", "bollocks"]),
    "threat": (0.9, [
        "i will kill you", "i'll kill you", "i am going to kill you", "i'm going to kill you", "gonna kill you",
        "i will hurt you", "i'll hurt you", "you will die", "you're dead", "you are dead meat", "watch your back",
        "i know where you live", "i will find you", "burn your house", "i'll beat you", "i will beat you",
        "shoot you", "stab you", "break your legs", "slit your throat", "bomb your",
    ]),
    "hate": (0.9, [
        "subhuman*", "vermin", "go back to your country", "inferior race", "master race", "ethnic cleansing",
        "gas the", "kill all", "exterminate them", "deport them all", "white power", "heil hitler",
        "nigger*", "nigga*", "kike*", "spic*", "chink*", "faggot*", "tranny", "wetback*", "raghead*", "towelhead*",
        "sandnigger*", "gook*", "coon*", "dyke*",
    ]),
    "sexual": (0.7, ["porn*", "blowjob*", "handjob*", "dick pic*", "nudes", "horny", "cum on", "jerk off",
                     "send nudes", "pussy", "cock*", "tits", "slut*", "whore*"]),
    "self_harm": (0.9, [
        "kill myself", "killing myself", "end my life", "want to die", "suicide", "suicidal", "cut myself",
        "hurt myself", "self harm", "self-harm", "overdose on", "no reason to live", "better off dead",
    ]),
}
# Ordinary phrases that contain a lexicon entry; a match inside one of these is not counted.
BENIGN = ["kill the process", "kill process", "kill -9", "kill switch", "kill time", "killer feature", "killer app",
          "shoot me an email", "shoot me a message", "shoot a video", "photo shoot", "cock-up", "cocktail",
          "stupid question", "dead code", "deadline", "dead link", "dead end", "suicide squad", "crap game",
          "shut up and take my money", "gas the car", "kill all the processes", "kill all processes",
          "kill all tasks", "kill all containers", "beat you to it", "spick and span", "coon hound", "raccoon",
          "kill all the", "dyke road", "cum laude", "magna cum", "summa cum", "jerk chicken", "scunthorpe",
          "assassin's creed", "bomb your exam", "pussy willow", "pussycat", "twat"]
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "!": "i"})


def _compile(phrase: str) -> str:
    words = phrase.split()
    parts = []
    for w in words:
        prefix = w.endswith("*")
        w = re.escape(w.rstrip("*"))
        parts.append(w + (r"\w*" if prefix else ""))
    return r"\b" + r"\s+".join(parts) + r"\b"


def _normalise(text: str) -> list[str]:
    """Lower case, leetspeak undone, dots and dashes inside words (s.h.i.t) closed up; a masked
    letter (f*ck) gives one variant per vowel it may hide."""
    text = text.lower()
    text = re.sub(r"(?<=\w)[.\-_](?=\w)", "", text)  # s.h.i.t, f-u-c-k
    text = re.sub(r"\b(?:\w\s){2,}\w\b", lambda m: m.group(0).replace(" ", ""), text)  # s t u p i d
    text = text.translate(_LEET)
    if not re.search(r"(?<=\w)[*#]+(?=\w)", text):
        return [text]
    return [re.sub(r"(?<=\w)[*#]+(?=\w)", vowel, text) for vowel in "aeiou"]


class ToxicityDetector:
    """The toxicity rail; ``threshold`` drops categories scored below it (profanity alone is 0.5)."""

    name = "toxicity"

    def __init__(self, *, threshold: float = 0.5):
        self.threshold = threshold
        self._patterns = [(category, score, re.compile(
            "|".join(_compile(p) for p in sorted(phrases, key=len, reverse=True))))
            for category, (score, phrases) in LEXICON.items() if score >= threshold]
        self._benign = re.compile("|".join(_compile(p.rstrip("*")) for p in BENIGN))

    def warm_up(self) -> None:
        return None

    def check(self, text: str) -> list[Finding]:
        if not text or not text.strip():
            return []
        found: dict[str, Finding] = {}
        for normal in _normalise(text):
            shielded = [(m.start(), m.end()) for m in self._benign.finditer(normal)]
            for category, score, pattern in self._patterns:
                if category in found:
                    continue  # one finding per category is enough to act on
                for m in pattern.finditer(normal):
                    if not any(s <= m.start() < e for s, e in shielded):
                        found[category] = Finding("toxicity", category, score, detail={"term": m.group(0)})
                        break
        return list(found.values())
