"""The report's page with fpdf2: its fonts, footer and the few ways it writes text.

Kept apart from `pdf` so that fpdf2 (and what it imports) loads only in a
process that draws a report, not in every node process and command.
"""

from __future__ import annotations

from fpdf import FPDF

from dicomnode.consult.pdf import CHINESE, LATIN, MOST_LINES, font_path
from dicomnode.consult.words import say


class Page(FPDF):
    """An A4 page of the report in its language, its fonts loaded."""

    def __init__(self, language: str, chinese: bool) -> None:
        super().__init__(format="A4")
        self.language = language
        self.set_auto_page_break(True, margin=18)
        self.add_font("latin", fname=font_path(LATIN[0]))
        self.add_font("latin", style="B", fname=font_path(LATIN[1]))
        self.main = "latin"
        if chinese:
            self.add_font("chinese", fname=font_path(CHINESE))
            self.add_font("chinese", style="B", fname=font_path(CHINESE))
            self.main = "chinese" if language == "zh" else "latin"
            other = "latin" if language == "zh" else "chinese"
            self.set_fallback_fonts([other], exact_match=False)

    def footer(self) -> None:
        self.set_y(-14)
        self.set_font(self.main, size=8)
        self.cell(0, 8, say(self.language, "page", n=self.page_no()), align="C")

    def text_line(
        self, text: str, size: float = 10, bold: bool = False, gap: float = 1, indent: float = 0
    ) -> None:
        self.set_font(self.main, style="B" if bold else "", size=size)
        lines = text.splitlines()[:MOST_LINES] or [""]
        self.set_x(self.l_margin + indent)
        self.multi_cell(0, size * 0.5, "\n".join(lines), new_x="LMARGIN", new_y="NEXT", align="L")
        self.ln(gap)

    def field(self, label: str, value: str) -> None:
        if value:
            self.text_line(f"{label}: {value}")

    def heading(self, text: str) -> None:
        self.ln(2)
        self.text_line(text, size=12, bold=True)
