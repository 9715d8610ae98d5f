"""``type=`` checks for the command-line tools' numeric flags.

argparse turns the :class:`argparse.ArgumentTypeError` these raise into one
line naming the flag, with exit status 2, e.g.
``estimate_memory.py: error: argument --batch-size: must be an integer >= 1,
got -4``. A bad value is refused before any model is built, instead of
reaching arithmetic that divides by it or prints a negative estimate.

Needs only the standard library.
"""
import argparse
import math
import os

__all__ = [
    'positive_int', 'non_negative_int', 'positive_multiple_of',
    'positive_float', 'fraction', 'existing_file'
]


def _parse(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        noun = 'an integer' if kind is int else 'a number'
        raise argparse.ArgumentTypeError(
            f'expected {noun}, got {text!r}') from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(
            f'expected a finite number, got {text!r}')
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (a count of GPUs, images, steps...)."""
    value = _parse(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(
            f'must be an integer >= 1, got {text}')
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (0 meaning none / automatic, as the flag says)."""
    value = _parse(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(
            f'must be an integer >= 0, got {text}')
    return value


def positive_multiple_of(step: int, why: str):
    """A ``type=`` for integers >= ``step`` divisible by ``step``; ``why``
    ends the message (e.g. 'the mixing group size')."""

    def check(text: str) -> int:
        value = _parse(text, int)
        if value < step or value % step:
            raise argparse.ArgumentTypeError(
                f'must be a positive multiple of {step} ({why}), got {text}')
        return value

    check.__name__ = f'multiple_of_{step}'
    return check


def positive_float(text: str) -> float:
    """A finite number > 0 (a rate, a temperature, a peak)."""
    value = _parse(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f'must be > 0, got {text}')
    return value


def fraction(text: str) -> float:
    """A number in (0, 1] (a share of something, e.g. of a peak)."""
    value = _parse(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(
            f'must be in (0, 1], got {text}')
    return value


def config_file_or_recipe(text: str) -> str:
    """A config file that exists, or the name of a recipe (no ``.py``, no
    folder: ``mixedae_vit-tiny-p8_demo``), resolved when the tool runs."""
    if text.endswith('.py') or os.sep in text or os.path.exists(text):
        return existing_file(text)
    return text


def existing_file(text: str) -> str:
    """A path to a file that exists (a config, a checkpoint); a URL passes
    unchecked (its loader reports a failed download)."""
    if '://' not in text and not os.path.isfile(text):
        what = 'a folder, not a file' if os.path.isdir(text) else \
            'no such file'
        raise argparse.ArgumentTypeError(f'{what}: {text}')
    return text
