"""The compiled results reader (`results_scan`) against Python's json, number for number."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detsearch.detection.results import read_results
from detsearch.detection.results_scan import scan_results

KEYS = ("image_id", "category_id", "bbox", "score")
SPACE = ("", " ", "\n", "\t", "\r\n  ")


def number_text(rng: np.random.Generator) -> str:
    """A JSON number as files write them, and the cases at the edges of the fast path."""
    value = float(rng.choice([rng.random(), rng.uniform(0, 1e4), rng.uniform(-50, 700), 10.0 ** rng.uniform(-30, 30)]))
    kind = int(rng.integers(13))
    if kind == 0:
        return repr(value)
    if kind == 1:
        return f"{value:.17g}"
    if kind == 2:
        return f"{value:.{int(rng.integers(1, 9))}e}".replace("e", str(rng.choice(["e", "E"])))
    if kind == 3:
        return f"{value:.{int(rng.integers(0, 6))}f}"
    if kind == 4:
        return str(int(rng.integers(-10**6, 10**6)))
    if kind == 5:  # integers around 2**53 and beyond 18 digits
        return str(int(rng.choice([2**53 - 1, 2**53, 2**53 + 1, 2**53 + 3, 10**18 - 1, 10**18, 10**19 + 7, 3**40])))
    if kind == 6:  # many digits: mantissas beyond 2**53 and beyond 18 digits
        return "0." + "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(15, 30))))
    if kind == 7:
        return str(rng.choice(["0", "-0", "0.0", "-0.0", "0e5", "-0E-3", "1e22", "1e23", "9007199254740993e-22",
                               "1e-22", "1e-23", "5e-324", "1e-400", "1e400", "1.7976931348623157e308",
                               "0.000000000000000000000000000001", "123456789012345678e-5", "1E+2", "2.5e+0"]))
    if kind == 8:  # trailing and leading zeros
        return f"{int(rng.integers(0, 1000))}.{int(rng.integers(0, 100)):03d}{'0' * int(rng.integers(0, 25))}"
    if kind == 9:
        return f"{value:.{int(rng.integers(0, 20))}g}"
    return repr(float(np.float32(value)))


def random_file(rng: np.random.Generator, records: int) -> str:
    def ws() -> str:
        return str(rng.choice(SPACE))

    parts = []
    for _ in range(records):
        values = {
            "image_id": str(int(rng.integers(-5, 10**int(rng.integers(1, 19))))),
            "category_id": str(int(rng.integers(0, 100))),
            "bbox": "[" + ",".join(ws() + number_text(rng) + ws() for _ in range(4)) + "]",
            "score": number_text(rng),
        }
        keys = list(KEYS)
        rng.shuffle(keys)
        parts.append("{" + ws() + ",".join(f'"{k}"{ws()}:{ws()}{values[k]}{ws()}' for k in keys) + "}")
    return ws() + "[" + ws() + ("," + ws()).join(parts) + ws() + "]" + ws()


def plain_columns(text: str):
    records = json.loads(text)
    return (np.asarray([r["image_id"] for r in records], np.int64).reshape(-1),
            np.asarray([r["category_id"] for r in records], np.int64).reshape(-1),
            np.asarray([[float(v) for v in r["bbox"]] for r in records], np.float64).reshape(-1, 4),
            np.asarray([float(r["score"]) for r in records], np.float64).reshape(-1))


@pytest.mark.parametrize("seed", range(6))
def test_scanned_columns_equal_pythons_json_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    text = random_file(rng, 400)
    scanned = scan_results(text.encode())
    assert scanned is not None
    for got, want in zip(scanned, plain_columns(text)):
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()


def near_ties(rng: np.random.Generator, count: int) -> list[str]:
    """Decimals of 17 and 18 significant digits just below and above the midpoint between a
    random float64 and the next one (where a quotient's last bit is hardest to get right), and
    exact ties."""
    from decimal import ROUND_CEILING, ROUND_FLOOR, Context, Decimal
    from fractions import Fraction

    texts = ["9007199254740993.0", "9007199254740995.00", "18014398509481986.0", "36028797018963970.0"]
    for value in 10.0 ** rng.uniform(-6, 5, count):
        midpoint = Fraction(float(value)) + Fraction(float(np.spacing(value))) / 2
        exact = Decimal(midpoint.numerator) / Decimal(midpoint.denominator)
        for digits in (17, 18):
            for rounding in (ROUND_FLOOR, ROUND_CEILING):
                texts.append(format(Context(prec=digits, rounding=rounding).plus(exact), "f"))
    return texts


def test_numbers_next_to_rounding_ties_equal_pythons_float():
    texts = near_ties(np.random.default_rng(7), 3000)
    text = "[" + ",".join(f'{{"image_id": 1, "category_id": 2, "bbox": [{t}, 0, 0, 0], "score": {t}}}'
                          for t in texts) + "]"
    _, _, bbox, score = scan_results(text.encode())
    want = np.array([float(t) for t in texts])
    assert bbox[:, 0].tobytes() == want.tobytes() and score.tobytes() == want.tobytes()


def test_an_empty_list_is_no_records():
    for text in ("[]", " [ \n ] \n"):
        image_id, category_id, bbox, score = scan_results(text.encode())
        assert len(image_id) == len(category_id) == len(score) == 0 and bbox.shape == (0, 4)


GOOD = '{"image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.5}'
OTHER_SHAPES = [
    "[" + GOOD[:-1] + ', "id": 3}]',  # another key
    '[{"image_id": 1, "image_id": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.5}]',  # duplicate
    '[{"image_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]',  # missing key
    '[{"image\\u005fid": 1, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.5}]',  # escape
    "[" + GOOD.replace("0.5", "NaN") + "]",
    "[" + GOOD.replace("0.5", "Infinity") + "]",
    "[" + GOOD.replace('"image_id": 1', '"image_id": 1.0') + "]",  # not an integer
    "[" + GOOD.replace('"image_id": 1', '"image_id": 1234567890123456789') + "]",  # 19 digits
    "[" + GOOD.replace('"image_id": 1', '"image_id": 01') + "]",
    "[" + GOOD.replace("0.5", ".5") + "]",
    "[" + GOOD.replace("0.5", "1.") + "]",
    "[" + GOOD.replace("0.5", "+1") + "]",
    "[" + GOOD.replace("0.5", '"0.5"') + "]",
    "[" + GOOD.replace("[1, 2, 3, 4]", "[1, 2, 3]") + "]",
    "[" + GOOD.replace("[1, 2, 3, 4]", "[1, 2, 3, 4, 5]") + "]",
    "[" + GOOD + ",]",
    "[" + GOOD[:-1] + ",}]",
    "[{}]",
    GOOD,
    "[" + GOOD + "] x",
    "[" + GOOD,
    "\ufeff[" + GOOD + "]",
    "",
]


@pytest.mark.parametrize("text", OTHER_SHAPES)
def test_other_shapes_go_to_the_general_reader_with_the_same_outcome(tmp_path, text):
    assert scan_results(text.encode()) is None
    path = tmp_path / "r.json"
    path.write_bytes(text.encode())
    try:
        columns = read_results(path, image_ids=[1], category_ids=[2])
    except ValueError as error:
        outcome = str(error)
    else:
        outcome = tuple(getattr(columns, name).tobytes() for name in ("image_id", "category_id", "bbox", "score"))
        assert outcome == tuple(c.tobytes() for c in plain_columns(text))
    assert outcome  # the general reader answered: columns, or its one-line error
