"""Token amounts: integers of 18-decimal units (credits in the token, wei for ETH) and their one text form."""

from __future__ import annotations

CREDIT = 10**18  # token units per credit (18 decimals), as wei per ETH


def format_units(units: int) -> str:
    """An 18-decimal amount as a person reads and types it back: 400 credits -> "400", 2.5 -> "2.5".

    Integer arithmetic, not Decimal or float: exact at any size (Decimal's default context keeps
    28 digits, float 17, `:g` six), and zeros are stripped only after a decimal point, never from
    a whole number (400 is not "4")."""
    whole, fraction = divmod(abs(int(units)), CREDIT)
    sign = "-" if units < 0 else ""
    if not fraction:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:018d}".rstrip("0")
