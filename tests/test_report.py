"""Untrusted strings (competitor file names, titles) are escaped wherever they are shown."""

from __future__ import annotations

import io

from rich.console import Console

from imguard import report


def test_safe_text_makes_control_and_bidi_characters_visible():
    shown = report.safe_text("shop\u202egpj.exe\x1b[31m\nred\u200b")
    assert "\u202e" not in shown and "\x1b" not in shown and "\n" not in shown and "\u200b" not in shown
    assert "\\u202e" in shown and "\\u001b" in shown
    assert report.safe_text("Stühle – 50 %") == "Stühle – 50 %"


def test_table_does_not_interpret_markup_in_file_names():
    out = io.StringIO()
    console = Console(file=out, width=200, force_terminal=False)
    report.print_table([{"path": "[bold red]evil[/] [link=http://x]y[/link]"}], ("path",), console)
    assert "[bold red]evil[/]" in out.getvalue()


def test_csv_defuses_spreadsheet_formulas():
    out = io.StringIO()
    report.write_csv([{"title": "=HYPERLINK(\"http://x\")", "score": "-0.5"}], ("title", "score"), out)
    row = out.getvalue().splitlines()[1]
    assert row.startswith("\"'=HYPERLINK") and row.endswith(",-0.5")


def test_csv_shows_a_missing_value_as_an_empty_cell():
    """A finding nobody marked has mark None: the CSV cell is empty, as the table's, not "None"."""
    out = io.StringIO()
    report.write_csv([{"id": 8, "mark": None}], ("id", "mark"), out)
    assert out.getvalue().splitlines() == ["id,mark", "8,"]
