"""Links of the recipe table's citations: a repository file on GitHub, a RobustBench model_info file, a paper.

A source is free text (``"jiequancui/DKL DKLv1/.../train_dkl_cifar10.py: perturb_input ..."``). We link

- every file it names (a word ending in a code or config suffix, or ``README``) to
  ``github.com/<repo>/blob/HEAD/<path>``, the repository being the last ``owner/name`` named before it in
  the same source, else the entry's only repository (a file whose repository cannot be told is left
  unlinked rather than guessed); a word is a repository when a file or README follows it in its source;
- the CIFAR-10 training set to its page;
- ``RobustBench model_info`` to the entry's model_info JSON in the RobustBench repository;
- a paper citation (``"Wang et al. 2023, Sec. 4"``) to the ``link`` of the leaderboard entry whose name
  starts with the same surname(s) and year (the entry's own paper first), when exactly one paper matches.
"""
from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from .recipes import Entry, Fact

GITHUB = "https://github.com/{repo}/blob/HEAD/{path}"
MODEL_INFO = "https://github.com/RobustBench/robustbench/blob/master/model_info/cifar10/Linf/{name}.json"
FILE_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".sh", ".md", ".slurm", ".ipynb")
ALIASES = {"deepmind-research": "google-deepmind/deepmind-research"}  # cited by the repository's short name
TEXT_LINKS = {"CIFAR-10 training set": "https://www.cs.toronto.edu/~kriz/cifar.html"}
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_CITATION = re.compile(r"([A-Z][\w-]+)(?: et al\.| & ([A-Z][\w-]+))? (\d{4})")
_KEY = re.compile(r"^([A-Za-z-]+?)(\d{4})")


def _words(text: str) -> list[str]:
    return [w.strip("()[],;:'\"") for w in text.split()]


def _is_file(word: str) -> bool:
    return (word.lower().endswith(FILE_SUFFIXES) or word == "README") and not word.startswith("http")


def _repos_in(text: str) -> list[tuple[int, str]]:
    """(word index, ``owner/name``) of the repositories a source names: an ``owner/name`` word (or a
    known short name) followed later in the source by a file or README."""
    words = _words(text)
    out = []
    for i, w in enumerate(words):
        shaped = w in ALIASES or (bool(_REPO.match(w)) and not _is_file(w) and not w[0].isdigit())
        if shaped and any(_is_file(v) for v in words[i + 1:]):
            out.append((i, ALIASES.get(w, w)))
    return out


def entry_repos(entry: Entry) -> list[str]:
    """Repositories an entry cites, in order (``owner/name``)."""
    out: list[str] = []
    for f in entry.facts():
        for _, repo in _repos_in(f.source or ""):
            if repo not in out:
                out.append(repo)
    return out


def paper_links(infos: Iterable[Any]) -> dict[str, str]:
    """``"Wang2023"`` -> the paper link of the only leaderboard paper whose entry names start so."""
    found: dict[str, set[str]] = {}
    for info in infos:
        m = _KEY.match(info.name)
        link = (getattr(info, "raw", None) or {}).get("link")
        if m and link:
            found.setdefault(m.group(1) + m.group(2), set()).add(str(link))
    return {k: next(iter(v)) for k, v in found.items() if len(v) == 1}


def fact_links(fact: Fact, entry_name: str, repos: list[str], papers: Mapping[str, str],
               own_link: str | None = None) -> list[str]:
    """URLs of what ``fact``'s source cites (see the module docstring); [] when nothing can be linked."""
    text = fact.source or ""
    urls: list[str] = []
    current = repos[0] if len(repos) == 1 else None
    named = dict(_repos_in(text))
    for i, w in enumerate(_words(text)):
        if i in named:
            current = named[i]
        elif _is_file(w) and current is not None:
            urls.append(GITHUB.format(repo=current, path="README.md" if w == "README" else w.lstrip("./")))
    urls += [url for phrase, url in TEXT_LINKS.items() if phrase in text]
    if "RobustBench model_info" in text:
        urls.append(MODEL_INFO.format(name=entry_name))
    own = _KEY.match(entry_name)
    for m in _CITATION.finditer(text):
        keys = [m.group(1) + (m.group(2) or "") + m.group(3), m.group(1) + m.group(3)]
        for key in keys:
            link = own_link if own and key == own.group(1) + own.group(2) and own_link else papers.get(key)
            if link:
                urls.append(link)
                break
    return list(dict.fromkeys(urls))


def entry_sources(entry: Entry, papers: Mapping[str, str], own_link: str | None = None) -> list[dict[str, Any]]:
    """Every fact of ``entry`` with its value (or range), its source or reason, and the links of its source."""
    repos = entry_repos(entry)
    out = []
    for f in entry.facts():
        out.append({"fact": f.name, "value": f.value if not f.is_range or f.value is not None else [f.low, f.high],
                    "source": f.source, "reason": f.reason, "verified": f.verified,
                    "urls": fact_links(f, entry.name, repos, papers, own_link) if f.sourced else []})
    return out
