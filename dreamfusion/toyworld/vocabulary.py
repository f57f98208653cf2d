"""The toy world's shapes and colours: the one place the rest of the toolkit reads them from."""
from __future__ import annotations

SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone", "torus")
# Objects whose look depends on the side they are seen from (the Janus check needs one).
# A "marked cube" is a cube with a white square on the face looking toward azimuth 0 (+x).
VIEW_MARKED_SHAPES: tuple[str, ...] = ("marked cube",)
ALL_SHAPES: tuple[str, ...] = SHAPES + VIEW_MARKED_SHAPES

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.15),
    "orange": (0.95, 0.50, 0.08),
    "purple": (0.55, 0.18, 0.75),
    "white": (0.93, 0.93, 0.93),
}
MARK_COLOUR: tuple[float, float, float] = (0.97, 0.97, 0.97)
MARK_COLOUR_ON_WHITE: tuple[float, float, float] = (0.1, 0.1, 0.1)  # a white cube gets a dark mark

VIEW_WORDS: tuple[str, ...] = ("front", "side", "back", "overhead", "view")


def caption(colour: str, shape: str) -> str:
    return f"a {colour} {shape}"


def all_captions() -> list[str]:
    return [caption(c, s) for s in ALL_SHAPES for c in COLOURS]


def vocabulary() -> list[str]:
    """Every word the bundled prior was trained on."""
    words = {"a", *COLOURS, *VIEW_WORDS}
    for shape in ALL_SHAPES:
        words.update(shape.split())
    return sorted(words)
