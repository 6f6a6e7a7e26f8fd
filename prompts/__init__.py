"""Prompt templates for the autopilot's LLM agents, kept as versioned data files.

Each role has a folder of versions, ``prompts/<role>/v<N>.md``, read with
``importlib.resources`` so they ship inside the wheel. A file has two sections, each opened
by a line of its own: ``## system`` (static text, the same for every call, so providers can
cache it) and ``## user`` (a template whose ``{{name}}`` placeholders are filled per call).
The decision record names the version used (``Prompt.id``, e.g. ``analyst@v1``); a change to
a prompt is a new file, never an edit of a published one.

Example:
    >>> p = load_prompt("analyst", "v1")
    >>> p.id
    'analyst@v1'
    >>> sorted(p.placeholders)[:2]
    ['alerts', 'decisions']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["Prompt", "PromptError", "available_versions", "load_prompt"]

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
_VERSION_FILE = re.compile(r"^v(\d+)\.md$")
_SECTION = re.compile(r"^## (system|user)[ \t]*$", re.MULTILINE)


class PromptError(Exception):
    """A prompt is missing, malformed, or rendered with the wrong fields."""


@dataclass(frozen=True, kw_only=True)
class Prompt:
    """One version of one role's prompt: static system text and a user template."""

    role: str
    version: str
    system: str
    user_template: str

    @property
    def id(self) -> str:
        """``role@version``, as decision records name it."""
        return f"{self.role}@{self.version}"

    @property
    def placeholders(self) -> frozenset[str]:
        """The field names the user template needs."""
        return frozenset(_PLACEHOLDER.findall(self.user_template))

    def render(self, **fields: object) -> str:
        """The user message: every ``{{name}}`` replaced by ``str(fields[name])``.

        Raises:
            PromptError: when a placeholder has no field or a field has no placeholder
                (a typo must not silently drop context from the prompt).
        """
        missing = self.placeholders - fields.keys()
        extra = fields.keys() - self.placeholders
        if missing or extra:
            raise PromptError(
                f"{self.id} needs fields {sorted(self.placeholders)}; "
                f"missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        # one pass, so text inside a field is never scanned for placeholders
        return _PLACEHOLDER.sub(lambda m: str(fields[m.group(1)]), self.user_template)

    def messages(self, **fields: object) -> list[dict[str, str]]:
        """Chat messages: the system text, then the rendered user template."""
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": self.render(**fields)},
        ]


def available_versions(role: str) -> list[str]:
    """The versions of ``role``'s prompt, oldest first (``["v1", "v2"]``)."""
    folder = resources.files(__name__).joinpath(role)
    if not role.isidentifier() or not folder.is_dir():
        return []
    numbers = [int(m.group(1)) for f in folder.iterdir() if (m := _VERSION_FILE.match(f.name))]
    return [f"v{n}" for n in sorted(numbers)]


def load_prompt(role: str, version: str | None = None) -> Prompt:
    """The prompt of ``role`` at ``version`` (default: the latest).

    Raises:
        PromptError: when the role or version does not exist or the file lacks a section.
    """
    versions = available_versions(role)
    if not versions:
        raise PromptError(f"no prompt for role {role!r}; expected prompts/{role}/v1.md")
    chosen = version or versions[-1]
    if chosen not in versions:
        raise PromptError(f"prompt {role}@{chosen} does not exist; available: {versions}")
    text = resources.files(__name__).joinpath(role, f"{chosen}.md").read_text(encoding="utf-8")
    system, user = _sections(text, f"{role}@{chosen}")
    return Prompt(role=role, version=chosen, system=system, user_template=user)


def _sections(text: str, name: str) -> tuple[str, str]:
    parts = _SECTION.split(text)
    # split gives [preamble, "system", body, "user", body]
    if parts[1::2] != ["system", "user"]:
        raise PromptError(
            f"prompt {name} must have one '## system' section, then one '## user' section"
        )
    return parts[2].strip(), parts[4].strip()
