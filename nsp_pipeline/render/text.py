"""Text on the figures: numbers with a true minus sign, lines broken at separators (torch-free)."""

from __future__ import annotations


def number_text(value: float, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits, its minus sign as "−" (U+2212), as typeset."""
    return f"{value:.{digits}g}".replace("-", "−")


def wrapped(text: str, per_line: int, separator: str = ", ") -> str:
    """``text`` in lines of about ``per_line`` characters, broken after each ``separator``.

    A line ends with the separator less its trailing spaces (``","`` for ``", "``, nothing for
    ``" "``); a part longer than ``per_line`` stays whole on its own line.
    """
    lines, line = [], ""
    for part in text.split(separator):
        if line and len(line) + len(separator) + len(part) > per_line:
            lines.append(line + separator.rstrip())
            line = part
        else:
            line = f"{line}{separator}{part}" if line else part
    return "\n".join([*lines, line])
