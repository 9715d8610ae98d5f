"""Labelled grids of image cells: row names at the left, a name and a
coloured strip over each column, every text drawn into the image with PIL's
built-in font (no font file needed)."""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

GAP = 2  # white pixels between cells
PAD = 4  # white pixels around a label
LABEL_FONT_SIZE = 12


class Picture(NamedTuple):
    """A labelled grid of image cells.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        labels: every text drawn, with the ``(x, y)`` of its top-left
            corner (``PIL.ImageDraw.text`` coordinates, font
            :func:`label_font`).
        cells: ``(y, x)`` of each cell's top-left pixel, rows x columns.
    """
    image: np.ndarray
    labels: List[Tuple[str, Tuple[int, int]]]
    cells: List[List[Tuple[int, int]]]


def label_font(size: int = LABEL_FONT_SIZE):
    """PIL's built-in font (no font file needed), ``size`` pixels."""
    from PIL import ImageFont
    return ImageFont.load_default(size=size)


def text_size(text: str, font) -> Tuple[int, int]:
    """``(width, height)`` of the box ``ImageDraw.text`` fills from
    ``(0, 0)``."""
    from PIL import Image, ImageDraw
    box = ImageDraw.Draw(Image.new('RGB', (1, 1))).multiline_textbbox(
        (0, 0), text, font=font)
    return box[2], box[3]


def _fit(text: str, width: int, font) -> str:
    """``text`` with each line cut at the left (file names differ at their
    end) until it is at most ``width`` pixels wide."""
    lines = []
    for line in text.split('\n'):
        if text_size(line, font)[0] > width:
            while len(line) > 1 and text_size('...' + line,
                                              font)[0] > width:
                line = line[1:]
            line = '...' + line
        lines.append(line)
    return '\n'.join(lines)


def compose(cells: Sequence[Sequence[np.ndarray]],
            row_labels: Sequence[str],
            column_labels: Sequence[str],
            column_colours: Optional[np.ndarray] = None,
            captions: Optional[Sequence[Sequence[str]]] = None,
            title: Optional[str] = None) -> Picture:
    """Lay equal ``(h, w, 3)`` uint8 cells out as a labelled picture.

    From the top: the title; one label per column (shortened to the cell
    width); a strip in each ``column_colours`` row (RGB); then the rows of
    cells, each with its label at the left and, under each cell, its
    caption.
    """
    from PIL import Image, ImageDraw
    font = label_font()
    num_rows, num_cols = len(cells), len(cells[0])
    cell_h, cell_w = cells[0][0].shape[:2]
    column_labels = [_fit(t, cell_w, font) for t in column_labels]
    if captions is not None:
        captions = [[_fit(t, cell_w, font) for t in row] for row in captions]

    def tallest(texts):
        return max((text_size(t, font)[1] for t in texts), default=0)

    left = max(text_size(t, font)[0] for t in row_labels) + 2 * PAD
    title_h = tallest([title]) + 2 * PAD if title else 0
    header_h = tallest(column_labels) + 2 * PAD
    strip_h = max(2, cell_h // 16) if column_colours is not None else 0
    caption_h = tallest([t for row in captions for t in row]) + PAD \
        if captions is not None else 0
    top = title_h + header_h + strip_h + GAP
    row_h = cell_h + caption_h + GAP
    width = max(left + num_cols * (cell_w + GAP),
                text_size(title, font)[0] + 2 * PAD if title else 0)
    canvas = np.full((top + num_rows * row_h, width, 3), 255, np.uint8)
    origins = [[(top + r * row_h, left + c * (cell_w + GAP))
                for c in range(num_cols)] for r in range(num_rows)]
    for r, row in enumerate(cells):
        for c, cell in enumerate(row):
            y, x = origins[r][c]
            canvas[y:y + cell_h, x:x + cell_w] = cell
    if column_colours is not None:
        for c in range(num_cols):
            x = origins[0][c][1]
            canvas[top - GAP - strip_h:top - GAP, x:x + cell_w] = \
                column_colours[c % len(column_colours)]

    labels = []
    if title:
        labels.append((title, (PAD, PAD)))
    for c, text in enumerate(column_labels):
        labels.append((text, (origins[0][c][1], title_h + PAD)))
    for r, text in enumerate(row_labels):
        text_h = text_size(text, font)[1]
        y = origins[r][0][0] + max(0, (cell_h - text_h) // 2)
        labels.append((text, (PAD, y)))
    if captions is not None:
        for r, row in enumerate(captions):
            for c, text in enumerate(row):
                y, x = origins[r][c]
                labels.append((text, (x, y + cell_h + PAD // 2)))
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for text, xy in labels:
        draw.multiline_text(xy, text, fill=(0, 0, 0), font=font)
    return Picture(np.asarray(image).copy(), labels, origins)
